//! Executing runs: checks, then `manifest` → `verify` → `deploy-job` → `swarm` → `converge` → `report`.
//!
//! Every step is resumable: a job that already succeeded is not played again, a
//! job already running is waited for, a service already at the digest is left
//! alone. So a run found `running` at start simply runs again from its first
//! unfinished step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Engine;
use super::outbox::StatusBody;
use crate::config::{EnvironmentConfig, Policy, ProjectConfig, TagValues, render_tag};
use crate::events::{CommitSha, PipelineId, Status, UserId};
use crate::gitlab::{GitlabError, Job};
use crate::policy::{self, Decision, JobView};
use crate::registry::{ImageRegistry, ResolvedImage, missing_platforms};
use crate::report::{self, RunReport, RunState, ServiceReport, ServiceState};
use crate::store::leases::{self, Lease};
use crate::store::runs::{self, RunRow};
use crate::store::{Conn, Store, StoreError, Tx, now_text};
use crate::swarm::{self, OutcomeState, Target};

/// Why a run stopped early.
#[derive(Debug)]
pub enum Stop {
    /// The request is not allowed: the run becomes `refused`.
    Refused(String),
    /// A step failed: the run becomes `failed` (or `rolled_back`).
    Failed {
        step: &'static str,
        reason: String,
        rolled_back: bool,
        task_errors: Vec<String>,
    },
    /// The store failed: the run stays as it is and is resumed later.
    Store(StoreError),
    /// This replica lost the environment's lease: another one continues the run.
    Lost,
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Store(e)
    }
}

fn fail(step: &'static str, reason: impl Into<String>) -> Stop {
    Stop::Failed {
        step,
        reason: reason.into(),
        rolled_back: false,
        task_errors: Vec::new(),
    }
}

/// Picks up runnable and interrupted runs and executes each in its own task.
pub async fn executor(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    // Runs left running by a previous process (or a replica that died) resume first.
    resume_orphans(&engine, "resuming run").await;
    loop {
        if *shutdown.borrow() {
            break;
        }
        match engine.store.runnable().await {
            Ok(runs) => {
                for run in runs {
                    start(&engine, run);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read queued runs"),
        }
        // A run whose store write failed (SQLite locked past its busy timeout, a full disk)
        // stopped where it was, `running`; so did the runs of a replica that died. Nobody
        // executes them (no live lease): they resume here.
        resume_orphans(&engine, "resuming run nobody executes").await;
        tokio::select! {
            _ = engine.runs_changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Starts the `running` runs that no replica executes: none here, and no unexpired lease.
async fn resume_orphans(engine: &Arc<Engine>, why: &str) {
    let (running, leased) = match (
        engine.store.running_runs().await,
        engine.store.leased_runs().await,
    ) {
        (Ok(r), Ok(l)) => (r, l),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot read running runs");
            return;
        }
    };
    for run in running
        .into_iter()
        .filter(|r| !engine.is_active(r.id) && !leased.contains(&r.id))
    {
        tracing::info!(run_id = run.id, project = %run.project, env = %run.env, "{why}");
        start(engine, run);
    }
}

fn start(engine: &Arc<Engine>, run: RunRow) {
    if !engine.claim(run.id) {
        return;
    }
    let engine = engine.clone();
    tokio::spawn(async move {
        let id = run.id;
        let span = tracing::info_span!("run", run_id = id, project = %run.project, env = %run.env);
        // The row was read before the claim: the run may have ended in between (its task
        // releases the claim only after the end is committed). Read it again.
        let current = match engine.store.run(id).await {
            Ok(Some(r)) if r.state == runs::QUEUED || r.state == runs::RUNNING => Some(r),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(run_id = id, error = %e, "cannot read the run; will try again");
                None
            }
        };
        // One run per environment across replicas: its lease, with the fence checked before
        // every side effect.
        let lease = match &current {
            Some(r) => match engine
                .store
                .claim_lease(
                    &leases::env_lease_name(&r.project, &r.env),
                    &engine.instance,
                    Some(id),
                    engine.options.lease_ttl,
                )
                .await
            {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::warn!(run_id = id, error = %e, "cannot take the environment's lease; will try again");
                    None
                }
            },
            None => None,
        };
        if let (Some(run), Some(lease)) = (current, lease) {
            if let Err(e) = engine.store.set_run_owner(id, &engine.instance).await {
                tracing::warn!(run_id = id, error = %e, "cannot record the run's owner");
            }
            let lost = Arc::new(AtomicBool::new(false));
            let heartbeat = tokio::spawn(heartbeat(engine.clone(), lease.clone(), lost.clone()));
            let result =
                tracing::Instrument::instrument(execute(&engine, run, &lease, lost), span).await;
            heartbeat.abort();
            if let Err(e) = result {
                tracing::error!(run_id = id, error = %e, "the store failed mid-run; the run resumes once it answers");
            }
            if let Ok(mut tx) = engine.store.begin().await
                && Store::release_lease(&mut tx, &lease).await.is_ok()
            {
                let _ = tx.commit().await;
            }
        }
        engine.release(id);
        // The next queued run of this environment may start now.
        engine.runs_changed.notify_one();
    });
}

/// Renews a run's lease every third of its time-to-live; marks it lost when renewal fails.
async fn heartbeat(engine: Arc<Engine>, lease: Lease, lost: Arc<AtomicBool>) {
    let every = lease.ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        match engine.store.renew_lease(&lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(lease = %lease.name, "lease lost; this replica stops the run");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // The store may come back before the lease runs out; `guard` checks again.
            Err(e) => tracing::warn!(error = %e, "cannot renew the lease"),
        }
    }
}

/// Runs one run to its end (or until the store fails, or the lease is lost).
async fn execute(
    engine: &Engine,
    run: RunRow,
    lease: &Lease,
    lost: Arc<AtomicBool>,
) -> Result<(), StoreError> {
    let Some(project) = engine
        .config
        .projects
        .iter()
        .find(|p| p.path == run.project)
    else {
        return finish(
            engine,
            &run,
            runs::FAILED,
            Some("the project is no longer configured"),
            None,
        )
        .await;
    };
    let Some(env) = project.environments.iter().find(|e| e.name == run.env) else {
        return finish(
            engine,
            &run,
            runs::FAILED,
            Some("the environment is no longer configured"),
            None,
        )
        .await;
    };
    let started = Instant::now();
    let mut ctx = RunCtx {
        engine,
        project,
        env,
        run: run.clone(),
        report: base_report(engine, &run),
        images: Vec::new(),
        lease,
        lost,
    };
    if run.state == runs::QUEUED {
        match ctx.check().await {
            Ok(()) => {}
            Err(Stop::Refused(reason)) => return settle(ctx.refuse(&reason).await),
            Err(Stop::Store(e)) => return Err(e),
            Err(Stop::Lost) => return Ok(()),
            Err(Stop::Failed { reason, .. }) => {
                // Could not even check (GitLab down past retries): leave queued and try later.
                tracing::warn!(reason = %reason, "cannot check the request yet; will retry");
                tokio::time::sleep(engine.options.outbox_retry).await;
                return Ok(());
            }
        }
        if let Err(stop) = ctx.begin().await {
            return settle(Err(stop));
        }
    }
    let result = ctx.steps().await;
    ctx.report.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    let ended = match result {
        Ok(()) => ctx.end(runs::SUCCEEDED, None).await,
        Err(stop @ (Stop::Store(_) | Stop::Lost)) => Err(stop),
        Err(Stop::Refused(reason)) => ctx.end(runs::FAILED, Some(("verify", reason))).await,
        Err(Stop::Failed {
            step,
            reason,
            rolled_back,
            task_errors,
        }) => {
            ctx.report.task_errors = task_errors;
            let state = if rolled_back {
                runs::ROLLED_BACK
            } else {
                runs::FAILED
            };
            ctx.end(state, Some((step, reason))).await
        }
    };
    settle(ended)
}

/// What a run's end means for its task: a lost lease is no error (another replica
/// continues); a store error is, and the run resumes later.
fn settle(result: Result<(), Stop>) -> Result<(), StoreError> {
    match result {
        Ok(()) => Ok(()),
        Err(Stop::Store(e)) => Err(e),
        Err(Stop::Lost) => {
            tracing::warn!("the environment's lease was lost; another replica continues the run");
            Ok(())
        }
        Err(Stop::Refused(why) | Stop::Failed { reason: why, .. }) => {
            tracing::error!(reason = %why, "the run could not record its end; it resumes later");
            Ok(())
        }
    }
}

async fn finish(
    engine: &Engine,
    run: &RunRow,
    state: &str,
    error: Option<&str>,
    _step: Option<&str>,
) -> Result<(), StoreError> {
    let mut tx = engine.store.begin().await?;
    runs::set_run_state(&mut tx, run.id, state, error).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

fn base_report(engine: &Engine, run: &RunRow) -> RunReport {
    let mut report = super::reporting::report_of(run, &engine.config.server.public_url);
    // Tag runs know their pipeline from the hook; GitLab's pipeline page is at this path.
    report.pipeline_url = run.pipeline_id.map(|id| {
        format!(
            "{}/{}/-/pipelines/{id}",
            engine.config.gitlab.url.trim_end_matches('/'),
            run.project
        )
    });
    report
}

struct RunCtx<'a> {
    engine: &'a Engine,
    project: &'a ProjectConfig,
    env: &'a EnvironmentConfig,
    run: RunRow,
    report: RunReport,
    images: Vec<ResolvedImage>,
    /// The environment's lease this run executes under.
    lease: &'a Lease,
    lost: Arc<AtomicBool>,
}

impl RunCtx<'_> {
    /// The fence check before a side effect: this replica still holds the environment's lease.
    async fn guard(&self) -> Result<(), Stop> {
        if self.lost.load(Ordering::SeqCst) || !self.engine.store.holds(self.lease).await? {
            self.lost.store(true, Ordering::SeqCst);
            return Err(Stop::Lost);
        }
        Ok(())
    }

    /// A write transaction that commits only while this replica holds the lease.
    async fn fenced_tx(&self) -> Result<Tx, Stop> {
        let mut tx = self.engine.store.begin().await?;
        if !self.engine.store.lock_lease(&mut tx, self.lease).await? {
            self.lost.store(true, Ordering::SeqCst);
            return Err(Stop::Lost);
        }
        Ok(tx)
    }

    fn sha(&self) -> CommitSha {
        CommitSha::from(self.run.sha.clone())
    }

    /// The policy checks that need GitLab, before anything happens.
    async fn check(&mut self) -> Result<(), Stop> {
        let gitlab = &self.engine.gitlab;
        let project = self.project.path.as_str();
        let by_tag = self.run.trigger == "tag"
            || (self.run.trigger == "cli"
                && self.env.policy == Policy::Tag
                && self.run.tag.is_some());
        let trigger = if by_tag {
            "tag"
        } else {
            self.run.trigger.as_str()
        };
        match trigger {
            "tag" => {
                let tag_name = self.run.tag.clone().unwrap_or_default();
                let tag = match gitlab.tag(project, &tag_name).await {
                    Ok(t) => t,
                    Err(GitlabError::NotFound(_)) => {
                        return Err(Stop::Refused(format!("tag {tag_name} no longer exists")));
                    }
                    Err(e) => return Err(fail("check", e.to_string())),
                };
                let live = self.engine.store.live_run(project, &self.env.name).await?;
                let input = policy::TagInput {
                    tag: tag_name,
                    protected: tag.protected,
                    deleted: false,
                    live: live.and_then(|r| {
                        r.tag.map(|t| policy::LiveVersion {
                            tag: t,
                            created_at: parse_time(Some(&r.created_at)),
                        })
                    }),
                    tag_created_at: parse_time(tag.created_at.as_deref()),
                    explicit: self.run.trigger == "cli",
                };
                decision(policy::evaluate_tag(self.env, &input))
            }
            "mr_comment" | "cli" => {
                let requester = match self.run.requester_id {
                    Some(id) => match gitlab.member_role(project, UserId::from(id as u64)).await {
                        Ok(level) => policy::Requester::User {
                            username: self.run.requested_by.clone().unwrap_or_default(),
                            access_level: level,
                        },
                        Err(e) => return Err(fail("check", e.to_string())),
                    },
                    None => policy::Requester::ApiToken,
                };
                let mut from_fork = false;
                if let Some(iid) = self.run.mr_iid {
                    match gitlab.merge_request(project, iid as u64).await {
                        Ok(mr) => {
                            from_fork = mr.is_from_fork();
                            // The request named the head it was made on: that commit is what
                            // the requester saw, so it is what deploys (a newer head needs a new request).
                            if mr.sha.as_str() != self.run.sha {
                                tracing::info!(requested = %self.run.sha, head = %mr.sha, "merge request head moved since the request; deploying the requested commit");
                            }
                        }
                        Err(e) => return Err(fail("check", e.to_string())),
                    }
                }
                let pipeline = self.find_pipeline().await?;
                let input = policy::ManualInput {
                    requester,
                    from_fork,
                    sha: self.run.sha.clone(),
                    pipeline,
                    required_jobs: [&self.project.manifest_job, &self.project.deploy_job]
                        .into_iter()
                        .filter(|j| !j.is_empty())
                        .cloned()
                        .collect(),
                };
                decision(policy::evaluate_manual(self.env, &input))
            }
            _ => Ok(()),
        }
    }

    /// The newest pipeline of the run's commit, with its jobs (and remembers it on the run).
    async fn find_pipeline(&mut self) -> Result<Option<policy::PipelineView>, Stop> {
        let gitlab = &self.engine.gitlab;
        let project = self.project.path.as_str();
        let pipelines = if let Some(id) = self.run.pipeline_id {
            match gitlab.pipeline(project, PipelineId::from(id as u64)).await {
                Ok(p) => vec![p],
                Err(e) => return Err(fail("check", e.to_string())),
            }
        } else {
            gitlab
                .pipelines_for_sha(project, &self.sha())
                .await
                .map_err(|e| fail("check", e.to_string()))?
        };
        for p in pipelines {
            let jobs = gitlab
                .pipeline_jobs(project, p.id)
                .await
                .map_err(|e| fail("check", e.to_string()))?;
            let has_jobs = [&self.project.manifest_job, &self.project.deploy_job]
                .iter()
                .filter(|j| !j.is_empty())
                .all(|j| jobs.iter().any(|x| &x.name == *j));
            if has_jobs {
                let id = p.id.get();
                self.run.pipeline_id = i64::try_from(id).ok();
                self.report.pipeline_url = Some(p.web_url.clone());
                let mut tx = self.engine.store.begin().await?;
                sqlx::query("UPDATE runs SET pipeline_id = $1 WHERE id = $2")
                    .bind(self.run.pipeline_id)
                    .bind(self.run.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                tx.commit().await.map_err(StoreError::from)?;
                let jobs = jobs
                    .iter()
                    .map(|j| JobView {
                        name: j.name.clone(),
                        stage: j.stage.clone(),
                        status: j.status.clone(),
                        allow_failure: j.allow_failure,
                    })
                    .collect();
                return Ok(Some(policy::PipelineView { id, jobs }));
            }
        }
        Ok(None)
    }

    async fn refuse(&mut self, reason: &str) -> Result<(), Stop> {
        tracing::info!(reason, "request refused");
        let mut tx = self.fenced_tx().await?;
        runs::set_run_state(&mut tx, self.run.id, runs::REFUSED, Some(reason)).await?;
        if let (Some(iid), Some(note)) = (self.run.mr_iid, self.run.note_id) {
            let who = self.run.requested_by.clone().unwrap_or_default();
            self.say(&mut tx, "react", &format!("{iid}/{note}"), "x")
                .await?;
            self.say(
                &mut tx,
                "mr_note",
                &super::outbox::mr_thread(iid, self.run.reply_internal),
                &report::mr_reply_refused(&who, reason),
            )
            .await?;
        } else if self.run.trigger == "tag" {
            self.report.state = RunState::Refused;
            self.report.error = Some(reason.to_string());
            self.say(
                &mut tx,
                "commit_comment",
                &self.run.sha,
                &report::run_finished(&self.report),
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        crate::metrics::run_finished(&self.project.path, &self.env.name, runs::REFUSED);
        self.engine.outbox_changed.notify_one();
        Ok(())
    }

    /// `queued` → `running`, with the "started" comment and status in the same transaction.
    async fn begin(&mut self) -> Result<(), Stop> {
        let mut tx = self.fenced_tx().await?;
        runs::set_run_state(&mut tx, self.run.id, runs::RUNNING, None).await?;
        self.report.state = RunState::Running;
        self.say(
            &mut tx,
            "commit_comment",
            &self.run.sha,
            &report::run_started(&self.report),
        )
        .await?;
        self.enqueue_status(&mut tx).await?;
        if let Some(iid) = self.run.mr_iid {
            self.say(
                &mut tx,
                "mr_note",
                &super::outbox::mr_thread(iid, self.run.reply_internal),
                &report::mr_reply_accepted(&self.report),
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.run.state = runs::RUNNING.into();
        self.engine.outbox_changed.notify_one();
        Ok(())
    }

    async fn enqueue_status(&self, tx: &mut Conn) -> Result<(), StoreError> {
        let (state, description) = report::commit_status(&self.report);
        let body = StatusBody {
            state: state.as_str().to_string(),
            name: format!("hoist/{}", self.env.name),
            description,
            target_url: self.report.dashboard_url.clone(),
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        runs::enqueue(
            tx,
            Some(self.run.id),
            &self.project.path,
            "commit_status",
            &self.run.sha,
            &body,
        )
        .await
    }

    async fn step_state(&self, step: &str) -> Result<Option<String>, StoreError> {
        let row = self.engine.store.run(self.run.id).await?;
        Ok(row.and_then(|r| {
            r.steps
                .into_iter()
                .find(|s| s.name == step)
                .map(|s| s.state)
        }))
    }

    async fn start_step(&self, step: &str) -> Result<Instant, StoreError> {
        let mut tx = self.engine.store.begin().await?;
        runs::start_step(&mut tx, self.run.id, step).await?;
        tx.commit().await.map_err(StoreError::from)?;
        tracing::info!(step, "step started");
        Ok(Instant::now())
    }

    async fn end_step(
        &self,
        step: &'static str,
        state: &str,
        detail: &str,
        began: Instant,
    ) -> Result<(), StoreError> {
        let mut tx = self.engine.store.begin().await?;
        runs::finish_step(&mut tx, self.run.id, step, state, detail).await?;
        tx.commit().await.map_err(StoreError::from)?;
        let elapsed = began.elapsed();
        crate::metrics::run_step(step, elapsed);
        tracing::info!(
            step,
            state,
            detail,
            ms = elapsed.as_millis() as u64,
            "step finished"
        );
        Ok(())
    }

    async fn steps(&mut self) -> Result<(), Stop> {
        let manifest = self.project.manifest_job.clone();
        self.job_step("manifest", &manifest).await?;
        self.verify().await?;
        let deploy = self.project.deploy_job.clone();
        self.job_step("deploy-job", &deploy).await?;
        self.swarm().await
    }

    /// Plays `job_name` when it waits in manual (skips it when it already succeeded) and waits for it.
    async fn job_step(&mut self, step: &'static str, job_name: &str) -> Result<(), Stop> {
        if self
            .step_state(step)
            .await?
            .as_deref()
            .is_some_and(|s| s == "succeeded" || s == "skipped")
        {
            return Ok(());
        }
        let began = self.start_step(step).await?;
        if job_name.is_empty() {
            self.end_step(
                step,
                "skipped",
                "the pipeline has no such job (configured as \"\")",
                began,
            )
            .await?;
            return Ok(());
        }
        if self.run.pipeline_id.is_none() {
            self.find_pipeline().await?;
        }
        let Some(pipeline) = self.run.pipeline_id else {
            return Err(fail(
                step,
                format!(
                    "commit {} has no pipeline with a {job_name} job",
                    short(&self.run.sha)
                ),
            ));
        };
        let gitlab = &self.engine.gitlab;
        let project = self.project.path.as_str();
        // GitLab away for longer than the client's retries: keep trying until the job's
        // deadline, then fail with the reason.
        let deadline = Instant::now() + self.engine.options.job_timeout;
        let jobs = loop {
            match gitlab
                .pipeline_jobs(project, PipelineId::from(pipeline as u64))
                .await
            {
                Ok(jobs) => break jobs,
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    tracing::warn!(error = %e, "cannot list the pipeline's jobs; will try again");
                    tokio::time::sleep(self.engine.options.job_poll).await;
                }
                Err(e) => {
                    return Err(fail(
                        step,
                        format!("cannot list the jobs of pipeline {pipeline}: {e}"),
                    ));
                }
            }
        };
        let Some(job) = jobs
            .into_iter()
            .filter(|j| j.name == job_name)
            .max_by_key(|j| j.id.get())
        else {
            return Err(fail(
                step,
                format!("pipeline {pipeline} has no job {job_name}"),
            ));
        };
        self.report
            .job_urls
            .push((job.name.clone(), job.web_url.clone()));
        if job.status == Status::Manual {
            self.guard().await?;
        }
        let detail = match job.status {
            Status::Success => {
                self.end_step(
                    step,
                    "skipped",
                    &format!("job {} {} already succeeded", job.name, job.id),
                    began,
                )
                .await?;
                return Ok(());
            }
            Status::Manual => match gitlab.play_job(project, job.id).await {
                Ok(_) => format!("played job {} {}", job.name, job.id),
                // The play may or may not have reached GitLab: the wait reads the job and
                // plays it only if it still waits in manual.
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, job = %job.name, "cannot play job; will read it and try again");
                    let done = self.wait_job(step, &job, true).await?;
                    self.end_step(
                        step,
                        "succeeded",
                        &format!(
                            "played job {} {}; {} succeeded",
                            job.name, job.id, done.name
                        ),
                        began,
                    )
                    .await?;
                    return Ok(());
                }
                Err(GitlabError::Unplayable(m)) => {
                    // Someone else may have played it in between: look again before giving up.
                    let again = gitlab
                        .job(project, job.id)
                        .await
                        .map_err(|e| fail(step, e.to_string()))?;
                    if again.status == Status::Manual
                        || again.status.is_finished() && again.status != Status::Success
                    {
                        return Err(fail(
                            step,
                            format!(
                                "GitLab refused to play job {} ({}): {m}",
                                job.name, job.web_url
                            ),
                        ));
                    }
                    format!("job {} {} was already started", job.name, job.id)
                }
                Err(e) => {
                    return Err(fail(
                        step,
                        format!("cannot play job {} ({}): {e}", job.name, job.web_url),
                    ));
                }
            },
            Status::Failed | Status::Canceled | Status::Skipped => {
                return Err(fail(
                    step,
                    format!(
                        "job {} is {} ({})",
                        job.name,
                        job.status.as_str(),
                        job.web_url
                    ),
                ));
            }
            // Earlier stages still run (a `/deploy` right after a push): wait until the job
            // becomes manual, then play it.
            Status::Created => format!("job {} {} waited for earlier stages", job.name, job.id),
            _ => format!("job {} {} was already started", job.name, job.id),
        };
        let play_when_manual = job.status == Status::Created;
        let done = self.wait_job(step, &job, play_when_manual).await?;
        self.end_step(
            step,
            "succeeded",
            &format!("{detail}; {} succeeded", done.name),
            began,
        )
        .await?;
        Ok(())
    }

    /// Waits for a job to succeed: woken by Job/Pipeline hooks, polling as a fallback.
    /// With `play_when_manual`, a job that reaches `manual` (its earlier stages passed) is
    /// played once.
    async fn wait_job(
        &self,
        step: &'static str,
        job: &Job,
        mut play_when_manual: bool,
    ) -> Result<Job, Stop> {
        let deadline = Instant::now() + self.engine.options.job_timeout;
        let mut events = self.engine.job_events();
        let _ = self.engine.take_finished(job.id);
        loop {
            // Why GitLab could not be read or written this time, for the timeout's reason.
            let mut unavailable: Option<String> = None;
            match self.engine.gitlab.job(&self.project.path, job.id).await {
                Ok(j) if j.status == Status::Success => return Ok(j),
                Ok(j) if j.status == Status::Manual && play_when_manual => {
                    self.guard().await?;
                    match self.engine.gitlab.play_job(&self.project.path, j.id).await {
                        Ok(_) => {
                            play_when_manual = false;
                            continue;
                        }
                        // Not known whether it was played: read the job again before replaying.
                        Err(e) if e.is_transient() => {
                            tracing::warn!(error = %e, "cannot play job; will look again");
                            unavailable = Some(e.to_string());
                        }
                        Err(e) => {
                            return Err(fail(
                                step,
                                format!("cannot play job {} ({}): {e}", j.name, j.web_url),
                            ));
                        }
                    }
                }
                Ok(j)
                    if matches!(
                        j.status,
                        Status::Failed | Status::Canceled | Status::Skipped
                    ) =>
                {
                    return Err(fail(
                        step,
                        format!("job {} {} ({})", j.name, j.status.as_str(), j.web_url),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "cannot read job; will look again");
                    unavailable = Some(e.to_string());
                }
                Err(e) => return Err(fail(step, format!("cannot read job {}: {e}", job.name))),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = unavailable
                    .map(|e| format!("; the last attempt to reach GitLab failed: {e}"))
                    .unwrap_or_default();
                return Err(fail(
                    step,
                    format!(
                        "job {} did not succeed within {} s ({}){why}",
                        job.name,
                        self.engine.options.job_timeout.as_secs(),
                        job.web_url
                    ),
                ));
            }
            // Wait for a hook that says this job finished, or poll when the interval is up.
            let poll_at = Instant::now() + self.engine.options.job_poll.min(left);
            while tokio::time::timeout_at(poll_at.into(), events.changed())
                .await
                .is_ok_and(|changed| changed.is_ok())
                && !self.engine.take_finished(job.id)
            {}
        }
    }

    /// Resolves every service's tag to its index digest and checks the platforms.
    async fn verify(&mut self) -> Result<(), Stop> {
        let began = self.start_step("verify").await?;
        let mut details = Vec::new();
        self.images.clear();
        for svc in &self.env.services {
            let values = TagValues {
                tag: self.run.tag.as_deref(),
                sha: &self.run.sha,
                ref_name: &self.run.ref_name,
                pipeline_id: self.run.pipeline_id.and_then(|p| u64::try_from(p).ok()),
            };
            let tag = render_tag(&svc.tag, &values)
                .map_err(|e| fail("verify", format!("service {}: tag: {e}", svc.name)))?;
            let resolved = self.resolve(&svc.image, &tag).await?;
            let missing = missing_platforms(&resolved.platforms, &svc.platforms);
            if !missing.is_empty() {
                let list: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
                let have: Vec<String> = resolved.platforms.iter().map(|p| p.to_string()).collect();
                let reason = format!(
                    "{} lacks platform(s) {} (it has {})",
                    resolved.reference(),
                    list.join(", "),
                    have.join(", ")
                );
                self.end_step("verify", "failed", &reason, began).await?;
                return Err(fail("verify", reason));
            }
            details.push(format!(
                "{} = {}",
                resolved.reference(),
                resolved.digest.short()
            ));
            self.report.services.push(ServiceReport {
                name: svc.name.clone(),
                image: svc.image.clone(),
                tag: tag.clone(),
                digest: Some(resolved.digest.as_str().to_string()),
                platforms: resolved.platforms.iter().map(|p| p.to_string()).collect(),
                version_before: None,
                version_after: None,
                state: ServiceState::Unchanged,
            });
            self.images.push(resolved);
        }
        let recorded: Vec<runs::ServiceImage> = self
            .env
            .services
            .iter()
            .zip(&self.images)
            .map(|(svc, image)| runs::ServiceImage {
                service: svc.name.clone(),
                image: image.reference(),
                digest: image.digest.as_str().to_string(),
            })
            .collect();
        if !recorded.is_empty() {
            let mut tx = self.engine.store.begin().await?;
            runs::set_run_images(&mut tx, self.run.id, &recorded).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        self.end_step("verify", "succeeded", &details.join("; "), began)
            .await?;
        Ok(())
    }

    /// Resolves `image:tag`, trying an unreachable registry again for `registry_wait`.
    async fn resolve(&self, image: &str, tag: &str) -> Result<ResolvedImage, Stop> {
        let wait = self.engine.options.registry_wait;
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(250);
        loop {
            match self.engine.registry.resolve(image, tag).await {
                Ok(resolved) => return Ok(resolved),
                Err(e) if e.is_transient() && Instant::now() + pause < deadline => {
                    tracing::warn!(error = %e, "registry unreachable; will try again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) if e.is_transient() => {
                    return Err(fail(
                        "verify",
                        format!("{e} (tried for {} s)", wait.as_secs()),
                    ));
                }
                Err(e) => return Err(fail("verify", e.to_string())),
            }
        }
    }

    /// Creates or updates every service at its digest and waits for Swarm to settle.
    async fn swarm(&mut self) -> Result<(), Stop> {
        let t0 = now_text();
        let began = self.start_step("swarm").await?;
        let mut applied = Vec::new();
        let mut converge = Vec::new();
        let mut applied_at = t0.clone();
        for (i, svc) in self.env.services.iter().enumerate() {
            let Some(image) = self.images.get(i) else {
                return Err(fail("swarm", "internal: the verify step resolved no image"));
            };
            let creds = self.engine.registry.credentials_for(&svc.image);
            let target = Target {
                service: svc,
                image,
                auth: creds.as_ref(),
            };
            self.guard().await?;
            let call = Instant::now();
            let outcome = match swarm::deploy(
                &self.engine.swarm,
                target,
                &self.engine.options.deploy,
            )
            .await
            {
                Ok(o) => o,
                Err(e) => {
                    let reason = e.to_string();
                    self.end_step("swarm", "failed", &reason, began).await?;
                    return Err(fail("swarm", reason));
                }
            };
            applied_at = chrono_at(call, outcome.applied_in);
            let versions = format!(
                "{} → {}",
                outcome
                    .version_before
                    .map_or("new".to_string(), |v| v.to_string()),
                outcome.version_after
            );
            applied.push(format!(
                "{}: {} ({versions})",
                svc.name,
                outcome.state.as_str()
            ));
            converge.push(format!(
                "{}: {} in {} ms",
                svc.name,
                outcome.state.as_str(),
                outcome.converged_in.as_millis()
            ));
            if let Some(r) = self.report.services.get_mut(i) {
                r.version_before = outcome.version_before;
                r.version_after = Some(outcome.version_after);
                r.state = super::reporting::service_state(outcome.state);
            }
            if !outcome.state.succeeded() {
                let task_errors: Vec<String> = outcome
                    .task_errors
                    .iter()
                    .map(|t| t.error.clone())
                    .collect();
                let reason = match outcome.state {
                    OutcomeState::RolledBack => format!(
                        "service {} rolled back: {}",
                        svc.name,
                        outcome
                            .update_message
                            .clone()
                            .unwrap_or_else(|| "the new tasks failed".into())
                    ),
                    other => format!(
                        "service {} {}: {}",
                        svc.name,
                        other.as_str(),
                        outcome.update_message.clone().unwrap_or_default()
                    ),
                };
                self.record_swarm(&t0, &applied_at, &applied.join("; "), "failed", &reason)
                    .await?;
                return Err(Stop::Failed {
                    step: "converge",
                    reason,
                    rolled_back: outcome.state == OutcomeState::RolledBack,
                    task_errors,
                });
            }
        }
        self.record_swarm(
            &t0,
            &applied_at,
            &applied.join("; "),
            "succeeded",
            &converge.join("; "),
        )
        .await?;
        crate::metrics::run_step("swarm", began.elapsed());
        Ok(())
    }

    /// Records a GitLab write of this run in the outbox, in the caller's transaction.
    async fn say(
        &self,
        tx: &mut Conn,
        kind: &str,
        target: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        runs::enqueue(
            tx,
            Some(self.run.id),
            &self.project.path,
            kind,
            target,
            body,
        )
        .await
    }

    /// Writes the `swarm` step (until Swarm accepted the write) and the `converge` step (after) at once.
    async fn record_swarm(
        &self,
        t0: &str,
        applied_at: &str,
        applied: &str,
        converge_state: &str,
        converge_detail: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.engine.store.begin().await?;
        runs::record_step(
            &mut tx,
            self.run.id,
            "swarm",
            "succeeded",
            t0,
            applied_at,
            applied,
        )
        .await?;
        runs::record_step(
            &mut tx,
            self.run.id,
            "converge",
            converge_state,
            applied_at,
            &now_text(),
            converge_detail,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            step = "swarm",
            state = "succeeded",
            detail = applied,
            "step finished"
        );
        tracing::info!(
            step = "converge",
            state = converge_state,
            detail = converge_detail,
            "step finished"
        );
        Ok(())
    }

    /// The `report` step and the run's final state, with the last comment, status and MR reply.
    async fn end(&mut self, state: &str, failure: Option<(&str, String)>) -> Result<(), Stop> {
        self.report.state = super::reporting::run_state(state);
        if let Some((step, reason)) = &failure {
            self.report.failed_step = Some(step.to_string());
            self.report.error = Some(reason.clone());
        }
        let mut tx = self.fenced_tx().await?;
        if let Some((step, reason)) = &failure {
            runs::fail_open_step(&mut tx, self.run.id, step, reason).await?;
        }
        runs::start_step(&mut tx, self.run.id, "report").await?;
        self.say(
            &mut tx,
            "commit_comment",
            &self.run.sha,
            &report::run_finished(&self.report),
        )
        .await?;
        self.enqueue_status(&mut tx).await?;
        if let (Some(iid), Some(note)) = (self.run.mr_iid, self.run.note_id) {
            self.say(
                &mut tx,
                "mr_note",
                &super::outbox::mr_thread(iid, self.run.reply_internal),
                &report::mr_reply_finished(&self.report),
            )
            .await?;
            let emoji = if state == runs::SUCCEEDED {
                "rocket"
            } else {
                "x"
            };
            self.say(&mut tx, "react", &format!("{iid}/{note}"), emoji)
                .await?;
        }
        runs::finish_step(
            &mut tx,
            self.run.id,
            "report",
            "succeeded",
            "comment and status queued",
        )
        .await?;
        runs::set_run_state(
            &mut tx,
            self.run.id,
            state,
            failure.as_ref().map(|(_, r)| r.as_str()),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        crate::metrics::run_finished(&self.project.path, &self.env.name, state);
        tracing::info!(
            state,
            error = failure.as_ref().map(|(_, r)| r.as_str()),
            "run finished"
        );
        self.engine.outbox_changed.notify_one();
        Ok(())
    }
}

fn decision(d: Decision) -> Result<(), Stop> {
    match d {
        Decision::Deploy => Ok(()),
        Decision::Refuse(r) => Err(Stop::Refused(r.reason)),
        Decision::Ignore(reason) => Err(Stop::Refused(reason)),
    }
}

fn parse_time(text: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    text.map(crate::events::Timestamp::parse)
        .and_then(|t| t.utc())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(8)]
}

/// The wall-clock time `offset` after `start` (an Instant), as the store writes times.
fn chrono_at(start: Instant, offset: Duration) -> String {
    let ago = start.elapsed().saturating_sub(offset);
    let at = chrono::Utc::now() - chrono::Duration::from_std(ago).unwrap_or_default();
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
