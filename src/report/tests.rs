//! Snapshot tests for every renderer, and a property test that no rendered line starts with user text.

use chrono::{TimeZone, Utc};
use insta::assert_snapshot;
use proptest::prelude::*;

use super::*;
use crate::command::ParseError;

const DIGEST: &str = "sha256:4f1c2d3e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff";

fn service(state: ServiceState, before: Option<u64>, after: Option<u64>) -> ServiceReport {
    ServiceReport {
        name: "tableservice".into(),
        image: "registry.example.com/samsonpe/table".into(),
        tag: "v1.1.0".into(),
        digest: Some(DIGEST.into()),
        platforms: vec!["linux/arm/v7".into(), "linux/arm64".into()],
        version_before: before,
        version_after: after,
        state,
    }
}

fn run(state: RunState) -> RunReport {
    RunReport {
        run_id: 42,
        project: "samsonpe/table".into(),
        env: "production".into(),
        trigger: Trigger::Tag,
        requested_by: "alice".into(),
        ref_name: "v1.1.0".into(),
        sha: "abc12345deadbeefabc12345deadbeefabc12345".into(),
        pipeline_url: Some("https://gitlab.example.com/samsonpe/table/-/pipelines/310".into()),
        job_urls: vec![
            (
                "manifest".into(),
                "https://gitlab.example.com/samsonpe/table/-/jobs/901".into(),
            ),
            (
                "deploy".into(),
                "https://gitlab.example.com/samsonpe/table/-/jobs/902".into(),
            ),
        ],
        services: vec![service(ServiceState::Updated, Some(11), Some(13))],
        state,
        failed_step: None,
        error: None,
        task_errors: Vec::new(),
        duration_ms: Some(83_400),
        dashboard_url: Some("https://hoist.example.com/runs/42".into()),
    }
}

fn rolled_back() -> RunReport {
    RunReport {
        failed_step: Some("converge".into()),
        error: Some("Swarm rolled back tableservice: 2 of 2 tasks failed to start".into()),
        task_errors: vec![
            "task 7x2k on pi-3: starting container failed: exec format error".into(),
            "task 9q4m on pi-4: No such image: registry.example.com/samsonpe/table@sha256:4f1c"
                .into(),
        ],
        services: vec![service(ServiceState::RolledBack, Some(13), Some(15))],
        ..run(RunState::RolledBack)
    }
}

fn mr_run(state: RunState) -> RunReport {
    RunReport {
        env: "staging".into(),
        trigger: Trigger::MrComment,
        ref_name: "feature/faster-tables".into(),
        services: vec![ServiceReport {
            name: "tableservice-staging".into(),
            tag: "abc12345".into(),
            state: ServiceState::Created,
            version_before: None,
            ..service(ServiceState::Created, None, Some(1))
        }],
        ..run(state)
    }
}

#[test]
fn started() {
    let mut r = run(RunState::Running);
    r.duration_ms = None;
    r.services[0].digest = None;
    assert_snapshot!(run_started(&r));
}

#[test]
fn finished_success() {
    assert_snapshot!(run_finished(&run(RunState::Succeeded)));
}

#[test]
fn finished_rolled_back_with_task_errors() {
    assert_snapshot!(run_finished(&rolled_back()));
}

#[test]
fn finished_failed_at_verify() {
    let r = RunReport {
        failed_step: Some("verify".into()),
        error: Some(
            "the index of registry.example.com/samsonpe/table:v1.1.0 lacks linux/arm/v7".into(),
        ),
        services: vec![ServiceReport {
            digest: None,
            version_after: None,
            state: ServiceState::Failed,
            ..service(ServiceState::Failed, Some(11), None)
        }],
        ..run(RunState::Failed)
    };
    assert_snapshot!(run_finished(&r));
}

#[test]
fn superseded_comment() {
    let mut r = run(RunState::Superseded);
    r.ref_name = "v1.0.0".into();
    assert_snapshot!(superseded(&r, 43, "v1.1.0"));
}

#[test]
fn commit_statuses() {
    let mut lines = Vec::new();
    let mut refused = run(RunState::Refused);
    refused.error = Some("tag v1.0.1 is older than v1.1.0, which is live in production".into());
    let mut failed = run(RunState::Failed);
    failed.failed_step = Some("manifest".into());
    failed.error = Some("job manifest failed".into());
    for r in [
        run(RunState::Queued),
        run(RunState::Running),
        run(RunState::Succeeded),
        failed,
        rolled_back(),
        run(RunState::Superseded),
        refused,
    ] {
        let (state, description) = commit_status(&r);
        lines.push(format!("{:<9} {description}", state.as_str()));
    }
    assert_snapshot!(lines.join("\n"));
}

#[test]
fn commit_status_description_fits_gitlab() {
    let mut r = run(RunState::Failed);
    r.error = Some("é".repeat(400));
    let (_, description) = commit_status(&r);
    assert_eq!(description.chars().count(), STATUS_DESCRIPTION_MAX);
    assert!(description.ends_with('…'));
}

#[test]
fn mr_replies() {
    assert_snapshot!("mr_accepted", mr_reply_accepted(&mr_run(RunState::Running)));
    assert_snapshot!(
        "mr_finished_success",
        mr_reply_finished(&mr_run(RunState::Succeeded))
    );
    let mut failed = mr_run(RunState::Failed);
    failed.failed_step = Some("deploy-job".into());
    failed.error = Some("GitLab answered 403 Forbidden when playing job deploy".into());
    failed.services[0].state = ServiceState::Failed;
    failed.services[0].version_after = None;
    assert_snapshot!("mr_finished_failed", mr_reply_finished(&failed));
    assert_snapshot!(
        "mr_refused",
        mr_reply_refused(
            "alice",
            "alice is a reporter here; deploying to staging needs developer or higher"
        )
    );
    assert_snapshot!(
        "mr_parse_error_unknown_env",
        mr_reply_parse_error(&ParseError::UnknownEnv {
            given: "stagign".into(),
            suggestion: Some("staging".into()),
        })
    );
    assert_snapshot!(
        "mr_parse_error_extra",
        mr_reply_parse_error(&ParseError::UnexpectedArgs {
            usage: "/deploy [ENV]",
            extra: vec!["now".into(), "please".into()],
        })
    );
}

#[test]
fn help() {
    assert_snapshot!(help_reply(&[
        (
            "production",
            "tag: protected release tags matching v* deploy automatically"
        ),
        (
            "staging",
            "manual: /deploy, hoist deploy, or playing the deploy job (developer or higher)"
        ),
    ]));
}

fn summary(id: u64, state: RunState, r: &str, day: u32) -> RunSummary {
    RunSummary {
        run_id: id,
        state,
        trigger: Trigger::Tag,
        ref_name: r.into(),
        sha: "0123456789abcdef0123456789abcdef01234567".into(),
        requested_by: "alice".into(),
        at: Utc.with_ymd_and_hms(2026, 11, day, 9, 30, 0).single(),
    }
}

#[test]
fn status() {
    let envs = vec![
        EnvStatus {
            env: "production".into(),
            policy: "tag: release tags matching v*".into(),
            live: vec![LiveService {
                name: "tableservice".into(),
                image: "registry.example.com/samsonpe/table".into(),
                tag: "v1.1.0".into(),
                digest: Some(DIGEST.into()),
                since: Utc.with_ymd_and_hms(2026, 11, 27, 18, 5, 0).single(),
                drift: Some("registry.example.com/samsonpe/table:hotfix".into()),
            }],
            running: Some(summary(45, RunState::Running, "v1.2.0", 28)),
            recent: vec![
                summary(44, RunState::Refused, "v1.0.1", 27),
                summary(43, RunState::Succeeded, "v1.1.0", 27),
                summary(40, RunState::RolledBack, "v1.0.9", 26),
            ],
        },
        EnvStatus {
            env: "staging".into(),
            policy: "manual: /deploy".into(),
            live: Vec::new(),
            running: None,
            recent: Vec::new(),
        },
    ];
    assert_snapshot!(status_reply(&envs));
}

#[test]
fn helpers() {
    assert_eq!(short_digest(DIGEST), "sha256:4f1c2d3e4b5a");
    assert_eq!(short_digest("sha256:abc"), "sha256:abc");
    assert_eq!(duration(850), "850 ms");
    assert_eq!(duration(42_000), "42 s");
    assert_eq!(duration(83_400), "1m 23s");
    assert_eq!(duration(7_380_000), "2h 03m");
    assert_eq!(code("a`b\nc"), "`a'b c`");
    assert_eq!(code(""), "(none)");
}

#[test]
fn a_value_with_a_newline_stays_on_its_line() {
    let texts = render_all("v1\n/close\r\n/label ~x");
    for text in &texts {
        assert!(
            text.lines().all(|l| !l.trim_start().starts_with('/')),
            "{text}"
        );
    }
    let refused = mr_reply_refused("alice", "no\n/close");
    assert!(refused.contains("Reason: no /close"), "{refused}");
}

/// Every renderer fed the same hostile value in every user-controlled field.
fn render_all(v: &str) -> Vec<String> {
    let s = v.to_string();
    let svc = ServiceReport {
        name: s.clone(),
        image: s.clone(),
        tag: s.clone(),
        digest: Some(s.clone()),
        platforms: vec![s.clone()],
        version_before: Some(1),
        version_after: None,
        state: ServiceState::Failed,
    };
    let mut out = Vec::new();
    for state in [
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Refused,
    ] {
        let r = RunReport {
            run_id: 1,
            project: s.clone(),
            env: s.clone(),
            trigger: Trigger::MrComment,
            requested_by: s.clone(),
            ref_name: s.clone(),
            sha: s.clone(),
            pipeline_url: Some(s.clone()),
            job_urls: vec![(s.clone(), s.clone())],
            services: vec![svc.clone()],
            state,
            failed_step: Some(s.clone()),
            error: Some(s.clone()),
            task_errors: vec![s.clone()],
            duration_ms: Some(1),
            dashboard_url: Some(s.clone()),
        };
        out.push(run_started(&r));
        out.push(run_finished(&r));
        out.push(superseded(&r, 2, v));
        out.push(commit_status(&r).1);
        out.push(mr_reply_accepted(&r));
        out.push(mr_reply_finished(&r));
    }
    out.push(mr_reply_refused(v, v));
    out.push(mr_reply_parse_error(&ParseError::UnknownEnv {
        given: s.clone(),
        suggestion: Some(s.clone()),
    }));
    out.push(mr_reply_parse_error(&ParseError::UnexpectedArgs {
        usage: "/deploy help",
        extra: vec![s.clone()],
    }));
    out.push(help_reply(&[(v, v)]));
    let sum = RunSummary {
        run_id: 1,
        state: RunState::Failed,
        trigger: Trigger::Cli,
        ref_name: s.clone(),
        sha: s.clone(),
        requested_by: s.clone(),
        at: None,
    };
    out.push(status_reply(&[EnvStatus {
        env: s.clone(),
        policy: s.clone(),
        live: vec![LiveService {
            name: s.clone(),
            image: s.clone(),
            tag: s.clone(),
            digest: Some(s.clone()),
            since: None,
            drift: Some(s.clone()),
        }],
        running: Some(sum.clone()),
        recent: vec![sum],
    }]));
    out
}

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(/[a-z]+|\n|\r|\r\n|\u{2028}|\u{85}|`|```|>|[ \t]|[a-z ]{0,5})*",
    ]
}

proptest! {
    #[test]
    fn no_line_starts_with_user_text(v in hostile()) {
        for text in render_all(&v) {
            for line in text.split(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}', '\u{0b}', '\u{0c}']) {
                prop_assert!(
                    !line.trim_start().starts_with('/'),
                    "line {:?} of {:?}", line, text
                );
            }
        }
    }
}

#[test]
fn doctor_reply_lists_each_check_with_its_fix() {
    use crate::doctor::{Check, Verdict};
    let checks = vec![
        Check {
            name: "gitlab".into(),
            verdict: Verdict::Ok,
            detail: "https://gitlab.example.com answers; the token belongs to @hoist-bot".into(),
            hint: None,
        },
        Check {
            name: "hook acme/shop".into(),
            verdict: Verdict::Fail,
            detail: "hook 4 is temporarily disabled until 2026-11-28T10:00:00Z".into(),
            hint: Some("run hoist hook install --project acme/shop".into()),
        },
        Check {
            name: "protected tags acme/shop".into(),
            verdict: Verdict::Warn,
            detail: "no tag is protected\n/close".into(),
            hint: Some("protect the release tags".into()),
        },
    ];
    let reply = doctor_reply("dave", "acme/shop", &checks);
    assert!(
        reply.lines().all(|l| !l.trim_start().starts_with('/')),
        "{reply}"
    );
    assert_snapshot!(reply);
}
