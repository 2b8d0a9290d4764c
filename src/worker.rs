//! The worker: claims stored deliveries in order of arrival and hands each to the engine.
//!
//! A delivery is marked done in the same transaction as the engine's decisions
//! (runs queued, replies recorded), so a crash leaves it either queued (and
//! processed after restart) or done, never half-handled. On SQLite a batch with no
//! decision but the deliveries' own records (most hooks) is marked by the intake writer
//! in its next transaction ([`Finisher`]): one commit fewer for the intake to wait behind.
//!
//! Parsing the bodies, most of the worker's CPU, runs on a thread of its own at a
//! lower CPU priority (`Parser`): when deliveries flood in, answering GitLab comes
//! first and the queue waits, instead of both slowing down alike. Full batches (a
//! flood) go to a second thread, which takes only CPU nobody else wants (`SCHED_IDLE`).

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::{Notify, oneshot, watch};

use crate::engine::{Engine, dispatch};
use crate::events::{self, Event, ParseError};
use crate::store::{self, Finished, QueuedDelivery, StoreError};
use crate::webhook::writer::Finisher;

/// The parser threads' nice value (0 is the default, 19 the lowest priority): a receiver
/// on a busy machine wins the CPU, and the worker still gets a tenth of it to keep up.
const PARSER_NICE: i32 = 10;

/// How a parser thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Priority {
    /// [`PARSER_NICE`], for batches that are not full: a few deliveries at a time, and a
    /// deploy asked for on a busy host is not held back by the host's other work.
    Low,
    /// `SCHED_IDLE`, for full batches: a flood (or a backlog) is under way, and the
    /// parser runs only on CPU that neither the receiver nor the intake wants; any of
    /// their threads that wakes takes the core at once. The backlog is parsed in the
    /// gaps and after the flood (docs/operations.md, "Intake benchmark").
    Idle,
}

impl Priority {
    /// The priority a batch of `len` deliveries is parsed at.
    fn for_batch(len: usize) -> Priority {
        if len >= BATCH as usize {
            Priority::Idle
        } else {
            Priority::Low
        }
    }
}

/// How long the worker lets a burst gather after a batch that was not full.
const GATHER: Duration = Duration::from_millis(20);

/// How many deliveries one transaction handles.
const BATCH: i64 = 256;

/// A batch of deliveries and what their bodies parsed to.
type Parsed = (Vec<QueuedDelivery>, Vec<Result<Event, ParseError>>);

/// What a parser thread is handed: a batch, and where to answer.
type ParseJob = (Vec<QueuedDelivery>, oneshot::Sender<Parsed>);

/// Parses delivery bodies on threads of their own: one at [`Priority::Low`] and one at
/// [`Priority::Idle`], each batch on the one [`Priority::for_batch`] names. Two threads,
/// not one that switches: leaving `SCHED_IDLE` takes `CAP_SYS_NICE`, which hoist
/// usually runs without, and a thread stuck there would hold deploys back on a busy host.
struct Parser {
    low: Option<std_mpsc::Sender<ParseJob>>,
    idle: Option<std_mpsc::Sender<ParseJob>>,
}

impl Parser {
    /// Starts the threads; they end when the parser is dropped. Without a thread (it could
    /// not be started) its batches go to the other, or are parsed on the caller's task.
    fn start() -> Parser {
        Parser {
            low: spawn_parser("hoist-parse", Priority::Low),
            idle: spawn_parser("hoist-idleparse", Priority::Idle),
        }
    }

    async fn parse(&self, batch: Vec<QueuedDelivery>) -> Parsed {
        let thread = match Priority::for_batch(batch.len()) {
            Priority::Low => self.low.as_ref().or(self.idle.as_ref()),
            Priority::Idle => self.idle.as_ref().or(self.low.as_ref()),
        };
        let Some(thread) = thread else {
            return parse_all(batch);
        };
        let (reply, answer) = oneshot::channel();
        match thread.send((batch, reply)) {
            // The thread died (a panic in the parser): the batch is still queued in the
            // store, and the worker's error path retries it.
            Ok(()) => answer.await.unwrap_or_default(),
            Err(std_mpsc::SendError((batch, _))) => parse_all(batch),
        }
    }
}

/// Starts a parser thread named `name`, scheduled at `priority`.
fn spawn_parser(name: &str, priority: Priority) -> Option<std_mpsc::Sender<ParseJob>> {
    let (jobs, inbox) = std_mpsc::channel::<ParseJob>();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority(PARSER_NICE);
            if priority == Priority::Idle {
                idle_priority();
            }
            for (batch, reply) in inbox {
                let _ = reply.send(parse_all(batch));
            }
        });
    match spawned {
        Ok(_) => Some(jobs),
        Err(e) => {
            tracing::warn!(error = %e, thread = name, "cannot start a parser thread");
            None
        }
    }
}

fn parse_all(batch: Vec<QueuedDelivery>) -> Parsed {
    let parsed = batch
        .iter()
        .map(|d| events::parse_text(&d.event, &d.text()))
        .collect();
    (batch, parsed)
}

/// Lowers the calling thread's CPU priority (Linux: `setpriority` with `PRIO_PROCESS` and
/// id 0 names the calling thread, not the process). Best effort: a refusal is only logged.
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    // SAFETY: setpriority takes three integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the parser's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) {}

/// Schedules the calling thread at `SCHED_IDLE` (Linux; any thread may, without
/// privileges). Best effort: refused, the thread keeps its nice value.
#[cfg(target_os = "linux")]
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` lives across the call, which only reads it; pid 0 is this thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot give the parser idle priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn idle_priority() {}

/// Runs until `shutdown` turns true; finishes the batch in hand first. With a
/// `finisher` (SQLite), batches with no effect but their own records are marked done in
/// the intake's transactions.
pub async fn run(
    engine: Arc<Engine>,
    committed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    finisher: Option<Finisher>,
) {
    let parser = Parser::start();
    loop {
        if *shutdown.borrow() {
            break;
        }
        match process_batch(&engine, &parser, finisher.as_ref()).await {
            Ok(0) => {
                tokio::select! {
                    _ = committed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
            }
            // A part batch while deliveries keep coming: let the next one gather for a
            // moment. Each batch is a write transaction that the intake's writer waits
            // behind; under a burst, batches of ~40 every millisecond became
            // batches of hundreds, and the first delivery after a quiet spell is still
            // taken at once (the wait above ends on its commit).
            Ok(n) if n < BATCH as usize => {
                tokio::select! {
                    _ = tokio::time::sleep(GATHER) => {}
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
async fn process_batch(
    engine: &Engine,
    parser: &Parser,
    finisher: Option<&Finisher>,
) -> Result<usize, StoreError> {
    let ttl = engine.options.lease_ttl;
    let queued = engine
        .store
        .claim_deliveries(&engine.instance, BATCH, ttl)
        .await?;
    if queued.is_empty() {
        return Ok(0);
    }
    let (queued, parsed) = parser.parse(queued).await;
    if queued.is_empty() {
        return Err(StoreError::Failed("the parser thread stopped".into()));
    }
    let mut plans = Vec::with_capacity(queued.len());
    for (d, event) in queued.iter().zip(parsed) {
        plans.push(engine.plan(d, event).await);
    }
    // Nothing to commit but the deliveries' own records (the common case: most hooks
    // start nothing): the intake marks them in its next transaction, which it writes
    // anyway, instead of a transaction of the worker's that the intake would wait behind.
    let plain = plans
        .iter()
        .all(|p| p.runs.is_empty() && p.writes.is_empty());
    if let (true, Some(finisher)) = (plain, finisher) {
        let done = queued
            .iter()
            .zip(&plans)
            .map(|(d, plan)| finished(d, plan, None))
            .collect();
        match finisher.finish(done).await {
            Ok(done) => {
                crate::metrics::queue_changed(-(done as i64));
                log_outcomes(&queued, &plans);
                return Ok(done as usize);
            }
            // Shutting down (the intake is gone), or the marks failed: the worker's own
            // transaction below does it.
            Err(e) => tracing::debug!(error = %e, "the intake did not mark the batch"),
        }
    }
    let mut tx = engine.store.begin().await?;
    let ids: Vec<i64> = queued.iter().map(|d| d.id).collect();
    if !engine
        .store
        .still_holds_deliveries(&mut tx, &engine.instance, &ids)
        .await?
    {
        // Planning outlasted the lease and another replica took the batch: it does the work.
        tracing::warn!(
            batch = ids.len(),
            "delivery lease lost; leaving the batch to its new holder"
        );
        tx.rollback().await?;
        return Ok(0);
    }
    let now = store::now_text();
    let mut marks = Vec::with_capacity(queued.len());
    let mut new_runs = false;
    for (d, plan) in queued.iter().zip(&plans) {
        let run_id = dispatch::apply(&mut tx, plan, &d.project).await?;
        new_runs |= run_id.is_some();
        marks.push(finished(d, plan, run_id));
    }
    let done = store::finish_deliveries(&mut tx, &marks, &now).await? as usize;
    tx.commit().await?;
    crate::metrics::queue_changed(-(done as i64));
    if new_runs {
        engine.runs_changed.notify_one();
    }
    engine.outbox_changed.notify_one();
    log_outcomes(&queued, &plans);
    Ok(done)
}

/// The record of what became of delivery `d`.
fn finished(d: &QueuedDelivery, plan: &dispatch::Plan, run_id: Option<i64>) -> Finished {
    Finished {
        id: d.id,
        state: plan.state,
        summary: plan.summary.clone(),
        run_id,
    }
}

/// One log line per delivery handled, saying what it meant.
fn log_outcomes(queued: &[QueuedDelivery], plans: &[dispatch::Plan]) {
    for (d, plan) in queued.iter().zip(plans) {
        tracing::info!(delivery = d.id, event = %d.event, project = %d.project, state = plan.state.as_str(), "{}", plan.summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::QueuedBody;

    fn queued(id: i64, event: &str, body: &str) -> QueuedDelivery {
        QueuedDelivery {
            id,
            event: event.to_string(),
            project: "acme/shop".to_string(),
            body: QueuedBody::Text(body.into()),
        }
    }

    /// A parser thread that dies mid-batch (a panic) fails that batch once, which stays
    /// queued for the worker's retry; every later batch is parsed on the worker's task.
    #[tokio::test]
    async fn a_dead_parser_thread_fails_one_batch_then_the_worker_parses() {
        let (jobs, inbox) = std_mpsc::channel::<ParseJob>();
        let dying = std::thread::spawn(move || {
            // Takes one batch and ends without answering, as a panicking parse would.
            let (_batch, _reply) = inbox.recv().expect("a batch");
        });
        let parser = Parser {
            low: Some(jobs),
            idle: None,
        };
        let tag = include_str!("../tests/fixtures/tag_push.json");
        let (lost, parsed) = parser.parse(vec![queued(1, "Tag Push Hook", tag)]).await;
        assert!(lost.is_empty() && parsed.is_empty(), "no answer, no batch");
        dying.join().expect("the thread ended");
        let (back, parsed) = parser.parse(vec![queued(2, "Tag Push Hook", tag)]).await;
        assert_eq!(back.iter().map(|d| d.id).collect::<Vec<_>>(), [2]);
        assert!(
            matches!(parsed[0], Ok(Event::TagPush(_))),
            "{:?}",
            parsed[0]
        );
    }

    /// A full batch goes to the idle thread, any other to the one at nice 10; with one
    /// thread missing, the other takes its batches.
    #[tokio::test]
    async fn full_batches_go_to_the_idle_parser_the_rest_to_the_low_one() {
        let tag = include_str!("../tests/fixtures/tag_push.json");
        let batch = |n: i64| -> Vec<QueuedDelivery> {
            (0..n).map(|id| queued(id, "Tag Push Hook", tag)).collect()
        };
        // Answers each batch it is handed and reports its size.
        let thread = || {
            let (jobs, inbox) = std_mpsc::channel::<ParseJob>();
            let (seen, sizes) = std_mpsc::channel::<usize>();
            std::thread::spawn(move || {
                for (batch, reply) in inbox {
                    let _ = seen.send(batch.len());
                    let _ = reply.send(parse_all(batch));
                }
            });
            (jobs, sizes)
        };
        let ((low, low_sizes), (idle, idle_sizes)) = (thread(), thread());
        let both = Parser {
            low: Some(low.clone()),
            idle: Some(idle.clone()),
        };
        both.parse(batch(BATCH)).await;
        both.parse(batch(BATCH - 1)).await;
        assert_eq!(idle_sizes.try_iter().collect::<Vec<_>>(), [BATCH as usize]);
        assert_eq!(
            low_sizes.try_iter().collect::<Vec<_>>(),
            [BATCH as usize - 1]
        );
        let only_low = Parser {
            low: Some(low),
            idle: None,
        };
        only_low.parse(batch(BATCH)).await;
        assert_eq!(low_sizes.try_iter().collect::<Vec<_>>(), [BATCH as usize]);
        let only_idle = Parser {
            low: None,
            idle: Some(idle),
        };
        only_idle.parse(batch(1)).await;
        assert_eq!(idle_sizes.try_iter().collect::<Vec<_>>(), [1]);
    }

    /// The nice value and scheduling policy of this process's thread called `name`.
    #[cfg(target_os = "linux")]
    fn scheduling(name: &str) -> Option<(i32, i32)> {
        let stat = std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .and_then(|t| std::fs::read_to_string(t.path().join("stat")).ok())?;
        // Fields after the command's closing parenthesis, from field 3: nice is field 19,
        // the policy field 41.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some((fields.get(16)?.parse().ok()?, fields.get(38)?.parse().ok()?))
    }

    /// The parser threads answer a batch in its order, as `events::parse` would: a batch
    /// that is not full on the thread at nice 10, a full one (a flood) on the thread at
    /// `SCHED_IDLE`.
    #[tokio::test]
    async fn parser_threads_parse_batches_in_order_full_ones_at_idle_priority() {
        let parser = Parser::start();
        let batch = vec![
            queued(
                7,
                "Tag Push Hook",
                include_str!("../tests/fixtures/tag_push.json"),
            ),
            queued(8, "Pipeline Hook", "not json"),
            queued(
                9,
                "Pipeline Hook",
                include_str!("../tests/fixtures/pipeline_tag_manual.json"),
            ),
        ];
        let (back, parsed) = parser.parse(batch).await;
        assert_eq!(back.iter().map(|d| d.id).collect::<Vec<_>>(), [7, 8, 9]);
        assert!(
            matches!(parsed[0], Ok(Event::TagPush(_))),
            "{:?}",
            parsed[0]
        );
        assert!(parsed[1].is_err());
        assert!(
            matches!(parsed[2], Ok(Event::Pipeline(_))),
            "{:?}",
            parsed[2]
        );
        let tag = include_str!("../tests/fixtures/tag_push.json");
        let full: Vec<_> = (0..BATCH)
            .map(|id| queued(id, "Tag Push Hook", tag))
            .collect();
        let (back, parsed) = parser.parse(full).await;
        assert_eq!(back.len(), BATCH as usize);
        assert!(parsed.iter().all(|p| matches!(p, Ok(Event::TagPush(_)))));
        #[cfg(target_os = "linux")]
        {
            const SCHED_OTHER: i32 = 0;
            const SCHED_IDLE: i32 = 5;
            assert_eq!(scheduling("hoist-parse"), Some((PARSER_NICE, SCHED_OTHER)));
            assert_eq!(
                scheduling("hoist-idleparse"),
                Some((PARSER_NICE, SCHED_IDLE))
            );
        }
    }
}
