//! SQLite's direct connections (rusqlite, outside sqlx's pool) for the two hot paths:
//! the intake's writes and the worker's reads of queued deliveries.
//!
//! **Reads.** sqlx hands a query's rows one by one from its connection thread to the
//! async side; for a batch of 256 queued deliveries with their bodies that was a
//! thread switch per row. [`read_queued`] runs the whole query on a blocking thread,
//! and takes the bodies the intake just committed from memory ([`Recent`]) instead of
//! reading them back; the worker's parser thread unpacks them.
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

use super::keyfilter::KeyFilter;
use super::{
    DUPLICATE_SUMMARY, DeliveryState, Finished, Inserted, NewDelivery, PackedBody, QueuedBody,
    QueuedDelivery, StoreError,
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

/// The packed bodies of queued deliveries the intake committed, by id, until the worker
/// takes them: the receiver's own bytes, shared, not copied. Only a convenience: the file
/// has every body, and a body not found here is read from it. Bounded by [`Recent::MAX`]
/// entries and [`Recent::MAX_BYTES`] (a queue deeper than that is read back).
#[derive(Default)]
pub struct Recent(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    bodies: HashMap<i64, PackedBody>,
    bytes: usize,
}

impl Recent {
    /// Entries kept at most: the worker's batches come from the oldest queued.
    pub const MAX: usize = 16_384;
    /// Packed bytes kept at most, 16 MiB: about 8,000 pipeline hooks of 8 KB (2.1 KB
    /// packed), but only a few hooks near GitLab's 25 MiB limit, which would otherwise fill
    /// the memory of a small machine while the worker lags behind.
    pub const MAX_BYTES: usize = 16 << 20;

    /// Keeps the bodies of committed deliveries (id, body) for the worker, room
    /// permitting; one lock for a whole batch.
    pub fn keep(&self, bodies: impl IntoIterator<Item = (i64, PackedBody)>) {
        let Ok(mut kept) = self.0.lock() else {
            return;
        };
        for (id, body) in bodies {
            let size = body.bytes().len();
            if kept.bodies.len() >= Recent::MAX || kept.bytes + size > Recent::MAX_BYTES {
                continue;
            }
            kept.bytes += size;
            if let Some(old) = kept.bodies.insert(id, body) {
                kept.bytes -= old.bytes().len();
            }
        }
    }

    /// Takes the kept bodies of `ids`, in their order (`None` where not kept); one lock.
    pub(super) fn take(&self, ids: &[i64]) -> Vec<Option<PackedBody>> {
        let Ok(mut kept) = self.0.lock() else {
            return vec![None; ids.len()];
        };
        ids.iter()
            .map(|id| {
                let body = kept.bodies.remove(id)?;
                kept.bytes -= body.bytes().len();
                Some(body)
            })
            .collect()
    }

    /// How many bodies are kept, and their bytes (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        self.0
            .lock()
            .map(|kept| (kept.bodies.len(), kept.bytes))
            .unwrap_or((0, 0))
    }
}

/// The oldest queued deliveries, without their bodies (`?1`: how many).
pub(super) const HEADS_SQL: &str =
    "SELECT id, event, project FROM deliveries WHERE state = 'queued' ORDER BY id LIMIT ?1";

/// The oldest queued deliveries of the store file at `path`, on `reader` (opened on
/// first use); their bodies from `recent` where it has them, else from the file. At most
/// `limit` of them, and only as many as have `max_bytes` of stored bodies together
/// ([`super::within_bytes`]).
pub fn read_queued(
    reader: &Reader,
    recent: &Recent,
    path: &Path,
    limit: i64,
    max_bytes: u64,
) -> Result<Vec<QueuedDelivery>, StoreError> {
    let mut slot = reader
        .lock()
        .map_err(|_| StoreError::Failed("the store's reader was poisoned".into()))?;
    let conn = match &mut *slot {
        Some(conn) => conn,
        None => slot.insert(open(path)?),
    };
    let result = (|| {
        let mut heads = conn.prepare_cached(HEADS_SQL)?;
        let mut heads: Vec<(i64, String, String)> = heads
            .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let ids: Vec<i64> = heads.iter().map(|h| h.0).collect();
        let mut kept = recent.take(&ids);
        let missing = |kept: &[Option<PackedBody>]| -> Vec<i64> {
            ids.iter()
                .zip(kept)
                .filter(|(_, body)| body.is_none())
                .map(|(id, _)| *id)
                .collect()
        };
        // Bounded by the bodies' stored bytes: sizes first, for the bodies not kept.
        let sizes = by_ids(conn, &SIZES_SQL, &missing(&kept), |r| r.get::<_, i64>(1))?;
        let fit = super::within_bytes(
            ids.iter().zip(&kept).map(|(id, body)| match body {
                Some(body) => body.bytes().len() as u64,
                None => sizes.get(id).map_or(0, |&n| n.max(0) as u64),
            }),
            max_bytes,
        );
        // The kept bodies of those left for the next batch go back.
        recent.keep(
            ids[fit..]
                .iter()
                .zip(kept.drain(fit..))
                .filter_map(|(id, body)| Some((*id, body?))),
        );
        heads.truncate(fit);
        let mut read: HashMap<i64, StoredBody> = by_ids(conn, &BODIES_SQL, &missing(&kept), |r| {
            Ok((r.get(1)?, r.get(2)?))
        })?;
        let mut out = Vec::with_capacity(heads.len());
        for ((id, event, project), kept) in heads.into_iter().zip(kept) {
            let body = match kept {
                Some(packed) => QueuedBody::Packed(packed),
                None => {
                    let (text, packed) = read.remove(&id).unwrap_or((None, None));
                    super::stored_body(packed, text)
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

/// How many ids [`by_ids`] puts in one query.
const IDS_PER_QUERY: usize = 64;

/// `SELECT {columns} FROM delivery_bodies WHERE delivery_id IN (?1, …, ?64)`: one
/// statement per column list, prepared once, for every chunk (a short chunk repeats its
/// first id).
fn bodies_sql(columns: &str) -> String {
    let marks: Vec<String> = (1..=IDS_PER_QUERY).map(|i| format!("?{i}")).collect();
    format!(
        "SELECT delivery_id, {columns} FROM delivery_bodies WHERE delivery_id IN ({})",
        marks.join(", ")
    )
}

static BODIES_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| bodies_sql("body, packed"));

/// Stored sizes: `length` of a blob reads its header, not its pages.
static SIZES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    bodies_sql("COALESCE(length(packed), 0) + COALESCE(length(body), 0)")
});

/// A stored body as read: its text (rows from before packing) and its packed bytes.
type StoredBody = (Option<String>, Option<Vec<u8>>);

/// `sql` ([`bodies_sql`]) for `ids`, [`IDS_PER_QUERY`] to a query (a backlog the intake
/// did not keep in memory, or one left from before a restart, was read one query per
/// body); each row's id and `value`.
fn by_ids<T>(
    conn: &Connection,
    sql: &str,
    ids: &[i64],
    value: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<HashMap<i64, T>> {
    let mut out = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    let mut query = conn.prepare_cached(sql)?;
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let padded = (0..IDS_PER_QUERY).map(|i| chunk.get(i).unwrap_or(&chunk[0]));
        let mut rows = query.query(rusqlite::params_from_iter(padded))?;
        while let Some(row) = rows.next()? {
            out.insert(row.get(0)?, value(row)?);
        }
    }
    Ok(out)
}

/// What became of one group of finished deliveries in an intake transaction: how many
/// were still queued and changed, or why the group failed.
pub type Marked = Result<u64, String>;

/// The intake's own connection to the store file, and the keys it has not yet added to
/// the key table.
///
/// **Keys.** GitLab's idempotency keys are random UUIDs. Inserted one by one into a
/// unique index, each lands on a random leaf of it, and every commit writes a page per
/// delivery to the log (and the checkpoint copies it): with those keys the intake was a
/// fifth slower and its p99 over 10 ms (docs/operations.md). So new rows leave
/// `dedupe_key` empty; their keys are kept here (`pending`), and once [`KEY_RUN`] are,
/// they are added to `delivery_keys` in key order, [`KEY_CHUNK`] per transaction, each
/// chunk a narrow slice of the key space: many keys to a page written. A key is a
/// duplicate if it is pending, in the run being added, in `delivery_keys`, or in
/// `deliveries.dedupe_key` (rows from before migration 0007, and PostgreSQL's). The last
/// two are looked up only for a key that the [`KeyFilter`] of every stored key says may
/// be there: a fresh key almost never is.
///
/// A restart loses nothing: every pending key is also in its row, and `open` reloads the
/// keys of rows past `keys_through` (`intake_marks`) that the table lacks. On any error
/// the caller drops the intake, so memory is never ahead of a rolled-back transaction.
pub struct SqliteIntake {
    conn: Connection,
    keys: Keys,
}

/// The intake's keys not yet in `delivery_keys` ([`SqliteIntake`]).
struct Keys {
    /// Keys stored in rows but not yet in `delivery_keys`, by key.
    pending: HashMap<String, i64>,
    /// The run being added: sorted by key, greatest first (the next chunk is popped off
    /// the end), with the greatest delivery id in it.
    run: Vec<(String, i64)>,
    run_through: i64,
    /// `intake_marks.keys_through`.
    keys_through: i64,
    /// [`KEY_RUN`] and [`KEY_CHUNK`], smaller in tests.
    run_size: usize,
    chunk: usize,
    /// Every key stored: those in `delivery_keys` and `dedupe_key` at open, the pending
    /// ones, and every key committed since.
    filter: KeyFilter,
}

/// Pending keys that start a run into `delivery_keys`: about 1 MB of memory, and a run
/// that, sorted, touches a fraction of the key index's leaves per key.
pub const KEY_RUN: usize = 8192;

/// Keys of the run added per intake transaction: a slice of 1/32 of the key space.
pub const KEY_CHUNK: usize = 256;

impl SqliteIntake {
    /// Opens the intake's connection to the (already migrated) store file at `path`.
    pub fn open(path: &Path) -> Result<SqliteIntake, StoreError> {
        SqliteIntake::open_with(path, KEY_RUN, KEY_CHUNK)
    }

    /// [`SqliteIntake::open`] with the run and chunk sizes (tests make them small).
    pub(crate) fn open_with(
        path: &Path,
        run_size: usize,
        chunk: usize,
    ) -> Result<SqliteIntake, StoreError> {
        let conn = open(path)?;
        let keys_through: i64 = conn.query_row(
            "SELECT COALESCE(MAX(value), 0) FROM intake_marks WHERE name = 'keys_through'",
            [],
            |r| r.get(0),
        )?;
        let pending = {
            let mut stmt = conn.prepare(
                "SELECT d.idempotency_key, d.id FROM deliveries d
                 WHERE d.id > ?1 AND d.state <> 'duplicate' AND d.dedupe_key IS NULL
                   AND NOT EXISTS (SELECT 1 FROM delivery_keys k WHERE k.key = d.idempotency_key)",
            )?;
            stmt.query_map([keys_through], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<HashMap<String, i64>, _>>()?
        };
        let filter = stored_keys(&conn, pending.keys())?;
        Ok(SqliteIntake {
            conn,
            keys: Keys {
                pending,
                run: Vec::new(),
                run_through: 0,
                keys_through,
                run_size: run_size.max(1),
                chunk: chunk.max(1),
                filter,
            },
        })
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
        let keys = &mut self.keys;
        let mut tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(batch.len());
        // Keys first stored by this batch, for its own repeats and for memory after the commit.
        let mut fresh: HashMap<&str, i64> = HashMap::new();
        {
            // No RETURNING: SQLite would gather its rows in a table of their own; the
            // last rowid says the same.
            let mut first = tx.prepare_cached(
                "INSERT INTO deliveries (idempotency_key, dedupe_key, event, project, received_at, state)
                 VALUES (?1, NULL, ?2, ?3, ?4, ?5)",
            )?;
            let mut copy = tx.prepare_cached(
                "INSERT INTO deliveries (idempotency_key, dedupe_key, event, project, received_at, state, summary)
                 VALUES (?1, NULL, ?2, ?3, ?4, 'duplicate', ?5)",
            )?;
            let mut body = tx.prepare_cached(
                "INSERT INTO delivery_bodies (delivery_id, body, packed) VALUES (?1, '', ?2)",
            )?;
            for d in batch {
                let key = d.idempotency_key.as_str();
                if fresh.contains_key(key) || keys.known(&tx, key)? {
                    copy.execute(params![
                        key,
                        d.event,
                        d.project,
                        d.received_at,
                        DUPLICATE_SUMMARY
                    ])?;
                    out.push(Inserted {
                        id: tx.last_insert_rowid(),
                        state: DeliveryState::Duplicate,
                    });
                    continue;
                }
                first.execute(params![
                    key,
                    d.event,
                    d.project,
                    d.received_at,
                    d.state.as_str()
                ])?;
                let id = tx.last_insert_rowid();
                body.execute(params![id, d.body.bytes()])?;
                if id <= keys.keys_through {
                    // Ids came back down (every later row was deleted): the mark no longer
                    // tells which rows' keys are pending, so a restart looks at them all,
                    // and the run under way (older ids) may not raise it again.
                    keys.run_through = 0;
                    keys.mark_keys_through(&tx, 0)?;
                }
                fresh.insert(key, id);
                out.push(Inserted { id, state: d.state });
            }
        }
        keys.add_keys(&tx)?;
        let now = super::now_text();
        let counts = done
            .iter()
            .map(|group| {
                finish_group(&mut tx, group, &now)
                    .map_err(|e| format!("cannot mark finished deliveries: {e}"))
            })
            .collect();
        tx.commit()?;
        for (key, id) in fresh {
            keys.filter.insert(key);
            keys.pending.insert(key.to_string(), id);
        }
        Ok((out, counts))
    }

    /// The connection's `PRAGMA synchronous` (1 is `NORMAL`), for tests.
    pub fn synchronous(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }
}

impl Keys {
    /// Whether `key` is stored: pending, in the run, in the key table or in a row's
    /// `dedupe_key`. The run's keys already added are in the key table.
    fn known(&self, tx: &rusqlite::Transaction<'_>, key: &str) -> rusqlite::Result<bool> {
        if self.pending.contains_key(key)
            || self
                .run
                .binary_search_by(|(k, _)| key.cmp(k.as_str()))
                .is_ok()
        {
            return Ok(true);
        }
        if !self.filter.may_contain(key) {
            return Ok(false);
        }
        let mut table = tx.prepare_cached("SELECT 1 FROM delivery_keys WHERE key = ?1")?;
        if table.exists([key])? {
            return Ok(true);
        }
        let mut rows = tx.prepare_cached("SELECT 1 FROM deliveries WHERE dedupe_key = ?1")?;
        rows.exists([key])
    }

    /// Adds the next chunk of the run to the key table (starting a run when enough keys
    /// are pending); once the run is done, moves `keys_through` up to it.
    fn add_keys(&mut self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        if self.run.is_empty() && self.pending.len() >= self.run_size {
            self.run = self.pending.drain().collect();
            self.run.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            self.run_through = self.run.iter().map(|(_, id)| *id).max().unwrap_or(0);
        }
        if self.run.is_empty() {
            return Ok(());
        }
        // Only for rows still there: retention may have deleted a delivery whose key
        // waited in memory.
        let mut add = tx.prepare_cached(
            "INSERT INTO delivery_keys (key, delivery_id)
             SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = ?2)
             ON CONFLICT (key) DO NOTHING",
        )?;
        for _ in 0..self.chunk {
            let Some((key, id)) = self.run.pop() else {
                break;
            };
            add.execute(params![key, id])?;
        }
        if self.run.is_empty() && self.run_through > self.keys_through {
            self.mark_keys_through(tx, self.run_through)?;
        }
        Ok(())
    }

    fn mark_keys_through(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        id: i64,
    ) -> rusqlite::Result<()> {
        tx.execute(
            "UPDATE intake_marks SET value = ?1 WHERE name = 'keys_through'",
            [id],
        )?;
        self.keys_through = id;
        Ok(())
    }
}

/// A [`KeyFilter`] of the keys stored in `delivery_keys` and `deliveries.dedupe_key`, and
/// of `pending` ones: one pass over both indexes at open.
fn stored_keys<'a>(
    conn: &Connection,
    pending: impl Iterator<Item = &'a String>,
) -> rusqlite::Result<KeyFilter> {
    let mut stored = KeyFilter::stored();
    let mut keys = conn.prepare(
        "SELECT key FROM delivery_keys
         UNION ALL SELECT dedupe_key FROM deliveries WHERE dedupe_key IS NOT NULL",
    )?;
    let mut rows = keys.query([])?;
    while let Some(row) = rows.next()? {
        stored.add(row.get_ref(0)?.as_str()?);
    }
    for key in pending {
        stored.add(key);
    }
    Ok(KeyFilter::build(stored))
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
