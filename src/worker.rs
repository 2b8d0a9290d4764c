//! The worker: claims stored deliveries in order of arrival and hands each to the engine.
//!
//! A delivery is marked done in the same transaction as the engine's decisions
//! (runs queued, replies recorded), so a crash leaves it either queued (and
//! processed after restart) or done, never half-handled.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::engine::{Engine, dispatch};
use crate::store::{self, StoreError};

/// How long the worker lets a burst gather after a batch that was not full.
const GATHER: Duration = Duration::from_millis(20);

/// How many deliveries one transaction handles.
const BATCH: i64 = 256;

/// Runs until `shutdown` turns true; finishes the batch in hand first.
pub async fn run(engine: Arc<Engine>, committed: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            break;
        }
        match process_batch(&engine).await {
            Ok(0) => {
                tokio::select! {
                    _ = committed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
            }
            // A part batch while deliveries keep coming: let the next one gather for a
            // moment. Each batch is a transaction with an fsync that the intake's writer
            // waits behind; under a burst, batches of ~40 every millisecond became
            // batches of hundreds, and the first delivery after a quiet spell is still
            // taken at once (the wait above ends on its commit).
            Ok(n) if n < BATCH as usize => {
                tokio::select! {
                    _ = tokio::time::sleep(GATHER) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "worker cannot process deliveries; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// Processes up to one batch; returns how many deliveries it finished.
pub async fn process_batch(engine: &Engine) -> Result<usize, StoreError> {
    let ttl = engine.options.lease_ttl;
    let queued = engine
        .store
        .claim_deliveries(&engine.instance, BATCH, ttl)
        .await?;
    if queued.is_empty() {
        return Ok(0);
    }
    let mut plans = Vec::with_capacity(queued.len());
    for d in &queued {
        plans.push(engine.plan(d).await);
    }
    let mut tx = engine.store.begin().await?;
    let ids: Vec<i64> = queued.iter().map(|d| d.id).collect();
    if !engine
        .store
        .still_holds_deliveries(&mut tx, &engine.instance, &ids)
        .await?
    {
        // Planning outlasted the lease and another replica took the batch: it does the work.
        tracing::warn!(
            batch = ids.len(),
            "delivery lease lost; leaving the batch to its new holder"
        );
        tx.rollback().await?;
        return Ok(0);
    }
    let now = store::now_text();
    let mut finished = Vec::with_capacity(queued.len());
    let mut new_runs = false;
    for (d, plan) in queued.iter().zip(&plans) {
        let run_id = dispatch::apply(&mut tx, plan, &d.project).await?;
        new_runs |= run_id.is_some();
        finished.push(store::Finished {
            id: d.id,
            state: plan.state,
            summary: &plan.summary,
            run_id,
        });
    }
    let done = store::finish_deliveries(&mut tx, &finished, &now).await? as usize;
    tx.commit().await?;
    crate::metrics::queue_changed(-(done as i64));
    if new_runs {
        engine.runs_changed.notify_one();
    }
    engine.outbox_changed.notify_one();
    for (d, plan) in queued.iter().zip(&plans) {
        tracing::info!(delivery = d.id, event = %d.event, project = %d.project, state = plan.state.as_str(), "{}", plan.summary);
    }
    Ok(done)
}
