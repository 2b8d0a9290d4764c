//! hoist on a PostgreSQL store, end to end: the deploy stories of `tests/deploy_story.rs`
//! and the intake guarantees of `tests/intake.rs` (dedupe, nothing answered is lost), each
//! on a fresh database of the test cluster (`scripts/testenv.sh`).
//!
//! Without `HOIST_TEST_POSTGRES_URL` these skip; with `CI` set they fail instead.

mod stories;
mod story_support;
mod support;
mod swarm_support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use story_support::Story;
use support::test_db::TestDb;
use support::{Hoist, Options, TOKEN, body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_tags_deploy_and_converge_on_postgres() {
    let Some(story) = Story::start_postgres("pgstory").await else {
        return;
    };
    stories::release_tags_deploy_update_and_never_go_backwards(&story).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_comments_on_merge_requests_on_postgres() {
    let Some(story) = Story::start_postgres("pgmr").await else {
        return;
    };
    stories::deploy_comments_on_merge_requests(&story).await;
}

/// hoist serving on a fresh PostgreSQL database; None when there is no test cluster.
/// Bind both (`let Some((db, hoist))`) so hoist stops before its database is dropped.
async fn hoist_on_postgres(label: &str) -> Option<(TestDb, Hoist)> {
    let db = TestDb::postgres(label).await?;
    let hoist = Hoist::start(Options {
        store_url: Some(db.url.clone()),
        ..Options::default()
    })
    .await;
    Some((db, hoist))
}

fn token() -> Vec<(&'static str, String)> {
    vec![("X-Gitlab-Token", TOKEN.to_string())]
}

#[tokio::test]
async fn one_key_sent_twenty_times_concurrently_is_accepted_once_on_postgres() {
    let Some((db, hoist)) = hoist_on_postgres("pgdedupe").await else {
        return;
    };
    let hoist = Arc::new(hoist);
    let b = body("pipeline", "acme/shop", r#","object_attributes":{"id":42}"#);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (hoist, b) = (hoist.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = token();
            h.push(("Idempotency-Key", "0a1b2c3d-same-key".to_string()));
            hoist.post(Some("Pipeline Hook"), b, &h).await
        }));
    }
    let mut statuses = HashMap::new();
    for t in tasks {
        let (status, text) = t.await.expect("task");
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json answer");
        *statuses
            .entry(v["status"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(statuses.get("accepted"), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get("duplicate"), Some(&19), "{statuses:?}");
    hoist.wait_processed().await;
    let rows = hoist.deliveries("limit=100").await;
    assert_eq!(rows.len(), 20);
    assert_eq!(
        rows.iter().filter(|r| r["state"] == "duplicate").count(),
        19
    );
    assert_eq!(rows.iter().filter(|r| r["state"] != "duplicate").count(), 1);
    assert!(rows.iter().all(|r| r["state"] != "queued"), "{rows:#?}");

    // The body hash dedupes deliveries without an Idempotency-Key here too.
    let plain = body("pipeline", "acme/shop", r#","object_attributes":{"id":44}"#);
    let first = hoist
        .post(Some("Pipeline Hook"), plain.clone(), &token())
        .await
        .1;
    let second = hoist.post(Some("Pipeline Hook"), plain, &token()).await.1;
    assert!(
        first.contains("accepted") && second.contains("duplicate"),
        "{first} {second}"
    );

    // What the API showed is what PostgreSQL holds.
    let mut conn = sqlx::PgConnection::connect(&db.url)
        .await
        .expect("connect to the test database");
    let kept: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries WHERE idempotency_key = '0a1b2c3d-same-key' AND state <> 'duplicate'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count");
    assert_eq!(kept, 1);
    let _ = conn.close().await;
    hoist.assert_no_secrets();
}

#[tokio::test]
async fn answered_deliveries_survive_sigkill_on_postgres() {
    let Some((db, mut hoist)) = hoist_on_postgres("pgkill").await else {
        return;
    };
    let url = hoist.url("/hooks/gitlab");
    let acked = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut senders = Vec::new();
    for conn in 0..4 {
        let (url, client, acked) = (url.clone(), hoist.client.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let key = format!("kill-{conn}-{i}");
                let sent = client
                    .post(&url)
                    .header("X-Gitlab-Event", "Job Hook")
                    .header("X-Gitlab-Token", TOKEN)
                    .header("Idempotency-Key", &key)
                    .body(body("build", "acme/shop", &format!(r#","build_id":{i}"#)))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 200 => {
                        if let Ok(mut a) = acked.lock() {
                            a.insert(key);
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().map(|a| a.len()).unwrap_or(0) < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries are not being answered:\n{}",
            hoist.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hoist.kill();
    for s in senders {
        let _ = s.await;
    }
    let acked: HashSet<String> = acked.lock().map(|a| a.clone()).unwrap_or_default();

    hoist.spawn().await;
    hoist.wait_processed().await;
    let mut conn = sqlx::PgConnection::connect(&db.url)
        .await
        .expect("connect to the test database");
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT idempotency_key, state FROM deliveries")
            .fetch_all(&mut conn)
            .await
            .expect("read deliveries");
    let _ = conn.close().await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (key, state) in stored {
        assert_ne!(state, "queued", "{key} still queued");
        if state != "duplicate" {
            *seen.entry(key).or_default() += 1;
        }
    }
    for key in &acked {
        assert_eq!(
            seen.get(key),
            Some(&1),
            "{key} answered 200 but stored {:?} times",
            seen.get(key)
        );
    }
    hoist.assert_no_secrets();
}
