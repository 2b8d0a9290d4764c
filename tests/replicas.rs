//! Several hoist replicas on one PostgreSQL database: the work is shared and done once.
//!
//! Without `HOIST_TEST_POSTGRES_URL` these skip; with `CI` set they fail instead.

mod story_support;
mod support;
mod swarm_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::Connection;
use story_support::{Setup, Story};
use support::test_db::TestDb;
use support::{Hoist, Options, TOKEN, body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_a_burst_and_process_every_delivery_once() {
    let Some(db) = TestDb::postgres("replicas").await else {
        return;
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            Hoist::start(Options {
                store_url: Some(db.url.clone()),
                ..Options::default()
            })
            .await,
        );
    }
    // 600 deliveries spread over the replicas, a fifth of them sent again to another replica
    // at the same time (GitLab redelivering while the first copy is in flight).
    let total = 600usize;
    let mut sends = Vec::new();
    for i in 0..total {
        let copies = if i % 5 == 0 { 2 } else { 1 };
        for c in 0..copies {
            let replica = &replicas[(i + c) % 3];
            let (url, client) = (replica.url("/hooks/gitlab"), replica.client.clone());
            let (event, kind) = if i % 2 == 0 {
                ("Tag Push Hook", "tag_push")
            } else {
                ("Job Hook", "build")
            };
            let payload = body(kind, "acme/shop", &format!(r#","n":{i}"#));
            sends.push(async move {
                client
                    .post(url)
                    .header("X-Gitlab-Event", event)
                    .header("X-Gitlab-Token", TOKEN)
                    .header("Idempotency-Key", format!("burst-{i}"))
                    .body(payload)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            });
        }
    }
    use futures::StreamExt;
    let statuses: Vec<_> = futures::stream::iter(sends)
        .buffer_unordered(64)
        .collect()
        .await;
    let mut answered = 0;
    for status in statuses {
        assert_eq!(status.expect("answered"), 200);
        answered += 1;
    }
    assert_eq!(answered, total + total / 5);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !replicas[0]
        .deliveries("state=queued&limit=1")
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "deliveries still queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT idempotency_key, state, lease_owner FROM deliveries")
            .fetch_all(&mut conn)
            .await
            .expect("deliveries");
    let mut done: HashMap<String, usize> = HashMap::new();
    let mut workers: HashMap<String, usize> = HashMap::new();
    for (key, state, owner) in &rows {
        match state.as_str() {
            "duplicate" => {}
            "processed" | "ignored" => {
                *done.entry(key.clone()).or_default() += 1;
                *workers
                    .entry(owner.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            other => panic!("delivery {key} ended {other}"),
        }
    }
    assert_eq!(done.len(), total, "every key stored");
    assert!(
        done.values().all(|n| *n == 1),
        "each key processed once: {:?}",
        done.iter().filter(|(_, n)| **n != 1).collect::<Vec<_>>()
    );
    assert_eq!(rows.len(), total + total / 5, "every copy recorded");
    assert!(
        workers.len() >= 2,
        "the replicas' workers shared the queue: {workers:?}"
    );
    for replica in &replicas {
        replica.assert_no_secrets();
    }
    drop(replicas);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_is_taken_over_with_one_play_and_one_update() {
    let setup = Setup {
        binary: true,
        postgres: true,
        replicas: 3,
        ..Setup::default()
    };
    let Some(mut story) = Story::start_with("takeover", setup).await else {
        return;
    };
    let first = story.world.push_tag("acme/shop", "v1.0.0", true).await;
    assert_eq!(
        story.finished_run(&first.sha).await["state"],
        "succeeded",
        "{}",
        story.logs()
    );

    // The second tag's manifest job takes 4 s: kill the replica running it meanwhile.
    story
        .world
        .set_job_duration("manifest", Duration::from_secs(4));
    let second = story.world.push_tag("acme/shop", "v1.1.0", true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let owner = loop {
        let runs = story.runs().await;
        let running = runs
            .iter()
            .find(|r| r["sha"] == second.sha.as_str() && r["state"] == "running");
        if let Some(owner) = running.and_then(|r| r["owner"].as_str())
            && story.world.job(second.pipeline_id, "manifest").status == "running"
        {
            break owner.to_string();
        }
        assert!(Instant::now() < deadline, "{runs:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pids = story.replica_pids();
    let victim = pids
        .iter()
        .position(|p| p.is_some_and(|pid| owner.contains(&format!("-{pid}-"))))
        .unwrap_or_else(|| panic!("owner {owner} is none of the replicas {pids:?}"));
    story.kill_replica(victim);

    let run = story.finished_run(&second.sha).await;
    let logs = story.logs();
    assert_eq!(run["state"], "succeeded", "{run:#}\n{logs}");
    assert_ne!(
        run["owner"].as_str(),
        Some(owner.as_str()),
        "another replica finished it"
    );
    assert_eq!(
        story.world.calls("POST projects/:id/jobs/:id/play"),
        4,
        "manifest and deploy once per tag, none again: {:#?}",
        story.world.call_log()
    );
    // One update: Swarm's previous spec is still the first tag's.
    let previous = story.inspect(
        &story.service,
        "{{.PreviousSpec.TaskTemplate.ContainerSpec.Image}}",
    );
    assert!(previous.contains(":v1.0.0@sha256:"), "{previous}");
    assert!(story.service_image().contains(":v1.1.0@sha256:"));
    story
        .world
        .wait_for(|w| w.commit_comments(&second.sha).len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        story.world.commit_comments(&second.sha).len(),
        2,
        "each comment once"
    );
}
