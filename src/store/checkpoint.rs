//! SQLite's WAL checkpoints, moved off the commit path onto a task of their own.
//!
//! By default SQLite checkpoints inside the commit that grows the WAL past 1000
//! pages: that commit copies every page back into the database file and syncs
//! it, and every webhook waiting on the batch waits too (the intake's p99 was
//! made of these 15–100 ms commits). Here a task runs a passive checkpoint (it
//! never blocks a writer) every `BUSY_PERIOD` while the log grows, backing off
//! to `IDLE_PERIOD` while it does not. The connections' own automatic checkpoint
//! starts only at `WAL_SAFETY_PAGES`, should the task ever fall behind.

use std::time::Duration;

use sqlx::Row;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Store, StoreError};

/// The connections' `wal_autocheckpoint`: a safety net, far above what the task leaves.
pub(super) const WAL_SAFETY_PAGES: u32 = 20_000;

/// How often the task checkpoints while the log grows. Often, so each checkpoint copies
/// little: it ends by syncing the database file, and on ext4 a sync of the log that
/// comes meanwhile waits for that one (the device's cache is flushed for both). Every
/// 200 ms, a checkpoint under a flood copied megabytes and held the log's syncs for
/// 20–50 ms (the intake's p99 was 45 ms); every 25 ms p99 was 18 ms, every 5 ms 11 ms.
const BUSY_PERIOD: Duration = Duration::from_millis(5);

/// The longest wait between checkpoints: while nothing is written the task backs off to
/// this, doubling its wait after each checkpoint that found nothing new.
const IDLE_PERIOD: Duration = Duration::from_millis(200);

/// The wait before the next checkpoint, after one that found the log `grown` or not.
fn next_wait(wait: Duration, grown: bool) -> Duration {
    if grown {
        BUSY_PERIOD
    } else {
        (wait * 2).min(IDLE_PERIOD)
    }
}

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
        let mut wait = IDLE_PERIOD;
        let mut last = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
            let seen = match store.checkpoint().await {
                Ok(seen) => seen,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot checkpoint the store's WAL; trying again");
                    None
                }
            };
            // New frames (or frames still to copy) since the last look: the log grows.
            let grown = seen.is_some_and(|s| Some(s) != last || s.copied < s.wal_frames);
            wait = next_wait(wait, grown);
            last = seen;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_come_often_while_the_log_grows_and_back_off_when_it_does_not() {
        assert_eq!(next_wait(IDLE_PERIOD, true), BUSY_PERIOD);
        let mut wait = BUSY_PERIOD;
        let mut waits = Vec::new();
        for _ in 0..7 {
            wait = next_wait(wait, false);
            waits.push(wait.as_millis());
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 200, 200]);
        assert_eq!(next_wait(wait, true), BUSY_PERIOD);
    }
}
