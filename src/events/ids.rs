//! Newtypes for the GitLab identifiers that cross module boundaries, so a job id is never played as a pipeline id.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The bare number, as the REST API wants it in a path.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<u64> for $name {
            fn from(id: u64) -> Self {
                Self(id)
            }
        }
    };
}

numeric_id!(
    /// A project's numeric id (`project.id`, `project_id`), stable across renames unlike its path.
    ProjectId
);
numeric_id!(
    /// A pipeline's instance-wide id (`object_attributes.id`, `pipeline_id`), not its per-project `iid`.
    PipelineId
);
numeric_id!(
    /// A CI job's id (`builds[].id`, `build_id`): what `POST /projects/:id/jobs/:job_id/play` takes.
    JobId
);
numeric_id!(
    /// A GitLab user's id: what `GET /projects/:id/members/all/:user_id` takes.
    UserId
);

/// A commit SHA as GitLab sends it (40 hex digits, or 40 zeros for "no commit").
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommitSha(pub String);

impl CommitSha {
    /// Length of the abbreviated SHA shown to people and used by the `{short_sha}` placeholder.
    pub const SHORT_LEN: usize = 8;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first eight characters (fewer if the SHA is shorter), as GitLab shows commits.
    pub fn short(&self) -> &str {
        match self.0.char_indices().nth(Self::SHORT_LEN) {
            Some((end, _)) => &self.0[..end],
            None => &self.0,
        }
    }

    /// GitLab's "no commit" marker: empty, or all zeros (`after` of a deleted ref, `before` of a new one).
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for CommitSha {
    fn from(sha: &str) -> Self {
        Self(sha.to_owned())
    }
}

impl From<String> for CommitSha {
    fn from(sha: String) -> Self {
        Self(sha)
    }
}
