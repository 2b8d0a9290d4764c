//! What a report is rendered from: a run as the engine knows it, and per-environment status views.

use chrono::{DateTime, Utc};

/// What started a run (SPEC §3 `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Tag,
    MrComment,
    JobPlay,
    Cli,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tag => "tag",
            Self::MrComment => "mr_comment",
            Self::JobPlay => "job_play",
            Self::Cli => "cli",
        }
    }

    /// The trigger in a list (`tag`, `/deploy`).
    pub fn short(self) -> &'static str {
        match self {
            Self::Tag => "tag",
            Self::MrComment => "/deploy",
            Self::JobPlay => "job play",
            Self::Cli => "hoist deploy",
        }
    }

    /// How the trigger reads in prose (`a /deploy comment`).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Tag => "a release tag",
            Self::MrComment => "a /deploy comment",
            Self::JobPlay => "the deploy job played in GitLab",
            Self::Cli => "hoist deploy",
        }
    }
}

/// A run's state (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    RolledBack,
    Superseded,
    Refused,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
            Self::Superseded => "superseded",
            Self::Refused => "refused",
        }
    }

    fn emoji(self) -> &'static str {
        match self {
            Self::Queued => "⏳",
            Self::Running => "🚀",
            Self::Succeeded => "✅",
            Self::Failed => "❌",
            Self::RolledBack => "↩️",
            Self::Superseded => "⏭️",
            Self::Refused => "🚫",
        }
    }

    /// `✅ succeeded`, for lists.
    pub fn badge(self) -> String {
        format!("{} {}", self.emoji(), self.as_str().replace('_', " "))
    }
}

/// What happened to one Swarm service in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Created,
    Updated,
    Unchanged,
    RolledBack,
    Failed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::RolledBack => "rolled back",
            Self::Failed => "failed",
        }
    }
}

/// One service of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReport {
    pub name: String,
    /// Repository without tag (`registry.example.com/group/app`).
    pub image: String,
    pub tag: String,
    /// The index digest (`sha256:…`), once `verify` resolved it.
    pub digest: Option<String>,
    /// `os/arch[/variant]`.
    pub platforms: Vec<String>,
    /// The service's Swarm `version.index` before and after the update (`None`: did not exist / not reached).
    pub version_before: Option<u64>,
    pub version_after: Option<u64>,
    pub state: ServiceState,
}

/// A run, as much as the engine knows when it renders a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: u64,
    /// `group/project`.
    pub project: String,
    pub env: String,
    pub trigger: Trigger,
    /// The GitLab username (or `hoist deploy`'s caller) who asked.
    pub requested_by: String,
    /// The tag or branch.
    pub ref_name: String,
    pub sha: String,
    pub pipeline_url: Option<String>,
    /// Links to the jobs hoist played, `(job name, web URL)`.
    pub job_urls: Vec<(String, String)>,
    pub services: Vec<ServiceReport>,
    pub state: RunState,
    /// The step that failed (`manifest`, `verify`, `deploy-job`, `swarm`, `converge`).
    pub failed_step: Option<String>,
    pub error: Option<String>,
    /// Swarm task errors seen while converging.
    pub task_errors: Vec<String>,
    pub duration_ms: Option<u64>,
    /// This run on hoist's dashboard.
    pub dashboard_url: Option<String>,
}

/// The state of the `hoist/<env>` commit status (the GitLab client's type).
pub use crate::gitlab::CommitState;

/// One environment for `/deploy status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvStatus {
    pub env: String,
    /// How the environment deploys, in words (`tag: release tags matching v*`).
    pub policy: String,
    /// What Swarm runs now.
    pub live: Vec<LiveService>,
    /// The run in progress, if any.
    pub running: Option<RunSummary>,
    /// The last finished runs, newest first.
    pub recent: Vec<RunSummary>,
}

/// A service as it runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveService {
    pub name: String,
    pub image: String,
    pub tag: String,
    pub digest: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// What Swarm runs instead, when the service was changed outside hoist since the deploy.
    pub drift: Option<String>,
}

/// A run in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: u64,
    pub state: RunState,
    pub trigger: Trigger,
    pub ref_name: String,
    pub sha: String,
    pub requested_by: String,
    pub at: Option<DateTime<Utc>>,
}
