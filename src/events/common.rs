//! Objects that several payloads embed (project, user, commit, environment) and the null-tolerant field helper.

use serde::{Deserialize, Deserializer};

use super::ids::{CommitSha, ProjectId, UserId};
use super::time::Timestamp;

/// Deserializes a field GitLab may send as `null` into its default value.
///
/// Container-level `#[serde(default)]` covers missing fields; this covers
/// present-but-null ones, so neither ever fails an event.
pub(crate) fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The `project` object of every hook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Project {
    #[serde(deserialize_with = "or_default")]
    pub id: ProjectId,
    #[serde(deserialize_with = "or_default")]
    pub name: String,
    /// `group/project`: what `[[projects]] path` in `hoist.toml` names.
    #[serde(deserialize_with = "or_default")]
    pub path_with_namespace: String,
    #[serde(deserialize_with = "or_default")]
    pub web_url: String,
    pub default_branch: Option<String>,
}

/// A user as hooks embed it (`user` of pipeline, note and job hooks; a build's `user`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct User {
    #[serde(deserialize_with = "or_default")]
    pub id: UserId,
    #[serde(deserialize_with = "or_default")]
    pub name: String,
    #[serde(deserialize_with = "or_default")]
    pub username: String,
}

/// The `commit` object of pipeline, note and job hooks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Commit {
    #[serde(deserialize_with = "or_default")]
    pub id: CommitSha,
    #[serde(deserialize_with = "or_default")]
    pub message: String,
    #[serde(deserialize_with = "or_default")]
    pub title: String,
    pub timestamp: Option<Timestamp>,
    #[serde(deserialize_with = "or_default")]
    pub url: String,
}

/// The deployment environment a job targets (`builds[].environment`, a job hook's `environment`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Environment {
    #[serde(deserialize_with = "or_default")]
    pub name: String,
    /// `start`, `prepare`, `stop`, `verify`, `access`.
    pub action: Option<String>,
    pub deployment_tier: Option<String>,
}
