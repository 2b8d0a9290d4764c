//! `hoist hook install` and `hoist hook status`: the project webhook hoist needs, set up and inspected through the GitLab API.
//!
//! The hook hoist wants points at `server.public_url` + [`HOOK_PATH`], with the four events
//! it reads (pipeline, tag push, note, job) and the project's tokens. Deciding what to do is
//! pure ([`plan`], [`describe`]) and table-tested; [`install`] and [`status`] add the GitLab
//! calls behind `&dyn GitLab`; [`install_command`] and [`status_command`] add the config file
//! and the HTTP client. Nothing here prints a token: only whether one is set.

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use url::{Host, Url};

use crate::cli::CliError;
use crate::config::{Config, ProjectConfig};
use crate::gitlab::{GitLab, GitlabError, HOOK_EVENTS, Hook, HookId, HookSpec};

/// Where hoist receives webhooks, below `server.public_url`.
pub const HOOK_PATH: &str = "/hooks/gitlab";

/// Width of the label column in what the commands print.
const LABEL: usize = 18;

/// Why a hook command failed; [`HookError::exit_code`] follows SPEC §1.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The project is not in the config file (exit 2).
    #[error("{file}: project {project} is not configured (configured: {known})")]
    UnknownProject {
        file: String,
        project: String,
        known: String,
    },
    /// `server.public_url` cannot be a webhook target (exit 2).
    #[error("{file}: server.public_url: {reason}")]
    PublicUrl { file: String, reason: String },
    /// GitLab refused or could not be reached (exit 1).
    #[error("cannot {doing} of {project}: {source}{hint}")]
    Gitlab {
        doing: &'static str,
        project: String,
        source: GitlabError,
        hint: &'static str,
    },
    /// No hook of the project points at hoist (exit 1).
    #[error(
        "{project} has no webhook pointing at hoist (expected {url}){others}; install it with: hoist hook install --project {project}"
    )]
    NoHook {
        project: String,
        url: String,
        others: String,
    },
}

impl HookError {
    pub fn exit_code(&self) -> u8 {
        match self {
            HookError::UnknownProject { .. } | HookError::PublicUrl { .. } => 2,
            HookError::Gitlab { .. } | HookError::NoHook { .. } => 1,
        }
    }
}

impl From<HookError> for CliError {
    fn from(e: HookError) -> CliError {
        match e.exit_code() {
            2 => CliError::Config(e.to_string()),
            _ => CliError::Failed(e.to_string()),
        }
    }
}

fn gitlab_error(doing: &'static str, project: &str, source: GitlabError) -> HookError {
    let hint = match source {
        GitlabError::Forbidden(_) => {
            " (managing webhooks needs the Maintainer role in the project for gitlab.token's user)"
        }
        GitlabError::NotFound(_) => {
            " (check the project path, and that gitlab.token's user is a member of the project)"
        }
        GitlabError::Unauthorized => " (check gitlab.token: expired, revoked, or not `api` scope)",
        _ => "",
    };
    HookError::Gitlab {
        doing,
        project: project.to_string(),
        source,
        hint,
    }
}

/// The webhook URL for `public_url`.
pub fn hook_url(public_url: &str) -> String {
    format!("{}{HOOK_PATH}", public_url.trim_end_matches('/'))
}

/// Whether GitLab should verify the hook's certificate.
///
/// Always for https: hoist never switches verification off for the channel that carries its
/// token (a private CA belongs in GitLab's trusted certificates). A plain http URL has no
/// certificate, so the flag would be meaningless: it is off, and the hook says what happens.
pub fn ssl_verification(url: &str) -> bool {
    !url.to_ascii_lowercase().starts_with("http://")
}

/// What `hook install` sends for `project`: the five events, its token and signing token.
pub fn spec_for(project: &ProjectConfig, url: &str) -> HookSpec {
    HookSpec {
        token: project.webhook_token.clone(),
        signing_token: project.signing_token.as_ref().map(|s| s.secret.clone()),
        enable_ssl_verification: ssl_verification(url),
        ..HookSpec::for_hoist(url)
    }
}

/// A URL compared the way GitLab would call it: scheme and host lowercased, default port
/// dropped, no trailing slash.
fn normalized(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => u.as_str().trim_end_matches('/').to_string(),
        Err(_) => url.trim_end_matches('/').to_string(),
    }
}

/// Whether two hook URLs name the same receiver (see [`normalized`]).
pub fn same_url(a: &str, b: &str) -> bool {
    normalized(a) == normalized(b)
}

/// Whether a hook's URL is a hoist receiver (of this or another `public_url`).
fn looks_like_hoist(url: &str) -> bool {
    let path = Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| url.to_string());
    path.trim_end_matches('/').ends_with(HOOK_PATH)
}

fn is_loopback(url: &str) -> bool {
    match Url::parse(url).ok().as_ref().and_then(Url::host) {
        Some(Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Refuses URLs GitLab can never reach (the default `public_url` is `http://<listen>`,
/// often `0.0.0.0`).
fn check_reachable(url: &str) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let unspecified = match parsed.host() {
        Some(Host::Ipv4(ip)) => ip.is_unspecified(),
        Some(Host::Ipv6(ip)) => ip.is_unspecified(),
        Some(Host::Domain(_)) => false,
        None => true,
    };
    if unspecified {
        return Err(format!(
            "GitLab cannot reach {url} (the default is server.listen's address); set server.public_url to the URL GitLab reaches hoist at"
        ));
    }
    Ok(())
}

/// One setting `hook install` changes on an existing hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub field: &'static str,
    pub from: String,
    pub to: String,
}

/// What `hook install` does to the project's hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create,
    /// Edit hook `id`; `changes` is empty when only the tokens are sent again.
    Update {
        id: HookId,
        changes: Vec<Change>,
    },
}

/// `hook install`'s decision, printable before (`--dry-run`) or after it is carried out.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub project: String,
    pub spec: HookSpec,
    pub action: Action,
    /// Things the operator should know (stale duplicates, plain http, …).
    pub notes: Vec<String>,
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The settings of `hook` that differ from `spec` (tokens are not readable: always sent).
fn changes(hook: &Hook, spec: &HookSpec) -> Vec<Change> {
    let mut out = Vec::new();
    if hook.url != spec.url {
        out.push(Change {
            field: "url",
            from: hook.url.clone(),
            to: spec.url.clone(),
        });
    }
    let events = HOOK_EVENTS
        .iter()
        .zip(hook.events.flags().into_iter().zip(spec.events.flags()))
        .map(|((_, label), (have, want))| (*label, have, want));
    let ssl = (
        "SSL verification",
        hook.enable_ssl_verification,
        spec.enable_ssl_verification,
    );
    for (field, have, want) in events.chain([ssl]) {
        if have != want {
            out.push(Change {
                field,
                from: on_off(have).into(),
                to: on_off(want).into(),
            });
        }
    }
    out
}

fn ids(hooks: &[&Hook]) -> String {
    hooks
        .iter()
        .map(|h| h.id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decides what `hook install` does, given the project's hooks as GitLab lists them.
///
/// A hook at exactly the URL is edited (never a second one). Else, when exactly one hook
/// points at a hoist receiver of another URL, that is hoist's hook under a previous
/// `public_url`: it is moved. Else a hook is created.
pub fn plan(project: &ProjectConfig, public_url: &str, hooks: &[Hook]) -> Plan {
    let url = hook_url(public_url);
    let spec = spec_for(project, &url);
    let mut notes = Vec::new();
    let mut same: Vec<&Hook> = hooks
        .iter()
        .filter(|h| normalized(&h.url) == normalized(&url))
        .collect();
    same.sort_by_key(|h| h.id);
    let action = if let Some((first, rest)) = same.split_first() {
        if !rest.is_empty() {
            notes.push(format!(
                "hooks {} also point at {url}: GitLab delivers every event once per hook; delete them in Settings → Webhooks",
                ids(rest)
            ));
        }
        Action::Update {
            id: first.id,
            changes: changes(first, &spec),
        }
    } else {
        let hoist: Vec<&Hook> = hooks.iter().filter(|h| looks_like_hoist(&h.url)).collect();
        match hoist.as_slice() {
            [old] => {
                notes.push(format!(
                    "hook {} is the only one pointing at a hoist receiver: taken as hoist's own under a previous server.public_url",
                    old.id
                ));
                Action::Update {
                    id: old.id,
                    changes: changes(old, &spec),
                }
            }
            [] => Action::Create,
            several => {
                notes.push(format!(
                    "hooks {} point at other hoist receivers; hoist cannot tell which was its own and leaves them alone: delete the stale ones in Settings → Webhooks",
                    ids(several)
                ));
                Action::Create
            }
        }
    };
    if !spec.enable_ssl_verification && !is_loopback(&url) {
        notes.push(format!(
            "{url} is plain http: the token crosses the network unencrypted; give server.public_url an https URL"
        ));
    }
    Plan {
        project: project.path.clone(),
        spec,
        action,
        notes,
    }
}

/// Appends `label  value` with `value`'s further lines aligned under it.
fn row(out: &mut String, label: &str, value: &str) {
    for (i, line) in value.lines().enumerate() {
        let label = if i == 0 { label } else { "" };
        let _ = writeln!(out, "  {label:<LABEL$} {line}");
    }
}

fn events(spec: &HookSpec) -> String {
    HOOK_EVENTS
        .iter()
        .zip(spec.events.flags())
        .filter(|(_, on)| *on)
        .map(|((name, _), _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn ssl_text(spec: &HookSpec) -> &'static str {
    if spec.enable_ssl_verification {
        "on"
    } else {
        "off (plain http: no certificate to verify)"
    }
}

impl Plan {
    /// The plan (or, with `done`, what GitLab answered) as the command prints it.
    fn render(&self, done: Option<&Hook>) -> String {
        let mut out = String::new();
        let update = matches!(self.action, Action::Update { .. });
        let _ = match (&self.action, done) {
            (Action::Create, None) => {
                writeln!(out, "dry run: would create a webhook for {}", self.project)
            }
            (Action::Create, Some(h)) => {
                writeln!(out, "created hook {} for {}", h.id, self.project)
            }
            (Action::Update { id, .. }, None) => {
                writeln!(out, "dry run: would update hook {id} of {}", self.project)
            }
            (Action::Update { id, .. }, Some(_)) => {
                writeln!(out, "updated hook {id} of {}", self.project)
            }
        };
        match &self.action {
            Action::Create => {
                row(&mut out, "url", &self.spec.url);
                row(&mut out, "events", &events(&self.spec));
                row(&mut out, "SSL verification", ssl_text(&self.spec));
            }
            Action::Update { changes, .. } => {
                if !changes.iter().any(|c| c.field == "url") {
                    row(&mut out, "url", &self.spec.url);
                }
                for c in changes {
                    row(&mut out, c.field, &format!("{} → {}", c.from, c.to));
                }
                if changes.iter().all(|c| c.field == "url") {
                    row(
                        &mut out,
                        "events",
                        &format!("{} (already on)", events(&self.spec)),
                    );
                }
            }
        }
        let again = if update { " (sent again)" } else { "" };
        let token = match (&self.spec.token, update) {
            (Some(_), _) => format!("set{again}"),
            (None, false) => "none (the project has only a signing_token)".into(),
            (None, true) => "none (cleared: the project has only a signing_token)".into(),
        };
        row(&mut out, "token", &token);
        let signing = match (&self.spec.signing_token, update) {
            (Some(_), _) => format!("set{again}"),
            (None, false) => "not configured".into(),
            (None, true) => "not configured (left as GitLab has it)".into(),
        };
        row(&mut out, "signing token", &signing);
        if let Some(hook) = done {
            row(&mut out, "alert_status", alert_text(hook));
            if let Some(hint) = reenable_hint(hook, &self.project) {
                row(&mut out, "to re-enable", &hint);
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        if done.is_none() {
            let _ = writeln!(out, "dry run: nothing was changed");
        }
        out
    }
}

/// What `hook install` did: the plan and the hook as GitLab answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    pub plan: Plan,
    pub hook: Hook,
}

impl fmt::Display for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.plan.render(Some(&self.hook)))
    }
}

/// `hook install`'s outcome: the plan alone after `--dry-run`.
#[derive(Debug, Clone, PartialEq)]
pub enum InstallReport {
    DryRun(Plan),
    Done(Installed),
}

impl fmt::Display for InstallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallReport::DryRun(plan) => f.write_str(&plan.render(None)),
            InstallReport::Done(done) => done.fmt(f),
        }
    }
}

fn find_project<'a>(config: &'a Config, project: &str) -> Result<&'a ProjectConfig, HookError> {
    config
        .projects
        .iter()
        .find(|p| p.path == project)
        .ok_or_else(|| HookError::UnknownProject {
            file: config.file.display().to_string(),
            project: project.to_string(),
            known: if config.projects.is_empty() {
                "none".into()
            } else {
                config
                    .projects
                    .iter()
                    .map(|p| p.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// `hoist hook install`: creates or edits the project's hook; with `dry_run`, only lists the hooks.
pub async fn install(
    gitlab: &dyn GitLab,
    config: &Config,
    project: &str,
    dry_run: bool,
) -> Result<InstallReport, HookError> {
    let p = find_project(config, project)?;
    check_reachable(&hook_url(&config.server.public_url)).map_err(|reason| {
        HookError::PublicUrl {
            file: config.file.display().to_string(),
            reason,
        }
    })?;
    let hooks = gitlab
        .hooks(&p.path)
        .await
        .map_err(|e| gitlab_error("list the webhooks", &p.path, e))?;
    let plan = plan(p, &config.server.public_url, &hooks);
    if dry_run {
        return Ok(InstallReport::DryRun(plan));
    }
    let hook = match &plan.action {
        Action::Create => gitlab
            .create_hook(&p.path, &plan.spec)
            .await
            .map_err(|e| gitlab_error("create the webhook", &p.path, e))?,
        Action::Update { id, .. } => gitlab
            .edit_hook(&p.path, *id, &plan.spec)
            .await
            .map_err(|e| gitlab_error("update the webhook", &p.path, e))?,
    };
    Ok(InstallReport::Done(Installed { plan, hook }))
}

fn alert_text(hook: &Hook) -> &str {
    hook.alert_status
        .as_deref()
        .unwrap_or("not reported (GitLab before 15.x)")
}

/// How to get a disabled hook delivering again, as GitLab documents it: a temporarily disabled
/// hook is tried again after `disabled_until`; any disabled hook is re-enabled by a test
/// request that hoist answers 2xx. Saving or editing a hook does not re-enable it.
pub fn reenable_hint(hook: &Hook, project: &str) -> Option<String> {
    let test = format!(
        "send a test request: Settings → Webhooks → Test → Push events\n(API: POST /projects/:id/hooks/{}/test/push_events);\nGitLab re-enables the hook when hoist answers it 2xx.",
        hook.id
    );
    let token = format!(
        "If the failures were 401s, first run hoist hook install --project {project}\nso the test carries the right token (editing alone does not re-enable)."
    );
    match hook.alert_status.as_deref() {
        Some("temporarily_disabled") => Some(format!(
            "GitLab delivers to it again by itself after {}.\nTo re-enable it at once, {test}\n{token}",
            hook.disabled_until
                .as_deref()
                .unwrap_or("the disabled period")
        )),
        Some("disabled") => Some(format!(
            "GitLab disabled it for good after 40 failures in a row.\nTo re-enable it, {test}\n{token}"
        )),
        _ => None,
    }
}

/// `hook status`'s report: the hooks of the project that point at a hoist receiver.
pub fn describe(project: &str, public_url: &str, hooks: &[Hook]) -> Result<String, HookError> {
    let url = hook_url(public_url);
    let mut ours: Vec<&Hook> = hooks
        .iter()
        .filter(|h| normalized(&h.url) == normalized(&url) || looks_like_hoist(&h.url))
        .collect();
    ours.sort_by_key(|h| (normalized(&h.url) != normalized(&url), h.id));
    if ours.is_empty() {
        return Err(HookError::NoHook {
            project: project.to_string(),
            url,
            others: match hooks.len() {
                0 => String::new(),
                1 => "; it has 1 other webhook".into(),
                n => format!("; it has {n} other webhooks"),
            },
        });
    }
    let mut out = String::new();
    for hook in ours {
        let _ = writeln!(out, "hook {} of {project}", hook.id);
        if normalized(&hook.url) == normalized(&url) {
            row(&mut out, "url", &hook.url);
        } else {
            row(
                &mut out,
                "url",
                &format!(
                    "{}\nNOT {url} (server.public_url): run hoist hook install --project {project}",
                    hook.url
                ),
            );
        }
        for ((_, label), on) in HOOK_EVENTS.iter().zip(hook.events.flags()) {
            let value = if on {
                "on".to_string()
            } else {
                format!("off  MISSING: hoist needs it; run hoist hook install --project {project}")
            };
            row(&mut out, label, &value);
        }
        row(
            &mut out,
            "SSL verification",
            on_off(hook.enable_ssl_verification),
        );
        row(&mut out, "alert_status", alert_text(hook));
        row(
            &mut out,
            "disabled_until",
            hook.disabled_until.as_deref().unwrap_or("-"),
        );
        if let Some(hint) = reenable_hint(hook, project) {
            row(&mut out, "to re-enable", &hint);
        }
    }
    Ok(out)
}

/// `hoist hook status`: lists the project's hooks and describes those pointing at hoist.
pub async fn status(
    gitlab: &dyn GitLab,
    config: &Config,
    project: &str,
) -> Result<String, HookError> {
    let p = find_project(config, project)?;
    let hooks = gitlab
        .hooks(&p.path)
        .await
        .map_err(|e| gitlab_error("list the webhooks", &p.path, e))?;
    describe(&p.path, &config.server.public_url, &hooks)
}

/// `hoist hook install --project P [--config FILE] [--dry-run]`.
pub async fn install_command(
    flag: Option<PathBuf>,
    project: String,
    dry_run: bool,
) -> Result<(), CliError> {
    let config = crate::cli::load(flag)?;
    let gitlab = crate::cli::terminal_gitlab(&config)?;
    let report = install(&gitlab, &config, &project, dry_run).await?;
    print!("{report}");
    Ok(())
}

/// `hoist hook status --project P [--config FILE]`.
pub async fn status_command(flag: Option<PathBuf>, project: String) -> Result<(), CliError> {
    let config = crate::cli::load(flag)?;
    let gitlab = crate::cli::terminal_gitlab(&config)?;
    let report = status(&gitlab, &config, &project).await?;
    print!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, SigningKey};

    const TOKEN: &str = "tok-unit-secret";
    const SIGNING: &str = "whsec_dW5pdC10ZXN0LXNpZ25pbmcta2V5LTMyLWJ5dGVzISE=";

    fn project(token: bool, signing: bool) -> ProjectConfig {
        ProjectConfig {
            path: "acme/shop".into(),
            webhook_token: token.then(|| Secret::new(TOKEN)),
            signing_token: signing.then(|| SigningKey {
                secret: Secret::new(SIGNING),
                key: b"unit-test-signing-key-32-bytes!!".to_vec(),
            }),
            manifest_job: "manifest".into(),
            deploy_job: "deploy".into(),
            environments: Vec::new(),
        }
    }

    fn hook(id: u64, url: &str) -> Hook {
        Hook {
            id: HookId(id),
            url: url.into(),
            events: crate::gitlab::HookEvents::ALL,
            enable_ssl_verification: true,
            alert_status: Some("executable".into()),
            disabled_until: None,
        }
    }

    const PUBLIC: &str = "https://hoist.example.com";
    const URL: &str = "https://hoist.example.com/hooks/gitlab";

    #[test]
    fn which_hook_install_takes() {
        let other = hook(1, "https://ci.example.com/hook");
        let exact = hook(5, URL);
        let old = hook(7, "https://old.example.com/hooks/gitlab");
        let older = hook(8, "http://10.0.0.1:8080/hooks/gitlab/");
        let same_but_spelled = hook(9, "HTTPS://Hoist.Example.com:443/hooks/gitlab/");
        let update = |id| Some(HookId(id));
        let cases: &[(&str, Vec<Hook>, Option<HookId>)] = &[
            ("no hooks: create", vec![], None),
            ("unrelated hooks only: create", vec![other.clone()], None),
            (
                "same URL: edit it",
                vec![other.clone(), exact.clone()],
                update(5),
            ),
            (
                "same URL, other spelling",
                vec![same_but_spelled.clone()],
                update(9),
            ),
            (
                "same URL wins over an old one",
                vec![old.clone(), exact.clone()],
                update(5),
            ),
            (
                "one old hoist URL: move it",
                vec![other.clone(), old.clone()],
                update(7),
            ),
            (
                "two old hoist URLs: create",
                vec![old.clone(), older.clone()],
                None,
            ),
            (
                "duplicates: the lowest id",
                vec![same_but_spelled, exact],
                update(5),
            ),
        ];
        for (name, hooks, want) in cases {
            let plan = plan(&project(true, false), PUBLIC, hooks);
            let got = match plan.action {
                Action::Create => None,
                Action::Update { id, .. } => Some(id),
            };
            assert_eq!(got, *want, "{name}");
            assert_eq!(plan.spec.url, URL, "{name}");
        }
    }

    #[test]
    fn notes_name_duplicates_and_ambiguous_old_hooks() {
        let p = plan(&project(true, false), PUBLIC, &[hook(3, URL), hook(2, URL)]);
        assert_eq!(
            p.action,
            Action::Update {
                id: HookId(2),
                changes: vec![]
            }
        );
        assert!(
            p.notes[0].starts_with("hooks 3 also point at"),
            "{:?}",
            p.notes
        );
        let p = plan(
            &project(true, false),
            PUBLIC,
            &[
                hook(3, "https://a.example.com/hooks/gitlab"),
                hook(4, "https://b.example.com/hooks/gitlab"),
            ],
        );
        assert!(p.notes[0].starts_with("hooks 3, 4 point at other hoist receivers"));
    }

    #[test]
    fn changes_list_only_what_differs() {
        let mut h = hook(7, "https://old.example.com/hooks/gitlab");
        h.events.job = false;
        h.enable_ssl_verification = false;
        let p = plan(&project(true, false), PUBLIC, &[h]);
        let Action::Update { changes, .. } = p.action else {
            panic!("expected an update");
        };
        let fields: Vec<_> = changes.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["url", "job events", "SSL verification"]);
        assert_eq!(changes[1].from, "off");
        assert_eq!(changes[1].to, "on");
    }

    #[test]
    fn ssl_verification_is_on_for_https_only() {
        assert!(ssl_verification("https://hoist.example.com/hooks/gitlab"));
        assert!(!ssl_verification("http://127.0.0.1:8080/hooks/gitlab"));
        assert!(!ssl_verification("HTTP://hoist.lan/hooks/gitlab"));
        let p = plan(&project(true, false), "http://127.0.0.1:8080/", &[]);
        assert!(!p.spec.enable_ssl_verification);
        assert!(p.notes.is_empty(), "loopback http is fine: {:?}", p.notes);
        let p = plan(&project(true, false), "http://hoist.lan", &[]);
        assert!(p.notes[0].contains("plain http"), "{:?}", p.notes);
    }

    #[test]
    fn unreachable_public_urls_are_refused() {
        assert!(check_reachable("http://0.0.0.0:8080/hooks/gitlab").is_err());
        assert!(check_reachable("http://[::]:8080/hooks/gitlab").is_err());
        assert!(check_reachable("http://127.0.0.1:8080/hooks/gitlab").is_ok());
        assert!(check_reachable("https://hoist.example.com/x/hooks/gitlab").is_ok());
    }

    #[test]
    fn the_spec_carries_both_tokens_and_the_text_neither() {
        let p = plan(&project(true, true), PUBLIC, &[hook(5, URL)]);
        assert_eq!(p.spec.token.as_ref().map(Secret::expose), Some(TOKEN));
        assert_eq!(
            p.spec.signing_token.as_ref().map(Secret::expose),
            Some(SIGNING)
        );
        assert!(p.spec.events.pipeline && p.spec.events.tag_push);
        assert!(p.spec.events.note && p.spec.events.job);
        let text = p.render(None);
        assert!(
            text.contains("dry run: would update hook 5 of acme/shop"),
            "{text}"
        );
        assert!(
            text.contains("token              set (sent again)"),
            "{text}"
        );
        assert!(
            text.contains("signing token      set (sent again)"),
            "{text}"
        );
        assert!(text.ends_with("dry run: nothing was changed\n"), "{text}");
        let done = p.render(Some(&hook(5, URL)));
        for t in [&text, &done] {
            assert!(!t.contains(TOKEN) && !t.contains(SIGNING), "{t}");
            assert!(!t.contains(&SIGNING["whsec_".len()..]), "{t}");
        }
        let p = plan(&project(false, true), PUBLIC, &[]);
        assert!(p.spec.token.is_none());
        assert!(p.render(None).contains("token              none"));
    }

    #[test]
    fn status_describes_events_and_alert_status() {
        let mut h = hook(5, URL);
        h.events.job = false;
        let text = describe("acme/shop", PUBLIC, &[h]).expect("a hook");
        assert!(text.starts_with("hook 5 of acme/shop\n"), "{text}");
        assert!(text.contains("pipeline events    on\n"), "{text}");
        assert!(text.contains("job events         off  MISSING"), "{text}");
        assert!(text.contains("alert_status       executable\n"), "{text}");
        assert!(!text.contains("to re-enable"), "{text}");
    }

    #[test]
    fn status_says_how_to_re_enable() {
        let mut temp = hook(5, URL);
        temp.alert_status = Some("temporarily_disabled".into());
        temp.disabled_until = Some("2026-05-01T10:00:00Z".into());
        let text = describe("acme/shop", PUBLIC, &[temp]).expect("a hook");
        assert!(text.contains("temporarily_disabled"), "{text}");
        assert!(
            text.contains("disabled_until     2026-05-01T10:00:00Z"),
            "{text}"
        );
        assert!(
            text.contains("again by itself after 2026-05-01T10:00:00Z"),
            "{text}"
        );
        assert!(text.contains("hooks/5/test/push_events"), "{text}");

        let mut off = hook(6, URL);
        off.alert_status = Some("disabled".into());
        let text = describe("acme/shop", PUBLIC, &[off]).expect("a hook");
        assert!(text.contains("alert_status       disabled\n"), "{text}");
        assert!(text.contains("for good after 40 failures"), "{text}");
        assert!(text.contains("editing alone does not re-enable"), "{text}");
    }

    #[test]
    fn status_flags_a_hook_at_another_public_url_and_reports_none() {
        let text = describe(
            "acme/shop",
            PUBLIC,
            &[hook(7, "https://old.example.com/hooks/gitlab")],
        )
        .expect("a hook");
        assert!(
            text.contains("NOT https://hoist.example.com/hooks/gitlab"),
            "{text}"
        );
        let err = describe("acme/shop", PUBLIC, &[hook(1, "https://ci.example.com/x")])
            .expect_err("no hoist hook");
        assert_eq!(err.exit_code(), 1);
        let msg = err.to_string();
        assert!(msg.contains("it has 1 other webhook"), "{msg}");
        assert!(
            msg.contains("hoist hook install --project acme/shop"),
            "{msg}"
        );
    }
}
