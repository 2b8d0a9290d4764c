//! The suite-wide secret scan: after every other test ran, no output they captured holds a
//! test secret (see `tests/support/capture.rs` for what is captured).
//!
//! `scripts/test` runs the ignored test here last, with `HOIST_TEST_OUTPUT` set.

mod support;

use std::path::{Path, PathBuf};

use support::capture::output_dir;

/// Kinds of output that must have been captured for the scan to mean something.
const KINDS: [&str; 5] = ["log", "response", "comment", "page", "cli"];

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Where a secret was found: file, line number and which secret (by index, never its text).
fn findings(text: &str, secrets: &[String]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for (i, s) in secrets.iter().enumerate() {
            if line.contains(s.as_str()) {
                found.push((n + 1, i));
            }
        }
    }
    found
}

#[test]
fn the_scan_finds_a_planted_secret_and_names_it_only_by_number() {
    let secrets = support::secrets();
    let text = format!("fine\nleaked: {}\nfine", secrets[2]);
    assert_eq!(findings(&text, &secrets), vec![(2, 2)]);
    assert!(findings("nothing to see", &secrets).is_empty());
}

#[test]
#[ignore = "runs after the whole suite (scripts/test), over what it captured"]
fn no_output_of_the_whole_suite_holds_a_secret() {
    let Some(dir) = output_dir() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but HOIST_TEST_OUTPUT is not: run the suite through scripts/test"
        );
        return;
    };
    let secrets = support::secrets();
    assert!(
        secrets.len() > 8,
        "the registry password is among the secrets"
    );
    let mut scanned = files(&dir);
    // The suite's own console output: panics and error messages.
    if let Some(state) = std::env::var_os("HOIST_TEST_STATE") {
        let log = Path::new(&state).join("cargo-test.log");
        if log.exists() {
            scanned.push(log);
        }
    }
    let mut bytes = 0usize;
    let mut leaks = Vec::new();
    for path in &scanned {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        bytes += text.len();
        for (line, which) in findings(&text, &secrets) {
            leaks.push(format!("{}:{line}: secret #{which}", path.display()));
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets in the suite's output:\n{}",
        leaks.join("\n")
    );
    for kind in KINDS {
        let n = files(&dir.join(kind)).len();
        assert!(
            n > 0,
            "nothing of kind {kind} was captured: the scan would prove nothing"
        );
    }
    assert!(
        bytes > 500_000,
        "only {bytes} bytes captured: the suite should produce far more"
    );
    eprintln!(
        "secret scan: {} files, {bytes} bytes, {} secrets, none found",
        scanned.len(),
        secrets.len()
    );
}
