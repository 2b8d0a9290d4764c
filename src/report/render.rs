//! The renderers: one function per text hoist posts.

use std::fmt::Write as _;

use super::types::{CommitState, EnvStatus, RunReport, RunState, RunSummary, ServiceReport};
use super::{STATUS_DESCRIPTION_MAX, code, duration, one_line, short_digest};
use crate::command::ParseError;

// `write!` into a String cannot fail; this keeps the renderers free of unwraps.
macro_rules! line {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

fn short_sha(sha: &str) -> String {
    let short: String = sha.chars().take(8).collect();
    code(&short)
}

/// A Markdown link whose label is ours and whose URL cannot break out of it.
fn link(label: &str, url: &str) -> String {
    let url: String = one_line(url)
        .chars()
        .flat_map(|c| match c {
            ' ' => "%20".chars().collect::<Vec<_>>(),
            '(' => "%28".chars().collect(),
            ')' => "%29".chars().collect(),
            '<' => "%3C".chars().collect(),
            '>' => "%3E".chars().collect(),
            '`' => "%60".chars().collect(),
            c => vec![c],
        })
        .collect();
    format!("[{label}]({url})")
}

/// `@name` with only the characters a GitLab username can hold (else `someone`).
fn mention(username: &str) -> String {
    let clean: String = username
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
        .collect();
    if clean.is_empty() {
        "someone".to_string()
    } else {
        format!("@{clean}")
    }
}

fn what(r: &RunReport) -> String {
    format!("{} ({})", code(&r.ref_name), short_sha(&r.sha).trim())
}

fn facts(r: &RunReport) -> String {
    let mut s = format!(
        "Run #{} for {} · triggered by {} · requested by {}",
        r.run_id,
        code(&r.project),
        r.trigger.describe(),
        code(&r.requested_by)
    );
    if let Some(ms) = r.duration_ms {
        let _ = write!(s, " · took {}", duration(ms));
    }
    s
}

fn links(out: &mut String, r: &RunReport) {
    let mut parts = Vec::new();
    if let Some(url) = &r.pipeline_url {
        parts.push(link("pipeline", url));
    }
    for (name, url) in &r.job_urls {
        parts.push(link(&format!("job {}", code(name)), url));
    }
    if let Some(url) = &r.dashboard_url {
        parts.push(link(&format!("run #{} on hoist", r.run_id), url));
    }
    if !parts.is_empty() {
        line!(out, "");
        line!(out, "Links: {}", parts.join(" · "));
    }
}

fn platforms(s: &ServiceReport) -> String {
    if s.platforms.is_empty() {
        "(any)".to_string()
    } else {
        s.platforms
            .iter()
            .map(|p| code(p))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn versions(s: &ServiceReport) -> String {
    match (s.version_before, s.version_after) {
        (Some(before), Some(after)) => format!("Swarm version {before} → {after}"),
        (None, Some(after)) => format!("new service, Swarm version {after}"),
        (Some(before), None) => format!("Swarm version {before}, not changed"),
        (None, None) => "not in Swarm".to_string(),
    }
}

fn image_ref(s: &ServiceReport, full_digest: bool) -> String {
    match &s.digest {
        Some(d) if full_digest => code(&format!("{}:{}@{d}", s.image, s.tag)),
        Some(d) => code(&format!("{}:{}@{}", s.image, s.tag, short_digest(d))),
        None => code(&format!("{}:{}", s.image, s.tag)),
    }
}

/// The first commit comment of a run: it started, and what it will deploy.
pub fn run_started(r: &RunReport) -> String {
    let mut out = String::new();
    line!(
        out,
        "### 🚀 hoist is deploying {} to {}",
        what(r),
        code(&r.env)
    );
    line!(out, "");
    line!(out, "{}", facts(r));
    line!(out, "");
    for s in &r.services {
        line!(
            out,
            "- service {}: {} for {}",
            code(&s.name),
            image_ref(s, false),
            platforms(s)
        );
    }
    line!(out, "");
    line!(
        out,
        "Steps: manifest → verify → deploy-job → swarm → converge. The next comment says how it ended."
    );
    links(&mut out, r);
    out
}

/// The last commit comment of a run: how it ended, with everything needed to check it.
pub fn run_finished(r: &RunReport) -> String {
    let mut out = String::new();
    let headline = match r.state {
        RunState::Succeeded => format!("✅ hoist deployed {} to {}", what(r), code(&r.env)),
        RunState::RolledBack => format!(
            "↩️ hoist rolled back {}: {} did not converge",
            code(&r.env),
            what(r)
        ),
        RunState::Superseded => format!(
            "⏭️ hoist did not deploy {} to {}: superseded",
            what(r),
            code(&r.env)
        ),
        RunState::Refused => format!("🚫 hoist refused to deploy {} to {}", what(r), code(&r.env)),
        RunState::Queued | RunState::Running => format!(
            "⏳ hoist is still deploying {} to {}",
            what(r),
            code(&r.env)
        ),
        RunState::Failed => format!("❌ hoist could not deploy {} to {}", what(r), code(&r.env)),
    };
    line!(out, "### {headline}");
    line!(out, "");
    line!(out, "{}", facts(r));
    if let Some(step) = &r.failed_step {
        line!(out, "");
        line!(out, "Failed step: {}", code(step));
    }
    if let Some(error) = &r.error {
        line!(out, "");
        line!(out, "Reason: {}", code(error));
    }
    if !r.services.is_empty() {
        line!(out, "");
        line!(out, "Services:");
        line!(out, "");
        for s in &r.services {
            line!(
                out,
                "- {} {}: {}",
                code(&s.name),
                s.state.as_str(),
                image_ref(s, true)
            );
            line!(out, "  - platforms {} · {}", platforms(s), versions(s));
        }
    }
    if !r.task_errors.is_empty() {
        line!(out, "");
        line!(out, "Task errors:");
        line!(out, "");
        for e in &r.task_errors {
            line!(out, "- {}", code(e));
        }
    }
    links(&mut out, r);
    out
}

/// A commit comment for a queued run that a newer request replaced before it started.
pub fn superseded(r: &RunReport, by_run_id: u64, by_ref: &str) -> String {
    let mut out = String::new();
    line!(out, "### ⏭️ hoist skipped {} for {}", what(r), code(&r.env));
    line!(out, "");
    line!(
        out,
        "Run #{} was superseded by run #{by_run_id} for {} before it started; nothing was deployed from this commit.",
        r.run_id,
        code(by_ref)
    );
    links(&mut out, r);
    out
}

/// The `hoist/<env>` commit status: GitLab's state and a description of at most 255 characters.
pub fn commit_status(r: &RunReport) -> (CommitState, String) {
    let reference = one_line(&r.ref_name);
    let env = one_line(&r.env);
    let (state, text) = match r.state {
        RunState::Queued => (
            CommitState::Pending,
            format!("{reference} waits to deploy to {env}"),
        ),
        RunState::Running => (
            CommitState::Running,
            format!("deploying {reference} to {env}"),
        ),
        RunState::Succeeded => (
            CommitState::Success,
            match r.duration_ms {
                Some(ms) => format!("deployed {reference} to {env} in {}", duration(ms)),
                None => format!("deployed {reference} to {env}"),
            },
        ),
        RunState::Failed => (
            CommitState::Failed,
            format!(
                "failed{}: {}",
                r.failed_step
                    .as_deref()
                    .map(|s| format!(" at {}", one_line(s)))
                    .unwrap_or_default(),
                one_line(r.error.as_deref().unwrap_or("see the commit comment"))
            ),
        ),
        RunState::RolledBack => (
            CommitState::Failed,
            format!("{reference} did not converge in {env}; Swarm rolled back"),
        ),
        RunState::Superseded => (
            CommitState::Canceled,
            format!("superseded by a newer deploy to {env}"),
        ),
        RunState::Refused => (
            CommitState::Failed,
            format!(
                "refused: {}",
                one_line(r.error.as_deref().unwrap_or("see the reply"))
            ),
        ),
    };
    (state, truncate(&text, STATUS_DESCRIPTION_MAX))
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s.push('…');
    s
}

/// The MR reply when a `/deploy` was accepted (with the `eyes` reaction).
pub fn mr_reply_accepted(r: &RunReport) -> String {
    let mut out = String::new();
    line!(
        out,
        "👀 {} asked to deploy {} to {}: this is run #{}. I will reply here when it ends.",
        mention(&r.requested_by),
        what(r),
        code(&r.env),
        r.run_id
    );
    links(&mut out, r);
    out
}

/// The MR reply when a `/deploy` run ended (with `rocket` or `x`).
pub fn mr_reply_finished(r: &RunReport) -> String {
    let mut out = String::new();
    let took = r
        .duration_ms
        .map(|ms| format!(" in {}", duration(ms)))
        .unwrap_or_default();
    match r.state {
        RunState::Succeeded => line!(
            out,
            "🚀 {}: deployed {} to {}{took} (run #{}).",
            mention(&r.requested_by),
            what(r),
            code(&r.env),
            r.run_id
        ),
        state => {
            line!(
                out,
                "❌ {}: run #{} to deploy {} to {} {}.",
                mention(&r.requested_by),
                r.run_id,
                what(r),
                code(&r.env),
                match state {
                    RunState::RolledBack => "did not converge and was rolled back",
                    RunState::Superseded => "was superseded by a newer request",
                    RunState::Refused => "was refused",
                    RunState::Queued | RunState::Running => "has not ended yet",
                    _ => "failed",
                }
            );
            if let Some(step) = &r.failed_step {
                line!(out, "");
                line!(out, "Failed step: {}", code(step));
            }
            if let Some(error) = &r.error {
                line!(out, "");
                line!(out, "Reason: {}", code(error));
            }
        }
    }
    for s in &r.services {
        line!(out, "");
        line!(
            out,
            "- {} {}: {}",
            code(&s.name),
            s.state.as_str(),
            image_ref(s, false)
        );
    }
    links(&mut out, r);
    out
}

/// The MR reply to a refused `/deploy` (with the `x` reaction).
pub fn mr_reply_refused(requester: &str, reason: &str) -> String {
    let mut out = String::new();
    line!(out, "🚫 {}, I cannot deploy this.", mention(requester));
    line!(out, "");
    line!(out, "Reason: {}", one_line(reason).replace('`', "'"));
    line!(out, "");
    line!(
        out,
        "Write `/deploy help` for the commands and environments."
    );
    out
}

/// The MR reply to a `/deploy` hoist could not parse.
pub fn mr_reply_parse_error(err: &ParseError) -> String {
    let mut out = String::new();
    match err {
        ParseError::UnknownEnv { given, suggestion } => {
            line!(out, "❓ This project has no environment {}.", code(given));
            if let Some(s) = suggestion {
                line!(out, "");
                line!(
                    out,
                    "Did you mean {}? Write {}.",
                    code(s),
                    code(&format!("/deploy {s}"))
                );
            }
        }
        ParseError::UnexpectedArgs { usage, extra } => {
            line!(
                out,
                "❓ I did not understand {} after {}.",
                code(&extra.join(" ")),
                code(usage)
            );
        }
    }
    line!(out, "");
    line!(
        out,
        "Write `/deploy help` for the commands and environments."
    );
    out
}

/// The reply to `/deploy doctor`: each check of the project's setup, with the fix for a problem.
pub fn doctor_reply(requester: &str, project: &str, checks: &[crate::doctor::Check]) -> String {
    use crate::doctor::Verdict;
    let mut out = String::new();
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if failed == 0 {
        line!(
            out,
            "🩺 {}, everything hoist needs for {} works.",
            mention(requester),
            code(project)
        );
    } else {
        line!(
            out,
            "🩺 {}, {failed} of {} checks for {} failed.",
            mention(requester),
            checks.len(),
            code(project)
        );
    }
    line!(out, "");
    for c in checks {
        let badge = match c.verdict {
            Verdict::Ok => "✅",
            Verdict::Warn => "⚠️",
            Verdict::Fail => "❌",
        };
        line!(
            out,
            "- {badge} **{}**: {}",
            one_line(&c.name),
            one_line(&c.detail)
        );
        if let Some(hint) = &c.hint {
            line!(out, "  fix: {}", one_line(hint));
        }
    }
    out
}

/// The reply to `/deploy help`: the commands (generated from the enum) and the environments.
pub fn help_reply(envs: &[(&str, &str)]) -> String {
    let mut out = String::from("ℹ️ hoist deploys this project to Docker Swarm.\n\n");
    out.push_str(&crate::command::help_text(envs));
    out
}

fn when(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map(|t| t.format(" · %Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

fn summary(s: &RunSummary) -> String {
    format!(
        "run #{} {} · {} ({}) · {} by {}{}",
        s.run_id,
        s.state.badge(),
        code(&s.ref_name),
        short_sha(&s.sha),
        s.trigger.short(),
        code(&s.requested_by),
        when(s.at)
    )
}

/// The reply to `/deploy status [ENV]`: per environment, what runs now and the last runs.
pub fn status_reply(envs: &[EnvStatus]) -> String {
    let mut out = String::new();
    if envs.is_empty() {
        line!(out, "ℹ️ No environments to show.");
    }
    for (i, e) in envs.iter().enumerate() {
        if i > 0 {
            line!(out, "");
        }
        line!(out, "### {} · {}", code(&e.env), one_line(&e.policy));
        line!(out, "");
        if e.live.is_empty() {
            line!(out, "Live: nothing deployed by hoist yet.");
        }
        for s in &e.live {
            let digest = s
                .digest
                .as_deref()
                .map(|d| format!("@{}", short_digest(d)))
                .unwrap_or_default();
            line!(
                out,
                "- live: {} runs {}{}",
                code(&s.name),
                code(&format!("{}:{}{digest}", s.image, s.tag)),
                s.since
                    .map(|t| t.format(" since %Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default()
            );
            if let Some(found) = &s.drift {
                line!(
                    out,
                    "  - ⚠️ drift: Swarm runs {} now; it was changed outside hoist since this deploy",
                    code(found)
                );
            }
        }
        line!(out, "");
        match &e.running {
            Some(r) => line!(out, "Now: {}", summary(r)),
            None => line!(out, "Now: no run in progress."),
        }
        if !e.recent.is_empty() {
            line!(out, "");
            line!(out, "Last runs:");
            line!(out, "");
            for r in &e.recent {
                line!(out, "- {}", summary(r));
            }
        }
    }
    out
}
