//! Retention: finished deliveries' bodies and records are dropped once old enough.
//!
//! Every delivery keeps its raw body (a few KB packed) and its record. hoist reads a
//! body once, when the worker handles the delivery, and a record's idempotency key only
//! while GitLab might send that delivery again. Kept for ever, a busy GitLab (every
//! job's status change is a hook) fills a Raspberry Pi's card with them over months.
//! So once an hour a task drops the bodies of finished deliveries older than
//! `store.keep_bodies_days`, and the records older than `store.keep_deliveries_days`.
//! A queued delivery is never touched, however old. Runs, their steps and the outbox
//! are kept: they are the deploy history.
//!
//! Age is judged by `received_at`, which grows with the id (both are assigned at
//! intake). So the oldest deliveries are found by a binary search over ids (a lookup
//! by primary key per step, no index on time, nothing more for the intake to write)
//! and dropped in id ranges of [`CHUNK`], one short transaction each with a pause
//! after it, so the intake's writes never wait long behind a prune. Should the clock
//! have been set back, a delivery received in that gap goes a little early or late with
//! its neighbours.

use std::time::Duration;

use sqlx::Row;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Store, StoreError};

/// Ids per delete transaction.
const CHUNK: i64 = 1000;

/// The pause between two delete transactions: the checkpoint task copies each one's
/// pages meanwhile, so a large first prune does not grow the log by hundreds of MB.
const BREATHER: Duration = Duration::from_millis(20);

/// How often the task prunes; the first prune runs a minute after start.
const PERIOD: Duration = Duration::from_secs(3600);
const FIRST: Duration = Duration::from_secs(60);

/// What one prune dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub bodies: u64,
    pub deliveries: u64,
}

impl Store {
    /// Drops the bodies of finished deliveries received before `bodies_before`, then
    /// finished deliveries received before `deliveries_before` with any body left
    /// (timestamps as [`super::now_text`] writes them).
    pub async fn prune_deliveries(
        &self,
        bodies_before: &str,
        deliveries_before: &str,
    ) -> Result<Pruned, StoreError> {
        let records_end = self.first_received_since(deliveries_before).await?;
        let bodies_end = self.first_received_since(bodies_before).await?;
        Ok(Pruned {
            bodies: (self.drop_range(
                "delivery_bodies",
                "delivery_id",
                bodies_end.max(records_end),
                None,
            ))
            .await?,
            deliveries: self
                .drop_range("deliveries", "id", records_end, Some(DROP_KEYS))
                .await?,
        })
    }

    /// The smallest id whose delivery (and, by the ids' order, every later one) was
    /// received at or after `at`; one past the last delivery when none was.
    async fn first_received_since(&self, at: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT MIN(id), MAX(id) FROM deliveries")
            .fetch_one(self.pool())
            .await?;
        let (Some(mut low), Some(max)) = (
            row.try_get::<Option<i64>, _>(0)?,
            row.try_get::<Option<i64>, _>(1)?,
        ) else {
            return Ok(0);
        };
        let mut high = max + 1;
        // The first delivery at or after `id` was received at or after `at`: false, then true.
        while low < high {
            let mid = low + (high - low) / 2;
            let next: Option<String> = sqlx::query_scalar(
                "SELECT received_at FROM deliveries WHERE id >= $1 ORDER BY id LIMIT 1",
            )
            .bind(mid)
            .fetch_optional(self.pool())
            .await?;
            match next {
                Some(received) if received.as_str() < at => low = mid + 1,
                _ => high = mid,
            }
        }
        Ok(low)
    }

    /// Deletes the finished rows of `table` (keyed by `id_column`, a delivery's id) below
    /// `end`, [`CHUNK`] ids to a transaction, from the lowest such id left; `first` runs
    /// in each transaction before that, with the chunk's bounds as `$1` and `$2`.
    async fn drop_range(
        &self,
        table: &str,
        id_column: &str,
        end: i64,
        first: Option<&str>,
    ) -> Result<u64, StoreError> {
        let lowest = format!("SELECT MIN({id_column}) FROM {table} WHERE {id_column} >= $1");
        let delete = format!(
            "DELETE FROM {table} WHERE {id_column} >= $1 AND {id_column} < $2 AND {id_column} NOT IN
             (SELECT id FROM deliveries WHERE state = 'queued' AND id >= $1 AND id < $2)"
        );
        let mut dropped = 0;
        let mut from = i64::MIN;
        loop {
            let low: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(lowest.as_str()))
                .bind(from)
                .fetch_one(self.pool())
                .await?;
            let Some(low) = low.filter(|low| *low < end) else {
                return Ok(dropped);
            };
            let high = low.saturating_add(CHUNK).min(end);
            let mut tx = self.begin().await?;
            if let Some(first) = first {
                sqlx::query(sqlx::AssertSqlSafe(first))
                    .bind(low)
                    .bind(high)
                    .execute(&mut *tx)
                    .await?;
            }
            dropped += sqlx::query(sqlx::AssertSqlSafe(delete.as_str()))
                .bind(low)
                .bind(high)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            from = high;
            tokio::time::sleep(BREATHER).await;
        }
    }
}

/// The keys of the deliveries a chunk of [`Store::drop_range`] drops (the finished ones
/// with ids from `$1` up to `$2`): docs/webhooks.md, "Deduplication".
const DROP_KEYS: &str = "DELETE FROM delivery_keys WHERE delivery_id >= $1 AND delivery_id < $2
     AND key IN (SELECT idempotency_key FROM deliveries
                 WHERE id >= $1 AND id < $2 AND state <> 'queued')";

/// The cut-off `days` before now, as [`super::now_text`] writes timestamps.
fn days_ago(days: u32) -> String {
    let at = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Prunes a minute after start, then every hour, until `shutdown` turns true.
pub fn spawn(
    store: Store,
    keep_bodies_days: u32,
    keep_deliveries_days: u32,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = FIRST;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            wait = PERIOD;
            let bodies = days_ago(keep_bodies_days);
            let deliveries = days_ago(keep_deliveries_days);
            // Stopping drops the prune between statements: its open chunk rolls back.
            let pruned = tokio::select! {
                pruned = store.prune_deliveries(&bodies, &deliveries) => pruned,
                _ = shutdown.changed() => return,
            };
            match pruned {
                Ok(p) if p == Pruned::default() => {}
                Ok(p) => tracing::info!(
                    bodies = p.bodies,
                    deliveries = p.deliveries,
                    "dropped old deliveries' bodies and records"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot drop old deliveries; trying again in an hour")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cut-offs compare as text with the stored `received_at`: same format, same width.
    #[test]
    fn cut_offs_are_written_like_received_at() {
        let now = super::super::now_text();
        let (today, yesterday) = (days_ago(0), days_ago(1));
        assert_eq!((today.len(), yesterday.len()), (now.len(), now.len()));
        assert!(
            yesterday < today && today >= now,
            "{yesterday} {today} {now}"
        );
        assert!(today.ends_with('Z'));
    }
}
