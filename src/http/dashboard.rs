//! The dashboard at `/`: what runs where, what waits, recent runs with a step timeline, recent deliveries.
//!
//! Server-rendered HTML with inline CSS and no script, so it works offline and
//! behind any proxy; the browser reloads it every [`REFRESH_SECS`]. Every value
//! that came from the store (refs, usernames, errors, step details, webhook
//! summaries) goes through [`escape`], in text and in attributes alike.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::AppState;
use crate::config::Config;
use crate::engine::reporting;
use crate::report::{self, RunState};
use crate::store::runs::{self, RunRow, StepRow};
use crate::store::{DeliveryRow, Store, StoreError};

/// Seconds between the browser's reloads.
pub const REFRESH_SECS: u32 = 5;
/// How many runs the timeline shows, newest first.
const RECENT_RUNS: i64 = 20;
/// How many deliveries the table at the bottom shows.
const RECENT_DELIVERIES: i64 = 20;
/// At most this many queued or running runs are read (per state) for the queue column.
const ACTIVE_RUNS: i64 = 1000;

// `write!` into a String cannot fail; this keeps the renderers free of unwraps.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// Everything the page shows, read from the config and the store at one moment.
#[derive(Debug, Clone)]
pub struct Page {
    /// When the page was read: running steps and ages are measured up to here.
    pub now: DateTime<Utc>,
    /// `gitlab.url`, for links to pipelines, commits and merge requests.
    pub gitlab_url: String,
    /// Every configured environment, in config order.
    pub envs: Vec<EnvView>,
    /// The latest runs of every environment, newest first, with their steps.
    pub recent: Vec<RunRow>,
    pub deliveries: Vec<DeliveryRow>,
    /// Deliveries stored but not yet processed.
    pub queue_depth: i64,
}

/// One configured environment.
#[derive(Debug, Clone)]
pub struct EnvView {
    pub project: String,
    pub env: String,
    /// The policy in words (`policy::policy_description`).
    pub policy: String,
    /// The Swarm services the environment deploys.
    pub services: Vec<String>,
    /// The newest succeeded run: what Swarm runs now.
    pub live: Option<RunRow>,
    /// The run in progress (at most one per environment).
    pub running: Option<RunRow>,
    /// Runs waiting, oldest (the next to start) first.
    pub queued: Vec<RunRow>,
}

/// `GET /`.
pub async fn show(State(state): State<Arc<AppState>>) -> Response {
    match load(&state.config, &state.store, Utc::now()).await {
        Ok(page) => Html(render(&page)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the dashboard from the store");
            (StatusCode::SERVICE_UNAVAILABLE, Html(unavailable())).into_response()
        }
    }
}

/// Reads the page from the store.
pub async fn load(config: &Config, store: &Store, now: DateTime<Utc>) -> Result<Page, StoreError> {
    let mut active = store
        .runs(None, None, Some(runs::RUNNING), ACTIVE_RUNS)
        .await?;
    let mut queued = store
        .runs(None, None, Some(runs::QUEUED), ACTIVE_RUNS)
        .await?;
    queued.reverse();
    let mut envs = Vec::new();
    for project in &config.projects {
        for env in &project.environments {
            let mine = |r: &RunRow| r.project == project.path && r.env == env.name;
            let running = active.iter().position(mine).map(|i| active.swap_remove(i));
            envs.push(EnvView {
                project: project.path.clone(),
                env: env.name.clone(),
                policy: crate::policy::policy_description(env),
                services: env.services.iter().map(|s| s.name.clone()).collect(),
                live: store.live_run(&project.path, &env.name).await?,
                running,
                queued: queued.iter().filter(|r| mine(r)).cloned().collect(),
            });
        }
    }
    Ok(Page {
        now,
        gitlab_url: config.gitlab.url.clone(),
        envs,
        recent: store.runs(None, None, None, RECENT_RUNS).await?,
        deliveries: store.deliveries(None, RECENT_DELIVERIES).await?,
        queue_depth: store.queue_depth().await?,
    })
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#1d2327;background:#fff}
h1{margin:0 0 .2em}h2{margin:1.6em 0 .5em;border-bottom:1px solid #ddd}h3{margin:0 0 .3em;font-size:1.05em}
table{border-collapse:collapse;width:100%}th,td{padding:4px 8px;text-align:left;vertical-align:top}
thead th{border-bottom:2px solid #ccc}tbody tr{border-bottom:1px solid #eee}
code{font-family:ui-monospace,monospace;font-size:.92em;overflow-wrap:anywhere}
a{color:#0b5cad}.muted{color:#6b7280}.none{color:#6b7280;font-style:italic}
ol,ul{margin:0;padding-left:1.2em}
.state{display:inline-block;padding:0 .5em;border-radius:.7em;color:#fff;font-size:.85em;white-space:nowrap}
.run{border:1px solid #ddd;border-left:6px solid #999;border-radius:4px;padding:.6em .9em;margin:.7em 0}
.run:target{box-shadow:0 0 0 3px #f0c040}
.why{margin:.3em 0;padding:.2em .5em;background:#fbeaea;border-radius:3px}
.steps td{padding:2px 8px}.steps .name{width:7em}.steps .st{width:6em}.steps .dur{width:6em;text-align:right;white-space:nowrap}
.track{width:40%;min-width:12em;background:#f3f4f6;border-radius:2px}
.bar{height:.9em;min-width:2px;border-radius:2px}
.detail{font-size:.88em;color:#374151;overflow-wrap:anywhere}
.s-succeeded{--c:#1a7f37}.s-running{--c:#0969da}.s-queued,.s-pending{--c:#8c959f}
.s-failed{--c:#cf222e}.s-rolled_back{--c:#bc4c00}.s-superseded,.s-skipped{--c:#afb8c1}
.s-refused{--c:#8250df}.s-other{--c:#57606a}
.state,.bar{background:var(--c)}.run{border-left-color:var(--c)}
.deliveries td:not(.meaning){white-space:nowrap}
.d-queued{color:#0969da}.d-ignored,.d-duplicate{color:#6b7280}
";

/// The whole page.
pub fn render(page: &Page) -> String {
    let mut out = String::with_capacity(16 * 1024);
    put!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>hoist</title>\n<style>\n{STYLE}</style></head>\n<body>\n"
    );
    put!(
        out,
        "<h1>hoist</h1>\n<p class=\"muted\">as of {} · reloads every {REFRESH_SECS} s · \
         webhook deliveries waiting: {}</p>\n",
        page.now.format("%Y-%m-%d %H:%M:%S UTC"),
        page.queue_depth
    );
    environments(&mut out, page);
    recent_runs(&mut out, page);
    deliveries(&mut out, page);
    out.push_str("</body></html>\n");
    out
}

/// The page when the store does not answer; it keeps reloading until it does.
fn unavailable() -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\"><title>hoist</title></head>\n\
         <body><h1>hoist</h1><p>The store is unavailable; this page reloads every {REFRESH_SECS} s.</p></body></html>\n"
    )
}

fn environments(out: &mut String, page: &Page) {
    out.push_str("<h2>Environments</h2>\n");
    if page.envs.is_empty() {
        out.push_str("<p class=\"none\">No environments configured.</p>\n");
        return;
    }
    out.push_str(
        "<table class=\"envs\"><thead><tr><th>environment</th><th>live</th>\
         <th>now</th><th>queue</th></tr></thead><tbody>\n",
    );
    for e in &page.envs {
        put!(
            out,
            "<tr class=\"env\" data-project=\"{}\" data-env=\"{}\"><td><b>{}</b>\
             <div class=\"muted\">{}</div><div class=\"muted\">{}</div><div>services: {}</div></td>\n",
            escape(&e.project),
            escape(&e.env),
            escape(&e.env),
            escape(&e.project),
            escape(&e.policy),
            e.services
                .iter()
                .map(|s| format!("<code>{}</code>", escape(s)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out.push_str("<td class=\"live\">");
        match &e.live {
            Some(run) => live(out, page, run),
            None => out.push_str("<span class=\"none\">nothing deployed by hoist yet</span>"),
        }
        out.push_str("</td>\n<td class=\"now\">");
        match &e.running {
            Some(run) => running(out, page, run),
            None => out.push_str("<span class=\"none\">idle</span>"),
        }
        out.push_str("</td>\n<td class=\"queue\">");
        if e.queued.is_empty() {
            out.push_str("<span class=\"none\">empty</span>");
        } else {
            out.push_str("<ol>");
            for run in &e.queued {
                put!(
                    out,
                    "<li>{} <code>{}</code> · {} · waiting since {}</li>",
                    run_link(run.id),
                    escape(&run.ref_name),
                    who(run),
                    time(&run.created_at, page.now)
                );
            }
            out.push_str("</ol>");
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

/// The images a run deploys with their digests: every service's, or for a run from
/// before those were recorded, its first image only.
fn images(run: &RunRow) -> Vec<(&str, Option<&str>)> {
    if run.services.is_empty() {
        return run
            .image
            .as_deref()
            .map(|i| (i, run.digest.as_deref()))
            .into_iter()
            .collect();
    }
    run.services
        .iter()
        .map(|s| (s.image.as_str(), Some(s.digest.as_str())))
        .collect()
}

/// What an environment runs: the pinned images of its newest succeeded run (one line per
/// service when it has several), since when, by whom, from where.
fn live(out: &mut String, page: &Page, run: &RunRow) {
    let images = images(run);
    if images.is_empty() {
        out.push_str("<code class=\"image\">(image not recorded)</code>");
    }
    for (i, (image, digest)) in images.iter().enumerate() {
        if i > 0 {
            out.push_str("<br>");
        }
        let pinned = match digest {
            Some(d) => format!("{image}@{d}"),
            None => image.to_string(),
        };
        put!(out, "<code class=\"image\">{}</code>", escape(&pinned));
    }
    if let Some(finished) = &run.finished_at {
        put!(out, "<div>since {}</div>", time(finished, page.now));
    }
    put!(
        out,
        "<div>{} · {} · {}{}</div>",
        run_link(run.id),
        who(run),
        commit(page, run),
        pipeline(page, run)
            .map(|p| format!(" · {p}"))
            .unwrap_or_default()
    );
}

/// The run in progress and the step it is in.
fn running(out: &mut String, page: &Page, run: &RunRow) {
    put!(
        out,
        "{} <code>{}</code> · {}",
        run_link(run.id),
        escape(&run.ref_name),
        who(run)
    );
    match run.steps.iter().find(|s| s.state == "running") {
        Some(step) => put!(
            out,
            "<div>step <b>{}</b> since {}</div>",
            escape(&step.name),
            step.started_at
                .as_deref()
                .map(|t| time(t, page.now))
                .unwrap_or_default()
        ),
        None => put!(
            out,
            "<div>started {}</div>",
            time(
                run.started_at.as_deref().unwrap_or(&run.created_at),
                page.now
            )
        ),
    }
}

fn recent_runs(out: &mut String, page: &Page) {
    out.push_str("<h2>Recent runs</h2>\n");
    if page.recent.is_empty() {
        out.push_str("<p class=\"none\">No runs yet.</p>\n");
    }
    for run in &page.recent {
        let class = state_class(&run.state);
        put!(
            out,
            "<section class=\"run {class}\" id=\"run-{id}\">\
             <h3><a href=\"#run-{id}\">#{id}</a> <span class=\"state {class}\">{state}</span> \
             {project} · <b>{env}</b></h3>\n",
            id = run.id,
            state = escape(&run.state),
            project = escape(&run.project),
            env = escape(&run.env),
        );
        put!(
            out,
            "<div class=\"facts\">{} · {}{}{} · created {}{}</div>\n",
            who(run),
            commit(page, run),
            pipeline(page, run)
                .map(|p| format!(" · {p}"))
                .unwrap_or_default(),
            images(run)
                .into_iter()
                .map(|(i, d)| match d {
                    Some(d) => format!(
                        " · <code>{}@{}</code>",
                        escape(i),
                        escape(&report::short_digest(d))
                    ),
                    None => format!(" · <code>{}</code>", escape(i)),
                })
                .collect::<String>(),
            time(&run.created_at, page.now),
            match total(run, page.now) {
                Some((_, t)) if run.state != runs::RUNNING => {
                    format!(" · took {}", report::duration(ms(&t)))
                }
                Some((_, t)) => format!(" · running for {}", report::duration(ms(&t))),
                None => String::new(),
            }
        );
        if let Some(error) = run.error.as_deref().filter(|e| !e.trim().is_empty()) {
            put!(
                out,
                "<p class=\"why\">{}: {}</p>\n",
                reason_label(&run.state),
                escape(error)
            );
        }
        timeline(out, run, page.now);
        out.push_str("</section>\n");
    }
}

/// The steps of a run, each with a bar placed and sized in proportion to the run's duration.
fn timeline(out: &mut String, run: &RunRow, now: DateTime<Utc>) {
    if run.steps.iter().all(|s| s.started_at.is_none()) {
        out.push_str("<p class=\"muted\">no step ran</p>\n");
        return;
    }
    let span = total(run, now);
    out.push_str("<table class=\"steps\">\n");
    for step in &run.steps {
        let class = state_class(&step.state);
        put!(
            out,
            "<tr class=\"step\" data-step=\"{name}\"><td class=\"name\">{name}</td>\
             <td class=\"st\">{state}</td><td class=\"track\">",
            name = escape(&step.name),
            state = escape(&step.state),
        );
        let took = step_span(step, now);
        if let (Some((start, end)), Some((run_start, run_len))) = (took, span) {
            let (left, width) = bar(start - run_start, end - start, run_len);
            put!(
                out,
                "<div class=\"bar {class}\" style=\"margin-left:{left:.1}%;width:{width:.1}%\"></div>"
            );
        }
        put!(
            out,
            "</td><td class=\"dur\">{}</td><td class=\"detail\">{}</td></tr>\n",
            took.map(|(s, e)| report::duration(ms(&(e - s))))
                .unwrap_or_default(),
            escape(step.detail.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>\n");
}

fn deliveries(out: &mut String, page: &Page) {
    out.push_str("<h2>Recent deliveries</h2>\n");
    if page.deliveries.is_empty() {
        out.push_str("<p class=\"none\">No webhook deliveries yet.</p>\n");
        return;
    }
    out.push_str(
        "<table class=\"deliveries\"><thead><tr><th>id</th><th>received</th><th>event</th>\
         <th>project</th><th>state</th><th>meaning</th><th>run</th></tr></thead><tbody>\n",
    );
    for d in &page.deliveries {
        put!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"d-{state}\">{state}</td>\
             <td class=\"meaning\">{}</td><td>{}</td></tr>\n",
            d.id,
            time(&d.received_at, page.now),
            escape(&d.event),
            escape(&d.project),
            escape(d.summary.as_deref().unwrap_or("")),
            d.run_id.map(run_link).unwrap_or_default(),
            state = d.state.as_str(),
        );
    }
    out.push_str("</tbody></table>\n");
}

/// `#12`, linking to the run's section on this page (the anchor report links point at).
fn run_link(id: i64) -> String {
    format!("<a href=\"#run-{id}\">run #{id}</a>")
}

/// `tag by alice`.
fn who(run: &RunRow) -> String {
    format!(
        "{} by <b>{}</b>",
        reporting::trigger(&run.trigger).short(),
        escape(run.requested_by.as_deref().unwrap_or("hoist"))
    )
}

/// `v1.2.0 (01234567)`, the sha linked to the commit on GitLab.
fn commit(page: &Page, run: &RunRow) -> String {
    let short: String = run.sha.chars().take(8).collect();
    // Only a real commit id goes into a link.
    let sha = match project_url(page, &run.project).filter(|_| is_hex(&run.sha)) {
        Some(base) => format!(
            "<a href=\"{}\"><code>{}</code></a>",
            escape(&format!("{base}/-/commit/{}", run.sha)),
            escape(&short)
        ),
        None => format!("<code>{}</code>", escape(&short)),
    };
    let mr = match (run.mr_iid, project_url(page, &run.project)) {
        (Some(iid), Some(base)) => format!(
            " on <a href=\"{}\">!{iid}</a>",
            escape(&format!("{base}/-/merge_requests/{iid}"))
        ),
        (Some(iid), None) => format!(" on !{iid}"),
        _ => String::new(),
    };
    format!("<code>{}</code> ({sha}){mr}", escape(&run.ref_name))
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pipeline #310`, linked to GitLab.
fn pipeline(page: &Page, run: &RunRow) -> Option<String> {
    let id = run.pipeline_id?;
    Some(match project_url(page, &run.project) {
        Some(base) => format!(
            "<a class=\"pipeline\" href=\"{}\">pipeline #{id}</a>",
            escape(&format!("{base}/-/pipelines/{id}"))
        ),
        None => format!("pipeline #{id}"),
    })
}

/// The project's page on GitLab; None for a project configured by numeric id (its path is unknown here).
fn project_url(page: &Page, project: &str) -> Option<String> {
    if project.is_empty() || project.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "{}/{}",
        page.gitlab_url.trim_end_matches('/'),
        project.trim_matches('/')
    ))
}

/// How the error of a run in `state` is introduced.
fn reason_label(state: &str) -> &'static str {
    match reporting::run_state(state) {
        RunState::Refused => "refused",
        RunState::Superseded => "superseded",
        RunState::RolledBack => "rolled back",
        RunState::Succeeded => "note",
        _ => "failed",
    }
}

/// The CSS class for a run or step state; unknown states get a neutral one.
fn state_class(state: &str) -> &'static str {
    match state {
        "succeeded" => "s-succeeded",
        "running" => "s-running",
        "queued" => "s-queued",
        "pending" => "s-pending",
        "failed" => "s-failed",
        "rolled_back" => "s-rolled_back",
        "superseded" => "s-superseded",
        "skipped" => "s-skipped",
        "refused" => "s-refused",
        _ => "s-other",
    }
}

fn parse(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `2026-11-28 09:30:05 UTC (3m 12s ago)`; a time the store wrote in another form is shown as written.
fn time(text: &str, now: DateTime<Utc>) -> String {
    match parse(text) {
        Some(t) => {
            let age = now - t;
            let ago = if age >= chrono::TimeDelta::zero() {
                format!(" ({} ago)", report::duration(ms(&age)))
            } else {
                String::new()
            };
            format!(
                "<time datetime=\"{}\">{}</time>{ago}",
                escape(text),
                t.format("%Y-%m-%d %H:%M:%S UTC")
            )
        }
        None => escape(text),
    }
}

fn ms(delta: &chrono::TimeDelta) -> u64 {
    u64::try_from(delta.num_milliseconds()).unwrap_or(0)
}

/// When a step ran: its start and its end (now while it runs).
fn step_span(step: &StepRow, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let start = parse(step.started_at.as_deref()?)?;
    let end = match step.finished_at.as_deref().and_then(parse) {
        Some(end) => end,
        None if step.state == "running" => now,
        None => start,
    };
    Some((start, end.max(start)))
}

/// A run's timeline: the first step's start, and the time to its end (its last step's, or now while it runs).
fn total(run: &RunRow, now: DateTime<Utc>) -> Option<(DateTime<Utc>, chrono::TimeDelta)> {
    let spans: Vec<_> = run.steps.iter().filter_map(|s| step_span(s, now)).collect();
    let start = spans.iter().map(|(s, _)| *s).min()?;
    let mut end = spans.iter().map(|(_, e)| *e).max()?;
    if run.state == runs::RUNNING {
        end = end.max(now);
    }
    Some((start, end - start))
}

/// A bar's left offset and width in percent of the run's length.
fn bar(offset: chrono::TimeDelta, length: chrono::TimeDelta, run: chrono::TimeDelta) -> (f64, f64) {
    let run_ms = run.num_milliseconds();
    if run_ms <= 0 {
        return (0.0, 100.0);
    }
    let pct = |d: chrono::TimeDelta| {
        (d.num_milliseconds() as f64 * 100.0 / run_ms as f64).clamp(0.0, 100.0)
    };
    let left = pct(offset);
    (left, pct(length).min(100.0 - left))
}

/// HTML escaping for text nodes and (quoted) attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
