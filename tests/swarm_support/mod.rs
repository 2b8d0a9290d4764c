//! Helpers for the Swarm tests: the test environment, images pushed with the registry API, a docker CLI wrapper.
//!
//! Images are made here, not by the shell: a gzip'd tar with the machine's static
//! busybox as `/bin/busybox`, an OCI config per platform (the non-amd64 ones
//! never run), OCI manifests and an OCI index or Docker manifest list, all PUT
//! straight to the registry. A marker in the config's `Env` makes each image unique.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hoist::config::{Platform, RegistryConfig, Secret};
use hoist::registry::{Credentials, Digest};
use hoist::swarm::{NodeInfo, ServiceSpec, ServiceState, Swarm, SwarmError, TaskInfo};

/// What `scripts/testenv.sh` exported.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub docker_host: String,
    pub registry: String,
    pub auth_registry: String,
    pub user: String,
    pub password: String,
}

/// The environment, or None (with a note) outside CI. In CI a missing environment fails the test.
pub fn test_env() -> Option<TestEnv> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(TestEnv {
            docker_host: var("HOIST_TEST_DOCKER_HOST")?,
            registry: var("HOIST_TEST_REGISTRY")?,
            auth_registry: var("HOIST_TEST_AUTH_REGISTRY")?,
            user: var("HOIST_TEST_REGISTRY_USER")?,
            password: var("HOIST_TEST_REGISTRY_PASSWORD")?,
        })
    })();
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but HOIST_TEST_DOCKER_HOST / HOIST_TEST_REGISTRY / HOIST_TEST_AUTH_REGISTRY / \
                 HOIST_TEST_REGISTRY_USER / HOIST_TEST_REGISTRY_PASSWORD are missing: \
                 source scripts/testenv.sh and run testenv_up first"
            );
        }
        eprintln!(
            "note: skipped, no test engine (source scripts/testenv.sh; testenv_up; source .hoist-test/env)"
        );
    }
    found
}

impl TestEnv {
    pub fn anonymous_registry(&self) -> RegistryConfig {
        RegistryConfig {
            host: self.registry.clone(),
            username: None,
            password: None,
            insecure: true,
        }
    }

    pub fn private_registry(&self) -> RegistryConfig {
        RegistryConfig {
            host: self.auth_registry.clone(),
            username: Some(self.user.clone()),
            password: Some(Secret::new(self.password.clone())),
            insecure: true,
        }
    }

    /// Runs the docker CLI against the test engine; panics with its output on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = self.docker_status(args);
        match out {
            Ok(stdout) => stdout,
            Err(text) => panic!("docker {args:?} failed: {text}"),
        }
    }

    pub fn docker_status(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("docker")
            .arg("-H")
            .arg(&self.docker_host)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `Spec` of a service as the engine returns it, as raw JSON (no hoist types in between).
    pub fn spec_json(&self, service: &str) -> serde_json::Value {
        let text = self.docker(&["service", "inspect", "--format", "{{json .Spec}}", service]);
        serde_json::from_str(text.trim()).expect("service spec JSON")
    }

    /// Removes the service when dropped, also when the test panicked.
    pub fn remove_on_drop(&self, service: &str) -> ServiceGuard {
        ServiceGuard {
            env: self.clone(),
            service: service.to_string(),
        }
    }
}

pub struct ServiceGuard {
    env: TestEnv,
    service: String,
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        let _ = self.env.docker_status(&["service", "rm", &self.service]);
    }
}

/// A service name no other test (or earlier run) uses.
pub fn unique_name(label: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "hoist-{label}-{}-{:x}{}",
        std::process::id() % 10000,
        nanos % 0xffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn platform(text: &str) -> Platform {
    Platform::parse(text).expect("platform")
}

/// What the image's process does.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Waits for SIGTERM (exits at once on it, so updates are fast).
    Serve,
    /// Exits 1 at once: Swarm's update fails and rolls back.
    Crash,
}

impl Behaviour {
    fn cmd(self) -> Vec<String> {
        match self {
            Behaviour::Serve => vec![
                "/bin/busybox".into(),
                "sh".into(),
                "-c".into(),
                "trap 'exit 0' TERM; /bin/busybox sleep 3600 & wait".into(),
            ],
            Behaviour::Crash => vec!["/bin/busybox".into(), "false".into()],
        }
    }
}

/// The one layer every test image shares: `/bin/busybox` (static) and an empty `/tmp`.
fn busybox_layer() -> &'static (Vec<u8>, Digest) {
    static LAYER: OnceLock<(Vec<u8>, Digest)> = OnceLock::new();
    LAYER.get_or_init(|| {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .expect("a static busybox at /bin/busybox (apt-get install busybox-static)");
        let mut tar = Vec::new();
        tar_entry(&mut tar, "bin/", b'5', 0o755, &[]);
        tar_entry(&mut tar, "bin/busybox", b'0', 0o755, &busybox);
        tar_entry(&mut tar, "tmp/", b'5', 0o1777, &[]);
        tar.extend_from_slice(&[0u8; 1024]);
        let diff_id = Digest::of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        (gz.finish().expect("gzip"), diff_id)
    })
}

/// One ustar entry: a 512-byte header, then the data padded to 512 bytes.
fn tar_entry(out: &mut Vec<u8>, name: &str, kind: u8, mode: u32, data: &[u8]) {
    let mut h = [0u8; 512];
    let mut put =
        |offset: usize, bytes: &[u8]| h[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0, name.as_bytes());
    put(100, format!("{mode:07o}\0").as_bytes());
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", data.len()).as_bytes());
    put(136, b"14000000000\0");
    put(148, b"        ");
    put(156, &[kind]);
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A manifest pushed to the registry.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: String,
    pub size: usize,
    pub platform: Platform,
}

/// Pushes blobs and manifests with the Registry HTTP API.
pub struct Pusher {
    http: reqwest::Client,
    registry: String,
    basic: Option<(String, String)>,
}

impl Pusher {
    pub fn anonymous(registry: &str) -> Pusher {
        Pusher {
            http: reqwest::Client::new(),
            registry: registry.to_string(),
            basic: None,
        }
    }

    pub fn with_basic_auth(registry: &str, user: &str, password: &str) -> Pusher {
        Pusher {
            http: reqwest::Client::new(),
            registry: registry.to_string(),
            basic: Some((user.to_string(), password.to_string())),
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.basic {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    /// `path` is the repository path inside the registry (`hoist-test/app`).
    async fn push_blob(&self, path: &str, bytes: &[u8]) -> String {
        let digest = Digest::of(bytes).to_string();
        let base = format!("http://{}/v2/{path}/blobs", self.registry);
        let head = self
            .auth(self.http.head(format!("{base}/{digest}")))
            .send()
            .await
            .expect("HEAD blob");
        if head.status().is_success() {
            return digest;
        }
        let start = self
            .auth(self.http.post(format!("{base}/uploads/")))
            .send()
            .await
            .expect("start upload");
        assert_eq!(
            start.status().as_u16(),
            202,
            "start upload: {:?}",
            start.text().await
        );
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("upload location")
            .to_string();
        let location = if location.starts_with('/') {
            format!("http://{}{location}", self.registry)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .auth(self.http.put(format!("{location}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("PUT blob");
        assert_eq!(
            put.status().as_u16(),
            201,
            "PUT blob: {:?}",
            put.text().await
        );
        digest
    }

    async fn push_manifest(
        &self,
        path: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let resp = self
            .auth(self.http.put(format!(
                "http://{}/v2/{path}/manifests/{reference}",
                self.registry
            )))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest");
        assert_eq!(
            resp.status().as_u16(),
            201,
            "PUT manifest {path}:{reference}: {:?}",
            resp.text().await
        );
        Digest::of(body).to_string()
    }

    /// Pushes a single-platform image; tags it when `tag` is given.
    pub async fn push_image(
        &self,
        path: &str,
        tag: Option<&str>,
        platform: &Platform,
        behaviour: Behaviour,
        marker: &str,
    ) -> Pushed {
        let (layer, diff_id) = busybox_layer();
        let layer_digest = self.push_blob(path, layer).await;
        let mut config = serde_json::json!({
            "architecture": platform.arch,
            "os": platform.os,
            "config": {
                "Cmd": behaviour.cmd(),
                "Env": [format!("HOIST_TEST_MARK={marker}"), "PATH=/bin".to_string()],
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        });
        if let Some(v) = &platform.variant {
            config["variant"] = serde_json::json!(v);
        }
        let config = serde_json::to_vec(&config).expect("config JSON");
        let config_digest = self.push_blob(path, &config).await;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
        }))
        .expect("manifest JSON");
        let reference = tag
            .map(str::to_string)
            .unwrap_or_else(|| Digest::of(&manifest).to_string());
        let digest = self
            .push_manifest(path, &reference, OCI_MANIFEST, &manifest)
            .await;
        Pushed {
            digest,
            size: manifest.len(),
            platform: platform.clone(),
        }
    }

    /// Pushes one image per platform (only amd64 ever runs) and an index tagged `tag`; returns its digest.
    pub async fn push_multiarch(
        &self,
        path: &str,
        tag: &str,
        platforms: &[&str],
        behaviour: Behaviour,
        index_type: &str,
    ) -> String {
        let marker = format!("{path}:{tag}:{}", unique_name("m"));
        let mut entries = Vec::new();
        for p in platforms {
            entries.push(
                self.push_image(path, None, &platform(p), behaviour, &marker)
                    .await,
            );
        }
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let mut platform = serde_json::json!({"architecture": e.platform.arch, "os": e.platform.os});
                if let Some(v) = &e.platform.variant {
                    platform["variant"] = serde_json::json!(v);
                }
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": e.digest, "size": e.size, "platform": platform})
            })
            .collect();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": manifests,
        }))
        .expect("index JSON");
        self.push_manifest(path, tag, index_type, &index).await
    }
}

/// The repository path inside the registry for a test (`hoist-test/<name>`).
pub fn repo_path(name: &str) -> String {
    format!("hoist-test/{name}")
}

/// A [`Swarm`] that counts calls and can run something just before the first `update_image`.
pub struct Recording<S> {
    pub inner: S,
    pub calls: AtomicUsize,
    pub before_first_update: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    pub updates: AtomicUsize,
}

impl<S: Swarm> Recording<S> {
    pub fn new(inner: S) -> Recording<S> {
        Recording {
            inner,
            calls: AtomicUsize::new(0),
            before_first_update: std::sync::Mutex::new(None),
            updates: AtomicUsize::new(0),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl<S: Swarm> Swarm for Recording<S> {
    async fn ping(&self) -> Result<(), SwarmError> {
        self.count();
        self.inner.ping().await
    }
    async fn inspect(&self, service: &str) -> Result<Option<ServiceState>, SwarmError> {
        self.count();
        self.inner.inspect(service).await
    }
    async fn create(
        &self,
        spec: &ServiceSpec,
        auth: Option<&Credentials>,
    ) -> Result<String, SwarmError> {
        self.count();
        self.inner.create(spec, auth).await
    }
    async fn update_image(
        &self,
        service: &ServiceState,
        image: &str,
        auth: Option<&Credentials>,
    ) -> Result<(), SwarmError> {
        self.count();
        self.updates.fetch_add(1, Ordering::SeqCst);
        let hook = self
            .before_first_update
            .lock()
            .ok()
            .and_then(|mut h| h.take());
        if let Some(hook) = hook {
            hook();
        }
        self.inner.update_image(service, image, auth).await
    }
    async fn rollback(&self, service: &ServiceState) -> Result<(), SwarmError> {
        self.count();
        self.inner.rollback(service).await
    }
    async fn tasks(&self, service_id: &str) -> Result<Vec<TaskInfo>, SwarmError> {
        self.count();
        self.inner.tasks(service_id).await
    }
    async fn nodes(&self) -> Result<Vec<NodeInfo>, SwarmError> {
        self.count();
        self.inner.nodes().await
    }
}

/// Labels of a service, read through the CLI.
pub fn service_labels(env: &TestEnv, service: &str) -> HashMap<String, String> {
    let spec = env.spec_json(service);
    serde_json::from_value(spec["Labels"].clone()).unwrap_or_default()
}

/// A Docker engine in swarm mode of its own, for a test that restarts it: started with
/// `scripts/testenv.sh`'s functions in a temporary state directory, stopped on drop.
pub struct PrivateEngine {
    pub host: String,
    dir: tempfile::TempDir,
}

impl PrivateEngine {
    /// Starts the engine and makes it a one-node swarm (a few seconds).
    pub fn start() -> PrivateEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut engine = PrivateEngine {
            host: String::new(),
            dir,
        };
        engine.testenv(
            "_testenv_start_dockerd \"$HOIST_TEST_STATE\" && _testenv_swarm_init \"$HOIST_TEST_STATE\"",
        );
        engine.host = std::fs::read_to_string(engine.dir.path().join("docker_host"))
            .expect("the engine's docker_host");
        engine
    }

    /// Stops the engine (SIGTERM, as a host shutdown or `systemctl restart docker` does),
    /// leaves it down for `down`, and starts it again on the same data; returns once it answers.
    pub fn restart(&self, down: std::time::Duration) {
        self.testenv(&format!(
            "_testenv_stop_pid \"$HOIST_TEST_STATE/docker.pid\"; \
             _testenv_stop_pid \"$HOIST_TEST_STATE/docker.pid.launch\"; \
             sleep {}; \
             _testenv_start_dockerd \"$HOIST_TEST_STATE\"",
            down.as_secs_f64()
        ));
    }

    fn testenv(&self, script: &str) {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(". scripts/testenv.sh && {script}"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("HOIST_TEST_STATE", self.dir.path())
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{script}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
        );
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg("-c")
            .arg(". scripts/testenv.sh && testenv_down")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("HOIST_TEST_STATE", self.dir.path())
            .output();
    }
}
