//! `deploy()`: put one service on a pinned multi-arch digest and follow Swarm until it converged or rolled back.
//!
//! Order: required platforms (no Swarm call) → inspect → nodes and the node
//! platform gate → create from the `create` spec, or write back the read spec
//! with only the image changed (re-reading on "out of sequence") → poll the
//! service's `UpdateStatus` (and its tasks once it settles) every
//! `poll_interval` until completed, rolled back, paused or the deadline.

use std::time::{Duration, Instant};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
};

use super::gate::{GateFailure, check_platforms};
use super::{ServiceSpec, ServiceState, Swarm, SwarmError, TaskInfo, UpdateState};
use crate::config::{CreateSpec, ServiceConfig};
use crate::registry::{Credentials, ResolvedImage};

/// What to deploy.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The service's configuration: name, required platforms, create spec.
    pub service: &'a ServiceConfig,
    /// The resolved tag (from the `verify` step).
    pub image: &'a ResolvedImage,
    /// Registry credentials for the image, sent to Docker so nodes can pull.
    pub auth: Option<&'a Credentials>,
}

/// Knobs of one deploy.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// How long Swarm may take to converge or roll back. Default 5 minutes.
    pub converge_timeout: Duration,
    /// Pause between two looks at the service. Default 50 ms: hoist notices within ~100 ms.
    pub poll_interval: Duration,
    /// Re-reads after "update out of sequence" (someone else wrote the service). Default 5.
    pub max_conflict_retries: u32,
    /// `UpdateConfig.Monitor` of created services, and how long a new service's tasks must
    /// keep running to count as converged. Default 5 s (Docker's default).
    pub monitor: Duration,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            converge_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_millis(50),
            max_conflict_retries: 5,
            monitor: Duration::from_secs(5),
        }
    }
}

/// How a deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeState {
    /// The service did not exist; it was created and its tasks run the new image.
    Created,
    /// The image was changed and the update completed.
    Updated,
    /// The service already ran this digest; nothing was written.
    Unchanged,
    /// The update failed and Swarm rolled back to the previous image.
    RolledBack,
    /// The update (or its rollback) paused; the service needs a human.
    Paused,
    /// A new service's tasks keep failing.
    Failed,
    /// Swarm did not settle before `converge_timeout`.
    TimedOut,
}

impl OutcomeState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeState::Created => "created",
            OutcomeState::Updated => "updated",
            OutcomeState::Unchanged => "unchanged",
            OutcomeState::RolledBack => "rolled_back",
            OutcomeState::Paused => "paused",
            OutcomeState::Failed => "failed",
            OutcomeState::TimedOut => "timed_out",
        }
    }

    /// The service now runs the requested image.
    pub fn succeeded(self) -> bool {
        matches!(
            self,
            OutcomeState::Created | OutcomeState::Updated | OutcomeState::Unchanged
        )
    }
}

/// A task's failure, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    pub task_id: String,
    pub slot: Option<i64>,
    pub node_id: Option<String>,
    pub state: String,
    pub error: String,
    pub exit_code: Option<i64>,
}

/// The result of a deploy that reached Swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub service_id: String,
    pub service_name: String,
    pub state: OutcomeState,
    /// The image before (None when the service was created).
    pub before: Option<String>,
    /// The image the service runs now (the previous one after a rollback).
    pub after: Option<String>,
    pub version_before: Option<u64>,
    pub version_after: u64,
    /// From the call to the settled state.
    pub converged_in: Duration,
    /// From the call until Swarm accepted the create or update (the rest is convergence).
    pub applied_in: Duration,
    /// Errors of tasks that ran the new image.
    pub task_errors: Vec<TaskError>,
    /// Swarm's `UpdateStatus.Message` at the end, if any.
    pub update_message: Option<String>,
    /// Docker API calls this deploy made.
    pub api_calls: u32,
    /// "update out of sequence" answers that were handled by re-reading.
    pub conflicts: u32,
}

/// Why a deploy did not reach (or lost) the service.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("refused before deploying: {0}")]
    Gate(#[from] GateFailure),
    #[error("service {service} does not exist and has no create spec")]
    NoCreateSpec { service: String },
    #[error("service {service} kept changing under hoist: {attempts} updates out of sequence")]
    Conflict { service: String, attempts: u32 },
    #[error("service {service} disappeared during the deploy")]
    Vanished { service: String },
    #[error(transparent)]
    Swarm(#[from] SwarmError),
}

/// Whether `current` already is `pinned`: same repository and same digest (the tag is only a label).
pub fn same_image(current: &str, pinned: &str) -> bool {
    fn split(image: &str) -> (&str, Option<&str>) {
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (image, None),
        };
        let repo = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => &name[..i],
            _ => name,
        };
        (repo, digest)
    }
    let (repo_a, digest_a) = split(current);
    let (repo_b, digest_b) = split(pinned);
    digest_a.is_some() && digest_a == digest_b && repo_a == repo_b
}

/// The spec of a new service: the `create` settings plus rollback on failure, a monitor window
/// and start-first order (the new task runs before the old one stops).
pub fn create_spec(name: &str, image: &str, create: &CreateSpec, monitor: Duration) -> ServiceSpec {
    let monitor_ns = i64::try_from(monitor.as_nanos()).unwrap_or(i64::MAX);
    let ports: Vec<EndpointPortConfig> = create
        .ports
        .iter()
        .map(|p| EndpointPortConfig {
            protocol: Some(if p.udp {
                EndpointPortConfigProtocolEnum::UDP
            } else {
                EndpointPortConfigProtocolEnum::TCP
            }),
            target_port: Some(i64::from(p.target)),
            published_port: Some(i64::from(p.published)),
            publish_mode: Some(EndpointPortConfigPublishModeEnum::INGRESS),
            ..Default::default()
        })
        .collect();
    ServiceSpec {
        name: Some(name.to_string()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_string()),
                env: (!create.env.is_empty()).then(|| create.env.clone()),
                ..Default::default()
            }),
            placement: (!create.constraints.is_empty()).then(|| TaskSpecPlacement {
                constraints: Some(create.constraints.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::try_from(create.replicas).unwrap_or(i64::MAX)),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(monitor_ns),
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(monitor_ns),
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
        }),
        endpoint_spec: (!ports.is_empty()).then(|| EndpointSpec {
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Counts the API calls of one deploy.
struct Calls<'s, S> {
    swarm: &'s S,
    count: u32,
}

impl<S: Swarm> Calls<'_, S> {
    async fn inspect(&mut self, service: &str) -> Result<Option<ServiceState>, SwarmError> {
        self.count += 1;
        self.swarm.inspect(service).await
    }
    async fn tasks(&mut self, id: &str) -> Result<Vec<TaskInfo>, SwarmError> {
        self.count += 1;
        self.swarm.tasks(id).await
    }
}

/// One read while waiting for Swarm: a transient failure (the engine restarting) is logged
/// and becomes `None`, to be read again at the next poll, until `deadline`.
fn tolerate<T>(result: Result<T, SwarmError>, deadline: Instant) -> Result<Option<T>, SwarmError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_transient() && Instant::now() < deadline => {
            tracing::warn!(error = %e, "cannot read the service; will look again");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Deploys `target` and waits for Swarm to settle. Errors mean hoist could not act (or lost
/// the service); every settled end, good or bad, is an [`Outcome`].
pub async fn deploy<S: Swarm>(
    swarm: &S,
    target: Target<'_>,
    options: &DeployOptions,
) -> Result<Outcome, DeployError> {
    let started = Instant::now();
    let name = target.service.name.as_str();
    let reference = target.image.reference();
    let pinned = target.image.pinned();
    let span = tracing::info_span!("swarm.deploy", service = name, image = %pinned);
    let _enter = span.enter();

    check_platforms(
        &reference,
        &target.image.platforms,
        &target.service.platforms,
        None,
    )?;

    let mut calls = Calls { swarm, count: 0 };
    let mut conflicts = 0u32;
    loop {
        let current = calls.inspect(name).await?;
        if let Some(service) = &current
            && let Some(image) = &service.image
            && same_image(image, &pinned)
        {
            if matches!(
                service.update,
                Some(UpdateState::Updating | UpdateState::Paused)
            ) {
                // An update to this image is under way (a resumed run, or a second request):
                // follow it instead of calling it done.
                return converge_update(&mut calls, service, image, started, conflicts, options)
                    .await;
            }
            if service.update.is_none() {
                // Created at this image and never updated: a run resumed after hoist died
                // while the service was created waits for its tasks like the run that
                // created it would have.
                let tasks = calls.tasks(&service.id).await?;
                if !all_running(&tasks, image, service.replicas) {
                    tracing::info!(service_id = %service.id, "service created at this image; waiting for its tasks");
                    let replicas = service.replicas.unwrap_or(1);
                    return converge_create(
                        &mut calls,
                        &service.id,
                        name,
                        image,
                        replicas,
                        started,
                        conflicts,
                        options,
                    )
                    .await;
                }
            }
            return Ok(Outcome {
                service_id: service.id.clone(),
                service_name: name.to_string(),
                state: OutcomeState::Unchanged,
                before: Some(image.clone()),
                after: Some(image.clone()),
                version_before: Some(service.version),
                version_after: service.version,
                converged_in: started.elapsed(),
                applied_in: started.elapsed(),
                task_errors: Vec::new(),
                update_message: None,
                api_calls: calls.count,
                conflicts,
            });
        }
        if conflicts == 0 {
            // The node gate runs once: the nodes do not change because someone touched the service.
            let constraints = match (&current, &target.service.create) {
                (Some(s), _) => s.constraints.clone(),
                (None, Some(c)) => c.constraints.clone(),
                (None, None) => {
                    return Err(DeployError::NoCreateSpec {
                        service: name.to_string(),
                    });
                }
            };
            calls.count += 1;
            let nodes = swarm.nodes().await?;
            check_platforms(
                &reference,
                &target.image.platforms,
                &[],
                Some((&nodes, &constraints)),
            )?;
        }
        let write =
            match &current {
                None => {
                    let create = target.service.create.as_ref().ok_or_else(|| {
                        DeployError::NoCreateSpec {
                            service: name.to_string(),
                        }
                    })?;
                    let spec = create_spec(name, &pinned, create, options.monitor);
                    calls.count += 1;
                    match swarm.create(&spec, target.auth).await {
                        Ok(id) => {
                            tracing::info!(service_id = %id, "service created");
                            let applied_in = started.elapsed();
                            return converge_create(
                                &mut calls,
                                &id,
                                name,
                                &pinned,
                                create.replicas,
                                started,
                                conflicts,
                                options,
                            )
                            .await
                            .map(|mut o| {
                                o.applied_in = applied_in;
                                o
                            });
                        }
                        // Someone created it between our inspect and create: take the update path.
                        Err(SwarmError::Rejected { status: 409, .. }) => Err(()),
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(service) => {
                    calls.count += 1;
                    match swarm.update_image(service, &pinned, target.auth).await {
                        Ok(()) => Ok(service),
                        Err(SwarmError::OutOfSequence { .. }) => Err(()),
                        Err(e) => return Err(e.into()),
                    }
                }
            };
        match write {
            Ok(service) => {
                tracing::info!(service_id = %service.id, version = service.version, "service image updated");
                return converge_update(&mut calls, service, &pinned, started, conflicts, options)
                    .await;
            }
            Err(()) => {
                conflicts += 1;
                tracing::info!(
                    attempt = conflicts,
                    "service changed while hoist wrote it; reading it again"
                );
                if conflicts > options.max_conflict_retries {
                    return Err(DeployError::Conflict {
                        service: name.to_string(),
                        attempts: conflicts,
                    });
                }
            }
        }
    }
}

fn task_errors(tasks: &[TaskInfo], image: &str) -> Vec<TaskError> {
    let mut errors: Vec<TaskError> = tasks
        .iter()
        .filter(|t| t.image.as_deref() == Some(image))
        .filter_map(|t| {
            let failed = matches!(t.state.as_str(), "failed" | "rejected");
            let error = t
                .error
                .clone()
                .or_else(|| failed.then(|| t.message.clone().unwrap_or_default()))?;
            Some(TaskError {
                task_id: t.id.clone(),
                slot: t.slot,
                node_id: t.node_id.clone(),
                state: t.state.clone(),
                error,
                exit_code: t.exit_code,
            })
        })
        .collect();
    errors.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    errors
}

/// Tasks that should run (`desired_state == running`), and whether all of them run `image`.
fn all_running(tasks: &[TaskInfo], image: &str, want: Option<u64>) -> bool {
    let desired: Vec<&TaskInfo> = tasks
        .iter()
        .filter(|t| t.desired_state == "running")
        .collect();
    let running = desired
        .iter()
        .filter(|t| t.state == "running" && t.image.as_deref() == Some(image))
        .count();
    let enough = match want {
        Some(n) => running as u64 >= n,
        None => running >= 1,
    };
    enough && running == desired.len()
}

/// How much earlier than the monitor window hoist starts polling closely.
const QUIET_MARGIN: Duration = Duration::from_millis(150);

/// The earliest an update can settle after it was written: the shorter of the update's and
/// the rollback's monitor window (0 when either is unset, i.e. no assumption).
fn settle_floor(spec: &ServiceSpec) -> Duration {
    let update = spec.update_config.as_ref().and_then(|c| c.monitor);
    let rollback = spec.rollback_config.as_ref().and_then(|c| c.monitor);
    let nanos = update.unwrap_or(0).min(rollback.unwrap_or(0)).max(0);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

fn running_ids(tasks: &[TaskInfo]) -> Vec<String> {
    let mut ids: Vec<String> = tasks
        .iter()
        .filter(|t| t.desired_state == "running" && t.state == "running")
        .map(|t| t.id.clone())
        .collect();
    ids.sort();
    ids
}

#[allow(clippy::too_many_arguments)]
async fn converge_create<S: Swarm>(
    calls: &mut Calls<'_, S>,
    id: &str,
    name: &str,
    image: &str,
    replicas: u64,
    started: Instant,
    conflicts: u32,
    options: &DeployOptions,
) -> Result<Outcome, DeployError> {
    let deadline = Instant::now() + options.converge_timeout;
    // When the replicas first all ran the image, and which tasks those were.
    let mut stable: Option<(Instant, Vec<String>)> = None;
    let mut pause = options.poll_interval;
    loop {
        tokio::time::sleep(pause).await;
        pause = options.poll_interval;
        let Some(tasks) = tolerate(calls.tasks(id).await, deadline)? else {
            stable = None;
            continue;
        };
        if replicas == 0 || all_running(&tasks, image, Some(replicas)) {
            let ids = running_ids(&tasks);
            match &stable {
                Some((_, seen)) if *seen == ids => {}
                // A task was replaced (it crashed and restarted): the window starts again.
                _ => stable = Some((Instant::now(), ids)),
            }
            let since = stable
                .as_ref()
                .map(|(t, _)| t.elapsed())
                .unwrap_or_default();
            if replicas == 0 || since >= options.monitor {
                return finish_create(
                    calls,
                    id,
                    name,
                    OutcomeState::Created,
                    &tasks,
                    image,
                    started,
                    conflicts,
                )
                .await;
            }
            // Nothing to learn before the window ends: look again right then.
            pause = pause.max(options.monitor - since);
        } else {
            stable = None;
        }
        let failed = tasks
            .iter()
            .filter(|t| matches!(t.state.as_str(), "failed" | "rejected"))
            .count();
        if failed >= 3 {
            return finish_create(
                calls,
                id,
                name,
                OutcomeState::Failed,
                &tasks,
                image,
                started,
                conflicts,
            )
            .await;
        }
        if Instant::now() >= deadline {
            return finish_create(
                calls,
                id,
                name,
                OutcomeState::TimedOut,
                &tasks,
                image,
                started,
                conflicts,
            )
            .await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn finish_create<S: Swarm>(
    calls: &mut Calls<'_, S>,
    id: &str,
    name: &str,
    state: OutcomeState,
    tasks: &[TaskInfo],
    image: &str,
    started: Instant,
    conflicts: u32,
) -> Result<Outcome, DeployError> {
    let converged_in = started.elapsed();
    let service = calls
        .inspect(id)
        .await?
        .ok_or_else(|| DeployError::Vanished {
            service: name.to_string(),
        })?;
    Ok(Outcome {
        service_id: id.to_string(),
        service_name: name.to_string(),
        state,
        before: None,
        after: service.image.clone(),
        version_before: None,
        version_after: service.version,
        converged_in,
        // Set by the caller, which knows when Swarm accepted the create.
        applied_in: Duration::ZERO,
        task_errors: task_errors(tasks, image),
        update_message: service.update_message,
        api_calls: calls.count,
        conflicts,
    })
}

async fn converge_update<S: Swarm>(
    calls: &mut Calls<'_, S>,
    before: &ServiceState,
    image: &str,
    started: Instant,
    conflicts: u32,
    options: &DeployOptions,
) -> Result<Outcome, DeployError> {
    let written = Instant::now();
    let applied_in = started.elapsed();
    let deadline = written + options.converge_timeout;
    // Swarm reports completed (or rolled back) only after the monitor window of the
    // update (or rollback) config: polling before then would only load the engine.
    let quiet = settle_floor(&before.spec).saturating_sub(QUIET_MARGIN);
    let mut rollback_requested = false;
    let outcome =
        |calls: &Calls<'_, S>, state, now: &ServiceState, tasks: &[TaskInfo], converged_in| {
            Outcome {
                service_id: before.id.clone(),
                service_name: before.name.clone(),
                state,
                before: before.image.clone(),
                after: now.image.clone(),
                version_before: Some(before.version),
                version_after: now.version,
                converged_in,
                applied_in,
                task_errors: task_errors(tasks, image),
                update_message: now.update_message.clone(),
                api_calls: calls.count,
                conflicts,
            }
        };
    loop {
        let pause = quiet
            .saturating_sub(written.elapsed())
            .max(options.poll_interval);
        tokio::time::sleep(pause).await;
        let Some(now) = tolerate(calls.inspect(&before.id).await, deadline)? else {
            continue;
        };
        let now = now.ok_or_else(|| DeployError::Vanished {
            service: before.name.clone(),
        })?;
        let settled = match now.update {
            // Swarm resets the status on every write and sets it when its updater starts.
            None | Some(UpdateState::Completed) => now.image.as_deref() == Some(image),
            Some(UpdateState::RollbackCompleted | UpdateState::RollbackPaused) => true,
            Some(UpdateState::Paused) if !rollback_requested => {
                // The service's own failure action is pause: hoist's policy is rollback.
                tracing::info!(message = ?now.update_message, "update paused; asking Swarm to roll back");
                rollback_requested = true;
                calls.count += 1;
                match calls.swarm.rollback(&now).await {
                    Ok(()) | Err(SwarmError::OutOfSequence { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                false
            }
            Some(UpdateState::Paused) => false,
            Some(UpdateState::Updating | UpdateState::RollbackStarted) => false,
        };
        let timed_out = Instant::now() >= deadline;
        if !settled && !timed_out {
            continue;
        }
        let converged_in = started.elapsed();
        let Some(tasks) = tolerate(calls.tasks(&before.id).await, deadline)? else {
            continue;
        };
        let state = match now.update {
            _ if timed_out && !settled => OutcomeState::TimedOut,
            Some(UpdateState::RollbackCompleted) => OutcomeState::RolledBack,
            Some(UpdateState::RollbackPaused) => OutcomeState::Paused,
            _ if all_running(&tasks, image, now.replicas) => OutcomeState::Updated,
            _ if timed_out => OutcomeState::TimedOut,
            // Completed, but a task is still starting or failed since: look again.
            _ => continue,
        };
        return Ok(outcome(calls, state, &now, &tasks, converged_in));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortSpec;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn same_image_compares_repository_and_digest() {
        let a = format!("reg:5000/app:1@{D1}");
        assert!(same_image(&a, &format!("reg:5000/app:2@{D1}")));
        assert!(same_image(&format!("reg:5000/app@{D1}"), &a));
        assert!(!same_image(&a, &format!("reg:5000/app:1@{D2}")));
        assert!(!same_image(&a, &format!("reg:5000/other:1@{D1}")));
        assert!(!same_image("reg:5000/app:1", "reg:5000/app:1"));
    }

    #[test]
    fn create_spec_sets_rollback_monitor_and_start_first() {
        let create = CreateSpec {
            replicas: 2,
            ports: vec![PortSpec {
                published: 8080,
                target: 80,
                udp: false,
            }],
            env: vec!["MODE=production".into()],
            constraints: vec!["node.role==worker".into()],
        };
        let spec = create_spec("web", "r/app:1@sha256:x", &create, Duration::from_secs(2));
        let update = spec.update_config.as_ref().expect("update config");
        assert_eq!(
            update.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
        );
        assert_eq!(update.monitor, Some(2_000_000_000));
        assert_eq!(
            update.order,
            Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
        );
        let template = spec.task_template.as_ref().expect("template");
        let container = template.container_spec.as_ref().expect("container");
        assert_eq!(container.image.as_deref(), Some("r/app:1@sha256:x"));
        assert_eq!(container.env, Some(vec!["MODE=production".to_string()]));
        assert_eq!(
            template
                .placement
                .as_ref()
                .and_then(|p| p.constraints.clone()),
            Some(vec!["node.role==worker".to_string()])
        );
        let ports = spec
            .endpoint_spec
            .as_ref()
            .and_then(|e| e.ports.clone())
            .expect("ports");
        assert_eq!(ports[0].published_port, Some(8080));
        assert_eq!(ports[0].target_port, Some(80));
        assert_eq!(
            spec.mode
                .and_then(|m| m.replicated)
                .and_then(|r| r.replicas),
            Some(2)
        );
    }

    use crate::config::Platform;
    use crate::registry::{Digest, ResolvedImage};
    use crate::swarm::fake::{FakeSwarm, fake_node};

    fn image(tag: &str, platforms: &[&str]) -> ResolvedImage {
        ResolvedImage {
            repository: "reg.example.com/team/app".into(),
            tag: tag.into(),
            digest: Digest::of(tag.as_bytes()),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            is_index: true,
            platforms: platforms
                .iter()
                .map(|p| Platform::parse(p).expect("platform"))
                .collect(),
        }
    }

    fn config(create: bool) -> ServiceConfig {
        ServiceConfig {
            name: "web".into(),
            image: "reg.example.com/team/app".into(),
            tag: "{tag}".into(),
            platforms: vec![Platform::parse("linux/amd64").expect("platform")],
            create: create.then(|| CreateSpec {
                replicas: 2,
                ports: vec![],
                env: vec![],
                constraints: vec![],
            }),
        }
    }

    fn fast() -> DeployOptions {
        DeployOptions {
            converge_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(1),
            max_conflict_retries: 3,
            monitor: Duration::ZERO,
        }
    }

    async fn run(
        swarm: &FakeSwarm,
        cfg: &ServiceConfig,
        img: &ResolvedImage,
    ) -> Result<Outcome, DeployError> {
        deploy(
            swarm,
            Target {
                service: cfg,
                image: img,
                auth: None,
            },
            &fast(),
        )
        .await
    }

    #[tokio::test]
    async fn create_update_and_unchanged_against_the_world_model() {
        let swarm = FakeSwarm::new();
        let cfg = config(true);
        let v1 = image("v1", &["linux/amd64"]);
        let v2 = image("v2", &["linux/amd64"]);
        let created = run(&swarm, &cfg, &v1).await.expect("create");
        assert_eq!(created.state, OutcomeState::Created);
        assert_eq!(created.after.as_deref(), Some(v1.pinned().as_str()));

        let updated = run(&swarm, &cfg, &v2).await.expect("update");
        assert_eq!(updated.state, OutcomeState::Updated, "{updated:?}");
        assert_eq!(updated.service_id, created.service_id);
        assert!(updated.version_after > updated.version_before.unwrap_or(u64::MAX));
        assert_eq!(updated.before.as_deref(), Some(v1.pinned().as_str()));

        let again = run(&swarm, &cfg, &v2).await.expect("again");
        assert_eq!(again.state, OutcomeState::Unchanged);
        assert_eq!(again.api_calls, 1);

        // A deploy that finds its own image still updating (a resumed run) waits for it.
        let v3 = image("v3", &["linux/amd64"]);
        let before = swarm.service("web").expect("service");
        swarm
            .update_image(&before, &v3.pinned(), None)
            .await
            .expect("update by hand");
        let resumed = run(&swarm, &cfg, &v3).await.expect("resume");
        assert_eq!(resumed.state, OutcomeState::Updated, "{resumed:?}");
    }

    #[tokio::test]
    async fn a_failing_image_rolls_back_and_a_paused_update_is_rolled_back_by_hoist() {
        let swarm = FakeSwarm::new();
        let cfg = config(true);
        let good = image("good", &["linux/amd64"]);
        let bad = image("bad", &["linux/amd64"]);
        swarm.fail_image(&bad.pinned());
        run(&swarm, &cfg, &good).await.expect("create");
        let outcome = run(&swarm, &cfg, &bad).await.expect("deploy");
        assert_eq!(outcome.state, OutcomeState::RolledBack, "{outcome:?}");
        assert_eq!(outcome.after.as_deref(), Some(good.pinned().as_str()));
        assert_eq!(outcome.task_errors.len(), 1);
        assert_eq!(outcome.task_errors[0].exit_code, Some(1));

        // A service created by hand with failure action "pause".
        let paused = FakeSwarm::new();
        let mut spec = create_spec(
            "web",
            &good.pinned(),
            &CreateSpec {
                replicas: 1,
                ports: vec![],
                env: vec![],
                constraints: vec![],
            },
            Duration::ZERO,
        );
        spec.update_config = None;
        paused.add_service(spec);
        paused.fail_image(&bad.pinned());
        let outcome = run(&paused, &cfg, &bad).await.expect("deploy");
        assert_eq!(outcome.state, OutcomeState::RolledBack, "{outcome:?}");
        assert_eq!(
            paused.service("web").and_then(|s| s.image),
            Some(good.pinned())
        );
    }

    #[tokio::test]
    async fn out_of_sequence_is_retried_then_given_up() {
        let swarm = FakeSwarm::new();
        let cfg = config(true);
        run(&swarm, &cfg, &image("v1", &["linux/amd64"]))
            .await
            .expect("create");
        swarm.conflict_next_updates(2);
        let outcome = run(&swarm, &cfg, &image("v2", &["linux/amd64"]))
            .await
            .expect("update");
        assert_eq!(
            (outcome.state, outcome.conflicts),
            (OutcomeState::Updated, 2)
        );

        swarm.conflict_next_updates(10);
        let err = run(&swarm, &cfg, &image("v3", &["linux/amd64"]))
            .await
            .expect_err("gives up");
        assert!(
            matches!(err, DeployError::Conflict { attempts: 4, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn refusals_and_errors_before_any_write() {
        let swarm = FakeSwarm::new();
        let err = run(&swarm, &config(false), &image("v1", &["linux/amd64"]))
            .await
            .expect_err("no create spec");
        assert_eq!(
            err.to_string(),
            "service web does not exist and has no create spec"
        );

        let calls = swarm.calls();
        let err = run(&swarm, &config(true), &image("v1", &["linux/arm64"]))
            .await
            .expect_err("gate");
        assert!(matches!(err, DeployError::Gate(_)), "{err:?}");
        assert_eq!(
            swarm.calls(),
            calls,
            "the required-platform check makes no call"
        );

        let pis = FakeSwarm::with_nodes(vec![
            fake_node("x86", "manager", "linux/amd64"),
            fake_node("pi3", "worker", "linux/arm/v7"),
        ]);
        let err = run(
            &pis,
            &config(true),
            &image("v1", &["linux/amd64", "linux/arm64"]),
        )
        .await
        .expect_err("pi3");
        assert!(err.to_string().contains("pi3"), "{err}");
        assert!(pis.service("web").is_none());

        swarm.set_down(true);
        let err = run(&swarm, &config(true), &image("v1", &["linux/amd64"]))
            .await
            .expect_err("down");
        assert!(
            matches!(err, DeployError::Swarm(SwarmError::Unreachable { .. })),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_engine_restart_while_waiting_is_waited_out_but_not_forever() {
        let swarm = FakeSwarm::new();
        let cfg = config(true);
        run(&swarm, &cfg, &image("v1", &["linux/amd64"]))
            .await
            .expect("create");
        // inspect, nodes and the update go through; then three reads find the engine away.
        swarm.restart_after(3, 3);
        let outcome = run(&swarm, &cfg, &image("v2", &["linux/amd64"]))
            .await
            .expect("update");
        assert_eq!(outcome.state, OutcomeState::Updated, "{outcome:?}");

        // An engine that stays away past the converge deadline ends the deploy with why.
        swarm.restart_after(3, u32::MAX);
        let short = DeployOptions {
            converge_timeout: Duration::from_millis(100),
            ..fast()
        };
        let v3 = image("v3", &["linux/amd64"]);
        let target = Target {
            service: &cfg,
            image: &v3,
            auth: None,
        };
        let err = deploy(&swarm, target, &short)
            .await
            .expect_err("gone for good");
        assert!(err.to_string().contains("restarting"), "{err}");
    }

    #[tokio::test]
    async fn a_resumed_create_waits_for_the_tasks_of_the_service_it_created() {
        let cfg = config(true);
        let spec = |img: &ResolvedImage| {
            create_spec(
                "web",
                &img.pinned(),
                cfg.create.as_ref().expect("create"),
                Duration::ZERO,
            )
        };
        // hoist died after Swarm accepted the create: its tasks never ran.
        let bad = image("bad", &["linux/amd64"]);
        let swarm = FakeSwarm::new();
        swarm.fail_image(&bad.pinned());
        swarm.add_service(spec(&bad));
        let short = DeployOptions {
            converge_timeout: Duration::from_millis(100),
            ..fast()
        };
        let target = Target {
            service: &cfg,
            image: &bad,
            auth: None,
        };
        let outcome = deploy(&swarm, target, &short).await.expect("deploy");
        assert_eq!(outcome.state, OutcomeState::TimedOut, "{outcome:?}");

        // Its tasks run: unchanged, at the cost of one more read.
        let good = image("good", &["linux/amd64"]);
        let swarm = FakeSwarm::new();
        swarm.add_service(spec(&good));
        let outcome = run(&swarm, &cfg, &good).await.expect("deploy");
        assert_eq!(outcome.state, OutcomeState::Unchanged, "{outcome:?}");
        assert_eq!(outcome.api_calls, 2);
    }

    #[tokio::test]
    async fn a_new_service_whose_tasks_keep_failing_is_failed() {
        let swarm = FakeSwarm::new();
        let bad = image("bad", &["linux/amd64"]);
        swarm.fail_image(&bad.pinned());
        let outcome = run(&swarm, &config(true), &bad).await.expect("deploy");
        assert_eq!(outcome.state, OutcomeState::Failed, "{outcome:?}");
        assert!(!outcome.task_errors.is_empty());
    }
}
