//! An in-memory [`Swarm`] for tests of code that deploys (the run engine), without a Docker engine.
//!
//! A small world model, not a mock: services have versions that every write
//! must quote, an update settles after a few inspects (completed, or rolled
//! back when its image is marked failing), and tasks are derived from that.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bollard::models::ServiceSpecUpdateConfigFailureActionEnum;

use super::{NodeInfo, ServiceSpec, ServiceState, Swarm, SwarmError, TaskInfo, UpdateState};
use crate::config::Platform;
use crate::registry::Credentials;

/// Inspects an update takes to settle.
const POLLS_TO_SETTLE: u32 = 2;

#[derive(Debug, Default)]
struct World {
    services: Vec<FakeService>,
    nodes: Vec<NodeInfo>,
    failing_images: HashSet<String>,
    conflicts_left: u32,
    down: bool,
    /// An engine restart: after `outage_skip` more calls, `outage_left` calls are unreachable.
    outage_skip: u32,
    outage_left: u32,
    calls: u32,
    next_id: u32,
    /// Credentials sent with each create/update, by service name.
    auth_seen: HashMap<String, Vec<Option<Credentials>>>,
}

#[derive(Debug, Clone)]
struct FakeService {
    state: ServiceState,
    previous_image: Option<String>,
    polls_left: u32,
    /// Tasks that ran a failing image, kept for `tasks()`.
    failed: Vec<TaskInfo>,
}

/// See the module doc. All methods take `&self`; the world sits behind a mutex.
#[derive(Debug)]
pub struct FakeSwarm {
    world: Mutex<World>,
}

impl Default for FakeSwarm {
    fn default() -> Self {
        Self::new()
    }
}

/// A ready, active node.
pub fn fake_node(hostname: &str, role: &str, platform: &str) -> NodeInfo {
    let platform = Platform::parse(platform).unwrap_or(Platform {
        os: "linux".into(),
        arch: "amd64".into(),
        variant: None,
    });
    NodeInfo {
        id: format!("node-{hostname}"),
        hostname: hostname.to_string(),
        role: role.to_string(),
        ready: true,
        availability: "active".into(),
        raw_arch: platform.arch.clone(),
        platform,
        labels: HashMap::new(),
        engine_labels: HashMap::new(),
    }
}

impl FakeSwarm {
    /// A swarm of one ready `linux/amd64` manager.
    pub fn new() -> FakeSwarm {
        Self::with_nodes(vec![fake_node("manager-1", "manager", "linux/amd64")])
    }

    pub fn with_nodes(nodes: Vec<NodeInfo>) -> FakeSwarm {
        FakeSwarm {
            world: Mutex::new(World {
                nodes,
                ..World::default()
            }),
        }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        // A panicking test poisons the lock; the world is still usable for its report.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tasks of `image` exit at once: an update to it fails (and rolls back).
    pub fn fail_image(&self, image: &str) {
        self.world().failing_images.insert(image.to_string());
    }

    /// The next `n` updates find the service changed by someone else ("out of sequence").
    pub fn conflict_next_updates(&self, n: u32) {
        self.world().conflicts_left = n;
    }

    /// While down, every call answers `Unreachable`.
    pub fn set_down(&self, down: bool) {
        self.world().down = down;
    }

    /// The engine restarts later: after `skip` more calls succeed, the next `n` answer
    /// `Unreachable`.
    pub fn restart_after(&self, skip: u32, n: u32) {
        let mut world = self.world();
        world.outage_skip = skip;
        world.outage_left = n;
    }

    /// Calls made so far.
    pub fn calls(&self) -> u32 {
        self.world().calls
    }

    /// The service as it is now (does not count as a call or advance time).
    pub fn service(&self, name: &str) -> Option<ServiceState> {
        let world = self.world();
        world
            .services
            .iter()
            .find(|s| s.state.name == name || s.state.id == name)
            .map(|s| s.state.clone())
    }

    /// Credentials passed with each write to `service`.
    pub fn auth_seen(&self, service: &str) -> Vec<Option<Credentials>> {
        self.world()
            .auth_seen
            .get(service)
            .cloned()
            .unwrap_or_default()
    }

    /// Adds an existing service (as if created by hand), settled.
    pub fn add_service(&self, spec: ServiceSpec) -> String {
        let mut world = self.world();
        world.next_id += 1;
        let id = format!("svc{}", world.next_id);
        let state = state_from_spec(&id, 1, spec);
        world.services.push(FakeService {
            state,
            previous_image: None,
            polls_left: 0,
            failed: Vec::new(),
        });
        id
    }

    fn enter(&self) -> Result<std::sync::MutexGuard<'_, World>, SwarmError> {
        let mut world = self.world();
        world.calls += 1;
        if world.outage_left > 0 {
            if world.outage_skip > 0 {
                world.outage_skip -= 1;
            } else {
                world.outage_left -= 1;
                return Err(SwarmError::Unreachable {
                    host: "fake://swarm".into(),
                    detail: "the fake engine is restarting".into(),
                });
            }
        }
        if world.down {
            return Err(SwarmError::Unreachable {
                host: "fake://swarm".into(),
                detail: "the fake engine is down".into(),
            });
        }
        Ok(world)
    }
}

fn state_from_spec(id: &str, version: u64, spec: ServiceSpec) -> ServiceState {
    let template = spec.task_template.as_ref();
    ServiceState {
        id: id.to_string(),
        name: spec.name.clone().unwrap_or_default(),
        version,
        image: template
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone()),
        constraints: template
            .and_then(|t| t.placement.as_ref())
            .and_then(|p| p.constraints.clone())
            .unwrap_or_default(),
        replicas: spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .map(|r| r.replicas.unwrap_or(1).max(0) as u64),
        update: None,
        update_message: None,
        spec,
    }
}

fn set_image(state: &mut ServiceState, image: Option<String>) {
    state.image = image.clone();
    if let Some(c) = state
        .spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    {
        c.image = image;
    }
}

fn failed_task(service: &ServiceState, image: &str, n: usize) -> TaskInfo {
    TaskInfo {
        id: format!("{}-failed-{n}", service.id),
        slot: Some(1),
        node_id: Some("node-manager-1".into()),
        image: Some(image.to_string()),
        state: "failed".into(),
        desired_state: "shutdown".into(),
        error: Some("task: non-zero exit (1)".into()),
        message: Some("started".into()),
        exit_code: Some(1),
    }
}

impl FakeService {
    /// One inspect's worth of time passes.
    fn advance(&mut self, failing: &HashSet<String>) {
        if self.polls_left == 0 {
            return;
        }
        self.polls_left -= 1;
        if self.polls_left > 0 {
            return;
        }
        let image = self.state.image.clone().unwrap_or_default();
        match self.state.update {
            Some(UpdateState::Updating) if failing.contains(&image) => {
                let n = self.failed.len();
                self.failed.push(failed_task(&self.state, &image, n));
                let action = self
                    .state
                    .spec
                    .update_config
                    .as_ref()
                    .and_then(|c| c.failure_action);
                if action == Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK) {
                    let previous = self.previous_image.take();
                    set_image(&mut self.state, previous);
                    self.state.version += 1;
                    self.state.update = Some(UpdateState::RollbackCompleted);
                    self.state.update_message = Some("rollback completed".into());
                } else {
                    self.state.update = Some(UpdateState::Paused);
                    self.state.update_message =
                        Some("update paused due to failure or early termination of task".into());
                }
            }
            Some(UpdateState::Updating) => {
                self.state.update = Some(UpdateState::Completed);
                self.state.update_message = Some("update completed".into());
            }
            Some(UpdateState::RollbackStarted) => {
                self.state.update = Some(UpdateState::RollbackCompleted);
                self.state.update_message = Some("rollback completed".into());
            }
            _ => {}
        }
    }

    fn tasks(&self, failing: &HashSet<String>) -> Vec<TaskInfo> {
        let mut tasks = self.failed.clone();
        let image = self.state.image.clone().unwrap_or_default();
        let settled = self.polls_left == 0;
        if !failing.contains(&image) || !settled {
            let running_image = if settled || self.state.update.is_none() {
                Some(image)
            } else {
                self.previous_image.clone()
            };
            for slot in 1..=self.state.replicas.unwrap_or(1) {
                tasks.push(TaskInfo {
                    id: format!("{}-{slot}-v{}", self.state.id, self.state.version),
                    slot: Some(slot as i64),
                    node_id: Some("node-manager-1".into()),
                    image: running_image.clone(),
                    state: "running".into(),
                    desired_state: "running".into(),
                    error: None,
                    message: Some("started".into()),
                    exit_code: None,
                });
            }
        }
        tasks
    }
}

impl Swarm for FakeSwarm {
    async fn ping(&self) -> Result<(), SwarmError> {
        self.enter().map(|_| ())
    }

    async fn inspect(&self, service: &str) -> Result<Option<ServiceState>, SwarmError> {
        let mut world = self.enter()?;
        let failing = world.failing_images.clone();
        Ok(world
            .services
            .iter_mut()
            .find(|s| s.state.name == service || s.state.id == service)
            .map(|s| {
                s.advance(&failing);
                s.state.clone()
            }))
    }

    async fn create(
        &self,
        spec: &ServiceSpec,
        auth: Option<&Credentials>,
    ) -> Result<String, SwarmError> {
        let mut world = self.enter()?;
        let name = spec.name.clone().unwrap_or_default();
        if world.services.iter().any(|s| s.state.name == name) {
            return Err(SwarmError::Rejected {
                op: "create_service",
                status: 409,
                message: format!("service {name} already exists"),
            });
        }
        world.auth_seen.entry(name).or_default().push(auth.cloned());
        world.next_id += 1;
        let id = format!("svc{}", world.next_id);
        let state = state_from_spec(&id, 1, spec.clone());
        let image = state.image.clone().unwrap_or_default();
        let failed = if world.failing_images.contains(&image) {
            (0..3).map(|n| failed_task(&state, &image, n)).collect()
        } else {
            Vec::new()
        };
        world.services.push(FakeService {
            state,
            previous_image: None,
            polls_left: 0,
            failed,
        });
        Ok(id)
    }

    async fn update_image(
        &self,
        service: &ServiceState,
        image: &str,
        auth: Option<&Credentials>,
    ) -> Result<(), SwarmError> {
        let mut world = self.enter()?;
        let conflict = world.conflicts_left > 0;
        world.conflicts_left = world.conflicts_left.saturating_sub(1);
        world
            .auth_seen
            .entry(service.name.clone())
            .or_default()
            .push(auth.cloned());
        let stored = world
            .services
            .iter_mut()
            .find(|s| s.state.id == service.id)
            .ok_or_else(|| SwarmError::Rejected {
                op: "update_service",
                status: 404,
                message: format!("service {} not found", service.id),
            })?;
        if conflict {
            // Someone else wrote the service just before us.
            stored.state.version += 1;
        }
        if stored.state.version != service.version {
            return Err(SwarmError::OutOfSequence {
                service: service.name.clone(),
            });
        }
        stored.previous_image = stored.state.image.clone();
        stored.state.spec = service.spec.clone();
        set_image(&mut stored.state, Some(image.to_string()));
        stored.state.version += 1;
        stored.state.update = None;
        stored.state.update_message = None;
        // The first inspect finds the updater started; later ones see it settle.
        stored.polls_left = POLLS_TO_SETTLE + 1;
        stored.state.update = Some(UpdateState::Updating);
        Ok(())
    }

    async fn rollback(&self, service: &ServiceState) -> Result<(), SwarmError> {
        let mut world = self.enter()?;
        let stored = world
            .services
            .iter_mut()
            .find(|s| s.state.id == service.id)
            .ok_or_else(|| SwarmError::Rejected {
                op: "rollback_service",
                status: 404,
                message: format!("service {} not found", service.id),
            })?;
        if stored.state.version != service.version {
            return Err(SwarmError::OutOfSequence {
                service: service.name.clone(),
            });
        }
        let previous = stored.previous_image.take();
        set_image(&mut stored.state, previous);
        stored.state.version += 1;
        stored.state.update = Some(UpdateState::RollbackStarted);
        stored.polls_left = POLLS_TO_SETTLE;
        Ok(())
    }

    async fn tasks(&self, service_id: &str) -> Result<Vec<TaskInfo>, SwarmError> {
        let world = self.enter()?;
        let failing = world.failing_images.clone();
        Ok(world
            .services
            .iter()
            .find(|s| s.state.id == service_id)
            .map(|s| s.tasks(&failing))
            .unwrap_or_default())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, SwarmError> {
        let world = self.enter()?;
        Ok(world.nodes.clone())
    }
}
