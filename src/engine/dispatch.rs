//! From a stored delivery to a [`Plan`]: which runs to queue and what to say, decided
//! without side effects so the worker can commit the plan with the delivery.
//!
//! Only hook data and the store are read here. Checks that need GitLab (roles,
//! tag protection, the MR's head pipeline) run as the first thing a run does,
//! where failures are retried and reported.

use super::Engine;
use crate::command::{self, Command};
use crate::config::{EnvironmentConfig, Policy, ProjectConfig};
use crate::events::{self, Event, JobEvent, NoteEvent, PipelineEvent, Status};
use crate::policy::{self, JobView, Readiness};
use crate::report;
use crate::store::runs::{self, NewRun};
use crate::store::{Conn, DeliveryState, QueuedDelivery, StoreError};

/// A GitLab write, recorded in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub kind: &'static str,
    pub target: String,
    pub body: String,
}

impl Write {
    /// A note on the merge request `thread` names ([`super::outbox::mr_thread`]).
    pub fn mr_note(thread: &str, body: String) -> Write {
        Write {
            kind: "mr_note",
            target: thread.to_string(),
            body,
        }
    }
    /// `/deploy doctor`: the reply is the project's checks, run when it is sent, for a
    /// requester of at least Developer role (body: `USER_ID USERNAME`).
    pub fn doctor(thread: &str, user_id: u64, username: &str) -> Write {
        Write {
            kind: "doctor",
            target: thread.to_string(),
            body: format!("{user_id} {username}"),
        }
    }
    pub fn react(iid: i64, note_id: i64, emoji: &str) -> Write {
        Write {
            kind: "react",
            target: format!("{iid}/{note_id}"),
            body: emoji.to_string(),
        }
    }
}

/// A run to queue (or record as refused), with the writes that go with it.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub run: NewRun,
    pub writes: Vec<Write>,
}

/// What a delivery means, to be committed with it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub state: DeliveryState,
    pub summary: String,
    pub runs: Vec<PlannedRun>,
    pub writes: Vec<Write>,
}

impl Plan {
    fn ignored(summary: String) -> Plan {
        Plan {
            state: DeliveryState::Ignored,
            summary,
            runs: Vec::new(),
            writes: Vec::new(),
        }
    }
    fn processed(summary: String) -> Plan {
        Plan {
            state: DeliveryState::Processed,
            summary,
            runs: Vec::new(),
            writes: Vec::new(),
        }
    }
}

impl Engine {
    /// Decides what a delivery means, from its body as [`events::parse`] read it (the
    /// worker parses a batch on a thread of its own first).
    pub async fn plan(
        &self,
        delivery: &QueuedDelivery,
        parsed: Result<Event, events::ParseError>,
    ) -> Plan {
        let Some(project) = self
            .config
            .projects
            .iter()
            .find(|p| p.path == delivery.project)
        else {
            return Plan::ignored(format!(
                "project {} is no longer configured",
                delivery.project
            ));
        };
        let event = match parsed {
            Ok(e) => e,
            Err(e) => return Plan::ignored(format!("not understood: {e}")),
        };
        let summary = events::describe(&event, &project.manifest_job, &project.deploy_job);
        match &event {
            Event::Pipeline(p) => {
                self.job_event(p.builds.iter().map(|b| (b.id, b.status.clone())));
                self.plan_pipeline(project, p, summary)
            }
            Event::Job(j) => {
                self.job_event([(j.build_id, j.build_status.clone())]);
                self.plan_job(project, j, summary).await
            }
            Event::Note(n) => self.plan_note(project, n, summary).await,
            // A tag push is recorded; the tag's pipeline is what deploys.
            Event::TagPush(_) => Plan::processed(summary),
            Event::Other { .. } => Plan::ignored(summary),
        }
    }

    fn plan_pipeline(&self, project: &ProjectConfig, p: &PipelineEvent, summary: String) -> Plan {
        let attrs = &p.object_attributes;
        if !attrs.tag {
            return Plan::ignored(summary);
        }
        let tag = attrs.git_ref.clone();
        let mut plan = Plan::ignored(summary);
        let mut envs = project
            .environments
            .iter()
            .filter(|e| e.policy == Policy::Tag && e.tag_pattern.is_match(&tag))
            .peekable();
        // Most pipeline hooks concern no tag environment: their jobs are not looked at.
        if envs.peek().is_none() {
            return plan;
        }
        let jobs: Vec<JobView> = p.builds.iter().map(JobView::from).collect();
        let ready = policy::pipeline_ready(
            &jobs,
            &attrs.stages,
            &project.manifest_job,
            &project.deploy_job,
        );
        if !matches!(ready, Readiness::Ready { .. }) {
            return plan;
        }
        plan.state = DeliveryState::Processed;
        for env in envs {
            plan.runs.push(PlannedRun {
                run: NewRun {
                    project: project.path.clone(),
                    env: env.name.clone(),
                    trigger: "tag".into(),
                    requested_by: p.user.as_ref().map(|u| u.username.clone()),
                    ref_name: tag.clone(),
                    sha: attrs.sha.as_str().to_string(),
                    tag: Some(tag.clone()),
                    pipeline_id: i64::try_from(attrs.id.get()).ok(),
                    state: runs::QUEUED.into(),
                    ..NewRun::default()
                },
                writes: Vec::new(),
            });
        }
        plan
    }

    async fn plan_job(&self, project: &ProjectConfig, j: &JobEvent, summary: String) -> Plan {
        let played = matches!(j.build_status, Status::Pending | Status::Running);
        if project.deploy_job.is_empty() || j.build_name != project.deploy_job || !played {
            return Plan::processed(summary);
        }
        let user = j.user.as_ref();
        let by_bot = match (self.bot(), user) {
            (Some(bot), Some(u)) => u.id.get() == bot.id.get(),
            _ => false,
        };
        if by_bot {
            return Plan::processed(summary);
        }
        tracing::debug!(job = %j.build_name, status = j.build_status.as_str(), "deploy job played by a person");
        let env_name = j
            .environment
            .as_ref()
            .map(|e| e.name.clone())
            .filter(|n| !n.is_empty());
        let manual: Vec<&EnvironmentConfig> = project
            .environments
            .iter()
            .filter(|e| e.policy == Policy::Manual)
            .collect();
        let env = match env_name {
            Some(name) => manual.iter().find(|e| e.name == name).copied(),
            None if manual.len() == 1 => manual.first().copied(),
            None => None,
        };
        let Some(env) = env else {
            tracing::info!(job = %j.build_name, "deploy job played for an environment hoist does not deploy manually");
            return Plan::processed(summary);
        };
        let mut plan = Plan::processed(summary);
        plan.runs.push(PlannedRun {
            run: NewRun {
                project: project.path.clone(),
                env: env.name.clone(),
                trigger: "job_play".into(),
                requested_by: user.map(|u| u.username.clone()),
                requester_id: user.and_then(|u| i64::try_from(u.id.get()).ok()),
                ref_name: j.git_ref.clone(),
                sha: j.sha.as_str().to_string(),
                tag: j.tag.then(|| j.git_ref.clone()),
                pipeline_id: i64::try_from(j.pipeline_id.get()).ok(),
                state: runs::QUEUED.into(),
                ..NewRun::default()
            },
            writes: Vec::new(),
        });
        plan
    }

    async fn plan_note(&self, project: &ProjectConfig, n: &NoteEvent, summary: String) -> Plan {
        let bot_id = self.bot().map(|b| b.id.get()).unwrap_or(0);
        if !command::should_consider(n, bot_id) {
            return Plan::ignored(summary);
        }
        let env_names: Vec<&str> = project
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        let Some(parsed) = command::parse(&n.object_attributes.note, &env_names) else {
            return Plan::ignored(summary);
        };
        let (Some(mr), Some(iid)) = (n.merge_request.as_ref(), n.merge_request_iid()) else {
            return Plan::ignored(summary);
        };
        let iid = i64::try_from(iid).unwrap_or(0);
        let note_id = i64::try_from(n.object_attributes.id).unwrap_or(0);
        let user = Some(&n.user);
        let username = user.map(|u| u.username.clone()).unwrap_or_default();
        let sha = mr
            .last_commit
            .as_ref()
            .map(|c| c.id.as_str().to_string())
            .unwrap_or_default();
        // Asked in an internal note: every reply on the merge request is internal too.
        let internal = n.confidential;
        let thread = super::outbox::mr_thread(iid, internal);
        let base = NewRun {
            project: project.path.clone(),
            trigger: "mr_comment".into(),
            reply_internal: internal,
            requested_by: Some(username.clone()),
            requester_id: user.and_then(|u| i64::try_from(u.id.get()).ok()),
            ref_name: mr.source_branch.clone(),
            sha: sha.clone(),
            mr_iid: Some(iid),
            note_id: Some(note_id),
            ..NewRun::default()
        };
        let mut plan = Plan::processed(summary);
        let refuse = |env: &str, reason: String| PlannedRun {
            run: NewRun {
                env: env.to_string(),
                state: runs::REFUSED.into(),
                error: Some(reason.clone()),
                ..base.clone()
            },
            writes: vec![
                Write::react(iid, note_id, "x"),
                Write::mr_note(&thread, report::mr_reply_refused(&username, &reason)),
            ],
        };
        let command = match parsed {
            Ok(c) => c,
            Err(e) => {
                let env = match &e {
                    command::ParseError::UnknownEnv { given, .. } => given.clone(),
                    _ => String::new(),
                };
                plan.runs.push(PlannedRun {
                    run: NewRun {
                        env,
                        state: runs::REFUSED.into(),
                        error: Some(e.to_string()),
                        ..base.clone()
                    },
                    writes: vec![
                        Write::react(iid, note_id, "x"),
                        Write::mr_note(&thread, report::mr_reply_parse_error(&e)),
                    ],
                });
                return plan;
            }
        };
        match command {
            Command::Help => {
                let envs: Vec<(String, String)> = project
                    .environments
                    .iter()
                    .map(|e| (e.name.clone(), policy::policy_description(e)))
                    .collect();
                let envs: Vec<(&str, &str)> =
                    envs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                plan.writes
                    .push(Write::mr_note(&thread, report::help_reply(&envs)));
            }
            Command::Status { env } => {
                let body = self.status_reply(project, env.as_deref()).await;
                plan.writes.push(Write::mr_note(&thread, body));
            }
            Command::Doctor => {
                // The checks run when the reply is sent (they call GitLab, Docker and the
                // registries), not while the delivery is planned.
                let user_id = user.map(|u| u.id.get()).unwrap_or(0);
                plan.writes.push(Write::doctor(&thread, user_id, &username));
            }
            Command::Deploy { env } => {
                let manual: Vec<&EnvironmentConfig> = project
                    .environments
                    .iter()
                    .filter(|e| e.policy == Policy::Manual)
                    .collect();
                let env = match env {
                    Some(name) => project.environments.iter().find(|e| e.name == name),
                    None if manual.len() == 1 => manual.first().copied(),
                    None => None,
                };
                let Some(env) = env else {
                    let names: Vec<&str> = manual.iter().map(|e| e.name.as_str()).collect();
                    plan.runs.push(refuse(
                        "",
                        format!(
                            "say which environment: /deploy ENV, one of: {}",
                            names.join(", ")
                        ),
                    ));
                    return plan;
                };
                if env.policy == Policy::Tag {
                    plan.runs.push(refuse(
                        &env.name,
                        format!(
                            "{} deploys from release tags only (policy = \"tag\")",
                            env.name
                        ),
                    ));
                } else if mr.is_from_fork() {
                    plan.runs.push(refuse(
                        &env.name,
                        "merge requests from forks cannot deploy".to_string(),
                    ));
                } else if sha.is_empty() {
                    plan.runs.push(refuse(
                        &env.name,
                        "this merge request has no head commit".to_string(),
                    ));
                } else {
                    plan.runs.push(PlannedRun {
                        run: NewRun {
                            env: env.name.clone(),
                            state: runs::QUEUED.into(),
                            ..base.clone()
                        },
                        writes: vec![Write::react(iid, note_id, "eyes")],
                    });
                }
            }
        }
        plan
    }

    /// `/deploy status [ENV]`: what runs now and the last runs.
    async fn status_reply(&self, project: &ProjectConfig, env: Option<&str>) -> String {
        let mut views = Vec::new();
        for e in project
            .environments
            .iter()
            .filter(|e| env.is_none_or(|n| n == e.name))
        {
            let live = self
                .store
                .live_run(&project.path, &e.name)
                .await
                .ok()
                .flatten();
            let recent = self
                .store
                .runs(Some(&project.path), Some(&e.name), None, 5)
                .await
                .unwrap_or_default();
            let drift = |service: &str| self.drift_of(&project.path, &e.name, service);
            if let Some(view) =
                super::reporting::env_status(project, &e.name, live.as_ref(), &recent, &drift)
            {
                views.push(view);
            }
        }
        report::status_reply(&views)
    }
}

/// Commits a plan's runs and writes; returns the first run id it created.
pub async fn apply(conn: &mut Conn, plan: &Plan, project: &str) -> Result<Option<i64>, StoreError> {
    let mut first = None;
    for planned in &plan.runs {
        let run = &planned.run;
        if run.state == runs::QUEUED {
            // One run per commit: a run for this commit that is not superseded already covers it
            // (repeated and out-of-order hooks land here). A manual request may retry a finished
            // one, and so may a new pipeline of the commit (a retried pipeline, a second tag).
            let existing = runs::runs_for_commit(conn, &run.project, &run.env, &run.sha).await?;
            let covered = existing.iter().any(|r| match r.state.as_str() {
                runs::QUEUED | runs::RUNNING => true,
                runs::SUPERSEDED | runs::REFUSED => false,
                _ => match run.trigger.as_str() {
                    "mr_comment" | "cli" => false,
                    "tag" => r.pipeline_id == run.pipeline_id,
                    _ => true,
                },
            });
            if covered {
                continue;
            }
        }
        let Some(id) = runs::insert_run(conn, run).await? else {
            continue;
        };
        first.get_or_insert(id);
        for w in &planned.writes {
            runs::enqueue(conn, Some(id), project, w.kind, &w.target, &w.body).await?;
        }
        // Refused at planning (the run never starts) and superseded runs end here.
        // Counted before the commit: a failed commit is retried and would count again,
        // which only a store failure makes happen.
        if run.state == runs::REFUSED {
            crate::metrics::run_finished(&run.project, &run.env, runs::REFUSED);
        }
        if run.state == runs::QUEUED {
            for older in runs::supersede_older(conn, &run.project, &run.env, id).await? {
                crate::metrics::run_finished(&older.project, &older.env, runs::SUPERSEDED);
                let older_report = super::reporting::report_of(&older, "");
                let body = report::superseded(
                    &older_report,
                    u64::try_from(id).unwrap_or(0),
                    &run.ref_name,
                );
                runs::enqueue(
                    conn,
                    Some(older.id),
                    project,
                    "commit_comment",
                    &older.sha,
                    &body,
                )
                .await?;
                if let (Some(iid), Some(note)) = (older.mr_iid, older.note_id) {
                    runs::enqueue(
                        conn,
                        Some(older.id),
                        project,
                        "react",
                        &format!("{iid}/{note}"),
                        "x",
                    )
                    .await?;
                }
            }
        }
    }
    for w in &plan.writes {
        runs::enqueue(conn, None, project, w.kind, &w.target, &w.body).await?;
    }
    Ok(first)
}
