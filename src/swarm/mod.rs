//! Swarm: deploy one service at a pinned image digest, wait until it converged or rolled back.
//!
//! [`Swarm`] is the narrow view of the Docker Engine API hoist needs (one method
//! per API call); [`DockerSwarm`] implements it with bollard. [`deploy`] is what
//! the run engine calls: platform gate, create or image-only update, convergence.

mod deploy;
mod docker;
pub mod fake;
mod gate;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

pub use bollard::models::ServiceSpec;
pub use deploy::{
    DeployError, DeployOptions, Outcome, OutcomeState, Target, TaskError, create_spec, deploy,
    same_image,
};
pub use docker::{DockerSwarm, reencode_registry_auth};
pub use gate::{GateFailure, NodeGap, check_platforms, node_allowed};

use crate::config::Platform;
use crate::registry::Credentials;

/// A service as Swarm reports it, with the spec kept whole so an update can change one field only.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    pub id: String,
    pub name: String,
    /// `Version.Index`; every write must quote the current one.
    pub version: u64,
    /// `Spec.TaskTemplate.ContainerSpec.Image`.
    pub image: Option<String>,
    /// `Spec.TaskTemplate.Placement.Constraints`.
    pub constraints: Vec<String>,
    /// Replicas for a replicated service; None for global ones.
    pub replicas: Option<u64>,
    pub update: Option<UpdateState>,
    pub update_message: Option<String>,
    /// The whole spec as read.
    pub spec: ServiceSpec,
}

/// `UpdateStatus.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

/// One task of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub slot: Option<i64>,
    pub node_id: Option<String>,
    /// The image the task was created with.
    pub image: Option<String>,
    /// `Status.State` (`running`, `failed`, …).
    pub state: String,
    /// `DesiredState`.
    pub desired_state: String,
    /// `Status.Err`: why the task failed, when it did.
    pub error: Option<String>,
    pub message: Option<String>,
    /// `Status.ContainerStatus.ExitCode`.
    pub exit_code: Option<i64>,
}

/// A swarm node, with what the platform gate and placement constraints look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub hostname: String,
    /// `manager` or `worker`.
    pub role: String,
    /// `Status.State == ready`.
    pub ready: bool,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    /// Normalised (`linux/arm/v7`, not `armv7l`).
    pub platform: Platform,
    /// The platform as the node reports it (`x86_64`), which `node.platform.arch` constraints compare.
    pub raw_arch: String,
    pub labels: HashMap<String, String>,
    pub engine_labels: HashMap<String, String>,
}

/// A Docker Engine call that failed, named by operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwarmError {
    #[error("Docker engine at {host} is unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("Docker engine did not answer {op} within {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("update of service {service} out of sequence: it changed since it was read")]
    OutOfSequence { service: String },
    #[error("Docker engine refused {op}: {message}")]
    Rejected {
        op: &'static str,
        status: u16,
        message: String,
    },
    #[error("Docker engine: {op} failed: {detail}")]
    Other { op: &'static str, detail: String },
}

impl SwarmError {
    /// Whether trying again later may help: the engine was away or slow, or said it cannot
    /// serve yet (503, e.g. a restarted manager whose swarm has no leader yet).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SwarmError::Unreachable { .. }
                | SwarmError::Timeout { .. }
                | SwarmError::Rejected { status: 503, .. }
        )
    }
}

/// The Docker Engine operations hoist uses. Each method is one API call.
pub trait Swarm: Send + Sync {
    /// Cheap liveness check for `/readyz` (`GET /_ping`): the engine answers.
    fn ping(&self) -> impl Future<Output = Result<(), SwarmError>> + Send;
    /// The service by name or ID; None when it does not exist.
    fn inspect(
        &self,
        service: &str,
    ) -> impl Future<Output = Result<Option<ServiceState>, SwarmError>> + Send;
    /// Creates a service; returns its ID.
    fn create(
        &self,
        spec: &ServiceSpec,
        auth: Option<&Credentials>,
    ) -> impl Future<Output = Result<String, SwarmError>> + Send;
    /// Writes `service.spec` back with only the image changed, quoting `service.version`.
    fn update_image(
        &self,
        service: &ServiceState,
        image: &str,
        auth: Option<&Credentials>,
    ) -> impl Future<Output = Result<(), SwarmError>> + Send;
    /// Asks Swarm to roll the service back to its previous spec (for a paused failed update).
    fn rollback(
        &self,
        service: &ServiceState,
    ) -> impl Future<Output = Result<(), SwarmError>> + Send;
    /// The service's tasks, all states.
    fn tasks(
        &self,
        service_id: &str,
    ) -> impl Future<Output = Result<Vec<TaskInfo>, SwarmError>> + Send;
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeInfo>, SwarmError>> + Send;
}

impl fmt::Display for UpdateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        })
    }
}
