//! The store's behaviour, checked the same way on SQLite and on PostgreSQL.
//!
//! Each scenario is one async fn taking a fresh [`TestDb`]; `on_both!` turns it into
//! `sqlite::NAME` (a temp file) and `postgres::NAME` (a fresh database on the test
//! cluster, skipped when `HOIST_TEST_POSTGRES_URL` is unset, a failure when `CI` is set).

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::Row;

use super::runs::{self, NewRun};
use super::test_db::TestDb;
use super::{
    Backend, DeliveryState, Finished, NewDelivery, PackedBody, Store, finish_deliveries, now_text,
};

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(db) = super::TestDb::postgres(stringify!($name)).await {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}

on_both!(
    opens_migrated_and_reopens,
    one_key_twenty_times_at_once_is_one_delivery,
    duplicates_within_a_batch,
    queued_in_order_of_arrival,
    finish_deliveries_marks_only_queued,
    one_active_run_per_commit,
    refused_run_skips_its_steps,
    steps_and_run_states,
    supersede_older_queued_runs,
    outbox_pending_sending_sent_failed,
    runnable_and_live_run,
    bodies_are_packed_and_unpacked_bodies_still_read,
    batch_placeholders_fit_the_backend,
    checkpoints_copy_the_wal_on_sqlite_only,
    old_finished_deliveries_lose_their_bodies_then_their_records,
    a_batch_reads_at_most_its_bytes_of_bodies,
    the_queue_is_read_through_its_own_index,
);

async fn open(db: &TestDb) -> Store {
    Store::open(&db.url)
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", db_kind(db)))
}

fn db_kind(db: &TestDb) -> &'static str {
    if db.is_postgres() {
        "the PostgreSQL store"
    } else {
        "the SQLite store"
    }
}

fn delivery(key: &str, state: DeliveryState) -> NewDelivery {
    NewDelivery {
        idempotency_key: key.to_string(),
        event: "Tag Push Hook".to_string(),
        project: "acme/shop".to_string(),
        received_at: now_text(),
        state,
        body: PackedBody::pack(&format!("{{\"key\":\"{key}\"}}")),
    }
}

fn run(sha: &str) -> NewRun {
    NewRun {
        project: "acme/shop".to_string(),
        env: "production".to_string(),
        trigger: "tag".to_string(),
        requested_by: Some("alice".to_string()),
        requester_id: Some(7),
        ref_name: "v1.0.0".to_string(),
        sha: sha.to_string(),
        tag: Some("v1.0.0".to_string()),
        pipeline_id: Some(4_000_000_000),
        state: runs::QUEUED.to_string(),
        ..NewRun::default()
    }
}

async fn insert_run(store: &Store, new: &NewRun) -> Option<i64> {
    let mut tx = store.begin().await.expect("begin");
    let id = runs::insert_run(&mut tx, new).await.expect("insert_run");
    tx.commit().await.expect("commit");
    id
}

async fn set_state(store: &Store, id: i64, state: &str, error: Option<&str>) {
    let mut tx = store.begin().await.expect("begin");
    runs::set_run_state(&mut tx, id, state, error)
        .await
        .expect("set_run_state");
    tx.commit().await.expect("commit");
}

async fn opens_migrated_and_reopens(db: TestDb) {
    let store = open(&db).await;
    let expected = if db.is_postgres() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    assert_eq!(store.backend(), expected);
    store.ping().await.expect("ping");
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .expect("migrations table");
    assert_eq!(applied, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    store
        .insert_deliveries(&[&delivery("k1", DeliveryState::Queued)])
        .await
        .expect("insert");
    store.close().await;
    // A second start finds its migrations applied (same checksums) and its rows kept.
    let store = open(&db).await;
    assert_eq!(store.queue_depth().await.expect("depth"), 1);
    if !db.is_postgres() {
        let pragma = |name: &'static str| {
            let store = store.clone();
            async move {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
                    .fetch_one(store.pool())
                    .await
                    .expect("pragma");
                // journal_mode answers text, the others numbers.
                row.try_get::<String, _>(0)
                    .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                    .expect("pragma value")
            }
        };
        assert_eq!(pragma("journal_mode").await, "wal");
        // NORMAL: commits write the log and Tx::commit syncs it after the write turn.
        assert_eq!(pragma("synchronous").await, "1", "synchronous=NORMAL");
        assert_eq!(pragma("busy_timeout").await, "10000");
        assert_eq!(pragma("foreign_keys").await, "1");
        assert_eq!(
            pragma("page_size").await,
            super::SQLITE_PAGE_SIZE.to_string(),
            "a store hoist creates has its page size"
        );
    }
    store.close().await;
}

async fn one_key_twenty_times_at_once_is_one_delivery(db: TestDb) {
    let store = open(&db).await;
    let copies: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let d = delivery("same-key", DeliveryState::Queued);
                store.insert_deliveries(&[&d]).await.expect("insert")[0]
            })
        })
        .collect();
    let mut states = BTreeMap::new();
    for copy in copies {
        *states
            .entry(copy.await.expect("task").state.as_str())
            .or_insert(0) += 1;
    }
    assert_eq!(
        states,
        BTreeMap::from([("duplicate", 19), ("queued", 1)]),
        "{}",
        db_kind(&db)
    );
    let queued = store.queued(100).await.expect("queued");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].text(), "{\"key\":\"same-key\"}");
    let rows = store.deliveries(None, 100).await.expect("deliveries");
    assert_eq!(rows.len(), 20, "every copy is recorded");
    let duplicates = store
        .deliveries(Some(DeliveryState::Duplicate), 100)
        .await
        .expect("duplicates");
    assert_eq!(duplicates.len(), 19);
    assert!(
        duplicates
            .iter()
            .all(|d| d.summary.as_deref() == Some("duplicate of an earlier delivery"))
    );
    store.close().await;
}

async fn duplicates_within_a_batch(db: TestDb) {
    let store = open(&db).await;
    let first = delivery("a", DeliveryState::Queued);
    let again = delivery("a", DeliveryState::Queued);
    let other = delivery("b", DeliveryState::Ignored);
    let out = store
        .insert_deliveries(&[&first, &again, &other])
        .await
        .expect("insert");
    let states: Vec<_> = out.iter().map(|i| i.state).collect();
    assert_eq!(
        states,
        [
            DeliveryState::Queued,
            DeliveryState::Duplicate,
            DeliveryState::Ignored
        ]
    );
    // Ids are distinct and increase in the order the copies were inserted.
    assert!(out[0].id < out[2].id && out[0].id != out[1].id);
    // A later batch repeating a stored key is a duplicate too.
    let out = store.insert_deliveries(&[&again]).await.expect("insert");
    assert_eq!(out[0].state, DeliveryState::Duplicate);
    // More rows than one multi-row statement holds.
    let many: Vec<_> = (0..600)
        .map(|i| delivery(&format!("bulk-{i}"), DeliveryState::Queued))
        .collect();
    let refs: Vec<_> = many.iter().collect();
    let out = store.insert_deliveries(&refs).await.expect("bulk insert");
    assert!(out.iter().all(|i| i.state == DeliveryState::Queued));
    assert_eq!(store.queue_depth().await.expect("depth"), 601);
    store.close().await;
}

async fn queued_in_order_of_arrival(db: TestDb) {
    let store = open(&db).await;
    for key in ["first", "ignored", "second", "third"] {
        let state = if key == "ignored" {
            DeliveryState::Ignored
        } else {
            DeliveryState::Queued
        };
        store
            .insert_deliveries(&[&delivery(key, state)])
            .await
            .expect("insert");
    }
    let queued = store.queued(10).await.expect("queued");
    let keys: Vec<_> = queued.iter().map(|q| q.text()).collect();
    assert_eq!(
        keys,
        [
            "{\"key\":\"first\"}",
            "{\"key\":\"second\"}",
            "{\"key\":\"third\"}"
        ]
    );
    assert!(queued.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(store.queued(2).await.expect("queued").len(), 2);
    assert_eq!(store.queue_depth().await.expect("depth"), 3);
    // The API lists newest first.
    let listed = store.deliveries(None, 10).await.expect("deliveries");
    assert_eq!(listed[0].idempotency_key, "third");
    assert_eq!(listed[3].idempotency_key, "first");
    assert_eq!(listed[2].state, DeliveryState::Ignored);
    store.close().await;
}

async fn finish_deliveries_marks_only_queued(db: TestDb) {
    let store = open(&db).await;
    let ins = store
        .insert_deliveries(&[
            &delivery("a", DeliveryState::Queued),
            &delivery("b", DeliveryState::Queued),
            &delivery("c", DeliveryState::Queued),
        ])
        .await
        .expect("insert");
    let run_id = insert_run(&store, &run("abc")).await.expect("run");
    let done = [
        Finished {
            id: ins[0].id,
            state: DeliveryState::Processed,
            summary: "queued run".into(),
            run_id: Some(run_id),
        },
        Finished {
            id: ins[1].id,
            state: DeliveryState::Ignored,
            summary: "no environment matches".into(),
            run_id: None,
        },
    ];
    let now = now_text();
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        finish_deliveries(&mut tx, &done, &now)
            .await
            .expect("finish"),
        2
    );
    tx.commit().await.expect("commit");
    // Already finished: a second pass changes nothing.
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        finish_deliveries(&mut tx, &done, &now)
            .await
            .expect("finish"),
        0
    );
    tx.commit().await.expect("commit");
    let processed = store
        .deliveries(Some(DeliveryState::Processed), 10)
        .await
        .expect("processed");
    assert_eq!(processed.len(), 1);
    assert_eq!(processed[0].summary.as_deref(), Some("queued run"));
    assert_eq!(processed[0].run_id, Some(run_id));
    assert_eq!(processed[0].processed_at.as_deref(), Some(now.as_str()));
    let ignored = store
        .deliveries(Some(DeliveryState::Ignored), 10)
        .await
        .expect("ignored");
    assert_eq!(ignored[0].run_id, None);
    let queued = store.queued(10).await.expect("queued");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, ins[2].id);
    store.close().await;
}

async fn one_active_run_per_commit(db: TestDb) {
    let store = open(&db).await;
    let first = insert_run(&store, &run("abc")).await.expect("first run");
    assert_eq!(
        insert_run(&store, &run("abc")).await,
        None,
        "a queued run covers the commit"
    );
    let other_env = NewRun {
        env: "staging".to_string(),
        ..run("abc")
    };
    assert!(insert_run(&store, &other_env).await.is_some());
    set_state(&store, first, runs::RUNNING, None).await;
    assert_eq!(
        insert_run(&store, &run("abc")).await,
        None,
        "a running run covers it"
    );
    set_state(&store, first, runs::SUCCEEDED, None).await;
    let again = insert_run(&store, &run("abc"))
        .await
        .expect("after success");
    assert!(again > first);
    // Concurrent inserts of one commit: the unique index lets exactly one through.
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { insert_run(&store, &run("def")).await })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        created += usize::from(attempt.await.expect("task").is_some());
    }
    assert_eq!(created, 1, "{}", db_kind(&db));
    let mut conn = store.pool().acquire().await.expect("acquire");
    let for_commit = runs::runs_for_commit(&mut conn, "acme/shop", "production", "abc")
        .await
        .expect("runs_for_commit");
    let ids: Vec<_> = for_commit.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![again, first], "newest first");
    let row = &for_commit[1];
    assert_eq!(row.pipeline_id, Some(4_000_000_000), "ids beyond 32 bits");
    assert_eq!(row.requester_id, Some(7));
    assert_eq!(row.tag.as_deref(), Some("v1.0.0"));
    assert_eq!(row.mr_iid, None);
    drop(conn);
    store.close().await;
}

async fn refused_run_skips_its_steps(db: TestDb) {
    let store = open(&db).await;
    let refused = NewRun {
        state: runs::REFUSED.to_string(),
        error: Some("alice may not deploy to production".to_string()),
        ..run("abc")
    };
    let id = insert_run(&store, &refused).await.expect("refused run");
    let row = store.run(id).await.expect("run").expect("exists");
    assert_eq!(row.state, runs::REFUSED);
    assert!(row.finished_at.is_some());
    assert_eq!(row.steps.len(), runs::STEPS.len());
    assert!(row.steps.iter().all(|s| s.state == "skipped"));
    // A refused run does not hold the commit.
    assert!(insert_run(&store, &run("abc")).await.is_some());
    store.close().await;
}

async fn steps_and_run_states(db: TestDb) {
    let store = open(&db).await;
    let id = insert_run(&store, &run("abc")).await.expect("run");
    let row = store.run(id).await.expect("run").expect("exists");
    let names: Vec<_> = row.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, runs::STEPS, "steps in order");
    assert!(row.steps.iter().all(|s| s.state == "pending"));
    assert_eq!(row.started_at, None);

    set_state(&store, id, runs::RUNNING, None).await;
    let mut tx = store.begin().await.expect("begin");
    runs::start_step(&mut tx, id, "manifest")
        .await
        .expect("start");
    runs::finish_step(&mut tx, id, "manifest", "succeeded", "2 images")
        .await
        .expect("finish");
    runs::finish_step(&mut tx, id, "verify", "succeeded", "never started")
        .await
        .expect("finish unstarted");
    runs::record_step(
        &mut tx,
        id,
        "deploy-job",
        "succeeded",
        "2024-01-01T00:00:00.000Z",
        "2024-01-01T00:00:05.000Z",
        "job 12",
    )
    .await
    .expect("record");
    runs::start_step(&mut tx, id, "swarm").await.expect("start");
    runs::fail_open_step(&mut tx, id, "swarm", "hoist stopped")
        .await
        .expect("fail open");
    runs::fail_open_step(&mut tx, id, "manifest", "not open: untouched")
        .await
        .expect("fail closed step");
    let services = [
        runs::ServiceImage {
            service: "shop".into(),
            image: "registry/acme/shop:v1.0.0".into(),
            digest: "sha256:abc".into(),
        },
        runs::ServiceImage {
            service: "shop-worker".into(),
            image: "registry/acme/worker:v1.0.0".into(),
            digest: "sha256:def".into(),
        },
    ];
    runs::set_run_images(&mut tx, id, &services)
        .await
        .expect("images");
    tx.commit().await.expect("commit");

    let row = store.run(id).await.expect("run").expect("exists");
    assert_eq!(row.state, runs::RUNNING);
    assert!(row.started_at.is_some());
    assert_eq!(row.finished_at, None);
    assert_eq!(row.image.as_deref(), Some("registry/acme/shop:v1.0.0"));
    assert_eq!(row.digest.as_deref(), Some("sha256:abc"));
    assert_eq!(row.services, services, "every service, in order");
    assert_eq!(
        row.service("shop-worker")
            .map(runs::ServiceImage::pinned)
            .as_deref(),
        Some("registry/acme/worker:v1.0.0@sha256:def")
    );
    let step = |name: &str| {
        row.steps
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .expect("step")
    };
    assert_eq!(step("manifest").state, "succeeded");
    assert_eq!(step("manifest").detail.as_deref(), Some("2 images"));
    assert!(step("manifest").started_at.is_some());
    assert_eq!(
        step("verify").started_at,
        step("verify").finished_at,
        "a step finished unstarted starts when it ends"
    );
    assert_eq!(
        step("deploy-job").started_at.as_deref(),
        Some("2024-01-01T00:00:00.000Z")
    );
    assert_eq!(step("swarm").state, "failed");
    assert_eq!(step("swarm").detail.as_deref(), Some("hoist stopped"));
    assert_eq!(step("converge").state, "pending");
    assert_eq!(store.running_runs().await.expect("running").len(), 1);

    set_state(&store, id, runs::FAILED, Some("swarm update failed")).await;
    let row = store.run(id).await.expect("run").expect("exists");
    assert_eq!(row.state, runs::FAILED);
    assert_eq!(row.error.as_deref(), Some("swarm update failed"));
    assert!(row.finished_at.is_some());
    assert!(
        row.steps
            .iter()
            .filter(|s| s.name == "converge" || s.name == "report")
            .all(|s| s.state == "skipped"),
        "a finished run's pending steps are skipped"
    );
    // A later state without an error keeps the first one.
    set_state(&store, id, runs::ROLLED_BACK, None).await;
    let row = store.run(id).await.expect("run").expect("exists");
    assert_eq!(row.error.as_deref(), Some("swarm update failed"));
    assert!(store.running_runs().await.expect("running").is_empty());
    let listed = store
        .runs(
            Some("acme/shop"),
            Some("production"),
            Some(runs::ROLLED_BACK),
            10,
        )
        .await
        .expect("runs");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].steps.len(), runs::STEPS.len());
    assert!(
        store
            .runs(Some("acme/other"), None, None, 10)
            .await
            .expect("runs")
            .is_empty()
    );
    store.close().await;
}

async fn supersede_older_queued_runs(db: TestDb) {
    let store = open(&db).await;
    let a = insert_run(&store, &run("aaa")).await.expect("a");
    let b = insert_run(&store, &run("bbb")).await.expect("b");
    let c = insert_run(&store, &run("ccc")).await.expect("c");
    let mut tx = store.begin().await.expect("begin");
    let older = runs::supersede_older(&mut tx, "acme/shop", "production", c)
        .await
        .expect("supersede");
    tx.commit().await.expect("commit");
    let ids: Vec<_> = older.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![a, b]);
    for id in [a, b] {
        let row = store.run(id).await.expect("run").expect("exists");
        assert_eq!(row.state, runs::SUPERSEDED);
        assert_eq!(row.error, Some(format!("superseded by run {c}")));
        assert!(row.steps.iter().all(|s| s.state == "skipped"));
    }
    assert_eq!(
        store.run(c).await.expect("run").expect("exists").state,
        runs::QUEUED
    );
    store.close().await;
}

async fn outbox_pending_sending_sent_failed(db: TestDb) {
    let store = open(&db).await;
    let run_id = insert_run(&store, &run("abc")).await.expect("run");
    let mut tx = store.begin().await.expect("begin");
    for (kind, target) in [
        ("commit_comment", "abc"),
        ("commit_status", "abc"),
        ("react", "5/77"),
    ] {
        runs::enqueue(&mut tx, Some(run_id), "acme/shop", kind, target, "body")
            .await
            .expect("enqueue");
    }
    runs::enqueue(&mut tx, None, "acme/shop", "mr_note", "5", "help")
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");

    let pending = store.pending_outbox(10).await.expect("pending");
    assert_eq!(pending.len(), 4);
    assert!(
        pending.windows(2).all(|w| w[0].id < w[1].id),
        "oldest first"
    );
    assert!(
        pending
            .iter()
            .all(|o| o.state == "pending" && o.attempts == 0)
    );
    assert_eq!(pending[0].env.as_deref(), Some("production"));
    assert_eq!(pending[3].env, None, "no run, no environment");
    assert_eq!(pending[3].run_id, None);
    assert_eq!(store.pending_outbox(2).await.expect("pending").len(), 2);

    let [comment, status, react, note] = [0, 1, 2, 3].map(|i| pending[i].id);
    store.mark_sending(comment).await.expect("sending");
    store
        .outbox_result(status, "pending", Some("gitlab answered 502"))
        .await
        .expect("retry later");
    store
        .outbox_result(react, "failed", Some("404 not found"))
        .await
        .expect("failed");
    store.mark_sending(note).await.expect("sending");
    store.outbox_result(note, "sent", None).await.expect("sent");

    let pending = store.pending_outbox(10).await.expect("pending");
    let by_id: BTreeMap<_, _> = pending.iter().map(|o| (o.id, o)).collect();
    assert_eq!(by_id.len(), 2, "sent and failed items leave the outbox");
    assert_eq!(by_id[&comment].state, "sending");
    assert_eq!(by_id[&status].state, "pending");
    assert_eq!(by_id[&status].attempts, 1);

    let sent_at: Vec<(i64, Option<String>, Option<String>)> =
        sqlx::query("SELECT id, sent_at, error FROM outbox ORDER BY id")
            .fetch_all(store.pool())
            .await
            .expect("outbox rows")
            .iter()
            .map(|r| {
                (
                    r.try_get("id").expect("id"),
                    r.try_get("sent_at").expect("sent_at"),
                    r.try_get("error").expect("error"),
                )
            })
            .collect();
    assert!(sent_at[3].1.is_some(), "sent items have a time");
    assert!(sent_at[2].1.is_none(), "failed ones do not");
    assert_eq!(sent_at[2].2.as_deref(), Some("404 not found"));
    store.close().await;
}

async fn runnable_and_live_run(db: TestDb) {
    let store = open(&db).await;
    let staging = |sha: &str| NewRun {
        env: "staging".to_string(),
        ..run(sha)
    };
    let a = insert_run(&store, &run("aaa")).await.expect("a");
    let b = insert_run(&store, &run("bbb")).await.expect("b");
    let c = insert_run(&store, &staging("ccc")).await.expect("c");
    let d = insert_run(&store, &staging("ddd")).await.expect("d");
    let ids = |rows: Vec<runs::RunRow>| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(store.runnable().await.expect("runnable")), vec![a, c]);

    set_state(&store, c, runs::RUNNING, None).await;
    assert_eq!(
        ids(store.runnable().await.expect("runnable")),
        vec![a],
        "staging is busy"
    );
    assert!(
        store
            .live_run("acme/shop", "staging")
            .await
            .expect("live")
            .is_none()
    );

    set_state(&store, c, runs::SUCCEEDED, None).await;
    assert_eq!(ids(store.runnable().await.expect("runnable")), vec![a, d]);
    let live = store
        .live_run("acme/shop", "staging")
        .await
        .expect("live")
        .expect("c is live");
    assert_eq!(live.id, c);

    set_state(&store, d, runs::RUNNING, None).await;
    set_state(&store, d, runs::SUCCEEDED, None).await;
    assert_eq!(
        store
            .live_run("acme/shop", "staging")
            .await
            .expect("live")
            .map(|r| r.id),
        Some(d)
    );
    set_state(&store, a, runs::RUNNING, None).await;
    set_state(&store, a, runs::FAILED, Some("verify failed")).await;
    assert!(
        store
            .live_run("acme/shop", "production")
            .await
            .expect("live")
            .is_none(),
        "a failed run is not live"
    );
    assert_eq!(ids(store.runnable().await.expect("runnable")), vec![b]);
    store.close().await;
}

/// New bodies are stored packed; a body stored as text before migration 0004 reads as
/// before, and a packed body that does not unpack reads as empty instead of stalling.
async fn bodies_are_packed_and_unpacked_bodies_still_read(db: TestDb) {
    let store = open(&db).await;
    let text = format!("{{\"builds\":[{}]}}", r#"{"name":"deploy"},"#.repeat(200));
    let mut new = delivery("packed", DeliveryState::Queued);
    new.body = PackedBody::pack(&text);
    let id = store.insert_deliveries(&[&new]).await.expect("insert")[0].id;
    let row = sqlx::query("SELECT body, packed FROM delivery_bodies WHERE delivery_id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .expect("body row");
    let (body, packed): (String, Vec<u8>) = (row.get(0), row.get(1));
    assert_eq!(body, "");
    assert!(
        packed.len() * 4 < text.len(),
        "{} of {} bytes",
        packed.len(),
        text.len()
    );
    for (key, body, packed) in [
        ("from-0003", Some(r#"{"old":true}"#), None),
        ("damaged", Some(""), Some(vec![0xff_u8; 12])),
    ] {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO deliveries (idempotency_key, dedupe_key, event, project, received_at, state)
             VALUES ($1, $1, 'Pipeline Hook', 'acme/shop', $2, 'queued') RETURNING id",
        )
        .bind(key)
        .bind(now_text())
        .fetch_one(store.pool())
        .await
        .expect("row");
        sqlx::query("INSERT INTO delivery_bodies (delivery_id, body, packed) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(body)
            .bind(packed)
            .execute(store.pool())
            .await
            .expect("body");
    }
    let queued = store.queued(10).await.expect("queued");
    let bodies: Vec<_> = queued.iter().map(|q| q.text()).collect();
    assert_eq!(bodies, [text.as_str(), r#"{"old":true}"#, ""]);
    store.close().await;
}

/// Batch statements number their placeholders on PostgreSQL and leave them plain on
/// SQLite (where each numbered one costs a scan of all the names).
async fn batch_placeholders_fit_the_backend(db: TestDb) {
    let store = open(&db).await;
    let mut conn = store.pool().acquire().await.expect("connection");
    let mut params = super::Params::of(&conn);
    let mut sql = String::new();
    params.row(&mut sql, 3);
    let expected = if db.is_postgres() {
        "($1, $2, $3)"
    } else {
        "(?, ?, ?)"
    };
    assert_eq!(sql, expected);
    // And a statement built so binds its values in order.
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM (VALUES {sql}) AS v"
    )))
    .bind("a")
    .bind("b")
    .bind("c")
    .fetch_one(&mut *conn)
    .await
    .expect("select");
    let values: (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(values, ("a".into(), "b".into(), "c".into()));
    drop(conn);
    store.close().await;
}

/// The checkpoint task's step: on SQLite it copies the WAL's frames into the database
/// file (the connections' own checkpoint waits for 20,000 pages); PostgreSQL has none.
async fn checkpoints_copy_the_wal_on_sqlite_only(db: TestDb) {
    let store = open(&db).await;
    let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(store.pool())
        .await
        .unwrap_or(-1);
    for i in 0..20 {
        store
            .insert_deliveries(&[&delivery(&format!("ck-{i}"), DeliveryState::Queued)])
            .await
            .expect("insert");
    }
    let seen = store.checkpoint().await.expect("checkpoint");
    if db.is_postgres() {
        assert_eq!(seen, None);
    } else {
        assert_eq!(
            autocheckpoint,
            i64::from(super::checkpoint::WAL_SAFETY_PAGES)
        );
        let seen = seen.expect("SQLite checkpoints");
        assert!(seen.wal_frames > 0, "{seen:?}");
        assert_eq!(
            seen.copied, seen.wal_frames,
            "a quiet store is copied whole"
        );
    }
    // The task stops when told.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = super::checkpoint::spawn(store.clone(), stopped);
    assert_eq!(task.is_some(), !db.is_postgres());
    let _ = stop.send(true);
    if let Some(task) = task {
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the checkpoint task ends when told")
            .expect("task");
    }
    store.close().await;
}

#[test]
fn packed_bodies_round_trip_and_refuse_garbage() {
    for text in ["", "{}", "é ✓ 𝄞", &"x".repeat(100_000)] {
        let packed = PackedBody::pack(text);
        assert_eq!(PackedBody::unpack(packed.bytes()).as_deref(), Some(text));
    }
    assert_eq!(PackedBody::unpack(b""), None);
    assert_eq!(PackedBody::unpack(&[1, 0, 0]), None);
    // A size far beyond any body is refused before anything is allocated.
    assert_eq!(PackedBody::unpack(&[0xff, 0xff, 0xff, 0x7f, 0]), None);
    // Bytes that unpack but are not UTF-8.
    let latin1 = lz4_flex::compress_prepend_size(&[0xe9, 0x74, 0xe9]);
    assert_eq!(PackedBody::unpack(&latin1), None);
}

/// SQLite's writers take turns in the process: a second transaction waits for the
/// first to end (no busy polling, no `SQLITE_BUSY`), then goes on with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writers_take_turns() {
    let db = TestDb::sqlite();
    let store = open(&db).await;
    let mut first = store.begin().await.expect("first transaction");
    let d = delivery("turn-1", DeliveryState::Queued);
    super::insert_chunk(&mut first, &[&d])
        .await
        .expect("insert in the first");
    let second = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tx = store.begin().await.expect("second transaction");
            let d = delivery("turn-2", DeliveryState::Queued);
            super::insert_chunk(&mut tx, &[&d])
                .await
                .expect("insert in the second");
            tx.commit().await.expect("second commit");
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second transaction ran while the first held the write turn"
    );
    first.commit().await.expect("first commit");
    tokio::time::timeout(std::time::Duration::from_secs(5), second)
        .await
        .expect("the second transaction waited past the first's commit")
        .expect("second task");
    let queued = store.queued(10).await.expect("queued");
    let keys: Vec<&str> = queued.iter().map(|q| q.project.as_str()).collect();
    assert_eq!(queued.len(), 2, "{keys:?}");
    // A dropped transaction gives the turn back too.
    drop(store.begin().await.expect("third"));
    tokio::time::timeout(std::time::Duration::from_secs(5), store.begin())
        .await
        .expect("the turn came back after a drop")
        .expect("fourth")
        .rollback()
        .await
        .expect("rollback");
    store.close().await;
}

#[tokio::test]
async fn postgres_errors_never_print_the_password() {
    let Some(db) = TestDb::postgres("password").await else {
        return;
    };
    let mut url = url::Url::parse(&db.url).expect("url");
    url.set_password(Some("Wr0ngPassw0rdXyz"))
        .expect("password");
    let err = match Store::open(url.as_str()).await {
        Ok(_) => panic!("a wrong password opened the store"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("Wr0ngPassw0rdXyz"), "{err}");
    // The right one still works, and a malformed URL says so without quoting it.
    open(&db).await.close().await;
    let real = url::Url::parse(&db.url).expect("url");
    let password = real.password().expect("the test URL has a password");
    let malformed = db.url.replace("@127.0.0.1:", "@127.0.0.1:notaport");
    let err = Store::open(&malformed)
        .await
        .err()
        .expect("malformed url")
        .to_string();
    assert!(err.contains("store url is not valid"), "{err}");
    assert!(!err.contains(password), "{err}");
}

/// The CA of the test cluster's TLS certificate. The cluster of scripts/testenv.sh serves
/// TLS and names it: a cluster without it fails here rather than skipping the check.
fn test_cluster_ca() -> String {
    std::env::var("HOIST_TEST_POSTGRES_CA")
        .expect("HOIST_TEST_POSTGRES_CA names the test cluster's CA: start scripts/testenv.sh")
}

/// `url` with the server verified against the CA file `ca` (`sslmode=verify-full`).
fn verify_full(url: &str, ca: &str) -> url::Url {
    let mut url = url::Url::parse(url).expect("url");
    url.query_pairs_mut()
        .append_pair("sslmode", "verify-full")
        .append_pair("sslrootcert", ca);
    url
}

/// A PostgreSQL store over TLS, the server verified against a private CA
/// (`sslmode=verify-full&sslrootcert=…`); without that CA the same server is refused,
/// and the error does not quote the password.
#[tokio::test]
async fn postgres_over_tls_verifies_the_server() {
    let Some(db) = TestDb::postgres("tls").await else {
        return;
    };
    let ca = test_cluster_ca();
    let url = verify_full(&db.url, &ca);
    let store = Store::open(url.as_str()).await.expect("TLS store");
    let mut conn = store.pool().acquire().await.expect("a connection");
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .expect("pg_stat_ssl");
    assert!(tls, "the connection is encrypted");
    drop(conn);
    store.close().await;

    let mut unknown_ca = url::Url::parse(&db.url).expect("url");
    unknown_ca
        .query_pairs_mut()
        .append_pair("sslmode", "verify-full");
    let err = match Store::open(unknown_ca.as_str()).await {
        Ok(_) => panic!("a server signed by an unknown CA was trusted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("invalid peer certificate"), "{err}");
    let password = url.password().expect("the test URL has a password");
    assert!(!err.contains(password), "{err}");
}

/// Every connection to PostgreSQL sends its small writes at once (`TCP_NODELAY`). sqlx
/// 0.9.0 had stopped setting it: over TLS a query's messages leave in several small
/// writes, and each query then waited out the server's delayed ACK, about 40 ms
/// (docs/operations.md, "Intake benchmark"). Read from the sockets themselves, not timed;
/// a plain socket to the same port first shows that the check sees one without it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn postgres_connections_never_wait_for_delayed_acks() {
    let Some(db) = TestDb::postgres("nodelay").await else {
        return;
    };
    let url = verify_full(&db.url, &test_cluster_ca());
    let port = url.port().expect("the test URL names its port");

    let plain = std::net::TcpStream::connect(("127.0.0.1", port)).expect("a plain socket");
    assert!(
        sockets_to(port).contains(&(plain.local_addr().expect("its address").port(), false)),
        "the check does not see a socket without TCP_NODELAY"
    );
    drop(plain);

    let store = Store::open(url.as_str()).await.expect("TLS store");
    let mut conn = store.pool().acquire().await.expect("a connection");
    sqlx::query("SELECT 1")
        .execute(&mut *conn)
        .await
        .expect("a query");
    let sockets = sockets_to(port);
    assert!(!sockets.is_empty(), "no socket to port {port} found");
    let off = |sockets: Vec<(u16, bool)>| -> Vec<u16> {
        sockets
            .into_iter()
            .filter(|(_, nodelay)| !nodelay)
            .map(|(local, _)| local)
            .collect()
    };
    let first = off(sockets);
    if !first.is_empty() {
        // Tests run side by side in this process: another test's connection can be caught
        // between its connect and its setsockopt. One that never gets the flag (ours is
        // still held) is still without it a moment later.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let still: Vec<u16> = off(sockets_to(port))
            .into_iter()
            .filter(|local| first.contains(local))
            .collect();
        assert!(
            still.is_empty(),
            "the connections from ports {still:?} have TCP_NODELAY off"
        );
    }
    drop(conn);
    store.close().await;
}

/// This process's TCP sockets connected to 127.0.0.1:`port`: each one's local port, and
/// whether `TCP_NODELAY` is on.
#[cfg(target_os = "linux")]
fn sockets_to(port: u16) -> Vec<(u16, bool)> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd");
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        {
            continue;
        }
        let Some(peer) = socket_address(fd, libc::getpeername) else {
            continue;
        };
        if peer.sin_family != libc::AF_INET as libc::sa_family_t
            || u16::from_be(peer.sin_port) != port
        {
            continue;
        }
        let Some(local) = socket_address(fd, libc::getsockname) else {
            continue;
        };
        let mut on: libc::c_int = 0;
        let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `on` is a c_int and `size` says so; a descriptor closed meanwhile fails.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&raw mut on).cast(),
                &mut size,
            )
        };
        if rc == 0 {
            out.push((u16::from_be(local.sin_port), on != 0));
        }
    }
    out
}

/// A socket's IPv4 address by `getpeername` or `getsockname`; `None` if it has none.
#[cfg(target_os = "linux")]
fn socket_address(
    fd: i32,
    get: unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32,
) -> Option<libc::sockaddr_in> {
    // SAFETY: an all-zero sockaddr_in is a valid value of the type.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` has `len` bytes; the call writes at most that many.
    let rc = unsafe { get(fd, (&raw mut addr).cast(), &mut len) };
    (rc == 0 && len as usize <= std::mem::size_of::<libc::sockaddr_in>()).then_some(addr)
}

/// A PostgreSQL role admitted by its client certificate alone (`cert` in pg_hba.conf):
/// hoist presents it with `sslcert` and `sslkey` (no password in the URL), and without
/// them the server turns it away.
#[tokio::test]
async fn postgres_client_certificates_are_presented() {
    use sqlx::Connection;
    let Some(db) = TestDb::postgres("clientcert").await else {
        return;
    };
    let ca = test_cluster_ca();
    let dir = Path::new(&ca).parent().expect("the CA's directory");
    // scripts/testenv.sh admits hoist_cert by certificate; it owns this test's database.
    let name = url::Url::parse(&db.url).expect("url").path()[1..].to_string();
    let mut admin = sqlx::PgConnection::connect(&db.url).await.expect("admin");
    sqlx::raw_sql(
        "DO $$ BEGIN CREATE ROLE hoist_cert LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
    .execute(&mut admin)
    .await
    .expect("the role");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" OWNER TO hoist_cert"
    )))
    .execute(&mut admin)
    .await
    .expect("its database");
    let _ = admin.close().await;

    let mut as_cert = url::Url::parse(&db.url).expect("url");
    as_cert.set_username("hoist_cert").expect("user");
    as_cert.set_password(None).expect("no password");
    let mut url = verify_full(as_cert.as_str(), &ca);
    let without = url.clone();
    url.query_pairs_mut()
        .append_pair("sslcert", &dir.join("client.crt").to_string_lossy())
        .append_pair("sslkey", &dir.join("client.key").to_string_lossy());
    let store = Store::open(url.as_str())
        .await
        .expect("the store, by certificate");
    let (user, client): (String, Option<String>) = sqlx::query_as(
        "SELECT current_user::TEXT, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_one(store.pool())
    .await
    .expect("who");
    assert_eq!(
        (user.as_str(), client.as_deref()),
        ("hoist_cert", Some("/CN=hoist_cert"))
    );
    store
        .insert_deliveries(&[&delivery("by-cert", DeliveryState::Queued)])
        .await
        .expect("a write");
    store.close().await;

    let err = match Store::open(without.as_str()).await {
        Ok(_) => panic!("admitted without its certificate"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn unknown_scheme_is_refused_without_the_url() {
    for url in [
        "mysql://hoist:s3cretpass@db/hoist",
        "s3cretpass",
        "hoist.db",
        "",
    ] {
        let err = Store::open(url).await.err().expect("refused").to_string();
        assert!(
            err.contains("must start with sqlite: or postgres://"),
            "{url}: {err}"
        );
        assert!(!err.contains("s3cretpass"), "{err}");
    }
    let err = Store::open("mysql://x@y/z")
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("(got a mysql: URL)"), "{err}");
    assert_eq!(
        Backend::of_url("postgresql://h/db").ok(),
        Some(Backend::Postgres)
    );
    assert_eq!(Backend::of_url("sqlite:x.db").ok(), Some(Backend::Sqlite));
}

#[test]
fn redaction_cuts_the_password_out_of_any_error() {
    let url = "postgres://hoist:p%40ss+word@db/hoist";
    let e = sqlx::Error::Protocol("server said p%40ss+word and p@ss+word".into());
    let text = super::redact_url_error(&e, url);
    assert!(!text.contains("p%40ss"), "{text}");
    assert!(!text.contains("p@ss"), "{text}");
}

/// The migrations existing SQLite stores have applied, as released (1 and 2 at da5173c as
/// `migrations/000N_*.sql`, 3 with the leases, then 4 to 6 as they shipped): sqlx stores each one's SHA-384 and refuses
/// to open a store whose files no longer match. New migrations are appended here once shipped.
const RELEASED_SQLITE_CHECKSUMS: [(i64, &str); 6] = [
    (
        1,
        "c186b29d71b4fac9d32cba472e47e0bf88211105530dbc431dc2bc7d4a15c3931c6582544c8a01a378916ff18681f245",
    ),
    (
        2,
        "8543fb97e34bcf8cb89a8b0cd0f329e6450228b2571e2f8883be5227463825bbaf3adc6243c060443e97438f7e47226a",
    ),
    (
        3,
        "0ad2342982e06894f7a8c095c29e026a355054327540b65a5745002cb64d16705b97f12b561c999b2c11643e96c2ab36",
    ),
    (
        4,
        "0634e9a2f3c77b13936d1ac57483ec3d433ed78a9ed3d3742702b22007d381469ecf458d9e8338a2d4c865c5743d94fb",
    ),
    (
        5,
        "41c9a6ee7bfcce92cda92b52735db6b02a89578883e800a7cf5ddf709f41bbeb7e2aca0360bc6bc0a28f719964b865c7",
    ),
    (
        6,
        "1f304ea8f4ba8606159ebe79cf60f7fc23fd955e225f0a30a802b431532e6a652c7fcf087830e54fe3e39c92d9e0bf44",
    ),
];

#[test]
fn sqlite_migrations_keep_their_released_checksums() {
    let migrator = sqlx::migrate!("./migrations/sqlite");
    let found: Vec<(i64, String)> = migrator
        .iter()
        .map(|m| (m.version, hex::encode(&*m.checksum)))
        .collect();
    let released: Vec<(i64, String)> = RELEASED_SQLITE_CHECKSUMS
        .iter()
        .map(|(v, c)| (*v, c.to_string()))
        .collect();
    assert!(
        found.len() >= released.len() && found[..released.len()] == released[..],
        "a shipped SQLite migration changed: existing stores would refuse to open"
    );
}

/// A store created before the migrations moved to `migrations/sqlite/` (by hoist at
/// da5173c) opens, keeps its rows and takes new ones.
#[tokio::test]
async fn store_created_by_the_old_layout_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hoist.db");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/store-da5173c.sqlite");
    std::fs::copy(&fixture, &path).expect("copy the fixture");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("the old store opens");
    let rows = store.deliveries(None, 10).await.expect("deliveries");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].idempotency_key, "from-the-old-layout");
    let runs = store.runs(None, None, None, 10).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].steps.len(), runs::STEPS.len());
    let out = store
        .insert_deliveries(&[&delivery("new", DeliveryState::Queued)])
        .await
        .expect("insert");
    assert!(out[0].id > rows[0].id);
    // Migration 0007 marks the old rows' keys as in place (in dedupe_key): the intake
    // reloads none of them, and still finds the old key a duplicate.
    assert_eq!(keys_through(&store).await, rows[0].id);
    let mut intake = super::direct::SqliteIntake::open(&path).expect("intake");
    let old = delivery("from-the-old-layout", DeliveryState::Queued);
    let (again, _) = intake.insert(&[&old], &[]).expect("resend");
    assert_eq!(again[0].state, DeliveryState::Duplicate);
    drop(intake);
    store.close().await;
}

/// The two migration directories hold the same migrations: same names, and the same
/// statements once comments, spacing and the identity column definitions are set aside.
#[test]
fn migration_dirs_match() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let read = |dialect: &str| -> BTreeMap<String, String> {
        std::fs::read_dir(root.join(dialect))
            .expect("migrations dir")
            .map(|e| {
                let path = e.expect("entry").path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .expect("utf-8 name")
                    .to_string();
                (name, std::fs::read_to_string(&path).expect("read"))
            })
            .collect()
    };
    let sqlite = read("sqlite");
    let postgres = read("postgres");
    assert_eq!(
        sqlite.keys().collect::<Vec<_>>(),
        postgres.keys().collect::<Vec<_>>(),
        "migrations/sqlite and migrations/postgres must hold the same files"
    );
    assert!(sqlite.keys().all(|n| n.ends_with(".sql")));
    for (name, text) in &sqlite {
        // PostgreSQL's bytes are BYTEA, SQLite's BLOB.
        assert_eq!(
            normalise(text, "INTEGER PRIMARY KEY"),
            normalise(
                &postgres[name].replace(" BYTEA", " BLOB"),
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
            ),
            "{name} differs between the dialects beyond its identity columns"
        );
    }
}

/// Statements without comments, with spacing collapsed and `identity` replaced by a marker.
fn normalise(sql: &str, identity: &str) -> Vec<String> {
    let code: String = sql
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join(" ");
    let code = code
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace(" ,", ",");
    code.replace(identity, "<identity>")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn normalise_sees_real_differences() {
    let a = "-- c\nCREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT);";
    let b = "CREATE TABLE t (\n  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n  x TEXT\n); -- d";
    let identity = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY";
    assert_eq!(normalise(a, "INTEGER PRIMARY KEY"), normalise(b, identity));
    let c = "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, x BIGINT);";
    assert_ne!(normalise(a, "INTEGER PRIMARY KEY"), normalise(c, identity));
}

/// A new SQLite store and the intake's own connection to its file.
async fn sqlite_with_intake() -> (TestDb, Store, super::direct::SqliteIntake) {
    let db = TestDb::sqlite();
    let store = open(&db).await;
    let file = store.sqlite_file().expect("a SQLite file");
    let intake = super::direct::SqliteIntake::open(file).expect("intake connection");
    (db, store, intake)
}

/// The intake's own connection: a batch with a key repeated in it and an ignored event,
/// then a key stored before; the pool and the worker's reader see what it committed.
#[tokio::test]
async fn sqlite_intake_connection_dedupes_and_the_pool_reads_its_rows() {
    use super::direct::sync_wal;
    let (_db, store, mut intake) = sqlite_with_intake().await;
    assert_eq!(
        intake.synchronous().expect("pragma"),
        1,
        "NORMAL: the caller syncs the log"
    );
    let (a, b) = (
        delivery("in-a", DeliveryState::Queued),
        delivery("in-b", DeliveryState::Queued),
    );
    let ignored = delivery("in-c", DeliveryState::Ignored);
    let (first, _) = intake
        .insert(&[&a, &b, &a, &ignored], &[])
        .expect("first batch");
    let states: Vec<DeliveryState> = first.iter().map(|i| i.state).collect();
    assert_eq!(
        states,
        [
            DeliveryState::Queued,
            DeliveryState::Queued,
            DeliveryState::Duplicate,
            DeliveryState::Ignored
        ]
    );
    assert!(first.windows(2).all(|w| w[0].id < w[1].id), "{first:?}");
    let (second, _) = intake.insert(&[&b], &[]).expect("second batch");
    assert_eq!(second[0].state, DeliveryState::Duplicate);
    sync_wal(&store.wal().expect("a log")).expect("sync the log");

    let queued = store.queued(10).await.expect("queued");
    let ids: Vec<i64> = queued.iter().map(|q| q.id).collect();
    assert_eq!(ids, [first[0].id, first[1].id]);
    assert_eq!(queued[0].text(), r#"{"key":"in-a"}"#);
    assert_eq!(queued[1].text(), r#"{"key":"in-b"}"#);
    let rows = store.deliveries(None, 10).await.expect("deliveries");
    assert_eq!(rows.len(), 5);
    let duplicates: Vec<&str> = rows
        .iter()
        .filter(|r| r.state == DeliveryState::Duplicate)
        .map(|r| r.summary.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(duplicates, [super::DUPLICATE_SUMMARY; 2]);
    store.close().await;
}

/// The keys in `delivery_keys` (migration 0007), in key order.
async fn delivery_keys(store: &Store) -> Vec<String> {
    sqlx::query_scalar("SELECT key FROM delivery_keys ORDER BY key")
        .fetch_all(store.pool())
        .await
        .expect("the key table")
}

/// The SQLite intake's mark `keys_through` (migration 0007).
async fn keys_through(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT value FROM intake_marks WHERE name = 'keys_through'")
        .fetch_one(store.pool())
        .await
        .expect("the keys_through mark")
}

/// The SQLite intake's keys (docs/webhooks.md, "Deduplication"). A key is a duplicate while
/// it waits in memory, while its run goes into `delivery_keys`, once it is there, after a
/// restart (reloaded from its row), and when an older row holds it in `dedupe_key`. A
/// finished run moves `keys_through` up; ids that come back down (every later row
/// deleted) move it back to 0, so a restart still finds their keys.
#[tokio::test]
async fn sqlite_intake_keys_stay_known_in_memory_in_their_table_and_across_restarts() {
    use super::direct::SqliteIntake;
    use DeliveryState::{Duplicate as D, Queued as Q};
    let db = TestDb::sqlite();
    let store = open(&db).await;
    let file = store.sqlite_file().expect("a SQLite file").to_path_buf();
    // Stored through the pool, as before migration 0007: its key is in dedupe_key.
    store
        .insert_deliveries(&[&delivery("legacy", Q)])
        .await
        .expect("legacy row");
    let put = |intake: &mut SqliteIntake, keys: &[&str]| -> Vec<(i64, DeliveryState)> {
        let batch: Vec<NewDelivery> = keys.iter().map(|k| delivery(k, Q)).collect();
        let refs: Vec<&NewDelivery> = batch.iter().collect();
        let (ins, _) = intake.insert(&refs, &[]).expect("insert");
        ins.iter().map(|i| (i.id, i.state)).collect()
    };
    let states = |put: Vec<(i64, DeliveryState)>| put.into_iter().map(|p| p.1).collect::<Vec<_>>();
    let pool = store.pool().clone();
    let table = || async { (delivery_keys(&store).await, keys_through(&store).await) };

    // Runs of 3 keys, added 2 to a transaction.
    let mut intake = SqliteIntake::open_with(&file, 3, 2).expect("intake");
    assert_eq!(table().await, (vec![], 0), "no row before the migration");
    assert_eq!(
        states(put(&mut intake, &["k1", "k2", "legacy", "k1"])),
        [Q, Q, D, D]
    );
    let k3 = put(&mut intake, &["k3"])[0].0;
    assert_eq!(table().await, (vec![], 0), "3 pending, no run yet");
    // The run starts: k1 and k2 go into the table, k3 waits in the run.
    assert_eq!(states(put(&mut intake, &["k4"])), [Q]);
    assert_eq!(table().await, (vec!["k1".into(), "k2".into()], 0));
    // k2 from the table, k3 from the run; then k3 goes in and the run is done.
    assert_eq!(states(put(&mut intake, &["k2", "k3"])), [D, D]);
    assert_eq!(
        table().await,
        (vec!["k1".into(), "k2".into(), "k3".into()], k3)
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE dedupe_key IS NULL")
        .fetch_one(&pool)
        .await
        .expect("rows");
    assert_eq!(rows, 8, "the intake's rows leave dedupe_key empty");

    // A restart: k4 (past the mark, not in the table) is reloaded from its row.
    drop(intake);
    let mut intake = SqliteIntake::open_with(&file, 3, 2).expect("reopened");
    assert_eq!(
        states(put(&mut intake, &["k4", "k1", "legacy", "k5"])),
        [D, D, D, Q]
    );
    // The reloaded k4 still counts once its run has moved it into the table (the key
    // filter built at open holds the pending keys too).
    put(&mut intake, &["k8"]);
    put(&mut intake, &["k9"]);
    assert!(delivery_keys(&store).await.contains(&"k4".to_string()));
    assert_eq!(states(put(&mut intake, &["k4", "k10"])), [D, Q]);

    // Every row deleted: ids start again at 1, below the mark, which goes back to 0.
    sqlx::raw_sql(
        "DELETE FROM delivery_bodies; DELETE FROM deliveries; DELETE FROM delivery_keys;",
    )
    .execute(&pool)
    .await
    .expect("delete all");
    drop(intake);
    let mut intake = SqliteIntake::open_with(&file, 3, 2).expect("after the deletes");
    let k6 = put(&mut intake, &["k6"]);
    assert_eq!(k6, [(1, Q)]);
    assert_eq!(table().await, (vec![], 0));
    drop(intake);
    let mut intake = SqliteIntake::open_with(&file, 3, 2).expect("restarted again");
    assert_eq!(states(put(&mut intake, &["k6", "k7"])), [D, Q]);
    store.close().await;
}

/// The worker's finished deliveries ride along in an intake transaction: only queued
/// ones change (a second mark, a duplicate's or an unknown id's changes nothing), each
/// group counted on its own, together with the batch's new rows.
#[tokio::test]
async fn sqlite_intake_marks_finished_deliveries_with_its_batch() {
    let (_db, store, mut intake) = sqlite_with_intake().await;
    let (a, b) = (
        delivery("mark-a", DeliveryState::Queued),
        delivery("mark-b", DeliveryState::Queued),
    );
    let (first, marked) = intake.insert(&[&a, &b, &a], &[]).expect("first batch");
    assert!(marked.is_empty());
    let done = |id: i64, summary: &str| Finished {
        id,
        state: DeliveryState::Processed,
        summary: summary.to_string(),
        run_id: None,
    };
    let c = delivery("mark-c", DeliveryState::Queued);
    let groups = [
        vec![
            done(first[0].id, "tag v1 created"),
            done(first[2].id, "a duplicate"),
        ],
        vec![
            done(first[1].id, "pipeline 42"),
            done(first[0].id, "again"),
            done(9_999, "none"),
        ],
    ];
    let group_refs: Vec<&[Finished]> = groups.iter().map(Vec::as_slice).collect();
    let (new, marked) = intake.insert(&[&c], &group_refs).expect("second batch");
    assert_eq!(marked, [Ok(1), Ok(1)]);
    assert_eq!(new[0].state, DeliveryState::Queued);
    let rows = store.deliveries(None, 10).await.expect("deliveries");
    let by_id = |id: i64| rows.iter().find(|r| r.id == id).expect("row");
    assert_eq!(
        (
            by_id(first[0].id).state,
            by_id(first[0].id).summary.as_deref()
        ),
        (DeliveryState::Processed, Some("tag v1 created"))
    );
    assert_eq!(by_id(first[1].id).state, DeliveryState::Processed);
    assert_eq!(
        by_id(first[2].id).summary.as_deref(),
        Some(super::DUPLICATE_SUMMARY)
    );
    let queued: Vec<i64> = store
        .queued(10)
        .await
        .expect("queued")
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(queued, [new[0].id]);
    // Marks alone, with no delivery to store, are a transaction of their own.
    let (none, marked) = intake
        .insert(&[], &[&[done(new[0].id, "tag v2 created")]])
        .expect("marks alone");
    assert!(none.is_empty());
    assert_eq!(marked, [Ok(1)]);
    assert!(store.queued(10).await.expect("queued").is_empty());
    store.close().await;
}

/// A store file made with another page size (an older hoist's 4 KB) keeps it: the
/// setting only applies to new files, and such a store opens, migrates and takes
/// deliveries on the intake's connection as before.
#[tokio::test]
async fn a_store_made_with_another_page_size_keeps_it_and_works() {
    let db = TestDb::sqlite();
    let file = db.url.trim_start_matches("sqlite://").to_string();
    {
        let conn = rusqlite::Connection::open(&file).expect("create");
        conn.execute_batch(
            "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (x);",
        )
        .expect("4 KB store");
    }
    let store = open(&db).await;
    let mut intake = super::direct::SqliteIntake::open(Path::new(&file)).expect("intake");
    let fresh = delivery("old-page-size", DeliveryState::Queued);
    let (inserted, _) = intake.insert(&[&fresh], &[]).expect("insert");
    assert_eq!(inserted[0].state, DeliveryState::Queued);
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(page_size, 4096);
    let queued = store.queued(10).await.expect("queued");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].text(), "{\"key\":\"old-page-size\"}");
    store.close().await;
}

/// `sync_wal` syncs the log, or the database file when SQLite has removed the log, and
/// says so when neither is there.
#[test]
fn sync_wal_syncs_the_log_or_else_the_database_file() {
    use super::direct::{sync_wal, wal_of};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("x.db");
    let wal = wal_of(&db);
    assert_eq!(wal, dir.path().join("x.db-wal"));
    std::fs::write(&db, b"db").expect("db");
    std::fs::write(&wal, b"wal").expect("wal");
    sync_wal(&wal).expect("the log");
    std::fs::remove_file(&wal).expect("rm wal");
    sync_wal(&wal).expect("the database file");
    std::fs::remove_file(&db).expect("rm db");
    let err = sync_wal(&wal).expect_err("nothing to sync");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

/// A packed body of exactly `n` bytes (as kept in memory; it does not unpack).
fn packed_bytes(n: usize) -> PackedBody {
    PackedBody(vec![0; n].into())
}

/// The worker's queries and the queue depth find the queued deliveries through
/// `deliveries_queued` (migration 0008), which holds only those: a mark removes an entry
/// instead of moving it, and the index does not grow with the history. A query that
/// asked for the state otherwise than `state = 'queued'` would no longer use it.
async fn the_queue_is_read_through_its_own_index(db: TestDb) {
    let store = open(&db).await;
    let mut conn = store.pool().acquire().await.expect("connection");
    let mut queries = vec![super::QUEUE_DEPTH_SQL, super::QUEUED_SIZES_SQL];
    let explain = if store.is_postgres() {
        // An empty table is scanned whole otherwise.
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .expect("set");
        "EXPLAIN"
    } else {
        queries.push(super::direct::HEADS_SQL);
        "EXPLAIN QUERY PLAN"
    };
    for sql in queries {
        let explained = format!("{explain} {sql}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(explained.as_str()));
        if sql.contains("$1") || sql.contains("?1") {
            query = query.bind(10i64);
        }
        let plan: Vec<String> = query
            .fetch_all(&mut *conn)
            .await
            .expect("explain")
            .iter()
            .map(|row| {
                row.try_get(if store.is_postgres() { 0 } else { 3 })
                    .expect("plan")
            })
            .collect();
        assert!(
            plan.iter().any(|line| line.contains("deliveries_queued")),
            "{sql}: {plan:?}"
        );
    }
    drop(conn);
    store.close().await;
}

/// Deliveries whose bodies (`sizes`, stored bytes) are queued in this order, and their ids.
async fn queue_sized(store: &Store, sizes: &[usize]) -> Vec<i64> {
    // Zero-padded: the pool inserts a batch in key order, so ids follow the keys.
    let batch: Vec<NewDelivery> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| NewDelivery {
            body: packed_bytes(n),
            ..delivery(&format!("sized-{i:03}"), DeliveryState::Queued)
        })
        .collect();
    let inserted = store
        .insert_deliveries(&batch.iter().collect::<Vec<_>>())
        .await
        .expect("insert");
    inserted.iter().map(|i| i.id).collect()
}

/// Marks the deliveries `ids` processed, in a transaction of their own.
async fn mark_processed(store: &Store, ids: &[i64]) {
    let done: Vec<Finished> = ids
        .iter()
        .map(|&id| Finished {
            id,
            state: DeliveryState::Processed,
            summary: "done".into(),
            run_id: None,
        })
        .collect();
    let mut tx = store.begin().await.expect("begin");
    finish_deliveries(&mut tx, &done, &now_text())
        .await
        .expect("finish");
    tx.commit().await.expect("commit");
}

/// The worker's batches, claimed and finished one after the other until none is left.
async fn batches(store: &Store) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    loop {
        let claimed = store
            .claim_deliveries("worker-a", 256, std::time::Duration::from_secs(60))
            .await
            .expect("claim");
        if claimed.is_empty() {
            return out;
        }
        let ids: Vec<i64> = claimed.iter().map(|d| d.id).collect();
        mark_processed(store, &ids).await;
        out.push(ids);
    }
}

/// A worker batch reads at most its bound of stored body bytes, always at least one
/// delivery however large, and leaves the rest (on PostgreSQL, unleased) for the next.
async fn a_batch_reads_at_most_its_bytes_of_bodies(db: TestDb) {
    let store = open(&db).await.with_batch_bytes(10_000);
    let ids = queue_sized(&store, &[4_000, 4_000, 4_000, 20_000, 1, 1]).await;
    // Read without a lease (PostgreSQL's other query) as with one.
    let read = store.queued(256).await.expect("queued");
    assert_eq!(read.iter().map(|d| d.id).collect::<Vec<_>>(), &ids[0..2]);
    assert_eq!(
        batches(&store).await,
        [&ids[0..2], &ids[2..3], &ids[3..4], &ids[4..6]],
        "4,000 + 4,000, then 4,000 (20,000 more would pass 10,000), then 20,000 alone"
    );
    store.close().await;
}

/// On a SQLite file, bodies kept in memory count towards the bound, and those of
/// deliveries left for the next batch go back to memory.
#[tokio::test]
async fn kept_bodies_past_a_batch_bound_stay_kept() {
    let db = TestDb::sqlite();
    let store = open(&db).await.with_batch_bytes(10_000);
    let ids = queue_sized(&store, &[100, 100, 100]).await;
    store.recent().keep([
        (ids[0], packed_bytes(6_000)),
        (ids[1], packed_bytes(6_000)),
        (ids[2], packed_bytes(1)),
    ]);
    let first = store.queued(256).await.expect("first");
    assert_eq!(first.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[0]]);
    assert!(
        matches!(&first[0].body, super::QueuedBody::Packed(b) if b.bytes().len() == 6_000),
        "from memory"
    );
    assert_eq!(store.recent().len(), (2, 6_001), "the other two are kept");
    store.close().await;
}

/// The worker takes a body the intake kept in memory, once; other bodies, and that one
/// on a second read, come from the file. The memory is bounded.
#[tokio::test]
async fn queued_bodies_come_from_memory_when_kept_and_from_the_file_otherwise() {
    use super::direct::Recent;
    let db = TestDb::sqlite();
    let store = open(&db).await;
    let inserted = store
        .insert_deliveries(&[
            &delivery("m-1", DeliveryState::Queued),
            &delivery("m-2", DeliveryState::Queued),
        ])
        .await
        .expect("insert");
    store
        .recent()
        .keep([(inserted[0].id, PackedBody::pack("kept in memory"))]);
    let bodies = |q: Vec<super::QueuedDelivery>| {
        q.into_iter()
            .map(|d| d.text().into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        bodies(store.queued(10).await.expect("first read")),
        ["kept in memory", r#"{"key":"m-2"}"#]
    );
    assert_eq!(store.recent().len(), (0, 0), "taken, not copied");
    assert_eq!(
        bodies(store.queued(10).await.expect("second read")),
        [r#"{"key":"m-1"}"#, r#"{"key":"m-2"}"#]
    );
    for id in 0..(Recent::MAX as i64 + 10) {
        store.recent().keep([(1_000_000 + id, packed_bytes(1))]);
    }
    assert_eq!(
        store.recent().len(),
        (Recent::MAX, Recent::MAX),
        "at most MAX entries"
    );
    // And at most MAX_BYTES, packed: big bodies are read back from the file instead.
    let recent = Recent::default();
    let half = packed_bytes(Recent::MAX_BYTES / 2);
    recent.keep([(1, half.clone()), (2, half.clone()), (3, packed_bytes(1))]);
    assert_eq!(
        recent.len(),
        (2, Recent::MAX_BYTES),
        "full: the third is not kept"
    );
    assert!(recent.take(&[1])[0].is_some());
    recent.keep([(3, packed_bytes(1))]);
    assert_eq!(
        recent.len(),
        (2, Recent::MAX_BYTES / 2 + 1),
        "room again once one is taken"
    );
    store.close().await;
}

/// A backlog not kept in memory (here 150 deliveries, more than two queries' worth) is
/// read back in its order, each delivery with its own body, mixed with bodies that were
/// kept; a short last query repeats an id and reads nothing twice.
#[tokio::test]
async fn a_backlog_not_kept_in_memory_is_read_back_in_order() {
    let db = TestDb::sqlite();
    let store = open(&db).await;
    // Zero-padded: the pool inserts a batch in key order, so ids follow the keys.
    let keys: Vec<String> = (0..150).map(|i| format!("backlog-{i:03}")).collect();
    let batch: Vec<NewDelivery> = keys
        .iter()
        .map(|k| delivery(k, DeliveryState::Queued))
        .collect();
    let inserted = store
        .insert_deliveries(&batch.iter().collect::<Vec<_>>())
        .await
        .expect("insert");
    // Every tenth one was kept by the intake.
    store.recent().keep(
        inserted
            .iter()
            .step_by(10)
            .map(|ins| (ins.id, PackedBody::pack(&format!("kept {}", ins.id)))),
    );
    let queued = store.queued(200).await.expect("read");
    assert_eq!(
        queued.iter().map(|d| d.id).collect::<Vec<_>>(),
        inserted.iter().map(|i| i.id).collect::<Vec<_>>(),
        "in order of arrival"
    );
    for (i, (d, key)) in queued.iter().zip(&keys).enumerate() {
        let expected = if i % 10 == 0 {
            format!("kept {}", d.id)
        } else {
            format!("{{\"key\":\"{key}\"}}")
        };
        assert_eq!(d.text(), expected, "delivery {i}");
    }
    store.close().await;
}

/// A delivery received at `at` (and, in order, after every one inserted before it).
fn delivery_at(key: &str, state: DeliveryState, at: &str) -> NewDelivery {
    NewDelivery {
        received_at: at.to_string(),
        ..delivery(key, state)
    }
}

/// Retention: bodies of finished deliveries go after their window, records after theirs
/// (bodies with them); a queued delivery stays whole however old; a dropped key is new
/// again, a kept one still a duplicate.
async fn old_finished_deliveries_lose_their_bodies_then_their_records(db: TestDb) {
    let store = open(&db).await;
    // More than one delete chunk of old ones, then one of each case.
    let bulk: Vec<NewDelivery> = (0..2_345)
        .map(|i| {
            delivery_at(
                &format!("bulk-{i}"),
                DeliveryState::Queued,
                "2025-12-01T00:00:00.000Z",
            )
        })
        .collect();
    let cases = [
        delivery_at(
            "old-done",
            DeliveryState::Queued,
            "2026-01-01T00:00:00.000Z",
        ),
        delivery_at(
            "old-queued",
            DeliveryState::Queued,
            "2026-01-02T00:00:00.000Z",
        ),
        delivery_at(
            "old-ignored",
            DeliveryState::Ignored,
            "2026-01-03T00:00:00.000Z",
        ),
        delivery_at(
            "mid-done",
            DeliveryState::Queued,
            "2026-03-01T00:00:00.000Z",
        ),
        delivery_at(
            "mid-done",
            DeliveryState::Queued,
            "2026-03-02T00:00:00.000Z",
        ),
        delivery_at(
            "new-done",
            DeliveryState::Queued,
            "2026-06-01T00:00:00.000Z",
        ),
        delivery_at(
            "new-queued",
            DeliveryState::Queued,
            "2026-06-02T00:00:00.000Z",
        ),
    ];
    // One batch each, in order of time (a batch's rows get their ids in key order).
    let mut ins = store
        .insert_deliveries(&bulk.iter().collect::<Vec<_>>())
        .await
        .expect("insert the bulk");
    for case in &cases {
        ins.extend(store.insert_deliveries(&[case]).await.expect("insert"));
    }
    let all: Vec<&NewDelivery> = bulk.iter().chain(&cases).collect();
    let finished: Vec<i64> = ins
        .iter()
        .zip(&all)
        .filter(|(_, d)| {
            d.idempotency_key.ends_with("-done") || d.idempotency_key.starts_with("bulk-")
        })
        .map(|(i, _)| i.id)
        .collect();
    mark_processed(&store, &finished).await;
    // The SQLite intake keeps its keys in delivery_keys instead of dedupe_key: give the
    // rows theirs there too, to see retention drop the keys of what it drops.
    sqlx::query(
        "INSERT INTO delivery_keys (key, delivery_id)
         SELECT dedupe_key, id FROM deliveries WHERE dedupe_key IS NOT NULL",
    )
    .execute(store.pool())
    .await
    .expect("keys");

    let pruned = store
        .prune_deliveries("2026-05-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z")
        .await
        .expect("prune");
    assert_eq!(
        delivery_keys(&store).await,
        ["mid-done", "new-done", "new-queued", "old-queued"]
    );
    // Bodies: the bulk, old-done, old-ignored and mid-done's (its duplicate has none).
    assert_eq!(
        pruned,
        super::retention::Pruned {
            bodies: 2_345 + 3,
            deliveries: 2_345 + 2
        }
    );
    let kept: Vec<(String, String, bool)> = sqlx::query(
        "SELECT d.idempotency_key, d.state, b.delivery_id FROM deliveries d
         LEFT JOIN delivery_bodies b ON b.delivery_id = d.id ORDER BY d.id",
    )
    .fetch_all(store.pool())
    .await
    .expect("kept")
    .iter()
    .map(|r| {
        let body: Option<i64> = r.try_get(2)?;
        Ok((r.try_get(0)?, r.try_get(1)?, body.is_some()))
    })
    .collect::<Result<_, sqlx::Error>>()
    .expect("rows");
    let expect = |k: &str, s: &str, body: bool| (k.to_string(), s.to_string(), body);
    assert_eq!(
        kept,
        [
            expect("old-queued", "queued", true),
            expect("mid-done", "processed", false),
            expect("mid-done", "duplicate", false),
            expect("new-done", "processed", true),
            expect("new-queued", "queued", true),
        ]
    );
    // The old queued delivery is still handed to the worker with its body.
    let queued = store.queued(10).await.expect("queued");
    assert_eq!(queued[0].text(), "{\"key\":\"old-queued\"}");
    // Nothing left to drop: a second prune is a no-op.
    let again = store
        .prune_deliveries("2026-05-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z")
        .await
        .expect("prune again");
    assert_eq!(again, super::retention::Pruned::default());
    // A dropped record's key is new again; a kept one's is still a duplicate.
    let resent = store
        .insert_deliveries(&[
            &delivery("old-done", DeliveryState::Queued),
            &delivery("mid-done", DeliveryState::Queued),
        ])
        .await
        .expect("resend");
    assert_eq!(resent[0].state, DeliveryState::Queued);
    assert_eq!(resent[1].state, DeliveryState::Duplicate);
    // An empty store prunes nothing.
    let fresh = TestDb::sqlite();
    let empty = open(&fresh).await;
    assert_eq!(
        empty
            .prune_deliveries("2026-05-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z")
            .await
            .expect("empty"),
        super::retention::Pruned::default()
    );
}
