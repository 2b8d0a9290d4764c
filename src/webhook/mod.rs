//! `POST /hooks/gitlab`: size limit → project → authenticate → persist → answer.
//!
//! The receiver never calls GitLab, Docker or the policy: it reads only the
//! fields it needs (the project), stores the raw body, and answers once the
//! delivery is committed. The worker does everything else.

pub mod auth;
pub mod limit;
mod project;
pub mod writer;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::config::{Config, ProjectConfig};
use crate::metrics;
use crate::store::{DeliveryState, NewDelivery, PackedBody};
use auth::AuthHeaders;
use project::ProjectRef;
use writer::{WriteError, Writer};

/// What the receiver needs: the config, the writer, and the project ids it learned.
pub struct Receiver {
    config: Arc<Config>,
    writer: Writer,
    /// Numeric project ids seen on authentic deliveries, for hooks that carry only `project_id`.
    learned_ids: RwLock<HashMap<u64, usize>>,
    /// Refused deliveries per source address.
    failures: limit::FailureLimiter,
}

impl Receiver {
    pub fn new(config: Arc<Config>, writer: Writer) -> Receiver {
        Receiver {
            config,
            writer,
            learned_ids: RwLock::new(HashMap::new()),
            failures: limit::FailureLimiter::default(),
        }
    }

    fn find_project(&self, found: &ProjectRef) -> Option<(usize, &ProjectConfig)> {
        let by_path = found
            .path()
            .and_then(|path| self.config.projects.iter().position(|p| p.path == path));
        let by_id = || {
            let id = found.id()?;
            let id_text = id.to_string();
            self.config
                .projects
                .iter()
                .position(|p| p.path == id_text)
                .or_else(|| self.learned_ids.read().ok()?.get(&id).copied())
        };
        let index = by_path.or_else(by_id)?;
        Some((index, &self.config.projects[index]))
    }

    fn learn(&self, found: &ProjectRef, index: usize) {
        if let (Some(id), Some(_)) = (found.id(), found.path())
            && let Ok(mut map) = self.learned_ids.write()
        {
            map.entry(id).or_insert(index);
        }
    }
}

/// The `X-Gitlab-Event` values hoist acts on; everything else is stored as ignored.
pub fn event_is_used(event: &str) -> bool {
    crate::events::is_used(event)
}

/// Bounded label for metrics: attacker-chosen header values must not create series.
fn event_label(event: Option<&str>) -> &'static str {
    match event {
        Some("Pipeline Hook") => "Pipeline Hook",
        Some("Tag Push Hook") => "Tag Push Hook",
        Some("Note Hook") => "Note Hook",
        Some("Confidential Note Hook") => "Confidential Note Hook",
        Some("Job Hook") => "Job Hook",
        Some("Push Hook") => "Push Hook",
        Some("Merge Request Hook") => "Merge Request Hook",
        Some("Deployment Hook") => "Deployment Hook",
        Some(_) => "other",
        None => "none",
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn answer(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

/// The axum handler for `POST /hooks/gitlab`.
pub async fn receive(State(rx): State<Arc<Receiver>>, request: Request) -> Response {
    let started = Instant::now();
    // The peer address (absent when served without connect info, as in some tests), or
    // the sender a trusted proxy names.
    let peer: Option<IpAddr> = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let source = peer.map(|peer| {
        let forwarded = || {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
        };
        limit::sender(peer, forwarded, &rx.config.server.trusted_proxies)
    });
    let event = header(&headers, "x-gitlab-event");
    let label = event_label(event);
    if source.is_some_and(|s| !rx.failures.allows(s, started)) {
        metrics::webhook_delivery(label, "rate_limited", started.elapsed());
        return answer(
            StatusCode::TOO_MANY_REQUESTS,
            "too many refused deliveries from this address\n",
        );
    }
    let (outcome, response) = handle(&rx, &headers, event, body).await;
    if let Some(source) = source {
        match outcome {
            "accepted" | "ignored" | "duplicate" => rx.failures.succeeded(source),
            "unavailable" => {}
            _ => rx.failures.failed(source, started),
        }
    }
    metrics::webhook_delivery(label, outcome, started.elapsed());
    response
}

async fn handle(
    rx: &Receiver,
    headers: &HeaderMap,
    event: Option<&str>,
    body: Body,
) -> (&'static str, Response) {
    let limit = rx.config.server.max_body_bytes;
    let declared = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return (
            "too_large",
            answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
        );
    }
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            // to_bytes reports an exceeded limit as a length-limit error somewhere in its chain.
            let too_large = std::error::Error::source(&e).is_some_and(|s| {
                s.is::<http_body_util::LengthLimitError>() || s.to_string().contains("length limit")
            });
            if too_large {
                return (
                    "too_large",
                    answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
                );
            }
            return (
                "invalid",
                answer(StatusCode::BAD_REQUEST, "cannot read body\n"),
            );
        }
    };
    let Some(event) = event else {
        return (
            "invalid",
            answer(StatusCode::BAD_REQUEST, "missing X-Gitlab-Event header\n"),
        );
    };
    let found: ProjectRef = match ProjectRef::scan(&bytes) {
        Ok(p) => p,
        Err(_) => {
            return (
                "invalid",
                answer(StatusCode::BAD_REQUEST, "body is not a JSON object\n"),
            );
        }
    };
    let Some((index, project)) = rx.find_project(&found) else {
        tracing::warn!(
            event = label_for_log(event),
            project_id = found.id(),
            "webhook for a project hoist does not serve"
        );
        return (
            "unknown_project",
            answer(StatusCode::UNAUTHORIZED, "unauthorized\n"),
        );
    };
    let auth_headers = AuthHeaders {
        gitlab_token: headers.get("x-gitlab-token").map(|v| v.as_bytes()),
        webhook_id: header(headers, "webhook-id"),
        webhook_timestamp: header(headers, "webhook-timestamp"),
        webhook_signature: header(headers, "webhook-signature"),
    };
    if let Err(why) = auth::authenticate(
        project,
        &auth_headers,
        &bytes,
        chrono::Utc::now().timestamp(),
    ) {
        tracing::warn!(project = %project.path, reason = %why, "webhook refused: not authentic");
        return (
            "unauthorized",
            answer(StatusCode::UNAUTHORIZED, "unauthorized\n"),
        );
    }
    rx.learn(&found, index);

    let idempotency_key = match header(headers, "idempotency-key").or(auth_headers.webhook_id) {
        Some(k) if !k.is_empty() && k.len() <= 255 => k.to_string(),
        _ => format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
    };
    let used = event_is_used(event);
    let Ok(body_text) = std::str::from_utf8(&bytes) else {
        return (
            "invalid",
            answer(StatusCode::BAD_REQUEST, "body is not UTF-8\n"),
        );
    };
    let delivery = NewDelivery {
        idempotency_key,
        event: event.chars().take(64).collect(),
        project: project.path.clone(),
        received_at: crate::store::now_text(),
        state: if used {
            DeliveryState::Queued
        } else {
            DeliveryState::Ignored
        },
        body: PackedBody::pack(body_text),
    };
    match rx.writer.write(delivery).await {
        Ok(ins) => {
            let (outcome, status) = match ins.state {
                DeliveryState::Duplicate => ("duplicate", "duplicate"),
                DeliveryState::Ignored => ("ignored", "ignored"),
                _ => ("accepted", "accepted"),
            };
            tracing::debug!(delivery = ins.id, project = %project.path, outcome, "webhook stored");
            let body = format!("{{\"status\":\"{status}\",\"delivery\":{}}}\n", ins.id);
            (
                outcome,
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response(),
            )
        }
        Err(WriteError::Closed) => (
            "unavailable",
            answer(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        ),
        Err(WriteError::Store(_)) => (
            "unavailable",
            answer(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
        ),
    }
}

/// Event names in logs are bounded too.
fn label_for_log(event: &str) -> &'static str {
    event_label(Some(event))
}
