//! End-to-end deploy stories: the fake GitLab world, hoist in-process over real HTTP,
//! the real Docker engine in swarm mode and the real registry.

mod stories;
mod story_support;
mod support;
mod swarm_support;

use std::time::{Duration, Instant};

use story_support::Story;
use support::fake_gitlab::{FakeGitlab, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_tags_deploy_update_and_never_go_backwards() {
    let Some(story) = Story::start("story").await else {
        return;
    };
    stories::release_tags_deploy_update_and_never_go_backwards(&story).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_manifest_job_fails_the_run_and_never_plays_deploy() {
    let Some(story) = Story::start("mfail").await else {
        return;
    };
    let world = &story.world;
    world.set_job_outcome("manifest", Outcome::Fail);
    let t = world.push_tag("acme/shop", "v2.0.0", true).await;
    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let manifest = &run["steps"][0];
    assert_eq!(manifest["state"], "failed");
    assert_ne!(world.job(t.pipeline_id, "deploy").status, "success");
    assert_eq!(
        world.calls("jobs/:id/play"),
        1,
        "only the manifest job was played"
    );
    world
        .wait_for(|w| w.commit_comments(&t.sha).len() == 2)
        .await;
    let last = world.commit_comments(&t.sha).pop().unwrap_or_default();
    assert!(
        last.contains("manifest"),
        "the comment says which step failed: {last}"
    );
    assert!(
        story
            .env
            .docker_status(&["service", "inspect", &story.service])
            .is_err(),
        "no service was created"
    );
    // A new pipeline for the same tag (the job fixed, "Run pipeline") deploys it.
    world.set_job_outcome("manifest", Outcome::Success);
    let retried = world.run_tag_pipeline("acme/shop", "v2.0.0").await;
    let run = story
        .final_run_where(|r| r["pipeline_id"] == retried.0)
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert!(story.service_image().contains(":v2.0.0@sha256:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_comments_on_merge_requests() {
    let Some(story) = Story::start("mr").await else {
        return;
    };
    stories::deploy_comments_on_merge_requests(&story).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_bad_gateways_are_retried_and_every_comment_is_posted_once() {
    use support::fake_gitlab::Fault;
    let Some(story) = Story::start("fault").await else {
        return;
    };
    let world = &story.world;
    world.fault("jobs/:id/play", Fault::RateLimited { retry_after: 1 });
    world.fault("comments", Fault::Status(502));
    let t = world.push_tag("acme/shop", "v1.0.0", true).await;
    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    world
        .wait_for(|w| w.commit_comments(&t.sha).len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        world.commit_comments(&t.sha).len(),
        2,
        "each comment exactly once"
    );
    assert_eq!(
        world.calls("jobs/:id/play"),
        3,
        "one 429, then the two plays"
    );
    assert_eq!(
        world.calls("comments"),
        3,
        "one 502, then the two comments: {:#?}",
        world.call_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_down_when_hoist_starts_delays_the_run_which_then_deploys() {
    use story_support::Setup;
    let setup = Setup {
        gitlab_down_for: Some(Duration::from_secs(5)),
        ..Setup::default()
    };
    let Some(story) = Story::start_with("glstart", setup).await else {
        return;
    };
    let world = &story.world;
    // hoist answers webhooks while GitLab's API is down.
    let t = world.push_tag("acme/shop", "v1.0.0", true).await;
    assert!(world.is_down(), "GitLab is still down when the tag arrives");
    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert!(!world.is_down());
    assert_eq!(world.job(t.pipeline_id, "deploy").status, "success");
    assert!(story.service_image().contains(":v1.0.0@sha256:"));
    world
        .wait_for(|w| w.commit_comments(&t.sha).len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.commit_comments(&t.sha).len(), 2, "each comment once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_down_past_the_retries_mid_run_is_outlasted_and_deploy_is_played_once() {
    use support::fake_gitlab::Fault;
    let Some(story) = Story::start("gldown").await else {
        return;
    };
    let world = &story.world;
    // manifest is played; GitLab goes down at the deploy play, for longer than a request's
    // retries (3 attempts within a second here).
    world.fault("jobs/:id/play", Fault::Delay(Duration::ZERO));
    world.fault("jobs/:id/play", Fault::Down(Duration::from_secs(4)));
    let t = world.push_tag("acme/shop", "v1.0.0", true).await;
    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(world.job(t.pipeline_id, "deploy").status, "success");
    let failed_plays = world.calls("jobs/:id/play") - 2;
    assert!(
        failed_plays >= 3,
        "the outage outlasted a request's retries: {:#?}",
        world.call_log()
    );
    assert!(story.service_image().contains(":v1.0.0@sha256:"));
    world
        .wait_for(|w| w.commit_comments(&t.sha).len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.commit_comments(&t.sha).len(), 2, "each comment once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_down_past_the_job_timeout_fails_the_run_in_time_and_says_why_once_it_is_back() {
    use story_support::Setup;
    use support::fake_gitlab::Fault;
    let setup = Setup {
        job_timeout: Some(Duration::from_secs(3)),
        ..Setup::default()
    };
    let Some(story) = Story::start_with("gldead", setup).await else {
        return;
    };
    let world = &story.world;
    world.fault("jobs/:id/play", Fault::Delay(Duration::ZERO));
    world.fault("jobs/:id/play", Fault::Down(Duration::from_secs(10)));
    let t = world.push_tag("acme/shop", "v1.0.0", true).await;
    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    assert!(
        world.is_down(),
        "the run ended at its deadline, not when GitLab came back"
    );
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("within 3 s") && error.contains("GitLab unavailable"),
        "{run:#}"
    );
    // The failure comment waits in the outbox and lands once GitLab answers again.
    world
        .wait_for(|w| w.commit_comments(&t.sha).len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let comments = world.commit_comments(&t.sha);
    assert_eq!(comments.len(), 2, "the start and the end: {comments:#?}");
    assert!(
        comments[1].contains("deploy-job") && comments[1].contains("GitLab unavailable"),
        "{}",
        comments[1]
    );
    assert_eq!(
        world.job(t.pipeline_id, "deploy").status,
        "manual",
        "deploy was never played"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_locked_past_its_busy_timeout_mid_run_stops_the_run_which_resumes_and_ends_once() {
    use sqlx::Connection;
    let Some(story) = Story::start("locked").await else {
        return;
    };
    let world = &story.world;
    world.set_job_duration("manifest", Duration::from_millis(1500));
    let t = world.push_tag("acme/shop", "v1.0.0", true).await;
    world
        .wait_for(|w| w.job(t.pipeline_id, "manifest").status == "running")
        .await;
    // Another writer holds SQLite's write lock for longer than hoist's 10 s busy timeout, so
    // the run's next write (manifest finished) fails.
    let mut conn = sqlx::SqliteConnection::connect(&story.db.url)
        .await
        .expect("connect");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .expect("take the write lock");
    tokio::time::sleep(Duration::from_secs(12)).await;
    sqlx::query("COMMIT")
        .execute(&mut conn)
        .await
        .expect("release the lock");
    drop(conn);
    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(
        world.calls("POST projects/:id/jobs/:id/play"),
        2,
        "manifest and deploy played once each: {:#?}",
        world.call_log()
    );
    world
        .wait_for(|w| w.commit_comments(&t.sha).len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.commit_comments(&t.sha).len(), 2, "each comment once");
    assert!(story.service_image().contains(":v1.0.0@sha256:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_older_tag_is_superseded_by_a_newer_one() {
    let Some(story) = Story::start("super").await else {
        return;
    };
    let world = &story.world;
    world.set_job_duration("manifest", Duration::from_millis(1500));
    let first = world.push_tag("acme/shop", "v3.0.0", true).await;
    // Wait until the first run is running, then push two more back to back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !story
        .runs()
        .await
        .iter()
        .any(|r| r["sha"] == first.sha.as_str() && r["state"] == "running")
    {
        assert!(Instant::now() < deadline, "first run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let older = world.push_tag("acme/shop", "v3.1.0", true).await;
    let newer = world.push_tag("acme/shop", "v3.2.0", true).await;
    assert_eq!(story.finished_run(&first.sha).await["state"], "succeeded");
    assert_eq!(story.finished_run(&older.sha).await["state"], "superseded");
    assert_eq!(story.finished_run(&newer.sha).await["state"], "succeeded");
    assert_eq!(
        world.job(older.pipeline_id, "manifest").status,
        "manual",
        "the superseded tag played nothing"
    );
    world
        .wait_for(|w| w.commit_comments(&older.sha).len() == 1)
        .await;
    assert!(
        world.commit_comments(&older.sha)[0].contains("v3.2.0"),
        "{:?}",
        world.commit_comments(&older.sha)
    );
    assert!(story.service_image().contains(":v3.2.0@sha256:"));
}

/// Runs the real `hoist` binary with the story's config.
fn hoist_cli(story: &Story, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args(args)
        .arg("--config")
        .arg(&story.config_path)
        .env("GL", support::GITLAB_TOKEN)
        .env("WH", support::TOKEN)
        .env("API", support::API_TOKEN)
        .output()
        .expect("run hoist");
    support::capture::capture_output(&out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hoist_deploy_waits_for_the_run_and_history_lists_it() {
    use story_support::Setup;
    let Some(story) = Story::start_with(
        "cli",
        Setup {
            api_token: true,
            ..Setup::default()
        },
    )
    .await
    else {
        return;
    };
    let world = &story.world;
    let mr = world
        .open_mr("acme/shop", "acme/shop", "feature-cli", "dave")
        .await;
    let pipeline = mr.pipeline_id.to_string();
    let args: Vec<String> = [
        "deploy",
        "--project",
        "acme/shop",
        "--env",
        "staging",
        "--pipeline",
        &pipeline,
        "--wait",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let config = story.config_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hoist"))
            .args(&args)
            .arg("--config")
            .arg(config)
            .env("GL", support::GITLAB_TOKEN)
            .env("WH", support::TOKEN)
            .env("API", support::API_TOKEN)
            .env("API", support::API_TOKEN)
            .output()
    })
    .await
    .expect("join")
    .expect("run hoist deploy");
    support::capture::capture_output(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hoist deploy --wait failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(
        stdout.contains("converge"),
        "--wait prints the steps: {stdout}"
    );

    let out = hoist_cli(&story, &["history", "--json", "--env", "staging"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("history JSON");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(
        (runs[0]["trigger"].as_str(), runs[0]["state"].as_str()),
        (Some("cli"), Some("succeeded"))
    );
    let out = hoist_cli(&story, &["history"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().count() >= 2 && table.contains("succeeded"),
        "{table}"
    );

    // `hoist deploy --project acme/shop --env ENV` and then `more`.
    let deploy = |env: &str, more: &[&str]| {
        let args: Vec<&str> = ["deploy", "--project", "acme/shop", "--env", env]
            .into_iter()
            .chain(more.iter().copied())
            .collect();
        hoist_cli(&story, &args)
    };

    // An unknown environment is a clear refusal, exit 1.
    let out = deploy("nope", &["--tag", "v1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no environment nope"));

    // `--mr` deploys the merge request's head again; the run's ref is its branch, as
    // for `/deploy` on the merge request.
    let out = deploy("staging", &["--mr", &mr.iid.to_string(), "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hoist_cli(&story, &["history", "--json", "--env", "staging"]);
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("history JSON");
    assert_eq!(runs.len(), 2, "a second run: {runs:#?}");
    assert_eq!(
        (runs[0]["ref"].as_str(), runs[0]["state"].as_str()),
        (Some("feature-cli"), Some("succeeded")),
        "{runs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_playing_the_deploy_job_in_gitlab_deploys_a_manual_environment() {
    let Some(story) = Story::start("play").await else {
        return;
    };
    let world = &story.world;
    use support::fake_gitlab::{JobSpec, PipelineSpec};
    world.add_member("acme/shop", "dave", support::fake_gitlab::DEVELOPER);
    // This project's MR pipelines deploy to staging.
    world.set_pipeline_spec(PipelineSpec {
        jobs: vec![
            JobSpec::done("build", "build-amd64"),
            JobSpec::manual("manifest", "manifest"),
            JobSpec::manual("deploy", "deploy").environment("staging"),
        ],
    });
    let mr = world
        .open_mr("acme/shop", "acme/shop", "feature-play", "dave")
        .await;
    let manifest = world.job(mr.pipeline_id, "manifest").id;
    world
        .play_as(manifest, "dave")
        .await
        .expect("dave plays manifest");
    world
        .wait_for(|w| w.job(mr.pipeline_id, "manifest").status == "success")
        .await;
    world
        .wait_for(|w| w.job(mr.pipeline_id, "deploy").status == "manual")
        .await;
    let deploy = world.job(mr.pipeline_id, "deploy").id;
    world
        .play_as(deploy, "dave")
        .await
        .expect("dave plays deploy");
    let run = story.finished_run(&mr.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["trigger"], "job_play");
    assert_eq!(run["requested_by"], "dave");
    assert_eq!(
        run["steps"][0]["state"], "skipped",
        "manifest already succeeded: {run:#}"
    );
    assert_eq!(
        world.calls("jobs/:id/play"),
        0,
        "hoist played nothing itself: {:#?}",
        world.call_log()
    );
    let image = story.image_of(&format!("{}-stg", story.service));
    assert!(
        image
            .trim()
            .starts_with(&format!("{}:{}@sha256:", story.image, &mr.sha[..8])),
        "{image}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_pipeline_hook_three_times_and_a_stale_running_make_one_run() {
    let Some(story) = Story::start("dupes").await else {
        return;
    };
    let world = &story.world;
    // A slow manifest job keeps the run busy while the repeats arrive.
    world.set_job_duration("manifest", Duration::from_millis(1500));
    let t = world.push_tag("acme/shop", "v4.0.0", true).await;
    let first = world
        .deliveries()
        .into_iter()
        .find(|d| {
            d.event == "Pipeline Hook" && d.body["object_attributes"]["id"] == t.pipeline_id.0
        })
        .expect("the pipeline hook went out");
    // The same delivery twice more (GitLab's retry: same Idempotency-Key) …
    for _ in 0..2 {
        let again = world.redeliver(first.seq).await;
        assert_eq!(again.status, Some(200), "duplicates are answered 200");
    }
    // … the same pipeline state announced again as a new event, and a stale `running`
    // hook from before the manifest job became manual, arriving late.
    world.announce_pipeline(t.pipeline_id).await;
    let stale = world
        .send_pipeline_hook_as(t.pipeline_id, "running", &[("manifest", "running")])
        .await;
    assert!(stale.iter().all(|d| d.status == Some(200)), "{stale:#?}");

    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    world.flush().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs: Vec<_> = story
        .runs()
        .await
        .into_iter()
        .filter(|r| r["sha"] == t.sha.as_str())
        .collect();
    assert_eq!(runs.len(), 1, "one run per commit: {runs:#?}");
    assert_eq!(
        world.calls("jobs/:id/play"),
        2,
        "manifest and deploy played once each: {:#?}",
        world.call_log()
    );
    world
        .wait_for(|w| w.commit_comments(&t.sha).len() == 2)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(world.commit_comments(&t.sha).len(), 2, "no comment twice");
    let url = format!("http://127.0.0.1:{}/api/v1/deliveries", story.port);
    let deliveries: Vec<serde_json::Value> = story
        .client
        .get(url)
        .send()
        .await
        .expect("deliveries")
        .json()
        .await
        .expect("deliveries JSON");
    let duplicates = deliveries
        .iter()
        .filter(|d| d["state"] == "duplicate")
        .count();
    assert_eq!(
        duplicates, 2,
        "both retries recorded as duplicates: {deliveries:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_help_and_status_answer_on_the_merge_request() {
    let Some(story) = Story::start_with_developer("status").await else {
        return;
    };
    let world = &story.world;
    let t = world.push_tag("acme/shop", "v5.0.0", true).await;
    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let digest = run["digest"].as_str().expect("digest").to_string();

    let mr = world
        .open_mr("acme/shop", "acme/shop", "feature-ask", "dave")
        .await;
    let bot_notes = |w: &FakeGitlab| story_support::bot_notes(w, mr.iid);

    world.comment_on_mr(mr.iid, "dave", "/deploy help").await;
    world.wait_for(|w| bot_notes(w).len() == 1).await;
    let help = bot_notes(world).remove(0);
    for expected in ["/deploy status", "production", "staging", "tag"] {
        assert!(help.contains(expected), "help names {expected}: {help}");
    }
    assert!(
        help.lines().all(|l| !l.trim_start().starts_with('/')),
        "no line starts with a quick action: {help}"
    );

    world
        .comment_on_mr(mr.iid, "dave", "/deploy status production")
        .await;
    world.wait_for(|w| bot_notes(w).len() == 2).await;
    let status = bot_notes(world).remove(1);
    assert!(
        status.contains("v5.0.0") && status.contains(&digest[..19]),
        "status names what runs: {status}"
    );

    world.comment_on_mr(mr.iid, "dave", "/deploy status").await;
    world.wait_for(|w| bot_notes(w).len() == 3).await;
    let all = bot_notes(world).remove(2);
    assert!(
        all.contains("production") && all.contains("staging"),
        "status without an environment lists them all: {all}"
    );
    // Questions start no runs.
    assert_eq!(story.runs().await.len(), 1);
}

/// `/deploy` asked in an internal note (GitLab's confidential comment) is answered only
/// in internal notes: the question's reply, and the deploy's "started" and "finished"
/// replies. A public question on the same merge request still gets a public reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_note_is_answered_in_internal_notes() {
    let Some(story) = Story::start_with_developer("internal").await else {
        return;
    };
    let world = &story.world;
    let mr = world
        .open_mr("acme/shop", "acme/shop", "feature-quiet", "dave")
        .await;
    // (body, internal) of the bot's notes.
    let bot = |w: &FakeGitlab| -> Vec<(String, bool)> {
        w.mr_notes(mr.iid)
            .into_iter()
            .filter(|n| n.author == support::fake_gitlab::BOT_USERNAME)
            .map(|n| (n.body, n.internal))
            .collect()
    };

    world
        .comment_on_mr_internally(mr.iid, "dave", "/deploy help")
        .await;
    world.wait_for(|w| bot(w).len() == 1).await;
    assert!(bot(world)[0].1, "the help is internal: {:#?}", bot(world));

    let note = world
        .comment_on_mr_internally(mr.iid, "dave", "/deploy staging")
        .await;
    let run = story
        .final_run_where(|r| r["trigger"] == "mr_comment" && r["sha"] == mr.sha.as_str())
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    world
        .wait_for(|w| w.reactions(note).contains(&"rocket".to_string()))
        .await;
    world.wait_for(|w| bot(w).len() == 3).await;
    assert!(
        bot(world).iter().all(|(_, internal)| *internal),
        "every reply is internal: {:#?}",
        bot(world)
    );

    world.comment_on_mr(mr.iid, "dave", "/deploy help").await;
    world.wait_for(|w| bot(w).len() == 4).await;
    assert!(!bot(world)[3].1, "a public question, a public reply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_doctor_replies_with_the_projects_checks() {
    let Some(story) = Story::start_with_developer("doctor").await else {
        return;
    };
    let world = &story.world;
    // The image repository exists once a release was built.
    let t = world.push_tag("acme/shop", "v6.0.0", true).await;
    assert_eq!(story.finished_run(&t.sha).await["state"], "succeeded");
    let mr = world
        .open_mr("acme/shop", "acme/shop", "feature-doc", "dave")
        .await;
    let bot_notes = |w: &FakeGitlab| story_support::bot_notes(w, mr.iid);
    world.comment_on_mr(mr.iid, "dave", "/deploy doctor").await;
    world.wait_for(|w| bot_notes(w).len() == 1).await;
    let healthy = bot_notes(world).remove(0);
    assert!(healthy.contains("everything hoist needs"), "{healthy}");
    for check in ["gitlab", "hook acme/shop", "docker", "image "] {
        assert!(
            healthy.contains(&format!("✅ **{check}")),
            "{check}: {healthy}"
        );
    }

    // The token loses the api scope: the reply says so, with the fix.
    world.set_token_scopes(&["read_api"]);
    world.comment_on_mr(mr.iid, "dave", "/deploy doctor").await;
    world.wait_for(|w| bot_notes(w).len() == 2).await;
    let sick = bot_notes(world).remove(1);
    assert!(sick.contains("1 of"), "{sick}");
    assert!(sick.contains("❌ **gitlab token**"), "{sick}");
    assert!(sick.contains("api scope"), "{sick}");

    // The reply shows how hoist is set up: a reporter gets a refusal instead.
    world.add_member("acme/shop", "rita", support::fake_gitlab::REPORTER);
    world.comment_on_mr(mr.iid, "rita", "/deploy doctor").await;
    world.wait_for(|w| bot_notes(w).len() == 3).await;
    let refused = bot_notes(world).remove(2);
    assert!(
        refused.contains("developer") && !refused.contains("docker"),
        "{refused}"
    );
    assert_eq!(story.runs().await.len(), 1, "a question starts no run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_asked_while_the_build_runs_plays_manifest_once_it_waits() {
    use support::fake_gitlab::{DEVELOPER, JobSpec, PipelineSpec};
    let Some(story) = Story::start("early").await else {
        return;
    };
    let world = &story.world;
    world.add_member("acme/shop", "dave", DEVELOPER);
    // The build is still running when dave asks: manifest is `created`, not yet `manual`.
    world.set_pipeline_spec(PipelineSpec {
        jobs: vec![
            JobSpec::auto("build", "build-amd64"),
            JobSpec::manual("manifest", "manifest"),
            JobSpec::manual("deploy", "deploy").environment("staging"),
        ],
    });
    world.set_job_duration("build-amd64", Duration::from_millis(1500));
    let mr = world
        .open_mr("acme/shop", "acme/shop", "feature-early", "dave")
        .await;
    assert_eq!(world.job(mr.pipeline_id, "manifest").status, "created");
    world.comment_on_mr(mr.iid, "dave", "/deploy staging").await;
    let run = story.final_run_where(|r| r["sha"] == mr.sha.as_str()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert!(
        run["steps"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("waited for earlier stages")),
        "{run:#}"
    );
    assert_eq!(
        world.calls("jobs/:id/play"),
        2,
        "manifest once it waited, then deploy: {:#?}",
        world.call_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_changed_by_hand_is_reported_as_drift_until_the_next_deploy() {
    use support::fake_gitlab::DEVELOPER;
    use swarm_support::{Behaviour, OCI_INDEX, Pusher};
    let Some(story) = Story::start("drift").await else {
        return;
    };
    let world = &story.world;
    world.add_member("acme/shop", "dave", DEVELOPER);
    let t = world.push_tag("acme/shop", "v8.0.0", true).await;
    assert_eq!(story.finished_run(&t.sha).await["state"], "succeeded");

    // Someone updates the service by hand to another image.
    let path = story
        .image
        .strip_prefix(&format!("{}/", story.env.registry))
        .expect("image in the test registry")
        .to_string();
    Pusher::anonymous(&story.env.registry)
        .push_multiarch(
            &path,
            "hotfix",
            &["linux/amd64", "linux/arm64"],
            Behaviour::Serve,
            OCI_INDEX,
        )
        .await;
    let by_hand = format!("{}:hotfix", story.image);
    story.env.docker(&[
        "service",
        "update",
        "--detach",
        "--image",
        &by_hand,
        &story.service,
    ]);
    let story = &story;
    let gauge = |value: &str| {
        let line = format!(
            "hoist_drift{{project=\"acme/shop\",env=\"production\",service=\"{}\"}} {value}",
            story.service
        );
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let metrics = story.get_text("/metrics").await;
                if metrics.lines().any(|l| l == line) {
                    return;
                }
                assert!(Instant::now() < deadline, "no {line:?} in:\n{metrics}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    gauge("1").await;

    let mr = world
        .open_mr("acme/shop", "acme/shop", "feature-drift", "dave")
        .await;
    let bot_notes = |w: &FakeGitlab| story_support::bot_notes(w, mr.iid);
    world
        .comment_on_mr(mr.iid, "dave", "/deploy status production")
        .await;
    world.wait_for(|w| bot_notes(w).len() == 1).await;
    let status = bot_notes(world).remove(0);
    assert!(
        status.contains("drift") && status.contains(":hotfix"),
        "{status}"
    );

    // The next deploy puts hoist's image back: the drift clears.
    let next = world.push_tag("acme/shop", "v8.1.0", true).await;
    assert_eq!(story.finished_run(&next.sha).await["state"], "succeeded");
    gauge("0").await;
}

/// An extra environment of acme/shop (for [`Story::start_extra`]): tags matching
/// `tag_pattern` deploy to one replica of each `(service, image)`, for linux/amd64.
fn tag_env(name: &str, tag_pattern: &str, services: &[(&str, &str)]) -> String {
    let mut text = format!(
        "\n  [[projects.environments]]\n  name = \"{name}\"\n  policy = \"tag\"\n  tag_pattern = \"{tag_pattern}\"\n"
    );
    for (service, image) in services {
        text += &format!(
            "    [[projects.environments.services]]\n    name = \"{service}\"\n    image = \"{image}\"\n    \
             platforms = [\"linux/amd64\"]\n    [projects.environments.services.create]\n    replicas = 1\n"
        );
    }
    text
}

/// An environment of two services with images of their own: the run records each at its
/// own digest, the dashboard and `/deploy status` show both, and the second is watched
/// for drift too (runs used to record, show and watch the first image only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_is_recorded_at_its_own_digest_and_watched_for_drift() {
    use support::fake_gitlab::DEVELOPER;
    use swarm_support::{Behaviour, OCI_INDEX, Pusher};
    let duo = tag_env(
        "duo",
        "duo-*",
        &[
            ("{service}-web", "{image}"),
            ("{service}-side", "{image}-side"),
        ],
    );
    let Some(story) = Story::start_extra("duo", &duo).await else {
        return;
    };
    let world = &story.world;
    world.add_member("acme/shop", "dave", DEVELOPER);
    let side_path = format!(
        "{}-side",
        story
            .image
            .strip_prefix(&format!("{}/", story.env.registry))
            .expect("image in the test registry")
    );
    // The side image comes from elsewhere, with three platforms: its own digest.
    let pusher = Pusher::anonymous(&story.env.registry);
    let platforms = ["linux/amd64", "linux/arm64", "linux/arm/v7"];
    pusher
        .push_multiarch(&side_path, "duo-1", &platforms, Behaviour::Serve, OCI_INDEX)
        .await;
    let t = world.push_tag("acme/shop", "duo-1", true).await;
    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let recorded: Vec<(String, String, String)> = run["services"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|s| {
                    let field = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                    (field("service"), field("image"), field("digest"))
                })
                .collect()
        })
        .unwrap_or_default();
    let (web, side) = (
        format!("{}-web", story.service),
        format!("{}-side", story.service),
    );
    assert_eq!(
        recorded.iter().map(|s| (&s.0, &s.1)).collect::<Vec<_>>(),
        [
            (&web, &format!("{}:duo-1", story.image)),
            (&side, &format!("{}-side:duo-1", story.image))
        ],
        "{run:#}"
    );
    assert_ne!(recorded[0].2, recorded[1].2, "two images, two digests");
    assert_eq!(
        run["digest"],
        recorded[0].2.as_str(),
        "the first stays in digest"
    );

    let html = story.get_text("/").await;
    for (_, image, digest) in &recorded {
        let pinned = format!("{image}@{digest}");
        assert!(html.contains(&pinned), "{pinned} on the dashboard:\n{html}");
    }
    let mr = world
        .open_mr("acme/shop", "acme/shop", "feature-duo", "dave")
        .await;
    world
        .comment_on_mr(mr.iid, "dave", "/deploy status duo")
        .await;
    world
        .wait_for(|w| story_support::bot_notes(w, mr.iid).len() == 1)
        .await;
    let status = story_support::bot_notes(world, mr.iid).remove(0);
    for (_, _, digest) in &recorded {
        assert!(status.contains(&digest[..19]), "{digest} in {status}");
    }

    // Someone puts another side image in by hand: the side service drifts, the web not.
    pusher
        .push_multiarch(
            &side_path,
            "hotfix",
            &platforms[..1],
            Behaviour::Serve,
            OCI_INDEX,
        )
        .await;
    story.env.docker(&[
        "service",
        "update",
        "--detach",
        "--image",
        &format!("{}-side:hotfix", story.image),
        &side,
    ]);
    let drift = |service: &str, value: &str| {
        format!("hoist_drift{{project=\"acme/shop\",env=\"duo\",service=\"{service}\"}} {value}")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = story.get_text("/metrics").await;
        if metrics.lines().any(|l| l == drift(&side, "1")) {
            assert!(
                metrics.lines().any(|l| l == drift(&web, "0")),
                "the web service still runs what hoist deployed:\n{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no drift of {side} in:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_comes_back_within_the_wait_lets_the_run_go_on() {
    // The edge environment pulls through a port where the registry answers only after 1 s
    // (a registry restarting while a deploy verifies).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let image = format!("127.0.0.1:{port}/{{path}}");
    let edge = tag_env("edge", "edge-*", &[("{service}-edge", &image)]);
    let Some(story) = Story::start_extra("regback", &edge).await else {
        return;
    };
    let registry = story.env.registry.clone();
    let world = &story.world;
    let t = world.push_tag("acme/shop", "edge-1", true).await;
    world
        .wait_for(|w| w.job(t.pipeline_id, "manifest").status == "success")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the registry's port");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let registry = registry.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(registry).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(world.job(t.pipeline_id, "deploy").status, "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_fails_the_run_at_verify_with_a_comment_that_says_so() {
    // An environment whose images live on a registry nobody listens on.
    let edge = tag_env(
        "edge",
        "edge-*",
        &[("{service}-edge", "127.0.0.1:9/hoist-test/edge")],
    );
    let Some(story) = Story::start_extra("regdown", &edge).await else {
        return;
    };
    let world = &story.world;
    let t = world.push_tag("acme/shop", "edge-1", true).await;
    let run = story.finished_run(&t.sha).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    assert_eq!(run["env"], "edge");
    let verify = run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "verify"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(verify["state"], "failed", "{run:#}");
    assert_eq!(
        world.job(t.pipeline_id, "deploy").status,
        "manual",
        "nothing after verify ran"
    );
    world
        .wait_for(|w| w.commit_comments(&t.sha).len() == 2)
        .await;
    let last = world.commit_comments(&t.sha).pop().unwrap_or_default();
    assert!(
        last.contains("verify") && last.contains("unreachable") && last.contains("127.0.0.1:9"),
        "the comment says which step and why: {last}"
    );
}
