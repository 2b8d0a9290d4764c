//! The real registry client: Docker Registry HTTP API v2 over reqwest, with the auth a registry announces.
//!
//! A request goes out anonymously (or with a cached token); a 401 names the
//! scheme in `WWW-Authenticate`: `Basic` is answered with the configured
//! credentials, `Bearer realm=…,service=…,scope=…` with a token fetched from the
//! realm (with the credentials when there are some). Tokens are cached per
//! registry and repository until the registry refuses them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::{Credentials, Digest, ImageRegistry, RegistryError, Repository, ResolvedImage};
use crate::config::{Platform, RegistryConfig, is_loopback_host};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or config blob read; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// Registry client configured from `[[registries]]`.
pub struct RegistryClient {
    http: reqwest::Client,
    registries: Vec<RegistryConfig>,
    /// `(api host, repository path)` → Bearer token.
    tokens: Mutex<HashMap<(String, String), String>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field(
                "registries",
                &self.registries.iter().map(|r| &r.host).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// How a request authenticates.
#[derive(Clone)]
enum Auth {
    None,
    Basic(Credentials),
    Bearer(String),
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// The request being made, for error messages.
struct Ctx<'a> {
    image: &'a str,
    repo: &'a Repository,
}

impl Ctx<'_> {
    fn unreachable(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Unreachable {
            image: self.image.to_string(),
            registry: self.repo.registry.clone(),
            detail: detail.into(),
        }
    }
    fn refused(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::AuthRefused {
            image: self.image.to_string(),
            registry: self.repo.registry.clone(),
            detail: detail.into(),
        }
    }
    fn invalid(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Invalid {
            image: self.image.to_string(),
            registry: self.repo.registry.clone(),
            detail: detail.into(),
        }
    }
    fn not_found(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::NotFound {
            image: self.image.to_string(),
            registry: self.repo.registry.clone(),
            detail: detail.into(),
        }
    }
}

impl RegistryClient {
    /// A client with a 5 s connect and 30 s request timeout.
    pub fn new(registries: &[RegistryConfig]) -> RegistryClient {
        Self::with_timeouts(registries, Duration::from_secs(5), Duration::from_secs(30))
    }

    pub fn with_timeouts(
        registries: &[RegistryConfig],
        connect: Duration,
        request: Duration,
    ) -> RegistryClient {
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .timeout(request)
            .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
            .build()
            // Building fails only when the TLS backend cannot initialise: no config fixes that.
            .unwrap_or_else(|_| reqwest::Client::new());
        RegistryClient {
            http,
            registries: registries.to_vec(),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn config_for(&self, registry: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == registry)
    }

    fn base_url(&self, repo: &Repository) -> String {
        let insecure = self
            .config_for(&repo.registry)
            .map(|r| r.insecure)
            .unwrap_or_else(|| is_loopback_host(&repo.registry));
        let scheme = if insecure { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", repo.api_host(), repo.path)
    }

    /// `GET url` with the auth the registry asks for; returns the first non-401 answer.
    async fn get(
        &self,
        ctx: &Ctx<'_>,
        url: &str,
        accept: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let key = (ctx.repo.api_host().to_string(), ctx.repo.path.clone());
        let cached = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
        let mut auth = cached.map(Auth::Bearer).unwrap_or(Auth::None);
        // Set once a token was fetched during this call: a refused fresh token is final.
        let mut fresh_token = false;
        loop {
            let mut req = self.http.get(url).header(ACCEPT, accept);
            req = match &auth {
                Auth::None => req,
                Auth::Basic(c) => req.basic_auth(&c.username, Some(c.password.expose())),
                Auth::Bearer(t) => req.bearer_auth(t),
            };
            let resp = req
                .send()
                .await
                .map_err(|e| ctx.unreachable(describe(&e)))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let creds = self.credentials_for_registry(&ctx.repo.registry);
            auth = match (parse_challenge(resp.headers()), &auth) {
                (_, Auth::Basic(_)) => {
                    return Err(ctx.refused("the configured credentials were rejected"));
                }
                (Some(Challenge::Basic), _) => match creds {
                    Some(c) => Auth::Basic(c),
                    None => {
                        return Err(ctx.refused(format!(
                            "credentials required; none configured for {} in [[registries]]",
                            ctx.repo.registry
                        )));
                    }
                },
                (Some(Challenge::Bearer { .. }), _) if fresh_token => {
                    return Err(
                        ctx.refused("the registry rejected the token it issued (no pull access?)")
                    );
                }
                (
                    Some(Challenge::Bearer {
                        realm,
                        service,
                        scope,
                    }),
                    _,
                ) => {
                    let scope =
                        scope.unwrap_or_else(|| format!("repository:{}:pull", ctx.repo.path));
                    let token = self
                        .fetch_token(ctx, &realm, service.as_deref(), &scope, creds.as_ref())
                        .await?;
                    if let Ok(mut t) = self.tokens.lock() {
                        t.insert(key.clone(), token.clone());
                    }
                    fresh_token = true;
                    Auth::Bearer(token)
                }
                (None, _) => {
                    return Err(ctx.refused("401 without a usable WWW-Authenticate challenge"));
                }
            };
        }
    }

    async fn fetch_token(
        &self,
        ctx: &Ctx<'_>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let mut url = Url::parse(realm)
            .map_err(|_| ctx.invalid(format!("token realm {realm:?} is not a URL")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut req = self.http.get(url);
        if let Some(c) = creds {
            req = req.basic_auth(&c.username, Some(c.password.expose()));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ctx.unreachable(format!("token service: {}", describe(&e))))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(ctx.refused(format!("token service answered {}", resp.status())));
            }
            s if s.is_server_error() => {
                return Err(ctx.unreachable(format!("token service answered {s}")));
            }
            s => return Err(ctx.refused(format!("token service answered {s}"))),
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|e| ctx.invalid(format!("token response: {}", describe(&e))))?;
        body.token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ctx.invalid("token response carries no token"))
    }

    fn credentials_for_registry(&self, registry: &str) -> Option<Credentials> {
        let cfg = self.config_for(registry)?;
        Some(Credentials {
            server: cfg.host.clone(),
            username: cfg.username.clone()?,
            password: cfg.password.clone()?,
        })
    }

    /// Reads a body, refusing documents larger than any real manifest.
    async fn read_limited(
        ctx: &Ctx<'_>,
        resp: reqwest::Response,
    ) -> Result<Vec<u8>, RegistryError> {
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(ctx.invalid("document larger than 4 MiB"));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ctx.unreachable(describe(&e)))?;
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(ctx.invalid("document larger than 4 MiB"));
        }
        Ok(bytes.to_vec())
    }

    async fn check_status(
        ctx: &Ctx<'_>,
        what: &str,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let code = registry_error_code(&body);
        match status {
            StatusCode::NOT_FOUND => Err(ctx.not_found(match code.as_deref() {
                Some("NAME_UNKNOWN") => "repository does not exist".to_string(),
                Some("MANIFEST_UNKNOWN") => "tag does not exist".to_string(),
                _ => format!("{what} does not exist"),
            })),
            StatusCode::FORBIDDEN => {
                Err(ctx.refused(format!("403 on {what}{}", code_suffix(&code))))
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(ctx.unreachable(format!("answered {s} on {what}")))
            }
            s => Err(ctx.invalid(format!("answered {s} on {what}{}", code_suffix(&code)))),
        }
    }

    /// Whether `repository` exists and the configured credentials may read it
    /// (`GET /v2/<name>/tags/list?n=1`), for `hoist check`.
    pub async fn check_repository(&self, repository: &str) -> Result<(), RegistryError> {
        let repo = Repository::parse(repository)?;
        let ctx = Ctx {
            image: repository,
            repo: &repo,
        };
        let url = format!("{}/tags/list?n=1", self.base_url(&repo));
        let resp = self.get(&ctx, &url, "application/json").await?;
        Self::check_status(&ctx, "repository", resp)
            .await
            .map(|_| ())
    }

    async fn resolve_inner(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<ResolvedImage, RegistryError> {
        let image = format!("{repository}:{tag}");
        let repo = Repository::parse(repository).map_err(|e| match e {
            RegistryError::BadReference { reason, .. } => RegistryError::BadReference {
                image: image.clone(),
                reason,
            },
            other => other,
        })?;
        let ctx = Ctx {
            image: &image,
            repo: &repo,
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !tag.starts_with(['.', '-']);
        if !tag_ok {
            return Err(RegistryError::BadReference {
                image,
                reason: "invalid tag".into(),
            });
        }
        let base = self.base_url(&repo);
        let accept = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ");
        let resp = self
            .get(&ctx, &format!("{base}/manifests/{tag}"), &accept)
            .await?;
        let resp = Self::check_status(&ctx, "manifest", resp).await?;
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Self::read_limited(&ctx, resp).await?;
        let digest = Digest::of(&body);
        if let Some(h) = header_digest
            && h != digest.as_str()
        {
            return Err(ctx.invalid(format!(
                "Docker-Content-Digest {h} does not match the manifest's {digest}"
            )));
        }
        let doc: ManifestDoc = serde_json::from_slice(&body)
            .map_err(|e| ctx.invalid(format!("manifest is not valid JSON: {e}")))?;
        let media_type = doc.media_type.clone().or(header_type).unwrap_or_default();
        let is_index = media_type == OCI_INDEX
            || media_type == DOCKER_LIST
            || (media_type.is_empty() && doc.manifests.is_some());
        let platforms = if is_index {
            let mut out: Vec<Platform> = Vec::new();
            for m in doc.manifests.unwrap_or_default() {
                let Some(p) = m.platform else { continue };
                if p.os == "unknown" || p.architecture == "unknown" {
                    continue; // buildx attestation manifests
                }
                let platform = super::normalize_platform(&Platform {
                    os: p.os,
                    arch: p.architecture,
                    variant: p.variant,
                });
                if !out.contains(&platform) {
                    out.push(platform);
                }
            }
            out
        } else if media_type == OCI_MANIFEST
            || media_type == DOCKER_MANIFEST
            || doc.config.is_some()
        {
            let config = doc
                .config
                .ok_or_else(|| ctx.invalid("manifest has no config"))?;
            let resp = self
                .get(&ctx, &format!("{base}/blobs/{}", config.digest), "*/*")
                .await?;
            let resp = Self::check_status(&ctx, "config blob", resp).await?;
            let body = Self::read_limited(&ctx, resp).await?;
            let cfg: ImageConfig = serde_json::from_slice(&body)
                .map_err(|e| ctx.invalid(format!("image config is not valid JSON: {e}")))?;
            vec![super::normalize_platform(&Platform {
                os: cfg.os,
                arch: cfg.architecture,
                variant: cfg.variant,
            })]
        } else {
            return Err(ctx.invalid(format!("unsupported manifest media type {media_type:?}")));
        };
        Ok(ResolvedImage {
            repository: repository.to_string(),
            tag: tag.to_string(),
            digest,
            media_type,
            is_index,
            platforms,
        })
    }
}

impl ImageRegistry for RegistryClient {
    async fn resolve(&self, repository: &str, tag: &str) -> Result<ResolvedImage, RegistryError> {
        let result = self.resolve_inner(repository, tag).await;
        let status = match &result {
            Ok(_) => "ok",
            Err(RegistryError::NotFound { .. }) => "not_found",
            Err(RegistryError::AuthRefused { .. }) => "refused",
            Err(RegistryError::Unreachable { .. }) => "unreachable",
            Err(_) => "error",
        };
        metrics::counter!("hoist_registry_requests_total", "op" => "resolve", "status" => status)
            .increment(1);
        result
    }

    fn credentials_for(&self, repository: &str) -> Option<Credentials> {
        let repo = Repository::parse(repository).ok()?;
        self.credentials_for_registry(&repo.registry)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    media_type: Option<String>,
    manifests: Option<Vec<IndexEntry>>,
    config: Option<Descriptor>,
}

#[derive(Deserialize)]
struct IndexEntry {
    platform: Option<IndexPlatform>,
}

#[derive(Deserialize)]
struct IndexPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

#[derive(Deserialize)]
struct ImageConfig {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// The first `code` of a registry error body (`{"errors":[{"code":"MANIFEST_UNKNOWN",…}]}`).
fn registry_error_code(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("errors")?
        .get(0)?
        .get("code")?
        .as_str()
        .map(str::to_string)
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

/// A reqwest error without the URL's query (which may carry a scope, never a secret, but is noise).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() {
        "could not decode the answer"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Parses the first challenge of `WWW-Authenticate` (`Basic realm="…"` or `Bearer realm="…",service="…",scope="…"`).
fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let value = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    parse_challenge_text(value)
}

fn parse_challenge_text(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (val, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (quoted[..end].to_string(), &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, val);
        s = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[cfg(test)]
pub(super) fn parse_challenge_for_test(
    value: &str,
) -> Option<(String, Option<String>, Option<String>)> {
    match parse_challenge_text(value)? {
        Challenge::Basic => Some(("basic".into(), None, None)),
        Challenge::Bearer {
            realm,
            service,
            scope,
        } => Some((realm, service, scope)),
    }
}
