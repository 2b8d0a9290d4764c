//! The fake GitLab's state: projects, members, tags, MRs, pipelines and their jobs, notes, hooks.
//!
//! Plain data and the rules that move it (stage progression, pipeline status); no I/O.
//! Callers change it under one lock and queue the webhooks before releasing it, so
//! deliveries leave in causal order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Fault, JobAction, Outcome};

pub const BOT_ID: u64 = 1;
pub const BOT_USERNAME: &str = "hoist-bot";

pub const GUEST: u32 = 10;
pub const REPORTER: u32 = 20;
pub const DEVELOPER: u32 = 30;
pub const MAINTAINER: u32 = 40;
pub const OWNER: u32 = 50;

#[derive(Debug, Clone)]
pub struct UserRec {
    pub id: u64,
    pub username: String,
}

#[derive(Debug, Clone)]
pub struct ProjectRec {
    pub id: u64,
    pub path: String,
    pub forked_from: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct TagRec {
    pub name: String,
    pub sha: String,
    pub protected: bool,
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub struct MrRec {
    pub iid: u64,
    pub id: u64,
    pub project_id: u64,
    pub source_project_id: u64,
    pub source_branch: String,
    pub target_branch: String,
    pub sha: String,
    pub head_pipeline_id: Option<u64>,
    pub state: String,
    pub author_id: u64,
}

#[derive(Debug, Clone)]
pub struct PipelineRec {
    pub id: u64,
    pub iid: u64,
    pub project_id: u64,
    pub ref_name: String,
    pub tag: bool,
    pub sha: String,
    pub source: String,
    pub stages: Vec<String>,
    pub jobs: Vec<u64>,
    pub mr_iid: Option<u64>,
    pub user_id: u64,
    pub created_at: String,
}

/// When a job starts: by itself after the earlier stages, or when someone plays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    OnSuccess,
    Manual,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobRec {
    pub id: u64,
    pub pipeline_id: u64,
    pub name: String,
    pub stage: String,
    pub status: String,
    pub when: When,
    pub allow_failure: bool,
    pub environment: Option<String>,
    pub user_id: u64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// What a note hangs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noteable {
    Mr(u64),
    Commit(String),
}

/// A note (commit comment or MR note) as stored.
#[derive(Debug, Clone)]
pub struct Note {
    pub id: u64,
    pub project_id: u64,
    pub noteable: Noteable,
    pub author: String,
    pub body: String,
    /// An internal note (GitLab's "confidential" comment): only members see it, and its
    /// hook is the `Confidential Note Hook`.
    pub internal: bool,
}

/// A commit status as posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub name: String,
    pub state: String,
    pub target_url: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HookRec {
    pub id: u64,
    pub project_id: u64,
    pub url: String,
    pub token: Option<String>,
    pub signing_token: Option<String>,
    pub pipeline_events: bool,
    pub tag_push_events: bool,
    pub note_events: bool,
    /// GitLab's "Confidential comments" trigger, apart from `note_events`.
    pub confidential_note_events: bool,
    pub job_events: bool,
    pub enable_ssl_verification: bool,
    pub consecutive_failures: u32,
    pub disabled_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl HookRec {
    pub fn alert_status(&self) -> &'static str {
        match self.disabled_until {
            Some(until) if until > chrono::Utc::now() => "temporarily_disabled",
            _ => "executable",
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "project_id": self.project_id,
            "push_events": false,
            "pipeline_events": self.pipeline_events,
            "tag_push_events": self.tag_push_events,
            "note_events": self.note_events,
            "confidential_note_events": self.confidential_note_events,
            "job_events": self.job_events,
            "enable_ssl_verification": self.enable_ssl_verification,
            "alert_status": self.alert_status(),
            "disabled_until": self.disabled_until.map(|d| d.to_rfc3339()),
            "created_at": "2026-01-01T00:00:00Z",
        })
    }
}

/// A job of a pipeline to create.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub stage: String,
    pub when: When,
    pub allow_failure: bool,
    /// Status at creation (e.g. `success` for builds that already ran); `None` = by the rules.
    pub initial: Option<String>,
    pub environment: Option<String>,
}

impl JobSpec {
    /// A job that already succeeded when the pipeline is created.
    pub fn done(stage: &str, name: &str) -> JobSpec {
        JobSpec {
            name: name.into(),
            stage: stage.into(),
            when: When::OnSuccess,
            allow_failure: false,
            initial: Some("success".into()),
            environment: None,
        }
    }

    /// A job that runs by itself once the earlier stages succeeded.
    pub fn auto(stage: &str, name: &str) -> JobSpec {
        JobSpec {
            initial: None,
            ..JobSpec::done(stage, name)
        }
    }

    /// A blocking manual job (`when: manual`, `allow_failure: false`).
    pub fn manual(stage: &str, name: &str) -> JobSpec {
        JobSpec {
            when: When::Manual,
            ..JobSpec::auto(stage, name)
        }
    }

    pub fn environment(mut self, env: &str) -> JobSpec {
        self.environment = Some(env.into());
        self
    }

    pub fn allow_failure(mut self) -> JobSpec {
        self.allow_failure = true;
        self
    }
}

/// The jobs of a pipeline, in stage order.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub jobs: Vec<JobSpec>,
}

impl PipelineSpec {
    /// The release pipeline of the story: builds done, `manifest` then `deploy` manual.
    pub fn release() -> PipelineSpec {
        PipelineSpec {
            jobs: vec![
                JobSpec::done("build", "build-amd64"),
                JobSpec::done("build", "build-arm64"),
                JobSpec::manual("manifest", "manifest"),
                JobSpec::manual("deploy", "deploy").environment("production"),
            ],
        }
    }
}

/// How a job behaves when it runs.
#[derive(Clone, Default)]
pub struct Behaviour {
    pub duration: Option<Duration>,
    pub outcome: Option<Outcome>,
    pub action: Option<JobAction>,
}

/// Something GitLab announces through webhooks.
#[derive(Debug, Clone)]
pub enum Announce {
    Pipeline(u64),
    Job(u64),
    TagPush {
        project_id: u64,
        tag: String,
        before: String,
        after: String,
        protected: bool,
        user_id: u64,
    },
    Note(u64),
    /// An edited note: the Note Hook again, with `action: update`.
    NoteEdited(u64),
}

/// Everything the fake knows.
pub struct World {
    pub base_url: String,
    pub next_id: u64,
    pub users: Vec<UserRec>,
    pub projects: Vec<ProjectRec>,
    pub members: HashMap<(u64, u64), u32>,
    pub tags: HashMap<(u64, String), TagRec>,
    pub commits: HashMap<String, (u64, String)>,
    pub mrs: BTreeMap<u64, MrRec>,
    pub pipelines: BTreeMap<u64, PipelineRec>,
    pub jobs: BTreeMap<u64, JobRec>,
    pub notes: Vec<Note>,
    pub reactions: HashMap<u64, Vec<(String, String)>>,
    pub statuses: HashMap<String, Vec<CommitStatus>>,
    pub hooks: Vec<HookRec>,
    pub faults: Vec<(String, VecDeque<Fault>)>,
    /// GitLab answers 503 to every API call until then ([`Fault::Down`]).
    pub down_until: Option<std::time::Instant>,
    pub calls: Vec<String>,
    pub behaviours: HashMap<String, Behaviour>,
    pub id_behaviours: HashMap<u64, Behaviour>,
    pub default_duration: Duration,
    pub pending_delay: Duration,
    pub spec: PipelineSpec,
    /// The token's scopes (`GET /personal_access_tokens/self`).
    pub token_scopes: Vec<String>,
    /// Protected tag rules of every project: (name pattern, access level allowed to create).
    pub protected_tags: Vec<(String, u32)>,
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl World {
    pub fn new(base_url: String) -> World {
        World {
            base_url,
            next_id: 1000,
            users: vec![UserRec {
                id: BOT_ID,
                username: BOT_USERNAME.into(),
            }],
            projects: Vec::new(),
            members: HashMap::new(),
            tags: HashMap::new(),
            commits: HashMap::new(),
            mrs: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            jobs: BTreeMap::new(),
            notes: Vec::new(),
            reactions: HashMap::new(),
            statuses: HashMap::new(),
            hooks: Vec::new(),
            faults: Vec::new(),
            down_until: None,
            calls: Vec::new(),
            behaviours: HashMap::new(),
            id_behaviours: HashMap::new(),
            default_duration: Duration::from_millis(30),
            pending_delay: Duration::from_millis(5),
            spec: PipelineSpec::release(),
            token_scopes: vec!["api".into()],
            protected_tags: vec![("v*".into(), MAINTAINER)],
        }
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A fresh, unique 40-hex commit sha.
    pub fn new_sha(&mut self, seed: &str) -> String {
        use sha2::Digest;
        let n = self.id();
        let digest = sha2::Sha256::digest(format!("{seed}/{n}").as_bytes());
        hex::encode(digest)[..40].to_string()
    }

    pub fn project(&self, key: &str) -> Option<&ProjectRec> {
        match key.parse::<u64>() {
            Ok(id) => self.projects.iter().find(|p| p.id == id),
            Err(_) => self.projects.iter().find(|p| p.path == key),
        }
    }

    pub fn project_by_id(&self, id: u64) -> Option<&ProjectRec> {
        self.projects.iter().find(|p| p.id == id)
    }

    /// The project's id, creating it (with the bot as maintainer) when new.
    pub fn ensure_project(&mut self, path: &str) -> u64 {
        if let Some(p) = self.project(path) {
            return p.id;
        }
        let id = 100 + self.projects.len() as u64 + 1;
        self.projects.push(ProjectRec {
            id,
            path: path.into(),
            forked_from: None,
        });
        self.members.insert((id, BOT_ID), MAINTAINER);
        id
    }

    pub fn ensure_user(&mut self, username: &str) -> u64 {
        if let Some(u) = self.users.iter().find(|u| u.username == username) {
            return u.id;
        }
        let id = self.users.len() as u64 + 1;
        self.users.push(UserRec {
            id,
            username: username.into(),
        });
        id
    }

    pub fn user(&self, id: u64) -> Option<&UserRec> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn username(&self, id: u64) -> String {
        self.user(id)
            .map(|u| u.username.clone())
            .unwrap_or_default()
    }

    pub fn role(&self, project_id: u64, user_id: u64) -> Option<u32> {
        self.members.get(&(project_id, user_id)).copied()
    }

    pub fn project_url(&self, project_id: u64) -> String {
        let path = self
            .project_by_id(project_id)
            .map(|p| p.path.clone())
            .unwrap_or_default();
        format!("{}/{path}", self.base_url)
    }

    /// Creates a pipeline from `spec` and brings it to its first resting state.
    /// Returns the pipeline id and jobs that must start running.
    #[allow(clippy::too_many_arguments)]
    pub fn create_pipeline(
        &mut self,
        project_id: u64,
        ref_name: &str,
        tag: bool,
        sha: &str,
        source: &str,
        mr_iid: Option<u64>,
        user_id: u64,
        spec: &PipelineSpec,
    ) -> (u64, Vec<u64>) {
        let id = self.id();
        let iid = self
            .pipelines
            .values()
            .filter(|p| p.project_id == project_id)
            .count() as u64
            + 1;
        let mut stages: Vec<String> = Vec::new();
        for j in &spec.jobs {
            if !stages.contains(&j.stage) {
                stages.push(j.stage.clone());
            }
        }
        let created_at = now_rfc3339();
        let mut job_ids = Vec::new();
        for j in &spec.jobs {
            let jid = self.id();
            job_ids.push(jid);
            self.jobs.insert(
                jid,
                JobRec {
                    id: jid,
                    pipeline_id: id,
                    name: j.name.clone(),
                    stage: j.stage.clone(),
                    status: j.initial.clone().unwrap_or_else(|| "created".into()),
                    when: j.when,
                    allow_failure: j.allow_failure,
                    environment: j.environment.clone(),
                    user_id,
                    created_at: created_at.clone(),
                    started_at: None,
                    finished_at: j.initial.as_ref().map(|_| created_at.clone()),
                },
            );
        }
        self.pipelines.insert(
            id,
            PipelineRec {
                id,
                iid,
                project_id,
                ref_name: ref_name.into(),
                tag,
                sha: sha.into(),
                source: source.into(),
                stages,
                jobs: job_ids,
                mr_iid,
                user_id,
                created_at,
            },
        );
        let (_, to_run) = self.advance(id);
        (id, to_run)
    }

    fn job_done_ok(j: &JobRec) -> bool {
        match j.status.as_str() {
            "success" | "skipped" => true,
            "failed" | "canceled" => j.allow_failure,
            "manual" => j.allow_failure,
            _ => false,
        }
    }

    /// Applies GitLab's stage rules after a change: activates the next stage's jobs
    /// (`on_success` → pending, `manual` → manual) once every earlier job is done, and skips
    /// what follows a failure. Returns the jobs whose status changed and the jobs to run.
    pub fn advance(&mut self, pipeline_id: u64) -> (Vec<u64>, Vec<u64>) {
        let Some(p) = self.pipelines.get(&pipeline_id).cloned() else {
            return (Vec::new(), Vec::new());
        };
        let mut changed = Vec::new();
        let mut to_run = Vec::new();
        let mut blocked = false;
        let mut failed = false;
        for stage in &p.stages {
            let ids: Vec<u64> = p
                .jobs
                .iter()
                .copied()
                .filter(|id| self.jobs.get(id).is_some_and(|j| &j.stage == stage))
                .collect();
            for id in &ids {
                let Some(j) = self.jobs.get_mut(id) else {
                    continue;
                };
                if j.status != "created" && !(failed && j.status == "manual") {
                    continue;
                }
                if failed {
                    j.status = "skipped".into();
                    changed.push(*id);
                } else if !blocked {
                    match j.when {
                        When::Manual => j.status = "manual".into(),
                        When::OnSuccess => {
                            j.status = "pending".into();
                            to_run.push(*id);
                        }
                    }
                    changed.push(*id);
                }
            }
            let jobs: Vec<&JobRec> = ids.iter().filter_map(|id| self.jobs.get(id)).collect();
            if jobs
                .iter()
                .any(|j| matches!(j.status.as_str(), "failed" | "canceled") && !j.allow_failure)
            {
                failed = true;
            }
            if !jobs.iter().all(|j| Self::job_done_ok(j)) {
                blocked = true;
            }
        }
        (changed, to_run)
    }

    /// The pipeline's status from its jobs, as GitLab composes it.
    pub fn pipeline_status(&self, pipeline_id: u64) -> String {
        let Some(p) = self.pipelines.get(&pipeline_id) else {
            return "unknown".into();
        };
        let jobs: Vec<&JobRec> = p.jobs.iter().filter_map(|id| self.jobs.get(id)).collect();
        let any = |f: &dyn Fn(&JobRec) -> bool| jobs.iter().any(|j| f(j));
        if any(&|j| matches!(j.status.as_str(), "pending" | "running")) {
            "running".into()
        } else if any(&|j| j.status == "failed" && !j.allow_failure) {
            "failed".into()
        } else if any(&|j| j.status == "manual" && !j.allow_failure) {
            "manual".into()
        } else if any(&|j| j.status == "created") {
            "created".into()
        } else if jobs.iter().all(|j| j.status == "skipped") {
            "skipped".into()
        } else {
            "success".into()
        }
    }

    pub fn pipeline_json(&self, id: u64) -> Option<Value> {
        let p = self.pipelines.get(&id)?;
        let url = self.project_url(p.project_id);
        Some(json!({
            "id": p.id,
            "iid": p.iid,
            "project_id": p.project_id,
            "sha": p.sha,
            "ref": p.ref_name,
            "tag": p.tag,
            "status": self.pipeline_status(id),
            "source": p.source,
            "created_at": p.created_at,
            "updated_at": now_rfc3339(),
            "web_url": format!("{url}/-/pipelines/{}", p.id),
            "user": self.user_json(p.user_id),
        }))
    }

    pub fn job_json(&self, id: u64) -> Option<Value> {
        let j = self.jobs.get(&id)?;
        let p = self.pipelines.get(&j.pipeline_id)?;
        let url = self.project_url(p.project_id);
        Some(json!({
            "id": j.id,
            "name": j.name,
            "stage": j.stage,
            "status": j.status,
            "ref": p.ref_name,
            "tag": p.tag,
            "allow_failure": j.allow_failure,
            "created_at": j.created_at,
            "started_at": j.started_at,
            "finished_at": j.finished_at,
            "user": self.user_json(j.user_id),
            "commit": { "id": p.sha },
            "pipeline": {
                "id": p.id,
                "project_id": p.project_id,
                "ref": p.ref_name,
                "sha": p.sha,
                "status": self.pipeline_status(p.id),
            },
            "web_url": format!("{url}/-/jobs/{}", j.id),
        }))
    }

    pub fn user_json(&self, id: u64) -> Value {
        let name = self.username(id);
        json!({ "id": id, "username": name, "name": name, "state": "active" })
    }

    pub fn mr_json(&self, iid: u64) -> Option<Value> {
        let m = self.mrs.get(&iid)?;
        let url = self.project_url(m.project_id);
        Some(json!({
            "id": m.id,
            "iid": m.iid,
            "project_id": m.project_id,
            "source_project_id": m.source_project_id,
            "target_project_id": m.project_id,
            "source_branch": m.source_branch,
            "target_branch": m.target_branch,
            "sha": m.sha,
            "state": m.state,
            "author": self.user_json(m.author_id),
            "head_pipeline": m.head_pipeline_id.and_then(|id| self.pipeline_json(id)),
            "web_url": format!("{url}/-/merge_requests/{}", m.iid),
        }))
    }

    /// A job's behaviour: by id, else by name, else the default.
    pub fn behaviour(&self, job_id: u64) -> (Duration, Outcome, Option<JobAction>) {
        let by_name = self
            .jobs
            .get(&job_id)
            .and_then(|j| self.behaviours.get(&j.name));
        let by_id = self.id_behaviours.get(&job_id);
        let pick =
            |f: &dyn Fn(&Behaviour) -> bool| by_id.filter(|b| f(b)).or(by_name.filter(|b| f(b)));
        let duration = pick(&|b| b.duration.is_some())
            .and_then(|b| b.duration)
            .unwrap_or(self.default_duration);
        let outcome = pick(&|b| b.outcome.is_some())
            .and_then(|b| b.outcome)
            .unwrap_or(Outcome::Success);
        let action = pick(&|b| b.action.is_some()).and_then(|b| b.action.clone());
        (duration, outcome, action)
    }

    /// Takes the next fault queued for a call whose label contains the pattern.
    pub fn take_fault(&mut self, label: &str) -> Option<Fault> {
        self.faults
            .iter_mut()
            .find(|(pattern, queue)| label.contains(pattern.as_str()) && !queue.is_empty())
            .and_then(|(_, queue)| queue.pop_front())
    }
}
