//! The fake GitLab behaves like GitLab: jobs move when played, hooks arrive in order with
//! GitLab's headers, faults are injected, and `hoist::gitlab::HttpClient` works against it end to end.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hoist::config::Secret;
use hoist::events::{CommitSha, JobId, PipelineId, Status, UserId};
use hoist::gitlab::{CommitState, GitLab, GitlabError, HookSpec, HttpClient, NoteId, RetryPolicy};
use serde_json::Value;
use support::fake_gitlab::*;
use support::{GITLAB_TOKEN, SIGNING_KEY_RAW, TOKEN, whsec};

/// A webhook as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    headers: HeaderMap,
    raw: Vec<u8>,
    body: Value,
}

impl Got {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    fn event(&self) -> String {
        self.header("x-gitlab-event")
    }
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    answer: Arc<Mutex<u16>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver {
            got: Arc::default(),
            answer: Arc::new(Mutex::new(200)),
        };
        let app = axum::Router::new()
            .fallback(
                |State(r): State<Receiver>, headers: HeaderMap, body: Bytes| async move {
                    let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    r.got.lock().expect("got").push(Got {
                        headers,
                        raw: body.to_vec(),
                        body: parsed,
                    });
                    let code = *r.answer.lock().expect("answer");
                    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
                },
            )
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (r, format!("http://{addr}/hooks/gitlab"))
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("got").clone()
    }

    /// `(event, build name or object status)` per delivery, for order checks.
    fn job_statuses(&self, job: &str) -> Vec<String> {
        self.got()
            .iter()
            .filter(|g| g.event() == "Job Hook" && g.body["build_name"] == job)
            .map(|g| {
                g.body["build_status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }
}

fn client(world: &FakeGitlab) -> HttpClient {
    HttpClient::with_policy(
        &world.url(),
        Secret::new(GITLAB_TOKEN),
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(2),
            total_budget: Duration::from_secs(10),
            timeout: Duration::from_millis(500),
        },
    )
    .expect("client")
}

async fn wait_job(world: &FakeGitlab, pipeline: PipelineId, name: &str, status: &str) {
    world
        .wait_for(|w| w.job(pipeline, name).status == status)
        .await;
    world.flush().await;
}

#[tokio::test]
async fn push_tag_then_play_sends_hooks_in_order_with_gitlab_headers() {
    let world = FakeGitlab::start().await;
    let (rx, url) = Receiver::start().await;
    world.add_hook("acme/shop", &url, HookAuth::token(TOKEN));
    let tag = world.push_tag("acme/shop", "v1.0.0", true).await;

    let got = rx.got();
    let events: Vec<String> = got.iter().map(Got::event).collect();
    assert_eq!(events, ["Tag Push Hook", "Pipeline Hook"]);
    let push = &got[0];
    assert_eq!(push.body["ref"], "refs/tags/v1.0.0");
    assert_eq!(push.body["checkout_sha"], tag.sha.as_str());
    assert_eq!(push.body["ref_protected"], true);
    let pipe = &got[1];
    assert_eq!(pipe.body["object_attributes"]["status"], "manual");
    assert_eq!(pipe.body["object_attributes"]["tag"], true);
    assert_eq!(pipe.body["project"]["path_with_namespace"], "acme/shop");
    let builds = pipe.body["builds"].as_array().expect("builds");
    let status_of = |name: &str| {
        builds
            .iter()
            .find(|b| b["name"] == name)
            .map(|b| b["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(status_of("build-amd64").as_deref(), Some("success"));
    assert_eq!(status_of("manifest").as_deref(), Some("manual"));
    assert_eq!(status_of("deploy").as_deref(), Some("created"));

    for g in &got {
        assert_eq!(g.header("x-gitlab-token"), TOKEN);
        assert_eq!(g.header("user-agent"), "GitLab/19.0.0");
        assert_eq!(g.header("x-gitlab-instance"), world.url());
        assert_eq!(g.header("content-type"), "application/json");
        assert!(!g.header("idempotency-key").is_empty());
        assert!(!g.header("x-gitlab-webhook-uuid").is_empty());
        assert!(!g.header("x-gitlab-event-uuid").is_empty());
        assert!(
            g.header("webhook-signature").is_empty(),
            "no signing token set"
        );
        // The events module reads what the fake sends.
        let parsed = hoist::events::parse(&g.event(), &g.raw);
        assert!(parsed.is_ok(), "{}: {parsed:?}", g.event());
    }
    assert_ne!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key")
    );

    // Play the manifest job through the real client.
    let gl = client(&world);
    let manifest = world.job(tag.pipeline_id, "manifest");
    let played = gl
        .play_job("acme/shop", manifest.id)
        .await
        .expect("manifest played");
    assert_eq!(played.status, Status::Pending);
    wait_job(&world, tag.pipeline_id, "deploy", "manual").await;

    assert_eq!(
        rx.job_statuses("manifest"),
        ["pending", "running", "success"]
    );
    assert_eq!(rx.job_statuses("deploy"), ["manual"]);
    let pipeline_statuses: Vec<String> = rx
        .got()
        .iter()
        .filter(|g| g.event() == "Pipeline Hook")
        .map(|g| {
            g.body["object_attributes"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        pipeline_statuses,
        ["manual", "running", "running", "manual", "manual"],
        "one Pipeline Hook after every job change"
    );
    // Each delivery was answered 200 and is recorded.
    let deliveries = world.deliveries();
    assert_eq!(deliveries.len(), rx.got().len());
    assert!(deliveries.iter().all(|d| d.status == Some(200)));

    // Then deploy; the pipeline ends in success.
    let deploy = world.job(tag.pipeline_id, "deploy");
    gl.play_job("acme/shop", deploy.id)
        .await
        .expect("deploy played");
    wait_job(&world, tag.pipeline_id, "deploy", "success").await;
    assert_eq!(world.pipeline_status(tag.pipeline_id), "success");
    // Every hook the fake sent parses as the event it claims to be.
    for g in rx.got() {
        let parsed = hoist::events::parse(&g.event(), &g.raw);
        assert!(
            !matches!(parsed, Err(_) | Ok(hoist::events::Event::Other { .. })),
            "{}: {parsed:?}",
            g.event()
        );
    }
    // Playing both jobs cost exactly two API calls; hooks told the rest.
    assert_eq!(world.calls("play"), 2);
    assert_eq!(world.call_log().len(), 2, "{:?}", world.call_log());
    let p = gl
        .pipeline("acme/shop", tag.pipeline_id)
        .await
        .expect("pipeline");
    assert_eq!(p.status, Status::Success);
    assert!(p.tag);
    assert_eq!(p.ref_name, "v1.0.0");
}

#[tokio::test]
async fn unplayable_forbidden_and_skipped() {
    let world = FakeGitlab::start().await;
    world.set_job_outcome("manifest", Outcome::Fail);
    let gl = client(&world);
    let tag = world.push_tag("acme/shop", "v2.0.0", true).await;
    let manifest = world.job(tag.pipeline_id, "manifest");
    let deploy = world.job(tag.pipeline_id, "deploy");

    // Not manual yet: deploy waits behind the blocking manifest job.
    let e = gl
        .play_job("acme/shop", deploy.id)
        .await
        .expect_err("created");
    assert!(matches!(e, GitlabError::Unplayable(_)), "{e:?}");

    gl.play_job("acme/shop", manifest.id).await.expect("played");
    let again = gl
        .play_job("acme/shop", manifest.id)
        .await
        .expect_err("running");
    assert!(
        matches!(again, GitlabError::Unplayable(ref m) if m == "400 Bad request - Unplayable Job"),
        "{again:?}"
    );

    wait_job(&world, tag.pipeline_id, "manifest", "failed").await;
    assert_eq!(world.job(tag.pipeline_id, "deploy").status, "skipped");
    assert_eq!(world.pipeline_status(tag.pipeline_id), "failed");
    let e = gl
        .play_job("acme/shop", deploy.id)
        .await
        .expect_err("skipped");
    assert!(matches!(e, GitlabError::Unplayable(_)), "{e:?}");

    // A developer bot may not play on a protected tag; a reporter bot nowhere.
    world.add_member("acme/shop", BOT_USERNAME, DEVELOPER);
    let t2 = world.push_tag("acme/shop", "v2.0.1", true).await;
    let m2 = world.job(t2.pipeline_id, "manifest");
    let e = gl
        .play_job("acme/shop", m2.id)
        .await
        .expect_err("protected");
    assert!(matches!(e, GitlabError::Forbidden(_)), "{e:?}");
    let t3 = world.push_tag("acme/shop", "v2.0.2-rc", false).await;
    world.add_member("acme/shop", BOT_USERNAME, REPORTER);
    let m3 = world.job(t3.pipeline_id, "manifest");
    let e = gl.play_job("acme/shop", m3.id).await.expect_err("reporter");
    assert!(matches!(e, GitlabError::Forbidden(_)), "{e:?}");
    world.add_member("acme/shop", BOT_USERNAME, DEVELOPER);
    gl.play_job("acme/shop", m3.id)
        .await
        .expect("unprotected tag, developer");

    // Unknown job / project.
    let e = gl
        .play_job("acme/shop", JobId(999_999))
        .await
        .expect_err("404");
    assert!(matches!(e, GitlabError::NotFound(_)), "{e:?}");
    let e = gl.job("acme/nope", JobId(1)).await.expect_err("404");
    assert_eq!(e, GitlabError::NotFound("404 Project Not Found".into()));
}

#[tokio::test]
async fn faults_are_injected_and_retried_by_the_client() {
    let world = FakeGitlab::start().await;
    let gl = client(&world);
    let tag = world.push_tag("acme/shop", "v3.0.0", true).await;
    let manifest = world.job(tag.pipeline_id, "manifest");

    world.fault("play", Fault::RateLimited { retry_after: 1 });
    let started = std::time::Instant::now();
    gl.play_job("acme/shop", manifest.id)
        .await
        .expect("played after 429");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert_eq!(world.calls("play"), 2);

    world.fault("comments", Fault::Status(502));
    gl.comment_on_commit(
        "acme/shop",
        &CommitSha::from(tag.sha.as_str()),
        "Deploying v3.0.0",
    )
    .await
    .expect("comment after 502");
    assert_eq!(world.calls("comments"), 2);
    assert_eq!(
        world.commit_comments(&tag.sha),
        ["Deploying v3.0.0"],
        "posted exactly once"
    );

    // A slow answer past the client's timeout: GETs are retried, then Transient.
    for _ in 0..5 {
        world.fault(
            "GET projects/:id/jobs/:id",
            Fault::Delay(Duration::from_millis(800)),
        );
    }
    let e = gl
        .job("acme/shop", manifest.id)
        .await
        .expect_err("too slow");
    assert!(matches!(e, GitlabError::Transient(_)), "{e:?}");
    assert!(!format!("{e:?}").contains(GITLAB_TOKEN));
    assert_eq!(world.calls("GET projects/:id/jobs/:id"), 5);

    // A slow POST is not retried: the comment may have been made.
    world.fault("comments", Fault::Delay(Duration::from_millis(800)));
    let e = gl
        .comment_on_commit("acme/shop", &CommitSha::from(tag.sha.as_str()), "Deployed")
        .await
        .expect_err("answer lost");
    assert!(matches!(e, GitlabError::Transient(_)), "{e:?}");
    assert_eq!(world.calls("comments"), 3);

    // The answer is lost after GitLab made the comment: Transient, and the comment exists once.
    world.fault("comments", Fault::DelayAnswer(Duration::from_millis(800)));
    let e = gl
        .comment_on_commit(
            "acme/shop",
            &CommitSha::from(tag.sha.as_str()),
            "Deployed v3.0.0",
        )
        .await
        .expect_err("answer lost");
    assert!(matches!(e, GitlabError::Transient(_)), "{e:?}");
    assert_eq!(world.calls("comments"), 4);
    let made = world.commit_comments(&tag.sha);
    assert_eq!(
        made.iter().filter(|c| *c == "Deployed v3.0.0").count(),
        1,
        "{made:?}"
    );

    // The wrong token.
    let bad = HttpClient::with_policy(&world.url(), Secret::new("wrong"), RetryPolicy::default())
        .expect("client");
    assert_eq!(bad.current_user().await, Err(GitlabError::Unauthorized));
}

#[tokio::test]
async fn client_end_to_end_against_the_world() {
    let world = FakeGitlab::start().await;
    let (rx, url) = Receiver::start().await;
    let gl = client(&world);

    let me = gl.current_user().await.expect("user");
    assert_eq!(me.username, BOT_USERNAME);

    let tag = world.push_tag("acme/shop", "v1.2.0", true).await;
    let sha = CommitSha::from(tag.sha.as_str());
    let t = gl.tag("acme/shop", "v1.2.0").await.expect("tag");
    assert!(t.protected);
    assert_eq!(t.commit_sha, sha);
    let numeric = tag.project_id.to_string();
    let list = gl
        .pipelines_for_sha(&numeric, &sha)
        .await
        .expect("pipelines");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, tag.pipeline_id);
    let jobs = gl
        .pipeline_jobs("acme/shop", tag.pipeline_id)
        .await
        .expect("jobs");
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names.len(), 4);
    for n in ["build-amd64", "build-arm64", "manifest", "deploy"] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(jobs.iter().all(|j| j.pipeline_id == tag.pipeline_id));

    // Members and roles (effective, a plain map in the fake).
    let dev = world.add_member("acme/shop", "dave", DEVELOPER);
    let rep = world.add_member("acme/shop", "rita", REPORTER);
    let stranger = world.user("sam");
    assert_eq!(gl.member_role("acme/shop", UserId(dev)).await, Ok(Some(30)));
    assert_eq!(gl.member_role("acme/shop", UserId(rep)).await, Ok(Some(20)));
    assert_eq!(
        gl.member_role("acme/shop", UserId(stranger)).await,
        Ok(None)
    );

    // Hooks through the API: create, list, edit.
    let spec = HookSpec {
        token: Some(Secret::new(TOKEN)),
        signing_token: Some(Secret::new(whsec(SIGNING_KEY_RAW))),
        enable_ssl_verification: false,
        ..HookSpec::for_hoist(url.clone())
    };
    let hook = gl
        .create_hook("acme/shop", &spec)
        .await
        .expect("hook created");
    assert!(hook.events.job && hook.events.note && hook.events.pipeline && hook.events.tag_push);
    assert!(hook.events.confidential_note);
    assert_eq!(hook.alert_status.as_deref(), Some("executable"));
    assert_eq!(gl.hooks("acme/shop").await.expect("hooks").len(), 1);
    let edited = gl
        .edit_hook(
            "acme/shop",
            hook.id,
            &HookSpec {
                events: hoist::gitlab::HookEvents {
                    job: false,
                    ..spec.events
                },
                ..spec.clone()
            },
        )
        .await
        .expect("edited");
    assert!(!edited.events.job);
    assert_eq!(
        world.hook_secrets(hook.id.0),
        Some((Some(TOKEN.to_string()), Some(whsec(SIGNING_KEY_RAW))))
    );

    // An MR from a fork, a /deploy comment, the bot's reply and reaction.
    let fork_id = world.fork("acme/shop", "mallory/shop");
    let info = gl.project("mallory/shop").await.expect("fork");
    assert_eq!(info.id.get(), fork_id);
    assert_eq!(info.forked_from.map(|p| p.get()), Some(tag.project_id));
    let shop = gl
        .project(&tag.project_id.to_string())
        .await
        .expect("by id");
    assert_eq!(shop.path_with_namespace, "acme/shop");
    assert!(matches!(
        gl.project("acme/nope").await,
        Err(GitlabError::NotFound(_))
    ));
    let mr = world
        .open_mr("acme/shop", "mallory/shop", "evil", "mallory")
        .await;
    let m = gl.merge_request("acme/shop", mr.iid).await.expect("mr");
    assert!(m.is_from_fork());
    assert_eq!(m.sha, CommitSha::from(mr.sha.as_str()));
    assert_eq!(m.head_pipeline_id, Some(mr.pipeline_id));
    assert_eq!(m.state, "opened");
    let asked = world
        .comment_on_mr(mr.iid, "mallory", "/deploy staging")
        .await;
    gl.react("acme/shop", mr.iid, NoteId(asked), "eyes")
        .await
        .expect("eyes");
    let reply = gl
        .reply_on_mr(
            "acme/shop",
            mr.iid,
            "Refused: merge requests from forks cannot deploy.",
            false,
        )
        .await
        .expect("reply");
    gl.react("acme/shop", mr.iid, NoteId(asked), "x")
        .await
        .expect("x");
    assert_eq!(world.reactions(asked), ["eyes", "x"]);
    let notes = world.mr_notes(mr.iid);
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[1].id, reply.0);
    assert_eq!(notes[1].author, BOT_USERNAME);
    world.flush().await;
    // GitLab sends the bot's own note back as a Note Hook, signed.
    let own = rx
        .got()
        .into_iter()
        .filter(|g| g.event() == "Note Hook")
        .find(|g| g.body["object_attributes"]["id"] == reply.0)
        .expect("the bot's note came back as a Note Hook");
    assert_eq!(own.body["user"]["username"], BOT_USERNAME);
    assert_eq!(
        own.body["merge_request"]["source_project_id"],
        mr.source_project_id
    );
    let headers = hoist::webhook::auth::AuthHeaders {
        gitlab_token: own.headers.get("x-gitlab-token").map(|v| v.as_bytes()),
        webhook_id: own.headers.get("webhook-id").and_then(|v| v.to_str().ok()),
        webhook_timestamp: own
            .headers
            .get("webhook-timestamp")
            .and_then(|v| v.to_str().ok()),
        webhook_signature: own
            .headers
            .get("webhook-signature")
            .and_then(|v| v.to_str().ok()),
    };
    assert_eq!(
        headers.webhook_id.map(str::to_string),
        Some(own.header("idempotency-key"))
    );
    hoist::webhook::auth::verify_signature(
        SIGNING_KEY_RAW,
        &headers,
        &own.raw,
        chrono::Utc::now().timestamp(),
    )
    .expect("signature verifies");
    match hoist::events::parse("Note Hook", &own.raw) {
        Ok(hoist::events::Event::Note(_)) => {}
        other => panic!("not a note event: {other:?}"),
    }
    // An edit fires the Note Hook again, with action update.
    world.edit_note(asked, "/deploy production").await;
    let edit = rx.got().pop().expect("edit hook");
    assert_eq!(edit.body["object_attributes"]["action"], "update");
    assert_eq!(edit.body["object_attributes"]["note"], "/deploy production");
    assert_eq!(edit.body["user"]["username"], "mallory");

    // An internal note, and the bot's internal answer: members-only notes, sent to the
    // hook as the Confidential Note Hook, which hoist reads as a confidential note.
    let quiet = world
        .comment_on_mr_internally(mr.iid, "mallory", "/deploy help")
        .await;
    let answer = gl
        .reply_on_mr("acme/shop", mr.iid, "Internal answer.", true)
        .await
        .expect("internal reply");
    let notes = world.mr_notes(mr.iid);
    let internal: Vec<(u64, bool)> = notes.iter().map(|n| (n.id, n.internal)).collect();
    assert!(internal.contains(&(quiet, true)) && internal.contains(&(answer.0, true)));
    assert!(
        !notes
            .iter()
            .find(|n| n.id == reply.0)
            .expect("reply")
            .internal
    );
    world.flush().await;
    for id in [quiet, answer.0] {
        let hook = rx
            .got()
            .into_iter()
            .find(|g| g.body["object_attributes"]["id"] == id)
            .expect("the internal note's hook");
        assert_eq!(hook.event(), "Confidential Note Hook");
        match hoist::events::parse(&hook.event(), &hook.raw) {
            Ok(hoist::events::Event::Note(n)) => assert!(n.confidential),
            other => panic!("not a note event: {other:?}"),
        }
    }

    // Commit statuses, with GitLab's refusal of a same-state "transition".
    let long = "x".repeat(400);
    gl.set_commit_status(
        "acme/shop",
        &sha,
        CommitState::Running,
        "hoist/production",
        Some("http://hoist/runs/1"),
        &long,
    )
    .await
    .expect("running");
    let same = gl
        .set_commit_status(
            "acme/shop",
            &sha,
            CommitState::Running,
            "hoist/production",
            None,
            "again",
        )
        .await
        .expect_err("same state");
    assert!(matches!(same, GitlabError::BadRequest(_)), "{same:?}");
    gl.set_commit_status(
        "acme/shop",
        &sha,
        CommitState::Success,
        "hoist/production",
        None,
        "deployed",
    )
    .await
    .expect("success");
    let statuses = world.statuses(&tag.sha);
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0].description.as_ref().map(String::len), Some(255));
    assert_eq!(statuses[1].state, "success");
}

#[tokio::test]
async fn job_actions_run_while_running_and_their_errors_fail_the_job() {
    let world = FakeGitlab::start().await;
    let gl = client(&world);
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let s = seen.clone();
    let url = world.url();
    world.set_job_action(
        "manifest",
        job_action(move |ctx: JobCtx| {
            let s = s.clone();
            let url = url.clone();
            async move {
                // The job is `running` while its action runs.
                let gl = HttpClient::with_policy(
                    &url,
                    Secret::new(GITLAB_TOKEN),
                    RetryPolicy::default(),
                )
                .map_err(|e| e.to_string())?;
                let me = gl
                    .job(&ctx.project, ctx.job_id)
                    .await
                    .map_err(|e| e.to_string())?;
                s.lock().expect("seen").push((
                    ctx.ref_name.clone(),
                    ctx.sha.clone(),
                    me.status.to_string(),
                ));
                if ctx.ref_name == "v0.0.1-broken" {
                    Err("manifest unknown: arm64 image missing".into())
                } else {
                    Ok(())
                }
            }
        }),
    );
    world.set_job_duration("manifest", Duration::from_millis(200));

    let good = world.push_tag("acme/shop", "v0.1.0", true).await;
    let bad = world.push_tag("acme/shop", "v0.0.1-broken", true).await;
    for t in [&good, &bad] {
        let m = world.job(t.pipeline_id, "manifest");
        gl.play_job("acme/shop", m.id).await.expect("played");
    }
    let started = std::time::Instant::now();
    wait_job(&world, good.pipeline_id, "manifest", "success").await;
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "duration honoured"
    );
    wait_job(&world, bad.pipeline_id, "manifest", "failed").await;
    assert_eq!(world.job(bad.pipeline_id, "deploy").status, "skipped");
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.contains(&("v0.1.0".into(), good.sha.clone(), "running".into())),
        "{seen:?}"
    );

    // A person plays deploy in the UI: job hooks name them.
    let (rx, url) = Receiver::start().await;
    world.add_hook(
        "acme/shop",
        &url,
        HookAuth::signing(&whsec(SIGNING_KEY_RAW)),
    );
    let deploy = world.job(good.pipeline_id, "deploy");
    world
        .play_as(deploy.id, "alice")
        .await
        .expect("played by alice");
    wait_job(&world, good.pipeline_id, "deploy", "success").await;
    let by = rx
        .got()
        .into_iter()
        .find(|g| g.event() == "Job Hook" && g.body["build_name"] == "deploy")
        .expect("job hook");
    assert_eq!(by.body["user"]["username"], "alice");
    assert!(by.header("x-gitlab-token").is_empty());
    assert!(by.header("webhook-signature").starts_with("v1,"));
}

#[tokio::test]
async fn redelivery_stale_hooks_and_hook_disabling() {
    let world = FakeGitlab::start().await;
    let (rx, url) = Receiver::start().await;
    world.add_hook("acme/shop", &url, HookAuth::token(TOKEN));
    let tag = world.push_tag("acme/shop", "v5.0.0", true).await;
    let first = world.deliveries()[1].clone();
    assert_eq!(first.event, "Pipeline Hook");

    let again = world.redeliver(first.seq).await;
    assert_eq!(again.idempotency_key, first.idempotency_key);
    assert_ne!(again.webhook_uuid, first.webhook_uuid);
    let got = rx.got();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[2].header("idempotency-key"),
        got[1].header("idempotency-key")
    );
    assert_ne!(
        got[2].header("x-gitlab-webhook-uuid"),
        got[1].header("x-gitlab-webhook-uuid")
    );
    assert_eq!(got[2].raw, got[1].raw);

    // A stale `running` after `manual`.
    let stale = world
        .send_pipeline_hook_as(tag.pipeline_id, "running", &[("manifest", "running")])
        .await;
    assert_eq!(stale.len(), 1);
    let last = rx.got().pop().expect("stale hook");
    assert_eq!(last.body["object_attributes"]["status"], "running");
    assert_ne!(
        last.header("idempotency-key"),
        got[1].header("idempotency-key")
    );

    // Four failed deliveries in a row disable the hook for a while, as GitLab does.
    *rx.answer.lock().expect("answer") = 500;
    for _ in 0..4 {
        world.announce_pipeline(tag.pipeline_id).await;
    }
    let hooks = world.hooks("acme/shop");
    assert_eq!(hooks[0]["alert_status"], "temporarily_disabled");
    assert!(hooks[0]["disabled_until"].is_string());
    let before = rx.got().len();
    world.announce_pipeline(tag.pipeline_id).await;
    assert_eq!(rx.got().len(), before, "a disabled hook receives nothing");
    assert_eq!(
        world
            .deliveries()
            .last()
            .and_then(|d| d.error.clone())
            .as_deref(),
        Some("hook temporarily disabled")
    );
}

#[tokio::test]
async fn concurrent_hooks_can_arrive_out_of_order() {
    let world = FakeGitlab::start().await;
    let (rx, url) = Receiver::start().await;
    world.add_hook("acme/shop", &url, HookAuth::token(TOKEN));
    world.set_concurrent_hooks(true);
    world.set_default_job_duration(Duration::from_millis(1));
    let gl = client(&world);
    let tag = world.push_tag("acme/shop", "v6.0.0", true).await;
    let m = world.job(tag.pipeline_id, "manifest");
    gl.play_job("acme/shop", m.id).await.expect("played");
    wait_job(&world, tag.pipeline_id, "deploy", "manual").await;
    // All arrive; order is whatever the race gave (the in-order guarantee is off).
    let mut statuses = rx.job_statuses("manifest");
    statuses.sort();
    assert_eq!(statuses, ["pending", "running", "success"]);
}
