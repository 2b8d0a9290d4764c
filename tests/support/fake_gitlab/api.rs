//! The fake's REST API under `/api/v4`: exactly the endpoints `hoist::gitlab` calls, with GitLab's answers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::world::{
    Announce, BOT_ID, CommitStatus, DEVELOPER, HookRec, MAINTAINER, Note, Noteable, now_rfc3339,
};
use super::{Fault, Inner};

type Params = HashMap<String, String>;

fn answer(status: u16, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

fn message(status: u16, msg: &str) -> Response {
    answer(status, json!({ "message": msg }))
}

fn not_found(what: &str) -> Response {
    message(404, &format!("404 {what} Not Found"))
}

/// Query and body parameters together (form or JSON bodies; JSON scalars as text).
fn params(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Params {
    let mut out = Params::new();
    if let Some(q) = uri.query() {
        out.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if json {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            for (k, v) in map {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(k, text);
            }
        }
    } else {
        out.extend(url::form_urlencoded::parse(body).into_owned());
    }
    out
}

fn flag(p: &Params, key: &str) -> Option<bool> {
    p.get(key).map(|v| v == "true" || v == "1")
}

/// One page of `items` per GitLab's `page`/`per_page` (max 100), with its headers.
fn paged(items: Vec<Value>, p: &Params) -> Response {
    let per_page = p
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let page = p
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut resp = answer(200, Value::Array(slice));
    let h = resp.headers_mut();
    h.insert("x-page", HeaderValue::from(page));
    h.insert("x-per-page", HeaderValue::from(per_page));
    h.insert("x-total", HeaderValue::from(total));
    let next = if page * per_page < total {
        HeaderValue::from(page + 1)
    } else {
        HeaderValue::from_static("")
    };
    h.insert("x-next-page", next);
    resp
}

pub async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let Some(rest) = path.strip_prefix("/api/v4/") else {
        return message(404, "404 Not Found");
    };
    let label = format!(
        "{method} {}",
        hoist::gitlab::client::endpoint_label("", rest)
    );
    let fault = {
        let mut w = inner.lock();
        w.calls.push(label.clone());
        let fault = w.take_fault(&label);
        if let Some(Fault::Down(d)) = fault {
            w.down_until = Some(std::time::Instant::now() + d);
        }
        if w.down_until.is_some_and(|t| std::time::Instant::now() < t) {
            Some(Fault::Status(503))
        } else {
            fault
        }
    };
    match fault.clone() {
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = message(429, "Retry later");
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            return r;
        }
        Some(Fault::Status(code)) => {
            return (
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response();
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::DelayAnswer(_) | Fault::Down(_)) | None => {}
    }
    let token = headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        });
    if token.as_deref() != Some(inner.token.as_str()) {
        return message(401, "401 Unauthorized");
    }
    let segs: Vec<String> = rest.split('/').map(percent_encoding_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let p = params(&uri, &headers, &body);
    let resp = route(&inner, &method, &segs, &p);
    if let Some(Fault::DelayAnswer(d)) = fault {
        tokio::time::sleep(d).await;
    }
    resp
}

fn percent_encoding_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn route(inner: &Arc<Inner>, method: &Method, segs: &[&str], p: &Params) -> Response {
    if segs == ["user"] && method == Method::GET {
        let w = inner.lock();
        return answer(200, w.user_json(BOT_ID));
    }
    if segs == ["personal_access_tokens", "self"] && method == Method::GET {
        let w = inner.lock();
        return answer(
            200,
            json!({ "id": 7, "name": "hoist", "active": true, "revoked": false,
                    "user_id": BOT_ID, "scopes": w.token_scopes }),
        );
    }
    let ["projects", project, rest @ ..] = segs else {
        return message(404, "404 Not Found");
    };
    let project_id = match inner.lock().project(project) {
        Some(pr) => pr.id,
        None => return not_found("Project"),
    };
    let num = |s: &str| s.parse::<u64>().ok();
    match (method.clone(), rest) {
        (Method::GET, []) => {
            let w = inner.lock();
            let Some(pr) = w.project_by_id(project_id) else {
                return not_found("Project");
            };
            let (namespace, name) = pr.path.rsplit_once('/').unwrap_or(("", &pr.path));
            answer(
                200,
                json!({
                    "id": pr.id,
                    "name": name,
                    "path": name,
                    "path_with_namespace": pr.path,
                    "namespace": { "full_path": namespace },
                    "web_url": w.project_url(pr.id),
                    "default_branch": "main",
                    "forked_from_project": pr.forked_from.map(|f| json!({ "id": f })),
                }),
            )
        }
        (Method::GET, ["pipelines"]) => {
            let w = inner.lock();
            let mut list: Vec<&super::world::PipelineRec> = w
                .pipelines
                .values()
                .filter(|pl| pl.project_id == project_id)
                .filter(|pl| p.get("sha").is_none_or(|s| &pl.sha == s))
                .filter(|pl| p.get("ref").is_none_or(|r| &pl.ref_name == r))
                .collect();
            list.sort_by_key(|p| std::cmp::Reverse(p.id));
            let items = list
                .iter()
                .filter_map(|pl| w.pipeline_json(pl.id))
                .map(|mut v| {
                    // GitLab's list omits `tag` (only the single pipeline has it).
                    if let Some(o) = v.as_object_mut() {
                        o.remove("tag");
                        o.remove("user");
                    }
                    v
                })
                .collect();
            paged(items, p)
        }
        (Method::GET, ["pipelines", id]) => {
            let w = inner.lock();
            match num(id)
                .filter(|id| {
                    w.pipelines
                        .get(id)
                        .is_some_and(|pl| pl.project_id == project_id)
                })
                .and_then(|id| w.pipeline_json(id))
            {
                Some(v) => answer(200, v),
                None => message(404, "404 Not found"),
            }
        }
        (Method::GET, ["pipelines", id, "jobs"]) => {
            let w = inner.lock();
            let Some(pl) = num(id)
                .and_then(|id| w.pipelines.get(&id))
                .filter(|pl| pl.project_id == project_id)
            else {
                return message(404, "404 Not found");
            };
            let scopes: Vec<&str> = p
                .iter()
                .filter(|(k, _)| k.starts_with("scope"))
                .map(|(_, v)| v.as_str())
                .collect();
            let mut ids = pl.jobs.clone();
            ids.sort_by_key(|id| std::cmp::Reverse(*id));
            let items = ids
                .iter()
                .filter(|id| {
                    scopes.is_empty()
                        || w.jobs
                            .get(id)
                            .is_some_and(|j| scopes.contains(&j.status.as_str()))
                })
                .filter_map(|id| w.job_json(*id))
                .collect();
            paged(items, p)
        }
        (Method::GET, ["jobs", id]) => {
            let w = inner.lock();
            match num(id)
                .filter(|id| job_in(&w, *id, project_id))
                .and_then(|id| w.job_json(id))
            {
                Some(v) => answer(200, v),
                None => message(404, "404 Not found"),
            }
        }
        (Method::POST, ["jobs", id, "play"]) => match num(id) {
            Some(id) => super::play(inner, project_id, id),
            None => message(404, "404 Not found"),
        },
        (Method::GET, ["merge_requests", iid]) => {
            let w = inner.lock();
            match num(iid)
                .filter(|iid| w.mrs.get(iid).is_some_and(|m| m.project_id == project_id))
                .and_then(|iid| w.mr_json(iid))
            {
                Some(v) => answer(200, v),
                None => message(404, "404 Not found"),
            }
        }
        (Method::GET, ["repository", "tags", name]) => {
            let w = inner.lock();
            match w.tags.get(&(project_id, name.to_string())) {
                Some(t) => answer(
                    200,
                    json!({
                        "name": t.name,
                        "message": "",
                        "target": t.sha,
                        "commit": { "id": t.sha, "short_id": &t.sha[..8.min(t.sha.len())], "created_at": t.created_at },
                        "release": null,
                        "protected": t.protected,
                        "created_at": null,
                    }),
                ),
                None => message(404, "404 Tag Not Found"),
            }
        }
        (Method::GET, ["protected_tags"]) => {
            let w = inner.lock();
            let rules: Vec<Value> = w
                .protected_tags
                .iter()
                .map(|(name, level)| {
                    json!({ "name": name, "create_access_levels": [
                        { "id": 1, "access_level": level, "user_id": null, "group_id": null,
                          "access_level_description": "Maintainers" }
                    ]})
                })
                .collect();
            answer(200, Value::Array(rules))
        }
        (Method::GET, ["members", "all", user]) => {
            let w = inner.lock();
            match num(user).and_then(|u| w.role(project_id, u).map(|r| (u, r))) {
                Some((u, level)) => {
                    let mut v = w.user_json(u);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("access_level".into(), json!(level));
                    }
                    answer(200, v)
                }
                None => message(404, "404 Not found"),
            }
        }
        (Method::GET, ["repository", "commits", sha, "comments"]) => {
            let w = inner.lock();
            let list: Vec<Value> = w
                .notes
                .iter()
                .filter(|n| {
                    n.project_id == project_id && n.noteable == Noteable::Commit(sha.to_string())
                })
                .map(|n| json!({ "note": n.body, "author": { "username": n.author } }))
                .collect();
            answer(200, Value::Array(list))
        }
        (Method::GET, ["merge_requests", iid, "notes"]) => {
            let w = inner.lock();
            let iid = num(iid).unwrap_or(0);
            let list: Vec<Value> = w
                .notes
                .iter()
                .filter(|n| n.project_id == project_id && n.noteable == Noteable::Mr(iid))
                .map(|n| json!({ "id": n.id, "body": n.body, "internal": n.internal, "author": { "username": n.author } }))
                .collect();
            answer(200, Value::Array(list))
        }
        (Method::POST, ["repository", "commits", sha, "comments"]) => {
            let Some(note) = p.get("note").filter(|n| !n.is_empty()) else {
                return message(400, "400 Bad request - note is missing");
            };
            let mut w = inner.lock();
            if !w.commits.contains_key(*sha) {
                return message(404, "404 Commit Not Found");
            }
            let id = w.id();
            w.notes.push(Note {
                id,
                project_id,
                noteable: Noteable::Commit(sha.to_string()),
                author: super::world::BOT_USERNAME.into(),
                body: note.clone(),
                internal: false,
            });
            super::announce(inner, &mut w, Announce::Note(id));
            answer(
                201,
                json!({ "note": note, "author": w.user_json(BOT_ID), "created_at": now_rfc3339() }),
            )
        }
        (Method::POST, ["statuses", sha]) => {
            let state = p.get("state").cloned().unwrap_or_default();
            if ![
                "pending", "running", "success", "failed", "canceled", "skipped",
            ]
            .contains(&state.as_str())
            {
                return message(400, "400 Bad request - state does not have a valid value");
            }
            let name = p.get("name").cloned().unwrap_or_else(|| "default".into());
            let mut w = inner.lock();
            if !w.commits.contains_key(*sha) {
                return message(404, "404 Commit Not Found");
            }
            let list = w.statuses.entry(sha.to_string()).or_default();
            // GitLab refuses a "transition" to the state the status already has.
            if let Some(last) = list.iter().rev().find(|s| s.name == name)
                && last.state == state
            {
                return message(
                    400,
                    &format!("Cannot transition status via :{state} from :{state}"),
                );
            }
            list.push(CommitStatus {
                name: name.clone(),
                state: state.clone(),
                target_url: p.get("target_url").cloned(),
                description: p.get("description").cloned(),
            });
            let id = w.id();
            answer(
                201,
                json!({ "id": id, "sha": sha, "status": state, "name": name,
                        "target_url": p.get("target_url"), "description": p.get("description") }),
            )
        }
        (Method::POST, ["merge_requests", iid, "notes"]) => {
            let Some(text) = p.get("body").filter(|b| !b.is_empty()) else {
                return message(400, "400 Bad request - body is missing");
            };
            let internal = flag(p, "internal").unwrap_or(false);
            let mut w = inner.lock();
            let Some(iid) =
                num(iid).filter(|i| w.mrs.get(i).is_some_and(|m| m.project_id == project_id))
            else {
                return message(404, "404 Not found");
            };
            let id = w.id();
            w.notes.push(Note {
                id,
                project_id,
                noteable: Noteable::Mr(iid),
                author: super::world::BOT_USERNAME.into(),
                body: text.clone(),
                internal,
            });
            // GitLab announces the bot's own notes too.
            super::announce(inner, &mut w, Announce::Note(id));
            answer(
                201,
                json!({ "id": id, "body": text, "author": w.user_json(BOT_ID), "system": false,
                        "internal": internal, "confidential": internal,
                        "noteable_type": "MergeRequest", "noteable_iid": iid, "created_at": now_rfc3339() }),
            )
        }
        (Method::POST, ["merge_requests", iid, "notes", note, "award_emoji"]) => {
            let name = p.get("name").cloned().unwrap_or_default();
            let mut w = inner.lock();
            let note_ok = num(note).is_some_and(|n| {
                w.notes
                    .iter()
                    .any(|x| x.id == n && x.noteable == Noteable::Mr(num(iid).unwrap_or(0)))
            });
            if !note_ok {
                return message(404, "404 Not found");
            }
            let note = num(note).unwrap_or(0);
            let bot = super::world::BOT_USERNAME.to_string();
            let list = w.reactions.entry(note).or_default();
            if list.iter().any(|(u, n)| u == &bot && n == &name) {
                return message(404, "404 Award Emoji Name has already been taken");
            }
            list.push((bot, name.clone()));
            let id = w.id();
            answer(
                201,
                json!({ "id": id, "name": name, "user": w.user_json(BOT_ID),
                        "awardable_id": note, "awardable_type": "Note" }),
            )
        }
        (Method::GET, ["hooks"]) => {
            let w = inner.lock();
            let items = w
                .hooks
                .iter()
                .filter(|h| h.project_id == project_id)
                .map(HookRec::json)
                .collect();
            paged(items, p)
        }
        (Method::POST, ["hooks"]) => {
            let mut w = inner.lock();
            if w.role(project_id, BOT_ID).unwrap_or(0) < MAINTAINER {
                return message(403, "403 Forbidden");
            }
            let Some(url) = p.get("url").cloned() else {
                return message(400, "400 Bad request - url is missing");
            };
            let id = w.id();
            let hook = HookRec {
                id,
                project_id,
                url,
                token: p.get("token").cloned().filter(|t| !t.is_empty()),
                signing_token: p.get("signing_token").cloned().filter(|t| !t.is_empty()),
                pipeline_events: flag(p, "pipeline_events").unwrap_or(false),
                tag_push_events: flag(p, "tag_push_events").unwrap_or(false),
                note_events: flag(p, "note_events").unwrap_or(false),
                confidential_note_events: flag(p, "confidential_note_events").unwrap_or(false),
                job_events: flag(p, "job_events").unwrap_or(false),
                enable_ssl_verification: flag(p, "enable_ssl_verification").unwrap_or(true),
                consecutive_failures: 0,
                disabled_until: None,
            };
            let v = hook.json();
            w.hooks.push(hook);
            answer(201, v)
        }
        (Method::PUT, ["hooks", id]) => {
            let mut w = inner.lock();
            if w.role(project_id, BOT_ID).unwrap_or(0) < MAINTAINER {
                return message(403, "403 Forbidden");
            }
            let Some(h) = num(id).and_then(|id| {
                w.hooks
                    .iter_mut()
                    .find(|h| h.id == id && h.project_id == project_id)
            }) else {
                return message(404, "404 Not found");
            };
            if let Some(url) = p.get("url") {
                if url != &h.url {
                    // Changing the URL resets the secret token, as GitLab does.
                    h.token = None;
                }
                h.url = url.clone();
            }
            if let Some(t) = p.get("token") {
                h.token = Some(t.clone()).filter(|t| !t.is_empty());
            }
            if let Some(t) = p.get("signing_token") {
                h.signing_token = Some(t.clone()).filter(|t| !t.is_empty());
            }
            for (key, field) in [
                ("pipeline_events", &mut h.pipeline_events),
                ("tag_push_events", &mut h.tag_push_events),
                ("note_events", &mut h.note_events),
                ("confidential_note_events", &mut h.confidential_note_events),
                ("job_events", &mut h.job_events),
                ("enable_ssl_verification", &mut h.enable_ssl_verification),
            ] {
                if let Some(v) = flag(p, key) {
                    *field = v;
                }
            }
            // Saving a hook re-enables it.
            h.consecutive_failures = 0;
            h.disabled_until = None;
            answer(200, h.json())
        }
        _ => message(404, "404 Not Found"),
    }
}

fn job_in(w: &super::world::World, job: u64, project_id: u64) -> bool {
    w.jobs
        .get(&job)
        .and_then(|j| w.pipelines.get(&j.pipeline_id))
        .is_some_and(|p| p.project_id == project_id)
}

/// Whether the bot may play a job of this pipeline: developer, and maintainer on a protected tag.
pub fn may_play(w: &super::world::World, project_id: u64, pipeline_id: u64) -> bool {
    let role = w.role(project_id, BOT_ID).unwrap_or(0);
    let protected_tag = w.pipelines.get(&pipeline_id).is_some_and(|p| {
        p.tag
            && w.tags
                .get(&(project_id, p.ref_name.clone()))
                .is_some_and(|t| t.protected)
    });
    role >= DEVELOPER && (!protected_tag || role >= MAINTAINER)
}
