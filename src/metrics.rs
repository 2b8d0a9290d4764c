//! Prometheus metrics (SPEC §6): names and labels here are part of the contract.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static QUEUE_DEPTH: AtomicI64 = AtomicI64::new(0);

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let ack_buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
            ];
            let step_buckets = [
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0, 1800.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("hoist_webhook_ack_seconds".into()),
                    &ack_buckets,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("hoist_run_step_seconds".into()),
                        &step_buckets,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Another recorder may already be installed (tests): then metrics go there, rendering stays valid.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "hoist_webhook_deliveries_total",
        "Webhook deliveries by event and outcome"
    );
    metrics::describe_histogram!("hoist_webhook_ack_seconds", "Time from receipt to response");
    metrics::describe_gauge!(
        "hoist_drift",
        "1 when a service runs something other than hoist's last deploy"
    );
    metrics::describe_gauge!(
        "hoist_queue_depth",
        "Deliveries persisted but not yet processed"
    );
    metrics::describe_counter!(
        "hoist_runs_total",
        "Deploy runs by project, environment and outcome"
    );
    metrics::describe_histogram!("hoist_run_step_seconds", "Duration of deploy run steps");
    metrics::describe_counter!(
        "hoist_gitlab_requests_total",
        "GitLab API requests by endpoint and status"
    );
    metrics::describe_counter!(
        "hoist_docker_requests_total",
        "Docker Engine API requests by operation and status"
    );
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Folds the histograms' recorded samples into their buckets every [`UPKEEP_PERIOD`]
/// until `stop` turns true (or its sender is gone).
///
/// The exporter keeps every recorded sample until an upkeep, which a scrape of
/// `/metrics` also runs. A recorder made with `build_recorder` has no upkeep task of its
/// own: without a scraper, memory grew with every webhook answered.
pub fn spawn_upkeep(stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let handle = install();
    every(UPKEEP_PERIOD, stop, move || handle.run_upkeep())
}

/// Runs `f` every `period` (the first time after one period) until `stop` changes.
fn every(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    f: impl Fn() + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + period;
        let mut tick = tokio::time::interval_at(start, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => f(),
                _ = stop.changed() => break,
            }
        }
    })
}

/// Prometheus text for `/metrics`.
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

/// One answered webhook delivery.
pub fn webhook_delivery(event: &'static str, outcome: &'static str, took: Duration) {
    metrics::counter!("hoist_webhook_deliveries_total", "event" => event, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("hoist_webhook_ack_seconds").record(took.as_secs_f64());
}

/// Sets the queue depth (at start, from the store).
pub fn set_queue_depth(depth: i64) {
    QUEUE_DEPTH.store(depth, Ordering::Relaxed);
    metrics::gauge!("hoist_queue_depth").set(depth as f64);
}

/// Whether a service drifted from hoist's last deploy (1) or not (0).
pub fn drift(project: &str, env: &str, service: &str, drifted: bool) {
    metrics::gauge!("hoist_drift", "project" => project.to_string(), "env" => env.to_string(), "service" => service.to_string())
        .set(if drifted { 1.0 } else { 0.0 });
}

/// Adds to (or, negative, subtracts from) the queue depth.
pub fn queue_changed(delta: i64) {
    let depth = QUEUE_DEPTH.fetch_add(delta, Ordering::Relaxed) + delta;
    metrics::gauge!("hoist_queue_depth").set(depth.max(0) as f64);
}

/// A run reached a final state.
pub fn run_finished(project: &str, env: &str, outcome: &str) {
    metrics::counter!("hoist_runs_total", "project" => project.to_string(), "env" => env.to_string(), "outcome" => outcome.to_string())
        .increment(1);
}

/// A run step took `took`.
pub fn run_step(step: &'static str, took: Duration) {
    metrics::histogram!("hoist_run_step_seconds", "step" => step).record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// The upkeep runs once a period, not before the first one has passed, and ends when
    /// told to stop.
    #[tokio::test]
    async fn upkeep_runs_every_period_until_stopped() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = watch::channel(false);
        let counted = runs.clone();
        let task = every(Duration::from_millis(100), stopped, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "not before one period");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let ran = runs.load(Ordering::SeqCst);
        assert!((2..=4).contains(&ran), "about one run per period: {ran}");
        stop.send(true).expect("stop");
        task.await.expect("the task ends");
        let stopped_at = runs.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            stopped_at,
            "none after the stop"
        );
    }

    /// Samples recorded before an upkeep are in the next rendering.
    #[tokio::test]
    async fn samples_folded_by_the_upkeep_are_rendered() {
        let handle = install();
        let count = || {
            handle
                .render()
                .lines()
                .find_map(|l| l.strip_prefix("hoist_run_step_seconds_count{step=\"upkeep_test\"} "))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = count();
        for _ in 0..3 {
            run_step("upkeep_test", Duration::from_millis(1));
        }
        handle.run_upkeep();
        assert_eq!(count(), before + 3);
    }
}
