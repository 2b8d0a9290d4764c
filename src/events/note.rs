//! `Note Hook` and `Confidential Note Hook` (`object_kind: note`): comments, the carrier of `/deploy`.

use serde::Deserialize;

use super::common::{Commit, Project, User, or_default};
use super::ids::{CommitSha, PipelineId, ProjectId};
use super::status::{NoteAction, NoteableType};
use super::time::Timestamp;

/// A comment was created or edited. hoist's own replies fire this hook too.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NoteEvent {
    #[serde(deserialize_with = "or_default")]
    pub object_kind: String,
    /// `note` or `confidential_note`.
    pub event_type: Option<String>,
    #[serde(deserialize_with = "or_default")]
    pub object_attributes: NoteAttributes,
    #[serde(deserialize_with = "or_default")]
    pub user: User,
    #[serde(deserialize_with = "or_default")]
    pub project_id: ProjectId,
    #[serde(deserialize_with = "or_default")]
    pub project: Project,
    /// Set when the note is on a merge request.
    pub merge_request: Option<NoteMergeRequest>,
    /// Set when the note is on a commit.
    pub commit: Option<Commit>,
    /// An internal note: delivered as `Confidential Note Hook`, or marked so in the body.
    #[serde(skip)]
    pub confidential: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NoteAttributes {
    #[serde(deserialize_with = "or_default")]
    pub id: u64,
    /// The comment's Markdown text.
    #[serde(deserialize_with = "or_default")]
    pub note: String,
    #[serde(deserialize_with = "or_default")]
    pub noteable_type: NoteableType,
    /// Absent before GitLab 16.11, where every delivery is a creation: see [`NoteEvent::action`].
    pub action: Option<NoteAction>,
    /// GitLab's own notes ("added 1 commit", "changed the description").
    #[serde(deserialize_with = "or_default")]
    pub system: bool,
    /// Older spelling of `internal`.
    #[serde(deserialize_with = "or_default")]
    pub confidential: bool,
    #[serde(deserialize_with = "or_default")]
    pub internal: bool,
    pub commit_id: Option<CommitSha>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
    pub url: Option<String>,
}

/// The merge request a note is on, as the note hook embeds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NoteMergeRequest {
    #[serde(deserialize_with = "or_default")]
    pub id: u64,
    /// The `!5` number, what the notes and award emoji endpoints take.
    #[serde(deserialize_with = "or_default")]
    pub iid: u64,
    #[serde(deserialize_with = "or_default")]
    pub title: String,
    #[serde(deserialize_with = "or_default")]
    pub source_branch: String,
    #[serde(deserialize_with = "or_default")]
    pub target_branch: String,
    pub source_project_id: Option<ProjectId>,
    pub target_project_id: Option<ProjectId>,
    pub last_commit: Option<LastCommit>,
    pub head_pipeline_id: Option<PipelineId>,
    /// `opened`, `closed`, `merged`, `locked`.
    #[serde(deserialize_with = "or_default")]
    pub state: String,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LastCommit {
    #[serde(deserialize_with = "or_default")]
    pub id: CommitSha,
    #[serde(deserialize_with = "or_default")]
    pub message: String,
    pub timestamp: Option<Timestamp>,
    pub url: Option<String>,
}

impl NoteEvent {
    /// What happened to the note; GitLab before 16.11 sends no action and only for creations.
    pub fn action(&self) -> NoteAction {
        self.object_attributes
            .action
            .clone()
            .unwrap_or(NoteAction::Create)
    }

    /// Whether this delivery is an edit of an existing note (edits never trigger anything).
    pub fn is_edit(&self) -> bool {
        self.action() != NoteAction::Create
    }

    /// The merge request's `iid` when the note is on one.
    pub fn merge_request_iid(&self) -> Option<u64> {
        match self.object_attributes.noteable_type {
            NoteableType::MergeRequest => self.merge_request.as_ref().map(|mr| mr.iid),
            _ => None,
        }
    }
}

impl NoteMergeRequest {
    /// Whether the merge request comes from another project (a fork): `/deploy` refuses those.
    /// Unknown project ids count as a fork, so a missing field never widens who may deploy.
    pub fn is_from_fork(&self) -> bool {
        match (self.source_project_id, self.target_project_id) {
            (Some(source), Some(target)) => source != target,
            _ => true,
        }
    }
}
