//! SQLite's direct connections (rusqlite, outside sqlx's pool) for the two hot paths:
//! the intake's writes and the worker's reads of queued deliveries.
//!
//! **Reads.** sqlx hands a query's rows one by one from its connection thread to the
//! async side; for a batch of 256 queued deliveries with their bodies that was a
//! thread switch per row. [`read_queued`] runs the whole query on a blocking thread,
//! and takes the bodies the intake just committed from memory ([`Recent`]) instead of
//! reading them back and unpacking them.
//!
//! **Writes.** Delivery batches are committed without waiting for the disk, then made
//! durable by one `fdatasync` of the write-ahead log per group of batches. Through the
//! pool, every intake batch held SQLite's one write lock across its own
//! fsync, and each batch went to sqlx's connection thread statement by statement, with
//! SQL built anew for every batch size. Here one connection on a thread of its own
//! inserts row by row with cached statements, commits with `synchronous=NORMAL` (the
//! commit writes the log but does not sync it) and gives the lock back at once; the
//! caller then has the log synced ([`sync_wal`]) off the lock, while the next batch is
//! already being written, and answers only after that sync. A delivery answered 200 is
//! on disk as firmly as with `synchronous=FULL`:
//!
//! - a commit's frames are in the log file before [`SqliteIntake::insert`] returns, and
//!   `fdatasync` on any descriptor of a file flushes all its written pages, so a sync
//!   started after the commit covers them;
//! - on opening after a power loss, SQLite replays the log up to the first frame whose
//!   checksum fails: frames synced before a later, torn write still count;
//! - SQLite itself syncs the log's header when it restarts the log from its start, and
//!   syncs the log before a checkpoint copies it into the database file, in `NORMAL` as
//!   in `FULL`; a log that is gone was checkpointed into that file, synced, and removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};

use super::{
    DUPLICATE_SUMMARY, DeliveryState, Finished, Inserted, NewDelivery, QueuedDelivery, StoreError,
};

/// Opens a direct connection to the (already migrated) store file, set up as the pool's are.
fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.execute_batch(&super::sqlite_pragmas())?;
    Ok(conn)
}

/// The write-ahead log of the SQLite file at `path`.
pub fn wal_of(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// A connection for [`read_queued`], kept between batches.
pub type Reader = Arc<Mutex<Option<Connection>>>;

/// The texts of queued deliveries the intake committed, by id, until the worker takes
/// them. Only a convenience: the file has every body, and a body not found here is read
/// from it. Bounded by [`Recent::MAX`] entries and [`Recent::MAX_BYTES`] of text (a
/// queue deeper than that is read back).
#[derive(Default)]
pub struct Recent(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    texts: HashMap<i64, Arc<str>>,
    bytes: usize,
}

impl Recent {
    /// Entries kept at most: the worker's batches come from the oldest queued.
    pub const MAX: usize = 4096;
    /// Text kept at most, 32 MiB: about 4,000 pipeline hooks of 8 KB, but only a few
    /// hooks near GitLab's 25 MiB limit, which would otherwise fill the memory of a small
    /// machine while the worker lags behind.
    pub const MAX_BYTES: usize = 32 << 20;

    /// Keeps the texts of committed deliveries (id, text) for the worker, room
    /// permitting; one lock for a whole batch.
    pub fn keep(&self, texts: impl IntoIterator<Item = (i64, Arc<str>)>) {
        let Ok(mut kept) = self.0.lock() else {
            return;
        };
        for (id, text) in texts {
            if kept.texts.len() >= Recent::MAX || kept.bytes + text.len() > Recent::MAX_BYTES {
                continue;
            }
            kept.bytes += text.len();
            if let Some(old) = kept.texts.insert(id, text) {
                kept.bytes -= old.len();
            }
        }
    }

    /// Takes the kept texts of `ids`, in their order (`None` where not kept); one lock.
    pub(super) fn take(&self, ids: &[i64]) -> Vec<Option<Arc<str>>> {
        let Ok(mut kept) = self.0.lock() else {
            return vec![None; ids.len()];
        };
        ids.iter()
            .map(|id| {
                let text = kept.texts.remove(id)?;
                kept.bytes -= text.len();
                Some(text)
            })
            .collect()
    }

    /// How many texts are kept, and their bytes (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        self.0
            .lock()
            .map(|kept| (kept.texts.len(), kept.bytes))
            .unwrap_or((0, 0))
    }
}

/// The oldest queued deliveries of the store file at `path`, on `reader` (opened on
/// first use); their bodies from `recent` where it has them, else from the file.
pub fn read_queued(
    reader: &Reader,
    recent: &Recent,
    path: &Path,
    limit: i64,
) -> Result<Vec<QueuedDelivery>, StoreError> {
    let mut slot = reader
        .lock()
        .map_err(|_| StoreError::Failed("the store's reader was poisoned".into()))?;
    let conn = match &mut *slot {
        Some(conn) => conn,
        None => slot.insert(open(path)?),
    };
    let result = (|| {
        let mut heads = conn.prepare_cached(
            "SELECT id, event, project FROM deliveries WHERE state = 'queued' ORDER BY id LIMIT ?1",
        )?;
        let heads: Vec<(i64, String, String)> = heads
            .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let ids: Vec<i64> = heads.iter().map(|h| h.0).collect();
        let kept = recent.take(&ids);
        let missing: Vec<i64> = ids
            .iter()
            .zip(&kept)
            .filter(|(_, text)| text.is_none())
            .map(|(id, _)| *id)
            .collect();
        let mut read = read_bodies(conn, &missing)?;
        let mut out = Vec::with_capacity(heads.len());
        for ((id, event, project), kept) in heads.into_iter().zip(kept) {
            let body = match kept {
                Some(text) => text,
                None => {
                    let (text, packed) = read.remove(&id).unwrap_or((None, None));
                    super::stored_body(id, packed, text).into()
                }
            };
            out.push(QueuedDelivery {
                id,
                event,
                project,
                body,
            });
        }
        Ok::<_, rusqlite::Error>(out)
    })();
    if result.is_err() {
        // A failed connection may be broken: the next batch opens another.
        *slot = None;
    }
    Ok(result?)
}

/// How many bodies [`read_bodies`] asks for in one query.
const BODIES_PER_QUERY: usize = 64;

/// `SELECT … WHERE delivery_id IN (?1, …, ?64)`: one statement, prepared once, for every
/// chunk (a short chunk repeats its first id).
static BODIES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let marks: Vec<String> = (1..=BODIES_PER_QUERY).map(|i| format!("?{i}")).collect();
    format!(
        "SELECT delivery_id, body, packed FROM delivery_bodies WHERE delivery_id IN ({})",
        marks.join(", ")
    )
});

/// A stored body as read: its text (rows from before packing) and its packed bytes.
type StoredBody = (Option<String>, Option<Vec<u8>>);

/// The stored bodies of `ids`, [`BODIES_PER_QUERY`] to a query (a backlog the intake did
/// not keep in memory, or one left from before a restart, was read one query per body).
fn read_bodies(conn: &Connection, ids: &[i64]) -> rusqlite::Result<HashMap<i64, StoredBody>> {
    let mut out = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    let mut query = conn.prepare_cached(&BODIES_SQL)?;
    for chunk in ids.chunks(BODIES_PER_QUERY) {
        let padded = (0..BODIES_PER_QUERY).map(|i| chunk.get(i).unwrap_or(&chunk[0]));
        let mut rows = query.query(rusqlite::params_from_iter(padded))?;
        while let Some(row) = rows.next()? {
            out.insert(row.get(0)?, (row.get(1)?, row.get(2)?));
        }
    }
    Ok(out)
}

/// What became of one group of finished deliveries in an intake transaction: how many
/// were still queued and changed, or why the group failed.
pub type Marked = Result<u64, String>;

/// The intake's own connection to the store file.
pub struct SqliteIntake {
    conn: Connection,
}

impl SqliteIntake {
    /// Opens the intake's connection to the (already migrated) store file at `path`.
    pub fn open(path: &Path) -> Result<SqliteIntake, StoreError> {
        Ok(SqliteIntake { conn: open(path)? })
    }

    /// Inserts a batch in one transaction and commits it without syncing: the rows are
    /// durable only once [`sync_wal`] has run after this returns.
    ///
    /// Answers in the batch's order. A key already stored, or repeated within the
    /// batch, makes that copy a `duplicate` row. The caller holds the process's write
    /// turn ([`super::Store::turn`]).
    ///
    /// In the same transaction it marks the worker's finished deliveries (`done`, one
    /// group per request of the worker's), each group under a savepoint of its own, so
    /// one that fails costs neither the batch nor the other groups. Answers, per group,
    /// how many of its deliveries were still queued (only those change), or why it failed.
    pub fn insert(
        &mut self,
        batch: &[&NewDelivery],
        done: &[&[Finished]],
    ) -> Result<(Vec<Inserted>, Vec<Marked>), StoreError> {
        let mut tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(batch.len());
        {
            // No RETURNING: SQLite would gather its rows in a table of their own; the
            // number of rows changed and the last rowid say the same.
            let mut first = tx.prepare_cached(
                "INSERT INTO deliveries (idempotency_key, dedupe_key, event, project, received_at, state)
                 VALUES (?1, ?1, ?2, ?3, ?4, ?5) ON CONFLICT (dedupe_key) DO NOTHING",
            )?;
            let mut copy = tx.prepare_cached(
                "INSERT INTO deliveries (idempotency_key, dedupe_key, event, project, received_at, state, summary)
                 VALUES (?1, NULL, ?2, ?3, ?4, 'duplicate', ?5)",
            )?;
            let mut body = tx.prepare_cached(
                "INSERT INTO delivery_bodies (delivery_id, body, packed) VALUES (?1, '', ?2)",
            )?;
            for d in batch {
                let added = first.execute(params![
                    d.idempotency_key,
                    d.event,
                    d.project,
                    d.received_at,
                    d.state.as_str()
                ])?;
                out.push(if added == 1 {
                    let id = tx.last_insert_rowid();
                    body.execute(params![id, d.body.bytes()])?;
                    Inserted { id, state: d.state }
                } else {
                    copy.execute(params![
                        d.idempotency_key,
                        d.event,
                        d.project,
                        d.received_at,
                        DUPLICATE_SUMMARY
                    ])?;
                    Inserted {
                        id: tx.last_insert_rowid(),
                        state: DeliveryState::Duplicate,
                    }
                });
            }
        }
        let now = super::now_text();
        let counts = done
            .iter()
            .map(|group| {
                finish_group(&mut tx, group, &now)
                    .map_err(|e| format!("cannot mark finished deliveries: {e}"))
            })
            .collect();
        tx.commit()?;
        Ok((out, counts))
    }

    /// The connection's `PRAGMA synchronous` (1 is `NORMAL`), for tests.
    pub fn synchronous(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }
}

/// Marks one group of finished deliveries under a savepoint (rolled back on failure).
fn finish_group(
    tx: &mut rusqlite::Transaction<'_>,
    group: &[Finished],
    now: &str,
) -> rusqlite::Result<u64> {
    let sp = tx.savepoint()?;
    let mut changed = 0;
    {
        let mut update = sp.prepare_cached(
            "UPDATE deliveries SET state = ?1, summary = ?2, run_id = ?3, processed_at = ?4
             WHERE id = ?5 AND state = 'queued'",
        )?;
        for d in group {
            changed +=
                update.execute(params![d.state.as_str(), d.summary, d.run_id, now, d.id])? as u64;
        }
    }
    sp.commit()?;
    Ok(changed)
}

/// Makes every commit that returned before this call durable: `fdatasync` of the log.
///
/// The file is opened afresh each time, so a log SQLite removed and made anew is never
/// missed through a stale descriptor. A missing log was checkpointed into the database
/// file and removed: that file is synced instead.
pub fn sync_wal(wal: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().write(true).open(wal) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let db = wal.to_string_lossy();
            let db = db.strip_suffix("-wal").unwrap_or(&db);
            std::fs::OpenOptions::new()
                .write(true)
                .open(db)?
                .sync_data()
        }
        Err(e) => Err(e),
    }
}
