//! The HTTP transport under the `gitlab` crate's typed endpoints: timeout, bounded retries, metrics.
//!
//! [`HttpClient`] implements `gitlab::api::{RestClient, AsyncClient}` over our own reqwest
//! client instead of the crate's `AsyncGitlab`, whose builder calls `GET /user` (and fails
//! while GitLab is down) and which has no timeout and no async retry.
//!
//! Retry rules, per attempt:
//! - 429 and 5xx answers: GitLab did not process the request, so every method is retried,
//!   waiting `Retry-After` seconds when GitLab sends it, else exponential backoff with jitter.
//! - connection refused / reset before the request was sent: retried for every method.
//! - timeout or a connection lost after the request was sent: retried only for idempotent
//!   methods (GET, PUT, DELETE, HEAD). A POST (a comment, a play) may have been processed
//!   even though its answer was lost; retrying could post a comment twice, so it ends at
//!   once as [`ClientError::Transient`] and the caller decides (e.g. re-read, then retry).
//!
//! Every attempt counts once in `hoist_gitlab_requests_total{endpoint,status}`.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use gitlab::api::{ApiError, AsyncClient, RestClient};
use http::request::Builder as RequestBuilder;
use http::{HeaderValue, Method, Response, StatusCode};
use url::Url;

use crate::config::{GitlabConfig, Secret};

/// Default per-request timeout (GitLab itself answers well within it; a hung proxy does not).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often and how long to retry transient failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles for every further one.
    pub base_delay: Duration,
    /// Ceiling of one backoff (and of an honoured `Retry-After`).
    pub max_delay: Duration,
    /// No retry starts once this much time passed since the first attempt.
    pub total_budget: Duration,
    /// Timeout of one attempt, answer body included.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            total_budget: Duration::from_secs(60),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// Backoff before attempt `attempt + 1` (`attempt` counts from 1): "equal jitter", so the
    /// wait is between half and all of the exponential step.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let step = exp.min(self.max_delay);
        let half = step / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if nanos == 0 { 0 } else { random_u64() % nanos };
        half + Duration::from_nanos(jitter)
    }
}

/// A random number without a `rand` dependency: std seeds every `RandomState` randomly.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

/// Why a request did not produce an answer the typed layer can read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// GitLab was unreachable, slow or overloaded on every allowed attempt.
    #[error("GitLab unavailable: {0}")]
    Transient(String),
    /// The request could not even be built (a bug, not GitLab's state).
    #[error("cannot build the GitLab request: {0}")]
    Request(String),
}

/// GitLab's REST API over reqwest. Cheap to clone; constructing it sends nothing.
#[derive(Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    /// Ends with `/api/v4/`.
    api_base: Url,
    token: Secret,
    policy: RetryPolicy,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("api_base", &self.api_base.as_str())
            .field("token", &self.token)
            .field("policy", &self.policy)
            .finish()
    }
}

impl HttpClient {
    /// A client for `config.url` (http or https, with an optional path prefix) with the default policy.
    pub fn new(config: &GitlabConfig) -> Result<HttpClient, ClientError> {
        HttpClient::with_policy(&config.url, config.token.clone(), RetryPolicy::default())
    }

    /// A client for `base_url` with an explicit retry policy (tests use tiny delays).
    pub fn with_policy(
        base_url: &str,
        token: Secret,
        policy: RetryPolicy,
    ) -> Result<HttpClient, ClientError> {
        let mut base = Url::parse(base_url)
            .map_err(|e| ClientError::Request(format!("gitlab.url {base_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Request(format!(
                "gitlab.url {base_url:?}: not http(s)"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let api_base = base
            .join("api/v4/")
            .map_err(|e| ClientError::Request(format!("gitlab.url {base_url:?}: {e}")))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(policy.timeout)
            .build()
            .map_err(|e| ClientError::Request(e.to_string()))?;
        Ok(HttpClient {
            http,
            api_base,
            token,
            policy,
        })
    }

    /// The retry policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The `/api/v4/` URL requests are made against.
    pub fn api_base(&self) -> &Url {
        &self.api_base
    }

    /// Sends one logical request with the retry rules of the module doc.
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: http::HeaderMap,
        body: Vec<u8>,
    ) -> Result<Response<Bytes>, ClientError> {
        let label = endpoint_label(self.api_base.path(), url.path());
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let token = HeaderValue::from_str(self.token.expose())
            .map_err(|_| ClientError::Request("the GitLab token is not a valid header".into()))
            .map(|mut v| {
                v.set_sensitive(true);
                v
            })?;
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let request = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .header("PRIVATE-TOKEN", token.clone())
                .timeout(self.policy.timeout)
                .body(body.clone());
            let outcome = match request.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        count(&label, status.as_str());
                        let wait = retry_after(resp.headers());
                        Retry::After(format!("HTTP {}", status.as_u16()), wait)
                    } else {
                        let resp_headers = resp.headers().clone();
                        match resp.bytes().await {
                            Ok(bytes) => {
                                count(&label, status.as_str());
                                let mut out = Response::new(bytes);
                                *out.status_mut() = status;
                                *out.headers_mut() = resp_headers;
                                return Ok(out);
                            }
                            Err(e) => {
                                count(&label, "error");
                                failure(&e, idempotent, false)
                            }
                        }
                    }
                }
                Err(e) => {
                    count(&label, "error");
                    failure(&e, idempotent, e.is_connect())
                }
            };
            let (cause, wait) = match outcome {
                Retry::After(cause, wait) => (cause, wait),
                Retry::Never(cause) => {
                    return Err(ClientError::Transient(format!(
                        "{method} {label}: {cause} (not retried: the request may have been processed)"
                    )));
                }
            };
            let delay = match wait {
                Some(w) => w.min(self.policy.max_delay),
                None => self.policy.backoff(attempt),
            };
            let out_of_budget = started.elapsed() + delay > self.policy.total_budget;
            if attempt >= self.policy.max_attempts.max(1) || out_of_budget {
                return Err(ClientError::Transient(format!(
                    "{method} {label}: {cause} after {attempt} attempt(s) in {:.1}s",
                    started.elapsed().as_secs_f64()
                )));
            }
            tracing::debug!(endpoint = %label, %cause, attempt, delay_ms = delay.as_millis() as u64, "GitLab request failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

enum Retry {
    After(String, Option<Duration>),
    Never(String),
}

/// Classifies a reqwest failure. The text never holds the token: it is only in a header,
/// and reqwest's errors name the URL, not headers.
fn failure(e: &reqwest::Error, idempotent: bool, not_sent: bool) -> Retry {
    let cause = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        // Without the URL: the label already says which endpoint.
        let text = e.to_string();
        match e.url() {
            Some(url) => format!("connection error: {}", text.replace(url.as_str(), "…")),
            None => format!("connection error: {text}"),
        }
    };
    if idempotent || not_sent {
        Retry::After(cause, None)
    } else {
        Retry::Never(cause)
    }
}

/// `Retry-After` in seconds (GitLab never sends the HTTP-date form on API answers).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn count(endpoint: &str, status: &str) {
    metrics::counter!(
        "hoist_gitlab_requests_total",
        "endpoint" => endpoint.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
}

/// Path segments kept verbatim in a metric label; anything else is an id, a path, a sha or a name.
const LITERAL_SEGMENTS: &[&str] = &[
    "projects",
    "jobs",
    "play",
    "pipelines",
    "merge_requests",
    "notes",
    "award_emoji",
    "repository",
    "commits",
    "comments",
    "statuses",
    "tags",
    "members",
    "all",
    "hooks",
    "user",
    "version",
    "personal_access_tokens",
    "self",
    "protected_tags",
];

/// A bounded metric label for a request path: `projects/:id/jobs/:id/play`.
pub fn endpoint_label(api_base_path: &str, path: &str) -> String {
    let rest = path.strip_prefix(api_base_path).unwrap_or(path);
    let mut out: Vec<&str> = Vec::new();
    let mut prev = "";
    for seg in rest.split('/').filter(|s| !s.is_empty()) {
        let shown = if LITERAL_SEGMENTS.contains(&seg) && prev != "projects" {
            seg
        } else {
            match prev {
                "commits" | "statuses" => ":sha",
                "tags" => ":name",
                _ => ":id",
            }
        };
        out.push(shown);
        prev = seg;
    }
    out.join("/")
}

impl RestClient for HttpClient {
    type Error = ClientError;

    fn rest_endpoint(&self, endpoint: &str) -> Result<Url, ApiError<Self::Error>> {
        Ok(self.api_base.join(endpoint)?)
    }
}

#[async_trait]
impl AsyncClient for HttpClient {
    async fn rest_async(
        &self,
        request: RequestBuilder,
        body: Vec<u8>,
    ) -> Result<Response<Bytes>, ApiError<Self::Error>> {
        let request = request
            .body(())
            .map_err(|e| ApiError::client(ClientError::Request(e.to_string())))?;
        let (parts, ()) = request.into_parts();
        let url = Url::parse(&parts.uri.to_string())?;
        self.send(parts.method, url, parts.headers, body)
            .await
            .map_err(ApiError::client)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        let base = "/api/v4/";
        for (path, want) in [
            (
                "/api/v4/projects/acme%2Fshop/jobs/705/play",
                "projects/:id/jobs/:id/play",
            ),
            (
                "/api/v4/projects/101/pipelines/42/jobs",
                "projects/:id/pipelines/:id/jobs",
            ),
            (
                "/api/v4/projects/101/repository/commits/abc123/comments",
                "projects/:id/repository/commits/:sha/comments",
            ),
            (
                "/api/v4/projects/101/statuses/abc",
                "projects/:id/statuses/:sha",
            ),
            (
                "/api/v4/projects/101/repository/tags/v1.0.0",
                "projects/:id/repository/tags/:name",
            ),
            (
                "/api/v4/projects/jobs/members/all/7",
                "projects/:id/members/all/:id",
            ),
            ("/api/v4/user", "user"),
        ] {
            assert_eq!(endpoint_label(base, path), want, "{path}");
        }
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for attempt in 1..10 {
            let d = p.backoff(attempt);
            let step = Duration::from_millis(100 * 2u64.pow(attempt - 1)).min(p.max_delay);
            assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let c = HttpClient::with_policy(
            "http://127.0.0.1:9",
            Secret::new("glpat-secret-value"),
            RetryPolicy::default(),
        )
        .expect("client");
        let text = format!("{c:?}");
        assert!(!text.contains("glpat-secret-value"), "{text}");
        assert_eq!(c.api_base().as_str(), "http://127.0.0.1:9/api/v4/");
    }
}
