//! Which environment a request means, and how an environment's policy reads for people.

use super::{Refusal, RefusalCode, join_and, role_name};
use crate::config::{EnvironmentConfig, Policy, ProjectConfig};

/// The environment `/deploy [ENV]` (or `hoist deploy`) targets.
///
/// A named environment must exist (the parser already checked names against the
/// config; this repeats it for `hoist deploy`). Without a name, the project's
/// only manual environment is meant; none or several is a refusal that lists them.
pub fn resolve_env<'a>(
    project: &'a ProjectConfig,
    name: Option<&str>,
) -> Result<&'a EnvironmentConfig, Refusal> {
    if let Some(name) = name {
        return project
            .environments
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| Refusal {
                code: RefusalCode::UnknownEnv,
                reason: format!(
                    "{} has no environment {name}; its environments are {}",
                    project.path,
                    join_and(&names(project.environments.iter()))
                ),
            });
    }
    let manual: Vec<&EnvironmentConfig> = project
        .environments
        .iter()
        .filter(|e| e.policy == Policy::Manual)
        .collect();
    match manual.as_slice() {
        [only] => Ok(only),
        [] => Err(Refusal {
            code: RefusalCode::Policy,
            reason: format!(
                "{} has no environment with policy = \"manual\", so /deploy needs no default; its environments deploy from release tags",
                project.path
            ),
        }),
        several => Err(Refusal {
            code: RefusalCode::UnknownEnv,
            reason: format!(
                "{} has several manual environments ({}); name one, as in /deploy {}",
                project.path,
                join_and(&names(several.iter().copied())),
                several[0].name
            ),
        }),
    }
}

fn names<'a>(envs: impl Iterator<Item = &'a EnvironmentConfig>) -> Vec<&'a str> {
    envs.map(|e| e.name.as_str()).collect()
}

/// How an environment deploys, for `/deploy help` and `/deploy status`.
pub fn policy_description(env: &EnvironmentConfig) -> String {
    match env.policy {
        Policy::Tag => format!(
            "tag: {}release tags matching {} deploy automatically{}",
            if env.require_protected_tag {
                "protected "
            } else {
                ""
            },
            env.tag_pattern_text,
            if env.allow_downgrade {
                ", older tags too"
            } else {
                ", never backwards"
            }
        ),
        Policy::Manual => format!(
            "manual: /deploy {} by a {} or higher, hoist deploy, or playing the deploy job",
            env.name,
            role_name(env.deploy_role)
        ),
    }
}
