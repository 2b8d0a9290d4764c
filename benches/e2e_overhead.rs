//! Benchmark: hoist's own overhead in a whole tag deploy, from the pipeline webhook to the final comment.
//!
//! The fake GitLab's jobs take a fixed, known time; the real engine deploys to the
//! test swarm. For each run: total = pipeline hook sent → final commit comment
//! posted; overhead = total − the jobs' own time (pending + running, as the fake
//! recorded them) − Swarm's convergence (the `converge` step, as hoist recorded it).
//! Also counts the GitLab API calls one run makes. Needs the test engine:
//! `scripts/bench-e2e` (RUNS=N to change the count).

mod common;
#[path = "../tests/story_support/mod.rs"]
mod story_support;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/swarm_support/mod.rs"]
mod swarm_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::median;

use story_support::Story;

const JOB_TIME: Duration = Duration::from_millis(300);

fn millis_between(start: &serde_json::Value, end: &serde_json::Value) -> Duration {
    let parse = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .expect("an RFC 3339 timestamp")
    };
    (parse(end) - parse(start)).to_std().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(story) = Story::start("e2e").await else {
        eprintln!("bench skipped: no test environment (scripts/bench-e2e starts one)");
        return;
    };
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9)
        .max(1);
    let world = &story.world;
    world.set_job_duration("manifest", JOB_TIME);
    world.set_job_duration("deploy", JOB_TIME);

    let (mut totals, mut jobs, mut converges, mut overheads) = (vec![], vec![], vec![], vec![]);
    let mut calls_per_run = Vec::new();
    let mut call_kinds: BTreeMap<String, usize> = BTreeMap::new();
    // One warm-up run creates the service; the measured runs update it, as in production.
    for i in 0..=runs {
        let calls_before = world.call_log().len();
        let started = Instant::now();
        let wall_start = serde_json::Value::from(
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        let tag = world
            .push_tag("acme/shop", &format!("v{}.0.0", i + 1), true)
            .await;
        while world.commit_comments(&tag.sha).len() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "run {i} never finished"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let total = started.elapsed();
        let wall_end = serde_json::Value::from(
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        let run = story.finished_run(&tag.sha).await;
        assert_eq!(run["state"], "succeeded", "{run:#}");
        let step = |name: &str| {
            run["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == name))
                .cloned()
                .unwrap_or_default()
        };
        let converge = step("converge");
        let converge = millis_between(&converge["started_at"], &converge["finished_at"]);
        let job_time: Duration = ["manifest", "deploy"]
            .iter()
            .map(|name| {
                let job = world.job(tag.pipeline_id, name);
                world.pending_delay()
                    + millis_between(&job.started_at.into(), &job.finished_at.into())
            })
            .sum();
        if i == 0 {
            eprintln!(
                "warm-up (service created): total {:.0} ms, jobs {:.0} ms, converge {:.0} ms",
                ms(total),
                ms(job_time),
                ms(converge)
            );
            continue;
        }
        let log = world.call_log();
        calls_per_run.push(log.len() - calls_before);
        for call in &log[calls_before..] {
            *call_kinds.entry(call.clone()).or_default() += 1;
        }
        let overhead = total.saturating_sub(job_time + converge);
        // Where the time went: webhook → run start, each step, last step → final comment.
        let mut marks = vec![(
            "hook→start".to_string(),
            millis_between(&wall_start, &run["started_at"]),
        )];
        let mut last_end = run["started_at"].clone();
        for s in run["steps"].as_array().into_iter().flatten() {
            if s["started_at"].is_string() {
                marks.push((
                    format!("gap→{}", s["name"].as_str().unwrap_or("")),
                    millis_between(&last_end, &s["started_at"]),
                ));
                marks.push((
                    s["name"].as_str().unwrap_or("").to_string(),
                    millis_between(&s["started_at"], &s["finished_at"]),
                ));
                last_end = s["finished_at"].clone();
            }
        }
        marks.push(("→comment".into(), millis_between(&last_end, &wall_end)));
        let marks: Vec<String> = marks
            .iter()
            .map(|(k, v)| format!("{k} {:.0}", ms(*v)))
            .collect();
        eprintln!("    {}", marks.join(" · "));
        totals.push(total);
        jobs.push(job_time);
        converges.push(converge);
        overheads.push(overhead);
    }
    let total = median(&mut totals);
    let overhead = median(&mut overheads);
    println!("e2e tag deploy, {runs} runs (medians):");
    println!(
        "  total (pipeline hook → final comment): {:.0} ms",
        ms(total)
    );
    println!(
        "  jobs' own time (manifest + deploy):     {:.0} ms",
        ms(median(&mut jobs))
    );
    println!(
        "  Swarm convergence:                      {:.0} ms",
        ms(median(&mut converges))
    );
    println!(
        "  hoist's overhead:                       {:.0} ms ({:.2} of the total; target ≤ 300 ms)",
        ms(overhead),
        overhead.as_secs_f64() / total.as_secs_f64()
    );
    calls_per_run.sort_unstable();
    println!(
        "  GitLab API calls per run: {} (min {}, max {})",
        calls_per_run[calls_per_run.len() / 2],
        calls_per_run[0],
        calls_per_run[calls_per_run.len() - 1]
    );
    for (call, count) in call_kinds {
        println!("    {:>5.1}  {call}", count as f64 / runs as f64);
    }
}
