//! Test support: runs the real `hoist` binary against a temp config and talks to it over HTTP.
//!
//! Every secret a test uses is listed in [`SECRETS`]; [`Hoist::assert_no_secrets`]
//! scans the captured logs and every response body for them.
#![allow(dead_code)]

pub mod balancer;
pub mod capture;
pub mod fake_gitlab;
#[path = "../../src/store/test_db.rs"]
pub mod test_db;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

pub const TOKEN: &str = "tok-Sx9-webhook-secret-shop";
pub const TOKEN_BOTH: &str = "tok-Qw7-webhook-secret-both";
pub const GITLAB_TOKEN: &str = "glpat-Zk3-gitlab-api-secret";
pub const API_TOKEN: &str = "api-Mn4-bearer-secret";
/// 32 bytes, base64 after `whsec_`.
pub const SIGNING_KEY_RAW: &[u8] = b"signing-key-32-bytes-for-tests!!";
pub const SIGNING_KEY_RAW_BOTH: &[u8] = b"another-signing-key-32-bytes-x!!";

pub fn whsec(raw: &[u8]) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Every secret a test might leak.
pub fn secrets() -> Vec<String> {
    let registry_password = std::env::var("HOIST_TEST_REGISTRY_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let mut secrets = vec![
        TOKEN.into(),
        TOKEN_BOTH.into(),
        GITLAB_TOKEN.into(),
        API_TOKEN.into(),
        whsec(SIGNING_KEY_RAW),
        whsec(SIGNING_KEY_RAW_BOTH),
        base64::engine::general_purpose::STANDARD.encode(SIGNING_KEY_RAW),
        base64::engine::general_purpose::STANDARD.encode(SIGNING_KEY_RAW_BOTH),
    ];
    secrets.extend(registry_password);
    secrets
}

/// Options for the config a test hoist runs with.
#[derive(Clone)]
pub struct Options {
    pub max_body_bytes: usize,
    pub api_token: bool,
    pub docker_host: String,
    /// The store; None: a SQLite file in the test's directory. Given to hoist as
    /// `env:TEST_STORE_URL`, the way a PostgreSQL URL with its password is meant to be.
    pub store_url: Option<String>,
    /// `server.trusted_proxies`, as TOML (`["127.0.0.1"]`).
    pub trusted_proxies: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_body_bytes: 26_214_400,
            api_token: false,
            docker_host: "unix:///nonexistent/docker.sock".into(),
            store_url: None,
            trusted_proxies: None,
        }
    }
}

/// A running (or stopped) hoist process with its own directory and port.
pub struct Hoist {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config_path: PathBuf,
    child: Option<Child>,
    starts: u32,
    pub client: reqwest::Client,
    responses: Arc<Mutex<Vec<String>>>,
    pub store_url: String,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl Hoist {
    pub async fn start(opts: Options) -> Hoist {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config_path = dir.path().join("hoist.toml");
        std::fs::write(
            dir.path().join("signing_shop"),
            format!("{}\n", whsec(SIGNING_KEY_RAW)),
        )
        .expect("write secret");
        let api = if opts.api_token {
            "api_token = \"env:TEST_API_TOKEN\""
        } else {
            ""
        };
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
max_body_bytes = {max}
{api}
{proxies}

[store]
url = "env:TEST_STORE_URL"

[gitlab]
url = "http://127.0.0.1:9"
token = "env:TEST_GITLAB_TOKEN"

[docker]
host = "{docker}"

[[projects]]
path = "acme/shop"
webhook_token = "env:TEST_TOKEN"
{envs}

[[projects]]
path = "acme/signed"
signing_token = "file:{signing}"
{envs}

[[projects]]
path = "acme/both"
webhook_token = "env:TEST_TOKEN_BOTH"
signing_token = "env:TEST_SIGNING_BOTH"
{envs}
"#,
            max = opts.max_body_bytes,
            proxies = opts
                .trusted_proxies
                .map(|p| format!("trusted_proxies = {p}"))
                .unwrap_or_default(),
            docker = opts.docker_host,
            signing = dir.path().join("signing_shop").display(),
            envs = ENVIRONMENTS,
        );
        std::fs::write(&config_path, config).expect("write config");
        let store_url = opts
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("hoist.db").display()));
        let mut hoist = Hoist {
            store_url,
            dir,
            port,
            config_path,
            child: None,
            starts: 0,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
            responses: Arc::new(Mutex::new(Vec::new())),
        };
        hoist.spawn().await;
        hoist
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("hoist-{n}.log"))
    }

    /// Starts the binary (again) and waits for `/healthz`.
    pub async fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hoist"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "debug,sqlx=warn,hyper=info,h2=info")
            .env("TEST_TOKEN", TOKEN)
            .env("TEST_TOKEN_BOTH", TOKEN_BOTH)
            .env("TEST_SIGNING_BOTH", whsec(SIGNING_KEY_RAW_BOTH))
            .env("TEST_GITLAB_TOKEN", GITLAB_TOKEN)
            .env("TEST_API_TOKEN", API_TOKEN)
            .env("TEST_STORE_URL", &self.store_url)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start hoist");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client.get(self.url("/healthz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("hoist exited during start ({status}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "hoist did not become healthy:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("hoist is running");
        let pid = i32::try_from(c.id()).expect("pid fits");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        c.wait().expect("wait for hoist")
    }

    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn record_response(&self, body: &str) {
        capture::capture("response", body);
        if let Ok(mut r) = self.responses.lock() {
            r.push(body.to_string());
        }
    }

    /// Fails if a test secret is in any log line or recorded response.
    pub fn assert_no_secrets(&self) {
        let logs = self.logs();
        let responses = self
            .responses
            .lock()
            .map(|r| r.join("\n"))
            .unwrap_or_default();
        // A PostgreSQL store's password is a secret like the others.
        let store_password = url::Url::parse(&self.store_url)
            .ok()
            .and_then(|u| u.password().map(str::to_string));
        for s in secrets().into_iter().chain(store_password) {
            assert!(!logs.contains(&s), "secret {s:?} appears in the logs");
            assert!(
                !responses.contains(&s),
                "secret {s:?} appears in a response"
            );
        }
    }

    /// Posts a webhook; returns status and body (recorded for the secret scan).
    pub async fn post(
        &self,
        event: Option<&str>,
        body: impl Into<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> (u16, String) {
        let mut req = self
            .client
            .post(self.url("/hooks/gitlab"))
            .header("content-type", "application/json");
        if let Some(e) = event {
            req = req.header("X-Gitlab-Event", e);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.body(body.into()).send().await.expect("post webhook");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        self.record_response(&text);
        (status, text)
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        let mut req = self.client.get(self.url(path));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let resp = req.send().await.expect("get");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        self.record_response(&text);
        (status, text)
    }

    pub async fn deliveries(&self, query: &str) -> Vec<serde_json::Value> {
        let (status, body) = self
            .get(&format!("/api/v1/deliveries?{query}"), Some(API_TOKEN))
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("deliveries JSON")
    }

    /// Waits until no delivery is queued.
    pub async fn wait_processed(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.deliveries("state=queued&limit=1").await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "deliveries still queued:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Hoist {
    fn drop(&mut self) {
        self.kill();
        capture::capture("log", &self.logs());
    }
}

const ENVIRONMENTS: &str = r#"
  [[projects.environments]]
  name = "production"
  policy = "tag"
    [[projects.environments.services]]
    name = "svc"
    image = "127.0.0.1:5000/acme/app"
    platforms = ["linux/amd64"]
"#;

/// A minimal body GitLab would send for `project` (path) with `extra` JSON fields.
pub fn body(kind: &str, project_path: &str, extra: &str) -> String {
    let id = match project_path {
        "acme/shop" => 101,
        "acme/signed" => 102,
        "acme/both" => 103,
        _ => 999,
    };
    format!(
        r#"{{"object_kind":"{kind}","project_id":{id},"project":{{"id":{id},"path_with_namespace":"{project_path}","web_url":"http://gitlab.test/{project_path}"}}{extra}}}"#
    )
}

/// Standard Webhooks headers for `body`, signed with `key` at `ts`.
pub fn signed_headers(key: &[u8], id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            hoist::webhook::auth::sign(key, id, ts, body),
        ),
    ]
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}
