//! Online checks for `hoist check` and `/deploy doctor`: GitLab, each project and its hook, Docker, registries.
//!
//! Each check is one line: what was checked, what was found, and when it failed,
//! the fix. The checks only read; nothing is changed anywhere.

#[cfg(test)]
mod tests;

use crate::config::{Config, Policy, ProjectConfig, Role, ServiceConfig};
use crate::gitlab::{GitLab, GitlabError, Hook, User};
use crate::registry::{ImageRegistry, RegistryClient, RegistryError, Repository};
use crate::swarm::DockerSwarm;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but something will bite later.
    Warn,
    Fail,
}

impl Verdict {
    /// The word `hoist check` starts the line with.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One checked fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`gitlab`, `project acme/shop`, `docker`, …).
    pub name: String,
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// How to fix it (set when the verdict is not ok).
    pub hint: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            verdict: Verdict::Ok,
            detail: detail.into(),
            hint: None,
        }
    }

    fn bad(
        verdict: Verdict,
        name: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            verdict,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check::bad(Verdict::Fail, name, detail, hint)
    }
}

/// Whether any check failed (`hoist check` then exits 1).
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.verdict == Verdict::Fail)
}

/// The lines `hoist check` prints: `ok   name: detail`, and `     fix: …` under a problem.
pub fn render_lines(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4} {}: {}\n",
            c.verdict.label(),
            c.name,
            c.detail
        ));
        if let Some(hint) = &c.hint {
            out.push_str(&format!("     fix: {hint}\n"));
        }
    }
    out
}

/// The events hoist needs that `hook` does not send.
pub fn missing_events(hook: &Hook) -> Vec<&'static str> {
    crate::gitlab::HOOK_EVENTS
        .iter()
        .zip(hook.events.flags())
        .filter(|(_, on)| !on)
        .map(|((name, _), _)| *name)
        .collect()
}

/// What runs the checks: the same clients the server uses.
pub struct Doctor<'a> {
    pub config: &'a Config,
    pub gitlab: &'a dyn GitLab,
    pub registry: &'a RegistryClient,
    pub swarm: &'a DockerSwarm,
}

impl Doctor<'_> {
    /// Every check, for every configured project (`hoist check`).
    pub async fn all(&self) -> Vec<Check> {
        let (mut checks, bot) = self.gitlab_checks().await;
        for project in &self.config.projects {
            checks.extend(self.project_checks(project, bot.as_ref()).await);
        }
        checks.push(self.docker_check().await);
        let services: Vec<&ServiceConfig> = self
            .config
            .projects
            .iter()
            .flat_map(|p| &p.environments)
            .flat_map(|e| &e.services)
            .collect();
        checks.extend(self.registry_checks(&services).await);
        checks
    }

    /// The checks that concern one project (`/deploy doctor` on its merge requests).
    pub async fn project(&self, project: &ProjectConfig) -> Vec<Check> {
        let (mut checks, bot) = self.gitlab_checks().await;
        checks.extend(self.project_checks(project, bot.as_ref()).await);
        checks.push(self.docker_check().await);
        let services: Vec<&ServiceConfig> = project
            .environments
            .iter()
            .flat_map(|e| &e.services)
            .collect();
        checks.extend(self.registry_checks(&services).await);
        checks
    }

    /// GitLab reachable, the token valid and with the `api` scope; returns the bot user.
    async fn gitlab_checks(&self) -> (Vec<Check>, Option<User>) {
        let url = &self.config.gitlab.url;
        let user = match self.gitlab.current_user().await {
            Ok(u) => u,
            Err(GitlabError::Unauthorized) => {
                return (
                    vec![Check::fail(
                        "gitlab",
                        format!("{url} refused the token (401)"),
                        "create a personal, project or group access token with the api scope and set gitlab.token",
                    )],
                    None,
                );
            }
            Err(e) => {
                return (
                    vec![Check::fail(
                        "gitlab",
                        format!("cannot reach {url}: {e}"),
                        "check gitlab.url and that this host reaches GitLab (proxy, firewall, TLS)",
                    )],
                    None,
                );
            }
        };
        let mut checks = vec![Check::ok(
            "gitlab",
            format!("{url} answers; the token belongs to @{}", user.username),
        )];
        checks.push(match self.gitlab.token_scopes().await {
            Ok(scopes) if scopes.iter().any(|s| s == "api") => {
                Check::ok("gitlab token", format!("scopes: {}", scopes.join(", ")))
            }
            Ok(scopes) => Check::fail(
                "gitlab token",
                format!("scopes: {} (no api)", scopes.join(", ")),
                "hoist plays jobs and writes comments: give the token the api scope",
            ),
            Err(e) => Check::bad(
                Verdict::Warn,
                "gitlab token",
                format!("cannot read the token's scopes: {e}"),
                "make sure the token has the api scope (GitLab before 15.5 cannot tell)",
            ),
        });
        (checks, Some(user))
    }

    /// The project is visible, the bot's role suffices, protected tags let it play, the hook is right.
    async fn project_checks(&self, project: &ProjectConfig, bot: Option<&User>) -> Vec<Check> {
        let path = project.path.as_str();
        let name = format!("project {path}");
        if let Err(e) = self.gitlab.project(path).await {
            let hint = match e {
                GitlabError::NotFound(_) => format!(
                    "the token's user cannot see {path}: check the path, or add the bot to the project"
                ),
                _ => "check that GitLab answers (see the gitlab line)".to_string(),
            };
            return vec![Check::fail(name, e.to_string(), hint)];
        }
        let mut checks = Vec::new();
        let mut level = None;
        match bot {
            None => checks.push(Check::bad(
                Verdict::Warn,
                &name,
                "visible; the bot's role is unknown (GitLab did not say who the token is)",
                "fix the gitlab line first",
            )),
            Some(bot) => match self.gitlab.member_role(path, bot.id).await {
                Ok(Some(l)) if l >= Role::Developer.access_level() => {
                    level = Some(l);
                    checks.push(Check::ok(
                        &name,
                        format!("@{} is {}", bot.username, level_name(l)),
                    ));
                }
                Ok(found) => checks.push(Check::fail(
                    &name,
                    format!(
                        "@{} is {}",
                        bot.username,
                        found.map(level_name).unwrap_or("not a member")
                    ),
                    format!(
                        "hoist plays jobs: make @{} at least Developer (Maintainer for protected tags)",
                        bot.username
                    ),
                )),
                Err(e) => checks.push(Check::fail(
                    &name,
                    format!("cannot read the bot's membership: {e}"),
                    "check the token's scopes",
                )),
            },
        }
        let tag_envs = project
            .environments
            .iter()
            .any(|e| e.policy == Policy::Tag && e.require_protected_tag);
        if let (true, Some(bot), Some(level)) = (tag_envs, bot, level) {
            checks.push(self.protected_tags_check(path, bot, level).await);
        }
        checks.push(self.hook_check(path).await);
        checks
    }

    /// Whether the bot may create (and so play the jobs of) the project's protected tags.
    async fn protected_tags_check(&self, path: &str, bot: &User, level: u32) -> Check {
        let name = format!("protected tags {path}");
        let rules = match self.gitlab.protected_tags(path).await {
            Ok(r) => r,
            Err(e) => {
                return Check::bad(
                    Verdict::Warn,
                    name,
                    format!("cannot read the protected tags: {e}"),
                    "the bot needs Maintainer to read them",
                );
            }
        };
        if rules.is_empty() {
            return Check::bad(
                Verdict::Warn,
                name,
                "no tag is protected, and require_protected_tag refuses unprotected release tags",
                "protect the release tags (Settings → Repository → Protected tags), or set require_protected_tag = false",
            );
        }
        let blocked: Vec<&str> = rules
            .iter()
            .filter(|r| !r.allows(bot.id, level))
            .map(|r| r.name.as_str())
            .collect();
        if blocked.is_empty() {
            let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
            Check::ok(
                name,
                format!(
                    "@{} may create {} and so play their jobs",
                    bot.username,
                    names.join(", ")
                ),
            )
        } else {
            Check::fail(
                name,
                format!(
                    "@{} may not create {}: GitLab refuses to let it play their pipelines' jobs",
                    bot.username,
                    blocked.join(", ")
                ),
                format!(
                    "allow @{} (or Maintainers, with the bot a Maintainer) to create these tags under Settings → Repository → Protected tags",
                    bot.username
                ),
            )
        }
    }

    /// The project hook pointing at hoist: present, with the four events, enabled.
    async fn hook_check(&self, path: &str) -> Check {
        let name = format!("hook {path}");
        let url = crate::hook::hook_url(&self.config.server.public_url);
        let install = format!("run hoist hook install --project {path}");
        let hooks = match self.gitlab.hooks(path).await {
            Ok(h) => h,
            Err(e) => {
                return Check::fail(
                    name,
                    format!("cannot list the hooks: {e}"),
                    "reading hooks needs Maintainer: give the bot Maintainer, or check the hook by hand",
                );
            }
        };
        let Some(hook) = hooks.iter().find(|h| crate::hook::same_url(&h.url, &url)) else {
            return Check::fail(name, format!("no hook calls {url}"), install);
        };
        let missing = missing_events(hook);
        if !missing.is_empty() {
            return Check::fail(
                name,
                format!(
                    "hook {} does not send {} events",
                    hook.id,
                    missing.join(", ")
                ),
                install,
            );
        }
        match crate::hook::reenable_hint(hook, path) {
            Some(hint) => Check::fail(
                name,
                format!(
                    "hook {} is {}{}",
                    hook.id,
                    hook.alert_status.as_deref().unwrap_or("disabled"),
                    hook.disabled_until
                        .as_deref()
                        .map(|t| format!(" until {t}"))
                        .unwrap_or_default()
                ),
                hint.replace('\n', " "),
            ),
            None => Check::ok(
                name,
                format!(
                    "hook {} sends pipeline, tag push, note and job events",
                    hook.id
                ),
            ),
        }
    }

    /// The engine answers and can manage services.
    async fn docker_check(&self) -> Check {
        let host = self.swarm.host().to_string();
        match self.swarm.manager_status().await {
            Ok((state, true)) => Check::ok("docker", format!("{host}: swarm {state}, a manager")),
            Ok((state, false)) if state == "active" => Check::fail(
                "docker",
                format!("{host}: a swarm worker, which cannot update services"),
                "point docker.host at a manager node",
            ),
            Ok((state, _)) => Check::fail(
                "docker",
                format!("{host}: not in swarm mode (state {state:?})"),
                "run docker swarm init, or point docker.host at a swarm manager",
            ),
            Err(e) => Check::fail(
                "docker",
                e.to_string(),
                "check docker.host and that hoist may use the socket (docker group)",
            ),
        }
    }

    /// Per registry: reachable with its credentials; per image repository: it exists.
    async fn registry_checks(&self, services: &[&ServiceConfig]) -> Vec<Check> {
        let mut registries: Vec<(String, Check)> = Vec::new();
        let mut repos: Vec<Check> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for svc in services {
            if seen.contains(&svc.image.as_str()) {
                continue;
            }
            seen.push(&svc.image);
            let host = Repository::parse(&svc.image)
                .map(|r| r.registry)
                .unwrap_or_default();
            let name = format!("image {}", svc.image);
            let result = self.registry.check_repository(&svc.image).await;
            let reached = match &result {
                Ok(()) | Err(RegistryError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.clone()),
            };
            if !registries.iter().any(|(h, _)| *h == host) {
                let label = format!("registry {host}");
                let check = match &reached {
                    Ok(()) if self.registry.credentials_for(&svc.image).is_some() => {
                        Check::ok(&label, "reachable; the credentials are accepted")
                    }
                    Ok(()) => Check::ok(&label, "reachable; anonymous pulls allowed"),
                    Err(RegistryError::AuthRefused { detail, .. }) => Check::fail(
                        &label,
                        format!("refused: {detail}"),
                        format!("set username and password for {host} in [[registries]]"),
                    ),
                    Err(e) => Check::fail(
                        &label,
                        e.to_string(),
                        "check the host name and that hoist reaches it (insecure = true for plain HTTP)",
                    ),
                };
                registries.push((host, check));
            }
            match result {
                Ok(()) => repos.push(Check::ok(name, "the repository exists")),
                Err(RegistryError::NotFound { .. }) => repos.push(Check::fail(
                    name,
                    "no such repository in the registry",
                    "check the image name, or push a first image (the CI template's build jobs do)",
                )),
                // The registry line already says why.
                Err(_) => {}
            }
        }
        registries
            .into_iter()
            .map(|(_, c)| c)
            .chain(repos)
            .collect()
    }
}

/// GitLab's name for an access level (`developer`).
fn level_name(level: u32) -> &'static str {
    Role::from_access_level(level)
        .map(crate::policy::role_name)
        .unwrap_or("below guest")
}
