//! Maps store rows and Swarm outcomes to the report module's view types.

use crate::config::ProjectConfig;
use crate::report::{
    EnvStatus, LiveService, RunReport, RunState, RunSummary, ServiceState, Trigger,
};
use crate::store::runs::{self, RunRow};
use crate::swarm::OutcomeState;

pub fn trigger(text: &str) -> Trigger {
    match text {
        "tag" => Trigger::Tag,
        "mr_comment" => Trigger::MrComment,
        "job_play" => Trigger::JobPlay,
        _ => Trigger::Cli,
    }
}

pub fn run_state(text: &str) -> RunState {
    match text {
        runs::QUEUED => RunState::Queued,
        runs::RUNNING => RunState::Running,
        runs::SUCCEEDED => RunState::Succeeded,
        runs::ROLLED_BACK => RunState::RolledBack,
        runs::SUPERSEDED => RunState::Superseded,
        runs::REFUSED => RunState::Refused,
        _ => RunState::Failed,
    }
}

pub fn service_state(outcome: OutcomeState) -> ServiceState {
    match outcome {
        OutcomeState::Created => ServiceState::Created,
        OutcomeState::Updated => ServiceState::Updated,
        OutcomeState::Unchanged => ServiceState::Unchanged,
        OutcomeState::RolledBack => ServiceState::RolledBack,
        _ => ServiceState::Failed,
    }
}

/// The report of a run as far as its row tells.
pub fn report_of(run: &RunRow, public_url: &str) -> RunReport {
    RunReport {
        run_id: u64::try_from(run.id).unwrap_or(0),
        project: run.project.clone(),
        env: run.env.clone(),
        trigger: trigger(&run.trigger),
        requested_by: run.requested_by.clone().unwrap_or_else(|| "hoist".into()),
        ref_name: run.ref_name.clone(),
        sha: run.sha.clone(),
        pipeline_url: None,
        job_urls: Vec::new(),
        services: Vec::new(),
        state: run_state(&run.state),
        failed_step: None,
        error: run.error.clone(),
        task_errors: Vec::new(),
        duration_ms: None,
        dashboard_url: Some(format!(
            "{}/#run-{}",
            public_url.trim_end_matches('/'),
            run.id
        )),
    }
}

pub fn summary_of(run: &RunRow) -> RunSummary {
    RunSummary {
        run_id: u64::try_from(run.id).unwrap_or(0),
        state: run_state(&run.state),
        trigger: trigger(&run.trigger),
        ref_name: run.ref_name.clone(),
        sha: run.sha.clone(),
        requested_by: run.requested_by.clone().unwrap_or_default(),
        at: crate::events::Timestamp::parse(run.finished_at.as_deref().unwrap_or(&run.created_at))
            .utc(),
    }
}

/// `/deploy status`: per environment, what is live, what runs, the last runs.
pub fn env_status(
    project: &ProjectConfig,
    env_name: &str,
    live: Option<&RunRow>,
    recent: &[RunRow],
    drift: &dyn Fn(&str) -> Option<String>,
) -> Option<EnvStatus> {
    let env = project.environments.iter().find(|e| e.name == env_name)?;
    let live = match live {
        Some(run) => env
            .services
            .iter()
            .map(|s| LiveService {
                name: s.name.clone(),
                image: s.image.clone(),
                tag: run
                    .image
                    .as_deref()
                    .and_then(|i| i.rsplit_once(':'))
                    .map(|(_, t)| t.to_string())
                    .unwrap_or_default(),
                digest: run.digest.clone(),
                since: run
                    .finished_at
                    .as_deref()
                    .and_then(|t| crate::events::Timestamp::parse(t).utc()),
                drift: drift(&s.name),
            })
            .collect(),
        None => Vec::new(),
    };
    Some(EnvStatus {
        env: env.name.clone(),
        policy: crate::policy::policy_description(env),
        live,
        running: recent
            .iter()
            .find(|r| r.state == runs::RUNNING)
            .map(summary_of),
        recent: recent.iter().map(summary_of).collect(),
    })
}
