//! The tag policy: may this tag deploy to this environment, given what is live there?

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use super::{Decision, RefusalCode};
use crate::config::{EnvironmentConfig, Policy};

/// Facts about a tag, gathered from a Tag Push or Pipeline hook and the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagInput {
    /// The bare tag name (`v1.2.0`, no `refs/tags/`).
    pub tag: String,
    /// GitLab's `ref_protected`.
    pub protected: bool,
    /// The tag was deleted (`after` all zeros).
    pub deleted: bool,
    /// What runs in the environment now, if hoist deployed a tag there before.
    pub live: Option<LiveVersion>,
    /// When the tag was created; orders tags that are not semver.
    pub tag_created_at: Option<DateTime<Utc>>,
    /// A person asked for this tag (`hoist deploy --tag`): what would be silently
    /// ignored for an event (wrong pattern, manual env, deleted, already live)
    /// becomes a refusal they get to read.
    pub explicit: bool,
}

/// The tag live in an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveVersion {
    pub tag: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// Decides whether `input.tag` deploys to `env`.
///
/// Order of checks: deleted, policy, pattern, protection, then the order against
/// the live tag. Tags compare by semver precedence (a leading `v` is accepted);
/// when either is not semver, or both have equal precedence but differ in text
/// (`1.0.0+a`, `1.0.0+b`), they compare by creation time. When that is unknown
/// too the tag deploys: nothing shows it is older, and a pushed tag usually is
/// the newest.
pub fn evaluate_tag(env: &EnvironmentConfig, input: &TagInput) -> Decision {
    let tag = &input.tag;
    let quiet = |code: RefusalCode, reason: String| {
        if input.explicit {
            Decision::refuse(code, reason)
        } else {
            Decision::Ignore(reason)
        }
    };
    if input.deleted {
        return quiet(
            RefusalCode::Deleted,
            format!("tag {tag} was deleted; a deleted tag deploys nothing"),
        );
    }
    if env.policy == Policy::Manual {
        return quiet(
            RefusalCode::Policy,
            format!(
                "{} has policy = \"manual\" and never deploys from tags; use /deploy on a merge request or hoist deploy",
                env.name
            ),
        );
    }
    if !env.tag_pattern.is_match(tag) {
        return quiet(
            RefusalCode::Pattern,
            format!(
                "tag {tag} does not match the tag_pattern {} of {}",
                env.tag_pattern_text, env.name
            ),
        );
    }
    if env.require_protected_tag && !input.protected {
        return Decision::refuse(
            RefusalCode::NotProtected,
            format!(
                "tag {tag} is not protected; protect tags matching {} in the project's settings (Repository → Protected tags), or set require_protected_tag = false for {}",
                env.tag_pattern_text, env.name
            ),
        );
    }
    let Some(live) = &input.live else {
        return Decision::Deploy;
    };
    if live.tag == *tag {
        return quiet(
            RefusalCode::AlreadyLive,
            format!("tag {tag} is already live in {}", env.name),
        );
    }
    let order = match (parse_semver(tag), parse_semver(&live.tag)) {
        (Some(new), Some(old)) => match new.cmp_precedence(&old) {
            Ordering::Equal => by_creation(input.tag_created_at, live.created_at),
            other => Some(other),
        },
        _ => by_creation(input.tag_created_at, live.created_at),
    };
    match order {
        Some(Ordering::Less) if !env.allow_downgrade => Decision::refuse(
            RefusalCode::Downgrade,
            format!(
                "tag {tag} is older than {}, which is live in {}; set allow_downgrade = true to allow it",
                live.tag, env.name
            ),
        ),
        _ => Decision::Deploy,
    }
}

/// A semver version from a tag, with an optional leading `v` (`v1.2.0`, `1.2.0-rc.1`).
pub(crate) fn parse_semver(tag: &str) -> Option<semver::Version> {
    let bare = tag.strip_prefix('v').unwrap_or(tag);
    semver::Version::parse(bare).ok()
}

fn by_creation(new: Option<DateTime<Utc>>, live: Option<DateTime<Utc>>) -> Option<Ordering> {
    Some(new?.cmp(&live?))
}
