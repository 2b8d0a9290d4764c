//! The worker's parse and the receiver's packing of an 8 KB pipeline hook, against
//! what the same bytes cost to read into a `serde_json::Value` and to skip unread.
//!
//! `cargo bench --bench parse`: prints the median time per body over 15 samples, and
//! each as a ratio to the `Value` baseline measured in the same run.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

const SAMPLES: usize = 15;
const PER_SAMPLE: u32 = 4_000;

fn per_body(mut f: impl FnMut()) -> Duration {
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        for _ in 0..PER_SAMPLE {
            f();
        }
        samples.push(started.elapsed() / PER_SAMPLE);
    }
    common::median(&mut samples)
}

fn main() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pipeline_tag_manual.json"
    );
    let body = match std::fs::read_to_string(path) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(1);
        }
    };
    let baseline = per_body(|| {
        black_box(serde_json::from_str::<serde_json::Value>(black_box(&body)).ok());
    });
    let rows = [
        ("serde_json::Value (baseline)", baseline),
        (
            "skip unread (IgnoredAny)",
            per_body(|| {
                black_box(serde_json::from_str::<serde::de::IgnoredAny>(black_box(&body)).ok());
            }),
        ),
        (
            "typed event (worker)",
            per_body(|| {
                black_box(hoist::events::parse_text("Pipeline Hook", black_box(&body)).ok());
            }),
        ),
        (
            "LZ4 pack (receiver)",
            per_body(|| {
                black_box(hoist::store::PackedBody::pack(black_box(&body)));
            }),
        ),
    ];
    println!(
        "{} bytes, median of {SAMPLES} samples of {PER_SAMPLE}",
        body.len()
    );
    for (name, took) in rows {
        println!(
            "{name:<30} {:>8.2} µs  {:>5.2}× baseline",
            took.as_secs_f64() * 1e6,
            took.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}
