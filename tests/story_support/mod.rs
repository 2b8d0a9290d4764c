//! The story harness: the fake GitLab world, hoist in-process over real HTTP,
//! the real Docker engine in swarm mode and the real registry.
//!
//! Test crates that use it also declare `mod support;` and `mod swarm_support;`.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::fake_gitlab::{FakeGitlab, HookAuth, job_action};
use crate::support::test_db::TestDb;
use crate::swarm_support::{
    Behaviour, OCI_INDEX, Pusher, TestEnv, repo_path, test_env, unique_name,
};
use hoist::config::{Config, SecretSource};
use hoist::engine::EngineOptions;
use hoist::gitlab::RetryPolicy;
use hoist::swarm::DeployOptions;

struct Secrets;

impl SecretSource for Secrets {
    fn env(&self, name: &str) -> Option<String> {
        match name {
            "GL" => Some(support::GITLAB_TOKEN.to_string()),
            "WH" => Some(support::TOKEN.to_string()),
            "API" => Some(support::API_TOKEN.to_string()),
            _ => None,
        }
    }
    fn file(&self, _: &Path) -> std::io::Result<String> {
        Err(std::io::Error::other("no files here"))
    }
}

/// hoist running in this process against the world, the engine and the registry.
pub struct Story {
    pub world: FakeGitlab,
    pub env: TestEnv,
    pub port: u16,
    pub service: String,
    pub image: String,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// hoist as child processes ([`Story::start_binary`]), to be killed and restarted: one,
    /// or several replicas on one store behind [`Story::port`]'s balancer.
    children: Vec<Option<std::process::Child>>,
    /// Each replica's config (the first is the story's).
    configs: Vec<std::path::PathBuf>,
    replica_ports: Vec<u16>,
    _balancer: Option<support::balancer::Balancer>,
    pub config_path: std::path::PathBuf,
    /// The store; dropped after hoist (fields drop after [`Story`]'s own `drop`).
    pub db: TestDb,
    _dir: tempfile::TempDir,
}

/// How a story differs from the default one.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// hoist as the real binary (`hoist serve`), which [`Story::kill`] and
    /// [`Story::restart`] can SIGKILL and start again on the same store.
    pub binary: bool,
    /// Appended to the config (more environments of acme/shop); `{service}` in it stands
    /// for the story's service name, `{image}` for its image (in the test registry) and
    /// `{path}` for that image's repository path.
    pub extra: String,
    /// Another Docker engine than the test environment's.
    pub docker_host: Option<String>,
    /// The in-process engine's job timeout (60 s by default).
    pub job_timeout: Option<Duration>,
    /// GitLab is down when hoist starts, for this long from the story's start.
    pub gitlab_down_for: Option<Duration>,
    /// The store is a fresh PostgreSQL database of the test cluster (else a SQLite file).
    pub postgres: bool,
    /// Binaries sharing the store behind a round-robin balancer (with `binary`; leases of 2 s).
    pub replicas: usize,
    /// `server.api_token` is set (`env:API`, [`support::API_TOKEN`]): the story's client
    /// sends it, and `hoist deploy` may be used.
    pub api_token: bool,
}

impl Story {
    pub async fn start(label: &str) -> Option<Story> {
        Story::start_with(label, Setup::default()).await
    }

    /// The story on a fresh PostgreSQL database of the test cluster. None when the test
    /// engine or the cluster is missing (a failure when `CI` is set).
    pub async fn start_postgres(label: &str) -> Option<Story> {
        Story::start_with(
            label,
            Setup {
                postgres: true,
                ..Setup::default()
            },
        )
        .await
    }

    /// The story with `extra` appended to the config (see [`Setup::extra`]).
    pub async fn start_extra(label: &str, extra: &str) -> Option<Story> {
        let extra = extra.to_string();
        Story::start_with(
            label,
            Setup {
                extra,
                ..Setup::default()
            },
        )
        .await
    }

    /// The story with `dave` a developer of acme/shop, who may `/deploy` to staging.
    pub async fn start_with_developer(label: &str) -> Option<Story> {
        let story = Story::start(label).await?;
        story
            .world
            .add_member("acme/shop", "dave", support::fake_gitlab::DEVELOPER);
        Some(story)
    }

    /// The story with hoist running as the real binary (see [`Setup::binary`]).
    pub async fn start_binary(label: &str) -> Option<Story> {
        Story::start_with(
            label,
            Setup {
                binary: true,
                ..Setup::default()
            },
        )
        .await
    }

    pub async fn start_with(label: &str, setup: Setup) -> Option<Story> {
        let Setup {
            binary,
            extra,
            docker_host,
            job_timeout,
            gitlab_down_for,
            postgres,
            replicas,
            api_token,
        } = setup;
        let replicas = replicas.max(1);
        let mut env = test_env()?;
        let db = if postgres {
            TestDb::postgres(label).await?
        } else {
            TestDb::sqlite()
        };
        support::capture::capture_logs();
        if let Some(host) = docker_host {
            env.docker_host = host;
        }
        let world = FakeGitlab::start().await;
        if let Some(d) = gitlab_down_for {
            world.go_down(d);
        }
        let service = unique_name(label);
        let path = repo_path(&service);
        let image = format!("{}/{path}", env.registry);
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
{api}
[store]
url = "{store}"
[gitlab]
url = "{gitlab}"
token = "env:GL"
[docker]
host = "{docker}"
[[registries]]
host = "{registry}"
[[projects]]
path = "acme/shop"
webhook_token = "env:WH"
  [[projects.environments]]
  name = "production"
  policy = "tag"
  tag_pattern = "v*"
    [[projects.environments.services]]
    name = "{service}"
    image = "{image}"
    platforms = ["linux/amd64", "linux/arm64"]
    [projects.environments.services.create]
    replicas = 1
  [[projects.environments]]
  name = "staging"
  policy = "manual"
  deploy_role = "developer"
    [[projects.environments.services]]
    name = "{service}-stg"
    image = "{image}"
    tag = "{{short_sha}}"
    platforms = ["linux/amd64", "linux/arm64"]
    [projects.environments.services.create]
    replicas = 1
"#,
            api = if api_token {
                "api_token = \"env:API\""
            } else {
                ""
            },
            store = db.url,
            gitlab = world.url(),
            docker = env.docker_host,
            registry = env.registry,
        ) + &extra
            .replace("{service}", &service)
            .replace("{image}", &image)
            .replace("{path}", &path);
        let config_path = dir.path().join("story.toml");
        std::fs::write(&config_path, &text).expect("write config");
        // Replicas: the same config, each listening on its own port, behind the balancer.
        let mut configs = vec![config_path.clone()];
        let mut replica_ports = vec![port];
        if replicas > 1 {
            configs.clear();
            replica_ports.clear();
            for i in 0..replicas {
                let own = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("a port")
                    .port();
                let path = dir.path().join(format!("story-{i}.toml"));
                let replica_text = text
                    .replacen(
                        &format!("listen = \"127.0.0.1:{port}\""),
                        &format!("listen = \"127.0.0.1:{own}\""),
                        1,
                    )
                    .replacen("[store]\n", "[store]\nlease_seconds = 2\n", 1);
                std::fs::write(&path, replica_text).expect("write replica config");
                configs.push(path);
                replica_ports.push(own);
            }
        }
        let config = Config::parse(&config_path, &text, &Secrets).expect("story config");
        let options = EngineOptions {
            job_timeout: job_timeout.unwrap_or(Duration::from_secs(60)),
            job_poll: Duration::from_millis(500),
            deploy: DeployOptions {
                monitor: Duration::from_secs(1),
                ..DeployOptions::default()
            },
            outbox_retry: Duration::from_millis(200),
            reconcile_every: Duration::from_millis(300),
            registry_wait: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(3),
            // A request gives up within a second: runs outlive GitLab outages by themselves.
            gitlab_retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                total_budget: Duration::from_secs(3),
                ..RetryPolicy::default()
            },
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut balancer = None;
        if binary && replicas > 1 {
            let backends = replica_ports
                .iter()
                .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
                .collect();
            balancer = Some(support::balancer::Balancer::start(listener, backends));
        } else if binary {
            drop(listener);
        } else {
            tokio::spawn(hoist::server::run_with(
                config,
                listener,
                options,
                async move {
                    let _ = stopped.await;
                },
            ));
        }
        world.add_hook(
            "acme/shop",
            &format!("http://127.0.0.1:{port}/hooks/gitlab"),
            HookAuth::token(support::TOKEN),
        );
        // The manifest job really builds the multi-arch index, so a run that skipped it would fail.
        let registry = env.registry.clone();
        world.set_job_action(
            "manifest",
            job_action(move |ctx| {
                let registry = registry.clone();
                let path = path.clone();
                async move {
                    // Tag pipelines publish the tag; others the short sha (the staging template).
                    let tag = if ctx.tag {
                        ctx.ref_name.clone()
                    } else {
                        ctx.sha[..8].to_string()
                    };
                    Pusher::anonymous(&registry)
                        .push_multiarch(
                            &path,
                            &tag,
                            &["linux/amd64", "linux/arm64"],
                            Behaviour::Serve,
                            OCI_INDEX,
                        )
                        .await;
                    Ok(())
                }
            }),
        );
        // The bearer goes with every request; hoist without `api_token` does not read it.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", support::API_TOKEN)
                .parse()
                .expect("header"),
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .build()
            .expect("client");
        let mut story = Story {
            world,
            env,
            port,
            service,
            image,
            client,
            stop: Some(stop),
            children: Vec::new(),
            configs,
            replica_ports,
            _balancer: balancer,
            config_path,
            db,
            _dir: dir,
        };
        if binary {
            story.restart().await;
        }
        Some(story)
    }

    /// SIGKILLs every hoist binary.
    pub fn kill(&mut self) {
        for i in 0..self.children.len() {
            self.kill_replica(i);
        }
    }

    /// SIGKILLs replica `i`.
    pub fn kill_replica(&mut self, i: usize) {
        if let Some(mut child) = self.children.get_mut(i).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of each replica still running (`None` once killed).
    pub fn replica_pids(&self) -> Vec<Option<u32>> {
        self.children
            .iter()
            .map(|c| c.as_ref().map(std::process::Child::id))
            .collect()
    }

    /// Starts the hoist binaries on the story's configs and store; returns once all answer.
    pub async fn restart(&mut self) {
        self.kill();
        self.children.clear();
        for (i, config) in self.configs.iter().enumerate() {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self._dir.path().join(format!("hoist-{i}.log")))
                .expect("log file");
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_hoist"))
                .args(["serve", "--config"])
                .arg(config)
                .env("GL", support::GITLAB_TOKEN)
                .env("WH", support::TOKEN)
                .env("API", support::API_TOKEN)
                .env("RUST_LOG", "hoist=debug")
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start hoist");
            self.children.push(Some(child));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in self.replica_ports.clone() {
            let url = format!("http://127.0.0.1:{port}/healthz");
            while !self
                .client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                assert!(
                    Instant::now() < deadline,
                    "hoist never answered: {}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// `GET path` on hoist, as text ("" when it does not answer).
    pub async fn get_text(&self, path: &str) -> String {
        match self
            .client
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .await
        {
            Ok(resp) => {
                let text = resp.text().await.unwrap_or_default();
                support::capture::capture("response", &text);
                text
            }
            Err(_) => String::new(),
        }
    }

    /// Waits until a run matching `pick` reached a final state; returns it.
    pub async fn final_run_where(
        &self,
        pick: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let runs = self.runs().await;
            if let Some(run) = runs.iter().find(|r| {
                pick(r) && !["queued", "running"].contains(&r["state"].as_str().unwrap_or(""))
            }) {
                support::capture::capture("response", &run.to_string());
                return run.clone();
            }
            if Instant::now() > deadline {
                let deliveries = self.get_text("/api/v1/deliveries").await;
                panic!("no such run finished: {runs:#?}\ndeliveries: {deliveries}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the hoist binaries logged so far.
    pub fn logs(&self) -> String {
        (0..self.configs.len())
            .map(|i| {
                std::fs::read_to_string(self._dir.path().join(format!("hoist-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn runs(&self) -> Vec<serde_json::Value> {
        let resp = self
            .client
            .get(format!("http://127.0.0.1:{}/api/v1/runs", self.port))
            .send()
            .await
            .expect("runs");
        resp.json().await.expect("runs JSON")
    }

    /// Waits until the run for `sha` reached a final state; returns it.
    pub async fn finished_run(&self, sha: &str) -> serde_json::Value {
        self.final_run_where(|r| r["sha"] == sha).await
    }

    pub fn service_image(&self) -> String {
        self.image_of(&self.service)
    }

    /// The image `service`'s spec names (`docker service inspect`).
    pub fn image_of(&self, service: &str) -> String {
        self.inspect(service, "{{.Spec.TaskTemplate.ContainerSpec.Image}}")
    }

    /// `docker service inspect --format FORMAT service`, trimmed.
    pub fn inspect(&self, service: &str, format: &str) -> String {
        self.env
            .docker(&["service", "inspect", "--format", format, service])
            .trim()
            .to_string()
    }

    pub fn service_id_version(&self) -> (String, u64) {
        let out = self.env.docker(&[
            "service",
            "inspect",
            "--format",
            "{{.ID}} {{.Version.Index}}",
            &self.service,
        ]);
        let mut parts = out.split_whitespace();
        let id = parts.next().unwrap_or_default().to_string();
        let version = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        (id, version)
    }
}

/// The notes hoist's bot wrote on merge request `iid`, oldest first.
pub fn bot_notes(world: &FakeGitlab, iid: u64) -> Vec<String> {
    world
        .mr_notes(iid)
        .into_iter()
        .filter(|x| x.author == support::fake_gitlab::BOT_USERNAME)
        .map(|x| x.body)
        .collect()
}

impl Drop for Story {
    fn drop(&mut self) {
        self.kill();
        support::capture::capture("log", &self.logs());
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.env.docker_status(&[
            "service",
            "rm",
            &self.service,
            &format!("{}-stg", self.service),
            &format!("{}-edge", self.service),
        ]);
    }
}
