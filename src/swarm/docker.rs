//! [`Swarm`] over the Docker Engine API with bollard: timeouts, error mapping, metrics, auth header fix.
//!
//! The API version is negotiated on first use (the engine may be older than
//! bollard's models, e.g. Docker 20.10 speaks 1.41), so constructing a client
//! never blocks and an engine that is down at start-up only fails the calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{NodeState, ServiceUpdateStatusStateEnum};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListTasksOptions, UpdateServiceOptions,
};
use tokio::sync::OnceCell;

use super::{NodeInfo, ServiceSpec, ServiceState, Swarm, SwarmError, TaskInfo, UpdateState};
use crate::config::{DockerConfig, Platform};
use crate::registry::{Credentials, normalize_platform};

/// Default limit for one Docker API call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The real engine.
pub struct DockerSwarm {
    host: String,
    call_timeout: Duration,
    docker: OnceCell<Docker>,
    calls: AtomicU64,
}

impl std::fmt::Debug for DockerSwarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerSwarm")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// bollard encodes `X-Registry-Auth` with standard base64, dockerd decodes base64url:
/// credentials whose encoding holds `+` or `/` would be garbled. Returns the re-encoded value.
pub fn reencode_registry_auth(value: &str) -> Option<String> {
    let raw = STANDARD.decode(value.trim()).ok()?;
    Some(URL_SAFE.encode(raw))
}

fn fix_auth_header(mut req: bollard::BollardRequest) -> bollard::BollardRequest {
    let fixed = req
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .and_then(reencode_registry_auth)
        .and_then(|v| http::HeaderValue::from_str(&v).ok());
    if let Some(v) = fixed {
        req.headers_mut().insert("X-Registry-Auth", v);
    }
    req
}

impl DockerSwarm {
    /// A client for `docker.host`; connects on first use.
    pub fn new(config: &DockerConfig) -> DockerSwarm {
        DockerSwarm {
            host: config.host.clone(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            docker: OnceCell::new(),
            calls: AtomicU64::new(0),
        }
    }

    /// Limit for each API call (default 20 s).
    pub fn with_call_timeout(mut self, timeout: Duration) -> DockerSwarm {
        self.call_timeout = timeout;
        self
    }

    /// API calls made so far (also counted in `hoist_docker_requests_total`).
    pub fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn unreachable(&self, detail: impl Into<String>) -> SwarmError {
        SwarmError::Unreachable {
            host: self.host.clone(),
            detail: detail.into(),
        }
    }

    async fn client(&self) -> Result<&Docker, SwarmError> {
        self.docker
            .get_or_try_init(|| async {
                let secs = self.call_timeout.as_secs().max(1);
                let docker = Docker::connect_with_host(&self.host)
                    .map_err(|e| self.unreachable(e.to_string()))?
                    .with_timeout(Duration::from_secs(secs + 1))
                    .with_request_modifier(fix_auth_header);
                let docker = self.timed("version", docker.negotiate_version()).await?;
                Ok(docker)
            })
            .await
    }

    /// Runs one API call with the call timeout, counting it and mapping its error.
    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, BollardError>>,
    ) -> Result<T, SwarmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(self.call_timeout, fut).await {
            Err(_) => Err(SwarmError::Timeout {
                op,
                after: self.call_timeout,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_error(op, e)),
        };
        let status = match &result {
            Ok(_) => "ok".to_string(),
            Err(SwarmError::Rejected { status, .. }) => status.to_string(),
            Err(SwarmError::OutOfSequence { .. }) => "out_of_sequence".to_string(),
            Err(SwarmError::Timeout { .. }) => "timeout".to_string(),
            Err(SwarmError::Unreachable { .. }) => "unreachable".to_string(),
            Err(SwarmError::Other { .. }) => "error".to_string(),
        };
        metrics::counter!("hoist_docker_requests_total", "op" => op, "status" => status)
            .increment(1);
        result
    }

    fn map_error(&self, op: &'static str, e: BollardError) -> SwarmError {
        match e {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => {
                if message.contains("out of sequence") {
                    SwarmError::OutOfSequence {
                        service: String::new(),
                    }
                } else {
                    SwarmError::Rejected {
                        op,
                        status: status_code,
                        message,
                    }
                }
            }
            BollardError::RequestTimeoutError => SwarmError::Timeout {
                op,
                after: self.call_timeout,
            },
            BollardError::IOError { err } => self.unreachable(err.to_string()),
            BollardError::SocketNotFoundError(path) => {
                self.unreachable(format!("no socket at {path}"))
            }
            e @ (BollardError::HyperLegacyError { .. }
            | BollardError::HyperResponseError { .. }) => self.unreachable(full_chain(&e)),
            other => SwarmError::Other {
                op,
                detail: full_chain(&other),
            },
        }
    }

    /// `Swarm.LocalNodeState` and whether this engine can manage services, for `hoist check`.
    pub async fn manager_status(&self) -> Result<(String, bool), SwarmError> {
        let docker = self.client().await?;
        let info = self.timed("info", docker.info()).await?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm
            .local_node_state
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Ok((state, swarm.control_available.unwrap_or(false)))
    }
}

fn full_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn credentials(auth: Option<&Credentials>) -> Option<DockerCredentials> {
    auth.map(|c| DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.expose().to_string()),
        serveraddress: Some(c.server.clone()),
        ..Default::default()
    })
}

fn enum_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn service_state(service: bollard::models::Service) -> ServiceState {
    let spec = service.spec.unwrap_or_default();
    let template = spec.task_template.as_ref();
    let image = template
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone());
    let constraints = template
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.constraints.clone())
        .unwrap_or_default();
    let replicas = spec
        .mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .map(|r| r.replicas.unwrap_or(1).max(0) as u64);
    let status = service.update_status.as_ref();
    let update = status.and_then(|u| u.state).and_then(|s| match s {
        ServiceUpdateStatusStateEnum::UPDATING => Some(UpdateState::Updating),
        ServiceUpdateStatusStateEnum::PAUSED => Some(UpdateState::Paused),
        ServiceUpdateStatusStateEnum::COMPLETED => Some(UpdateState::Completed),
        ServiceUpdateStatusStateEnum::ROLLBACK_STARTED => Some(UpdateState::RollbackStarted),
        ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED => Some(UpdateState::RollbackPaused),
        ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED => Some(UpdateState::RollbackCompleted),
        ServiceUpdateStatusStateEnum::EMPTY => None,
    });
    ServiceState {
        id: service.id.unwrap_or_default(),
        name: spec.name.clone().unwrap_or_default(),
        version: service.version.and_then(|v| v.index).unwrap_or(0),
        image,
        constraints,
        replicas,
        update,
        update_message: status.and_then(|u| u.message.clone()),
        spec,
    }
}

fn task_info(task: bollard::models::Task) -> TaskInfo {
    let status = task.status.unwrap_or_default();
    TaskInfo {
        id: task.id.unwrap_or_default(),
        slot: task.slot,
        node_id: task.node_id,
        image: task
            .spec
            .and_then(|s| s.container_spec)
            .and_then(|c| c.image),
        state: status.state.as_ref().map(enum_text).unwrap_or_default(),
        desired_state: task
            .desired_state
            .as_ref()
            .map(enum_text)
            .unwrap_or_default(),
        error: status.err.filter(|e| !e.is_empty()),
        message: status.message,
        exit_code: status.container_status.and_then(|c| c.exit_code),
    }
}

fn node_info(node: bollard::models::Node) -> NodeInfo {
    let spec = node.spec.unwrap_or_default();
    let description = node.description.unwrap_or_default();
    let platform = description.platform.unwrap_or_default();
    let raw_arch = platform.architecture.unwrap_or_default();
    let os = platform.os.unwrap_or_default();
    NodeInfo {
        id: node.id.unwrap_or_default(),
        hostname: description.hostname.unwrap_or_default(),
        role: spec.role.as_ref().map(enum_text).unwrap_or_default(),
        ready: node.status.and_then(|s| s.state) == Some(NodeState::READY),
        availability: spec
            .availability
            .as_ref()
            .map(enum_text)
            .unwrap_or_default(),
        platform: normalize_platform(&Platform {
            os,
            arch: raw_arch.clone(),
            variant: None,
        }),
        raw_arch,
        labels: spec.labels.unwrap_or_default(),
        engine_labels: description
            .engine
            .and_then(|e| e.labels)
            .unwrap_or_default(),
    }
}

impl Swarm for DockerSwarm {
    async fn ping(&self) -> Result<(), SwarmError> {
        let docker = self.client().await?;
        self.timed("ping", docker.ping()).await.map(|_| ())
    }

    async fn inspect(&self, service: &str) -> Result<Option<ServiceState>, SwarmError> {
        let docker = self.client().await?;
        let options = InspectServiceOptions {
            insert_defaults: false,
        };
        match self
            .timed(
                "inspect_service",
                docker.inspect_service(service, Some(options)),
            )
            .await
        {
            Ok(s) => Ok(Some(service_state(s))),
            Err(SwarmError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create(
        &self,
        spec: &ServiceSpec,
        auth: Option<&Credentials>,
    ) -> Result<String, SwarmError> {
        let docker = self.client().await?;
        let created = self
            .timed(
                "create_service",
                docker.create_service(spec.clone(), credentials(auth)),
            )
            .await?;
        created.id.ok_or(SwarmError::Other {
            op: "create_service",
            detail: "the answer carries no service ID".into(),
        })
    }

    async fn update_image(
        &self,
        service: &ServiceState,
        image: &str,
        auth: Option<&Credentials>,
    ) -> Result<(), SwarmError> {
        let docker = self.client().await?;
        let mut spec = service.spec.clone();
        let container = spec
            .task_template
            .get_or_insert_with(Default::default)
            .container_spec
            .get_or_insert_with(Default::default);
        container.image = Some(image.to_string());
        let version = version_i32(service.version, "update_service")?;
        let options = UpdateServiceOptions {
            version,
            ..Default::default()
        };
        let result = self
            .timed(
                "update_service",
                docker.update_service(&service.id, spec, options, credentials(auth)),
            )
            .await;
        match result {
            Err(SwarmError::OutOfSequence { .. }) => Err(SwarmError::OutOfSequence {
                service: service.name.clone(),
            }),
            Err(e) => Err(e),
            Ok(response) => {
                for warning in response.warnings.unwrap_or_default() {
                    tracing::warn!(service = %service.name, %warning, "Docker warned on service update");
                }
                Ok(())
            }
        }
    }

    async fn rollback(&self, service: &ServiceState) -> Result<(), SwarmError> {
        let docker = self.client().await?;
        let version = version_i32(service.version, "rollback_service")?;
        let options = UpdateServiceOptions {
            version,
            rollback: Some("previous".into()),
            ..Default::default()
        };
        let result = self
            .timed(
                "rollback_service",
                docker.update_service(&service.id, service.spec.clone(), options, None),
            )
            .await;
        match result {
            Err(SwarmError::OutOfSequence { .. }) => Err(SwarmError::OutOfSequence {
                service: service.name.clone(),
            }),
            other => other.map(|_| ()),
        }
    }

    async fn tasks(&self, service_id: &str) -> Result<Vec<TaskInfo>, SwarmError> {
        let docker = self.client().await?;
        let filters = HashMap::from([("service".to_string(), vec![service_id.to_string()])]);
        let options = ListTasksOptions {
            filters: Some(filters),
        };
        let tasks = self
            .timed("list_tasks", docker.list_tasks(Some(options)))
            .await?;
        Ok(tasks.into_iter().map(task_info).collect())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, SwarmError> {
        let docker = self.client().await?;
        let nodes = self
            .timed("list_nodes", docker.list_nodes(None::<ListNodesOptions>))
            .await?;
        Ok(nodes.into_iter().map(node_info).collect())
    }
}

/// Swarm reads `Version.Index` as u64 but takes it back as i32.
fn version_i32(version: u64, op: &'static str) -> Result<i32, SwarmError> {
    i32::try_from(version).map_err(|_| SwarmError::Other {
        op,
        detail: format!("service version {version} does not fit the API's 32-bit version field"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_is_reencoded_as_base64url() {
        // Bytes chosen so standard base64 holds both '+' and '/'.
        let raw = b"{\"password\":\"\xfb\xff\xbe?>~\"}";
        let standard = STANDARD.encode(raw);
        assert!(
            standard.contains('+') || standard.contains('/'),
            "{standard}"
        );
        let fixed = reencode_registry_auth(&standard).expect("valid base64");
        assert!(!fixed.contains('+') && !fixed.contains('/'), "{fixed}");
        assert_eq!(URL_SAFE.decode(&fixed).expect("base64url"), raw);
    }

    #[test]
    fn version_that_does_not_fit_i32_is_an_error() {
        assert_eq!(version_i32(41, "x"), Ok(41));
        assert!(version_i32(u64::from(u32::MAX), "x").is_err());
    }
}
