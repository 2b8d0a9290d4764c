//! Snapshot of the dashboard for a fixed set of rows, and checks that user text cannot become markup.

use chrono::{TimeZone, Utc};
use insta::assert_snapshot;

use super::*;
use crate::store::DeliveryState;

const DIGEST: &str = "sha256:4f1c2d3e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const IMAGE: &str = "registry.example.com/acme/shop";

fn step(name: &str, state: &str, times: Option<(&str, Option<&str>)>, detail: &str) -> StepRow {
    StepRow {
        name: name.into(),
        state: state.into(),
        started_at: times.map(|(s, _)| s.to_string()),
        finished_at: times.and_then(|(_, f)| f.map(str::to_string)),
        detail: (!detail.is_empty()).then(|| detail.to_string()),
    }
}

/// The six steps never started (queued, refused, superseded runs).
fn unstarted(state: &str) -> Vec<StepRow> {
    runs::STEPS
        .iter()
        .map(|n| step(n, state, None, ""))
        .collect()
}

fn run(id: i64, state: &str, tag: &str) -> RunRow {
    RunRow {
        id,
        project: "acme/shop".into(),
        env: "production".into(),
        trigger: "tag".into(),
        requested_by: Some("alice".into()),
        requester_id: Some(7),
        ref_name: tag.into(),
        sha: SHA.into(),
        tag: Some(tag.into()),
        pipeline_id: Some(300 + id),
        mr_iid: None,
        note_id: None,
        reply_internal: false,
        state: state.into(),
        steps: unstarted("pending"),
        image: None,
        digest: None,
        services: Vec::new(),
        error: None,
        owner: Some("hoist-1".into()),
        created_at: "2026-11-28T09:00:00.000Z".into(),
        started_at: None,
        finished_at: None,
    }
}

/// v1.1.0 went out in 40 s: 10 + 5 + 5 + 10 + 9.5 + 0.5.
fn succeeded() -> RunRow {
    RunRow {
        image: Some(format!("{IMAGE}:v1.1.0")),
        digest: Some(DIGEST.into()),
        created_at: "2026-11-27T18:04:20.000Z".into(),
        started_at: Some("2026-11-27T18:04:20.000Z".into()),
        finished_at: Some("2026-11-27T18:05:00.000Z".into()),
        steps: vec![
            step(
                "manifest",
                "succeeded",
                Some(("2026-11-27T18:04:20.000Z", Some("2026-11-27T18:04:30.000Z"))),
                "job manifest played",
            ),
            step(
                "verify",
                "succeeded",
                Some(("2026-11-27T18:04:30.000Z", Some("2026-11-27T18:04:35.000Z"))),
                "registry.example.com/acme/shop:v1.1.0 = sha256:4f1c2d3e4b5a",
            ),
            step(
                "deploy-job",
                "succeeded",
                Some(("2026-11-27T18:04:35.000Z", Some("2026-11-27T18:04:40.000Z"))),
                "job deploy played",
            ),
            step(
                "swarm",
                "succeeded",
                Some(("2026-11-27T18:04:40.000Z", Some("2026-11-27T18:04:50.000Z"))),
                "shop updated (version 11 → 13)",
            ),
            step(
                "converge",
                "succeeded",
                Some(("2026-11-27T18:04:50.000Z", Some("2026-11-27T18:04:59.500Z"))),
                "1/1 tasks running",
            ),
            step(
                "report",
                "succeeded",
                Some(("2026-11-27T18:04:59.500Z", Some("2026-11-27T18:05:00.000Z"))),
                "",
            ),
        ],
        ..run(43, "succeeded", "v1.1.0")
    }
}

/// v1.2.0, 60 s into its deploy job at `now`.
fn running() -> RunRow {
    let mut steps = unstarted("pending");
    steps[0] = step(
        "manifest",
        "skipped",
        Some(("2026-11-28T09:30:00.000Z", Some("2026-11-28T09:30:00.000Z"))),
        "job manifest already succeeded",
    );
    steps[1] = step(
        "verify",
        "succeeded",
        Some(("2026-11-28T09:30:00.000Z", Some("2026-11-28T09:30:00.000Z"))),
        "",
    );
    steps[2] = step(
        "deploy-job",
        "running",
        Some(("2026-11-28T09:30:00.000Z", None)),
        "",
    );
    RunRow {
        image: Some(format!("{IMAGE}:v1.2.0")),
        digest: Some(DIGEST.into()),
        created_at: "2026-11-28T09:29:58.000Z".into(),
        started_at: Some("2026-11-28T09:30:00.000Z".into()),
        steps,
        ..run(45, "running", "v1.2.0")
    }
}

fn queued() -> RunRow {
    RunRow {
        requested_by: Some("bob".into()),
        created_at: "2026-11-28T09:30:30.000Z".into(),
        ..run(46, "queued", "v1.2.1")
    }
}

fn refused() -> RunRow {
    RunRow {
        error: Some("v1.0.1 is older than v1.1.0, which is live (allow_downgrade = false)".into()),
        finished_at: Some("2026-11-27T19:00:00.000Z".into()),
        created_at: "2026-11-27T19:00:00.000Z".into(),
        steps: unstarted("skipped"),
        ..run(44, "refused", "v1.0.1")
    }
}

/// A /deploy from someone whose every field tries to be markup.
fn hostile() -> RunRow {
    let mut steps = unstarted("skipped");
    steps[0] = step(
        "manifest",
        "failed",
        Some(("2026-11-26T10:00:00.000Z", Some("2026-11-26T10:00:02.000Z"))),
        "job \"manifest\" failed: <script>alert('detail')</script> & more",
    );
    RunRow {
        env: "staging".into(),
        trigger: "mr_comment".into(),
        requested_by: Some("<img src=x onerror=alert(1)>".into()),
        ref_name: "feature/<b>bold</b>".into(),
        sha: "\"><script>alert('sha')</script>".into(),
        mr_iid: Some(12),
        pipeline_id: Some(290),
        error: Some("manifest: <script>alert('error')</script>".into()),
        created_at: "2026-11-26T10:00:00.000Z".into(),
        finished_at: Some("2026-11-26T10:00:03.000Z".into()),
        steps,
        ..run(40, "failed", "ignored")
    }
}

fn delivery(
    id: i64,
    event: &str,
    state: DeliveryState,
    summary: &str,
    run_id: Option<i64>,
) -> DeliveryRow {
    DeliveryRow {
        id,
        idempotency_key: format!("key-{id}"),
        event: event.into(),
        project: "acme/shop".into(),
        received_at: "2026-11-28T09:29:57.120Z".into(),
        state,
        summary: (!summary.is_empty()).then(|| summary.to_string()),
        run_id,
        processed_at: None,
    }
}

fn page() -> Page {
    Page {
        now: Utc.with_ymd_and_hms(2026, 11, 28, 9, 31, 0).unwrap(),
        gitlab_url: "https://gitlab.example.com/".into(),
        envs: vec![
            EnvView {
                project: "acme/shop".into(),
                env: "production".into(),
                policy:
                    "tag: protected release tags matching v* deploy automatically, never backwards"
                        .into(),
                services: vec!["shop".into(), "shop-worker".into()],
                live: Some(succeeded()),
                running: Some(running()),
                queued: vec![queued()],
            },
            EnvView {
                project: "acme/shop".into(),
                env: "staging".into(),
                policy: "manual: /deploy, hoist deploy or playing the deploy job".into(),
                services: vec!["shop-stg".into()],
                live: None,
                running: None,
                queued: Vec::new(),
            },
            EnvView {
                project: "4711".into(),
                env: "production".into(),
                policy: "tag: release tags matching v* deploy automatically, never backwards"
                    .into(),
                services: vec!["billing".into()],
                live: Some(RunRow {
                    project: "4711".into(),
                    ..succeeded()
                }),
                running: None,
                queued: Vec::new(),
            },
        ],
        recent: vec![queued(), running(), refused(), succeeded(), hostile()],
        deliveries: vec![
            delivery(9, "Pipeline Hook", DeliveryState::Queued, "", None),
            delivery(
                8,
                "Pipeline Hook",
                DeliveryState::Processed,
                "pipeline 345 for tag v1.2.0: manifest manual → run 45",
                Some(45),
            ),
            delivery(
                7,
                "Note Hook",
                DeliveryState::Ignored,
                "note by <i>eve</i>: no command",
                None,
            ),
            delivery(
                6,
                "Pipeline Hook",
                DeliveryState::Duplicate,
                "duplicate of an earlier delivery",
                None,
            ),
        ],
        queue_depth: 1,
    }
}

#[test]
fn page_for_fixed_rows() {
    assert_snapshot!(render(&page()));
}

#[test]
fn empty_store() {
    let html = render(&Page {
        envs: Vec::new(),
        recent: Vec::new(),
        deliveries: Vec::new(),
        queue_depth: 0,
        ..page()
    });
    assert!(html.contains("No environments configured."), "{html}");
    assert!(html.contains("No runs yet."), "{html}");
    assert!(html.contains("No webhook deliveries yet."), "{html}");
}

#[test]
fn user_text_never_becomes_markup() {
    let html = render(&page());
    for needle in ["<script", "<img", "<b>bold", "<i>eve", "alert('"] {
        assert!(!html.contains(needle), "{needle:?} unescaped in\n{html}");
    }
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("feature/&lt;b&gt;bold&lt;/b&gt;"));
}

#[test]
fn bars_are_proportional_to_the_run() {
    let mut out = String::new();
    timeline(&mut out, &succeeded(), page().now);
    // 40 s in all: manifest 10 s from 0, verify 5 s from 25 %, converge 9.5 s from 75 %, report 0.5 s at the end.
    for bar in [
        "margin-left:0.0%;width:25.0%",
        "margin-left:25.0%;width:12.5%",
        "margin-left:75.0%;width:23.8%",
        "margin-left:98.8%;width:1.2%",
    ] {
        assert!(out.contains(bar), "{bar} in\n{out}");
    }
    for text in ["10 s", "5 s", "9 s", "500 ms"] {
        assert!(out.contains(&format!(">{text}<")), "{text} in\n{out}");
    }
}

#[test]
fn a_running_step_grows_until_now() {
    let mut out = String::new();
    timeline(&mut out, &running(), page().now);
    // The run started 60 s before `now` and is in its deploy job all that time.
    assert!(
        out.contains("s-running\" style=\"margin-left:0.0%;width:100.0%\""),
        "{out}"
    );
    assert!(out.contains(">1m 00s<"), "{out}");
}

#[test]
fn numeric_project_ids_get_no_gitlab_links() {
    let p = page();
    assert_eq!(project_url(&p, "4711"), None);
    assert_eq!(
        project_url(&p, "acme/shop").as_deref(),
        Some("https://gitlab.example.com/acme/shop")
    );
}

/// A run that recorded every service shows each one's image at its own digest, in the
/// environment's row and in the run's facts; one from before shows its first image.
#[test]
fn every_service_shows_its_own_image() {
    let worker = "sha256:9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d";
    let both = RunRow {
        services: vec![
            runs::ServiceImage {
                service: "shop".into(),
                image: format!("{IMAGE}:v1.1.0"),
                digest: DIGEST.into(),
            },
            runs::ServiceImage {
                service: "shop-worker".into(),
                image: "registry.example.com/acme/worker:v1.1.0".into(),
                digest: worker.into(),
            },
        ],
        ..succeeded()
    };
    let mut p = page();
    p.envs[0].live = Some(both.clone());
    p.recent = vec![both];
    let html = render(&p);
    for pinned in [
        format!("<code class=\"image\">{IMAGE}:v1.1.0@{DIGEST}</code><br>"),
        format!("<code class=\"image\">registry.example.com/acme/worker:v1.1.0@{worker}</code>"),
        format!(" · <code>{IMAGE}:v1.1.0@sha256:4f1c2d3e4b5a</code>"),
        " · <code>registry.example.com/acme/worker:v1.1.0@sha256:9e8d7c6b5a4f</code>".to_string(),
    ] {
        assert!(html.contains(&pinned), "{pinned} in\n{html}");
    }
    let old = render(&page());
    assert!(
        old.contains(&format!(
            "<code class=\"image\">{IMAGE}:v1.1.0@{DIGEST}</code>"
        )) && !old.contains("acme/worker"),
        "{old}"
    );
}
