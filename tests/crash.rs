//! Crash safety: hoist SIGKILLed mid-run (the real binary) and restarted on the same store.

mod story_support;
mod support;
mod swarm_support;

use std::time::Duration;

use story_support::Story;
use support::fake_gitlab::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_a_comment_is_in_flight_posts_it_once_and_finishes_the_run_once() {
    let Some(mut story) = Story::start_binary("crash").await else {
        return;
    };
    // GitLab stores the first comment but answers only after 3 s: hoist dies before it hears.
    story.world.fault(
        "POST projects/:id/repository/commits/:sha/comments",
        Fault::DelayAnswer(Duration::from_secs(3)),
    );
    let tag = story.world.push_tag("acme/shop", "v1.0.0", true).await;
    story
        .world
        .wait_for(|w| w.commit_comments(&tag.sha).len() == 1)
        .await;
    story.kill();

    story.restart().await;
    let run = story.finished_run(&tag.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}\n{}", story.logs());
    story
        .world
        .wait_for(|w| w.commit_comments(&tag.sha).len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let comments = story.world.commit_comments(&tag.sha);
    assert_eq!(comments.len(), 2, "each comment once: {comments:#?}");
    assert_eq!(
        story.world.calls("POST projects/:id/jobs/:id/play"),
        2,
        "manifest and deploy played once each: {:#?}",
        story.world.call_log()
    );
    let logs = story.logs();
    assert!(
        logs.contains("already posted before hoist stopped"),
        "the restarted hoist checked GitLab first:\n{logs}"
    );
    assert!(
        story
            .service_image()
            .starts_with(&format!("{}:v1.0.0@sha256:", story.image)),
        "{}",
        story.service_image()
    );
    for secret in support::secrets() {
        assert!(!logs.contains(&secret), "a secret in hoist's log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_convergence_follows_the_update_instead_of_making_a_second() {
    let Some(mut story) = Story::start_binary("crashconv").await else {
        return;
    };
    let first = story.world.push_tag("acme/shop", "v1.0.0", true).await;
    assert_eq!(story.finished_run(&first.sha).await["state"], "succeeded");

    let second = story.world.push_tag("acme/shop", "v1.1.0", true).await;
    // Kill once Swarm took the new image: the update is converging (the monitor is 5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !story.service_image().contains(":v1.1.0@") {
        assert!(std::time::Instant::now() < deadline, "{}", story.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    story.kill();
    let (_, version_at_kill) = story.service_id_version();

    story.restart().await;
    let run = story.finished_run(&second.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}\n{}", story.logs());
    let metrics = story.get_text("/metrics").await;
    let writes: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("hoist_docker_requests_total")
                && (l.contains("op=\"update_service\"") || l.contains("op=\"create_service\""))
        })
        .collect();
    assert!(
        writes.is_empty(),
        "the restarted hoist wrote no service: {writes:#?}"
    );
    let (_, version) = story.service_id_version();
    assert!(version >= version_at_kill);
    assert_eq!(
        story.world.calls("POST projects/:id/jobs/:id/play"),
        4,
        "two plays per tag, none again: {:#?}",
        story.world.call_log()
    );
    story
        .world
        .wait_for(|w| w.commit_comments(&second.sha).len() == 2)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_engine_restarted_mid_convergence_is_waited_out_with_one_update() {
    use story_support::Setup;
    if swarm_support::test_env().is_none() {
        return;
    }
    // An engine of this test's own: restarting the shared one would break the other tests.
    let engine = swarm_support::PrivateEngine::start();
    let setup = Setup {
        binary: true,
        docker_host: Some(engine.host.clone()),
        ..Setup::default()
    };
    let Some(story) = Story::start_with("dkrestart", setup).await else {
        return;
    };
    let first = story.world.push_tag("acme/shop", "v1.0.0", true).await;
    assert_eq!(
        story.finished_run(&first.sha).await["state"],
        "succeeded",
        "{}",
        story.logs()
    );

    let second = story.world.push_tag("acme/shop", "v1.1.0", true).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !story.service_image().contains(":v1.1.0@") {
        assert!(std::time::Instant::now() < deadline, "{}", story.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Swarm took the new image and is converging (the monitor is 5 s, so hoist's first look
    // is about 5 s after its write): restart the engine, down for 6 s, across that look.
    let blocking = tokio::task::spawn_blocking(move || {
        engine.restart(Duration::from_secs(6));
        engine
    });
    let engine = blocking.await.expect("restart");
    let run = story.finished_run(&second.sha).await;
    let logs = story.logs();
    assert_eq!(run["state"], "succeeded", "{run:#}\n{logs}");
    assert!(
        logs.contains("cannot read the service; will look again"),
        "hoist saw the engine away:\n{logs}"
    );
    let metrics = story.get_text("/metrics").await;
    let writes = |op: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("hoist_docker_requests_total") && l.contains(&format!("op=\"{op}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        (writes("create_service"), writes("update_service")),
        (1.0, 1.0),
        "one create and one update:\n{metrics}"
    );
    assert!(story.service_image().contains(":v1.1.0@sha256:"));
    story
        .world
        .wait_for(|w| w.commit_comments(&second.sha).len() == 2)
        .await;
    drop(story);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_a_play_was_sent_but_before_its_answer_never_plays_twice() {
    let Some(mut story) = Story::start_binary("crashplay").await else {
        return;
    };
    // GitLab plays the manifest job at once but answers only after 3 s: hoist dies first.
    story.world.fault(
        "POST projects/:id/jobs/:id/play",
        Fault::DelayAnswer(Duration::from_secs(3)),
    );
    let tag = story.world.push_tag("acme/shop", "v1.0.0", true).await;
    story
        .world
        .wait_for(|w| w.calls("POST projects/:id/jobs/:id/play") == 1)
        .await;
    story.kill();

    story.restart().await;
    let run = story.finished_run(&tag.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}\n{}", story.logs());
    assert_eq!(
        story.world.calls("POST projects/:id/jobs/:id/play"),
        2,
        "manifest (before the kill) and deploy, none again: {:#?}",
        story.world.call_log()
    );
    story
        .world
        .wait_for(|w| w.commit_comments(&tag.sha).len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(story.world.commit_comments(&tag.sha).len(), 2);
}
