//! Group commit: one task writes the deliveries of all concurrent requests in one transaction.
//!
//! Each request waits until the batch holding its delivery is committed, then
//! answers. One fsync serves a whole batch, which is what lets durable intake
//! keep up with GitLab's concurrent delivery workers.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{Inserted, NewDelivery, Store};

/// The most deliveries one transaction takes.
const MAX_BATCH: usize = 512;

struct Job {
    delivery: NewDelivery,
    reply: oneshot::Sender<Result<Inserted, WriteError>>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the store did not take the delivery: {0}")]
    Store(String),
    #[error("hoist is shutting down")]
    Closed,
}

/// The sending side; cloned into every request handler.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task. `committed` is notified after every batch (the worker waits on it).
    /// The task ends once every `Writer` clone is dropped and the queue is drained.
    pub fn spawn(store: Store, committed: Arc<Notify>) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let handle = tokio::spawn(write_loop(store, rx, committed));
        (Writer { tx }, handle)
    }

    /// Persists one delivery; returns once it is committed.
    pub async fn write(&self, delivery: NewDelivery) -> Result<Inserted, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { delivery, reply })
            .await
            .map_err(|_| WriteError::Closed)?;
        answer.await.map_err(|_| WriteError::Closed)?
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<Job>, committed: Arc<Notify>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch: Vec<&NewDelivery> = jobs.iter().map(|j| &j.delivery).collect();
        let result = store.insert_deliveries(&batch).await;
        let size = batch.len();
        drop(batch);
        match result {
            Ok(inserted) => {
                crate::metrics::queue_changed(
                    inserted
                        .iter()
                        .filter(|i| i.state == crate::store::DeliveryState::Queued)
                        .count() as i64,
                );
                for (job, ins) in jobs.drain(..).zip(inserted) {
                    let _ = job.reply.send(Ok(ins));
                }
                committed.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, batch = size, "cannot persist deliveries; answering 503");
                let msg = e.to_string();
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(WriteError::Store(msg.clone())));
                }
            }
        }
    }
}
