//! The HTTP surface: webhook receiver, health, metrics, the JSON API and the dashboard.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::config::Config;
use crate::store::{DeliveryState, Store};
use crate::webhook::{self, Receiver};

mod dashboard;

/// Everything the handlers share.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub docker: Option<bollard::Docker>,
    /// The run engine (absent in intake-only tests).
    pub engine: Option<Arc<crate::engine::Engine>>,
}

/// Builds the router: `/hooks/gitlab` is authenticated per project, `/`, `/api/*` and `/metrics` by `api_token`.
pub fn router(state: Arc<AppState>, receiver: Arc<Receiver>) -> Router {
    let protected = Router::new()
        .route("/", get(dashboard::show))
        .route("/metrics", get(metrics))
        .route("/api/v1/deliveries", get(deliveries))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/deploys", post(deploys))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_token,
        ))
        .with_state(state.clone());
    let open = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let hooks = Router::new()
        .route("/hooks/gitlab", post(webhook::receive))
        .with_state(receiver);
    protected.merge(open).merge(hooks)
}

async fn require_api_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &state.config.server.api_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes);
        if webhook::auth::verify_token(expected.expose().as_bytes(), given).is_err() {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "unauthorized\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut problems = Vec::new();
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("store: {e}")),
        Err(_) => problems.push("store: no answer within 2s".to_string()),
    }
    match &state.docker {
        None => problems.push("docker: not configured".to_string()),
        Some(docker) => match tokio::time::timeout(Duration::from_secs(2), docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(format!("docker: {e}")),
            Err(_) => problems.push("docker: no answer within 2s".to_string()),
        },
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

/// `limit` defaults to 50 and is clamped to 1..=1000 (SPEC §3).
pub fn clamp_limit(limit: Option<i64>) -> i64 {
    limit.unwrap_or(50).clamp(1, 1000)
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    state: Option<String>,
    limit: Option<i64>,
}

async fn deliveries(
    State(state): State<Arc<AppState>>,
    Query(q): Query<DeliveriesQuery>,
) -> Response {
    let filter = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match DeliveryState::parse(s) {
            Some(st) => Some(st),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    "state must be queued, processed, ignored or duplicate\n",
                )
                    .into_response();
            }
        },
    };
    match state.store.deliveries(filter, clamp_limit(q.limit)).await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot list deliveries");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

#[derive(Deserialize)]
struct RunsQuery {
    project: Option<String>,
    env: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
}

async fn runs(State(state): State<Arc<AppState>>, Query(q): Query<RunsQuery>) -> Response {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let (project, env, run_state) = (nonempty(&q.project), nonempty(&q.env), nonempty(&q.state));
    match state
        .store
        .runs(
            project.as_deref(),
            env.as_deref(),
            run_state.as_deref(),
            clamp_limit(q.limit),
        )
        .await
    {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot list runs");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

async fn run(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Response {
    match state.store.run(id).await {
        Ok(Some(row)) => axum::Json(row).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such run\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read run");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

async fn deploys(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    // Deploys are never open to whoever reaches the port (GitLab must reach the webhook,
    // so hoist is often on the internet): without `api_token` the endpoint is off.
    if state.config.server.api_token.is_none() {
        return (
            StatusCode::FORBIDDEN,
            "the deploy API is off: set server.api_token in hoist.toml (hoist deploy sends it)\n",
        )
            .into_response();
    }
    let Some(engine) = &state.engine else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the run engine is not running\n",
        )
            .into_response();
    };
    let request: crate::engine::DeployRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("bad deploy request: {e}\n"),
            )
                .into_response();
        }
    };
    match engine.request_deploy(&request).await {
        Ok(run_id) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "run_id": run_id })),
        )
            .into_response(),
        Err(crate::engine::RequestError::BadRequest(m)) => {
            (StatusCode::BAD_REQUEST, format!("{m}\n")).into_response()
        }
        Err(crate::engine::RequestError::Unavailable(m)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{m}\n")).into_response()
        }
    }
}
