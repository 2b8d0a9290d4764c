//! `hoist check` online, through the real binary: the fake GitLab, the real Docker engine and registries.

mod support;
mod swarm_support;

use support::fake_gitlab::{FakeGitlab, HookAuth, REPORTER};
use swarm_support::{Behaviour, OCI_INDEX, Pusher, TestEnv, repo_path, test_env, unique_name};

const PUBLIC_URL: &str = "http://127.0.0.1:9/";

struct Setup {
    env: TestEnv,
    world: FakeGitlab,
    image: String,
    auth_image: String,
    dir: tempfile::TempDir,
}

async fn setup() -> Option<Setup> {
    let env = test_env()?;
    let world = FakeGitlab::start().await;
    world.project("acme/shop");
    let name = unique_name("check");
    let path = repo_path(&name);
    Pusher::anonymous(&env.registry)
        .push_multiarch(&path, "v1", &["linux/amd64"], Behaviour::Serve, OCI_INDEX)
        .await;
    Pusher::with_basic_auth(&env.auth_registry, &env.user, &env.password)
        .push_multiarch(&path, "v1", &["linux/amd64"], Behaviour::Serve, OCI_INDEX)
        .await;
    Some(Setup {
        image: format!("{}/{path}", env.registry),
        auth_image: format!("{}/{path}", env.auth_registry),
        env,
        world,
        dir: tempfile::tempdir().expect("tempdir"),
    })
}

impl Setup {
    /// Runs `hoist check` with a config for acme/shop; `docker` and the password may be spoiled.
    fn check(&self, docker: &str, password: &str, image: &str) -> (Option<i32>, String) {
        let config = format!(
            r#"
[server]
public_url = "{PUBLIC_URL}"
[gitlab]
url = "{gitlab}"
token = "env:GL"
[docker]
host = "{docker}"
[[registries]]
host = "{auth_registry}"
username = "{user}"
password = "env:REGISTRY_PASSWORD"
[[projects]]
path = "acme/shop"
webhook_token = "env:WH"
  [[projects.environments]]
  name = "production"
  policy = "tag"
  tag_pattern = "v*"
    [[projects.environments.services]]
    name = "shop"
    platforms = ["linux/amd64"]
    image = "{image}"
    [[projects.environments.services]]
    name = "shop-private"
    platforms = ["linux/amd64"]
    image = "{auth_image}"
"#,
            gitlab = self.world.url(),
            auth_registry = self.env.auth_registry,
            user = self.env.user,
            auth_image = self.auth_image,
        );
        let path = self.dir.path().join("hoist.toml");
        std::fs::write(&path, config).expect("write config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hoist"))
            .args(["check", "--config"])
            .arg(&path)
            .env("GL", support::GITLAB_TOKEN)
            .env("WH", support::TOKEN)
            .env("REGISTRY_PASSWORD", password)
            .output()
            .expect("run hoist check");
        support::capture::capture_output(&out);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in support::secrets()
            .into_iter()
            .chain([self.env.password.clone(), password.to_string()])
        {
            assert!(!text.contains(&secret), "a secret in the output:\n{text}");
        }
        (out.status.code(), text)
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{text}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_setup_passes_every_check() {
    let Some(s) = setup().await else { return };
    s.world.add_hook(
        "acme/shop",
        "http://127.0.0.1:9/hooks/gitlab",
        HookAuth::token(support::TOKEN),
    );
    let (code, text) = s.check(&s.env.docker_host, &s.env.password, &s.image);
    assert_eq!(code, Some(0), "{text}");
    for start in [
        "ok   config",
        "ok   gitlab: ",
        "ok   gitlab token: scopes: api",
        "ok   project acme/shop: @hoist-bot is maintainer",
        "ok   protected tags acme/shop",
        "ok   hook acme/shop",
        "ok   docker: ",
        &format!("ok   registry {}", s.env.registry),
        &format!("ok   registry {}", s.env.auth_registry),
        &format!("ok   image {}", s.image),
        &format!("ok   image {}", s.auth_image),
    ] {
        Setup::line(&text, start);
    }
    assert!(!text.contains("FAIL"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_problem_is_one_failed_line_with_its_fix() {
    let Some(s) = setup().await else { return };
    s.world.set_token_scopes(&["read_api"]);
    s.world.set_protected_tags(&[("v*", 0)]);
    let missing = format!("{}/hoist-test/never-pushed", s.env.registry);
    let (code, text) = s.check(
        "unix:///nonexistent/docker.sock",
        "wrong-password-Pq8",
        &missing,
    );
    assert_eq!(code, Some(1), "{text}");
    let fix = |start: &str, needle: &str| {
        let mut lines = text.lines().skip_while(|l| !l.starts_with(start));
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("no {start:?} in:\n{text}"));
        let hint = lines.next().unwrap_or_default();
        assert!(hint.starts_with("     fix: "), "{start} has a fix:\n{text}");
        assert!(
            format!("{line}\n{hint}").contains(needle),
            "{start} mentions {needle:?}:\n{text}"
        );
    };
    fix("FAIL gitlab token", "api scope");
    fix("FAIL protected tags acme/shop", "Protected tags");
    fix(
        "FAIL hook acme/shop",
        "hoist hook install --project acme/shop",
    );
    fix("FAIL docker", "docker.host");
    fix(
        &format!("FAIL registry {}", s.env.auth_registry),
        "[[registries]]",
    );
    fix(&format!("FAIL image {missing}"), "push");
    assert!(text.contains("checks failed"), "{text}");

    // A bot below Developer cannot play jobs.
    s.world
        .add_member("acme/shop", support::fake_gitlab::BOT_USERNAME, REPORTER);
    let (code, text) = s.check(&s.env.docker_host, &s.env.password, &s.image);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        Setup::line(&text, "FAIL project acme/shop").contains("reporter"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_gitlab_token_fails_the_gitlab_line() {
    let Some(s) = setup().await else { return };
    let world = FakeGitlab::start_with_token("glpat-some-other-token").await;
    let s = Setup { world, ..s };
    let (code, text) = s.check(&s.env.docker_host, &s.env.password, &s.image);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        Setup::line(&text, "FAIL gitlab: ").contains("401"),
        "{text}"
    );
}
