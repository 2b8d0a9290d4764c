//! `hoist check --offline`: exit 0 for a valid file, 2 with `FILE: key: reason` otherwise;
//! and the other commands' usage errors, which exit 2 before doing anything.

mod support;

use std::process::Command;

fn check(config: &str, envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hoist.toml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
    cmd.args(["check", "--offline", "--config"])
        .arg(&path)
        .env_clear();
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run hoist check");
    support::capture::capture_output(&out);
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

#[test]
fn the_example_config_checks_out() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hoist.toml"))
            .expect("example");
    let (code, stdout, stderr) = check(
        &example,
        &[("HOIST_GITLAB_TOKEN", "t"), ("HOIST_WEBHOOK_TOKEN", "w")],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn a_bad_config_exits_2_naming_file_key_and_reason() {
    let (code, _, stderr) = check(
        "[gitlab]\nurl = \"http://x\"\ntoken = \"env:MISSING\"\n",
        &[],
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr.trim(),
        "FILE: gitlab.token: environment variable MISSING is not set"
    );
    let (code, _, stderr) = check(
        "[gitlab]\nurl = \"http://x\"\ntoken = \"env:T\"\ncolour = 1\n",
        &[("T", "secret-value-x")],
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("FILE: gitlab.colour: unknown field `colour`"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-value-x"));
}

#[test]
fn hoist_config_names_the_file_when_config_is_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("elsewhere.toml");
    std::fs::write(&path, "[gitlab]\nurl = \"http://x\"\ntoken = \"env:T\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args(["check", "--offline"])
        .env_clear()
        .env("HOIST_CONFIG", &path)
        .env("T", "t")
        .current_dir(dir.path())
        .output()
        .expect("run");
    support::capture::capture_output(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `hoist ARGS` in `dir` with only `T=t` in its environment: (exit code, stderr).
fn hoist(args: &[&str], dir: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args(args)
        .env_clear()
        .env("T", "t")
        .current_dir(dir)
        .output()
        .expect("run hoist");
    support::capture::capture_output(&out);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hoist_deploy_without_a_tag_mr_or_pipeline_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stderr) = hoist(
        &["deploy", "--project", "acme/shop", "--env", "staging"],
        dir.path(),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--tag") && stderr.contains("--mr") && stderr.contains("--pipeline"),
        "names what is missing: {stderr}"
    );
    let two = [
        "deploy",
        "--project",
        "p",
        "--env",
        "e",
        "--tag",
        "v1",
        "--mr",
        "3",
    ];
    assert_eq!(hoist(&two, dir.path()).0, Some(2), "two targets at once");
}

/// `hoist history` run with a config whose SQLite store does not exist (the wrong
/// directory, a relative path) says so and exits 2, leaving no empty store behind.
#[test]
fn hoist_history_without_a_store_says_so_and_creates_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("hoist.toml"),
        "[gitlab]\nurl = \"http://x\"\ntoken = \"env:T\"\n[store]\nurl = \"sqlite://hoist.db\"\n",
    )
    .expect("write");
    let (code, stderr) = hoist(&["history", "--config", "hoist.toml"], dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("store.url") && stderr.contains("no store at hoist.db"),
        "{stderr}"
    );
    assert!(!dir.path().join("hoist.db").exists(), "no store was made");
}
