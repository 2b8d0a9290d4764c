//! `Job Hook` (`object_kind: build`): one job changed status; how hoist sees a human playing `deploy`.

use serde::Deserialize;

use super::common::{Environment, Project, User, or_default};
use super::ids::{CommitSha, JobId, PipelineId, ProjectId};
use super::status::Status;
use super::time::Timestamp;

/// A job changed status (fired on every change, possibly out of order).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct JobEvent {
    #[serde(deserialize_with = "or_default")]
    pub object_kind: String,
    #[serde(deserialize_with = "or_default")]
    pub build_id: JobId,
    #[serde(deserialize_with = "or_default")]
    pub build_name: String,
    #[serde(deserialize_with = "or_default")]
    pub build_stage: String,
    #[serde(deserialize_with = "or_default")]
    pub build_status: Status,
    #[serde(deserialize_with = "or_default")]
    pub build_allow_failure: bool,
    pub build_created_at: Option<Timestamp>,
    pub build_started_at: Option<Timestamp>,
    pub build_finished_at: Option<Timestamp>,
    pub build_duration: Option<f64>,
    pub build_failure_reason: Option<String>,
    #[serde(deserialize_with = "or_default")]
    pub pipeline_id: PipelineId,
    /// The bare branch or tag name.
    #[serde(rename = "ref", deserialize_with = "or_default")]
    pub git_ref: String,
    #[serde(deserialize_with = "or_default")]
    pub tag: bool,
    #[serde(deserialize_with = "or_default")]
    pub sha: CommitSha,
    pub before_sha: Option<CommitSha>,
    pub user: Option<User>,
    #[serde(deserialize_with = "or_default")]
    pub project_id: ProjectId,
    /// `Group / Project`, for people; [`Project::path_with_namespace`] is the path.
    #[serde(deserialize_with = "or_default")]
    pub project_name: String,
    #[serde(deserialize_with = "or_default")]
    pub project: Project,
    // No `commit`: in job hooks its `id` is the pipeline id, not a SHA; `sha` above is the commit.
    pub environment: Option<Environment>,
}
