//! Table tests for the release policy: one row per rule.

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::config::{EnvironmentConfig, Policy, Role};
use crate::events::Status;

fn env(policy: Policy) -> EnvironmentConfig {
    let (name, pattern) = match policy {
        Policy::Tag => ("production", "v*"),
        Policy::Manual => ("staging", "*"),
    };
    EnvironmentConfig {
        name: name.to_string(),
        policy,
        tag_pattern: globset::Glob::new(pattern)
            .expect("test glob")
            .compile_matcher(),
        tag_pattern_text: pattern.to_string(),
        require_protected_tag: true,
        allow_downgrade: false,
        deploy_role: match policy {
            Policy::Tag => Role::Maintainer,
            Policy::Manual => Role::Developer,
        },
        services: Vec::new(),
    }
}

fn day(d: u32) -> Option<DateTime<Utc>> {
    Utc.with_ymd_and_hms(2026, 1, d, 12, 0, 0).single()
}

fn live(tag: &str, created: u32) -> Option<LiveVersion> {
    Some(LiveVersion {
        tag: tag.to_string(),
        created_at: day(created),
    })
}

fn tag(name: &str) -> TagInput {
    TagInput {
        tag: name.to_string(),
        protected: true,
        tag_created_at: day(10),
        ..TagInput::default()
    }
}

/// What a row expects: deploy, a refusal code, or an ignore.
#[derive(Debug, PartialEq)]
enum Want {
    Deploy,
    Refuse(&'static str),
    Ignore,
}

fn want(d: &Decision) -> Want {
    match d {
        Decision::Deploy => Want::Deploy,
        Decision::Refuse(r) => Want::Refuse(r.code.as_str()),
        Decision::Ignore(_) => Want::Ignore,
    }
}

#[test]
fn tag_policy_table() {
    let tag_env = env(Policy::Tag);
    let mut downgrade_ok = env(Policy::Tag);
    downgrade_ok.allow_downgrade = true;
    let mut unprotected_ok = env(Policy::Tag);
    unprotected_ok.require_protected_tag = false;
    let manual_env = env(Policy::Manual);

    let rows: Vec<(&str, &EnvironmentConfig, TagInput, Want)> = vec![
        ("first deploy", &tag_env, tag("v1.0.0"), Want::Deploy),
        (
            "newer minor",
            &tag_env,
            TagInput {
                live: live("v1.0.0", 1),
                ..tag("v1.1.0")
            },
            Want::Deploy,
        ),
        (
            "older patch refused",
            &tag_env,
            TagInput {
                live: live("v1.1.0", 1),
                ..tag("v1.0.1")
            },
            Want::Refuse("downgrade"),
        ),
        (
            "older allowed by config",
            &downgrade_ok,
            TagInput {
                live: live("v1.1.0", 1),
                ..tag("v1.0.1")
            },
            Want::Deploy,
        ),
        (
            "same tag is already live",
            &tag_env,
            TagInput {
                live: live("v1.0.0", 1),
                ..tag("v1.0.0")
            },
            Want::Ignore,
        ),
        (
            "same tag, allow_downgrade, still live",
            &downgrade_ok,
            TagInput {
                live: live("v1.0.0", 1),
                ..tag("v1.0.0")
            },
            Want::Ignore,
        ),
        (
            "semver beats creation time",
            &tag_env,
            TagInput {
                live: live("v1.10.0", 20),
                ..tag("v1.9.0")
            },
            Want::Refuse("downgrade"),
        ),
        (
            "numeric not lexical order",
            &tag_env,
            TagInput {
                live: live("v1.9.0", 20),
                ..tag("v1.10.0")
            },
            Want::Deploy,
        ),
        (
            "prerelease below its release",
            &tag_env,
            TagInput {
                live: live("v2.0.0", 1),
                ..tag("v2.0.0-rc.1")
            },
            Want::Refuse("downgrade"),
        ),
        (
            "release above its prerelease",
            &tag_env,
            TagInput {
                live: live("v2.0.0-rc.2", 1),
                ..tag("v2.0.0")
            },
            Want::Deploy,
        ),
        (
            "prerelease numeric identifiers",
            &tag_env,
            TagInput {
                live: live("v2.0.0-rc.2", 1),
                ..tag("v2.0.0-rc.10")
            },
            Want::Deploy,
        ),
        (
            "build metadata ties go by creation, older",
            &tag_env,
            TagInput {
                live: live("v1.0.0+b", 20),
                ..tag("v1.0.0+a")
            },
            Want::Refuse("downgrade"),
        ),
        (
            "build metadata ties go by creation, newer",
            &tag_env,
            TagInput {
                live: live("v1.0.0+a", 1),
                ..tag("v1.0.0+b")
            },
            Want::Deploy,
        ),
        (
            "non-semver newer by creation",
            &tag_env,
            TagInput {
                live: live("v2026.01", 1),
                ..tag("v2026.02")
            },
            Want::Deploy,
        ),
        (
            "non-semver older by creation",
            &tag_env,
            TagInput {
                live: live("vlatest", 20),
                ..tag("v2026.02")
            },
            Want::Refuse("downgrade"),
        ),
        (
            "one side semver: by creation",
            &tag_env,
            TagInput {
                live: live("v1.0", 1),
                ..tag("v0.9.0")
            },
            Want::Deploy,
        ),
        (
            "unknown creation times deploy",
            &tag_env,
            TagInput {
                live: Some(LiveVersion {
                    tag: "vx".into(),
                    created_at: None,
                }),
                ..tag("vy")
            },
            Want::Deploy,
        ),
        (
            "not protected refused",
            &tag_env,
            TagInput {
                protected: false,
                ..tag("v1.0.0")
            },
            Want::Refuse("not_protected"),
        ),
        (
            "not protected allowed by config",
            &unprotected_ok,
            TagInput {
                protected: false,
                ..tag("v1.0.0")
            },
            Want::Deploy,
        ),
        (
            "pattern mismatch ignored",
            &tag_env,
            tag("release-1"),
            Want::Ignore,
        ),
        (
            "pattern mismatch refused when asked",
            &tag_env,
            TagInput {
                explicit: true,
                ..tag("release-1")
            },
            Want::Refuse("pattern"),
        ),
        (
            "deleted ignored",
            &tag_env,
            TagInput {
                deleted: true,
                ..tag("v1.0.0")
            },
            Want::Ignore,
        ),
        (
            "deleted refused when asked",
            &tag_env,
            TagInput {
                deleted: true,
                explicit: true,
                ..tag("v1.0.0")
            },
            Want::Refuse("deleted"),
        ),
        (
            "manual env ignores tags",
            &manual_env,
            tag("v1.0.0"),
            Want::Ignore,
        ),
        (
            "manual env refuses asked tags",
            &manual_env,
            TagInput {
                explicit: true,
                ..tag("v1.0.0")
            },
            Want::Refuse("policy"),
        ),
        (
            "already live refused when asked",
            &tag_env,
            TagInput {
                explicit: true,
                live: live("v1.0.0", 1),
                ..tag("v1.0.0")
            },
            Want::Refuse("already_live"),
        ),
        (
            "deleted wins over downgrade",
            &tag_env,
            TagInput {
                deleted: true,
                live: live("v9.0.0", 1),
                ..tag("v1.0.0")
            },
            Want::Ignore,
        ),
    ];
    for (name, env, input, expected) in rows {
        assert_eq!(want(&evaluate_tag(env, &input)), expected, "row {name:?}");
    }
}

#[test]
fn tag_refusal_reasons_say_what_to_do() {
    let d = evaluate_tag(
        &env(Policy::Tag),
        &TagInput {
            live: live("v1.1.0", 1),
            ..tag("v1.0.1")
        },
    );
    let Decision::Refuse(r) = d else {
        panic!("expected a refusal, got {d:?}");
    };
    assert_eq!(
        r.reason,
        "tag v1.0.1 is older than v1.1.0, which is live in production; set allow_downgrade = true to allow it"
    );
    let d = evaluate_tag(
        &env(Policy::Tag),
        &TagInput {
            protected: false,
            ..tag("v1.0.0")
        },
    );
    assert!(
        matches!(&d, Decision::Refuse(r) if r.reason.contains("require_protected_tag = false"))
    );
}

fn job(name: &str, stage: &str, status: Status) -> JobView {
    JobView {
        name: name.to_string(),
        stage: stage.to_string(),
        status,
        allow_failure: false,
    }
}

fn allowed(mut j: JobView) -> JobView {
    j.allow_failure = true;
    j
}

#[derive(Debug, PartialEq)]
enum R {
    Ready,
    Done,
    NotYet,
    Never,
}

#[test]
fn pipeline_readiness_table() {
    use Status::*;
    let stages: Vec<String> = ["build", "test", "release", "deploy"]
        .map(String::from)
        .to_vec();
    let ok = |extra: Vec<JobView>, manifest: Status| {
        let mut jobs = vec![
            job("build-arm32", "build", Success),
            job("build-arm64", "build", Success),
            job("unit", "test", Success),
            job("manifest", "release", manifest),
            job("deploy", "deploy", Created),
        ];
        jobs.extend(extra);
        jobs
    };
    let rows: Vec<(&str, Vec<JobView>, &str, &str, R)> = vec![
        (
            "manifest waits, all green",
            ok(vec![], Manual),
            "manifest",
            "deploy",
            R::Ready,
        ),
        (
            "manifest already succeeded",
            ok(vec![], Success),
            "manifest",
            "deploy",
            R::Done,
        ),
        (
            "manifest already running",
            ok(vec![], Running),
            "manifest",
            "deploy",
            R::Never,
        ),
        (
            "manifest pending",
            ok(vec![], Pending),
            "manifest",
            "deploy",
            R::Never,
        ),
        (
            "manifest created: earlier stages run",
            ok(vec![job("lint", "test", Running)], Created),
            "manifest",
            "deploy",
            R::NotYet,
        ),
        (
            "manifest failed",
            ok(vec![], Failed),
            "manifest",
            "deploy",
            R::Never,
        ),
        (
            "manifest skipped",
            ok(vec![], Skipped),
            "manifest",
            "deploy",
            R::Never,
        ),
        (
            "manifest canceled",
            ok(vec![], Canceled),
            "manifest",
            "deploy",
            R::Never,
        ),
        (
            "manifest missing",
            ok(vec![], Manual),
            "images",
            "deploy",
            R::Never,
        ),
        (
            "earlier job failed",
            ok(vec![job("lint", "test", Failed)], Manual),
            "manifest",
            "deploy",
            R::Never,
        ),
        (
            "earlier job failed, allowed",
            ok(vec![allowed(job("lint", "test", Failed))], Manual),
            "manifest",
            "deploy",
            R::Ready,
        ),
        (
            "earlier job skipped",
            ok(vec![job("lint", "test", Skipped)], Manual),
            "manifest",
            "deploy",
            R::Never,
        ),
        (
            "earlier job canceled",
            ok(vec![job("lint", "test", Canceled)], Manual),
            "manifest",
            "deploy",
            R::Never,
        ),
        (
            "earlier job still running",
            ok(vec![job("lint", "test", Running)], Manual),
            "manifest",
            "deploy",
            R::NotYet,
        ),
        (
            "earlier manual job not played",
            ok(vec![job("gate", "test", Manual)], Manual),
            "manifest",
            "deploy",
            R::NotYet,
        ),
        (
            "earlier manual job allowed to fail",
            ok(vec![allowed(job("gate", "test", Manual))], Manual),
            "manifest",
            "deploy",
            R::Ready,
        ),
        (
            "failure beats running",
            ok(
                vec![job("a", "test", Running), job("b", "test", Failed)],
                Manual,
            ),
            "manifest",
            "deploy",
            R::Never,
        ),
        (
            "same-stage job may run",
            ok(vec![job("sbom", "release", Running)], Manual),
            "manifest",
            "deploy",
            R::Ready,
        ),
        (
            "later-stage job may fail",
            ok(vec![job("smoke", "deploy", Failed)], Manual),
            "manifest",
            "deploy",
            R::Ready,
        ),
        (
            "no manifest job: deploy waits",
            ok(vec![], Success)
                .into_iter()
                .map(|mut j| {
                    if j.name == "deploy" {
                        j.status = Manual
                    }
                    j
                })
                .collect(),
            "",
            "deploy",
            R::Ready,
        ),
        (
            "no manifest job: deploy created",
            ok(vec![], Success),
            "",
            "deploy",
            R::NotYet,
        ),
        (
            "manifest stage unknown",
            vec![job("manifest", "elsewhere", Manual)],
            "manifest",
            "deploy",
            R::Never,
        ),
        (
            "no jobs named: all green",
            vec![job("a", "build", Success)],
            "",
            "",
            R::Done,
        ),
        (
            "no jobs named: one running",
            vec![job("a", "build", Running)],
            "",
            "",
            R::NotYet,
        ),
        (
            "scheduled manifest starts by itself",
            ok(vec![], Scheduled),
            "manifest",
            "deploy",
            R::NotYet,
        ),
    ];
    for (name, jobs, manifest, deploy, expected) in rows {
        let got = match pipeline_ready(&jobs, &stages, manifest, deploy) {
            Readiness::Ready {
                manifest_done: false,
            } => R::Ready,
            Readiness::Ready {
                manifest_done: true,
            } => R::Done,
            Readiness::NotYet(_) => R::NotYet,
            Readiness::Never(_) => R::Never,
        };
        assert_eq!(got, expected, "row {name:?}");
    }
}

#[test]
fn pipeline_reasons_name_the_job() {
    let stages = vec!["build".to_string(), "release".to_string()];
    let jobs = vec![
        job("build", "build", Status::Failed),
        job("manifest", "release", Status::Manual),
    ];
    assert_eq!(
        pipeline_ready(&jobs, &stages, "manifest", "deploy"),
        Readiness::Never("job build (stage build) failed in the stages before manifest".into())
    );
}

fn user(name: &str, level: Option<u32>) -> Requester {
    Requester::User {
        username: name.to_string(),
        access_level: level,
    }
}

fn pipeline(jobs: &[(&str, Status)]) -> Option<PipelineView> {
    Some(PipelineView {
        id: 77,
        jobs: jobs
            .iter()
            .map(|(n, s)| job(n, "release", s.clone()))
            .collect(),
    })
}

fn request(requester: Requester) -> ManualInput {
    ManualInput {
        requester,
        from_fork: false,
        sha: "abc12345deadbeefabc12345deadbeefabc12345".to_string(),
        pipeline: pipeline(&[("manifest", Status::Manual), ("deploy", Status::Created)]),
        required_jobs: vec!["manifest".to_string(), "deploy".to_string()],
    }
}

#[test]
fn manual_policy_table() {
    let staging = env(Policy::Manual);
    let production = env(Policy::Tag);
    let mut owners_only = env(Policy::Manual);
    owners_only.deploy_role = Role::Owner;
    let rows: Vec<(&str, &EnvironmentConfig, ManualInput, Want)> = vec![
        (
            "developer deploys",
            &staging,
            request(user("dev", Some(30))),
            Want::Deploy,
        ),
        (
            "maintainer deploys",
            &staging,
            request(user("m", Some(40))),
            Want::Deploy,
        ),
        (
            "owner deploys",
            &staging,
            request(user("o", Some(50))),
            Want::Deploy,
        ),
        (
            "reporter refused",
            &staging,
            request(user("alice", Some(20))),
            Want::Refuse("role"),
        ),
        (
            "guest refused",
            &staging,
            request(user("g", Some(10))),
            Want::Refuse("role"),
        ),
        (
            "minimal access refused",
            &staging,
            request(user("g", Some(5))),
            Want::Refuse("role"),
        ),
        (
            "non-member refused",
            &staging,
            request(user("x", None)),
            Want::Refuse("role"),
        ),
        (
            "maintainer below owner-only",
            &owners_only,
            request(user("m", Some(40))),
            Want::Refuse("role"),
        ),
        (
            "api token skips role",
            &staging,
            request(Requester::ApiToken),
            Want::Deploy,
        ),
        (
            "tag env refused",
            &production,
            request(user("o", Some(50))),
            Want::Refuse("policy"),
        ),
        (
            "tag env before role",
            &production,
            request(user("alice", Some(20))),
            Want::Refuse("policy"),
        ),
        (
            "fork refused",
            &staging,
            ManualInput {
                from_fork: true,
                ..request(user("dev", Some(30)))
            },
            Want::Refuse("fork"),
        ),
        (
            "role before fork",
            &staging,
            ManualInput {
                from_fork: true,
                ..request(user("r", Some(20)))
            },
            Want::Refuse("role"),
        ),
        (
            "no pipeline",
            &staging,
            ManualInput {
                pipeline: None,
                ..request(user("dev", Some(30)))
            },
            Want::Refuse("no_pipeline"),
        ),
        (
            "pipeline without deploy job",
            &staging,
            ManualInput {
                pipeline: pipeline(&[("manifest", Status::Manual)]),
                ..request(user("dev", Some(30)))
            },
            Want::Refuse("no_pipeline"),
        ),
        (
            "manifest already done is fine",
            &staging,
            ManualInput {
                pipeline: pipeline(&[("manifest", Status::Success), ("deploy", Status::Manual)]),
                ..request(user("dev", Some(30)))
            },
            Want::Deploy,
        ),
        (
            "skipped manifest refused",
            &staging,
            ManualInput {
                pipeline: pipeline(&[("manifest", Status::Skipped), ("deploy", Status::Created)]),
                ..request(user("dev", Some(30)))
            },
            Want::Refuse("pipeline_failed"),
        ),
        (
            "no required jobs, any pipeline",
            &staging,
            ManualInput {
                pipeline: pipeline(&[]),
                required_jobs: vec![],
                ..request(user("dev", Some(30)))
            },
            Want::Deploy,
        ),
    ];
    for (name, env, input, expected) in rows {
        assert_eq!(
            want(&evaluate_manual(env, &input)),
            expected,
            "row {name:?}"
        );
    }
}

#[test]
fn manual_refusal_reasons() {
    let staging = env(Policy::Manual);
    let reason = |input: ManualInput, env: &EnvironmentConfig| match evaluate_manual(env, &input) {
        Decision::Refuse(r) => r.reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        reason(request(user("alice", Some(20))), &staging),
        "alice is a reporter here; deploying to staging needs developer or higher"
    );
    assert_eq!(
        reason(request(user("bob", None)), &staging),
        "bob is not a member of this project; deploying to staging needs developer or higher"
    );
    assert_eq!(
        reason(
            ManualInput {
                pipeline: None,
                ..request(user("dev", Some(30)))
            },
            &staging
        ),
        "the head commit abc12345 has no pipeline with the jobs manifest and deploy"
    );
    assert_eq!(
        reason(
            ManualInput {
                pipeline: pipeline(&[("manifest", Status::Manual)]),
                ..request(user("dev", Some(30)))
            },
            &staging
        ),
        "pipeline #77 of the head commit abc12345 has no job deploy (a deploy needs manifest and deploy)"
    );
    assert!(
        reason(request(user("o", Some(50))), &env(Policy::Tag))
            .starts_with("production deploys from release tags only")
    );
    assert!(
        reason(
            ManualInput {
                from_fork: true,
                ..request(user("dev", Some(30)))
            },
            &staging
        )
        .starts_with("merge requests from forks cannot deploy")
    );
}

#[test]
fn refusal_codes_are_distinct() {
    use RefusalCode::*;
    let all = [
        Downgrade,
        NotProtected,
        Pattern,
        Deleted,
        AlreadyLive,
        Role,
        Fork,
        Policy,
        NoPipeline,
        PipelineFailed,
    ];
    let names: std::collections::HashSet<&str> = all.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), all.len());
}

fn project(envs: Vec<EnvironmentConfig>) -> crate::config::ProjectConfig {
    crate::config::ProjectConfig {
        path: "samsonpe/table".to_string(),
        webhook_token: None,
        signing_token: None,
        manifest_job: "manifest".to_string(),
        deploy_job: "deploy".to_string(),
        environments: envs,
    }
}

fn named(mut e: EnvironmentConfig, name: &str) -> EnvironmentConfig {
    e.name = name.to_string();
    e
}

/// (row name, project, env named in the request, resolved env or refusal code)
type EnvRow<'a> = (
    &'a str,
    &'a crate::config::ProjectConfig,
    Option<&'a str>,
    Result<&'a str, &'a str>,
);

#[test]
fn resolve_env_table() {
    let one = project(vec![env(Policy::Tag), env(Policy::Manual)]);
    let two = project(vec![env(Policy::Manual), named(env(Policy::Manual), "qa")]);
    let tags_only = project(vec![env(Policy::Tag)]);
    let rows: Vec<EnvRow> = vec![
        ("default: the only manual env", &one, None, Ok("staging")),
        ("named", &one, Some("production"), Ok("production")),
        ("named unknown", &one, Some("prod"), Err("unknown_env")),
        (
            "several manual envs need a name",
            &two,
            None,
            Err("unknown_env"),
        ),
        ("several manual envs, named", &two, Some("qa"), Ok("qa")),
        ("no manual env", &tags_only, None, Err("policy")),
    ];
    for (name, project, given, expected) in rows {
        let got = resolve_env(project, given)
            .map(|e| e.name.as_str())
            .map_err(|r| r.code.as_str());
        assert_eq!(got, expected, "row {name:?}");
    }
    let Err(r) = resolve_env(&two, None) else {
        panic!("expected a refusal");
    };
    assert_eq!(
        r.reason,
        "samsonpe/table has several manual environments (staging and qa); name one, as in /deploy staging"
    );
}

#[test]
fn policy_descriptions() {
    assert_eq!(
        policy_description(&env(Policy::Tag)),
        "tag: protected release tags matching v* deploy automatically, never backwards"
    );
    assert_eq!(
        policy_description(&env(Policy::Manual)),
        "manual: /deploy staging by a developer or higher, hoist deploy, or playing the deploy job"
    );
}

#[test]
fn job_view_from_a_pipeline_hook_build() {
    let build = crate::events::Build {
        name: "manifest".into(),
        stage: "release".into(),
        status: Status::Manual,
        allow_failure: false,
        ..crate::events::Build::default()
    };
    assert_eq!(
        JobView::from(&build),
        job("manifest", "release", Status::Manual)
    );
}
