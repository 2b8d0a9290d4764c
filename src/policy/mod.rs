//! Release policy: from facts about a tag, a pipeline or a deploy request to a [`Decision`]. Pure.
//!
//! The engine gathers the facts (events, API reads, what is live) into the plain
//! input structs below; these functions only judge them. No I/O, no clock: times
//! come in as values. Every refusal carries a reason a person can act on and a
//! short machine code for history, metrics and tests.

mod env;
mod manual;
mod pipeline;
mod tag;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::config::Role;

pub use env::{policy_description, resolve_env};
pub use manual::{ManualInput, PipelineView, Requester, evaluate_manual};
pub use pipeline::{JobView, Readiness, pipeline_ready};
pub use tag::{LiveVersion, TagInput, evaluate_tag};

/// What to do with a request or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start (or queue) a run.
    Deploy,
    /// Record a `refused` run and tell the requester why.
    Refuse(Refusal),
    /// Nothing to do and nobody to tell (a deleted tag, a tag for another environment).
    Ignore(String),
}

/// Why a deploy is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: RefusalCode,
    /// A sentence for the person who asked, saying what to change.
    pub reason: String,
}

/// The machine-readable cause of a [`Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// The tag is older than the live one and `allow_downgrade` is false.
    Downgrade,
    /// The tag is not protected and `require_protected_tag` is true.
    NotProtected,
    /// The tag does not match `tag_pattern` (only for explicit requests).
    Pattern,
    /// The tag was deleted (only for explicit requests).
    Deleted,
    /// The tag is what is live already (only for explicit requests).
    AlreadyLive,
    /// The requester's role is below `deploy_role`.
    Role,
    /// The merge request comes from a fork.
    Fork,
    /// The environment's policy does not allow this kind of trigger.
    Policy,
    /// No environment by that name, or none named where several could be meant.
    UnknownEnv,
    /// The commit has no pipeline, or its pipeline lacks the jobs.
    NoPipeline,
    /// A job the run must play can no longer be played (failed, canceled, skipped).
    PipelineFailed,
}

impl RefusalCode {
    /// The code as stored and shown (`downgrade`, `not_protected`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downgrade => "downgrade",
            Self::NotProtected => "not_protected",
            Self::Pattern => "pattern",
            Self::Deleted => "deleted",
            Self::AlreadyLive => "already_live",
            Self::Role => "role",
            Self::Fork => "fork",
            Self::Policy => "policy",
            Self::UnknownEnv => "unknown_env",
            Self::NoPipeline => "no_pipeline",
            Self::PipelineFailed => "pipeline_failed",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Decision {
    fn refuse(code: RefusalCode, reason: impl Into<String>) -> Self {
        Self::Refuse(Refusal {
            code,
            reason: reason.into(),
        })
    }

    /// The refusal code, if this is a refusal (handy in tests and metrics).
    pub fn code(&self) -> Option<RefusalCode> {
        match self {
            Self::Refuse(r) => Some(r.code),
            _ => None,
        }
    }
}

/// A role's name as GitLab shows it in prose (`developer`).
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Guest => "guest",
        Role::Reporter => "reporter",
        Role::Developer => "developer",
        Role::Maintainer => "maintainer",
        Role::Owner => "owner",
    }
}

/// Joins names as prose: `a`, `a and b`, `a, b and c`.
pub(crate) fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
