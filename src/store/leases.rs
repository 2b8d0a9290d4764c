//! Leases: how several hoist replicas on one database share the work without doing it twice.
//!
//! - Deliveries are claimed a batch at a time (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite
//!   serialises writers anyway) and marked done only by the replica that still holds them.
//! - A run executes under its environment's lease (`env:PROJECT:ENV`), so one run per
//!   (project, environment) executes across replicas. The lease's fence token is checked
//!   before every side effect; a replica that lost its lease stops without acting.
//! - The outbox has one sender at a time (lease `outbox`), which keeps GitLab writes in order.
//!
//! A lease not renewed within its time-to-live can be taken by another replica: that is how a
//! run of a replica that died is taken over.

use std::time::Duration;

use super::{Conn, QueuedDelivery, Store, StoreError};

/// Milliseconds since the epoch: lease times (replica clocks are assumed in sync, as NTP keeps them).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn until(ttl: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// A lease this replica holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    pub fence: i64,
    pub ttl: Duration,
}

/// The lease of the one run of an environment.
pub fn env_lease_name(project: &str, env: &str) -> String {
    format!("env:{project}:{env}")
}

/// The lease of the outbox sender.
pub const OUTBOX_LEASE: &str = "outbox";

impl Store {
    /// Takes `name` for `owner` when it is free, expired, or already this owner's for the same
    /// run; a new holder gets a higher fence. None when another replica holds it.
    pub async fn claim_lease(
        &self,
        name: &str,
        owner: &str,
        run_id: Option<i64>,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let mut tx = self.begin().await?;
        let fence: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases (name, owner, fence, lease_until, run_id) VALUES ($1, $2, 1, $3, $4)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, fence = leases.fence + 1,
                 lease_until = excluded.lease_until, run_id = excluded.run_id
             WHERE leases.lease_until < $5
                OR (leases.owner = excluded.owner AND leases.run_id IS NOT DISTINCT FROM excluded.run_id)
             RETURNING fence",
        )
        .bind(name)
        .bind(owner)
        .bind(until(ttl))
        .bind(run_id)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(fence.map(|fence| Lease {
            name: name.to_string(),
            owner: owner.to_string(),
            fence,
            ttl,
        }))
    }

    /// Extends a lease still held; false when it was lost (expired and taken, or released).
    pub async fn renew_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE leases SET lease_until = $1 WHERE name = $2 AND owner = $3 AND fence = $4 AND lease_until >= $5",
        )
        .bind(until(lease.ttl))
        .bind(&lease.name)
        .bind(&lease.owner)
        .bind(lease.fence)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the lease is still held and unexpired: the fence check before a side effect.
    pub async fn holds(&self, lease: &Lease) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM leases WHERE name = $1 AND owner = $2 AND fence = $3 AND lease_until >= $4",
        )
        .bind(&lease.name)
        .bind(&lease.owner)
        .bind(lease.fence)
        .bind(now_ms())
        .fetch_one(self.pool())
        .await?;
        Ok(n == 1)
    }

    /// Gives a lease up (a run ended), in the caller's transaction.
    pub async fn release_lease(conn: &mut Conn, lease: &Lease) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2 AND fence = $3")
            .bind(&lease.name)
            .bind(&lease.owner)
            .bind(lease.fence)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The run ids whose environment lease is held and unexpired (executing somewhere).
    pub async fn leased_runs(&self) -> Result<Vec<i64>, StoreError> {
        let ids: Vec<Option<i64>> = sqlx::query_scalar(
            "SELECT run_id FROM leases WHERE run_id IS NOT NULL AND lease_until >= $1",
        )
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        Ok(ids.into_iter().flatten().collect())
    }

    /// Forgets every lease: for a store only one process uses (SQLite), at start, so a
    /// restarted hoist resumes its runs at once instead of waiting for its old leases to expire.
    pub async fn clear_leases(&self) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM leases").execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL AND state = 'queued'",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` of the oldest queued deliveries nobody holds, for `owner`, and
    /// returns them in order of arrival.
    pub async fn claim_deliveries(
        &self,
        owner: &str,
        limit: i64,
        ttl: Duration,
    ) -> Result<Vec<QueuedDelivery>, StoreError> {
        if !self.is_postgres() {
            // One process per SQLite file: its worker is the only claimant, and a claim
            // written per row would cost a WAL write per delivery for nothing.
            return self.queued(limit).await;
        }
        // SKIP LOCKED: concurrent claimers pass over rows another replica is claiming.
        let mut tx = self.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE deliveries SET lease_owner = $1, lease_until = $2
             WHERE id IN (SELECT id FROM deliveries
                          WHERE state = 'queued' AND (lease_until IS NULL OR lease_until < $3)
                          ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING id",
        )
        .bind(owner)
        .bind(until(ttl))
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        // Only as many as have `batch_bytes` of bodies together: the rest go back.
        let sizes = sqlx::query(super::select_sizes!(
            "WHERE d.state = 'queued' AND d.lease_owner = $1 ORDER BY d.id"
        ))
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        let Some((last, all)) = super::last_within_bytes(&sizes, self.batch_bytes)? else {
            tx.commit().await?;
            return Ok(Vec::new());
        };
        if !all {
            sqlx::query(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL
                 WHERE lease_owner = $1 AND state = 'queued' AND id > $2",
            )
            .bind(owner)
            .bind(last)
            .execute(&mut *tx)
            .await?;
        }
        let rows = sqlx::query(super::select_queued!(
            "WHERE d.state = 'queued' AND d.lease_owner = $1 AND d.id <= $2 ORDER BY d.id"
        ))
        .bind(owner)
        .bind(last)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(super::queued_from)
            .collect::<Result<_, _>>()?)
    }

    /// In the worker's transaction: whether `owner` still holds every one of `ids` (queued,
    /// its lease); on PostgreSQL the rows stay locked until the transaction ends.
    pub async fn still_holds_deliveries(
        &self,
        conn: &mut Conn,
        owner: &str,
        ids: &[i64],
    ) -> Result<bool, StoreError> {
        if !self.is_postgres() {
            // One process per SQLite file claims implicitly, and its write transaction
            // excludes every other writer: nothing can have taken the batch.
            return Ok(true);
        }
        let mut held = 0usize;
        for chunk in ids.chunks(256) {
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT id FROM deliveries WHERE lease_owner = $1 AND state = 'queued' AND id IN ({}) FOR UPDATE",
                list.join(", "),
            );
            let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).bind(owner);
            for id in chunk {
                query = query.bind(*id);
            }
            held += query.fetch_all(&mut *conn).await?.len();
        }
        Ok(held == ids.len())
    }

    /// `FOR UPDATE` where the backend has row locks (SQLite's writer lock covers everything).
    fn for_update(&self) -> &'static str {
        if self.is_postgres() {
            " FOR UPDATE"
        } else {
            ""
        }
    }

    /// In a write transaction: whether the lease is still this holder's, locking its row on
    /// PostgreSQL so no other replica can take it before the transaction commits.
    pub async fn lock_lease(&self, conn: &mut Conn, lease: &Lease) -> Result<bool, StoreError> {
        let sql = format!(
            "SELECT fence FROM leases WHERE name = $1 AND owner = $2 AND fence = $3 AND lease_until >= $4{}",
            self.for_update()
        );
        let n: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&lease.name)
            .bind(&lease.owner)
            .bind(lease.fence)
            .bind(now_ms())
            .fetch_all(&mut *conn)
            .await?;
        Ok(n.len() == 1)
    }

    /// Records which replica executes a run (the API's `owner`).
    pub async fn set_run_owner(&self, run_id: i64, owner: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE runs SET owner = $1 WHERE id = $2")
            .bind(owner)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
