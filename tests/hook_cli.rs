//! `hoist hook install` / `hoist hook status`: the real binary against the fake GitLab.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist::config::Secret;
use hoist::gitlab::{GitLab, HookSpec, HttpClient, RetryPolicy};
use serde_json::Value;
use support::fake_gitlab::{BOT_USERNAME, DEVELOPER, FakeGitlab, HookAuth};
use support::{GITLAB_TOKEN, SIGNING_KEY_RAW_BOTH, TOKEN, TOKEN_BOTH, whsec};

const PUBLIC: &str = "https://hoist.example.com";
const URL: &str = "https://hoist.example.com/hooks/gitlab";

/// A config file whose GitLab is the fake; rewritten to change `public_url`.
struct Setup {
    dir: tempfile::TempDir,
    gitlab_url: String,
}

impl Setup {
    fn new(world: &FakeGitlab, public_url: &str) -> Setup {
        let setup = Setup {
            dir: tempfile::tempdir().expect("temp dir"),
            gitlab_url: world.url(),
        };
        setup.public_url(public_url);
        setup
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("hoist.toml")
    }

    fn public_url(&self, public_url: &str) {
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:9"
public_url = "{public_url}"

[store]
url = "sqlite://{db}"

[gitlab]
url = "{gitlab}"
token = "env:TEST_GITLAB_TOKEN"

[[projects]]
path = "acme/shop"
webhook_token = "env:TEST_TOKEN"

[[projects]]
path = "acme/both"
webhook_token = "env:TEST_TOKEN_BOTH"
signing_token = "env:TEST_SIGNING_BOTH"
"#,
            db = self.dir.path().join("hoist.db").display(),
            gitlab = self.gitlab_url,
        );
        std::fs::write(self.path(), text).expect("write config");
    }

    /// Runs `hoist hook <args> --config FILE`; fails the test if a secret is in its output.
    async fn hook(&self, args: &[&str]) -> Out {
        run(&self.path(), args).await
    }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }

    /// Asserts that stdout contains `needle`, showing both streams when not.
    #[track_caller]
    fn says(&self, needle: &str) {
        assert!(
            self.stdout.contains(needle),
            "{needle:?} missing from {}",
            self.text()
        );
    }
}

async fn run(config: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
    cmd.arg("hook")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug")
        .env("TEST_TOKEN", TOKEN)
        .env("TEST_TOKEN_BOTH", TOKEN_BOTH)
        .env("TEST_SIGNING_BOTH", whsec(SIGNING_KEY_RAW_BOTH))
        .env("TEST_GITLAB_TOKEN", GITLAB_TOKEN);
    // The fake GitLab runs on this test's runtime: wait for the process off it.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run hoist");
    support::capture::capture_output(&out);
    let out = Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for s in support::secrets() {
        assert!(!out.stdout.contains(&s), "secret {s:?} on stdout");
        assert!(!out.stderr.contains(&s), "secret {s:?} on stderr");
    }
    out
}

fn only_hook(world: &FakeGitlab, project: &str) -> Value {
    let hooks = world.hooks(project);
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    hooks[0].clone()
}

fn id(hook: &Value) -> u64 {
    hook["id"].as_u64().expect("hook id")
}

fn writes(world: &FakeGitlab) -> Vec<String> {
    world
        .call_log()
        .into_iter()
        .filter(|c| c.starts_with("POST") || c.starts_with("PUT"))
        .collect()
}

#[tokio::test]
async fn install_creates_one_hook_then_updates_it() {
    let world = FakeGitlab::start().await;
    world.project("acme/shop");
    let setup = Setup::new(&world, PUBLIC);

    let out = setup.hook(&["install", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    let hook = only_hook(&world, "acme/shop");
    assert_eq!(hook["url"], URL);
    for event in [
        "pipeline_events",
        "tag_push_events",
        "note_events",
        "confidential_note_events",
        "job_events",
    ] {
        assert_eq!(hook[event], true, "{event}: {hook:#?}");
    }
    assert_eq!(hook["push_events"], false);
    assert_eq!(hook["enable_ssl_verification"], true, "https: verified");
    assert_eq!(
        world.hook_secrets(id(&hook)),
        Some((Some(TOKEN.to_string()), None))
    );
    assert!(
        out.stdout
            .starts_with(&format!("created hook {} for acme/shop\n", id(&hook))),
        "{}",
        out.text()
    );
    out.says(URL);
    assert!(
        out.stdout
            .contains("events             pipeline, tag push, note, internal note, job"),
        "{}",
        out.text()
    );
    out.says("token              set\n");

    // Again: the same hook, edited, tokens sent again; never a second hook.
    let out = setup.hook(&["install", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    let again = only_hook(&world, "acme/shop");
    assert_eq!(id(&again), id(&hook));
    assert!(
        out.stdout
            .starts_with(&format!("updated hook {} of acme/shop\n", id(&hook))),
        "{}",
        out.text()
    );
    out.says("token              set (sent again)");
    assert_eq!(
        world.hook_secrets(id(&hook)),
        Some((Some(TOKEN.to_string()), None))
    );
}

#[tokio::test]
async fn a_new_public_url_moves_the_same_hook_and_sends_the_token_again() {
    let world = FakeGitlab::start().await;
    world.project("acme/shop");
    let setup = Setup::new(&world, "http://127.0.0.1:8080");
    let out = setup.hook(&["install", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    let before = only_hook(&world, "acme/shop");
    assert_eq!(before["url"], "http://127.0.0.1:8080/hooks/gitlab");
    assert_eq!(
        before["enable_ssl_verification"], false,
        "plain http: nothing to verify"
    );

    setup.public_url(PUBLIC);
    let out = setup.hook(&["install", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    let after = only_hook(&world, "acme/shop");
    assert_eq!(id(&after), id(&before), "the same hook, moved");
    assert_eq!(after["url"], URL);
    assert_eq!(after["enable_ssl_verification"], true);
    // The fake, like GitLab, drops the token when the URL changes: hoist sent it again.
    assert_eq!(
        world.hook_secrets(id(&after)),
        Some((Some(TOKEN.to_string()), None))
    );
    out.says(&format!(
        "url                http://127.0.0.1:8080/hooks/gitlab → {URL}"
    ));
    out.says("SSL verification   off → on");
    out.says("previous server.public_url");
}

#[tokio::test]
async fn a_hook_made_by_hand_with_a_stale_token_is_repaired() {
    let world = FakeGitlab::start().await;
    let old = world.add_hook(
        "acme/shop",
        "https://old.example.com/hooks/gitlab",
        HookAuth::token("stale-token"),
    );
    world.add_hook(
        "acme/shop",
        "https://ci.example.com/notify",
        HookAuth::default(),
    );
    let setup = Setup::new(&world, PUBLIC);
    let out = setup.hook(&["install", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    let hooks = world.hooks("acme/shop");
    assert_eq!(hooks.len(), 2, "no third hook: {hooks:#?}");
    let moved = hooks.iter().find(|h| id(h) == old).expect("the old hook");
    assert_eq!(moved["url"], URL);
    assert_eq!(
        world.hook_secrets(old),
        Some((Some(TOKEN.to_string()), None))
    );
}

#[tokio::test]
async fn a_signing_token_reaches_the_hook() {
    let world = FakeGitlab::start().await;
    world.project("acme/both");
    let setup = Setup::new(&world, PUBLIC);
    let out = setup.hook(&["install", "--project", "acme/both"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    let hook = only_hook(&world, "acme/both");
    assert_eq!(
        world.hook_secrets(id(&hook)),
        Some((
            Some(TOKEN_BOTH.to_string()),
            Some(whsec(SIGNING_KEY_RAW_BOTH))
        ))
    );
    out.says("signing token      set\n");

    // A URL change keeps both: the edit sends them again.
    setup.public_url("https://hoist2.example.com");
    let out = setup.hook(&["install", "--project", "acme/both"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert_eq!(
        world.hook_secrets(id(&hook)),
        Some((
            Some(TOKEN_BOTH.to_string()),
            Some(whsec(SIGNING_KEY_RAW_BOTH))
        ))
    );
    out.says("signing token      set (sent again)");
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let world = FakeGitlab::start().await;
    world.project("acme/shop");
    let setup = Setup::new(&world, PUBLIC);

    let out = setup
        .hook(&["install", "--project", "acme/shop", "--dry-run"])
        .await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert!(world.hooks("acme/shop").is_empty());
    assert!(
        out.stdout
            .starts_with("dry run: would create a webhook for acme/shop\n"),
        "{}",
        out.text()
    );
    out.says(URL);
    assert!(
        out.stdout.ends_with("dry run: nothing was changed\n"),
        "{}",
        out.text()
    );

    // An existing hook at an old URL with a stale token: the plan moves it, nothing moves.
    let old = world.add_hook(
        "acme/shop",
        "https://old.example.com/hooks/gitlab",
        HookAuth::token("stale-token"),
    );
    let hooks_before = world.hooks("acme/shop");
    let out = setup
        .hook(&["install", "--project", "acme/shop", "--dry-run"])
        .await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert_eq!(world.hooks("acme/shop"), hooks_before);
    assert_eq!(
        world.hook_secrets(old),
        Some((Some("stale-token".to_string()), None))
    );
    assert!(writes(&world).is_empty(), "{:?}", writes(&world));
    for line in [
        format!("dry run: would update hook {old} of acme/shop"),
        format!("url                https://old.example.com/hooks/gitlab → {URL}"),
        "SSL verification   off → on".to_string(),
        "token              set (sent again)".to_string(),
    ] {
        assert!(out.stdout.contains(&line), "{line:?} in {}", out.text());
    }
}

#[tokio::test]
async fn status_shows_events_alert_status_and_how_to_re_enable() {
    let world = FakeGitlab::start().await;
    world.project("acme/shop");
    let setup = Setup::new(&world, PUBLIC);
    assert_eq!(
        setup
            .hook(&["install", "--project", "acme/shop"])
            .await
            .code,
        Some(0)
    );
    let hook = id(&only_hook(&world, "acme/shop"));

    let out = setup.hook(&["status", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    for line in [
        format!("hook {hook} of acme/shop\n"),
        format!("  url                {URL}\n"),
        "  pipeline events    on\n".to_string(),
        "  tag push events    on\n".to_string(),
        "  note events        on\n".to_string(),
        "  job events         on\n".to_string(),
        "  alert_status       executable\n".to_string(),
        "  disabled_until     -\n".to_string(),
    ] {
        assert!(out.stdout.contains(&line), "{line:?} in {}", out.text());
    }
    assert!(!out.stdout.contains("to re-enable"), "{}", out.text());

    // Failing deliveries disabled it for a while.
    world.set_hook_disabled_until(
        hook,
        Some(chrono::Utc::now() + chrono::Duration::minutes(8)),
    );
    let until = world.hooks("acme/shop")[0]["disabled_until"]
        .as_str()
        .expect("disabled_until")
        .to_string();
    let out = setup.hook(&["status", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    for line in [
        "  alert_status       temporarily_disabled\n".to_string(),
        format!("  disabled_until     {until}\n"),
        format!("again by itself after {until}"),
        format!("/hooks/{hook}/test/push_events"),
        "re-enables the hook when hoist answers it 2xx".to_string(),
    ] {
        assert!(out.stdout.contains(&line), "{line:?} in {}", out.text());
    }
}

#[tokio::test]
async fn status_flags_missing_events_and_install_restores_them() {
    let world = FakeGitlab::start().await;
    world.project("acme/shop");
    let gl = HttpClient::with_policy(
        &world.url(),
        Secret::new(GITLAB_TOKEN),
        RetryPolicy::default(),
    )
    .expect("client");
    let made = gl
        .create_hook(
            "acme/shop",
            &HookSpec {
                events: hoist::gitlab::HookEvents {
                    job: false,
                    note: false,
                    ..hoist::gitlab::HookEvents::ALL
                },
                token: Some(Secret::new(TOKEN)),
                ..HookSpec::for_hoist(URL)
            },
        )
        .await
        .expect("hook");
    let setup = Setup::new(&world, PUBLIC);

    let out = setup.hook(&["status", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    out.says("  note events        off  MISSING");
    out.says("  job events         off  MISSING");
    out.says("  pipeline events    on\n");

    let out = setup.hook(&["install", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(0), "{}", out.text());
    out.says("note events        off → on");
    out.says("job events         off → on");
    let hook = only_hook(&world, "acme/shop");
    assert_eq!(id(&hook), made.id.0);
    assert_eq!(hook["job_events"], true);
    assert_eq!(hook["note_events"], true);
}

#[tokio::test]
async fn status_without_a_hook_exits_1_and_says_how_to_install() {
    let world = FakeGitlab::start().await;
    world.add_hook(
        "acme/shop",
        "https://ci.example.com/notify",
        HookAuth::default(),
    );
    let setup = Setup::new(&world, PUBLIC);
    let out = setup.hook(&["status", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stderr
            .contains("acme/shop has no webhook pointing at hoist"),
        "{}",
        out.text()
    );
    assert!(
        out.stderr.contains("it has 1 other webhook"),
        "{}",
        out.text()
    );
    assert!(
        out.stderr
            .contains("hoist hook install --project acme/shop"),
        "{}",
        out.text()
    );
}

#[tokio::test]
async fn an_unknown_project_exits_2() {
    let world = FakeGitlab::start().await;
    let setup = Setup::new(&world, PUBLIC);
    for cmd in ["install", "status"] {
        let out = setup.hook(&[cmd, "--project", "acme/nope"]).await;
        assert_eq!(out.code, Some(2), "{cmd}: {}", out.text());
        assert!(
            out.stderr.contains("project acme/nope is not configured"),
            "{cmd}: {}",
            out.text()
        );
        assert!(
            out.stderr.contains("configured: acme/shop, acme/both"),
            "{cmd}: {}",
            out.text()
        );
    }
    assert!(world.call_log().is_empty(), "{:?}", world.call_log());
}

#[tokio::test]
async fn gitlab_errors_exit_1_with_the_reason() {
    let world = FakeGitlab::start().await;
    world.project("acme/shop");
    world.add_member("acme/shop", BOT_USERNAME, DEVELOPER);
    let setup = Setup::new(&world, PUBLIC);
    let out = setup.hook(&["install", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stderr
            .contains("cannot create the webhook of acme/shop: forbidden"),
        "{}",
        out.text()
    );
    assert!(out.stderr.contains("Maintainer role"), "{}", out.text());
    assert!(world.hooks("acme/shop").is_empty());

    // A project GitLab does not know.
    let out = setup.hook(&["status", "--project", "acme/both"]).await;
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stderr
            .contains("cannot list the webhooks of acme/both: not found"),
        "{}",
        out.text()
    );
}

#[tokio::test]
async fn the_default_public_url_is_refused_before_calling_gitlab() {
    let world = FakeGitlab::start().await;
    world.project("acme/shop");
    let setup = Setup::new(&world, "http://0.0.0.0:8080");
    let out = setup.hook(&["install", "--project", "acme/shop"]).await;
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(
        out.stderr
            .contains("server.public_url: GitLab cannot reach"),
        "{}",
        out.text()
    );
    assert!(world.call_log().is_empty(), "{:?}", world.call_log());
}
