//! Soak: thousands of mixed deliveries while hoist (the real binary) is SIGKILLed and restarted.
//!
//! Afterwards: every delivery that was answered 200 is in the store exactly once as
//! processed or ignored (its copies as duplicates), nothing is left queued, every
//! run is in a final state, each tag had at most one run, and the swarm runs the
//! last requested tag at its digest. Sized for CI: about a minute.

mod story_support;
mod support;
mod swarm_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hoist::store::{DeliveryState, Store};
use story_support::Story;

/// Deliveries the flood sends (a fifth of them repeat an earlier key).
const DELIVERIES: usize = 2000;
/// Times hoist is SIGKILLed and restarted while the flood and the deploys go on.
const KILLS: usize = 3;

/// One delivery of the mix: event, body, idempotency key.
fn delivery(i: usize) -> (&'static str, String, String) {
    let key = if i % 5 == 4 {
        format!("soak-{}", i - 3) // a redelivery of an earlier one
    } else {
        format!("soak-{i}")
    };
    let n = if i % 5 == 4 { i - 3 } else { i };
    let (event, body) = match n % 4 {
        0 => (
            "Push Hook",
            support::body("push", "acme/shop", &format!(r#","ref":"refs/heads/b{n}""#)),
        ),
        1 => (
            "Note Hook",
            support::body(
                "note",
                "acme/shop",
                &format!(
                    r#","user":{{"id":7,"username":"dave"}},"object_attributes":{{"id":{n},"note":"looks good {n}","noteable_type":"Commit","action":"create"}}"#
                ),
            ),
        ),
        2 => (
            "Job Hook",
            support::body(
                "build",
                "acme/shop",
                &format!(
                    r#","build_id":{n},"build_name":"lint","build_status":"success","sha":"{:040x}","ref":"main""#,
                    n
                ),
            ),
        ),
        _ => (
            "Pipeline Hook",
            support::body(
                "pipeline",
                "acme/shop",
                &format!(
                    r#","object_attributes":{{"id":{n},"ref":"main","tag":false,"sha":"{:040x}","status":"running"}},"builds":[]"#,
                    n
                ),
            ),
        ),
    };
    (event, body, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_and_deploys_survive_repeated_sigkills() {
    let Some(mut story) = Story::start_binary("soak").await else {
        return;
    };
    let url = format!("http://127.0.0.1:{}/hooks/gitlab", story.port);
    let answered: Arc<std::sync::Mutex<HashMap<String, u16>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));

    // The flood: 4 senders, each delivery tried once; what got a 200 must be kept.
    let mut senders = Vec::new();
    for lane in 0..4 {
        let (url, answered, client) = (url.clone(), answered.clone(), story.client.clone());
        senders.push(tokio::spawn(async move {
            for i in (lane..DELIVERIES).step_by(4) {
                let (event, body, key) = delivery(i);
                let sent = client
                    .post(&url)
                    .header("X-Gitlab-Event", event)
                    .header("X-Gitlab-Token", support::TOKEN)
                    .header("Idempotency-Key", &key)
                    .body(body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                if let Ok(resp) = sent {
                    let status = resp.status().as_u16();
                    if status == 200 {
                        answered
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, status);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let flood = {
        let done = done.clone();
        tokio::spawn(async move {
            for s in senders {
                let _ = s.await;
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    // Meanwhile: tags pushed, and hoist killed and restarted.
    let mut tags = Vec::new();
    for k in 0..KILLS {
        tags.push(
            story
                .world
                .push_tag("acme/shop", &format!("v1.{k}.0"), true)
                .await,
        );
        tokio::time::sleep(Duration::from_millis(700 + 300 * k as u64)).await;
        story.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        story.restart().await;
    }
    flood.await.expect("flood");
    assert!(done.load(Ordering::SeqCst));
    // The last request, with hoist up: this is what the swarm must run in the end.
    let last = story.world.push_tag("acme/shop", "v2.0.0", true).await;
    let run = story.finished_run(&last.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}\n{}", story.logs());
    let digest = run["digest"].as_str().expect("digest").to_string();

    // Wait until the worker drained the queue and no run is open.
    let store = Store::open(&story.db.url).await.expect("open the store");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let queued = store.queue_depth().await.expect("queue depth");
        let open = story
            .runs()
            .await
            .iter()
            .filter(|r| ["queued", "running"].contains(&r["state"].as_str().unwrap_or("")))
            .count();
        if queued == 0 && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{queued} deliveries queued, {open} runs open\n{}",
            story.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every answered delivery: exactly one row processed or ignored, the rest duplicates.
    let rows = store.deliveries(None, 1_000_000).await.expect("deliveries");
    let answered = answered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        answered.len() > DELIVERIES / 2,
        "most of the flood was answered: {}",
        answered.len()
    );
    let mut by_key: HashMap<&str, Vec<DeliveryState>> = HashMap::new();
    for r in &rows {
        by_key
            .entry(r.idempotency_key.as_str())
            .or_default()
            .push(r.state);
    }
    for key in answered.keys() {
        let states = by_key
            .get(key.as_str())
            .unwrap_or_else(|| panic!("answered delivery {key} is not in the store"));
        let kept = states
            .iter()
            .filter(|s| matches!(s, DeliveryState::Processed | DeliveryState::Ignored))
            .count();
        assert_eq!(kept, 1, "{key}: {states:?}");
        assert!(
            states.iter().all(|s| *s != DeliveryState::Queued),
            "{key}: {states:?}"
        );
    }

    eprintln!(
        "soak: {} deliveries sent, {} keys answered 200, {} rows stored, {KILLS} kills",
        DELIVERIES,
        answered.len(),
        rows.len()
    );

    // Runs: all final, at most one per tag commit that is not superseded or refused.
    let runs = story.runs().await;
    for t in tags.iter().chain([&last]) {
        let for_tag: Vec<_> = runs
            .iter()
            .filter(|r| r["sha"] == t.sha.as_str() && r["state"] != "superseded")
            .collect();
        assert!(for_tag.len() <= 1, "{}: {for_tag:#?}", t.tag);
    }
    let plays = story.world.calls("POST projects/:id/jobs/:id/play");
    let succeeded = runs.iter().filter(|r| r["state"] == "succeeded").count();
    assert!(
        plays <= 2 * runs.len(),
        "no job played twice: {plays} plays for {} runs",
        runs.len()
    );
    assert!(succeeded >= 1);

    // The swarm runs the last requested tag at its digest.
    assert_eq!(
        story.service_image(),
        format!("{}:v2.0.0@{digest}", story.image)
    );
    let logs = story.logs();
    for secret in support::secrets() {
        assert!(!logs.contains(&secret), "a secret in hoist's log");
    }
}
