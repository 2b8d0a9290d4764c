//! Group commit: one writer stores the deliveries of all concurrent requests in one transaction.
//!
//! Each request waits until the batch holding its delivery is durable, then answers.
//! One fsync serves a whole batch, which is what lets durable intake keep up with
//! GitLab's concurrent delivery workers. On SQLite the writer is a thread with the
//! intake's own connection ([`SqliteIntake`]): it commits a batch without syncing,
//! hands the batch to a second thread that syncs the write-ahead log once for every
//! batch committed meanwhile and then answers them, and goes on with the next batch,
//! so SQLite's one write lock is never held across an fsync. On PostgreSQL a task
//! commits each batch through the pool (the server syncs at commit).
//!
//! On SQLite the worker hands it the deliveries it finished with no other effect
//! ([`Finisher`]); they are marked in the next batch's transaction, which is answered
//! after the same sync.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::store::direct::{Marked, SqliteIntake, sync_wal};
use crate::store::{DeliveryState, Finished, Inserted, NewDelivery, Store, StoreError};

/// The most deliveries one transaction takes.
const MAX_BATCH: usize = 512;

struct Job {
    delivery: NewDelivery,
    reply: oneshot::Sender<Result<Inserted, WriteError>>,
}

/// Deliveries to mark done in the intake's next transaction.
struct Finish {
    done: Vec<Finished>,
    reply: oneshot::Sender<Result<u64, WriteError>>,
}

/// What the writer is handed: a delivery to store, or finished ones to mark.
enum Work {
    Deliver(Job),
    Finish(Finish),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the store did not take the delivery: {0}")]
    Store(String),
    #[error("hoist is shutting down")]
    Closed,
}

/// Makes SQLite's log durable: [`sync_wal`], or a stand-in in tests.
type SyncFn = fn(&std::path::Path) -> std::io::Result<()>;

/// The sending side; cloned into every request handler.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Work>,
    /// Whether this is the SQLite writer, which marks the worker's finished deliveries
    /// ([`Writer::finisher`]).
    sqlite: bool,
    /// Turns true once the writer is ready for its first batch ([`Writer::started`]).
    started: watch::Receiver<bool>,
}

impl Writer {
    /// Starts the writer. `committed` is notified after every batch (the worker waits on it).
    /// The writer ends once every `Writer` clone is dropped and the queue is drained.
    pub fn spawn(store: Store, committed: Arc<Notify>) -> (Writer, JoinHandle<()>) {
        Writer::spawn_with(store, committed, sync_wal)
    }

    /// [`Writer::spawn`] with the function that makes SQLite's log durable (tests make it fail).
    pub fn spawn_with(
        store: Store,
        committed: Arc<Notify>,
        sync: SyncFn,
    ) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let sqlite = store
            .sqlite_file()
            .map(std::path::Path::to_path_buf)
            .zip(store.wal());
        let (ready, started) = watch::channel(sqlite.is_none());
        let is_sqlite = sqlite.is_some();
        let handle = match sqlite {
            Some((file, wal)) => {
                // A thread of its own (not the blocking pool), named for profiles and `top -H`.
                let runtime = Handle::current();
                let (done, finished) = oneshot::channel::<()>();
                let writer = SqliteWriter {
                    store,
                    file,
                    runtime,
                    committed,
                };
                let spawned = std::thread::Builder::new()
                    .name("hoist-intake".into())
                    .spawn(move || {
                        let intake = writer.open_at_start();
                        let _ = ready.send(true);
                        writer.run(intake, rx, wal, sync);
                        let _ = done.send(());
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start the intake thread");
                }
                tokio::spawn(async move {
                    let _ = finished.await;
                })
            }
            None => tokio::spawn(write_loop(store, rx, committed)),
        };
        (
            Writer {
                tx,
                sqlite: is_sqlite,
                started,
            },
            handle,
        )
    }

    /// Returns once the writer is ready for its first batch: on SQLite, once the intake
    /// has opened its connection (or failed to: its first batch then tries again).
    pub async fn started(&self) {
        let mut started = self.started.clone();
        // An error means the writer's thread is gone: nothing more to wait for.
        let _ = started.wait_for(|started| *started).await;
    }

    /// Persists one delivery; returns once it is committed and on disk.
    pub async fn write(&self, delivery: NewDelivery) -> Result<Inserted, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Work::Deliver(Job { delivery, reply }))
            .await
            .map_err(|_| WriteError::Closed)?;
        answer.await.map_err(|_| WriteError::Closed)?
    }

    /// A handle by which the worker marks deliveries done in the intake's own
    /// transactions (SQLite only); it does not keep the writer from ending.
    pub fn finisher(&self) -> Option<Finisher> {
        self.sqlite.then(|| Finisher(self.tx.downgrade()))
    }
}

/// The worker's way into the SQLite writer ([`Writer::finisher`]).
#[derive(Clone)]
pub struct Finisher(mpsc::WeakSender<Work>);

impl Finisher {
    /// Marks `done` (still queued ones only) in the intake's next transaction; returns
    /// how many changed, once the log holding them is synced.
    pub async fn finish(&self, done: Vec<Finished>) -> Result<u64, WriteError> {
        let tx = self.0.upgrade().ok_or(WriteError::Closed)?;
        let (reply, answer) = oneshot::channel();
        tx.send(Work::Finish(Finish { done, reply }))
            .await
            .map_err(|_| WriteError::Closed)?;
        drop(tx);
        answer.await.map_err(|_| WriteError::Closed)?
    }
}

/// The PostgreSQL writer: each batch commits (and syncs) through the pool.
async fn write_loop(store: Store, mut rx: mpsc::Receiver<Work>, committed: Arc<Notify>) {
    let mut work = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut work, MAX_BATCH).await > 0 {
        let (mut jobs, finishes) = split(std::mem::take(&mut work));
        for f in finishes {
            // Never sent here ([`Writer::finisher`] is SQLite's): the worker commits its own.
            let _ = f.reply.send(Err(WriteError::Closed));
        }
        if jobs.is_empty() {
            continue;
        }
        let batch: Vec<&NewDelivery> = jobs.iter().map(|j| &j.delivery).collect();
        let result = store.insert_deliveries(&batch).await;
        drop(batch);
        match result {
            Ok(inserted) => {
                stored(&inserted, &committed);
                answer(std::mem::take(&mut jobs), inserted);
            }
            Err(e) => refuse(std::mem::take(&mut jobs), &e),
        }
    }
}

/// A batch committed, not yet synced, waiting for the syncer.
struct Committed {
    jobs: Vec<Job>,
    inserted: Vec<Inserted>,
    finished: Vec<(Finish, Marked)>,
}

/// Deliveries to store and finished ones to mark, apart.
fn split(work: Vec<Work>) -> (Vec<Job>, Vec<Finish>) {
    let mut jobs = Vec::with_capacity(work.len());
    let mut finishes = Vec::new();
    for w in work {
        match w {
            Work::Deliver(job) => jobs.push(job),
            Work::Finish(f) => finishes.push(f),
        }
    }
    (jobs, finishes)
}

/// The SQLite writer's thread, with what it works with for its whole life.
struct SqliteWriter {
    store: Store,
    file: std::path::PathBuf,
    runtime: Handle,
    /// Notified after every batch (the worker waits on it).
    committed: Arc<Notify>,
}

impl SqliteWriter {
    /// Opens the intake's connection before the first batch. Reading the stored keys into
    /// its filter takes a while on a large store (about 45 ms for 271,000 deliveries),
    /// which the first delivery after a start would otherwise wait for. On failure, the
    /// first batch tries again.
    fn open_at_start(&self) -> Option<SqliteIntake> {
        let opened = self
            .runtime
            .block_on(self.store.turn())
            .and_then(|_turn| SqliteIntake::open(&self.file));
        match opened {
            Ok(intake) => Some(intake),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the intake's connection; the first delivery tries again");
                None
            }
        }
    }

    /// Gathers, takes the write turn, commits without syncing, gives the turn back, and
    /// passes the batch to the syncer (a thread of its own that makes `wal` durable with
    /// `sync`), until every sender is gone.
    fn run(
        self,
        mut intake: Option<SqliteIntake>,
        mut rx: mpsc::Receiver<Work>,
        wal: Arc<std::path::Path>,
        sync: SyncFn,
    ) {
        let (to_syncer, syncer_rx) = std_mpsc::channel::<Committed>();
        let syncer = std::thread::Builder::new()
            .name("hoist-wal-sync".into())
            .spawn(move || sync_loop(&wal, syncer_rx, sync));
        let syncer = match syncer {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the intake's sync thread");
                None
            }
        };
        let mut work = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            work.push(first);
            while work.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => work.push(w),
                    Err(_) => break,
                }
            }
            let (jobs, finishes) = split(std::mem::take(&mut work));
            let result = if syncer.is_none() {
                Err(StoreError::Closed)
            } else {
                self.commit(&mut intake, &jobs, &finishes)
            };
            match result {
                Ok((inserted, counts)) => {
                    stored(&inserted, &self.committed);
                    let batch = Committed {
                        jobs,
                        inserted,
                        finished: finishes.into_iter().zip(counts).collect(),
                    };
                    if let Err(std_mpsc::SendError(batch)) = to_syncer.send(batch) {
                        refuse(batch.jobs, &StoreError::Closed);
                    }
                }
                Err(e) => {
                    // A connection that failed may be broken: the next batch opens a new one.
                    intake = None;
                    refuse(jobs, &e);
                    refuse_marks(finishes, &e);
                }
            }
        }
        drop(to_syncer);
        if let Some(syncer) = syncer
            && syncer.join().is_err()
        {
            tracing::error!("the intake's sync thread panicked");
        }
    }

    /// One batch under the write turn, on the intake connection (opened again if it failed).
    fn commit(
        &self,
        intake: &mut Option<SqliteIntake>,
        jobs: &[Job],
        finishes: &[Finish],
    ) -> Result<(Vec<Inserted>, Vec<Marked>), StoreError> {
        if self.store.is_closed() {
            return Err(StoreError::Closed);
        }
        let _turn = self.runtime.block_on(self.store.turn())?;
        let conn = match intake {
            Some(conn) => conn,
            None => intake.insert(SqliteIntake::open(&self.file)?),
        };
        let batch: Vec<&NewDelivery> = jobs.iter().map(|j| &j.delivery).collect();
        let done: Vec<&[Finished]> = finishes.iter().map(|f| f.done.as_slice()).collect();
        let (inserted, counts) = conn.insert(&batch, &done)?;
        self.store.recent().keep(
            batch
                .iter()
                .zip(&inserted)
                .filter(|(_, ins)| ins.state == DeliveryState::Queued)
                .map(|(d, ins)| (ins.id, d.body.clone())),
        );
        Ok((inserted, counts))
    }
}

/// Syncs the log once for every batch committed since the last sync, then answers them.
fn sync_loop(wal: &std::path::Path, rx: std_mpsc::Receiver<Committed>, sync: SyncFn) {
    while let Ok(first) = rx.recv() {
        let group: Vec<Committed> = std::iter::once(first).chain(rx.try_iter()).collect();
        match sync(wal) {
            Ok(()) => {
                for batch in group {
                    answer(batch.jobs, batch.inserted);
                    for (f, marked) in batch.finished {
                        let _ = f.reply.send(marked.map_err(WriteError::Store));
                    }
                }
            }
            Err(e) => {
                let e = StoreError::Failed(format!("cannot sync the write-ahead log: {e}"));
                for batch in group {
                    refuse(batch.jobs, &e);
                    refuse_marks(batch.finished.into_iter().map(|(f, _)| f), &e);
                }
            }
        }
    }
}

/// Answers the worker's finished deliveries that were not marked with the store's error
/// (the worker then marks them in a transaction of its own).
fn refuse_marks(finishes: impl IntoIterator<Item = Finish>, e: &StoreError) {
    for f in finishes {
        let _ = f.reply.send(Err(WriteError::Store(e.to_string())));
    }
}

/// Counts a committed batch's queued deliveries and wakes the worker (if there were any).
fn stored(inserted: &[Inserted], committed: &Notify) {
    if inserted.is_empty() {
        return;
    }
    crate::metrics::queue_changed(
        inserted
            .iter()
            .filter(|i| i.state == DeliveryState::Queued)
            .count() as i64,
    );
    committed.notify_one();
}

fn answer(jobs: Vec<Job>, inserted: Vec<Inserted>) {
    for (job, ins) in jobs.into_iter().zip(inserted) {
        let _ = job.reply.send(Ok(ins));
    }
}

fn refuse(jobs: Vec<Job>, e: &StoreError) {
    if jobs.is_empty() {
        return;
    }
    tracing::error!(error = %e, batch = jobs.len(), "cannot persist deliveries; answering 503");
    let msg = e.to_string();
    for job in jobs {
        let _ = job.reply.send(Err(WriteError::Store(msg.clone())));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::store::PackedBody;
    use crate::store::test_db::TestDb;

    fn delivery(key: &str) -> NewDelivery {
        NewDelivery {
            idempotency_key: key.to_string(),
            event: "Tag Push Hook".to_string(),
            project: "acme/shop".to_string(),
            received_at: crate::store::now_text(),
            state: DeliveryState::Queued,
            body: PackedBody::pack("{}"),
        }
    }

    async fn sqlite_writer(sync: SyncFn) -> (TestDb, Store, Writer) {
        let db = TestDb::sqlite();
        let store = Store::open(&db.url).await.expect("store");
        let (writer, _task) = Writer::spawn_with(store.clone(), Arc::new(Notify::new()), sync);
        (db, store, writer)
    }

    static SLOW_SYNCS: AtomicUsize = AtomicUsize::new(0);

    fn slow_sync(wal: &std::path::Path) -> std::io::Result<()> {
        SLOW_SYNCS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(400));
        sync_wal(wal)
    }

    /// A batch is committed (the worker may see it) before the log is synced, but answered
    /// only after; batches committed while a sync runs share the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_answers_after_the_log_is_synced_one_sync_per_group() {
        let (_db, store, writer) = sqlite_writer(slow_sync).await;
        let started = Instant::now();
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(delivery("sync-0")).await }
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!first.is_finished(), "answered before the log was synced");
        assert_eq!(
            store.queue_depth().await.expect("depth"),
            1,
            "committed before the sync"
        );
        // Ten more while the first sync sleeps: committed meanwhile, synced together.
        let rest: Vec<_> = (1..=10)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.write(delivery(&format!("sync-{i}"))).await })
            })
            .collect();
        let first = first.await.expect("task").expect("first write");
        assert_eq!(first.state, DeliveryState::Queued);
        assert!(started.elapsed() >= Duration::from_millis(400));
        for w in rest {
            assert_eq!(
                w.await.expect("task").expect("write").state,
                DeliveryState::Queued
            );
        }
        assert_eq!(SLOW_SYNCS.load(Ordering::SeqCst), 2, "one sync per group");
        store.close().await;
    }

    /// The worker's finished deliveries go through the writer: marked once the log holding
    /// them is synced, only while queued; with every `Writer` gone the finisher says so
    /// (the worker then commits its own transaction).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_finisher_marks_through_the_writer_until_the_writer_is_gone() {
        let (_db, store, writer) = sqlite_writer(sync_wal).await;
        let finisher = writer.finisher().expect("SQLite writers have one");
        let stored = writer.write(delivery("fin-1")).await.expect("write");
        let done = vec![Finished {
            id: stored.id,
            state: DeliveryState::Processed,
            summary: "tag v1 created".into(),
            run_id: None,
        }];
        assert_eq!(finisher.finish(done.clone()).await.expect("finish"), 1);
        assert_eq!(finisher.finish(done.clone()).await.expect("again"), 0);
        assert_eq!(store.queue_depth().await.expect("depth"), 0);
        drop(writer);
        assert!(matches!(
            finisher.finish(done).await,
            Err(WriteError::Closed)
        ));
        store.close().await;
    }

    /// The intake's connection, with its filter of the stored keys, is opened when the
    /// writer starts, not by the first delivery: once the writer has started, the store's
    /// file is moved away, and a delivery is still stored through the open connection (a
    /// connection opened now would find no store there).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_intake_is_open_before_the_first_delivery() {
        let (_db, store, writer) = sqlite_writer(sync_wal).await;
        tokio::time::timeout(Duration::from_secs(10), writer.started())
            .await
            .expect("the writer starts");
        let file = store.sqlite_file().expect("a SQLite store").to_path_buf();
        std::fs::rename(&file, file.with_extension("moved")).expect("move the store's file");
        let stored = writer.write(delivery("after-start")).await.expect("stored");
        assert_eq!(stored.state, DeliveryState::Queued);
        store.close().await;
    }

    /// The bodies the writer commits are left in memory for the worker, packed as the
    /// receiver made them (not read back from the file), and taken from there once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_bodies_are_left_packed_for_the_worker() {
        let (_db, store, writer) = sqlite_writer(sync_wal).await;
        let d = delivery("kept-1");
        let size = d.body.bytes().len();
        writer.write(d).await.expect("stored");
        assert_eq!(store.recent().len(), (1, size), "kept, packed");
        let queued = store.queued(10).await.expect("read");
        assert!(matches!(
            queued[0].body,
            crate::store::QueuedBody::Packed(_)
        ));
        assert_eq!(queued[0].text(), "{}");
        assert_eq!(store.recent().len(), (0, 0), "taken from memory");
        store.close().await;
    }

    fn failed_sync(_wal: &std::path::Path) -> std::io::Result<()> {
        Err(std::io::Error::other("the disk is gone"))
    }

    /// A log that cannot be synced answers 503 (a store error), never an unsynced 200.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_log_that_cannot_be_synced_is_a_store_error() {
        let (_db, store, writer) = sqlite_writer(failed_sync).await;
        match writer.write(delivery("unsynced")).await {
            Err(WriteError::Store(msg)) => {
                assert!(msg.contains("cannot sync the write-ahead log"), "{msg}");
            }
            other => panic!("expected a store error, got {other:?}"),
        }
        store.close().await;
    }
}
