//! Parser and description tests: one per fixture in `tests/fixtures/`, the timestamp formats, header/object_kind
//! disagreements, and property tests that no input panics.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// Every fixture with the `X-Gitlab-Event` GitLab sends it under.
const FIXTURES: &[(&str, &str, &[u8])] = &[
    (
        "pipeline_tag_manual.json",
        "Pipeline Hook",
        include_bytes!("../../tests/fixtures/pipeline_tag_manual.json"),
    ),
    (
        "pipeline_branch_running.json",
        "Pipeline Hook",
        include_bytes!("../../tests/fixtures/pipeline_branch_running.json"),
    ),
    (
        "pipeline_mr.json",
        "Pipeline Hook",
        include_bytes!("../../tests/fixtures/pipeline_mr.json"),
    ),
    (
        "pipeline_old_timestamp.json",
        "Pipeline Hook",
        include_bytes!("../../tests/fixtures/pipeline_old_timestamp.json"),
    ),
    (
        "tag_push.json",
        "Tag Push Hook",
        include_bytes!("../../tests/fixtures/tag_push.json"),
    ),
    (
        "tag_push_annotated.json",
        "Tag Push Hook",
        include_bytes!("../../tests/fixtures/tag_push_annotated.json"),
    ),
    (
        "tag_push_deleted.json",
        "Tag Push Hook",
        include_bytes!("../../tests/fixtures/tag_push_deleted.json"),
    ),
    (
        "note_mr_create.json",
        "Note Hook",
        include_bytes!("../../tests/fixtures/note_mr_create.json"),
    ),
    (
        "note_mr_update.json",
        "Note Hook",
        include_bytes!("../../tests/fixtures/note_mr_update.json"),
    ),
    (
        "note_mr_old_no_action.json",
        "Note Hook",
        include_bytes!("../../tests/fixtures/note_mr_old_no_action.json"),
    ),
    (
        "note_confidential.json",
        "Confidential Note Hook",
        include_bytes!("../../tests/fixtures/note_confidential.json"),
    ),
    (
        "note_commit.json",
        "Note Hook",
        include_bytes!("../../tests/fixtures/note_commit.json"),
    ),
    (
        "job_manifest_success.json",
        "Job Hook",
        include_bytes!("../../tests/fixtures/job_manifest_success.json"),
    ),
    (
        "job_deploy_manual.json",
        "Job Hook",
        include_bytes!("../../tests/fixtures/job_deploy_manual.json"),
    ),
];

/// Every header the property tests try, used or not.
const HEADERS: &[&str] = &[
    "Pipeline Hook",
    "Tag Push Hook",
    "Note Hook",
    "Confidential Note Hook",
    "Job Hook",
    "Push Hook",
    "Merge Request Hook",
    "System Hook",
    "",
    "pipeline hook",
    "\u{0}\u{202e}Ω",
];

const TAG_SHA: &str = "abc12345e8f1c0d9b7a6f5e4d3c2b1a099999999";
const TAG_OBJECT: &str = "7f3e9a1c0b2d4e6f8a0c1e3b5d7f9a1c22222222";
const MAIN_SHA: &str = "e4c9d8a7b6f5e4d3c2b1a0f9e8d7c6b533333333";
const MR_SHA: &str = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d44444444";

fn fixture(name: &str) -> (&'static str, &'static [u8]) {
    let (_, header, body) = FIXTURES
        .iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no fixture {name}"));
    (*header, *body)
}

fn load(name: &str) -> Event {
    let (header, body) = fixture(name);
    parse(header, body).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn said(event: &Event) -> String {
    describe(event, "manifest", "deploy")
}

fn utc(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn pipeline(event: &Event) -> &PipelineEvent {
    match event {
        Event::Pipeline(p) => p,
        other => panic!("expected a pipeline, got {:?}", other.kind()),
    }
}

fn tag_push(event: &Event) -> &TagPushEvent {
    match event {
        Event::TagPush(t) => t,
        other => panic!("expected a tag push, got {:?}", other.kind()),
    }
}

fn note(event: &Event) -> &NoteEvent {
    match event {
        Event::Note(n) => n,
        other => panic!("expected a note, got {:?}", other.kind()),
    }
}

fn job(event: &Event) -> &JobEvent {
    match event {
        Event::Job(j) => j,
        other => panic!("expected a job, got {:?}", other.kind()),
    }
}

/// A fixture's JSON, edited, re-serialized.
fn edited(name: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let (_, body) = fixture(name);
    let mut value: Value = serde_json::from_slice(body).expect("fixture is JSON");
    edit(&mut value);
    serde_json::to_vec(&value).expect("serializable")
}

#[test]
fn every_fixture_parses_to_its_kind_and_names_the_project() {
    for (name, header, body) in FIXTURES {
        let event = parse(header, body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            event.kind(),
            EventKind::from_header(header).expect("used header"),
            "{name}"
        );
        assert_eq!(event.project_id(), Some(ProjectId(101)), "{name}");
        assert_eq!(event.project_path(), Some("acme/shop"), "{name}");
        assert!(is_used(header), "{name}");
    }
}

#[test]
fn pipeline_tag_manual() {
    let (_, body) = fixture("pipeline_tag_manual.json");
    assert!(
        (7 * 1024..=9 * 1024).contains(&body.len()),
        "the benchmark posts an ~8 KB body, this one is {} bytes",
        body.len()
    );
    let event = load("pipeline_tag_manual.json");
    let p = pipeline(&event);
    let a = &p.object_attributes;
    assert_eq!(a.id, PipelineId(42));
    assert_eq!(a.iid, Some(12));
    assert_eq!(a.git_ref, "v1.2.0");
    assert!(a.tag);
    assert_eq!(a.sha.as_str(), TAG_SHA);
    assert!(a.before_sha.as_ref().is_some_and(CommitSha::is_zero));
    assert_eq!(a.source, "push");
    assert_eq!(a.status, Status::Manual);
    assert_eq!(a.detailed_status.as_deref(), Some("manual"));
    assert_eq!(a.stages, ["build", "test", "manifest", "deploy"]);
    assert_eq!(
        a.created_at.as_ref().and_then(Timestamp::utc),
        Some(utc("2026-11-20T14:02:11Z"))
    );
    assert_eq!(a.finished_at, None);
    assert_eq!(
        a.url.as_deref(),
        Some("https://gitlab.acme.example/acme/shop/-/pipelines/42")
    );
    assert_eq!(p.merge_request, None);
    assert_eq!(p.user.as_ref().map(|u| u.username.as_str()), Some("alice"));
    assert_eq!(p.project.id, ProjectId(101));
    assert_eq!(p.project.web_url, "https://gitlab.acme.example/acme/shop");
    assert_eq!(p.project.default_branch.as_deref(), Some("main"));
    assert_eq!(
        p.commit.as_ref().map(|c| c.title.as_str()),
        Some("Release 1.2.0")
    );
    assert_eq!(p.builds.len(), 7);

    let build = p.job("build-arm64v8").expect("build job");
    assert_eq!(
        (build.id, &build.status, build.manual),
        (JobId(702), &Status::Success, false)
    );
    let manifest = p.job("manifest").expect("manifest job");
    assert_eq!(manifest.id, JobId(705));
    assert_eq!(manifest.status, Status::Manual);
    assert_eq!(manifest.when.as_deref(), Some("manual"));
    assert!(manifest.manual && !manifest.allow_failure);
    assert!(manifest.environment.is_none());
    assert!(
        p.earlier_stages_succeeded(manifest),
        "build and test passed (the scan may fail)"
    );
    let deploy = p.job("deploy").expect("deploy job");
    assert_eq!(deploy.status, Status::Manual);
    let env = deploy
        .environment
        .as_ref()
        .expect("deploy has an environment");
    assert_eq!(
        (env.name.as_str(), env.action.as_deref()),
        ("production", Some("start"))
    );

    assert_eq!(
        said(&event),
        "pipeline 42 for tag v1.2.0: manifest job waits in manual"
    );
    assert_eq!(
        describe(&event, "", "deploy"),
        "pipeline 42 for tag v1.2.0: deploy job waits in manual"
    );
    assert_eq!(
        describe(&event, "", ""),
        "pipeline 42 for tag v1.2.0: manual"
    );
}

#[test]
fn pipeline_branch_running() {
    let event = load("pipeline_branch_running.json");
    let p = pipeline(&event);
    let a = &p.object_attributes;
    assert_eq!(
        (a.id, a.git_ref.as_str(), a.tag),
        (PipelineId(43), "main", false)
    );
    assert_eq!(a.sha.as_str(), MAIN_SHA);
    assert_eq!(a.status, Status::Running);
    assert_eq!(
        a.created_at.as_ref().and_then(Timestamp::utc),
        Some(utc("2026-11-21T09:14:01.412Z"))
    );
    let manifest = p.job("manifest").expect("manifest job");
    assert_eq!(manifest.status, Status::Created);
    assert!(!p.earlier_stages_succeeded(manifest), "a build still runs");
    assert_eq!(said(&event), "pipeline 43 on main: running");
}

#[test]
fn pipeline_mr() {
    let event = load("pipeline_mr.json");
    let p = pipeline(&event);
    assert_eq!(p.object_attributes.id, PipelineId(44));
    assert_eq!(p.object_attributes.source, "merge_request_event");
    assert_eq!(p.object_attributes.status, Status::Success);
    assert_eq!(
        p.object_attributes
            .finished_at
            .as_ref()
            .and_then(Timestamp::utc),
        Some(utc("2026-11-21T10:08:40Z"))
    );
    let mr = p.merge_request.as_ref().expect("an MR pipeline");
    assert_eq!((mr.id, mr.iid), (905, 5));
    assert_eq!(mr.source_branch, "feature/basket");
    assert_eq!(mr.target_branch, "main");
    assert_eq!(mr.source_project_id, Some(ProjectId(101)));
    assert_eq!(mr.target_project_id, Some(ProjectId(101)));
    assert_eq!(mr.state, "opened");
    assert_eq!(p.object_attributes.sha.as_str(), MR_SHA);
    assert_eq!(
        said(&event),
        "pipeline 44 for !5 on feature/basket: success"
    );
}

#[test]
fn pipeline_old_timestamp() {
    let event = load("pipeline_old_timestamp.json");
    let p = pipeline(&event);
    let a = &p.object_attributes;
    assert_eq!(a.id, PipelineId(31));
    assert_eq!(a.iid, None);
    assert_eq!(a.source, "", "absent in old payloads");
    assert_eq!(a.detailed_status, None);
    let created = a.created_at.as_ref().expect("created_at");
    assert_eq!(created.raw(), "2016-08-12 15:23:28 UTC");
    assert_eq!(created.utc(), Some(utc("2016-08-12T15:23:28Z")));
    assert_eq!(
        a.finished_at.as_ref().and_then(Timestamp::utc),
        Some(utc("2016-08-12T15:26:29Z"))
    );
    assert_eq!(
        p.user.as_ref().map(|u| u.id),
        Some(UserId(0)),
        "old users carry no id"
    );
    let production = p.job("production").expect("production job");
    assert_eq!(production.status, Status::Skipped);
    assert!(production.manual && !production.allow_failure);
    assert_eq!(production.environment, None);
    assert_eq!(said(&event), "pipeline 31 on master: success");
}

#[test]
fn tag_push_created() {
    let event = load("tag_push.json");
    let t = tag_push(&event);
    assert_eq!(t.git_ref, "refs/tags/v1.2.0");
    assert_eq!(t.tag_name(), "v1.2.0");
    assert!(t.before.is_zero());
    assert!(!t.is_deleted());
    assert_eq!(t.commit().map(CommitSha::as_str), Some(TAG_SHA));
    assert_eq!(t.ref_protected, Some(true));
    assert_eq!((t.user_id, t.user_username.as_str()), (UserId(17), "alice"));
    assert_eq!(t.project_id, ProjectId(101));
    assert_eq!(said(&event), "tag v1.2.0 created on abc12345");
}

#[test]
fn tag_push_annotated_uses_checkout_sha_never_after() {
    let event = load("tag_push_annotated.json");
    let t = tag_push(&event);
    assert_eq!(t.tag_name(), "v1.3.0-rc.1");
    assert_eq!(t.after.as_str(), TAG_OBJECT, "after names the tag object");
    assert_eq!(t.commit().map(CommitSha::as_str), Some(MAIN_SHA));
    assert_eq!(t.ref_protected, Some(false));
    assert_eq!(
        t.message.as_deref(),
        Some("Release candidate 1 for 1.3.0\n")
    );
    assert_eq!(said(&event), "tag v1.3.0-rc.1 created on e4c9d8a7");
}

#[test]
fn tag_push_deleted() {
    let event = load("tag_push_deleted.json");
    let t = tag_push(&event);
    assert_eq!(t.tag_name(), "v1.1.9");
    assert!(t.after.is_zero());
    assert_eq!(t.checkout_sha, None);
    assert!(t.is_deleted());
    assert_eq!(t.commit(), None);
    assert_eq!(said(&event), "tag v1.1.9 deleted");
}

#[test]
fn tag_push_deleted_is_recognised_by_either_marker() {
    let zero_after = edited("tag_push.json", |v| v["after"] = json!("0".repeat(40)));
    let t = parse("Tag Push Hook", &zero_after).expect("parses");
    assert!(
        tag_push(&t).is_deleted(),
        "after all zeros, checkout_sha still set"
    );
    assert_eq!(tag_push(&t).commit(), None);
    let no_checkout = edited("tag_push.json", |v| v["checkout_sha"] = Value::Null);
    let t = parse("Tag Push Hook", &no_checkout).expect("parses");
    assert!(tag_push(&t).is_deleted(), "checkout_sha null, after set");
    let moved = edited("tag_push.json", |v| v["before"] = json!(MAIN_SHA));
    let t = parse("Tag Push Hook", &moved).expect("parses");
    assert_eq!(said(&t), "tag v1.2.0 moved to abc12345");
}

#[test]
fn note_mr_create() {
    let event = load("note_mr_create.json");
    let n = note(&event);
    let a = &n.object_attributes;
    assert_eq!(a.id, 5521);
    assert_eq!(a.noteable_type, NoteableType::MergeRequest);
    assert_eq!(a.action, Some(NoteAction::Create));
    assert!(!a.system);
    assert!(a.note.starts_with("/deploy staging\n"));
    assert_eq!(n.action(), NoteAction::Create);
    assert!(!n.is_edit() && !n.confidential);
    assert_eq!((n.user.id, n.user.username.as_str()), (UserId(23), "bob"));
    assert_eq!(n.merge_request_iid(), Some(5));
    let mr = n.merge_request.as_ref().expect("merge request");
    assert_eq!(mr.source_branch, "feature/basket");
    assert_eq!(mr.head_pipeline_id, Some(PipelineId(44)));
    assert_eq!(mr.last_commit.as_ref().map(|c| c.id.as_str()), Some(MR_SHA));
    assert_eq!(mr.state, "opened");
    assert!(!mr.is_from_fork());
    assert_eq!(event.kind(), EventKind::Note);
    assert_eq!(said(&event), "note on !5 by bob: /deploy staging");
}

#[test]
fn note_mr_update_is_an_edit() {
    let event = load("note_mr_update.json");
    let n = note(&event);
    assert_eq!(n.action(), NoteAction::Update);
    assert!(n.is_edit());
    assert_eq!(n.object_attributes.note, "/deploy production");
    assert_eq!(
        said(&event),
        "note update on !5 (ignored: edits never trigger)"
    );
}

#[test]
fn note_mr_old_no_action_counts_as_create() {
    let event = load("note_mr_old_no_action.json");
    let n = note(&event);
    assert_eq!(n.object_attributes.action, None);
    assert_eq!(n.event_type, None);
    assert_eq!(n.action(), NoteAction::Create);
    assert!(!n.is_edit());
    assert_eq!(
        n.object_attributes
            .created_at
            .as_ref()
            .and_then(Timestamp::utc),
        Some(utc("2023-06-02T08:11:54Z"))
    );
    assert_eq!(said(&event), "note on !5 by bob: /deploy");
}

#[test]
fn note_confidential() {
    let event = load("note_confidential.json");
    let n = note(&event);
    assert!(n.confidential);
    assert_eq!(event.kind(), EventKind::ConfidentialNote);
    assert_eq!(n.user.username, "alice");
    assert_eq!(
        said(&event),
        "confidential note on !5 by alice: Internal: hold production until the payment provider confirms."
    );
    // The body alone also marks it, whatever the header says.
    let (_, body) = fixture("note_confidential.json");
    let relabelled = parse("Note Hook", body).expect("parses");
    assert!(note(&relabelled).confidential);
    let plain = edited("note_mr_create.json", |_| {});
    assert!(!note(&parse("Note Hook", &plain).expect("parses")).confidential);
    assert!(note(&parse("Confidential Note Hook", &plain).expect("parses")).confidential);
}

#[test]
fn note_commit() {
    let event = load("note_commit.json");
    let n = note(&event);
    assert_eq!(n.object_attributes.noteable_type, NoteableType::Commit);
    assert_eq!(
        n.object_attributes
            .commit_id
            .as_ref()
            .map(CommitSha::as_str),
        Some(TAG_SHA)
    );
    assert_eq!(n.merge_request, None);
    assert_eq!(n.merge_request_iid(), None);
    assert_eq!(n.commit.as_ref().map(|c| c.id.as_str()), Some(TAG_SHA));
    assert_eq!(
        said(&event),
        "note on commit abc12345 by alice: Looks good for the Pi 3s too 👍"
    );
}

#[test]
fn job_manifest_success() {
    let event = load("job_manifest_success.json");
    let j = job(&event);
    assert_eq!(j.build_id, JobId(705));
    assert_eq!(
        (j.build_name.as_str(), j.build_stage.as_str()),
        ("manifest", "manifest")
    );
    assert_eq!(j.build_status, Status::Success);
    assert!(j.build_status.is_finished());
    assert!(!j.build_allow_failure);
    assert_eq!(j.pipeline_id, PipelineId(42));
    assert_eq!((j.git_ref.as_str(), j.tag), ("v1.2.0", true));
    assert_eq!(j.sha.as_str(), TAG_SHA);
    assert_eq!(j.project_id, ProjectId(101));
    assert_eq!(j.user.as_ref().map(|u| u.username.as_str()), Some("alice"));
    assert_eq!(j.environment, None);
    assert_eq!(
        j.build_created_at.as_ref().and_then(Timestamp::utc),
        Some(utc("2026-11-20T14:02:11Z"))
    );
    let started = j.build_started_at.as_ref().expect("started");
    assert_eq!(started.raw(), "2026-11-20 15:20:02 +0100");
    assert_eq!(started.utc(), Some(utc("2026-11-20T14:20:02Z")));
    assert_eq!(said(&event), "job 705 manifest (pipeline 42): success");
}

#[test]
fn job_deploy_manual() {
    let event = load("job_deploy_manual.json");
    let j = job(&event);
    assert_eq!(j.build_id, JobId(706));
    assert_eq!(j.build_status, Status::Manual);
    assert!(!j.build_status.is_finished());
    assert_eq!(j.build_started_at, None);
    let env = j.environment.as_ref().expect("environment");
    assert_eq!(env.name, "production");
    assert_eq!(env.deployment_tier.as_deref(), Some("production"));
    assert_eq!(said(&event), "job 706 deploy (pipeline 42): manual");
}

#[test]
fn timestamp_formats() {
    let table: &[(&str, Option<&str>)] = &[
        ("2016-08-12 15:23:28 UTC", Some("2016-08-12T15:23:28Z")),
        (
            "2016-08-12 15:23:28.250 UTC",
            Some("2016-08-12T15:23:28.25Z"),
        ),
        ("2016-08-12 15:23:28", None),
        ("2021-04-28 21:50:00 +0200", Some("2021-04-28T19:50:00Z")),
        ("2021-04-28 21:50:00 -0700", Some("2021-04-29T04:50:00Z")),
        ("2021-04-28 21:50:00 +02:00", Some("2021-04-28T19:50:00Z")),
        ("2021-04-28T21:50:00Z", Some("2021-04-28T21:50:00Z")),
        ("2021-04-28T21:50:00.123Z", Some("2021-04-28T21:50:00.123Z")),
        (
            "2021-04-28T21:50:00.123456789Z",
            Some("2021-04-28T21:50:00.123456789Z"),
        ),
        ("2021-04-28T21:50:00+02:00", Some("2021-04-28T19:50:00Z")),
        (
            "2021-04-28T21:50:00.5-03:30",
            Some("2021-04-29T01:20:00.5Z"),
        ),
        ("2021-04-28T21:50:00+0200", Some("2021-04-28T19:50:00Z")),
        ("2021-04-28 21:50:00Z", Some("2021-04-28T21:50:00Z")),
        ("  2021-04-28T21:50:00Z  ", Some("2021-04-28T21:50:00Z")),
        ("", None),
        ("yesterday", None),
        ("2021-13-45 99:00:00 UTC", None),
        ("2021-04-28", None),
        ("2021-04-28T21:50:00 CEST", None),
    ];
    for (raw, expected) in table {
        let t = Timestamp::parse(raw);
        assert_eq!(t.raw(), *raw);
        assert_eq!(t.utc(), expected.map(utc), "{raw:?}");
    }
}

#[test]
fn an_unreadable_timestamp_never_fails_the_event() {
    for created_at in [
        json!("not a time"),
        json!(1_700_000_000),
        json!(-5),
        json!(1.5),
        json!({"x": [1]}),
        json!([]),
        json!(true),
    ] {
        let body = edited("pipeline_tag_manual.json", |v| {
            v["object_attributes"]["created_at"] = created_at.clone();
            v["builds"][0]["started_at"] = created_at.clone();
        });
        let event = parse("Pipeline Hook", &body).unwrap_or_else(|e| panic!("{created_at}: {e}"));
        let t = pipeline(&event)
            .object_attributes
            .created_at
            .clone()
            .expect("present");
        if created_at == json!("not a time") {
            assert_eq!((t.raw(), t.utc()), ("not a time", None));
        }
        if created_at == json!(1_700_000_000) {
            assert_eq!(
                t.utc(),
                Some(utc("2023-11-14T22:13:20Z")),
                "integers are Unix seconds"
            );
        }
    }
}

/// A job's user, runner and timestamps are skipped unread: whatever GitLab puts there,
/// the jobs the policy reads come through.
#[test]
fn a_jobs_unread_fields_never_fail_the_event() {
    let body = edited("pipeline_tag_manual.json", |v| {
        v["builds"][0]["user"] = json!(5);
        v["builds"][0]["runner"] = json!("not an object");
        v["builds"][0]["started_at"] = json!({"x": [1]});
        v["builds"][0]["finished_at"] = json!([true]);
    });
    let event = parse("Pipeline Hook", &body).expect("parses");
    let p = pipeline(&event);
    assert_eq!(p.builds.len(), 7);
    assert_eq!(p.builds[0].status, Status::Success);
    assert_eq!(
        said(&event),
        "pipeline 42 for tag v1.2.0: manifest job waits in manual"
    );
}

#[test]
fn header_and_object_kind_must_agree() {
    // Dispatch is on the header; a body whose object_kind says otherwise is mislabelled and refused,
    // whether or not it happens to fit the header's shape.
    let cases = [
        ("Pipeline Hook", "tag_push.json", "tag_push"),
        ("Job Hook", "pipeline_tag_manual.json", "pipeline"),
        ("Note Hook", "job_manifest_success.json", "build"),
        ("Tag Push Hook", "note_mr_create.json", "note"),
        ("Confidential Note Hook", "pipeline_mr.json", "pipeline"),
    ];
    for (header, name, found) in cases {
        let (_, body) = fixture(name);
        assert_eq!(
            parse(header, body),
            Err(ParseError::KindMismatch {
                header: header.to_owned(),
                object_kind: found.to_owned(),
            }),
            "{header} with {name}"
        );
    }
}

#[test]
fn header_is_matched_without_regard_to_case_or_padding() {
    let (_, body) = fixture("tag_push.json");
    let event = parse("  tag push HOOK ", body).expect("parses");
    assert_eq!(event.kind(), EventKind::TagPush);
    assert!(is_used("job hook"));
}

#[test]
fn a_body_without_object_kind_trusts_the_header() {
    let body = br#"{"object_attributes": {"id": 5, "status": "pending"}}"#;
    let event = parse("Pipeline Hook", body).expect("parses");
    assert_eq!(pipeline(&event).object_attributes.id, PipelineId(5));
    assert_eq!(event.project_id(), None);
    assert_eq!(event.project_path(), None);
    assert_eq!(said(&event), "pipeline 5 on ?: pending");
}

#[test]
fn an_empty_header_falls_back_on_object_kind() {
    let (_, body) = fixture("job_deploy_manual.json");
    assert_eq!(parse("", body).map(|e| e.kind()), Ok(EventKind::Job));
    let (_, body) = fixture("note_confidential.json");
    assert_eq!(
        parse(" ", body).map(|e| e.kind()),
        Ok(EventKind::ConfidentialNote)
    );
    assert_eq!(
        parse("", br#"{"object_kind": "push"}"#),
        Err(ParseError::UnknownKind)
    );
    assert_eq!(
        parse("", br#"{"object_kind": 7}"#),
        Err(ParseError::UnknownKind)
    );
    assert_eq!(parse("", b"{}"), Err(ParseError::UnknownKind));
    assert!(matches!(
        parse("", b"nope"),
        Err(ParseError::NotJson { .. })
    ));
}

#[test]
fn unused_headers_are_other_even_with_a_familiar_body() {
    let (_, body) = fixture("tag_push.json");
    for header in ["System Hook", "Push Hook", "Merge Request Hook"] {
        let event = parse(header, body).expect("never fails");
        assert_eq!(
            event,
            Event::Other {
                event: header.to_owned()
            }
        );
        assert_eq!(event.kind(), EventKind::Other);
        assert_eq!(event.project_id(), None);
        assert!(!is_used(header));
    }
    let push = parse("Push Hook", b"not even json").expect("the body is not read");
    assert_eq!(said(&push), "event Push Hook (not used by hoist)");
}

#[test]
fn is_used_lists_exactly_the_hooks_hoist_reads() {
    for header in [
        "Pipeline Hook",
        "Tag Push Hook",
        "Note Hook",
        "Confidential Note Hook",
        "Job Hook",
    ] {
        assert!(is_used(header), "{header}");
    }
    for header in [
        "Push Hook",
        "Merge Request Hook",
        "Issue Hook",
        "Deployment Hook",
        "Release Hook",
        "System Hook",
        "",
        "Pipeline",
    ] {
        assert!(!is_used(header), "{header}");
    }
}

#[test]
fn errors_say_where_but_never_quote_the_body() {
    let secret = "glpat-SECRET-value-123";
    let body = edited("pipeline_tag_manual.json", |v| {
        v["builds"][1]["id"] = json!(secret)
    });
    let err = parse("Pipeline Hook", &body).expect_err("an id must be a number");
    assert_eq!(
        err,
        ParseError::InvalidField {
            kind: EventKind::Pipeline,
            path: "builds[1].id".to_owned(),
            expected: "u64".to_owned(),
        }
    );
    let text = err.to_string();
    assert!(!text.contains(secret), "{text}");
    assert_eq!(
        text,
        "the pipeline payload has a field of the wrong type at builds[1].id: expected u64"
    );

    let body = format!(
        r#"{{"object_kind": "pipeline", "object_attributes": {{"tag": "{secret}, expected anything"}}}}"#
    );
    let text = parse("Pipeline Hook", body.as_bytes())
        .expect_err("tag is a bool")
        .to_string();
    assert!(!text.contains(secret), "{text}");
    assert!(
        text.ends_with("at object_attributes.tag: expected a boolean"),
        "{text}"
    );

    let long_kind = format!(r#"{{"object_kind": "{}"}}"#, "x".repeat(500));
    let text = parse("Pipeline Hook", long_kind.as_bytes())
        .expect_err("mismatch")
        .to_string();
    assert!(text.len() < 150, "{text}");

    let text = parse("Note Hook", format!("{{\"note\": \"{secret}").as_bytes())
        .expect_err("truncated")
        .to_string();
    assert!(text.starts_with("the body is not valid JSON"), "{text}");
    assert!(!text.contains(secret), "{text}");
}

#[test]
fn malformed_bodies_are_errors() {
    let not_json = |body: &[u8]| {
        matches!(
            parse("Pipeline Hook", body),
            Err(ParseError::NotJson { .. })
        )
    };
    assert!(not_json(b""));
    assert!(not_json(b"{"));
    assert!(not_json(b"{} trailing"));
    assert!(not_json(&[0xff, 0xfe, 0x00]));
    assert!(
        not_json("{\"object_attributes\": {\"ref\": \"\u{0}\"}}".as_bytes()),
        "raw control character in a string"
    );
    for body in [&b"[1, 2]"[..], b"42", b"\"pipeline\"", b"null", b"true"] {
        assert_eq!(
            parse("Job Hook", body),
            Err(ParseError::NotAnObject {
                kind: EventKind::Job
            }),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn deeply_nested_bodies_neither_overflow_nor_fail_needlessly() {
    let depth = 100_000;
    let arrays = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    assert_eq!(
        parse("Pipeline Hook", arrays.as_bytes()),
        Err(ParseError::NotAnObject {
            kind: EventKind::Pipeline
        })
    );
    // Where hoist reads the value as JSON, serde_json's recursion limit refuses it.
    let as_kind = format!("{{\"object_kind\": {arrays}}}");
    assert!(matches!(
        parse("", as_kind.as_bytes()),
        Err(ParseError::NotJson { .. })
    ));
    // Where it does not (unknown fields, a timestamp's odd value) the value is skipped, without recursion.
    for body in [
        objects.clone(),
        format!("{{\"unknown\": {arrays}}}"),
        format!("{{\"project\": {objects}}}"),
        format!("{{\"object_attributes\": {{\"variables\": {arrays}, \"created_at\": {arrays}}}}}"),
    ] {
        assert!(parse("Pipeline Hook", body.as_bytes()).is_ok());
    }
}

#[test]
fn nulls_and_missing_fields_become_defaults() {
    let body = br#"{
        "object_kind": "pipeline",
        "object_attributes": {"id": null, "ref": null, "tag": null, "sha": null, "status": null, "stages": null},
        "merge_request": null, "user": null, "project": null, "commit": null, "builds": [null, {}]
    }"#;
    let event = parse("Pipeline Hook", body);
    // A null build is not a build: that one is a type error, reported with its place.
    assert!(
        matches!(event, Err(ParseError::InvalidField { ref path, .. }) if path == "builds[0]"),
        "{event:?}"
    );
    let body = br#"{
        "object_kind": "pipeline",
        "object_attributes": {"id": null, "ref": null, "tag": null, "sha": null, "status": null, "stages": null},
        "merge_request": null, "user": null, "project": null, "commit": null, "builds": [{}]
    }"#;
    let event = parse("Pipeline Hook", body).expect("nulls are tolerated");
    let p = pipeline(&event);
    assert_eq!(p.object_attributes, PipelineAttributes::default());
    assert_eq!(p.builds, [Build::default()]);
    assert_eq!(said(&event), "pipeline 0 on ?: status unknown");
    for (header, body) in [
        ("Tag Push Hook", &b"{}"[..]),
        (
            "Note Hook",
            b"{\"object_attributes\": null, \"user\": null}",
        ),
        (
            "Job Hook",
            b"{\"build_status\": null, \"environment\": null}",
        ),
    ] {
        let event = parse(header, body).unwrap_or_else(|e| panic!("{header}: {e}"));
        assert_eq!(event.project_id(), None);
        let _ = said(&event);
    }
}

#[test]
fn unknown_values_are_kept_not_rejected() {
    let body = edited("pipeline_branch_running.json", |v| {
        v["object_attributes"]["status"] = json!("teleporting");
        v["builds"][0]["status"] = json!("quantum");
    });
    let event = parse("Pipeline Hook", &body).expect("parses");
    let p = pipeline(&event);
    assert_eq!(
        p.object_attributes.status,
        Status::Other("teleporting".to_owned())
    );
    assert_eq!(p.builds[0].status.as_str(), "quantum");
    assert_eq!(said(&event), "pipeline 43 on main: teleporting");
    let body = edited("note_mr_create.json", |v| {
        v["object_attributes"]["action"] = json!("delete");
        v["object_attributes"]["noteable_type"] = json!("Epic");
    });
    let event = parse("Note Hook", &body).expect("parses");
    assert_eq!(
        note(&event).action(),
        NoteAction::Other("delete".to_owned())
    );
    assert!(
        note(&event).is_edit(),
        "anything but a creation never triggers"
    );
    assert_eq!(
        said(&event),
        "note delete on Epic (ignored: edits never trigger)"
    );
}

#[test]
fn describe_waits_for_deploy_only_after_manifest() {
    let deploy_waits = edited("pipeline_tag_manual.json", |v| {
        for b in v["builds"].as_array_mut().expect("builds") {
            if b["name"] == "manifest" {
                b["status"] = json!("success");
            }
        }
    });
    let event = parse("Pipeline Hook", &deploy_waits).expect("parses");
    assert_eq!(
        said(&event),
        "pipeline 42 for tag v1.2.0: deploy job waits in manual"
    );
    let manifest_failed = edited("pipeline_tag_manual.json", |v| {
        v["object_attributes"]["status"] = json!("failed");
        for b in v["builds"].as_array_mut().expect("builds") {
            if b["name"] == "manifest" {
                b["status"] = json!("failed");
            }
        }
    });
    let event = parse("Pipeline Hook", &manifest_failed).expect("parses");
    assert_eq!(said(&event), "pipeline 42 for tag v1.2.0: failed");
    let tag_manual = load("pipeline_tag_manual.json");
    assert_eq!(
        describe(&tag_manual, "docker-manifest", "release"),
        "pipeline 42 for tag v1.2.0: manual",
        "jobs named otherwise in hoist.toml are not waited for"
    );
}

#[test]
fn describe_notes_first_line_cut_and_cleaned() {
    let long = format!("{}\nsecond line", "ab".repeat(100));
    let body = edited("note_mr_create.json", |v| {
        v["object_attributes"]["note"] = json!(long)
    });
    let line = said(&parse("Note Hook", &body).expect("parses"));
    assert_eq!(line, format!("note on !5 by bob: {}…", "ab".repeat(40)));
    let body = edited("note_mr_create.json", |v| {
        v["object_attributes"]["note"] = json!("\n\n  /deploy\u{1b}[31m \u{202e}staging\r\nmore");
        v["user"]["username"] = json!("mallory\u{7}");
    });
    let line = said(&parse("Note Hook", &body).expect("parses"));
    assert_eq!(line, "note on !5 by mallory : /deploy [31m  staging");
    let body = edited("note_mr_create.json", |v| {
        v["object_attributes"]["system"] = json!(true)
    });
    let line = said(&parse("Note Hook", &body).expect("parses"));
    assert!(line.starts_with("system note on !5 by bob: "), "{line}");
    let body = edited("note_mr_create.json", |v| {
        v["object_attributes"]["note"] = json!("é".repeat(81))
    });
    let line = said(&parse("Note Hook", &body).expect("parses"));
    assert!(
        line.ends_with(&format!("{}…", "é".repeat(80))),
        "cut on characters, not bytes"
    );
}

#[test]
fn earlier_stages_tolerate_allowed_failures_only() {
    let edit = |status: &str, allow_failure: bool| {
        let body = edited("pipeline_tag_manual.json", |v| {
            v["builds"][3]["status"] = json!(status);
            v["builds"][3]["allow_failure"] = json!(allow_failure);
        });
        let event = parse("Pipeline Hook", &body).expect("parses");
        let p = pipeline(&event);
        p.earlier_stages_succeeded(p.job("manifest").expect("manifest"))
    };
    assert!(edit("success", false));
    assert!(edit("failed", true));
    assert!(!edit("failed", false));
    assert!(
        edit("manual", true),
        "a non-blocking manual job does not hold the stage"
    );
    assert!(!edit("skipped", false));
    assert!(!edit("running", false));
    let body = edited("pipeline_tag_manual.json", |v| {
        v["object_attributes"]["stages"] = json!([])
    });
    let event = parse("Pipeline Hook", &body).expect("parses");
    let p = pipeline(&event);
    assert!(
        !p.earlier_stages_succeeded(p.job("manifest").expect("manifest")),
        "unknown stage order"
    );
}

#[test]
fn forks_and_unknown_sources_are_forks() {
    let mr = |source: Option<u64>, target: Option<u64>| NoteMergeRequest {
        source_project_id: source.map(ProjectId),
        target_project_id: target.map(ProjectId),
        ..NoteMergeRequest::default()
    };
    assert!(!mr(Some(101), Some(101)).is_from_fork());
    assert!(mr(Some(202), Some(101)).is_from_fork());
    assert!(mr(None, Some(101)).is_from_fork());
}

#[test]
fn ids_display_and_shorten() {
    assert_eq!(ProjectId(101).to_string(), "101");
    assert_eq!(JobId(7).to_string(), "7");
    assert_eq!(PipelineId(42).get(), 42);
    assert_eq!(CommitSha::from(TAG_SHA).short(), "abc12345");
    assert_eq!(CommitSha::from("abc").short(), "abc");
    assert_eq!(CommitSha::from("ééééééééé").short(), "éééééééé");
    assert!(CommitSha::from("").is_zero());
    assert!(!CommitSha::from(TAG_SHA).is_zero());
    assert_eq!(CommitSha::from(TAG_SHA).to_string(), TAG_SHA);
    assert_eq!(EventKind::ConfidentialNote.to_string(), "confidential_note");
    assert_eq!(
        Status::WaitingForResource.to_string(),
        "waiting_for_resource"
    );
}

/// Any JSON value, biased towards the keys and scalars GitLab payloads use.
fn arb_json() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "object_kind",
        "object_attributes",
        "id",
        "iid",
        "ref",
        "tag",
        "sha",
        "before",
        "after",
        "checkout_sha",
        "status",
        "stages",
        "builds",
        "name",
        "stage",
        "manual",
        "when",
        "allow_failure",
        "environment",
        "user",
        "username",
        "project",
        "project_id",
        "path_with_namespace",
        "merge_request",
        "last_commit",
        "head_pipeline_id",
        "note",
        "noteable_type",
        "action",
        "system",
        "created_at",
        "finished_at",
        "build_id",
        "build_status",
        "pipeline_id",
        "event_type",
        "internal",
        "commit",
        "commit_id",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            "pipeline",
            "tag_push",
            "note",
            "build",
            "manual",
            "success",
            "create",
            "update",
            "MergeRequest",
            "Commit",
            "refs/tags/v1.0.0",
            "0000000000000000000000000000000000000000",
            "2016-08-12 15:23:28 UTC",
            "2021-04-28 21:50:00 +0200",
            "2021-04-28T21:50:00Z",
            "",
        ])
        .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    let key = prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), ".{0,8}"];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the value found by walking `path` (child indexes, modulo each container's size).
fn mutate(value: &mut Value, path: &[usize], replacement: Value) {
    let Some((step, rest)) = path.split_first() else {
        *value = replacement;
        return;
    };
    match value {
        Value::Array(items) if !items.is_empty() => {
            let len = items.len();
            mutate(&mut items[step % len], rest, replacement);
        }
        Value::Object(map) if !map.is_empty() => {
            let len = map.len();
            if let Some(child) = map.values_mut().nth(step % len) {
                mutate(child, rest, replacement);
            }
        }
        _ => *value = replacement,
    }
}

/// Parses under every header and, when that works, exercises everything a caller reads.
fn never_panics(body: &[u8]) {
    for header in HEADERS {
        if let Ok(event) = parse(header, body) {
            let _ = (event.kind(), event.project_id(), event.project_path());
            let _ = describe(&event, "manifest", "deploy");
            let _ = describe(&event, "", "");
            match &event {
                Event::TagPush(t) => {
                    let _ = (t.tag_name(), t.is_deleted(), t.commit());
                }
                Event::Pipeline(p) => {
                    for b in &p.builds {
                        let _ = p.earlier_stages_succeeded(b);
                    }
                }
                Event::Note(n) => {
                    let _ = (n.action(), n.merge_request_iid());
                }
                Event::Job(_) | Event::Other { .. } => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        never_panics(&body);
    }

    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        never_panics(&serde_json::to_vec(&value).expect("serializable"));
    }

    #[test]
    fn arbitrary_objects_of_each_kind_never_panic(
        kind in prop::sample::select(vec!["pipeline", "tag_push", "note", "build"]),
        fields in prop::collection::btree_map(".{0,3}|object_attributes|builds|project|merge_request|checkout_sha|after", arb_json(), 0..6),
    ) {
        let mut map: serde_json::Map<String, Value> = fields.into_iter().collect();
        map.insert("object_kind".to_owned(), Value::from(kind));
        never_panics(&serde_json::to_vec(&Value::Object(map)).expect("serializable"));
    }

    #[test]
    fn mutated_fixtures_never_panic(
        index in 0..FIXTURES.len(),
        path in prop::collection::vec(any::<usize>(), 0..6),
        replacement in arb_json(),
    ) {
        let (_, _, body) = FIXTURES[index];
        let mut value: Value = serde_json::from_slice(body).expect("fixture is JSON");
        mutate(&mut value, &path, replacement);
        never_panics(&serde_json::to_vec(&value).expect("serializable"));
    }

    #[test]
    fn cut_fixtures_never_panic(index in 0..FIXTURES.len(), cut in any::<usize>()) {
        let (_, _, body) = FIXTURES[index];
        never_panics(&body[..cut % (body.len() + 1)]);
    }
}
