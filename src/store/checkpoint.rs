//! SQLite's WAL checkpoints, moved off the commit path onto a task of their own.
//!
//! By default SQLite checkpoints inside the commit that grows the WAL past 1000
//! pages: that commit copies every page back into the database file and syncs
//! it, and every webhook waiting on the batch waits too (the intake's p99 was
//! made of these 15–100 ms commits). Here a task runs a passive checkpoint (it
//! never blocks a writer) every [`PERIOD`]; with no new frames that is a cheap
//! no-op. The connections' own automatic checkpoint starts only at
//! [`WAL_SAFETY_PAGES`], should the task ever fall behind.

use std::time::Duration;

use sqlx::Row;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Store, StoreError};

/// The connections' `wal_autocheckpoint`: a safety net, far above what the task leaves.
pub(super) const WAL_SAFETY_PAGES: u32 = 20_000;

/// How often the task checkpoints. Often, so each checkpoint copies little: it ends by
/// syncing the database file, and on ext4 a sync of the log that comes meanwhile waits
/// for that one (the device's cache is flushed for both). Every 200 ms, a checkpoint
/// under a flood copied megabytes and held the log's syncs for 20–50 ms (the intake's
/// p99 was 48 ms); every 25 ms it was 20 ms.
const PERIOD: Duration = Duration::from_millis(25);

/// What one passive checkpoint saw: the WAL's frames, and how many are in the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    pub wal_frames: i64,
    pub copied: i64,
}

impl Store {
    /// One passive checkpoint (SQLite only; PostgreSQL has none and answers `None`).
    pub async fn checkpoint(&self) -> Result<Option<Checkpointed>, StoreError> {
        if self.is_postgres() {
            return Ok(None);
        }
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(self.pool())
            .await?;
        Ok(Some(Checkpointed {
            wal_frames: row.try_get(1)?,
            copied: row.try_get(2)?,
        }))
    }
}

/// Starts the checkpoint task of a SQLite store (none for PostgreSQL); it ends when
/// `stop` turns true.
pub fn spawn(store: Store, mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    if store.is_postgres() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PERIOD) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
            if let Err(e) = store.checkpoint().await {
                tracing::warn!(error = %e, "cannot checkpoint the store's WAL; trying again");
            }
        }
    }))
}
