//! Webhook intake against the real binary: authentication, bad input, dedupe, durability, shutdown.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use support::*;

fn token(t: &str) -> Vec<(&'static str, String)> {
    vec![("X-Gitlab-Token", t.to_string())]
}

#[tokio::test]
async fn authentication_matrix() {
    let hoist = Hoist::start(Options::default()).await;
    let shop = body("tag_push", "acme/shop", r#","ref":"refs/tags/v1.0.0""#);
    let signed = body("tag_push", "acme/signed", r#","ref":"refs/tags/v1.0.0""#);
    let both = body("tag_push", "acme/both", r#","ref":"refs/tags/v1.0.0""#);
    let tp = Some("Tag Push Hook");
    let now = now();

    // Token-only project.
    assert_eq!(
        hoist.post(tp, shop.clone(), &token(TOKEN)).await.0,
        200,
        "right token"
    );
    assert_eq!(
        hoist.post(tp, shop.clone(), &token("wrong")).await.0,
        401,
        "wrong token"
    );
    assert_eq!(
        hoist
            .post(tp, shop.clone(), &token(&format!("{TOKEN}x")))
            .await
            .0,
        401,
        "token with a suffix"
    );
    assert_eq!(
        hoist.post(tp, shop.clone(), &[]).await.0,
        401,
        "missing token"
    );
    let unknown = body("tag_push", "acme/unknown", "");
    let (status, text) = hoist.post(tp, unknown.clone(), &token(TOKEN)).await;
    assert_eq!(
        (status, text.as_str()),
        (401, "unauthorized\n"),
        "unknown project looks like a bad token"
    );

    // Signing-token project.
    let h = signed_headers(SIGNING_KEY_RAW, "msg_valid", now, signed.as_bytes());
    assert_eq!(
        hoist.post(tp, signed.clone(), &h).await.0,
        200,
        "valid signature"
    );
    let h = signed_headers(SIGNING_KEY_RAW, "msg_tampered", now, signed.as_bytes());
    let tampered = signed.replace("v1.0.0", "v6.6.6");
    assert_eq!(hoist.post(tp, tampered, &h).await.0, 401, "tampered body");
    let h = signed_headers(SIGNING_KEY_RAW, "msg_old", now - 301, signed.as_bytes());
    assert_eq!(
        hoist.post(tp, signed.clone(), &h).await.0,
        401,
        "expired timestamp"
    );
    let h = signed_headers(SIGNING_KEY_RAW, "msg_future", now + 400, signed.as_bytes());
    assert_eq!(
        hoist.post(tp, signed.clone(), &h).await.0,
        401,
        "timestamp from the future"
    );
    let mut h = signed_headers(SIGNING_KEY_RAW, "msg_many", now, signed.as_bytes());
    let wrong = hoist::webhook::auth::sign(
        b"some-other-key-of-32-bytes-long!",
        "msg_many",
        now,
        signed.as_bytes(),
    );
    h[2].1 = format!("v1,bm9wZQ== {wrong} {}", h[2].1);
    assert_eq!(
        hoist.post(tp, signed.clone(), &h).await.0,
        200,
        "several signatures, one valid"
    );
    let mut h = signed_headers(SIGNING_KEY_RAW, "msg_nosig", now, signed.as_bytes());
    h.pop();
    assert_eq!(
        hoist.post(tp, signed.clone(), &h).await.0,
        401,
        "signature header missing"
    );

    // Project with token and signing token: the signature decides, the token alone is not enough.
    assert_eq!(
        hoist.post(tp, both.clone(), &token(TOKEN_BOTH)).await.0,
        401,
        "token-only to a signing project"
    );
    let mut h = signed_headers(SIGNING_KEY_RAW_BOTH, "msg_both", now, both.as_bytes());
    h.push(("X-Gitlab-Token", TOKEN_BOTH.to_string()));
    assert_eq!(
        hoist.post(tp, both.clone(), &h).await.0,
        200,
        "token and signature"
    );
    let mut h = signed_headers(
        SIGNING_KEY_RAW_BOTH,
        "msg_both_badtoken",
        now,
        both.as_bytes(),
    );
    h.push(("X-Gitlab-Token", "whatever".to_string()));
    assert_eq!(
        hoist.post(tp, both.clone(), &h).await.0,
        200,
        "signature valid, token not checked"
    );
    let h = signed_headers(SIGNING_KEY_RAW, "msg_wrongkey", now, both.as_bytes());
    assert_eq!(
        hoist.post(tp, both.clone(), &h).await.0,
        401,
        "signed with another project's key"
    );

    let (_, metrics) = hoist.get("/metrics", None).await;
    let metric = |outcome: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("hoist_webhook_deliveries_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(metric("accepted"), 5, "{metrics}");
    assert_eq!(metric("unauthorized"), 9, "{metrics}");
    assert_eq!(metric("unknown_project"), 1, "{metrics}");
    assert!(
        metrics.contains("hoist_webhook_ack_seconds_bucket"),
        "{metrics}"
    );
    let logs = hoist.logs();
    assert!(
        logs.contains("webhook for a project hoist does not serve"),
        "{logs}"
    );
    assert!(logs.contains("not authentic"), "{logs}");
    hoist.assert_no_secrets();
}

#[tokio::test]
async fn bad_input_gets_a_clear_answer() {
    let limit = 4096;
    let hoist = Hoist::start(Options {
        max_body_bytes: limit,
        ..Options::default()
    })
    .await;
    let tp = Some("Tag Push Hook");
    let (status, text) = hoist.post(tp, "{not json", &token(TOKEN)).await;
    assert_eq!(
        (status, text.as_str()),
        (400, "body is not a JSON object\n")
    );
    assert_eq!(
        hoist.post(tp, "[1,2]", &token(TOKEN)).await.0,
        400,
        "JSON but not an object"
    );
    // Broken after the project: answered (the receiver reads only that far) and kept, then
    // recorded by the worker as not understood, never acted on.
    let broken = r#"{"object_kind":"tag_push","project":{"id":1,"path_with_namespace":"acme/shop"},"commits":["#;
    let (status, text) = hoist.post(tp, broken, &token(TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    hoist.wait_processed().await;
    let stored = hoist.deliveries("").await;
    assert_eq!(stored[0]["state"], "ignored", "{stored:#?}");
    assert!(
        stored[0]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("not understood")),
        "{stored:#?}"
    );
    let ok = body("tag_push", "acme/shop", "");
    let (status, text) = hoist.post(None, ok.clone(), &token(TOKEN)).await;
    assert_eq!(
        (status, text.as_str()),
        (400, "missing X-Gitlab-Event header\n")
    );

    let padded = |k: usize| {
        body(
            "tag_push",
            "acme/shop",
            &format!(r#","pad":"{}""#, "x".repeat(k)),
        )
    };
    let sized = |n: usize| padded(n - padded(0).len());
    let exact = sized(limit);
    assert_eq!(exact.len(), limit);
    assert!(serde_json::from_str::<serde_json::Value>(&exact).is_ok());
    assert_eq!(
        hoist.post(tp, exact, &token(TOKEN)).await.0,
        200,
        "at the limit"
    );
    let over = sized(limit + 1);
    assert_eq!(
        hoist.post(tp, over.clone(), &token(TOKEN)).await.0,
        413,
        "one byte over"
    );
    // Without Content-Length (chunked), the limit still holds.
    let stream = futures::stream::iter(
        over.into_bytes()
            .chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = hoist
        .client
        .post(hoist.url("/hooks/gitlab"))
        .header("X-Gitlab-Event", "Tag Push Hook")
        .header("X-Gitlab-Token", TOKEN)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("chunked post");
    assert_eq!(resp.status().as_u16(), 413, "chunked, over the limit");
    hoist.assert_no_secrets();
}

#[tokio::test]
async fn one_key_sent_twenty_times_concurrently_is_accepted_once() {
    let hoist = Arc::new(Hoist::start(Options::default()).await);
    let b = body("pipeline", "acme/shop", r#","object_attributes":{"id":42}"#);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let hoist = hoist.clone();
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = token(TOKEN);
            h.push(("Idempotency-Key", "0a1b2c3d-same-key".to_string()));
            hoist.post(Some("Pipeline Hook"), b, &h).await
        }));
    }
    let mut statuses = HashMap::new();
    for t in tasks {
        let (status, text) = t.await.expect("task");
        assert_eq!(status, 200);
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
    assert!(
        rows.iter()
            .all(|r| r["idempotency_key"] == "0a1b2c3d-same-key")
    );

    // Without Idempotency-Key, webhook-id (signing projects) and then the body hash dedupe.
    let signed = body(
        "pipeline",
        "acme/signed",
        r#","object_attributes":{"id":43}"#,
    );
    for _ in 0..2 {
        let h = signed_headers(SIGNING_KEY_RAW, "msg_dedupe", now(), signed.as_bytes());
        hoist.post(Some("Pipeline Hook"), signed.clone(), &h).await;
    }
    let plain = body("pipeline", "acme/shop", r#","object_attributes":{"id":44}"#);
    let first = hoist
        .post(Some("Pipeline Hook"), plain.clone(), &token(TOKEN))
        .await
        .1;
    let second = hoist
        .post(Some("Pipeline Hook"), plain.clone(), &token(TOKEN))
        .await
        .1;
    assert!(
        first.contains("accepted") && second.contains("duplicate"),
        "{first} {second}"
    );
    let rows = hoist.deliveries("state=duplicate&limit=1000").await;
    assert!(rows.iter().any(|r| r["idempotency_key"] == "msg_dedupe"));
    assert!(rows.iter().any(|r| {
        r["idempotency_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("sha256:"))
    }));
    hoist.assert_no_secrets();
}

#[tokio::test]
async fn unused_events_are_stored_as_ignored_and_used_ones_processed() {
    let hoist = Hoist::start(Options::default()).await;
    let push = body("push", "acme/shop", r#","ref":"refs/heads/main""#);
    let (status, text) = hoist.post(Some("Push Hook"), push, &token(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"ignored\""), "{text}");
    let tag = fixture("tag_push.json");
    let (status, text) = hoist.post(Some("Tag Push Hook"), tag, &token(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"accepted\""), "{text}");
    hoist.wait_processed().await;
    let rows = hoist.deliveries("").await;
    let by_event: HashMap<&str, &serde_json::Value> = rows
        .iter()
        .map(|r| (r["event"].as_str().unwrap_or(""), r))
        .collect();
    assert_eq!(by_event["Push Hook"]["state"], "ignored");
    assert_eq!(by_event["Tag Push Hook"]["state"], "processed");
    let summary = by_event["Tag Push Hook"]["summary"].as_str().unwrap_or("");
    assert!(summary.starts_with("tag "), "{summary}");
    let logs = hoist.logs();
    assert!(
        logs.contains(summary),
        "the worker logs what the event means"
    );
    hoist.assert_no_secrets();
}

#[tokio::test]
async fn api_token_guards_api_metrics_and_dashboard_but_not_health_or_hooks() {
    let hoist = Hoist::start(Options {
        api_token: true,
        ..Options::default()
    })
    .await;
    for path in ["/api/v1/deliveries", "/metrics", "/"] {
        assert_eq!(hoist.get(path, None).await.0, 401, "{path} without token");
        assert_eq!(
            hoist.get(path, Some("nope")).await.0,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            hoist.get(path, Some(API_TOKEN)).await.0,
            200,
            "{path} with the token"
        );
    }
    assert_eq!(hoist.get("/healthz", None).await.0, 200);
    let (status, text) = hoist.get("/readyz", None).await;
    assert_eq!(status, 503, "docker socket does not exist");
    assert!(text.contains("docker:"), "{text}");
    let (status, _) = hoist
        .get("/api/v1/deliveries?state=bogus", Some(API_TOKEN))
        .await;
    assert_eq!(status, 400);
    hoist.assert_no_secrets();
}

/// Deploys are never open: without `api_token` the deploy API answers 403 (GitLab must
/// reach hoist, so whoever reaches the webhook would reach it too); with one, a request
/// needs the bearer.
#[tokio::test]
async fn the_deploy_api_needs_api_token() {
    // An environment acme/shop does not have: past the gate, a quick 400 (no GitLab call).
    let request = r#"{"project":"acme/shop","env":"nope","tag":"v1.0.0"}"#;
    let post = |hoist: &Hoist, bearer: Option<&'static str>| {
        let mut req = hoist
            .client
            .post(hoist.url("/api/v1/deploys"))
            .header("content-type", "application/json")
            .body(request);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        async move {
            let resp = req.send().await.expect("post deploy");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
    };
    let open = Hoist::start(Options::default()).await;
    let (status, text) = post(&open, None).await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("server.api_token"),
        "says how to turn it on: {text}"
    );
    let (status, _) = post(&open, Some(API_TOKEN)).await;
    assert_eq!(status, 403, "a bearer does not open it either");
    assert!(open.deliveries("").await.is_empty());

    let guarded = Hoist::start(Options {
        api_token: true,
        ..Options::default()
    })
    .await;
    assert_eq!(post(&guarded, None).await.0, 401);
    assert_eq!(post(&guarded, Some("nope")).await.0, 401);
    let (status, text) = post(&guarded, Some(API_TOKEN)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("no environment nope"), "{text}");
    guarded.assert_no_secrets();
}

/// Sends deliveries from several connections, SIGKILLs hoist while they arrive, restarts it,
/// and checks every delivery answered 200 is stored and processed exactly once.
#[tokio::test]
async fn answered_deliveries_survive_sigkill() {
    let mut hoist = Hoist::start(Options::default()).await;
    let url = hoist.url("/hooks/gitlab");
    let client = hoist.client.clone();
    let acked = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut senders = Vec::new();
    for conn in 0..8 {
        let (url, client, acked) = (url.clone(), client.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..2000 {
                let key = format!("key-{conn}-{i}");
                let b = body(
                    "pipeline",
                    "acme/shop",
                    &format!(r#","object_attributes":{{"id":{i},"status":"running"}}"#),
                );
                let sent = client
                    .post(&url)
                    .header("X-Gitlab-Event", "Pipeline Hook")
                    .header("X-Gitlab-Token", TOKEN)
                    .header("Idempotency-Key", &key)
                    .body(b)
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
    // Kill once a good number of deliveries were answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().map(|a| a.len()).unwrap_or(0) < 300 {
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
    assert!(acked.len() >= 300);

    hoist.spawn().await;
    // GitLab resending what was answered before the kill gets `duplicate`: the restarted
    // hoist read the keys it had not yet indexed back from their rows.
    for key in acked.iter().take(50) {
        let headers = [
            ("X-Gitlab-Token", TOKEN.to_string()),
            ("Idempotency-Key", key.clone()),
        ];
        let (status, text) = hoist
            .post(
                Some("Pipeline Hook"),
                body("pipeline", "acme/shop", ""),
                &headers,
            )
            .await;
        assert_eq!(status, 200);
        let answer: serde_json::Value = serde_json::from_str(&text).expect("json answer");
        assert_eq!(answer["status"], "duplicate", "{key} resent: {answer}");
    }
    hoist.wait_processed().await;
    let rows = hoist.deliveries("limit=1000").await;
    assert!(rows.iter().all(|r| r["state"] != "queued"));
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut all = Vec::new();
    // Page through everything (newest first, 1000 at most per call) via the store directly.
    let db = hoist.dir.path().join("hoist.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open db");
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT idempotency_key, state FROM deliveries")
            .fetch_all(&pool)
            .await
            .expect("read deliveries");
    for (key, state) in stored {
        assert_ne!(state, "queued", "{key} still queued");
        if state != "duplicate" {
            *seen.entry(key.clone()).or_default() += 1;
        }
        all.push(key);
    }
    for key in &acked {
        assert_eq!(
            seen.get(key),
            Some(&1),
            "{key} answered 200 but stored {:?} times",
            seen.get(key)
        );
    }
    assert!(seen.values().all(|n| *n == 1), "a key was processed twice");
    hoist.assert_no_secrets();
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_cleanly() {
    let mut hoist = Hoist::start(Options::default()).await;
    let url = hoist.url("/hooks/gitlab");
    let client = hoist.client.clone();
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for conn in 0..4 {
        let (url, client, acked) = (url.clone(), client.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let key = format!("term-{conn}-{i}");
                let r = client
                    .post(&url)
                    .header("X-Gitlab-Event", "Job Hook")
                    .header("X-Gitlab-Token", TOKEN)
                    .header("Idempotency-Key", &key)
                    .body(body("build", "acme/shop", &format!(r#","build_id":{i}"#)))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 200 => {
                        if let Ok(mut a) = acked.lock() {
                            a.push(key)
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    while acked.lock().map(|a| a.len()).unwrap_or(0) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = hoist.terminate();
    assert!(
        status.success(),
        "hoist exits 0 on SIGTERM: {status}\n{}",
        hoist.logs()
    );
    for s in senders {
        let _ = s.await;
    }
    assert!(hoist.logs().contains("shut down cleanly"));
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    hoist.spawn().await;
    hoist.wait_processed().await;
    let db = hoist.dir.path().join("hoist.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open db");
    let keys: HashSet<String> =
        sqlx::query_scalar("SELECT idempotency_key FROM deliveries WHERE state <> 'duplicate'")
            .fetch_all(&pool)
            .await
            .expect("keys")
            .into_iter()
            .collect();
    for k in &acked {
        assert!(keys.contains(k), "{k} was answered 200 but is not stored");
    }
}

#[tokio::test]
async fn a_flood_of_refused_deliveries_is_cut_off_per_address_without_slowing_gitlab() {
    use hoist::webhook::limit::MAX_FAILURES;
    let hoist = Hoist::start(Options::default()).await;
    let tp = Some("Tag Push Hook");
    let ok = body("tag_push", "acme/shop", "");
    // The attacker comes from another loopback address than "GitLab" (127.0.0.1).
    let attacker = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let flood = |n: usize| {
        let attacker = attacker.clone();
        let url = hoist.url("/hooks/gitlab");
        let ok = ok.clone();
        async move {
            let mut statuses = Vec::new();
            for _ in 0..n {
                let resp = attacker
                    .post(&url)
                    .header("X-Gitlab-Event", "Tag Push Hook")
                    .header("X-Gitlab-Token", "guessing")
                    .body(ok.clone())
                    .send()
                    .await
                    .expect("flood");
                statuses.push(resp.status().as_u16());
            }
            statuses
        }
    };
    let statuses = flood(MAX_FAILURES as usize + 20).await;
    assert!(
        statuses[..MAX_FAILURES as usize].iter().all(|s| *s == 401),
        "refused as unauthorized until the limit: {statuses:?}"
    );
    assert!(
        statuses[MAX_FAILURES as usize..].iter().all(|s| *s == 429),
        "then cut off: {statuses:?}"
    );
    // GitLab's authentic deliveries, from its own address, go through meanwhile.
    let right = token(TOKEN);
    let (_, (status, _)) = tokio::join!(flood(50), hoist.post(tp, ok.clone(), &right));
    assert_eq!(status, 200);
    // Even the right token from the limited address waits out the window.
    let resp = attacker
        .post(hoist.url("/hooks/gitlab"))
        .header("X-Gitlab-Event", "Tag Push Hook")
        .header("X-Gitlab-Token", TOKEN)
        .body(ok.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 429);
    let (_, metrics) = hoist.get("/metrics", None).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hoist_webhook_deliveries_total")
                && l.contains("outcome=\"rate_limited\"")),
        "{metrics}"
    );
    hoist.assert_no_secrets();
}

/// Behind a trusted reverse proxy (here every request comes from 127.0.0.1, the proxy),
/// the flood limit counts the sender the proxy names in `X-Forwarded-For`: a flood
/// through the proxy cuts off its sender, not the proxy, and GitLab's deliveries through
/// the same proxy go on.
#[tokio::test]
async fn behind_a_trusted_proxy_the_flood_limit_counts_the_forwarded_sender() {
    use hoist::webhook::limit::MAX_FAILURES;
    let hoist = Hoist::start(Options {
        trusted_proxies: Some(r#"["127.0.0.1"]"#),
        ..Options::default()
    })
    .await;
    let ok = body("tag_push", "acme/shop", "");
    let send = |sender: &'static str, token: &'static str| {
        let req = hoist
            .client
            .post(hoist.url("/hooks/gitlab"))
            .header("X-Gitlab-Event", "Tag Push Hook")
            .header("X-Gitlab-Token", token)
            // What a client wrote first is forgeable: the proxy's own entry is the last.
            .header("X-Forwarded-For", format!("192.0.2.1, {sender}"))
            .body(ok.clone());
        async move { req.send().await.expect("post").status().as_u16() }
    };
    let mut statuses = Vec::new();
    for _ in 0..MAX_FAILURES + 5 {
        statuses.push(send("203.0.113.9", "guessing").await);
    }
    assert!(
        statuses[..MAX_FAILURES as usize].iter().all(|s| *s == 401)
            && statuses[MAX_FAILURES as usize..].iter().all(|s| *s == 429),
        "the forwarded sender is cut off: {statuses:?}"
    );
    assert_eq!(send("198.51.100.7", TOKEN).await, 200, "GitLab goes on");
    assert_eq!(
        send("203.0.113.9", TOKEN).await,
        429,
        "the flooding sender waits out its window"
    );
}

#[tokio::test]
async fn a_locked_store_delays_the_answer_but_loses_nothing() {
    use sqlx::Connection;
    let hoist = Hoist::start(Options::default()).await;
    let db = format!("sqlite://{}", hoist.dir.path().join("hoist.db").display());
    // Another writer holds SQLite's write lock for a second (a backup, an operator's sqlite3).
    let mut conn = sqlx::SqliteConnection::connect(&db).await.expect("connect");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .expect("take the write lock");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        sqlx::query("COMMIT")
            .execute(&mut conn)
            .await
            .expect("release the lock");
    });
    let started = std::time::Instant::now();
    let (status, text) = hoist
        .post(
            Some("Tag Push Hook"),
            body("tag_push", "acme/shop", ""),
            &token(TOKEN),
        )
        .await;
    let waited = started.elapsed();
    release.await.expect("release");
    assert_eq!(status, 200, "{text}");
    assert!(
        waited >= Duration::from_millis(900),
        "answered only once stored: {waited:?}"
    );
    hoist.wait_processed().await;
    assert_eq!(hoist.deliveries("").await.len(), 1);
}
