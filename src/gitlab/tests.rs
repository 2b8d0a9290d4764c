//! The client against a tiny scripted axum server on 127.0.0.1: retries, timeouts, error mapping, metrics.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::*;

const TOKEN: &str = "glpat-unit-Secret-77";

/// One scripted answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    retry_after: Option<u64>,
    delay: Duration,
}

fn ok(body: &str) -> Answer {
    Answer {
        status: 200,
        body: body.into(),
        retry_after: None,
        delay: Duration::ZERO,
    }
}

fn status(code: u16, body: &str) -> Answer {
    Answer {
        status: code,
        ..ok(body)
    }
}

/// A request as the server saw it: URI, body, `PRIVATE-TOKEN`, arrival.
type Seen = (String, String, Option<String>, Instant);

#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Answer>>,
    seen: Mutex<Vec<Seen>>,
}

async fn answer(
    State(s): State<Arc<Script>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Ok(mut seen) = s.seen.lock() {
        seen.push((
            uri.to_string(),
            String::from_utf8_lossy(&body).into_owned(),
            token,
            Instant::now(),
        ));
    }
    let next = s.answers.lock().ok().and_then(|mut a| a.pop_front());
    let a = next.unwrap_or_else(|| status(500, r#"{"message":"script exhausted"}"#));
    tokio::time::sleep(a.delay).await;
    let mut resp = (
        StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        a.body,
    )
        .into_response();
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = a.retry_after {
        resp.headers_mut()
            .insert("retry-after", http::HeaderValue::from(secs));
    }
    resp
}

async fn serve(answers: Vec<Answer>) -> (HttpClient, Arc<Script>) {
    let script = Arc::new(Script {
        answers: Mutex::new(answers.into()),
        seen: Mutex::default(),
    });
    let app = Router::new().fallback(answer).with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = HttpClient::with_policy(&format!("http://{addr}"), Secret::new(TOKEN), fast())
        .expect("client");
    (client, script)
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(2000),
        total_budget: Duration::from_secs(10),
        timeout: Duration::from_millis(300),
    }
}

const JOB: &str = r#"{"id":705,"name":"manifest","stage":"manifest","status":"pending","allow_failure":false,
  "web_url":"http://gl/acme/shop/-/jobs/705","pipeline":{"id":42,"status":"running"},"future":{"x":1}}"#;

fn no_token(e: &GitlabError) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(TOKEN), "token leaked: {text}");
}

#[tokio::test]
async fn rate_limit_waits_retry_after_then_succeeds() {
    let (c, s) = serve(vec![
        Answer {
            retry_after: Some(1),
            ..status(429, r#"{"message":"Retry later"}"#)
        },
        ok(JOB),
    ])
    .await;
    let job = c
        .play_job("acme/shop", JobId(705))
        .await
        .expect("played after the 429");
    assert_eq!(job.id, JobId(705));
    assert_eq!(job.pipeline_id, PipelineId(42));
    assert_eq!(job.status, Status::Pending);
    let seen = s.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].3.duration_since(seen[0].3) >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured"
    );
    assert!(
        seen[0]
            .0
            .starts_with("/api/v4/projects/acme%2Fshop/jobs/705/play")
    );
    assert_eq!(seen[0].2.as_deref(), Some(TOKEN));
}

#[tokio::test]
async fn bad_gateway_twice_then_ok() {
    let (c, s) = serve(vec![
        status(502, "<html>bad gateway</html>"),
        status(502, "<html>bad gateway</html>"),
        ok(JOB),
    ])
    .await;
    let job = c.job("101", JobId(705)).await.expect("third attempt");
    assert_eq!(job.name, "manifest");
    assert_eq!(s.seen.lock().expect("seen").len(), 3);
}

#[tokio::test]
async fn retries_are_bounded() {
    let (c, s) = serve(vec![status(503, "{}"); 10]).await;
    let err = c.job("101", JobId(1)).await.expect_err("exhausted");
    assert!(matches!(err, GitlabError::Transient(_)), "{err:?}");
    assert_eq!(s.seen.lock().expect("seen").len(), 5);
    no_token(&err);
}

#[tokio::test]
async fn slow_get_times_out_and_is_retried_then_transient() {
    let slow = Answer {
        delay: Duration::from_millis(1000),
        ..ok(JOB)
    };
    let (c, s) = serve(vec![slow; 5]).await;
    let started = Instant::now();
    let err = c.job("101", JobId(705)).await.expect_err("timeouts");
    assert!(
        matches!(err, GitlabError::Transient(ref m) if m.contains("timed out")),
        "{err:?}"
    );
    assert_eq!(s.seen.lock().expect("seen").len(), 5);
    assert!(started.elapsed() < Duration::from_secs(5));
    no_token(&err);
}

#[tokio::test]
async fn slow_post_is_not_retried() {
    let slow = Answer {
        delay: Duration::from_millis(1000),
        ..ok(r#"{"id":1,"note":"x"}"#)
    };
    let (c, s) = serve(vec![slow.clone(), slow]).await;
    let err = c
        .comment_on_commit("acme/shop", &CommitSha::from("abc"), "Deploying")
        .await
        .expect_err("timed out");
    assert!(matches!(err, GitlabError::Transient(_)), "{err:?}");
    assert_eq!(
        s.seen.lock().expect("seen").len(),
        1,
        "a comment whose answer was lost must not be posted again"
    );
}

#[tokio::test]
async fn bad_gateway_on_post_is_retried() {
    let (c, s) = serve(vec![
        status(502, "bad gateway"),
        ok(r#"{"note":"Deploying","author":{"id":1}}"#),
    ])
    .await;
    c.comment_on_commit("acme/shop", &CommitSha::from("abc"), "Deploying")
        .await
        .expect("posted on the second attempt");
    let seen = s.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].1.contains("note=Deploying"), "{}", seen[1].1);
}

#[test]
fn the_trait_is_object_safe() {
    let c =
        HttpClient::with_policy("http://127.0.0.1:9", Secret::new(TOKEN), fast()).expect("client");
    let shared: Arc<dyn GitLab> = Arc::new(c);
    drop(shared);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let c = HttpClient::with_policy(
        &format!("http://127.0.0.1:{port}"),
        Secret::new(TOKEN),
        fast(),
    )
    .expect("constructing never contacts GitLab");
    let err = c.current_user().await.expect_err("nobody listens");
    assert!(matches!(err, GitlabError::Transient(_)), "{err:?}");
    no_token(&err);
}

#[tokio::test]
async fn statuses_map_to_errors() {
    let (c, _s) = serve(vec![
        status(404, r#"{"message":"404 Job Not Found"}"#),
        status(400, r#"{"message":"400 Bad request - Unplayable Job"}"#),
        status(403, r#"{"message":"403 Forbidden"}"#),
        status(401, r#"{"message":"401 Unauthorized"}"#),
        status(422, r#"{"message":{"url":["is blocked"]}}"#),
        ok("not json"),
    ])
    .await;
    let p = "acme/shop";
    let e1 = c.play_job(p, JobId(1)).await.expect_err("404");
    assert_eq!(e1, GitlabError::NotFound("404 Job Not Found".into()));
    let e2 = c.play_job(p, JobId(1)).await.expect_err("400");
    assert!(
        matches!(e2, GitlabError::Unplayable(ref m) if m.contains("Unplayable Job")),
        "{e2:?}"
    );
    let e3 = c.play_job(p, JobId(1)).await.expect_err("403");
    assert!(matches!(e3, GitlabError::Forbidden(_)), "{e3:?}");
    let e4 = c.play_job(p, JobId(1)).await.expect_err("401");
    assert_eq!(e4, GitlabError::Unauthorized);
    let e5 = c
        .create_hook(p, &HookSpec::for_hoist("http://x"))
        .await
        .expect_err("422");
    assert!(
        matches!(e5, GitlabError::BadRequest(ref m) if m.contains("blocked")),
        "{e5:?}"
    );
    let e6 = c.play_job(p, JobId(1)).await.expect_err("not json");
    assert!(matches!(e6, GitlabError::Protocol(_)), "{e6:?}");
    for e in [e1, e2, e3, e4, e5, e6] {
        no_token(&e);
    }
}

#[tokio::test]
async fn member_role_not_a_member_is_none() {
    let (c, _s) = serve(vec![
        ok(r#"{"id":7,"username":"dev","access_level":30}"#),
        status(404, r#"{"message":"404 Not found"}"#),
        status(404, r#"{"message":"404 Project Not Found"}"#),
    ])
    .await;
    assert_eq!(c.member_role("acme/shop", UserId(7)).await, Ok(Some(30)));
    assert_eq!(c.member_role("acme/shop", UserId(8)).await, Ok(None));
    assert!(matches!(
        c.member_role("acme/nope", UserId(8)).await,
        Err(GitlabError::NotFound(_))
    ));
}

#[tokio::test]
async fn hook_edit_sends_tokens_and_signing_token() {
    let (c, s) = serve(vec![ok(
        r#"{"id":3,"url":"https://hoist/hooks/gitlab","pipeline_events":true,"tag_push_events":true,
            "note_events":true,"job_events":true,"enable_ssl_verification":true,
            "alert_status":"temporarily_disabled","disabled_until":"2026-11-28T22:00:00Z"}"#,
    )])
    .await;
    let spec = HookSpec {
        token: Some(Secret::new("tok-hook")),
        signing_token: Some(Secret::new("whsec_abc")),
        ..HookSpec::for_hoist("https://hoist/hooks/gitlab")
    };
    assert!(!format!("{spec:?}").contains("tok-hook"));
    let hook = c
        .edit_hook("acme/shop", HookId(3), &spec)
        .await
        .expect("edited");
    assert_eq!(hook.alert_status.as_deref(), Some("temporarily_disabled"));
    let seen = s.seen.lock().expect("seen").clone();
    assert!(
        seen[0]
            .0
            .starts_with("/api/v4/projects/acme%2Fshop/hooks/3"),
        "{}",
        seen[0].0
    );
    let body: serde_json::Value = serde_json::from_str(&seen[0].1).expect("json body");
    assert_eq!(body["token"], "tok-hook");
    assert_eq!(body["signing_token"], "whsec_abc");
    assert_eq!(body["job_events"], true);
}

#[tokio::test]
async fn status_description_is_truncated() {
    let (c, s) = serve(vec![ok(r#"{"id":1,"status":"running"}"#)]).await;
    let long = "é".repeat(300);
    c.set_commit_status(
        "101",
        &CommitSha::from("abc"),
        CommitState::Running,
        "hoist/production",
        Some("http://hoist/runs/1"),
        &long,
    )
    .await
    .expect("status set");
    let seen = s.seen.lock().expect("seen").clone();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(seen[0].1.as_bytes())
        .into_owned()
        .collect();
    let desc = form
        .iter()
        .find(|(k, _)| k == "description")
        .map(|(_, v)| v.clone())
        .expect("description sent");
    assert!(desc.chars().count() <= STATUS_DESCRIPTION_MAX && desc.len() <= 255);
    assert!(form.iter().any(|(k, v)| k == "state" && v == "running"));
}

#[tokio::test]
async fn pipeline_jobs_reads_every_page() {
    let page = |from: u64, n: u64| {
        let jobs: Vec<String> = (from..from + n)
            .map(|i| format!(r#"{{"id":{i},"name":"j{i}","stage":"s","status":"success","pipeline":{{"id":9}}}}"#))
            .collect();
        ok(&format!("[{}]", jobs.join(",")))
    };
    let (c, s) = serve(vec![page(1, 100), page(101, 20)]).await;
    let jobs = c
        .pipeline_jobs("acme/shop", PipelineId(9))
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 120);
    let seen = s.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].0.contains("page=2"), "{}", seen[1].0);
    assert!(seen[0].0.contains("include_retried=false"), "{}", seen[0].0);
}

#[tokio::test]
async fn every_attempt_is_counted() {
    let handle = crate::metrics::install();
    let (c, _s) = serve(vec![
        status(503, "{}"),
        status(503, "{}"),
        ok(r#"{"name":"v9.9.9","commit":{"id":"abc","created_at":"2026-01-01T00:00:00Z"},"protected":true,"created_at":null}"#),
    ])
    .await;
    let tag = c.tag("acme/shop", "v9.9.9").await.expect("tag");
    assert!(tag.protected);
    assert_eq!(tag.commit_sha, CommitSha::from("abc"));
    assert_eq!(tag.created_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    let text = handle.render();
    let line = |status: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("hoist_gitlab_requests_total")
                    && l.contains("endpoint=\"projects/:id/repository/tags/:name\"")
                    && l.contains(&format!("status=\"{status}\""))
            })
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(line("503").ends_with(" 2"), "{text}");
    assert!(line("200").ends_with(" 1"), "{text}");
}
