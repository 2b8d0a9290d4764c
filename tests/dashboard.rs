//! The dashboard in a real browser: headless Chromium loads `/` from hoist running real
//! deploys (fake GitLab, real swarm and registry) and the test reads the DOM it built.
//!
//! Needs `/usr/bin/chromium` (Debian package `chromium`, installed by
//! `scripts/testenv.sh`); without it the test fails in CI and is skipped elsewhere.

mod story_support;
mod support;
mod swarm_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use story_support::Story;

const CHROMIUM: &str = "/usr/bin/chromium";
const STEPS: [&str; 6] = [
    "manifest",
    "verify",
    "deploy-job",
    "swarm",
    "converge",
    "report",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_images_the_queue_and_step_timelines() {
    let Some(chromium) = chromium() else {
        return;
    };
    let Some(story) = Story::start("dash").await else {
        return;
    };
    let world = &story.world;
    let url = format!("http://127.0.0.1:{}/", story.port);

    // v1.0.0 sits in a slow manifest job while v1.1.0 waits behind it.
    world.set_job_duration("manifest", Duration::from_secs(10));
    let v1 = world.push_tag("acme/shop", "v1.0.0", true).await;
    let first = wait_run(&story, &v1.sha, "running").await;
    let v11 = world.push_tag("acme/shop", "v1.1.0", true).await;
    let second = wait_run(&story, &v11.sha, "queued").await;

    let dom = dump_dom(&chromium, &url).await;
    assert!(
        dom.contains(r#"<meta http-equiv="refresh" content="5">"#),
        "{dom}"
    );
    let row = env_row(&dom, "production");
    assert!(
        row.contains("nothing deployed by hoist yet"),
        "nothing is live yet: {row}"
    );
    let now = between(row, r#"<td class="now">"#, "</td>");
    assert!(
        now.contains(&format!("run #{}", id(&first))) && now.contains("step <b>"),
        "the running run and its step: {now}"
    );
    let queue = between(row, r#"<td class="queue">"#, "</td>");
    assert!(
        queue.contains(&format!("run #{}", id(&second))) && queue.contains("v1.1.0"),
        "v1.1.0 waits in the queue: {queue}"
    );
    let section = run_section(&dom, id(&first));
    assert!(
        section.contains(r#"<span class="state s-running">running</span>"#),
        "{section}"
    );
    assert!(
        step_row(section, "manifest").contains(r#"class="bar s-running""#),
        "the running step has a growing bar: {section}"
    );

    // Both finish; then v1.0.1, older than what is live, is refused.
    world.set_job_duration("manifest", Duration::from_millis(30));
    let first = story.finished_run(&v1.sha).await;
    assert_eq!(first["state"], "succeeded", "{first:#}");
    let second = story.finished_run(&v11.sha).await;
    assert_eq!(second["state"], "succeeded", "{second:#}");
    let v101 = world.push_tag("acme/shop", "v1.0.1", true).await;
    let refused = story.finished_run(&v101.sha).await;
    assert_eq!(refused["state"], "refused", "{refused:#}");

    let html = raw_page(&story, &url).await;
    let dom = dump_dom(&chromium, &url).await;

    // What runs in production: exactly what Swarm runs, since when, by whom, from which pipeline.
    let row = env_row(&dom, "production");
    let digest = text(&second, "digest");
    let pinned = format!("{}:v1.1.0@{digest}", story.image);
    assert_eq!(story.service_image(), pinned);
    assert!(
        row.contains(&format!(r#"<code class="image">{pinned}</code>"#)),
        "live image in {row}"
    );
    assert!(row.contains("since <time"), "{row}");
    assert!(
        row.contains(&format!("tag by <b>{}</b>", text(&second, "requested_by"))),
        "{row}"
    );
    let pipeline = format!(
        r#"href="{}/acme/shop/-/pipelines/{}">pipeline #{}</a>"#,
        world.url().trim_end_matches('/'),
        v11.pipeline_id.get(),
        v11.pipeline_id.get()
    );
    assert!(row.contains(&pipeline), "{pipeline} in {row}");
    assert!(row.contains(&format!("run #{}", id(&second))), "{row}");
    assert!(
        between(row, r#"<td class="now">"#, "</td>").contains("idle"),
        "{row}"
    );
    assert!(
        between(row, r#"<td class="queue">"#, "</td>").contains("empty"),
        "{row}"
    );
    assert!(
        env_row(&dom, "staging").contains("nothing deployed by hoist yet"),
        "{dom}"
    );

    // Each succeeded run: every step with a bar placed and sized as its times say, and its duration.
    for run in [&first, &second] {
        let section = run_section(&dom, id(run));
        assert!(
            section.contains(r#"<span class="state s-succeeded">succeeded</span>"#),
            "{section}"
        );
        assert!(section.contains("tag by <b>"), "{section}");
        let expected = expected_bars(run);
        for (name, (left, width)) in STEPS.iter().zip(expected) {
            let step = step_row(section, name);
            assert!(
                step.contains(r#"<td class="st">succeeded</td>"#),
                "{name}: {step}"
            );
            let (l, w) = bar_of(step);
            assert!(
                (l - left).abs() < 0.11 && (w - width).abs() < 0.11,
                "{name}: bar at {l}%+{w}%, expected {left}%+{width}%: {step}"
            );
            let dur = between(step, r#"<td class="dur">"#, "</td>");
            assert!(
                dur.ends_with(" ms") || dur.ends_with(" s") || dur.contains('m'),
                "{name}: duration {dur:?}"
            );
        }
    }
    // The slow manifest dominates v1.0.0's timeline.
    let (_, manifest_width) = bar_of(step_row(run_section(&dom, id(&first)), "manifest"));
    assert!(manifest_width > 40.0, "manifest bar {manifest_width}%");

    // The refused run says why, and ran no step.
    let section = run_section(&dom, id(&refused));
    assert!(
        section.contains(r#"<span class="state s-refused">refused</span>"#),
        "{section}"
    );
    let reason = text(&refused, "error");
    assert!(reason.contains("v1.1.0"), "{reason}");
    assert!(
        section.contains(&format!(
            r#"<p class="why">refused: {}</p>"#,
            dom_text(&reason)
        )),
        "reason in {section}"
    );
    assert!(section.contains("no step ran"), "{section}");

    // Deliveries are listed below the runs.
    let deliveries = dom.find("Recent deliveries").expect("deliveries table");
    assert!(
        dom.find("Recent runs").is_some_and(|r| r < deliveries),
        "{dom}"
    );
    assert!(dom[deliveries..].contains("Pipeline Hook"), "{dom}");

    support::capture::capture("page", &html);
    support::capture::capture("page", &dom);
    for secret in support::secrets() {
        assert!(!html.contains(&secret), "secret {secret:?} in the page");
        assert!(!dom.contains(&secret), "secret {secret:?} in the DOM");
    }
}

/// Chromium, or None (with a note) outside CI. In CI a missing browser fails the test.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from(CHROMIUM);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but {CHROMIUM} is missing: install the Debian package `chromium` \
             (scripts/testenv.sh does when run as root)"
        );
    }
    eprintln!("note: skipped, no {CHROMIUM} (apt-get install chromium)");
    None
}

/// The DOM Chromium built from `url`, after at most 2 s of (virtual) page time.
async fn dump_dom(chromium: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut command = tokio::process::Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-proxy-server",
            // Less than the page's 5 s refresh: the dump is of the page as served.
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung browser is killed with all its helpers.
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().expect("start chromium");
    let pid = child.id();
    match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
        Ok(output) => {
            let output = output.expect("chromium output");
            let dom = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success() && dom.contains("</html>"),
                "chromium {}: {dom}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            dom
        }
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: signals only the process group this test started.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            panic!("chromium did not dump {url} within 60 s");
        }
    }
}

/// The page as hoist serves it (for the secret scan of the raw bytes).
async fn raw_page(story: &Story, url: &str) -> String {
    let resp = story.client.get(url).send().await.expect("GET /");
    assert_eq!(resp.status(), 200);
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(kind.starts_with("text/html"), "{kind}");
    resp.text().await.expect("page")
}

/// Waits until the run for `sha` is in `state`.
async fn wait_run(story: &Story, sha: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = story.runs().await;
        if let Some(run) = runs.iter().find(|r| r["sha"] == sha && r["state"] == state) {
            return run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {state} run for {sha} in 30 s: {runs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn id(run: &Value) -> i64 {
    run["id"].as_i64().expect("run id")
}

fn text(run: &Value, key: &str) -> String {
    run[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {run:#}"))
        .to_string()
}

/// `text` as Chromium serializes a text node.
fn dom_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}

/// The part of `haystack` from `start` up to the next `end`.
fn between<'a>(haystack: &'a str, start: &str, end: &str) -> &'a str {
    let from = haystack
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in {haystack}"))
        + start.len();
    let len = haystack[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} after {start:?} not in {haystack}"));
    &haystack[from..from + len]
}

fn env_row<'a>(dom: &'a str, env: &str) -> &'a str {
    between(
        dom,
        &format!(r#"<tr class="env" data-project="acme/shop" data-env="{env}">"#),
        "</tr>",
    )
}

fn run_section(dom: &str, id: i64) -> &str {
    between(dom, &format!(r#"id="run-{id}">"#), "</section>")
}

fn step_row<'a>(section: &'a str, name: &str) -> &'a str {
    between(section, &format!(r#"data-step="{name}">"#), "</tr>")
}

/// The `margin-left` and `width` percentages of the step's bar.
fn bar_of(step: &str) -> (f64, f64) {
    let pct = |key: &str| -> f64 {
        between(step, key, "%")
            .parse()
            .unwrap_or_else(|e| panic!("{key} in {step}: {e}"))
    };
    (pct("margin-left:"), pct("width:"))
}

/// Where each step's bar should sit, from the times the API reports.
fn expected_bars(run: &Value) -> Vec<(f64, f64)> {
    let time = |v: &Value| -> i64 {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time"))
            .expect("RFC 3339")
            .timestamp_millis()
    };
    let steps = run["steps"].as_array().expect("steps");
    let spans: Vec<(i64, i64)> = steps
        .iter()
        .map(|s| (time(&s["started_at"]), time(&s["finished_at"])))
        .collect();
    let start = spans.iter().map(|s| s.0).min().expect("a step");
    let end = spans.iter().map(|s| s.1).max().expect("a step");
    let total = (end - start).max(1) as f64;
    spans
        .iter()
        .map(|(s, e)| {
            let left = ((s - start) as f64 * 100.0 / total).clamp(0.0, 100.0);
            let width = ((e - s) as f64 * 100.0 / total).clamp(0.0, 100.0 - left);
            (left, width)
        })
        .collect()
}
