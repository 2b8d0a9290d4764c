//! `hoist.toml`: the operator's one configuration file, parsed strictly and validated once at start.
//!
//! Every key of SPEC §2 lives here with its default. Secrets are never written
//! literally: they are `env:NAME` or `file:/path` references resolved at load
//! time into [`Secret`], whose `Debug` never shows the value.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the config file is read from when `--config` is absent and `HOIST_CONFIG` is unset.
pub const DEFAULT_CONFIG_PATH: &str = "hoist.toml";

/// A configuration problem, rendered as `FILE: key: reason` (SPEC §1, exit code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A resolved secret. Its `Debug` and `Display` are redacted so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret's value, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from (for messages).
    pub file: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub gitlab: GitlabConfig,
    pub docker: DockerConfig,
    pub registries: Vec<RegistryConfig>,
    pub projects: Vec<ProjectConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address the HTTP server binds. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Base URL GitLab and people reach hoist at. Default `http://<listen>`.
    pub public_url: String,
    /// Largest webhook body accepted; bigger ones answer 413. Default 26214400 (25 MiB).
    pub max_body_bytes: usize,
    /// Bearer token required by `/`, `/api/*` and `/metrics`. Default: none (open).
    pub api_token: Option<Secret>,
    /// Reverse proxies whose `X-Forwarded-For` names the sender of a webhook (for the
    /// flood limit). Default: none, the TCP peer is the sender.
    pub trusted_proxies: Vec<IpRange>,
}

/// An address or a CIDR range (`10.0.0.0/8`, `127.0.0.1`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let bits = |width: u32| u32::from(self.prefix).min(width);
        match (self.addr, ip.to_canonical()) {
            (V4(net), V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - bits(32)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (V6(net), V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - bits(128)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpRange {
    type Err = ();

    fn from_str(text: &str) -> Result<IpRange, ()> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = addr
            .parse::<std::net::IpAddr>()
            .map_err(|_| ())?
            .to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= width).ok_or(())?,
            None => width,
        };
        Ok(IpRange { addr, prefix })
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` (default `sqlite://hoist.db`) or `postgres://…`.
    pub url: Secret,
    /// How long a replica's claim on work lasts unless renewed (default 15 s): a replica
    /// that dies has its run taken over this long after its last renewal.
    pub lease_seconds: u64,
    /// How long the raw body of a finished delivery is kept (default 7 days; 0: until the
    /// next prune). The worker never reads it again; it is kept for inspection.
    pub keep_bodies_days: u32,
    /// How long a finished delivery's record, and with it its idempotency key, is kept
    /// (default 90 days, at least [`MIN_KEEP_DELIVERIES_DAYS`]).
    pub keep_deliveries_days: u32,
}

/// The shortest `store.keep_deliveries_days`: a delivery GitLab resends from its hook's
/// recent events carries its first `Idempotency-Key`, and hoist must still know the key
/// to answer it as a duplicate instead of acting on it again. GitLab keeps those events
/// for at most about a month.
pub const MIN_KEEP_DELIVERIES_DAYS: u32 = 31;

#[derive(Debug, Clone)]
pub struct GitlabConfig {
    /// Base URL of the GitLab instance, without `/api/v4`.
    pub url: String,
    /// API token with scope `api`.
    pub token: Secret,
}

#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`. Default: `DOCKER_HOST`, else `unix:///var/run/docker.sock`.
    pub host: String,
}

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registry host, with port when not 443/80 (`registry.example.com`, `127.0.0.1:5000`).
    pub host: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Plain http. Default: true for loopback hosts, false otherwise.
    pub insecure: bool,
}

#[derive(Debug, Clone)]
pub struct ProjectConfig {
    /// `path_with_namespace` or numeric project id.
    pub path: String,
    /// Expected `X-Gitlab-Token`.
    pub webhook_token: Option<Secret>,
    /// `whsec_…` Standard Webhooks signing key; when set, `X-Gitlab-Token` is not checked.
    pub signing_token: Option<SigningKey>,
    /// Name of the manual job that builds the multi-arch index. "" = none. Default `manifest`.
    pub manifest_job: String,
    /// Name of the manual deploy job. "" = none. Default `deploy`.
    pub deploy_job: String,
    pub environments: Vec<EnvironmentConfig>,
}

/// A decoded `whsec_` signing key.
#[derive(Clone)]
pub struct SigningKey {
    pub secret: Secret,
    pub key: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Release tags matching `tag_pattern` deploy automatically.
    Tag,
    /// Only `/deploy`, `hoist deploy`, or a human playing the deploy job.
    Manual,
}

/// GitLab access levels, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Guest,
    Reporter,
    Developer,
    Maintainer,
    Owner,
}

impl Role {
    /// GitLab's numeric `access_level`.
    pub fn access_level(self) -> u32 {
        match self {
            Role::Guest => 10,
            Role::Reporter => 20,
            Role::Developer => 30,
            Role::Maintainer => 40,
            Role::Owner => 50,
        }
    }

    /// The highest role whose level is at most `level` (None below guest).
    pub fn from_access_level(level: u32) -> Option<Role> {
        [
            Role::Owner,
            Role::Maintainer,
            Role::Developer,
            Role::Reporter,
            Role::Guest,
        ]
        .into_iter()
        .find(|r| level >= r.access_level())
    }
}

#[derive(Debug, Clone)]
pub struct EnvironmentConfig {
    pub name: String,
    pub policy: Policy,
    /// Glob on the tag name (tag policy). Default `*`.
    pub tag_pattern: globset::GlobMatcher,
    pub tag_pattern_text: String,
    /// Only protected tags deploy. Default true.
    pub require_protected_tag: bool,
    /// Allow a tag older (semver) than the live one. Default false.
    pub allow_downgrade: bool,
    /// Minimum role for `/deploy` and `hoist deploy`. Default `maintainer`.
    pub deploy_role: Role,
    pub services: Vec<ServiceConfig>,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Swarm service name.
    pub name: String,
    /// Image repository without tag (`registry.example.com/group/app`).
    pub image: String,
    /// Tag template: `{tag}` `{sha}` `{short_sha}` `{ref_slug}` `{pipeline_id}`. Default `{tag}` (tag policy) or `{short_sha}` (manual).
    pub tag: String,
    /// Platforms the image index must contain, `os/arch[/variant]`.
    pub platforms: Vec<Platform>,
    /// Spec used only when the service does not exist.
    pub create: Option<CreateSpec>,
}

/// An `os/arch[/variant]` platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "{text:?} is not a platform (expected os/arch[/variant], e.g. linux/arm/v7)"
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}/{}/{}", self.os, self.arch, v),
            None => write!(f, "{}/{}", self.os, self.arch),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    /// Default 1.
    pub replicas: u64,
    /// `PUBLISHED:TARGET[/tcp|/udp]`.
    pub ports: Vec<PortSpec>,
    /// `NAME=value`.
    pub env: Vec<String>,
    /// Swarm placement constraints (`node.role==worker`).
    pub constraints: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    pub published: u16,
    pub target: u16,
    pub udp: bool,
}

impl PortSpec {
    pub fn parse(text: &str) -> Result<PortSpec, String> {
        let bad =
            || format!("{text:?} is not a port mapping (expected PUBLISHED:TARGET[/tcp|/udp])");
        let (ports, proto) = match text.split_once('/') {
            Some((p, proto)) => (p, proto),
            None => (text, "tcp"),
        };
        let udp = match proto {
            "tcp" => false,
            "udp" => true,
            _ => return Err(bad()),
        };
        let (published, target) = ports.split_once(':').ok_or_else(bad)?;
        Ok(PortSpec {
            published: published.parse().map_err(|_| bad())?,
            target: target.parse().map_err(|_| bad())?,
            udp,
        })
    }
}

/// The placeholders a `tag` template may use.
pub const TAG_PLACEHOLDERS: &[&str] = &["tag", "sha", "short_sha", "ref_slug", "pipeline_id"];

/// Values for a tag template.
#[derive(Debug, Clone, Default)]
pub struct TagValues<'a> {
    pub tag: Option<&'a str>,
    pub sha: &'a str,
    pub ref_name: &'a str,
    pub pipeline_id: Option<u64>,
}

/// Renders a validated tag template; a placeholder without a value (`{tag}` on a branch) is an error.
pub fn render_tag(template: &str, values: &TagValues<'_>) -> Result<String, String> {
    let mut out = String::new();
    for piece in template_pieces(template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder("tag") => out.push_str(
                values
                    .tag
                    .ok_or("{tag} needs a tag, but this commit has none")?,
            ),
            Piece::Placeholder("sha") => out.push_str(values.sha),
            Piece::Placeholder("short_sha") => out.push_str(&values.sha[..values.sha.len().min(8)]),
            Piece::Placeholder("ref_slug") => out.push_str(&ref_slug(values.ref_name)),
            Piece::Placeholder("pipeline_id") => out.push_str(
                &values
                    .pipeline_id
                    .ok_or("{pipeline_id} needs a pipeline")?
                    .to_string(),
            ),
            Piece::Placeholder(other) => return Err(format!("unknown placeholder {{{other}}}")),
        }
    }
    Ok(out)
}

/// GitLab's `CI_COMMIT_REF_SLUG`: lowercased, non-alphanumerics to `-`, at most 63 bytes, no leading/trailing `-`.
pub fn ref_slug(name: &str) -> String {
    let slug: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    slug.trim_matches('-').to_string()
}

enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn template_pieces(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in {template:?}"))?;
        pieces.push(Piece::Placeholder(&rest[open + 1..open + close]));
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("stray }} in {template:?}"));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

// ---------------------------------------------------------------------------
// The file's shape, as serde reads it.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    gitlab: RawGitlab,
    #[serde(default)]
    docker: RawDocker,
    #[serde(default)]
    registries: Vec<RawRegistry>,
    #[serde(default)]
    projects: Vec<RawProject>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    public_url: Option<String>,
    max_body_bytes: Option<u64>,
    api_token: Option<String>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    lease_seconds: Option<u64>,
    keep_bodies_days: Option<u32>,
    keep_deliveries_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGitlab {
    url: String,
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    host: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    host: String,
    username: Option<String>,
    password: Option<String>,
    insecure: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    path: String,
    webhook_token: Option<String>,
    signing_token: Option<String>,
    manifest_job: Option<String>,
    deploy_job: Option<String>,
    #[serde(default)]
    environments: Vec<RawEnvironment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    name: String,
    policy: Policy,
    tag_pattern: Option<String>,
    require_protected_tag: Option<bool>,
    allow_downgrade: Option<bool>,
    deploy_role: Option<Role>,
    #[serde(default)]
    services: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    image: String,
    tag: Option<String>,
    platforms: Vec<String>,
    create: Option<RawCreate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCreate {
    replicas: Option<u64>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    constraints: Vec<String>,
}

/// Where secret references are resolved from; tests swap in a map.
pub trait SecretSource {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &Path) -> std::io::Result<String>;
}

/// The process environment and the file system.
pub struct SystemSecrets;

impl SecretSource for SystemSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

impl Config {
    /// The config path from `--config`, else `HOIST_CONFIG`, else `./hoist.toml`.
    pub fn path_from(flag: Option<PathBuf>) -> PathBuf {
        flag.or_else(|| std::env::var_os("HOIST_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// Reads, parses and validates the file, resolving secrets from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text, &SystemSecrets)
    }

    /// Parses and validates `text` as if read from `file`.
    pub fn parse(
        file: &Path,
        text: &str,
        secrets: &dyn SecretSource,
    ) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            file: file.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let value: toml::Table = toml::from_str(text)
            .map_err(|e| err("", format!("not valid TOML: {}", e.message().trim())))?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                let reason = e.into_inner().to_string();
                err(&key, reason.lines().next().unwrap_or_default().to_string())
            })?;
        Validator { file, secrets }.build(raw)
    }

    /// The project configured for a webhook's `project.id`/`project_id` or `path_with_namespace`.
    pub fn project(&self, id: Option<u64>, path: Option<&str>) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| {
            path.is_some_and(|path| p.path == path) || id.is_some_and(|id| p.path == id.to_string())
        })
    }
}

struct Validator<'a> {
    file: &'a Path,
    secrets: &'a dyn SecretSource,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Resolves `env:NAME` / `file:/path`. `literal_ok` allows a plain value (for non-secret-only keys).
    fn secret(&self, key: &str, value: &str, literal_ok: bool) -> Result<Secret, ConfigError> {
        if let Some(name) = value.strip_prefix("env:") {
            let v = self
                .secrets
                .env(name)
                .ok_or_else(|| self.err(key, format!("environment variable {name} is not set")))?;
            if v.is_empty() {
                return Err(self.err(key, format!("environment variable {name} is empty")));
            }
            Ok(Secret(v))
        } else if let Some(path) = value.strip_prefix("file:") {
            let v = self
                .secrets
                .file(Path::new(path))
                .map_err(|e| self.err(key, format!("cannot read secret file {path}: {e}")))?;
            let v = v.strip_suffix('\n').unwrap_or(&v);
            let v = v.strip_suffix('\r').unwrap_or(v);
            if v.is_empty() {
                return Err(self.err(key, format!("secret file {path} is empty")));
            }
            Ok(Secret(v.to_string()))
        } else if literal_ok {
            Ok(Secret(value.to_string()))
        } else {
            Err(self.err(
                key,
                "secrets are never written literally: use \"env:NAME\" or \"file:/path\"",
            ))
        }
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = self.server(raw.server)?;
        let store_url = raw
            .store
            .url
            .unwrap_or_else(|| "sqlite://hoist.db".to_string());
        let store_url = self.secret("store.url", &store_url, true)?;
        let url = store_url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(self.err("store.url", "must start with sqlite: or postgres://"));
        }
        let gitlab = GitlabConfig {
            url: self.http_url("gitlab.url", &raw.gitlab.url)?,
            token: self.secret("gitlab.token", &raw.gitlab.token, false)?,
        };
        let host = raw
            .docker
            .host
            .or_else(|| self.secrets.env("DOCKER_HOST"))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        if !(host.starts_with("unix://")
            || host.starts_with("tcp://")
            || host.starts_with("http://"))
        {
            return Err(self.err(
                "docker.host",
                format!("{host:?} must start with unix:// or tcp://"),
            ));
        }
        let docker = DockerConfig { host };

        let mut registries = Vec::new();
        let mut seen = HashSet::new();
        for (i, r) in raw.registries.into_iter().enumerate() {
            let key = format!("registries[{i}]");
            if r.host.is_empty() || r.host.contains('/') {
                return Err(self.err(
                    format!("{key}.host"),
                    "must be a host[:port] without scheme or path",
                ));
            }
            if !seen.insert(r.host.clone()) {
                return Err(self.err(
                    format!("{key}.host"),
                    format!("registry {} is configured twice", r.host),
                ));
            }
            let password = r
                .password
                .as_deref()
                .map(|p| self.secret(&format!("{key}.password"), p, false))
                .transpose()?;
            if password.is_some() != r.username.is_some() {
                return Err(self.err(key, "username and password go together"));
            }
            let insecure = r.insecure.unwrap_or_else(|| is_loopback_host(&r.host));
            registries.push(RegistryConfig {
                host: r.host,
                username: r.username,
                password,
                insecure,
            });
        }

        let mut projects = Vec::new();
        let mut paths = HashSet::new();
        for (i, p) in raw.projects.into_iter().enumerate() {
            let key = format!("projects[{i}]");
            if !paths.insert(p.path.clone()) {
                return Err(self.err(
                    format!("{key}.path"),
                    format!("project {} is configured twice", p.path),
                ));
            }
            projects.push(self.project(&key, p)?);
        }
        let lease_seconds = raw.store.lease_seconds.unwrap_or(15);
        if !(1..=3600).contains(&lease_seconds) {
            return Err(self.err("store.lease_seconds", "must be between 1 and 3600 seconds"));
        }
        let keep_deliveries_days = raw.store.keep_deliveries_days.unwrap_or(90);
        if !(MIN_KEEP_DELIVERIES_DAYS..=36_500).contains(&keep_deliveries_days) {
            return Err(self.err(
                "store.keep_deliveries_days",
                format!(
                    "must be between {MIN_KEEP_DELIVERIES_DAYS} and 36500 days (GitLab may \
                     resend a delivery for about a month, and hoist must still know its key)"
                ),
            ));
        }
        let keep_bodies_days = raw.store.keep_bodies_days.unwrap_or(7);
        if keep_bodies_days > keep_deliveries_days {
            return Err(self.err(
                "store.keep_bodies_days",
                format!(
                    "must not be longer than store.keep_deliveries_days ({keep_deliveries_days})"
                ),
            ));
        }
        Ok(Config {
            file: self.file.to_path_buf(),
            server,
            store: StoreConfig {
                url: store_url,
                lease_seconds,
                keep_bodies_days,
                keep_deliveries_days,
            },
            gitlab,
            docker,
            registries,
            projects,
        })
    }

    fn server(&self, raw: RawServer) -> Result<ServerConfig, ConfigError> {
        let listen_text = raw.listen.unwrap_or_else(|| "0.0.0.0:8080".to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            self.err(
                "server.listen",
                format!("{listen_text:?} is not an address like 0.0.0.0:8080"),
            )
        })?;
        let public_url = match raw.public_url {
            Some(u) => self.http_url("server.public_url", &u)?,
            None => format!("http://{listen}"),
        };
        let max_body_bytes = raw.max_body_bytes.unwrap_or(26_214_400);
        if max_body_bytes == 0 {
            return Err(self.err("server.max_body_bytes", "must be greater than 0"));
        }
        let max_body_bytes = usize::try_from(max_body_bytes)
            .map_err(|_| self.err("server.max_body_bytes", "too large for this machine"))?;
        let api_token = raw
            .api_token
            .as_deref()
            .map(|t| self.secret("server.api_token", t, false))
            .transpose()?;
        let trusted_proxies = raw
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse().map_err(|()| {
                    self.err(
                        format!("server.trusted_proxies[{i}]"),
                        format!("{text:?} is not an address or a range like 10.0.0.0/8"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ServerConfig {
            listen,
            public_url,
            max_body_bytes,
            api_token,
            trusted_proxies,
        })
    }

    fn http_url(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let trimmed = value.trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .ok_or_else(|| {
                self.err(
                    key,
                    format!("{value:?} must start with http:// or https://"),
                )
            })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(self.err(key, format!("{value:?} has no host")));
        }
        Ok(trimmed.to_string())
    }

    fn project(&self, key: &str, p: RawProject) -> Result<ProjectConfig, ConfigError> {
        if p.path.is_empty() {
            return Err(self.err(format!("{key}.path"), "must not be empty"));
        }
        let webhook_token = p
            .webhook_token
            .as_deref()
            .map(|t| self.secret(&format!("{key}.webhook_token"), t, false))
            .transpose()?;
        let signing_token = p
            .signing_token
            .as_deref()
            .map(|t| {
                let k = format!("{key}.signing_token");
                let secret = self.secret(&k, t, false)?;
                let key = signing_key(secret.expose()).map_err(|reason| self.err(&k, reason))?;
                Ok(SigningKey { secret, key })
            })
            .transpose()?;
        if webhook_token.is_none() && signing_token.is_none() {
            return Err(self.err(
                key,
                "needs webhook_token or signing_token: hoist accepts no unauthenticated webhooks",
            ));
        }
        let mut environments: Vec<EnvironmentConfig> = Vec::new();
        for (i, e) in p.environments.into_iter().enumerate() {
            let ekey = format!("{key}.environments[{i}]");
            if environments.iter().any(|x| x.name == e.name) {
                return Err(self.err(
                    format!("{ekey}.name"),
                    format!("environment {} is configured twice", e.name),
                ));
            }
            environments.push(self.environment(&ekey, e)?);
        }
        Ok(ProjectConfig {
            path: p.path,
            webhook_token,
            signing_token,
            manifest_job: p.manifest_job.unwrap_or_else(|| "manifest".into()),
            deploy_job: p.deploy_job.unwrap_or_else(|| "deploy".into()),
            environments,
        })
    }

    fn environment(&self, key: &str, e: RawEnvironment) -> Result<EnvironmentConfig, ConfigError> {
        let valid_name = !e.name.is_empty()
            && e.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(self.err(
                format!("{key}.name"),
                format!("{:?} must be letters, digits, '-', '_' or '.'", e.name),
            ));
        }
        if e.policy == Policy::Manual && e.tag_pattern.is_some() {
            return Err(self.err(
                format!("{key}.tag_pattern"),
                "only applies to policy = \"tag\"",
            ));
        }
        let tag_pattern_text = e.tag_pattern.unwrap_or_else(|| "*".to_string());
        let tag_pattern = globset::GlobBuilder::new(&tag_pattern_text)
            .literal_separator(false)
            .build()
            .map_err(|err| {
                self.err(
                    format!("{key}.tag_pattern"),
                    format!("bad glob {tag_pattern_text:?}: {}", err.kind()),
                )
            })?
            .compile_matcher();
        let mut services: Vec<ServiceConfig> = Vec::new();
        for (i, s) in e.services.into_iter().enumerate() {
            let skey = format!("{key}.services[{i}]");
            if services.iter().any(|x| x.name == s.name) {
                return Err(self.err(
                    format!("{skey}.name"),
                    format!("service {} is listed twice", s.name),
                ));
            }
            services.push(self.service(&skey, e.policy, s)?);
        }
        if services.is_empty() {
            return Err(self.err(
                format!("{key}.services"),
                "an environment needs at least one service",
            ));
        }
        Ok(EnvironmentConfig {
            name: e.name,
            policy: e.policy,
            tag_pattern,
            tag_pattern_text,
            require_protected_tag: e.require_protected_tag.unwrap_or(true),
            allow_downgrade: e.allow_downgrade.unwrap_or(false),
            deploy_role: e.deploy_role.unwrap_or(Role::Maintainer),
            services,
        })
    }

    fn service(
        &self,
        key: &str,
        policy: Policy,
        s: RawService,
    ) -> Result<ServiceConfig, ConfigError> {
        let valid_name = !s.name.is_empty()
            && s.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(self.err(
                format!("{key}.name"),
                format!("{:?} is not a Swarm service name", s.name),
            ));
        }
        if s.image.is_empty()
            || s.image.contains('@')
            || s.image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'))
        {
            return Err(self.err(
                format!("{key}.image"),
                format!("{:?} must be a repository without tag or digest", s.image),
            ));
        }
        let tag = s.tag.unwrap_or_else(|| match policy {
            Policy::Tag => "{tag}".into(),
            Policy::Manual => "{short_sha}".into(),
        });
        let pieces = template_pieces(&tag).map_err(|r| self.err(format!("{key}.tag"), r))?;
        for piece in pieces {
            if let Piece::Placeholder(name) = piece
                && !TAG_PLACEHOLDERS.contains(&name)
            {
                return Err(self.err(
                    format!("{key}.tag"),
                    format!("unknown placeholder {{{name}}} (known: {{tag}} {{sha}} {{short_sha}} {{ref_slug}} {{pipeline_id}})"),
                ));
            }
        }
        if tag.is_empty() {
            return Err(self.err(format!("{key}.tag"), "must not be empty"));
        }
        if s.platforms.is_empty() {
            return Err(self.err(
                format!("{key}.platforms"),
                "list at least one platform, e.g. [\"linux/amd64\"]",
            ));
        }
        let mut platforms = Vec::new();
        for (i, p) in s.platforms.iter().enumerate() {
            platforms.push(
                Platform::parse(p).map_err(|r| self.err(format!("{key}.platforms[{i}]"), r))?,
            );
        }
        let create = s
            .create
            .map(|c| -> Result<CreateSpec, ConfigError> {
                let mut ports = Vec::new();
                for (i, p) in c.ports.iter().enumerate() {
                    ports.push(
                        PortSpec::parse(p)
                            .map_err(|r| self.err(format!("{key}.create.ports[{i}]"), r))?,
                    );
                }
                for (i, v) in c.env.iter().enumerate() {
                    if !v.contains('=') || v.starts_with('=') {
                        return Err(self.err(
                            format!("{key}.create.env[{i}]"),
                            format!("{v:?} must be NAME=value"),
                        ));
                    }
                }
                for (i, v) in c.constraints.iter().enumerate() {
                    if !(v.contains("==") || v.contains("!=")) {
                        return Err(self.err(
                            format!("{key}.create.constraints[{i}]"),
                            format!("{v:?} must be like node.role==worker"),
                        ));
                    }
                }
                Ok(CreateSpec {
                    replicas: c.replicas.unwrap_or(1),
                    ports,
                    env: c.env,
                    constraints: c.constraints,
                })
            })
            .transpose()?;
        Ok(ServiceConfig {
            name: s.name,
            image: s.image,
            tag,
            platforms,
            create,
        })
    }
}

/// Decodes a `whsec_<base64>` Standard Webhooks key.
pub fn signing_key(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let b64 = text
        .strip_prefix("whsec_")
        .ok_or("must start with whsec_ (Standard Webhooks key)")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "the part after whsec_ is not base64")?;
    if key.len() < 16 {
        return Err("the key after whsec_ is shorter than 16 bytes".into());
    }
    Ok(key)
}

/// Loopback registries default to plain http, like Docker's own rule.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

#[cfg(test)]
mod tests;
