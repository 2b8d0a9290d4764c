//! The manual policy: may this person deploy this merge request's head commit to this environment?

use super::pipeline::JobView;
use super::{Decision, RefusalCode, join_and, role_name};
use crate::config::{EnvironmentConfig, Policy, Role};
use crate::events::Status;

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// A GitLab user (`/deploy`); `access_level` is the effective, inherited one
    /// (`GET /projects/:id/members/all/:user_id`), `None` when not a member.
    User {
        username: String,
        access_level: Option<u32>,
    },
    /// `hoist deploy` authenticated with the server's `api_token`: an operator,
    /// trusted like the configuration itself, so no role check.
    ApiToken,
}

/// Facts about a `/deploy` (or `hoist deploy --mr/--pipeline`) request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualInput {
    pub requester: Requester,
    /// The merge request's source project differs from its target.
    pub from_fork: bool,
    /// The commit to deploy (the MR's head).
    pub sha: String,
    /// The commit's pipeline, if it has one.
    pub pipeline: Option<PipelineView>,
    /// Jobs the run will play: the project's non-empty `manifest_job` and `deploy_job`.
    pub required_jobs: Vec<String>,
}

/// A pipeline as far as the manual policy looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineView {
    pub id: u64,
    pub jobs: Vec<JobView>,
}

/// Decides a manual deploy request for `env`.
///
/// Order: policy, role, fork, pipeline, jobs: the first answer is the one that
/// matters most to the requester (no point asking for a role on a tag env).
pub fn evaluate_manual(env: &EnvironmentConfig, req: &ManualInput) -> Decision {
    if env.policy == Policy::Tag {
        return Decision::refuse(
            RefusalCode::Policy,
            format!(
                "{} deploys from release tags only; push a protected tag matching {} to deploy it",
                env.name, env.tag_pattern_text
            ),
        );
    }
    if let Requester::User {
        username,
        access_level,
    } = &req.requester
    {
        let needed = role_name(env.deploy_role);
        let has = access_level.map(Role::from_access_level);
        let enough = access_level.is_some_and(|level| level >= env.deploy_role.access_level());
        if !enough {
            let who = match has {
                None => format!("{username} is not a member of this project"),
                Some(None) => format!("{username} has minimal access here"),
                Some(Some(role)) => {
                    let name = role_name(role);
                    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    };
                    format!("{username} is {article} {name} here")
                }
            };
            let or_higher = if env.deploy_role == Role::Owner {
                ""
            } else {
                " or higher"
            };
            return Decision::refuse(
                RefusalCode::Role,
                format!("{who}; deploying to {} needs {needed}{or_higher}", env.name),
            );
        }
    }
    if req.from_fork {
        return Decision::refuse(
            RefusalCode::Fork,
            "merge requests from forks cannot deploy; push the branch to this project and open the merge request from there",
        );
    }
    let short = short_sha(&req.sha);
    let needed: Vec<&str> = req.required_jobs.iter().map(String::as_str).collect();
    let Some(pipeline) = &req.pipeline else {
        let reason = if needed.is_empty() {
            format!("the head commit {short} has no pipeline")
        } else {
            format!(
                "the head commit {short} has no pipeline with the {} {}",
                if needed.len() == 1 { "job" } else { "jobs" },
                join_and(&needed)
            )
        };
        return Decision::refuse(RefusalCode::NoPipeline, reason);
    };
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|name| !pipeline.jobs.iter().any(|j| j.name == *name))
        .collect();
    if !missing.is_empty() {
        return Decision::refuse(
            RefusalCode::NoPipeline,
            format!(
                "pipeline #{} of the head commit {short} has no {} {} (a deploy needs {})",
                pipeline.id,
                if missing.len() == 1 { "job" } else { "jobs" },
                join_and(&missing),
                join_and(&needed)
            ),
        );
    }
    for name in &needed {
        let dead = pipeline.jobs.iter().find(|j| {
            j.name == *name
                && matches!(
                    j.status,
                    Status::Failed | Status::Canceled | Status::Skipped
                )
        });
        if let Some(job) = dead {
            return Decision::refuse(
                RefusalCode::PipelineFailed,
                format!(
                    "job {name} of pipeline #{} is {}, so it cannot be played; fix or retry the pipeline, then ask again",
                    pipeline.id, job.status
                ),
            );
        }
    }
    Decision::Deploy
}

fn short_sha(sha: &str) -> &str {
    match sha.char_indices().nth(8) {
        Some((end, _)) => &sha[..end],
        None => sha,
    }
}
