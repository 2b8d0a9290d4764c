//! The worker: claims stored deliveries in order of arrival and hands each to the dispatcher.
//!
//! A delivery is marked done in the same transaction as the dispatcher's
//! effects, so a crash leaves it either queued (and processed after restart)
//! or done, never half-handled.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::events::{self, Event};
use crate::store::{self, DeliveryState, QueuedDelivery, Store};

/// How many deliveries one transaction handles.
const BATCH: i64 = 64;

/// What the dispatcher made of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    pub state: DeliveryState,
    pub summary: String,
}

/// Decides what a delivery means. For now it records the meaning; the run engine hooks in here.
pub fn dispatch(config: &Config, delivery: &QueuedDelivery) -> Disposition {
    let project = config.projects.iter().find(|p| p.path == delivery.project);
    let (manifest_job, deploy_job) = project.map_or(("manifest", "deploy"), |p| {
        (p.manifest_job.as_str(), p.deploy_job.as_str())
    });
    match events::parse(&delivery.event, delivery.body.as_bytes()) {
        Ok(event @ Event::Other { .. }) => Disposition {
            state: DeliveryState::Ignored,
            summary: events::describe(&event, manifest_job, deploy_job),
        },
        Ok(event) => Disposition {
            state: DeliveryState::Processed,
            summary: events::describe(&event, manifest_job, deploy_job),
        },
        Err(e) => Disposition {
            state: DeliveryState::Ignored,
            summary: format!("not understood: {e}"),
        },
    }
}

/// Runs until `shutdown` turns true; finishes the batch in hand first.
pub async fn run(
    store: Store,
    config: Arc<Config>,
    committed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            break;
        }
        match process_batch(&store, &config).await {
            Ok(0) => {
                tokio::select! {
                    _ = committed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
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
pub async fn process_batch(store: &Store, config: &Config) -> Result<usize, store::StoreError> {
    let queued = store.queued(BATCH).await?;
    if queued.is_empty() {
        return Ok(0);
    }
    let decided: Vec<(i64, Disposition, String, String)> = queued
        .iter()
        .map(|d| {
            (
                d.id,
                dispatch(config, d),
                d.event.clone(),
                d.project.clone(),
            )
        })
        .collect();
    let mut tx = store.begin().await?;
    let now = store::now_text();
    let mut done = 0usize;
    for (id, disposition, _, _) in &decided {
        if store::finish_delivery(
            &mut tx,
            *id,
            disposition.state,
            &disposition.summary,
            None,
            &now,
        )
        .await?
        {
            done += 1;
        }
    }
    tx.commit().await?;
    crate::metrics::queue_changed(-(done as i64));
    for (id, disposition, event, project) in &decided {
        tracing::info!(delivery = id, event = %event, project = %project, state = disposition.state.as_str(), "{}", disposition.summary);
    }
    Ok(done)
}
