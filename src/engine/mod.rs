//! The run engine: turns events into runs and drives each run through its steps.
//!
//! Decisions ([`dispatch`]) are written in the same transaction as the delivery
//! that caused them. Runs ([`run`]) are executed one at a time per (project,
//! environment); every step is a row written before the next starts, so a
//! restarted hoist resumes where it stopped. Every GitLab write goes through the
//! outbox ([`outbox`]), recorded with the decision that causes it.

pub mod dispatch;
pub mod drift;
pub mod outbox;
pub mod reporting;
pub mod run;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::events::{JobId, Status};
use crate::gitlab::GitLab;
use crate::registry::RegistryClient;
use crate::store::Store;
use crate::swarm::DockerSwarm;

/// Timing knobs (tests shorten them).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How long a played job may take to succeed.
    pub job_timeout: Duration,
    /// API poll interval while waiting for a job (hooks usually wake the wait sooner).
    pub job_poll: Duration,
    /// Swarm deploy knobs.
    pub deploy: crate::swarm::DeployOptions,
    /// How often the outbox retries GitLab writes that failed transiently.
    pub outbox_retry: Duration,
    /// How often services are compared with the last deploy (drift).
    pub reconcile_every: Duration,
    /// How long `verify` keeps trying a registry that is unreachable (restarting) before
    /// failing the run.
    pub registry_wait: Duration,
    /// How long a replica's claim on a delivery, a run or the outbox lasts unless renewed;
    /// another replica takes over a dead one's work after it.
    pub lease_ttl: Duration,
    /// Retries of one GitLab request (a run outlasts them: it keeps trying until its deadline).
    pub gitlab_retry: crate::gitlab::RetryPolicy,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            job_timeout: Duration::from_secs(3600),
            job_poll: Duration::from_secs(5),
            deploy: crate::swarm::DeployOptions::default(),
            outbox_retry: Duration::from_secs(5),
            reconcile_every: Duration::from_secs(60),
            registry_wait: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(15),
            gitlab_retry: crate::gitlab::RetryPolicy::default(),
        }
    }
}

/// A name for this replica, unique across restarts: `HOST-PID-RANDOM`.
fn instance_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let host = if host.is_empty() {
        "hoist".to_string()
    } else {
        host
    };
    format!("{host}-{}-{:08x}", std::process::id(), h.finish() as u32)
}

/// Everything a run needs, shared by the dispatcher, the executor and the outbox.
pub struct Engine {
    pub config: Arc<Config>,
    pub store: Store,
    pub gitlab: Arc<dyn GitLab>,
    pub registry: RegistryClient,
    pub swarm: DockerSwarm,
    pub options: EngineOptions,
    /// The bot user (hoist's own notes and job plays are recognised by it).
    bot: OnceLock<crate::gitlab::User>,
    /// Bumped when a Job/Pipeline hook says a job finished: job waits wake up.
    job_events: watch::Sender<u64>,
    /// Jobs that hooks said finished, not yet looked at by a wait (bounded).
    finished_jobs: Mutex<HashSet<u64>>,
    /// Woken when runs are queued or outbox items written.
    pub runs_changed: Notify,
    pub outbox_changed: Notify,
    /// Runs this process is executing.
    active: Mutex<HashSet<i64>>,
    /// This replica's name in leases: host, process and a random part.
    pub instance: String,
    /// Drifted services: (project, env, service) → what Swarm runs instead.
    drift: Mutex<HashMap<(String, String, String), String>>,
}

impl Engine {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        gitlab: Arc<dyn GitLab>,
        registry: RegistryClient,
        swarm: DockerSwarm,
        options: EngineOptions,
    ) -> Arc<Engine> {
        let (job_events, _) = watch::channel(0);
        Arc::new(Engine {
            config,
            store,
            gitlab,
            registry,
            swarm,
            options,
            bot: OnceLock::new(),
            job_events,
            finished_jobs: Mutex::new(HashSet::new()),
            runs_changed: Notify::new(),
            outbox_changed: Notify::new(),
            active: Mutex::new(HashSet::new()),
            instance: instance_name(),
            drift: Mutex::new(HashMap::new()),
        })
    }

    /// Records whether a service drifted (`found` is what Swarm runs instead), logging a new
    /// drift once and keeping `hoist_drift` current.
    pub fn set_drift(
        &self,
        project: &str,
        env: &str,
        service: &str,
        found: Option<&str>,
        deployed: &str,
    ) {
        let key = (project.to_string(), env.to_string(), service.to_string());
        let Ok(mut drift) = self.drift.lock() else {
            return;
        };
        match found {
            Some(found) => {
                if drift.get(&key).map(String::as_str) != Some(found) {
                    tracing::warn!(
                        project,
                        env,
                        service,
                        found,
                        deployed,
                        "drift: the service was changed outside hoist since its last deploy"
                    );
                    drift.insert(key, found.to_string());
                }
            }
            None => {
                if drift.remove(&key).is_some() {
                    tracing::info!(
                        project,
                        env,
                        service,
                        "drift cleared: the service runs what hoist deployed"
                    );
                }
            }
        }
        crate::metrics::drift(project, env, service, found.is_some());
    }

    /// What a drifted service runs instead of hoist's last deploy (None: no drift seen).
    pub fn drift_of(&self, project: &str, env: &str, service: &str) -> Option<String> {
        let key = (project.to_string(), env.to_string(), service.to_string());
        self.drift.lock().ok()?.get(&key).cloned()
    }

    /// The bot user, once GitLab told it (None until then: hoist starts while GitLab is down).
    pub fn bot(&self) -> Option<&crate::gitlab::User> {
        self.bot.get()
    }

    /// Asks GitLab who hoist is until it answers.
    async fn learn_bot(self: Arc<Self>) {
        let mut pause = Duration::from_secs(1);
        loop {
            match self.gitlab.current_user().await {
                Ok(user) => {
                    tracing::info!(bot = %user.username, "GitLab user of hoist");
                    let _ = self.bot.set(user);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot ask GitLab who hoist is; will retry"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(60));
        }
    }

    /// A Job or Pipeline hook reported these jobs' statuses: a wait on one that finished (or
    /// became manual) re-reads its job now (the API is the authority; the hook only says when to look).
    pub fn job_event(&self, jobs: impl IntoIterator<Item = (JobId, Status)>) {
        let finished: Vec<u64> = jobs
            .into_iter()
            // Finished jobs end waits; a manual one may be waited on to be played.
            .filter(|(_, status)| status.is_finished() || *status == Status::Manual)
            .map(|(id, _)| id.get())
            .collect();
        if finished.is_empty() {
            return;
        }
        if let Ok(mut set) = self.finished_jobs.lock() {
            // Jobs nobody waits for would pile up: forget them all now and then.
            if set.len() > 10_000 {
                set.clear();
            }
            set.extend(finished);
        }
        self.job_events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether a hook said `job` finished since the last call (and forgets it).
    pub(crate) fn take_finished(&self, job: JobId) -> bool {
        self.finished_jobs
            .lock()
            .map(|mut set| set.remove(&job.get()))
            .unwrap_or(true)
    }

    pub(crate) fn job_events(&self) -> watch::Receiver<u64> {
        self.job_events.subscribe()
    }

    /// Starts the executor and outbox loops; they end when `shutdown` turns true.
    pub fn spawn(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        // Detached: it ends when GitLab answers, or with the runtime.
        tokio::spawn(self.clone().learn_bot());
        vec![
            tokio::spawn(run::executor(self.clone(), shutdown.clone())),
            tokio::spawn(outbox::sender(self.clone(), shutdown.clone())),
            tokio::spawn(drift::watch(self.clone(), shutdown)),
        ]
    }

    /// Marks a run as executed here; false when it already is.
    fn claim(&self, run_id: i64) -> bool {
        self.active
            .lock()
            .map(|mut a| a.insert(run_id))
            .unwrap_or(false)
    }

    /// Whether this process is executing the run now.
    fn is_active(&self, run_id: i64) -> bool {
        self.active
            .lock()
            .map(|a| a.contains(&run_id))
            .unwrap_or(true)
    }

    fn release(&self, run_id: i64) {
        if let Ok(mut a) = self.active.lock() {
            a.remove(&run_id);
        }
    }
}

/// `POST /api/v1/deploys`: what `hoist deploy` asks for.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub project: String,
    pub env: String,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub mr: Option<u64>,
    #[serde(default)]
    pub pipeline: Option<u64>,
    /// Who asked (shown in history); defaults to `cli`.
    #[serde(default)]
    pub requested_by: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
}

impl Engine {
    /// Records a deploy request from the API as a run (queued, or refused with the reason).
    pub async fn request_deploy(&self, req: &DeployRequest) -> Result<i64, RequestError> {
        use crate::events::{CommitSha, PipelineId};
        use crate::store::runs::{self, NewRun};
        let project = self
            .config
            .projects
            .iter()
            .find(|p| p.path == req.project)
            .ok_or_else(|| {
                RequestError::BadRequest(format!("project {} is not configured", req.project))
            })?;
        let env = project
            .environments
            .iter()
            .find(|e| e.name == req.env)
            .ok_or_else(|| {
                RequestError::BadRequest(format!(
                    "project {} has no environment {}",
                    req.project, req.env
                ))
            })?;
        let unavailable = |e: crate::gitlab::GitlabError| {
            RequestError::Unavailable(format!("cannot ask GitLab: {e}"))
        };
        let gitlab = &self.gitlab;
        let mut run = NewRun {
            project: project.path.clone(),
            env: env.name.clone(),
            trigger: "cli".into(),
            requested_by: Some(req.requested_by.clone().unwrap_or_else(|| "cli".into())),
            state: runs::QUEUED.into(),
            ..NewRun::default()
        };
        match (&req.tag, req.mr, req.pipeline) {
            (Some(tag), None, None) => {
                let t = gitlab.tag(&project.path, tag).await.map_err(unavailable)?;
                run.sha = t.commit_sha.as_str().to_string();
                run.ref_name = tag.clone();
                run.tag = Some(tag.clone());
                let pipelines = gitlab
                    .pipelines_for_sha(&project.path, &CommitSha::from(run.sha.clone()))
                    .await
                    .map_err(unavailable)?;
                run.pipeline_id = pipelines
                    .iter()
                    .find(|p| &p.ref_name == tag)
                    .or(pipelines.first())
                    .and_then(|p| i64::try_from(p.id.get()).ok());
            }
            (None, Some(iid), None) => {
                let mr = gitlab
                    .merge_request(&project.path, iid)
                    .await
                    .map_err(unavailable)?;
                if mr.is_from_fork() {
                    run.state = runs::REFUSED.into();
                    run.error = Some("merge requests from forks cannot deploy".into());
                }
                run.sha = mr.sha.as_str().to_string();
                // The branch, as for `/deploy` on the merge request; `!IID` if GitLab gave none.
                run.ref_name = if mr.source_branch.is_empty() {
                    format!("!{iid}")
                } else {
                    mr.source_branch.clone()
                };
                run.pipeline_id = mr
                    .head_pipeline_id
                    .and_then(|p| i64::try_from(p.get()).ok());
            }
            (None, None, Some(id)) => {
                let p = gitlab
                    .pipeline(&project.path, PipelineId::from(id))
                    .await
                    .map_err(unavailable)?;
                run.sha = p.sha.as_str().to_string();
                run.ref_name = p.ref_name.clone();
                run.tag = p.tag.then(|| p.ref_name.clone());
                run.pipeline_id = i64::try_from(id).ok();
            }
            _ => {
                return Err(RequestError::BadRequest(
                    "give exactly one of tag, mr, pipeline".into(),
                ));
            }
        }
        let mut tx = self
            .store
            .begin()
            .await
            .map_err(|e| RequestError::Unavailable(e.to_string()))?;
        let plan = dispatch::Plan {
            state: crate::store::DeliveryState::Processed,
            summary: String::new(),
            runs: vec![dispatch::PlannedRun {
                run: run.clone(),
                writes: Vec::new(),
            }],
            writes: Vec::new(),
        };
        let id = dispatch::apply(&mut tx, &plan, &project.path)
            .await
            .map_err(|e| RequestError::Unavailable(e.to_string()))?;
        let id = match id {
            Some(id) => id,
            // Already queued or running for this commit: answer with that run.
            None => runs::runs_for_commit(&mut tx, &run.project, &run.env, &run.sha)
                .await
                .map_err(|e| RequestError::Unavailable(e.to_string()))?
                .first()
                .map(|r| r.id)
                .ok_or_else(|| RequestError::Unavailable("the run was not recorded".into()))?,
        };
        tx.commit()
            .await
            .map_err(|e| RequestError::Unavailable(e.to_string()))?;
        self.runs_changed.notify_one();
        Ok(id)
    }
}
