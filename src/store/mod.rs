//! The durable store: deliveries, runs, steps and the outbox, in SQLite or PostgreSQL.
//!
//! The store is concrete, not a trait: tests run it against both real databases.
//! Every query is written once, in SQL both dialects accept, and runs through
//! sqlx's `Any` driver; only opening (connection settings, migrations directory)
//! and [`Store::begin`] know which backend is behind the URL. Every function that
//! is part of a larger unit of work takes a [`Conn`] so the caller decides the
//! transaction boundary.

pub mod checkpoint;
pub mod direct;
mod keyfilter;
pub mod leases;
pub mod retention;
pub mod runs;
#[cfg(test)]
pub(crate) mod test_db;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use serde::Serialize;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, Executor, Row};

/// A connection to the store, of either backend: units of work are written against it.
pub type Conn = sqlx::AnyConnection;

/// A write transaction from [`Store::begin`]; derefs to a [`Conn`].
///
/// On SQLite it also holds the process's write turn (see [`Store::begin`]) until it
/// commits, rolls back or is dropped.
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// SQLite's write-ahead log, synced after the commit ([`Tx::commit`]).
    wal: Option<Arc<std::path::Path>>,
}

impl Tx {
    /// Commits; the transaction is durable when this returns.
    ///
    /// SQLite connections commit with `synchronous=NORMAL` (the log is written, not
    /// synced): the write turn is given back first, then the log is synced, so the next
    /// writer is not kept waiting on the disk (see [`direct`] for why that is as safe).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Tx { inner, turn, wal } = self;
        inner.commit().await?;
        drop(turn);
        if let Some(wal) = wal {
            tokio::task::spawn_blocking(move || direct::sync_wal(&wal))
                .await
                .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))??;
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.inner
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.inner
    }
}

/// Which database a store URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:PATH` / `sqlite://PATH`: one file, one hoist.
    Sqlite,
    /// `postgres://…` / `postgresql://…`.
    Postgres,
}

impl Backend {
    /// The backend a store URL names, from its scheme alone (the rest may hold a password).
    /// Case matters, as in the config check (`store.url`).
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme);
        match scheme {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres" | "postgresql") => Ok(Backend::Postgres),
            _ => {
                // Name the scheme only when it looks like one: a mistyped value could be a secret.
                let named = scheme
                    .filter(|s| {
                        !s.is_empty()
                            && s.len() <= 16
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                    })
                    .map(|s| format!(" (got a {s}: URL)"))
                    .unwrap_or_default();
                Err(StoreError::Open(format!(
                    "the store url must start with sqlite: or postgres://{named}"
                )))
            }
        }
    }
}

/// How long a writer waits for SQLite's write lock (its `busy_timeout`, and the write turn).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The page size of a store file hoist creates (a file made before keeps its own).
///
/// A packed pipeline hook is about 2 KB: a 4 KB page holds one such body row, an 8 KB
/// page three. With 8 KB pages the log and the checkpoints move slightly more bytes
/// (each commit rewrites the last page of every small-row index whole) but in fewer,
/// larger writes: 2–8 % less CPU per delivery in interleaved runs of the intake
/// benchmark (docs/operations.md).
pub(crate) const SQLITE_PAGE_SIZE: u32 = 8192;

/// Per-connection SQLite settings, of the pool's connections and the direct ones (sqlx's
/// `Any` options are only a URL, so they are set here).
/// `page_size` first: it only counts before the file's first write, which switching to
/// WAL is. busy_timeout next, so switching to WAL waits for a lock instead of failing.
/// `synchronous=NORMAL`: a commit writes the log without syncing it; every write goes
/// through [`Store::begin`], whose [`Tx::commit`] syncs the log before it returns, or
/// through the intake's connection, whose writer syncs before it answers ([`direct`]), so
/// a commit (and a delivery answered 200) still survives power loss, not just a crash.
/// `wal_autocheckpoint`: only a safety net behind the checkpoint task.
///
/// No `journal_size_limit`: cutting a grown log back when it restarts would free its
/// space, but with it set the intake's p99 rose from 7–9 ms to 24–27 ms (4 interleaved
/// rounds), so a log keeps the size it once grew to (docs/operations.md).
fn sqlite_pragmas() -> String {
    format!(
        "PRAGMA page_size = {}; PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = {};",
        SQLITE_PAGE_SIZE,
        SQLITE_BUSY_TIMEOUT.as_millis(),
        checkpoint::WAL_SAFETY_PAGES
    )
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Persisted, waiting for the worker.
    Queued,
    /// The worker handled it.
    Processed,
    /// Authentic, stored, nothing to do.
    Ignored,
    /// A copy of a key already seen; never processed.
    Duplicate,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Processed => "processed",
            DeliveryState::Ignored => "ignored",
            DeliveryState::Duplicate => "duplicate",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryState> {
        Some(match text {
            "queued" => DeliveryState::Queued,
            "processed" => DeliveryState::Processed,
            "ignored" => DeliveryState::Ignored,
            "duplicate" => DeliveryState::Duplicate,
            _ => return None,
        })
    }
}

/// A delivery as the receiver hands it to the store.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub idempotency_key: String,
    pub event: String,
    pub project: String,
    pub received_at: String,
    /// `Queued` for events hoist uses, `Ignored` for the rest.
    pub state: DeliveryState,
    /// Shared, not copied, with the SQLite intake's [`direct::Recent`], which leaves it for
    /// the worker so that it need not read the body back.
    pub body: PackedBody,
}

/// A delivery's raw body as the store keeps it: LZ4-compressed (migration 0004).
///
/// The receiver packs it before the writer's batch, so compression runs on every core
/// and the one writer moves a quarter of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedBody(Bytes);

/// The largest body a packed row may claim to unpack to (far above `max_body_bytes`'s range).
const MAX_UNPACKED: usize = 64 << 20;

impl PackedBody {
    pub fn pack(text: &str) -> PackedBody {
        PackedBody(lz4_flex::compress_prepend_size(text.as_bytes()).into())
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text again; `None` when the bytes are not a packed UTF-8 body.
    pub fn unpack(bytes: &[u8]) -> Option<String> {
        let size = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        if size > MAX_UNPACKED {
            return None;
        }
        let raw = lz4_flex::decompress_size_prepended(bytes).ok()?;
        String::from_utf8(raw).ok()
    }
}

/// The store's answer for one inserted delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub id: i64,
    /// `Duplicate` when the key was already stored, else the state asked for.
    pub state: DeliveryState,
}

/// A queued delivery, as the worker claims it.
#[derive(Debug, Clone)]
pub struct QueuedDelivery {
    pub id: i64,
    pub event: String,
    pub project: String,
    pub body: QueuedBody,
}

/// A queued delivery's body as stored: packed, or text (rows from before packing). The
/// worker's parser thread unpacks it ([`QueuedDelivery::text`]), so that neither the
/// receiver nor the reads of queued rows spend their time on it.
#[derive(Debug, Clone)]
pub enum QueuedBody {
    Packed(PackedBody),
    Text(String),
}

impl QueuedDelivery {
    /// The body's text. A packed body that does not unpack (a damaged file) reads as
    /// empty: the worker then records the delivery as not understood instead of stalling
    /// on it forever.
    pub fn text(&self) -> Cow<'_, str> {
        match &self.body {
            QueuedBody::Text(text) => Cow::Borrowed(text),
            QueuedBody::Packed(packed) => {
                Cow::Owned(PackedBody::unpack(packed.bytes()).unwrap_or_else(|| {
                    tracing::error!(
                        delivery = self.id,
                        "stored body does not unpack; treating it as empty"
                    );
                    String::new()
                }))
            }
        }
    }
}

/// Deliveries with their bodies, as [`queued_from`] reads them; a `WHERE` clause follows.
macro_rules! select_queued {
    ($rest:literal) => {
        concat!(
            "SELECT d.id, d.event, d.project, b.body, b.packed \
             FROM deliveries d LEFT JOIN delivery_bodies b ON b.delivery_id = d.id ",
            $rest
        )
    };
}
pub(crate) use select_queued;

/// The deliveries' ids with their bodies' stored sizes (packed, or the text of rows from
/// before packing); a `WHERE` clause follows. `length` of a blob reads its header, not
/// its pages (SQLite) or its TOAST (PostgreSQL).
macro_rules! select_sizes {
    ($rest:literal) => {
        concat!(
            "SELECT d.id, CAST(COALESCE(length(b.packed), 0) + COALESCE(length(b.body), 0) AS BIGINT) AS size \
             FROM deliveries d LEFT JOIN delivery_bodies b ON b.delivery_id = d.id ",
            $rest
        )
    };
}
pub(crate) use select_sizes;

/// How many deliveries are queued.
const QUEUE_DEPTH_SQL: &str = "SELECT COUNT(*) FROM deliveries WHERE state = 'queued'";

/// The oldest queued deliveries' sizes, for [`Store::queued`] (`$1`: how many).
const QUEUED_SIZES_SQL: &str = select_sizes!("WHERE d.state = 'queued' ORDER BY d.id LIMIT $1");

/// The most stored body bytes one worker batch reads (packed, as the store keeps them):
/// without it, a batch of 256 hooks near GitLab's 25 MiB limit would be read into memory
/// whole. A batch always takes its first delivery, whatever its size.
pub const BATCH_BYTES: u64 = 32 << 20;

/// How many of the leading `sizes` (bodies' stored bytes, in batch order) fit in `max`
/// together: at least one, when there is one.
pub(crate) fn within_bytes(sizes: impl IntoIterator<Item = u64>, max: u64) -> usize {
    let mut total = 0u64;
    let mut fit = 0;
    for size in sizes {
        total = total.saturating_add(size);
        if fit > 0 && total > max {
            break;
        }
        fit += 1;
    }
    fit
}

/// The last id of the leading rows of `id, size` ([`select_sizes`]) that fit in `max`
/// ([`within_bytes`]), and whether they are all of them; `None` when there are none.
fn last_within_bytes(
    rows: &[sqlx::any::AnyRow],
    max: u64,
) -> Result<Option<(i64, bool)>, sqlx::Error> {
    let sizes = rows
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>("id")?, r.try_get::<i64, _>("size")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let fit = within_bytes(sizes.iter().map(|s| s.1.max(0) as u64), max);
    Ok(fit
        .checked_sub(1)
        .map(|last| (sizes[last].0, fit == sizes.len())))
}

/// The oldest queued deliveries with their bodies, in order of arrival, through `$1`.
const QUEUED_SQL: &str = select_queued!("WHERE d.state = 'queued' AND d.id <= $1 ORDER BY d.id");

/// A row of `id, event, project, body, packed` (bodies joined in).
fn queued_from(r: &sqlx::any::AnyRow) -> Result<QueuedDelivery, sqlx::Error> {
    let id = r.try_get("id")?;
    Ok(QueuedDelivery {
        id,
        event: r.try_get("event")?,
        project: r.try_get("project")?,
        body: stored_body(r.try_get("packed")?, r.try_get("body")?),
    })
}

/// A delivery's body from its `packed` and `body` columns (left packed).
fn stored_body(packed: Option<Vec<u8>>, text: Option<String>) -> QueuedBody {
    match packed {
        Some(packed) => QueuedBody::Packed(PackedBody(packed.into())),
        // Stored before bodies were packed.
        None => QueuedBody::Text(text.unwrap_or_default()),
    }
}

/// A delivery as `GET /api/v1/deliveries` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub idempotency_key: String,
    pub event: String,
    pub project: String,
    pub received_at: String,
    pub state: DeliveryState,
    pub summary: Option<String>,
    pub run_id: Option<i64>,
    pub processed_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Callers say "cannot open the store" (the context), so the message is only the cause.
    #[error("{0}")]
    Open(String),
    #[error("store error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot migrate the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the store stayed busy: no write turn within {} s", SQLITE_BUSY_TIMEOUT.as_secs())]
    Busy,
    /// The direct SQLite connections ([`direct`]).
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store is closed")]
    Closed,
    /// Around the database rather than in it: syncing the log, a helper thread.
    #[error("{0}")]
    Failed(String),
}

/// The database behind hoist.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite's one writer, taken in turn inside the process (see [`Store::begin`]).
    write_turn: Arc<tokio::sync::Mutex<()>>,
    /// The SQLite store's file (`None` on PostgreSQL and for an in-memory database).
    sqlite_file: Option<std::path::PathBuf>,
    /// Its write-ahead log, which commits sync.
    wal: Option<Arc<std::path::Path>>,
    /// The worker's direct connection for reading queued deliveries from that file.
    reader: direct::Reader,
    /// Bodies the intake committed, for that reader.
    recent: Arc<direct::Recent>,
    /// [`BATCH_BYTES`], smaller in tests.
    batch_bytes: u64,
}

impl Store {
    /// The file a `sqlite:` store URL names (None for PostgreSQL, memory, or a bad URL).
    pub fn sqlite_file_of(url: &str) -> Option<std::path::PathBuf> {
        if Backend::of_url(url).ok()? != Backend::Sqlite {
            return None;
        }
        let options = SqliteConnectOptions::from_str(url).ok()?;
        let file = options.get_filename();
        (!file.as_os_str().is_empty() && file != std::path::Path::new(":memory:"))
            .then(|| file.to_path_buf())
    }

    /// Opens and migrates the store at `url`: `sqlite://PATH` (created if missing) or
    /// `postgres://USER:PASSWORD@HOST[:PORT]/DATABASE` (the database must exist).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let sqlite_file = Store::sqlite_file_of(url);
        let options = match backend {
            // sqlx's SQLite parser validates the URL; its canonical form adds create-if-missing.
            Backend::Sqlite => SqliteConnectOptions::from_str(url).and_then(|o| {
                AnyConnectOptions::from_url(&o.create_if_missing(true).to_url_lossy())
            }),
            Backend::Postgres => AnyConnectOptions::from_str(url),
        }
        .map_err(|e| StoreError::Open(redact_url_error(&e, url)))?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(sqlx::AssertSqlSafe(sqlite_pragmas())).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open(redact_url_error(&e, url)))?;
        match backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
                // The migrations committed without a sync (`synchronous=NORMAL`).
                if let Some(file) = &sqlite_file {
                    direct::sync_wal(&direct::wal_of(file))
                        .map_err(|e| StoreError::Open(format!("cannot sync the store: {e}")))?;
                }
            }
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            write_turn: Arc::new(tokio::sync::Mutex::new(())),
            wal: sqlite_file.as_deref().map(|f| Arc::from(direct::wal_of(f))),
            sqlite_file,
            reader: direct::Reader::default(),
            recent: Arc::default(),
            batch_bytes: BATCH_BYTES,
        })
    }

    /// The SQLite store's file, for the direct connections ([`direct`]); `None` on
    /// PostgreSQL and for an in-memory database.
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        self.sqlite_file.as_deref()
    }

    /// The SQLite file's write-ahead log, which commits sync ([`Tx::commit`]).
    pub fn wal(&self) -> Option<Arc<std::path::Path>> {
        self.wal.clone()
    }

    /// Where the intake leaves the bodies it committed for the worker ([`direct::Recent`]).
    pub fn recent(&self) -> &direct::Recent {
        &self.recent
    }

    /// Whether [`Store::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }

    /// SQLite's write turn inside the process (see [`Store::begin`]): writers outside the
    /// pool (the intake's own connection) take it too. Bounded by the busy timeout.
    pub async fn turn(&self) -> Result<tokio::sync::OwnedMutexGuard<()>, StoreError> {
        tokio::time::timeout(SQLITE_BUSY_TIMEOUT, self.write_turn.clone().lock_owned())
            .await
            .map_err(|_| StoreError::Busy)
    }

    /// Whether the store is PostgreSQL (row locks, several replicas) rather than SQLite.
    pub fn is_postgres(&self) -> bool {
        self.backend == Backend::Postgres
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Inserts a batch in one transaction (group commit): all are durable when this returns.
    ///
    /// Rows go in with multi-row statements (one round trip per chunk, not per delivery).
    /// A key already stored, or repeated within the batch, makes that copy a `duplicate` row.
    /// This is PostgreSQL's writer, deduplicating by `dedupe_key`'s unique index; on SQLite
    /// the intake thread ([`direct::SqliteIntake`]) is the one writer of deliveries, and it
    /// knows keys this path does not see (its pending ones, in memory).
    pub async fn insert_deliveries(
        &self,
        batch: &[&NewDelivery],
    ) -> Result<Vec<Inserted>, StoreError> {
        // Rows go in sorted by key (a stable sort keeps copies of one key in arrival order):
        // replicas inserting overlapping keys at once then lock them in the same order and
        // never deadlock on the unique index (PostgreSQL runs writers side by side).
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|&a, &b| batch[a].idempotency_key.cmp(&batch[b].idempotency_key));
        let sorted: Vec<&NewDelivery> = order.iter().map(|&i| batch[i]).collect();
        let mut tx = self.begin().await?;
        let mut inserted = Vec::with_capacity(batch.len());
        for chunk in sorted.chunks(INSERT_CHUNK) {
            inserted.extend(insert_chunk(&mut tx, chunk).await?);
        }
        tx.commit().await?;
        // Answers in the caller's order.
        let mut out = inserted.clone();
        for (ins, &i) in inserted.into_iter().zip(&order) {
            out[i] = ins;
        }
        Ok(out)
    }

    /// This store with a smaller [`BATCH_BYTES`], for tests.
    #[cfg(test)]
    pub(crate) fn with_batch_bytes(mut self, max: u64) -> Store {
        self.batch_bytes = max;
        self
    }

    /// The oldest queued deliveries, in order of arrival: at most `limit`, and only as
    /// many as have [`BATCH_BYTES`] of stored bodies together (at least one).
    /// On a SQLite file the query runs on a direct connection ([`direct::read_queued`]).
    pub async fn queued(&self, limit: i64) -> Result<Vec<QueuedDelivery>, StoreError> {
        let max_bytes = self.batch_bytes;
        if let Some(file) = &self.sqlite_file {
            let (reader, recent, file) = (self.reader.clone(), self.recent.clone(), file.clone());
            return tokio::task::spawn_blocking(move || {
                direct::read_queued(&reader, &recent, &file, limit, max_bytes)
            })
            .await
            .map_err(|e| StoreError::Failed(format!("the store's reader failed: {e}")))?;
        }
        let sizes = sqlx::query(QUEUED_SIZES_SQL)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let Some((last, _)) = last_within_bytes(&sizes, max_bytes)? else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(QUEUED_SQL)
            .bind(last)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(queued_from).collect::<Result<_, _>>()?)
    }

    pub async fn queue_depth(&self) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query_scalar(QUEUE_DEPTH_SQL)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Deliveries newest first, optionally of one state.
    pub async fn deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, idempotency_key, event, project, received_at, state, summary, run_id, processed_at
             FROM deliveries WHERE ($1 IS NULL OR state = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(state.map(DeliveryState::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(DeliveryRow {
                    id: r.try_get("id")?,
                    idempotency_key: r.try_get("idempotency_key")?,
                    event: r.try_get("event")?,
                    project: r.try_get("project")?,
                    received_at: r.try_get("received_at")?,
                    state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Ignored),
                    summary: r.try_get("summary")?,
                    run_id: r.try_get("run_id")?,
                    processed_at: r.try_get("processed_at")?,
                })
            })
            .collect()
    }

    /// Starts a write transaction for a unit of work (a delivery and its effects).
    ///
    /// On SQLite, `BEGIN IMMEDIATE` takes the write lock up front, so a transaction that
    /// reads before it writes waits its turn (busy timeout) instead of failing with
    /// `SQLITE_BUSY` when another connection committed since its first read. PostgreSQL
    /// locks rows, not the database: a plain `BEGIN` (read committed), where the unique
    /// indexes and the state-guarded updates are what keep concurrent writers apart.
    ///
    /// SQLite has one writer at a time, and a connection that finds the write lock taken
    /// polls for it with sleeps of up to 100 ms (its busy handler): the intake's writer and
    /// the worker then lose milliseconds to each other on every batch. So the process's
    /// transactions take their turn on an async mutex first, woken the moment the previous
    /// one ends; the busy timeout is left for writers outside the process (the CLI, a backup).
    /// Waiting for the turn is bounded by the same 10 s as the busy timeout.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let turn = self.turn().await?;
                Ok(Tx {
                    inner: self.pool.begin_with("BEGIN IMMEDIATE").await?,
                    turn: Some(turn),
                    wal: self.wal(),
                })
            }
            Backend::Postgres => Ok(Tx {
                inner: self.pool.begin().await?,
                turn: None,
                wal: None,
            }),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Rows per multi-row INSERT (SQLite allows 32766 parameters, PostgreSQL 65535; 5 per row).
const INSERT_CHUNK: usize = 256;

/// Placeholders for a statement built for a batch, in the order values are bound.
///
/// PostgreSQL numbers them (`$1`, `$2`, …). SQLite gets plain `?`: it finds a named or
/// numbered parameter by a linear scan of the statement's names, once per bound value, so
/// a 64-row insert with 384 `$N`s cost tens of thousands of string comparisons.
struct Params {
    numbered: bool,
    next: usize,
}

impl Params {
    fn of(conn: &Conn) -> Params {
        Params {
            // sqlx's own name for its SQLite driver, not a string of ours.
            numbered: conn.backend_name() != <sqlx::Sqlite as sqlx::Database>::NAME,
            next: 0,
        }
    }

    fn push(&mut self, sql: &mut String) {
        self.next += 1;
        if self.numbered {
            sql.push('$');
            sql.push_str(&self.next.to_string());
        } else {
            sql.push('?');
        }
    }

    /// `(p, p, …)` with `width` placeholders.
    fn row(&mut self, sql: &mut String, width: usize) {
        sql.push('(');
        for i in 0..width {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push(sql);
        }
        sql.push(')');
    }
}

async fn insert_chunk(
    conn: &mut Conn,
    chunk: &[&NewDelivery],
) -> Result<Vec<Inserted>, StoreError> {
    let mut sql = String::from(
        "INSERT INTO deliveries (idempotency_key, dedupe_key, event, project, received_at, state) VALUES ",
    );
    let mut params = Params::of(conn);
    for i in 0..chunk.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        params.row(&mut sql, 6);
    }
    sql.push_str(" ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key");
    // Only placeholders are spliced in; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for d in chunk {
        query = query
            .bind(&d.idempotency_key)
            .bind(&d.idempotency_key)
            .bind(&d.event)
            .bind(&d.project)
            .bind(&d.received_at)
            .bind(d.state.as_str());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut ids: std::collections::HashMap<String, i64> =
        std::collections::HashMap::with_capacity(rows.len());
    for r in &rows {
        ids.insert(r.try_get("dedupe_key")?, r.try_get("id")?);
    }
    let mut out = Vec::with_capacity(chunk.len());
    let mut bodies: Vec<(i64, &[u8])> = Vec::with_capacity(chunk.len());
    for d in chunk {
        // The first copy of a key in the batch takes the row; later copies are duplicates.
        match ids.remove(&d.idempotency_key) {
            Some(id) => {
                bodies.push((id, d.body.bytes()));
                out.push(Inserted { id, state: d.state });
            }
            None => out.push(insert_duplicate(conn, d).await?),
        }
    }
    if !bodies.is_empty() {
        let mut sql =
            String::from("INSERT INTO delivery_bodies (delivery_id, body, packed) VALUES ");
        let mut params = Params::of(conn);
        for i in 0..bodies.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            params.push(&mut sql);
            sql.push_str(", '', ");
            params.push(&mut sql);
            sql.push(')');
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, body) in &bodies {
            query = query.bind(*id).bind(*body);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(out)
}

/// The summary of a delivery whose key was stored before.
const DUPLICATE_SUMMARY: &str = "duplicate of an earlier delivery";

async fn insert_duplicate(conn: &mut Conn, d: &NewDelivery) -> Result<Inserted, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO deliveries (idempotency_key, dedupe_key, event, project, received_at, state, summary)
         VALUES ($1, NULL, $2, $3, $4, 'duplicate', $5)
         RETURNING id",
    )
    .bind(&d.idempotency_key)
    .bind(&d.event)
    .bind(&d.project)
    .bind(&d.received_at)
    .bind(DUPLICATE_SUMMARY)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Inserted {
        id,
        state: DeliveryState::Duplicate,
    })
}

/// What the worker made of one delivery: marked by [`finish_deliveries`] in the worker's
/// transaction, or (no effect but its own record) by the SQLite intake in its next one
/// ([`direct::SqliteIntake::insert`]).
#[derive(Debug, Clone)]
pub struct Finished {
    pub id: i64,
    pub state: DeliveryState,
    pub summary: String,
    pub run_id: Option<i64>,
}

/// Marks queued deliveries done in one statement; returns how many were still queued.
pub async fn finish_deliveries(
    conn: &mut Conn,
    done: &[Finished],
    now: &str,
) -> Result<u64, StoreError> {
    let mut total = 0;
    for chunk in done.chunks(INSERT_CHUNK) {
        let mut params = Params::of(conn);
        let mut sql = String::from(
            "UPDATE deliveries SET state = v.column2, summary = v.column3, run_id = v.column4, processed_at = ",
        );
        params.push(&mut sql);
        sql.push_str(" FROM (VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            params.row(&mut sql, 4);
        }
        sql.push_str(") AS v WHERE deliveries.id = v.column1 AND deliveries.state = 'queued'");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for f in chunk {
            query = query
                .bind(f.id)
                .bind(f.state.as_str())
                .bind(f.summary.as_str())
                .bind(f.run_id);
        }
        total += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(total)
}

/// sqlx's URL errors may echo the URL; a PostgreSQL URL carries a password.
///
/// Configuration errors are replaced whole; other errors (refused connections, failed
/// authentication, a missing database) are the server's words, which never quote the
/// password, but the password is cut out of them all the same should one ever do.
fn redact_url_error(e: &sqlx::Error, url: &str) -> String {
    let text = match e {
        sqlx::Error::Configuration(_) => {
            return "the store url is not valid (expected sqlite://PATH or \
                    postgres://USER:PASSWORD@HOST[:PORT]/DATABASE)"
                .to_string();
        }
        // sqlx retries refused connections until the acquire timeout, then says only this.
        sqlx::Error::PoolTimedOut => {
            return "no connection within 10 s: is the database running and reachable \
                    at the url's host and port?"
                .to_string();
        }
        other => other.to_string(),
    };
    let Some(password) = url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_string))
    else {
        return text;
    };
    let decoded = percent_encoding::percent_decode_str(&password)
        .decode_utf8()
        .ok()
        .map(|p| p.into_owned());
    [Some(password), decoded]
        .into_iter()
        .flatten()
        .filter(|p| !p.is_empty())
        .fold(text, |text, p| text.replace(&p, "***"))
}

/// Now, as the store writes times: RFC 3339 UTC with milliseconds.
pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
