//! `Pipeline Hook` (`object_kind: pipeline`): the pipeline and the jobs the tag policy watches.

use serde::Deserialize;

use super::common::{Commit, Environment, Project, User, or_default};
use super::ids::{CommitSha, JobId, PipelineId, ProjectId};
use super::status::Status;
use super::time::Timestamp;

/// A pipeline changed status. Deliveries run concurrently, so an older status may arrive
/// after a newer one: treat this as a hint and re-read the pipeline before acting.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PipelineEvent {
    #[serde(deserialize_with = "or_default")]
    pub object_kind: String,
    #[serde(deserialize_with = "or_default")]
    pub object_attributes: PipelineAttributes,
    /// Set only for merge request pipelines.
    pub merge_request: Option<PipelineMergeRequest>,
    pub user: Option<User>,
    #[serde(deserialize_with = "or_default")]
    pub project: Project,
    pub commit: Option<Commit>,
    /// The pipeline's jobs, retried ones excluded.
    #[serde(deserialize_with = "or_default")]
    pub builds: Vec<Build>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PipelineAttributes {
    #[serde(deserialize_with = "or_default")]
    pub id: PipelineId,
    /// The per-project number shown as `#12` in the UI.
    pub iid: Option<u64>,
    /// The bare branch or tag name (no `refs/` prefix).
    #[serde(rename = "ref", deserialize_with = "or_default")]
    pub git_ref: String,
    #[serde(deserialize_with = "or_default")]
    pub tag: bool,
    #[serde(deserialize_with = "or_default")]
    pub sha: CommitSha,
    pub before_sha: Option<CommitSha>,
    /// `push`, `web`, `merge_request_event`, `parent_pipeline`, …
    #[serde(deserialize_with = "or_default")]
    pub source: String,
    #[serde(deserialize_with = "or_default")]
    pub status: Status,
    pub detailed_status: Option<String>,
    #[serde(deserialize_with = "or_default")]
    pub stages: Vec<String>,
    pub created_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration: Option<f64>,
    pub url: Option<String>,
}

/// The merge request of a merge request pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PipelineMergeRequest {
    #[serde(deserialize_with = "or_default")]
    pub id: u64,
    #[serde(deserialize_with = "or_default")]
    pub iid: u64,
    #[serde(deserialize_with = "or_default")]
    pub title: String,
    #[serde(deserialize_with = "or_default")]
    pub source_branch: String,
    pub source_project_id: Option<ProjectId>,
    #[serde(deserialize_with = "or_default")]
    pub target_branch: String,
    pub target_project_id: Option<ProjectId>,
    #[serde(deserialize_with = "or_default")]
    pub state: String,
    pub url: Option<String>,
}

/// One job of the pipeline (`builds[]`): only what the tag policy and the summary read.
///
/// A job's `user`, `runner` and timestamps are skipped unread: a pipeline hook carries
/// one object per job, and reading those into strings and instants took half the parse
/// of an 8 KB hook (`cargo bench --bench parse`: 18.6 µs with them, 9.2 µs without).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Build {
    #[serde(deserialize_with = "or_default")]
    pub id: JobId,
    #[serde(deserialize_with = "or_default")]
    pub stage: String,
    #[serde(deserialize_with = "or_default")]
    pub name: String,
    /// `manual` means waiting to be played; a manual job behind a failed stage is `skipped`.
    #[serde(deserialize_with = "or_default")]
    pub status: Status,
    /// `on_success`, `manual`, `delayed`, `always`, …
    pub when: Option<String>,
    /// Also true for delayed jobs: read `status` to know whether it waits for a human.
    #[serde(deserialize_with = "or_default")]
    pub manual: bool,
    #[serde(deserialize_with = "or_default")]
    pub allow_failure: bool,
    pub environment: Option<Environment>,
}

impl PipelineEvent {
    /// The job called `name` (the first one, should parallel jobs share a name).
    pub fn job(&self, name: &str) -> Option<&Build> {
        self.builds.iter().find(|b| b.name == name)
    }

    /// Whether every job in a stage before `job`'s passed: succeeded, or failed or waits
    /// in manual while allowed to fail (GitLab lets the pipeline continue past those).
    ///
    /// Stage order comes from `object_attributes.stages`; a job whose stage is not
    /// listed there has no known predecessors and gets `false`, never a guess.
    pub fn earlier_stages_succeeded(&self, job: &Build) -> bool {
        let stages = &self.object_attributes.stages;
        let Some(position) = stages.iter().position(|s| *s == job.stage) else {
            return false;
        };
        let earlier = &stages[..position];
        self.builds
            .iter()
            .filter(|b| earlier.contains(&b.stage))
            .all(|b| match b.status {
                Status::Success => true,
                Status::Failed | Status::Manual => b.allow_failure,
                _ => false,
            })
    }
}
