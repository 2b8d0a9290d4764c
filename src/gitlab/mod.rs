//! GitLab's REST API as the engine sees it: one narrow trait of domain verbs and plain types.
//!
//! [`GitLab`] is what the run engine and the `/deploy` command hold (as `Arc<dyn GitLab>`);
//! [`HttpClient`] implements it with the `gitlab` crate's typed endpoints over our own
//! transport (timeouts, bounded retries, metrics: see [`client`]). Tests run the same
//! client against the fake GitLab in `tests/support/fake_gitlab`.
//!
//! `project` is always the configured `path_with_namespace` or a numeric id as text; paths
//! are URL-encoded on the way out. Errors carry GitLab's `message`, never the token.

mod api;
pub mod client;
mod endpoints;

#[cfg(test)]
mod tests;

use std::fmt;

use async_trait::async_trait;

use crate::config::Secret;
use crate::events::{CommitSha, JobId, PipelineId, ProjectId, Status, UserId};

pub use client::{ClientError, DEFAULT_TIMEOUT, HttpClient, RetryPolicy};

/// The longest commit status description GitLab stores.
pub const STATUS_DESCRIPTION_MAX: usize = 255;

/// Why a GitLab call failed; callers branch on the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitlabError {
    /// 404: the project, pipeline, job, MR, tag or hook does not exist (or is invisible to the token).
    #[error("not found: {0}")]
    NotFound(String),
    /// 403: the token's user lacks the rights (role, protected tag or environment).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 400 "Unplayable Job": skipped, already running, archived, waiting for approval.
    #[error("job cannot be played: {0}")]
    Unplayable(String),
    /// Another 400/409/422: GitLab refused the request as written.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 401: the API token is wrong, expired or revoked.
    #[error("the GitLab token was refused (401)")]
    Unauthorized,
    /// Unreachable, slow, rate limited or 5xx on every allowed attempt; worth trying later.
    #[error("GitLab unavailable: {0}")]
    Transient(String),
    /// An answer hoist cannot read (unexpected status or JSON shape).
    #[error("unexpected answer from GitLab: {0}")]
    Protocol(String),
}

impl GitlabError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, GitlabError::Transient(_))
    }
}

/// The user the API token belongs to (hoist's bot user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
}

/// A comment or note as listed (who wrote it and what).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub author: String,
    pub body: String,
}

/// A protected tag rule: which tags it covers and who may create them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedTag {
    /// A tag name or a wildcard pattern (`v*`).
    pub name: String,
    /// Access levels allowed to create matching tags (0 = no one; 30 developer, 40 maintainer).
    pub create_levels: Vec<u32>,
    /// Users allowed by name (id), besides the levels.
    pub create_users: Vec<UserId>,
}

impl ProtectedTag {
    /// Whether a user with `level` (or this very user) may create the tags, and so play
    /// jobs of their pipelines.
    pub fn allows(&self, user: UserId, level: u32) -> bool {
        self.create_users.contains(&user)
            || self.create_levels.iter().any(|l| *l > 0 && level >= *l)
    }
}

/// A project as `GET /projects/:id` shows it (what `hoist check` verifies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectInfo {
    pub id: ProjectId,
    pub path_with_namespace: String,
    pub web_url: String,
    /// Set for a fork: the project it was forked from.
    pub forked_from: Option<ProjectId>,
}

/// A pipeline as `GET /projects/:id/pipelines/:id` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub id: PipelineId,
    pub sha: CommitSha,
    /// Bare branch or tag name.
    pub ref_name: String,
    /// Whether `ref_name` is a tag. GitLab's pipeline *list* omits this field: it is `false`
    /// in [`GitLab::pipelines_for_sha`] results unless GitLab sent it.
    pub tag: bool,
    pub status: Status,
    pub web_url: String,
    /// `push`, `merge_request_event`, `web`, …
    pub source: String,
}

/// A CI job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub stage: String,
    pub status: Status,
    /// `on_success`, `manual`, … when GitLab reports it (the REST job object usually does not;
    /// a job waiting to be played has `status: manual`).
    pub when: Option<String>,
    pub allow_failure: bool,
    pub web_url: String,
    pub pipeline_id: PipelineId,
}

/// A merge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequest {
    pub iid: u64,
    pub source_project_id: ProjectId,
    pub target_project_id: ProjectId,
    /// The head commit.
    pub sha: CommitSha,
    pub head_pipeline_id: Option<PipelineId>,
    pub web_url: String,
    /// `opened`, `closed`, `merged`, `locked`.
    pub state: String,
    /// The branch the merge request brings in.
    pub source_branch: String,
}

impl MergeRequest {
    /// Whether the MR comes from a fork (its code is not the project's own).
    pub fn is_from_fork(&self) -> bool {
        self.source_project_id != self.target_project_id
    }
}

/// A repository tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    /// The commit the tag points at (not the tag object of an annotated tag).
    pub commit_sha: CommitSha,
    pub protected: bool,
    /// The tag's creation time for annotated tags, else the commit's creation time, as GitLab wrote it.
    pub created_at: Option<String>,
}

/// A note's id (MR notes, for reactions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NoteId(pub u64);

impl fmt::Display for NoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A project hook's id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HookId(pub u64);

impl fmt::Display for HookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The state of a commit status (`POST /projects/:id/statuses/:sha`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommitState {
    Pending,
    Running,
    Success,
    Failed,
    Canceled,
}

impl CommitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommitState::Pending => "pending",
            CommitState::Running => "running",
            CommitState::Success => "success",
            CommitState::Failed => "failed",
            CommitState::Canceled => "canceled",
        }
    }
}

/// The events hoist's hook sends, in the order hoist prints them: (name, label).
pub const HOOK_EVENTS: [(&str, &str); 5] = [
    ("pipeline", "pipeline events"),
    ("tag push", "tag push events"),
    ("note", "note events"),
    ("internal note", "internal note events"),
    ("job", "job events"),
];

/// Which of [`HOOK_EVENTS`] a hook sends, or asks for (GitLab's `*_events` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookEvents {
    pub pipeline: bool,
    pub tag_push: bool,
    pub note: bool,
    /// Internal notes ("Confidential comments" in GitLab's form) come apart from notes.
    pub confidential_note: bool,
    pub job: bool,
}

impl HookEvents {
    /// Every event hoist needs.
    pub const ALL: HookEvents = HookEvents {
        pipeline: true,
        tag_push: true,
        note: true,
        confidential_note: true,
        job: true,
    };

    /// Each flag, in the order of [`HOOK_EVENTS`].
    pub fn flags(self) -> [bool; 5] {
        [
            self.pipeline,
            self.tag_push,
            self.note,
            self.confidential_note,
            self.job,
        ]
    }
}

/// A project hook as GitLab reports it (tokens are never returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub id: HookId,
    pub url: String,
    pub events: HookEvents,
    pub enable_ssl_verification: bool,
    /// `executable`, `temporarily_disabled` or `disabled` (absent on old GitLab).
    pub alert_status: Option<String>,
    /// When a temporarily disabled hook is tried again.
    pub disabled_until: Option<String>,
}

/// What `create_hook` / `edit_hook` send. Changing the URL resets the token on GitLab's
/// side, so every edit sends the tokens again.
#[derive(Debug, Clone, PartialEq)]
pub struct HookSpec {
    pub url: String,
    pub token: Option<Secret>,
    /// `whsec_…` (GitLab 19.0+); older GitLab ignores the field.
    pub signing_token: Option<Secret>,
    pub events: HookEvents,
    pub enable_ssl_verification: bool,
}

impl HookSpec {
    /// The events hoist needs (pipeline, tag push, note and internal note, job) for `url`.
    pub fn for_hoist(url: impl Into<String>) -> HookSpec {
        HookSpec {
            url: url.into(),
            token: None,
            signing_token: None,
            events: HookEvents::ALL,
            enable_ssl_verification: true,
        }
    }
}

/// The GitLab calls hoist makes, by what they mean.
#[async_trait]
pub trait GitLab: Send + Sync {
    /// The token's user: `GET /user`.
    async fn current_user(&self) -> Result<User, GitlabError>;

    /// The token's scopes (`GET /personal_access_tokens/self`; also answers for project
    /// and group access tokens).
    async fn token_scopes(&self) -> Result<Vec<String>, GitlabError>;

    /// The project's protected tag rules.
    async fn protected_tags(&self, project: &str) -> Result<Vec<ProtectedTag>, GitlabError>;

    /// `GET /projects/:id`: whether the token sees the project, and its numeric id.
    async fn project(&self, project: &str) -> Result<ProjectInfo, GitlabError>;

    /// `GET /projects/:id/pipelines/:pipeline_id`.
    async fn pipeline(&self, project: &str, id: PipelineId) -> Result<Pipeline, GitlabError>;

    /// The pipelines for a commit, newest first.
    async fn pipelines_for_sha(
        &self,
        project: &str,
        sha: &CommitSha,
    ) -> Result<Vec<Pipeline>, GitlabError>;

    /// Every job of a pipeline (all pages), retried jobs excluded.
    async fn pipeline_jobs(&self, project: &str, id: PipelineId) -> Result<Vec<Job>, GitlabError>;

    /// `GET /projects/:id/jobs/:job_id`.
    async fn job(&self, project: &str, id: JobId) -> Result<Job, GitlabError>;

    /// Plays a manual job; [`GitlabError::Unplayable`] when it is not waiting in `manual`.
    async fn play_job(&self, project: &str, id: JobId) -> Result<Job, GitlabError>;

    /// `GET /projects/:id/merge_requests/:iid`.
    async fn merge_request(&self, project: &str, iid: u64) -> Result<MergeRequest, GitlabError>;

    /// `GET /projects/:id/repository/tags/:name`, with its `protected` flag.
    async fn tag(&self, project: &str, name: &str) -> Result<Tag, GitlabError>;

    /// The user's effective access level (inherited memberships included); `None` when not a member.
    async fn member_role(&self, project: &str, user: UserId) -> Result<Option<u32>, GitlabError>;

    /// A comment on a commit (not retried after a timeout: see [`client`]).
    async fn comment_on_commit(
        &self,
        project: &str,
        sha: &CommitSha,
        body: &str,
    ) -> Result<(), GitlabError>;

    /// Sets a commit status; `description` is cut to [`STATUS_DESCRIPTION_MAX`] characters.
    async fn set_commit_status(
        &self,
        project: &str,
        sha: &CommitSha,
        state: CommitState,
        name: &str,
        target_url: Option<&str>,
        description: &str,
    ) -> Result<(), GitlabError>;

    /// A note on a merge request, `internal` (seen by members only) or public; returns its
    /// id (to react to, or for links).
    async fn reply_on_mr(
        &self,
        project: &str,
        iid: u64,
        body: &str,
        internal: bool,
    ) -> Result<NoteId, GitlabError>;

    /// The comments on a commit, oldest first (all pages).
    async fn commit_comments(
        &self,
        project: &str,
        sha: &CommitSha,
    ) -> Result<Vec<Comment>, GitlabError>;

    /// The notes of a merge request (all pages).
    async fn mr_notes(&self, project: &str, iid: u64) -> Result<Vec<Comment>, GitlabError>;

    /// An award emoji (`eyes`, `rocket`, `x`) on an MR note.
    async fn react(
        &self,
        project: &str,
        iid: u64,
        note: NoteId,
        emoji: &str,
    ) -> Result<(), GitlabError>;

    /// The project's hooks.
    async fn hooks(&self, project: &str) -> Result<Vec<Hook>, GitlabError>;

    /// Creates a project hook.
    async fn create_hook(&self, project: &str, spec: &HookSpec) -> Result<Hook, GitlabError>;

    /// Replaces a project hook's settings (tokens included).
    async fn edit_hook(
        &self,
        project: &str,
        id: HookId,
        spec: &HookSpec,
    ) -> Result<Hook, GitlabError>;
}

/// `text` cut to at most `max` bytes at a character boundary (so also at most `max` characters).
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
