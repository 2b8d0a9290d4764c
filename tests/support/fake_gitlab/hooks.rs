//! Webhooks the fake sends: payloads shaped per shared/GITLAB.md and deliveries with GitLab's headers.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::Inner;
use super::world::{Announce, HookRec, Noteable, World, now_rfc3339};

/// One webhook to send to one hook (an event, before any attempt).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub hook_id: u64,
    pub event: String,
    pub body: Vec<u8>,
    pub idempotency_key: String,
    pub event_uuid: String,
}

/// One attempt at a delivery and the answer it got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub seq: usize,
    pub hook_id: u64,
    pub event: String,
    pub idempotency_key: String,
    pub webhook_uuid: String,
    pub body: Value,
    /// HTTP status of the answer; `None` when the request failed or the hook was disabled.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// A random UUID (v4 layout) from std's randomly seeded hasher.
pub fn uuid() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut a = RandomState::new().build_hasher();
    a.write_u8(1);
    let mut b = RandomState::new().build_hasher();
    b.write_u8(2);
    let hex = format!("{:016x}{:016x}", a.finish(), b.finish());
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn hook_time() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

fn project_json(w: &World, project_id: u64) -> Value {
    let path = w
        .project_by_id(project_id)
        .map(|p| p.path.clone())
        .unwrap_or_default();
    let (namespace, name) = path.rsplit_once('/').unwrap_or(("", &path));
    json!({
        "id": project_id,
        "name": name,
        "namespace": namespace,
        "path_with_namespace": path,
        "web_url": w.project_url(project_id),
        "default_branch": "main",
        "git_http_url": format!("{}.git", w.project_url(project_id)),
    })
}

fn commit_json(w: &World, project_id: u64, sha: &str) -> Value {
    let message = w
        .commits
        .get(sha)
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    json!({
        "id": sha,
        "message": format!("{message}\n"),
        "title": message,
        "timestamp": now_rfc3339(),
        "url": format!("{}/-/commit/{sha}", w.project_url(project_id)),
        "author": { "name": "Alice Martin", "email": "[REDACTED]" },
    })
}

fn mr_hook_json(w: &World, iid: u64) -> Value {
    let Some(m) = w.mrs.get(&iid) else {
        return Value::Null;
    };
    json!({
        "id": m.id,
        "iid": m.iid,
        "source_branch": m.source_branch,
        "target_branch": m.target_branch,
        "source_project_id": m.source_project_id,
        "target_project_id": m.project_id,
        "head_pipeline_id": m.head_pipeline_id,
        "last_commit": { "id": m.sha },
        "state": m.state,
        "title": format!("MR {}", m.iid),
        "url": format!("{}/-/merge_requests/{}", w.project_url(m.project_id), m.iid),
    })
}

fn pipeline_body(w: &World, id: u64) -> Option<(u64, Value)> {
    let p = w.pipelines.get(&id)?;
    let builds: Vec<Value> = p
        .jobs
        .iter()
        .filter_map(|jid| w.jobs.get(jid))
        .map(|j| {
            json!({
                "id": j.id,
                "stage": j.stage,
                "name": j.name,
                "status": j.status,
                "created_at": j.created_at,
                "started_at": j.started_at,
                "finished_at": j.finished_at,
                "when": j.when.as_str(),
                "manual": j.when == super::world::When::Manual,
                "allow_failure": j.allow_failure,
                "user": w.user_json(j.user_id),
                "runner": null,
                "environment": j.environment.as_ref().map(|e| json!({"name": e, "action": "start"})),
            })
        })
        .collect();
    let status = w.pipeline_status(id);
    Some((
        p.project_id,
        json!({
            "object_kind": "pipeline",
            "object_attributes": {
                "id": p.id,
                "iid": p.iid,
                "ref": p.ref_name,
                "tag": p.tag,
                "sha": p.sha,
                "before_sha": "0000000000000000000000000000000000000000",
                "source": p.source,
                "status": status,
                "detailed_status": status,
                "stages": p.stages,
                "created_at": hook_time(),
                "finished_at": null,
                "url": format!("{}/-/pipelines/{}", w.project_url(p.project_id), p.id),
            },
            "merge_request": p.mr_iid.map(|iid| mr_hook_json(w, iid)),
            "user": w.user_json(p.user_id),
            "project": project_json(w, p.project_id),
            "commit": commit_json(w, p.project_id, &p.sha),
            "builds": builds,
        }),
    ))
}

fn job_body(w: &World, id: u64) -> Option<(u64, Value)> {
    let j = w.jobs.get(&id)?;
    let p = w.pipelines.get(&j.pipeline_id)?;
    let path = w
        .project_by_id(p.project_id)
        .map(|p| p.path.clone())
        .unwrap_or_default();
    Some((
        p.project_id,
        json!({
            "object_kind": "build",
            "ref": p.ref_name,
            "tag": p.tag,
            "before_sha": "0000000000000000000000000000000000000000",
            "sha": p.sha,
            "retries_count": 0,
            "build_id": j.id,
            "build_name": j.name,
            "build_stage": j.stage,
            "build_status": j.status,
            "build_created_at": hook_time(),
            "build_started_at": j.started_at,
            "build_finished_at": j.finished_at,
            "build_allow_failure": j.allow_failure,
            "build_failure_reason": if j.status == "failed" { "script_failure" } else { "unknown_failure" },
            "pipeline_id": p.id,
            "project_id": p.project_id,
            "project_name": path.replace('/', " / "),
            "user": w.user_json(j.user_id),
            "commit": { "id": p.id, "sha": p.sha, "status": w.pipeline_status(p.id) },
            "project": project_json(w, p.project_id),
            "environment": j.environment.as_ref().map(|e| json!({"name": e, "action": "start"})),
        }),
    ))
}

fn note_body(w: &World, note_id: u64, action: &str) -> Option<(u64, Value)> {
    let n = w.notes.iter().find(|n| n.id == note_id)?;
    let author_id = w
        .users
        .iter()
        .find(|u| u.username == n.author)
        .map(|u| u.id)
        .unwrap_or(0);
    let url = w.project_url(n.project_id);
    let (noteable_type, commit_id, note_url, mr, commit) = match &n.noteable {
        Noteable::Mr(iid) => (
            "MergeRequest",
            Value::Null,
            format!("{url}/-/merge_requests/{iid}#note_{}", n.id),
            mr_hook_json(w, *iid),
            Value::Null,
        ),
        Noteable::Commit(sha) => (
            "Commit",
            json!(sha),
            format!("{url}/-/commit/{sha}#note_{}", n.id),
            Value::Null,
            commit_json(w, n.project_id, sha),
        ),
    };
    let mut body = json!({
        "object_kind": "note",
        "event_type": if n.internal { "confidential_note" } else { "note" },
        "user": w.user_json(author_id),
        "project_id": n.project_id,
        "project": project_json(w, n.project_id),
        "object_attributes": {
            "id": n.id,
            "note": n.body,
            "description": n.body,
            "noteable_type": noteable_type,
            "author_id": author_id,
            "commit_id": commit_id,
            "project_id": n.project_id,
            "system": false,
            "internal": n.internal,
            "confidential": n.internal,
            "type": null,
            "action": action,
            "created_at": hook_time(),
            "updated_at": hook_time(),
            "url": note_url,
        },
    });
    if let Some(obj) = body.as_object_mut() {
        if !mr.is_null() {
            obj.insert("merge_request".into(), mr);
        }
        if !commit.is_null() {
            obj.insert("commit".into(), commit);
        }
    }
    Some((n.project_id, body))
}

fn tag_push_body(
    w: &World,
    project_id: u64,
    tag: &str,
    before: &str,
    after: &str,
    protected: bool,
    user_id: u64,
) -> Value {
    let deleted = after.bytes().all(|b| b == b'0');
    json!({
        "object_kind": "tag_push",
        "event_name": "tag_push",
        "before": before,
        "after": after,
        "ref": format!("refs/tags/{tag}"),
        "ref_protected": protected,
        "checkout_sha": if deleted { Value::Null } else { json!(after) },
        "message": null,
        "user_id": user_id,
        "user_name": w.username(user_id),
        "user_username": w.username(user_id),
        "project_id": project_id,
        "project": project_json(w, project_id),
        "commits": [],
        "total_commits_count": 0,
    })
}

/// The event name, the project and the body for an announcement.
pub fn render(w: &World, a: &Announce) -> Option<(&'static str, u64, Value)> {
    match a {
        Announce::Pipeline(id) => pipeline_body(w, *id).map(|(p, b)| ("Pipeline Hook", p, b)),
        Announce::Job(id) => job_body(w, *id).map(|(p, b)| ("Job Hook", p, b)),
        Announce::Note(id) => note_body(w, *id, "create").map(|(p, b)| (note_event(w, *id), p, b)),
        Announce::NoteEdited(id) => {
            note_body(w, *id, "update").map(|(p, b)| (note_event(w, *id), p, b))
        }
        Announce::TagPush {
            project_id,
            tag,
            before,
            after,
            protected,
            user_id,
        } => Some((
            "Tag Push Hook",
            *project_id,
            tag_push_body(w, *project_id, tag, before, after, *protected, *user_id),
        )),
    }
}

/// Internal notes come as the `Confidential Note Hook`, to hooks that subscribed to them.
fn note_event(w: &World, note_id: u64) -> &'static str {
    if w.notes.iter().any(|n| n.id == note_id && n.internal) {
        "Confidential Note Hook"
    } else {
        "Note Hook"
    }
}

fn wants(h: &HookRec, event: &str) -> bool {
    match event {
        "Pipeline Hook" => h.pipeline_events,
        "Job Hook" => h.job_events,
        "Note Hook" => h.note_events,
        "Confidential Note Hook" => h.confidential_note_events,
        "Tag Push Hook" => h.tag_push_events,
        _ => false,
    }
}

/// The deliveries for an announcement: one per subscribed hook of the project.
pub fn outgoing(w: &World, a: &Announce) -> Vec<Outgoing> {
    let Some((event, project_id, body)) = render(w, a) else {
        return Vec::new();
    };
    outgoing_body(w, event, project_id, &body)
}

pub fn outgoing_body(w: &World, event: &str, project_id: u64, body: &Value) -> Vec<Outgoing> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let event_uuid = uuid();
    w.hooks
        .iter()
        .filter(|h| h.project_id == project_id && wants(h, event))
        .map(|h| Outgoing {
            hook_id: h.id,
            event: event.to_string(),
            body: bytes.clone(),
            idempotency_key: uuid(),
            event_uuid: event_uuid.clone(),
        })
        .collect()
}

/// Sends one attempt of `o` and records it. GitLab's rules: 10 s timeout, 2xx/3xx success,
/// four failures in a row disable the hook for a minute.
pub async fn deliver(inner: &Arc<Inner>, o: &Outgoing) -> Delivery {
    let hook = inner
        .lock()
        .hooks
        .iter()
        .find(|h| h.id == o.hook_id)
        .cloned();
    let webhook_uuid = uuid();
    let mut delivery = Delivery {
        seq: 0,
        hook_id: o.hook_id,
        event: o.event.clone(),
        idempotency_key: o.idempotency_key.clone(),
        webhook_uuid: webhook_uuid.clone(),
        body: serde_json::from_slice(&o.body).unwrap_or(Value::Null),
        status: None,
        error: None,
    };
    match hook {
        None => delivery.error = Some("hook deleted".into()),
        Some(h) if h.alert_status() != "executable" => {
            delivery.error = Some("hook temporarily disabled".into());
        }
        Some(h) => {
            let mut req = inner
                .http
                .post(&h.url)
                .timeout(Duration::from_secs(10))
                .header("Content-Type", "application/json")
                .header("User-Agent", "GitLab/19.0.0")
                .header("X-Gitlab-Event", &o.event)
                .header("X-Gitlab-Instance", &inner.base_url)
                .header("X-Gitlab-Webhook-UUID", &webhook_uuid)
                .header("X-Gitlab-Event-UUID", &o.event_uuid)
                .header("Idempotency-Key", &o.idempotency_key);
            if let Some(t) = &h.token {
                req = req.header("X-Gitlab-Token", t);
            }
            if let Some(s) = &h.signing_token {
                let key = s
                    .strip_prefix("whsec_")
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .unwrap_or_default();
                let ts = chrono::Utc::now().timestamp();
                let sig = hoist::webhook::auth::sign(&key, &o.idempotency_key, ts, &o.body);
                req = req
                    .header("webhook-id", &o.idempotency_key)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig);
            }
            let ok = match req.body(o.body.clone()).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    delivery.status = Some(status.as_u16());
                    let text = resp.text().await.unwrap_or_default();
                    crate::support::capture::capture("response", &text);
                    status.is_success() || status.is_redirection()
                }
                Err(e) => {
                    delivery.error = Some(e.without_url().to_string());
                    false
                }
            };
            let mut w = inner.lock();
            if let Some(h) = w.hooks.iter_mut().find(|h| h.id == o.hook_id) {
                if ok {
                    h.consecutive_failures = 0;
                } else {
                    h.consecutive_failures += 1;
                    if h.consecutive_failures >= 4 {
                        h.disabled_until = Some(chrono::Utc::now() + chrono::Duration::minutes(1));
                    }
                }
            }
        }
    }
    let mut log = inner.deliveries.lock().unwrap_or_else(|e| e.into_inner());
    delivery.seq = log.len();
    log.push(delivery.clone());
    delivery
}
