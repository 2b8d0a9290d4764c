//! A fake GitLab for integration tests: a stateful world over real HTTP that also sends webhooks.
//!
//! ```ignore
//! let world = FakeGitlab::start().await;             // the API at world.url(), token GITLAB_TOKEN
//! world.add_hook("acme/shop", &hoist_url, HookAuth::token(TOKEN));
//! world.set_job_action("manifest", job_action(|ctx| async move { push_index(ctx).await }));
//! let tag = world.push_tag("acme/shop", "v1.0.0", true).await; // Tag Push + Pipeline hooks
//! world.wait_for(|w| w.commit_comments(&tag.sha).len() == 2).await;
//! ```
//!
//! Model: projects (forks), members with effective access levels, tags (protected or not),
//! MRs, pipelines whose jobs move `manual → pending → running → success|failed` when
//! played (per-job duration, outcome and async action), notes, reactions, commit statuses,
//! hooks with GitLab's headers and auto-disabling, fault injection and call counting.
//! Deliveries leave one at a time in the order the changes happened, unless
//! [`FakeGitlab::set_concurrent_hooks`] lets them race like GitLab's workers.

mod api;
mod hooks;
pub mod world;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hoist::events::{JobId, PipelineId};
use serde_json::Value;
use tokio::sync::mpsc;

use world::{Announce, Behaviour, HookRec, MrRec, TagRec, World};

// Re-exports for tests; each test binary uses a different subset.
#[allow(unused_imports)]
pub use hooks::Delivery;
#[allow(unused_imports)]
pub use world::{
    BOT_ID, BOT_USERNAME, CommitStatus, DEVELOPER, GUEST, JobSpec, MAINTAINER, Note, OWNER,
    PipelineSpec, REPORTER, When,
};

/// What a running job knows about itself.
#[derive(Debug, Clone)]
pub struct JobCtx {
    pub project: String,
    pub project_id: u64,
    pub pipeline_id: PipelineId,
    pub job_id: JobId,
    pub name: String,
    pub stage: String,
    pub ref_name: String,
    pub tag: bool,
    pub sha: String,
}

/// Work a job does while `running`; an `Err` fails the job.
pub type JobAction = Arc<dyn Fn(JobCtx) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Wraps an async closure as a [`JobAction`].
pub fn job_action<F, Fut>(f: F) -> JobAction
where
    F: Fn(JobCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// How a job ends when nothing else decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Fail,
}

/// A fault for the next API call whose label (`"POST projects/:id/jobs/:id/play"`) contains a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: N` seconds; the request is not processed.
    RateLimited { retry_after: u64 },
    /// That status (e.g. 502) with an HTML body; the request is not processed.
    Status(u16),
    /// Waits, then processes the request normally.
    Delay(Duration),
    /// Processes the request at once, then waits before answering: with a client timeout
    /// shorter than this, the answer is lost although GitLab did the work (a comment exists).
    DelayAnswer(Duration),
    /// GitLab goes down for this long, starting with this call: every API call answers
    /// 503 and nothing is processed until it is over.
    Down(Duration),
}

/// Authentication a registered hook sends.
#[derive(Debug, Clone, Default)]
pub struct HookAuth {
    pub token: Option<String>,
    pub signing_token: Option<String>,
}

impl HookAuth {
    pub fn token(t: &str) -> HookAuth {
        HookAuth {
            token: Some(t.into()),
            signing_token: None,
        }
    }

    pub fn signing(whsec: &str) -> HookAuth {
        HookAuth {
            token: None,
            signing_token: Some(whsec.into()),
        }
    }
}

/// What `push_tag` created.
#[derive(Debug, Clone)]
pub struct PushedTag {
    pub project_id: u64,
    pub tag: String,
    pub sha: String,
    pub pipeline_id: PipelineId,
}

/// What `open_mr` created.
#[derive(Debug, Clone)]
pub struct OpenedMr {
    pub iid: u64,
    pub project_id: u64,
    pub source_project_id: u64,
    pub sha: String,
    pub pipeline_id: PipelineId,
}

/// A job as the world sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    pub id: JobId,
    pub name: String,
    pub stage: String,
    pub status: String,
    pub pipeline_id: PipelineId,
    /// When the job started running and finished (RFC 3339, milliseconds).
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

pub(crate) struct Inner {
    world: Mutex<World>,
    pub(crate) token: String,
    pub(crate) base_url: String,
    pub(crate) http: reqwest::Client,
    pub(crate) deliveries: Mutex<Vec<Delivery>>,
    queue: mpsc::UnboundedSender<hooks::Outgoing>,
    in_flight: AtomicUsize,
    concurrent: AtomicBool,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        // A panicking test thread must not hide the world from the others.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Queues the webhooks for `a` (call with the lock held, so order follows causality).
pub(crate) fn announce(inner: &Arc<Inner>, w: &mut World, a: Announce) {
    for o in hooks::outgoing(w, &a) {
        inner.in_flight.fetch_add(1, Ordering::SeqCst);
        if inner.queue.send(o).is_err() {
            inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Announces a job change the way GitLab does: a Job Hook, then a Pipeline Hook.
fn announce_job(inner: &Arc<Inner>, w: &mut World, job: u64) {
    announce(inner, w, Announce::Job(job));
    if let Some(p) = w.jobs.get(&job).map(|j| j.pipeline_id) {
        announce(inner, w, Announce::Pipeline(p));
    }
}

/// `POST /projects/:id/jobs/:job_id/play`.
pub(crate) fn play(inner: &Arc<Inner>, project_id: u64, job: u64) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut w = inner.lock();
    let Some(j) = w.jobs.get(&job).cloned() else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"message": "404 Not found"})),
        )
            .into_response();
    };
    if w.pipelines.get(&j.pipeline_id).map(|p| p.project_id) != Some(project_id) {
        return (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"message": "404 Not found"})),
        )
            .into_response();
    }
    if !api::may_play(&w, project_id, j.pipeline_id) {
        return (
            axum::http::StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"message": "403 Forbidden"})),
        )
            .into_response();
    }
    if j.status != "manual" {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"message": "400 Bad request - Unplayable Job"})),
        )
            .into_response();
    }
    start_job(inner, &mut w, job, BOT_ID);
    let body = w.job_json(job).unwrap_or(Value::Null);
    (axum::http::StatusCode::OK, axum::Json(body)).into_response()
}

/// Moves a job to `pending` (announced) and runs it in the background.
fn start_job(inner: &Arc<Inner>, w: &mut World, job: u64, user: u64) {
    if let Some(j) = w.jobs.get_mut(&job) {
        j.status = "pending".into();
        j.user_id = user;
    }
    announce_job(inner, w, job);
    let inner = inner.clone();
    tokio::spawn(async move { run_job(inner, job).await });
}

async fn run_job(inner: Arc<Inner>, job: u64) {
    let (pending, duration, outcome, action, ctx) = {
        let w = inner.lock();
        let (duration, outcome, action) = w.behaviour(job);
        let ctx = w.jobs.get(&job).and_then(|j| {
            let p = w.pipelines.get(&j.pipeline_id)?;
            Some(JobCtx {
                project: w.project_by_id(p.project_id)?.path.clone(),
                project_id: p.project_id,
                pipeline_id: PipelineId(p.id),
                job_id: JobId(j.id),
                name: j.name.clone(),
                stage: j.stage.clone(),
                ref_name: p.ref_name.clone(),
                tag: p.tag,
                sha: p.sha.clone(),
            })
        });
        (w.pending_delay, duration, outcome, action, ctx)
    };
    let Some(ctx) = ctx else { return };
    tokio::time::sleep(pending).await;
    {
        let mut w = inner.lock();
        if let Some(j) = w.jobs.get_mut(&job) {
            j.status = "running".into();
            j.started_at = Some(world::now_rfc3339());
        }
        announce_job(&inner, &mut w, job);
    }
    let (acted, ()) = tokio::join!(
        async {
            match action {
                Some(a) => (*a)(ctx).await,
                None => Ok(()),
            }
        },
        tokio::time::sleep(duration)
    );
    let success = acted.is_ok() && outcome == Outcome::Success;
    if let Err(e) = &acted {
        eprintln!("fake GitLab: job {job} action failed: {e}");
    }
    let mut w = inner.lock();
    if let Some(j) = w.jobs.get_mut(&job) {
        j.status = if success { "success" } else { "failed" }.into();
        j.finished_at = Some(world::now_rfc3339());
    }
    settle(&inner, &mut w, job);
}

/// After a job finished: the next stage's jobs become manual or start, or are skipped, in
/// the same step (so no hook shows the pipeline half-advanced); then the hooks go out.
fn settle(inner: &Arc<Inner>, w: &mut World, job: u64) {
    let Some(pipeline) = w.jobs.get(&job).map(|j| j.pipeline_id) else {
        return;
    };
    let (changed, to_run) = w.advance(pipeline);
    announce_job(inner, w, job);
    for id in &changed {
        if !to_run.contains(id) {
            announce_job(inner, w, *id);
        }
    }
    for id in to_run {
        let user = w
            .pipelines
            .get(&pipeline)
            .map(|p| p.user_id)
            .unwrap_or(BOT_ID);
        start_job(inner, w, id, user);
    }
}

/// The fake GitLab: its HTTP server runs until the value is dropped.
pub struct FakeGitlab {
    inner: Arc<Inner>,
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeGitlab {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Everything hoist wrote on GitLab, for the suite's secret scan.
        let w = self.world();
        let mut written: Vec<String> = w.notes.iter().map(|n| n.body.clone()).collect();
        for status in w.statuses.values().flatten() {
            written.extend(status.description.clone());
            written.extend(status.target_url.clone());
        }
        for (emoji, user) in w.reactions.values().flatten() {
            written.push(format!("{emoji} {user}"));
        }
        crate::support::capture::capture("comment", &written.join("\n"));
    }
}

impl FakeGitlab {
    /// Starts a world whose API token is `support::GITLAB_TOKEN`.
    pub async fn start() -> FakeGitlab {
        FakeGitlab::start_with_token(crate::support::GITLAB_TOKEN).await
    }

    pub async fn start_with_token(token: &str) -> FakeGitlab {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake GitLab");
        let addr = listener.local_addr().expect("fake GitLab address");
        let base_url = format!("http://{addr}");
        let (tx, mut rx) = mpsc::unbounded_channel::<hooks::Outgoing>();
        let inner = Arc::new(Inner {
            world: Mutex::new(World::new(base_url.clone())),
            token: token.to_string(),
            base_url,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("webhook client"),
            deliveries: Mutex::new(Vec::new()),
            queue: tx,
            in_flight: AtomicUsize::new(0),
            concurrent: AtomicBool::new(false),
        });
        let app = axum::Router::new()
            .fallback(api::handle)
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let sender_inner = inner.clone();
        let sender = tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                if sender_inner.concurrent.load(Ordering::SeqCst) {
                    let i = sender_inner.clone();
                    tokio::spawn(async move {
                        hooks::deliver(&i, &o).await;
                        i.in_flight.fetch_sub(1, Ordering::SeqCst);
                    });
                } else {
                    hooks::deliver(&sender_inner, &o).await;
                    sender_inner.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            }
        });
        FakeGitlab {
            inner,
            addr,
            tasks: vec![server, sender],
        }
    }

    /// The instance URL (`gitlab.url` in hoist's config); the API is under `/api/v4`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token(&self) -> &str {
        &self.inner.token
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.inner.lock()
    }

    // ---- setup ----

    /// The project's id; creates it (bot = maintainer) if new.
    pub fn project(&self, path: &str) -> u64 {
        self.world().ensure_project(path)
    }

    /// A fork of `upstream` at `path` (the bot is not a member of forks).
    pub fn fork(&self, upstream: &str, path: &str) -> u64 {
        let mut w = self.world();
        let up = w.ensure_project(upstream);
        let id = w.ensure_project(path);
        w.members.remove(&(id, BOT_ID));
        if let Some(p) = w.projects.iter_mut().find(|p| p.id == id) {
            p.forked_from = Some(up);
        }
        id
    }

    /// A user's id, creating the user if new.
    pub fn user(&self, username: &str) -> u64 {
        self.world().ensure_user(username)
    }

    /// Sets `username`'s effective access level in `project` (10 guest … 50 owner); returns the user id.
    pub fn add_member(&self, project: &str, username: &str, level: u32) -> u64 {
        let mut w = self.world();
        let p = w.ensure_project(project);
        let u = w.ensure_user(username);
        w.members.insert((p, u), level);
        u
    }

    pub fn remove_member(&self, project: &str, username: &str) {
        let mut w = self.world();
        let p = w.ensure_project(project);
        let u = w.ensure_user(username);
        w.members.remove(&(p, u));
    }

    /// Registers a hook as a person would in the UI: all four events hoist uses.
    pub fn add_hook(&self, project: &str, url: &str, auth: HookAuth) -> u64 {
        let mut w = self.world();
        let p = w.ensure_project(project);
        let id = w.id();
        w.hooks.push(HookRec {
            id,
            project_id: p,
            url: url.into(),
            token: auth.token,
            signing_token: auth.signing_token,
            pipeline_events: true,
            tag_push_events: true,
            note_events: true,
            confidential_note_events: true,
            job_events: true,
            enable_ssl_verification: false,
            consecutive_failures: 0,
            disabled_until: None,
        });
        id
    }

    /// The project's hooks as GitLab shows them (`alert_status`, `disabled_until`, …).
    pub fn hooks(&self, project: &str) -> Vec<Value> {
        let w = self.world();
        let Some(p) = w.project(project).map(|p| p.id) else {
            return Vec::new();
        };
        w.hooks
            .iter()
            .filter(|h| h.project_id == p)
            .map(HookRec::json)
            .collect()
    }

    /// A hook's secret token and signing token as stored (to check what `hook install` sent).
    pub fn hook_secrets(&self, hook_id: u64) -> Option<(Option<String>, Option<String>)> {
        self.world()
            .hooks
            .iter()
            .find(|h| h.id == hook_id)
            .map(|h| (h.token.clone(), h.signing_token.clone()))
    }

    /// Puts hook `hook_id` in `temporarily_disabled` until `until`, as GitLab does after 4
    /// failed deliveries in a row; `None` makes it `executable` again.
    pub fn set_hook_disabled_until(
        &self,
        hook_id: u64,
        until: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        let mut w = self.world();
        if let Some(h) = w.hooks.iter_mut().find(|h| h.id == hook_id) {
            h.consecutive_failures = if until.is_some() { 4 } else { 0 };
            h.disabled_until = until;
        }
    }

    /// The pipeline future tags and MRs get (default: [`PipelineSpec::release`]).
    pub fn set_pipeline_spec(&self, spec: PipelineSpec) {
        self.world().spec = spec;
    }

    /// How long a job named `name` runs (or a job by id: `JobKey::Id`).
    pub fn set_job_duration(&self, job: impl Into<JobKey>, d: Duration) {
        self.behaviour(job.into(), |b| b.duration = Some(d));
    }

    /// How a job ends (its action's `Err` fails it regardless).
    pub fn set_job_outcome(&self, job: impl Into<JobKey>, o: Outcome) {
        self.behaviour(job.into(), |b| b.outcome = Some(o));
    }

    /// Work the job does while running (e.g. push the multi-arch index).
    pub fn set_job_action(&self, job: impl Into<JobKey>, action: JobAction) {
        self.behaviour(job.into(), |b| b.action = Some(action));
    }

    /// Duration of jobs without their own (default 30 ms).
    /// The API token's scopes from now on (`api` by default).
    pub fn set_token_scopes(&self, scopes: &[&str]) {
        self.world().token_scopes = scopes.iter().map(|s| s.to_string()).collect();
    }

    /// Protected tag rules from now on: (name pattern, access level that may create them).
    pub fn set_protected_tags(&self, rules: &[(&str, u32)]) {
        self.world().protected_tags = rules.iter().map(|(n, l)| (n.to_string(), *l)).collect();
    }

    /// How long a played job stays `pending` before it runs.
    pub fn pending_delay(&self) -> Duration {
        self.world().pending_delay
    }

    pub fn set_default_job_duration(&self, d: Duration) {
        self.world().default_duration = d;
    }

    fn behaviour(&self, key: JobKey, f: impl FnOnce(&mut Behaviour)) {
        let mut w = self.world();
        let b = match key {
            JobKey::Name(n) => w.behaviours.entry(n).or_default(),
            JobKey::Id(id) => w.id_behaviours.entry(id).or_default(),
        };
        f(b);
    }

    // ---- stories ----

    /// Pushes `tag` at a new commit and starts its pipeline ([`PipelineSpec::release`] unless
    /// changed); sends the Tag Push Hook, then the Pipeline Hook (manifest in `manual`).
    pub async fn push_tag(&self, project: &str, tag: &str, protected: bool) -> PushedTag {
        let pushed = {
            let mut w = self.world();
            let p = w.ensure_project(project);
            let sha = w.new_sha(tag);
            w.commits.insert(sha.clone(), (p, format!("Release {tag}")));
            let before = w
                .tags
                .get(&(p, tag.to_string()))
                .map(|t| t.sha.clone())
                .unwrap_or_else(|| "0".repeat(40));
            w.tags.insert(
                (p, tag.to_string()),
                TagRec {
                    name: tag.into(),
                    sha: sha.clone(),
                    protected,
                    created_at: world::now_rfc3339(),
                },
            );
            let pusher = w.ensure_user("alice");
            announce(
                &self.inner,
                &mut w,
                Announce::TagPush {
                    project_id: p,
                    tag: tag.into(),
                    before,
                    after: sha.clone(),
                    protected,
                    user_id: pusher,
                },
            );
            let spec = w.spec.clone();
            let (pid, to_run) = w.create_pipeline(p, tag, true, &sha, "push", None, pusher, &spec);
            announce(&self.inner, &mut w, Announce::Pipeline(pid));
            for j in to_run {
                start_job(&self.inner, &mut w, j, pusher);
            }
            PushedTag {
                project_id: p,
                tag: tag.into(),
                sha,
                pipeline_id: PipelineId(pid),
            }
        };
        self.flush().await;
        pushed
    }

    /// Deletes a tag (Tag Push Hook with `after` all zeros, `checkout_sha: null`).
    /// Runs a new pipeline for an existing tag (GitLab's "Run pipeline" / a retried pipeline);
    /// sends its Pipeline Hook. Returns the new pipeline's id.
    pub async fn run_tag_pipeline(&self, project: &str, tag: &str) -> PipelineId {
        let pid = {
            let mut w = self.world();
            let p = w.ensure_project(project);
            let sha = w
                .tags
                .get(&(p, tag.to_string()))
                .map(|t| t.sha.clone())
                .unwrap_or_else(|| panic!("fake GitLab: no tag {tag}"));
            let user = w.ensure_user("alice");
            let spec = w.spec.clone();
            let (pid, to_run) = w.create_pipeline(p, tag, true, &sha, "web", None, user, &spec);
            announce(&self.inner, &mut w, Announce::Pipeline(pid));
            for j in to_run {
                start_job(&self.inner, &mut w, j, user);
            }
            pid
        };
        self.flush().await;
        PipelineId(pid)
    }

    pub async fn delete_tag(&self, project: &str, tag: &str) {
        {
            let mut w = self.world();
            let p = w.ensure_project(project);
            let Some(old) = w.tags.remove(&(p, tag.to_string())) else {
                return;
            };
            let pusher = w.ensure_user("alice");
            announce(
                &self.inner,
                &mut w,
                Announce::TagPush {
                    project_id: p,
                    tag: tag.into(),
                    before: old.sha,
                    after: "0".repeat(40),
                    protected: old.protected,
                    user_id: pusher,
                },
            );
        }
        self.flush().await;
    }

    /// Opens an MR into `project` from `source_project` (itself, or a fork) by `author`, with
    /// a new head commit and its `merge_request_event` pipeline; sends the Pipeline Hook.
    pub async fn open_mr(
        &self,
        project: &str,
        source_project: &str,
        branch: &str,
        author: &str,
    ) -> OpenedMr {
        let opened = {
            let mut w = self.world();
            let p = w.ensure_project(project);
            let src = w.ensure_project(source_project);
            let author_id = w.ensure_user(author);
            let sha = w.new_sha(branch);
            w.commits
                .insert(sha.clone(), (src, format!("Work on {branch}")));
            let iid = w.mrs.keys().max().copied().unwrap_or(0) + 1;
            let id = w.id();
            w.mrs.insert(
                iid,
                MrRec {
                    iid,
                    id,
                    project_id: p,
                    source_project_id: src,
                    source_branch: branch.into(),
                    target_branch: "main".into(),
                    sha: sha.clone(),
                    head_pipeline_id: None,
                    state: "opened".into(),
                    author_id,
                },
            );
            let spec = w.spec.clone();
            let ref_name = format!("refs/merge-requests/{iid}/head");
            let (pid, to_run) = w.create_pipeline(
                p,
                &ref_name,
                false,
                &sha,
                "merge_request_event",
                Some(iid),
                author_id,
                &spec,
            );
            if let Some(m) = w.mrs.get_mut(&iid) {
                m.head_pipeline_id = Some(pid);
            }
            announce(&self.inner, &mut w, Announce::Pipeline(pid));
            for j in to_run {
                start_job(&self.inner, &mut w, j, author_id);
            }
            OpenedMr {
                iid,
                project_id: p,
                source_project_id: src,
                sha,
                pipeline_id: PipelineId(pid),
            }
        };
        self.flush().await;
        opened
    }

    /// `user` comments `text` on MR `iid`; sends the Note Hook. Returns the note id.
    pub async fn comment_on_mr(&self, iid: u64, user: &str, text: &str) -> u64 {
        self.note_on_mr(iid, user, text, false).await
    }

    /// `user` writes an internal note on MR `iid`; sends the Confidential Note Hook.
    pub async fn comment_on_mr_internally(&self, iid: u64, user: &str, text: &str) -> u64 {
        self.note_on_mr(iid, user, text, true).await
    }

    async fn note_on_mr(&self, iid: u64, user: &str, text: &str, internal: bool) -> u64 {
        let id = {
            let mut w = self.world();
            let Some(project_id) = w.mrs.get(&iid).map(|m| m.project_id) else {
                panic!("fake GitLab: no MR !{iid}");
            };
            w.ensure_user(user);
            let id = w.id();
            w.notes.push(Note {
                id,
                project_id,
                noteable: world::Noteable::Mr(iid),
                author: user.into(),
                body: text.into(),
                internal,
            });
            announce(&self.inner, &mut w, Announce::Note(id));
            id
        };
        self.flush().await;
        id
    }

    /// The author edits note `note_id` to `text`; sends the Note Hook with `action: update`.
    pub async fn edit_note(&self, note_id: u64, text: &str) {
        {
            let mut w = self.world();
            let Some(n) = w.notes.iter_mut().find(|n| n.id == note_id) else {
                panic!("fake GitLab: no note {note_id}");
            };
            n.body = text.into();
            announce(&self.inner, &mut w, Announce::NoteEdited(note_id));
        }
        self.flush().await;
    }

    /// `user` comments `text` on commit `sha` (Note Hook, `noteable_type: Commit`).
    pub async fn comment_on_commit(&self, sha: &str, user: &str, text: &str) -> u64 {
        let id = {
            let mut w = self.world();
            let Some(project_id) = w.commits.get(sha).map(|(p, _)| *p) else {
                panic!("fake GitLab: no commit {sha}");
            };
            w.ensure_user(user);
            let id = w.id();
            w.notes.push(Note {
                id,
                project_id,
                noteable: world::Noteable::Commit(sha.into()),
                author: user.into(),
                body: text.into(),
                internal: false,
            });
            announce(&self.inner, &mut w, Announce::Note(id));
            id
        };
        self.flush().await;
        id
    }

    /// A person plays a manual job in GitLab's UI (job hooks follow as for the API).
    pub async fn play_as(&self, job: JobId, user: &str) -> Result<(), String> {
        {
            let mut w = self.world();
            let u = w.ensure_user(user);
            let status = w.jobs.get(&job.0).map(|j| j.status.clone());
            if status.as_deref() != Some("manual") {
                return Err(format!("job {job} is {status:?}, not manual"));
            }
            start_job(&self.inner, &mut w, job.0, u);
        }
        self.flush().await;
        Ok(())
    }

    // ---- webhooks ----

    /// Waits until every queued webhook was answered.
    pub async fn flush(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.inner.in_flight.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "fake GitLab: webhooks never flushed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Deliveries (from now on) race each other like GitLab's workers instead of leaving in order.
    pub fn set_concurrent_hooks(&self, on: bool) {
        self.inner.concurrent.store(on, Ordering::SeqCst);
    }

    /// Every delivery attempt so far, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends delivery `seq` again now: same body and `Idempotency-Key`, new `X-Gitlab-Webhook-UUID`.
    pub async fn redeliver(&self, seq: usize) -> Delivery {
        let d = self
            .deliveries()
            .get(seq)
            .cloned()
            .expect("no such delivery");
        let o = hooks::Outgoing {
            hook_id: d.hook_id,
            event: d.event.clone(),
            body: serde_json::to_vec(&d.body).unwrap_or_default(),
            idempotency_key: d.idempotency_key.clone(),
            event_uuid: hooks::uuid(),
        };
        hooks::deliver(&self.inner, &o).await
    }

    /// Sends now (bypassing the queue) a Pipeline Hook for the pipeline as it is, with the
    /// pipeline status and the named jobs' statuses overridden: a stale or reordered delivery.
    pub async fn send_pipeline_hook_as(
        &self,
        pipeline: PipelineId,
        status: &str,
        jobs: &[(&str, &str)],
    ) -> Vec<Delivery> {
        let outgoing = {
            let w = self.world();
            let Some((event, project_id, mut body)) =
                hooks::render(&w, &Announce::Pipeline(pipeline.0))
            else {
                return Vec::new();
            };
            body["object_attributes"]["status"] = status.into();
            body["object_attributes"]["detailed_status"] = status.into();
            if let Some(builds) = body["builds"].as_array_mut() {
                for b in builds {
                    for (name, st) in jobs {
                        if b["name"] == *name {
                            b["status"] = (*st).into();
                        }
                    }
                }
            }
            hooks::outgoing_body(&w, event, project_id, &body)
        };
        let mut out = Vec::new();
        for o in outgoing {
            out.push(hooks::deliver(&self.inner, &o).await);
        }
        out
    }

    /// Sends the current Pipeline Hook for a pipeline again, as a new event.
    pub async fn announce_pipeline(&self, pipeline: PipelineId) {
        {
            let mut w = self.world();
            announce(&self.inner, &mut w, Announce::Pipeline(pipeline.0));
        }
        self.flush().await;
    }

    // ---- faults and counts ----

    /// Queues a fault for the next call whose label contains `pattern` (e.g. `"play"`,
    /// `"comments"`, `"GET projects/:id/jobs/:id"`); several queue up in order.
    pub fn fault(&self, pattern: &str, fault: Fault) {
        let mut w = self.world();
        match w.faults.iter_mut().find(|(p, _)| p == pattern) {
            Some((_, q)) => q.push_back(fault),
            None => w.faults.push((pattern.to_string(), [fault].into())),
        }
    }

    /// GitLab goes down now, for `d`: every API call answers 503 until then.
    pub fn go_down(&self, d: Duration) {
        self.world().down_until = Some(std::time::Instant::now() + d);
    }

    /// Whether GitLab is down now ([`Fault::Down`], [`FakeGitlab::go_down`]).
    pub fn is_down(&self) -> bool {
        self.world()
            .down_until
            .is_some_and(|t| std::time::Instant::now() < t)
    }

    /// API calls so far whose label (`"POST projects/:id/jobs/:id/play"`) contains `pattern`,
    /// faulted attempts included.
    pub fn calls(&self, pattern: &str) -> usize {
        self.world()
            .calls
            .iter()
            .filter(|c| c.contains(pattern))
            .count()
    }

    /// Every API call's label, in order.
    pub fn call_log(&self) -> Vec<String> {
        self.world().calls.clone()
    }

    // ---- what the test reads ----

    pub fn commit_comments(&self, sha: &str) -> Vec<String> {
        self.world()
            .notes
            .iter()
            .filter(|n| n.noteable == world::Noteable::Commit(sha.to_string()))
            .map(|n| n.body.clone())
            .collect()
    }

    /// Notes on MR `iid` (people's and the bot's), oldest first.
    pub fn mr_notes(&self, iid: u64) -> Vec<Note> {
        self.world()
            .notes
            .iter()
            .filter(|n| n.noteable == world::Noteable::Mr(iid))
            .cloned()
            .collect()
    }

    /// Award emoji names on a note, in the order given.
    pub fn reactions(&self, note_id: u64) -> Vec<String> {
        self.world()
            .reactions
            .get(&note_id)
            .map(|v| v.iter().map(|(_, n)| n.clone()).collect())
            .unwrap_or_default()
    }

    /// Commit statuses posted for `sha`, oldest first.
    pub fn statuses(&self, sha: &str) -> Vec<CommitStatus> {
        self.world().statuses.get(sha).cloned().unwrap_or_default()
    }

    /// A pipeline's jobs now.
    pub fn jobs(&self, pipeline: PipelineId) -> Vec<JobView> {
        let w = self.world();
        w.pipelines
            .get(&pipeline.0)
            .map(|p| {
                p.jobs
                    .iter()
                    .filter_map(|id| w.jobs.get(id))
                    .map(|j| JobView {
                        id: JobId(j.id),
                        name: j.name.clone(),
                        stage: j.stage.clone(),
                        status: j.status.clone(),
                        pipeline_id: pipeline,
                        started_at: j.started_at.clone(),
                        finished_at: j.finished_at.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The job of `pipeline` named `name`.
    pub fn job(&self, pipeline: PipelineId, name: &str) -> JobView {
        self.jobs(pipeline)
            .into_iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("fake GitLab: pipeline {pipeline} has no job {name}"))
    }

    pub fn pipeline_status(&self, pipeline: PipelineId) -> String {
        self.world().pipeline_status(pipeline.0)
    }

    /// Waits (up to 30 s) until `cond` holds; panics with the call log otherwise.
    pub async fn wait_for(&self, cond: impl Fn(&FakeGitlab) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "fake GitLab: condition not met in 30 s; calls: {:?}",
                self.call_log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Which job a behaviour applies to: every job with that name, or one job.
#[derive(Debug, Clone)]
pub enum JobKey {
    Name(String),
    Id(u64),
}

impl From<&str> for JobKey {
    fn from(n: &str) -> JobKey {
        JobKey::Name(n.into())
    }
}

impl From<JobId> for JobKey {
    fn from(id: JobId) -> JobKey {
        JobKey::Id(id.0)
    }
}
