//! `Tag Push Hook` (`object_kind: tag_push`): a tag was created or deleted.

use serde::Deserialize;

use super::common::{Project, or_default};
use super::ids::{CommitSha, ProjectId, UserId};

/// A tag was pushed or deleted. GitLab sends no tag hooks for a push of more than three refs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TagPushEvent {
    #[serde(deserialize_with = "or_default")]
    pub object_kind: String,
    /// `refs/tags/<name>`; see [`Self::tag_name`].
    #[serde(rename = "ref", deserialize_with = "or_default")]
    pub git_ref: String,
    #[serde(deserialize_with = "or_default")]
    pub before: CommitSha,
    /// For an annotated tag this is the tag object, not a commit: use [`Self::commit`].
    #[serde(deserialize_with = "or_default")]
    pub after: CommitSha,
    /// The tagged commit; `null` when the tag was deleted.
    pub checkout_sha: Option<CommitSha>,
    /// Absent on GitLab versions that predate it: re-read the tag before relying on it.
    pub ref_protected: Option<bool>,
    pub message: Option<String>,
    #[serde(deserialize_with = "or_default")]
    pub user_id: UserId,
    #[serde(deserialize_with = "or_default")]
    pub user_name: String,
    #[serde(deserialize_with = "or_default")]
    pub user_username: String,
    #[serde(deserialize_with = "or_default")]
    pub project_id: ProjectId,
    #[serde(deserialize_with = "or_default")]
    pub project: Project,
}

impl TagPushEvent {
    /// The tag's name, without `refs/tags/`.
    pub fn tag_name(&self) -> &str {
        self.git_ref
            .strip_prefix("refs/tags/")
            .unwrap_or(&self.git_ref)
    }

    /// Whether this push deleted the tag (`after` all zeros, or no `checkout_sha`).
    pub fn is_deleted(&self) -> bool {
        self.after.is_zero() || self.checkout_sha.is_none()
    }

    /// The tagged commit, from `checkout_sha` and never from `after`
    /// (which names the tag object of an annotated tag); `None` for a deleted tag.
    pub fn commit(&self) -> Option<&CommitSha> {
        if self.is_deleted() {
            return None;
        }
        self.checkout_sha.as_ref().filter(|sha| !sha.is_zero())
    }
}
