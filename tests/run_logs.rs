//! Logs of a run in JSON (`--log-format json`): every line of the run carries `run_id`, `project`, `env`.
//!
//! One test in its own binary: it installs the process-wide subscriber that hoist's
//! binary installs, writing into a buffer, and drives a real tag deploy.

mod story_support;
mod support;
mod swarm_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use hoist::logging::{LogFormat, subscriber};
use story_support::Story;

/// The log sink: every line the subscriber writes.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_a_run_names_the_run_project_and_env() {
    let buffer = Buffer::default();
    tracing::subscriber::set_global_default(subscriber(
        LogFormat::Json,
        Some("hoist=debug"),
        buffer.clone(),
        false,
    ))
    .expect("the only subscriber in this binary");
    let Some(story) = Story::start("logs").await else {
        return;
    };
    let world = &story.world;
    let tag = world.push_tag("acme/shop", "v7.0.0", true).await;
    let run = story.finished_run(&tag.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    world
        .wait_for(|w| w.commit_comments(&tag.sha).len() == 2)
        .await;
    let run_id = run["id"].as_i64().expect("run id");

    let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("UTF-8 logs");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // A run's lines: those inside a `run` span, and whatever the executor, Swarm and outbox say.
    let in_run = |l: &serde_json::Value| {
        l["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "run"))
    };
    let run_targets = [
        "hoist::engine::run",
        "hoist::swarm",
        "hoist::engine::outbox",
    ];
    let mut seen = 0;
    for line in &lines {
        let target = line["target"].as_str().unwrap_or("");
        let from_run_code = run_targets.iter().any(|t| target.starts_with(t))
            && !line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cannot read"));
        if !(in_run(line) || from_run_code) {
            continue;
        }
        let run_span = line["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "run"))
            .unwrap_or_else(|| panic!("a run's line outside the run span: {line}"));
        assert_eq!(run_span["run_id"].as_i64(), Some(run_id), "{line}");
        assert_eq!(run_span["project"], "acme/shop", "{line}");
        assert_eq!(run_span["env"], "production", "{line}");
        seen += 1;
    }
    let messages: Vec<&str> = lines
        .iter()
        .filter(|l| in_run(l))
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    for expected in [
        "step started",
        "step finished",
        "service created",
        "run finished",
    ] {
        assert!(
            messages.contains(&expected),
            "{expected:?} among the run's lines: {messages:#?}"
        );
    }
    assert!(seen >= 10, "only {seen} lines of the run: {messages:#?}");
    for secret in support::secrets() {
        assert!(!text.contains(&secret), "a secret in the logs");
    }
}
