//! [`GitLab`] over [`HttpClient`]: the crate's typed endpoints in, plain domain types out.
//!
//! Answers are read into small private structs that accept missing and unknown fields,
//! then mapped; the crate's `ApiError` becomes a [`GitlabError`] by HTTP status.

use async_trait::async_trait;
use gitlab::api::common::NameOrId;
use gitlab::api::personal_access_tokens::PersonalAccessTokenSelf;
use gitlab::api::projects::Project as ProjectEndpoint;
use gitlab::api::projects::hooks::Hooks;
use gitlab::api::projects::jobs::{Job as JobEndpoint, PlayJob};
use gitlab::api::projects::members::AllProjectMember;
use gitlab::api::projects::merge_requests::MergeRequest as MrEndpoint;
use gitlab::api::projects::merge_requests::notes::awards::CreateMergeRequestNoteAward;
use gitlab::api::projects::merge_requests::notes::{CreateMergeRequestNote, MergeRequestNotes};
use gitlab::api::projects::pipelines::{
    Pipeline as PipelineEndpoint, PipelineJobs, PipelineOrderBy, Pipelines,
};
use gitlab::api::projects::protected_tags::ProtectedTags;
use gitlab::api::projects::repository::commits::{
    CommentOnCommit, CommitComments, CommitStatusState, CreateCommitStatus,
};
use gitlab::api::projects::repository::tags::Tag as TagEndpoint;
use gitlab::api::users::CurrentUser;
use gitlab::api::{self as glapi, ApiError, AsyncQuery, Pagination};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::client::{ClientError, HttpClient};
use super::endpoints::HookEndpoint;
use super::{
    Comment, CommitState, GitLab, GitlabError, Hook, HookId, HookSpec, Job, MergeRequest, NoteId,
    Pipeline, ProjectInfo, ProtectedTag, STATUS_DESCRIPTION_MAX, Tag, User, truncate,
};
use crate::events::{CommitSha, JobId, PipelineId, ProjectId, Status, UserId};

fn project(p: &str) -> NameOrId<'_> {
    match p.parse::<u64>() {
        Ok(id) => NameOrId::Id(id),
        Err(_) => NameOrId::Name(p.into()),
    }
}

/// A builder's complaint is our bug, not GitLab's answer.
fn build_err(e: impl std::fmt::Display) -> GitlabError {
    GitlabError::Protocol(format!("cannot build the request: {e}"))
}

/// Maps the crate's error onto ours by status; the message is GitLab's, never the request.
pub(crate) fn map_error(e: ApiError<ClientError>) -> GitlabError {
    use http::StatusCode;
    let by_status = |status: StatusCode, msg: String| match status.as_u16() {
        401 => GitlabError::Unauthorized,
        403 => GitlabError::Forbidden(msg),
        404 => GitlabError::NotFound(msg),
        400 if msg.contains("Unplayable") => GitlabError::Unplayable(msg),
        400 | 405 | 409 | 412 | 422 => GitlabError::BadRequest(msg),
        429 | 500..=599 => GitlabError::Transient(msg),
        _ => GitlabError::Protocol(format!("HTTP {}: {msg}", status.as_u16())),
    };
    match e {
        ApiError::Client { source } => match source {
            ClientError::Transient(m) => GitlabError::Transient(m),
            ClientError::Request(m) => GitlabError::Protocol(m),
        },
        ApiError::GitlabWithStatus { status, msg } => by_status(status, msg),
        ApiError::GitlabObjectWithStatus { status, obj } => by_status(status, obj.to_string()),
        ApiError::GitlabUnrecognizedWithStatus { status, obj } => {
            by_status(status, obj.to_string())
        }
        ApiError::GitlabService { status, data } => {
            let text = String::from_utf8_lossy(&data);
            by_status(status, truncate(text.trim(), 200).to_string())
        }
        ApiError::GitlabRateLimited { retry_after, .. } => GitlabError::Transient(format!(
            "rate limited, retry after {}s",
            retry_after.as_secs()
        )),
        other => GitlabError::Protocol(other.to_string()),
    }
}

#[derive(Deserialize)]
struct RawUser {
    id: u64,
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
struct RawProject {
    id: u64,
    #[serde(default)]
    path_with_namespace: String,
    #[serde(default)]
    web_url: String,
    #[serde(default)]
    forked_from_project: Option<IdOnly>,
}

#[derive(Deserialize)]
struct RawPipeline {
    id: u64,
    #[serde(default)]
    sha: String,
    #[serde(default, rename = "ref")]
    ref_name: Option<String>,
    #[serde(default)]
    tag: Option<bool>,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    web_url: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

impl From<RawPipeline> for Pipeline {
    fn from(p: RawPipeline) -> Pipeline {
        Pipeline {
            id: PipelineId(p.id),
            sha: CommitSha(p.sha),
            ref_name: p.ref_name.unwrap_or_default(),
            tag: p.tag.unwrap_or(false),
            status: p.status,
            web_url: p.web_url.unwrap_or_default(),
            source: p.source.unwrap_or_default(),
        }
    }
}

#[derive(Deserialize, Default)]
struct IdOnly {
    #[serde(default)]
    id: u64,
}

#[derive(Deserialize)]
struct RawJob {
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    allow_failure: Option<bool>,
    #[serde(default)]
    web_url: Option<String>,
    #[serde(default)]
    pipeline: Option<IdOnly>,
}

impl From<RawJob> for Job {
    fn from(j: RawJob) -> Job {
        Job {
            id: JobId(j.id),
            name: j.name,
            stage: j.stage,
            status: j.status,
            when: j.when,
            allow_failure: j.allow_failure.unwrap_or(false),
            web_url: j.web_url.unwrap_or_default(),
            pipeline_id: PipelineId(j.pipeline.unwrap_or_default().id),
        }
    }
}

#[derive(Deserialize)]
struct RawMergeRequest {
    iid: u64,
    #[serde(default)]
    source_project_id: u64,
    #[serde(default)]
    target_project_id: u64,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    head_pipeline: Option<IdOnly>,
    #[serde(default)]
    web_url: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    source_branch: Option<String>,
}

#[derive(Deserialize)]
struct RawCommit {
    #[serde(default)]
    id: String,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct RawTag {
    name: String,
    #[serde(default)]
    commit: Option<RawCommit>,
    #[serde(default)]
    protected: Option<bool>,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct RawMember {
    access_level: u32,
}

#[derive(Deserialize)]
struct RawAuthor {
    #[serde(default)]
    username: String,
}

/// A commit comment (`note`) or an MR note (`body`).
#[derive(Deserialize)]
struct RawComment {
    #[serde(default, alias = "note")]
    body: String,
    author: Option<RawAuthor>,
}

impl From<RawComment> for Comment {
    fn from(c: RawComment) -> Comment {
        Comment {
            author: c.author.map(|a| a.username).unwrap_or_default(),
            body: c.body,
        }
    }
}

#[derive(Deserialize)]
struct RawToken {
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Deserialize)]
struct RawProtectedTag {
    name: String,
    #[serde(default)]
    create_access_levels: Vec<RawAccess>,
}

#[derive(Deserialize)]
struct RawAccess {
    #[serde(default)]
    access_level: Option<u32>,
    #[serde(default)]
    user_id: Option<u64>,
}

#[derive(Deserialize)]
struct RawNote {
    id: u64,
}

#[derive(Deserialize)]
struct RawHook {
    id: u64,
    #[serde(default)]
    url: String,
    #[serde(default)]
    pipeline_events: Option<bool>,
    #[serde(default)]
    tag_push_events: Option<bool>,
    #[serde(default)]
    note_events: Option<bool>,
    #[serde(default)]
    confidential_note_events: Option<bool>,
    #[serde(default)]
    job_events: Option<bool>,
    #[serde(default)]
    enable_ssl_verification: Option<bool>,
    #[serde(default)]
    alert_status: Option<String>,
    #[serde(default)]
    disabled_until: Option<String>,
}

impl From<RawHook> for Hook {
    fn from(h: RawHook) -> Hook {
        Hook {
            id: HookId(h.id),
            url: h.url,
            events: super::HookEvents {
                pipeline: h.pipeline_events.unwrap_or(false),
                tag_push: h.tag_push_events.unwrap_or(false),
                note: h.note_events.unwrap_or(false),
                confidential_note: h.confidential_note_events.unwrap_or(false),
                job: h.job_events.unwrap_or(false),
            },
            enable_ssl_verification: h.enable_ssl_verification.unwrap_or(false),
            alert_status: h.alert_status,
            disabled_until: h.disabled_until,
        }
    }
}

impl HttpClient {
    async fn get<T, E>(&self, endpoint: E) -> Result<T, GitlabError>
    where
        E: glapi::Endpoint + Sync + Send,
        T: DeserializeOwned + Send + 'static,
    {
        endpoint.query_async(self).await.map_err(map_error)
    }

    async fn all_pages<T, E>(&self, endpoint: E) -> Result<Vec<T>, GitlabError>
    where
        E: glapi::Endpoint + glapi::Pageable + Sync + Send,
        T: DeserializeOwned + Send + 'static,
    {
        glapi::paged(endpoint, Pagination::All)
            .query_async(self)
            .await
            .map_err(map_error)
    }
}

#[async_trait]
impl GitLab for HttpClient {
    async fn current_user(&self) -> Result<User, GitlabError> {
        let u: RawUser = self
            .get(CurrentUser::builder().build().map_err(build_err)?)
            .await?;
        Ok(User {
            id: UserId(u.id),
            username: u.username,
        })
    }

    async fn commit_comments(&self, p: &str, sha: &CommitSha) -> Result<Vec<Comment>, GitlabError> {
        let e = CommitComments::builder()
            .project(project(p))
            .commit(sha.as_str())
            .build()
            .map_err(build_err)?;
        let raw: Vec<RawComment> = self.all_pages(e).await?;
        Ok(raw.into_iter().map(Comment::from).collect())
    }

    async fn mr_notes(&self, p: &str, iid: u64) -> Result<Vec<Comment>, GitlabError> {
        let e = MergeRequestNotes::builder()
            .project(project(p))
            .merge_request(iid)
            .build()
            .map_err(build_err)?;
        let raw: Vec<RawComment> = self.all_pages(e).await?;
        Ok(raw.into_iter().map(Comment::from).collect())
    }

    async fn token_scopes(&self) -> Result<Vec<String>, GitlabError> {
        let e = PersonalAccessTokenSelf::builder()
            .build()
            .map_err(build_err)?;
        let t: RawToken = self.get(e).await?;
        Ok(t.scopes)
    }

    async fn protected_tags(&self, p: &str) -> Result<Vec<ProtectedTag>, GitlabError> {
        let e = ProtectedTags::builder()
            .project(project(p))
            .build()
            .map_err(build_err)?;
        let raw: Vec<RawProtectedTag> = self.all_pages(e).await?;
        Ok(raw
            .into_iter()
            .map(|t| ProtectedTag {
                name: t.name,
                create_levels: t
                    .create_access_levels
                    .iter()
                    .filter(|a| a.user_id.is_none())
                    .filter_map(|a| a.access_level)
                    .collect(),
                create_users: t
                    .create_access_levels
                    .iter()
                    .filter_map(|a| a.user_id.map(UserId))
                    .collect(),
            })
            .collect())
    }

    async fn project(&self, p: &str) -> Result<ProjectInfo, GitlabError> {
        let e = ProjectEndpoint::builder()
            .project(project(p))
            .build()
            .map_err(build_err)?;
        let r: RawProject = self.get(e).await?;
        Ok(ProjectInfo {
            id: ProjectId(r.id),
            path_with_namespace: r.path_with_namespace,
            web_url: r.web_url,
            forked_from: r.forked_from_project.map(|f| ProjectId(f.id)),
        })
    }

    async fn pipeline(&self, p: &str, id: PipelineId) -> Result<Pipeline, GitlabError> {
        let e = PipelineEndpoint::builder()
            .project(project(p))
            .pipeline(id.get())
            .build()
            .map_err(build_err)?;
        Ok(self.get::<RawPipeline, _>(e).await?.into())
    }

    async fn pipelines_for_sha(
        &self,
        p: &str,
        sha: &CommitSha,
    ) -> Result<Vec<Pipeline>, GitlabError> {
        let e = Pipelines::builder()
            .project(project(p))
            .sha(sha.as_str())
            .order_by(PipelineOrderBy::Id)
            .sort(glapi::common::SortOrder::Descending)
            .build()
            .map_err(build_err)?;
        // One page of 100 is more pipelines than one commit ever has.
        let raw: Vec<RawPipeline> = glapi::paged(e, Pagination::Limit(100))
            .query_async(self)
            .await
            .map_err(map_error)?;
        let mut list: Vec<Pipeline> = raw.into_iter().map(Pipeline::from).collect();
        list.sort_by_key(|p| std::cmp::Reverse(p.id));
        Ok(list)
    }

    async fn pipeline_jobs(&self, p: &str, id: PipelineId) -> Result<Vec<Job>, GitlabError> {
        let e = PipelineJobs::builder()
            .project(project(p))
            .pipeline(id.get())
            .include_retried(false)
            .build()
            .map_err(build_err)?;
        let raw: Vec<RawJob> = self.all_pages(e).await?;
        Ok(raw.into_iter().map(Job::from).collect())
    }

    async fn job(&self, p: &str, id: JobId) -> Result<Job, GitlabError> {
        let e = JobEndpoint::builder()
            .project(project(p))
            .job(id.get())
            .build()
            .map_err(build_err)?;
        Ok(self.get::<RawJob, _>(e).await?.into())
    }

    async fn play_job(&self, p: &str, id: JobId) -> Result<Job, GitlabError> {
        let e = PlayJob::builder()
            .project(project(p))
            .job(id.get())
            .build()
            .map_err(build_err)?;
        Ok(self.get::<RawJob, _>(e).await?.into())
    }

    async fn merge_request(&self, p: &str, iid: u64) -> Result<MergeRequest, GitlabError> {
        let e = MrEndpoint::builder()
            .project(project(p))
            .merge_request(iid)
            .build()
            .map_err(build_err)?;
        let m: RawMergeRequest = self.get(e).await?;
        Ok(MergeRequest {
            iid: m.iid,
            source_project_id: ProjectId(m.source_project_id),
            target_project_id: ProjectId(m.target_project_id),
            sha: CommitSha(m.sha.unwrap_or_default()),
            head_pipeline_id: m.head_pipeline.map(|h| PipelineId(h.id)),
            web_url: m.web_url.unwrap_or_default(),
            state: m.state.unwrap_or_default(),
            source_branch: m.source_branch.unwrap_or_default(),
        })
    }

    async fn tag(&self, p: &str, name: &str) -> Result<Tag, GitlabError> {
        let e = TagEndpoint::builder()
            .project(project(p))
            .tag_name(name)
            .build()
            .map_err(build_err)?;
        let t: RawTag = self.get(e).await?;
        let (commit_sha, commit_created) = match t.commit {
            Some(c) => (c.id, c.created_at),
            None => (String::new(), None),
        };
        Ok(Tag {
            name: t.name,
            commit_sha: CommitSha(commit_sha),
            protected: t.protected.unwrap_or(false),
            created_at: t.created_at.or(commit_created),
        })
    }

    async fn member_role(&self, p: &str, user: UserId) -> Result<Option<u32>, GitlabError> {
        let e = AllProjectMember::builder()
            .project(project(p))
            .user(user.get())
            .build()
            .map_err(build_err)?;
        match self.get::<RawMember, _>(e).await {
            Ok(m) => Ok(Some(m.access_level)),
            // "404 Not found" is "not a member"; "404 Project Not Found" is a real error.
            Err(GitlabError::NotFound(msg)) if !msg.contains("Project") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn comment_on_commit(
        &self,
        p: &str,
        sha: &CommitSha,
        body: &str,
    ) -> Result<(), GitlabError> {
        let e = CommentOnCommit::builder()
            .project(project(p))
            .commit(sha.as_str())
            .note(body)
            .build()
            .map_err(build_err)?;
        glapi::ignore(e).query_async(self).await.map_err(map_error)
    }

    async fn set_commit_status(
        &self,
        p: &str,
        sha: &CommitSha,
        state: CommitState,
        name: &str,
        target_url: Option<&str>,
        description: &str,
    ) -> Result<(), GitlabError> {
        let state = match state {
            CommitState::Pending => CommitStatusState::Pending,
            CommitState::Running => CommitStatusState::Running,
            CommitState::Success => CommitStatusState::Success,
            CommitState::Failed => CommitStatusState::Failed,
            CommitState::Canceled => CommitStatusState::Canceled,
        };
        let mut b = CreateCommitStatus::builder();
        b.project(project(p))
            .commit(sha.as_str())
            .state(state)
            .name(name)
            .description(truncate(description, STATUS_DESCRIPTION_MAX));
        // GitLab rejects longer links; a status without its link beats no status.
        if let Some(url) = target_url.filter(|u| u.len() <= STATUS_DESCRIPTION_MAX) {
            b.target_url(url);
        }
        let e = b.build().map_err(build_err)?;
        glapi::ignore(e).query_async(self).await.map_err(map_error)
    }

    async fn reply_on_mr(
        &self,
        p: &str,
        iid: u64,
        body: &str,
        internal: bool,
    ) -> Result<NoteId, GitlabError> {
        let mut e = CreateMergeRequestNote::builder();
        e.project(project(p)).merge_request(iid).body(body);
        // Sent only when set: a public note looks as it always did to any GitLab.
        if internal {
            e.internal(true);
        }
        let e = e.build().map_err(build_err)?;
        let n: RawNote = self.get(e).await?;
        Ok(NoteId(n.id))
    }

    async fn react(&self, p: &str, iid: u64, note: NoteId, emoji: &str) -> Result<(), GitlabError> {
        let e = CreateMergeRequestNoteAward::builder()
            .project(project(p))
            .merge_request(iid)
            .note(note.0)
            .name(emoji)
            .build()
            .map_err(build_err)?;
        glapi::ignore(e).query_async(self).await.map_err(map_error)
    }

    async fn hooks(&self, p: &str) -> Result<Vec<Hook>, GitlabError> {
        let e = Hooks::builder()
            .project(project(p))
            .build()
            .map_err(build_err)?;
        let raw: Vec<RawHook> = self.all_pages(e).await?;
        Ok(raw.into_iter().map(Hook::from).collect())
    }

    async fn create_hook(&self, p: &str, spec: &HookSpec) -> Result<Hook, GitlabError> {
        let e = HookEndpoint {
            project: project(p),
            hook: None,
            spec,
        };
        Ok(self.get::<RawHook, _>(e).await?.into())
    }

    async fn edit_hook(&self, p: &str, id: HookId, spec: &HookSpec) -> Result<Hook, GitlabError> {
        let e = HookEndpoint {
            project: project(p),
            hook: Some(id.0),
            spec,
        };
        Ok(self.get::<RawHook, _>(e).await?.into())
    }
}
