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
        Some(run) => {
            let values = crate::config::TagValues {
                tag: run.tag.as_deref(),
                sha: &run.sha,
                ref_name: &run.ref_name,
                pipeline_id: run.pipeline_id.and_then(|p| u64::try_from(p).ok()),
            };
            env.services
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    // Each service's own tag template, as the run's verify step rendered it.
                    let tag = crate::config::render_tag(&s.tag, &values).unwrap_or_default();
                    let digest = match run.service(&s.name) {
                        Some(recorded) => Some(recorded.digest.clone()),
                        // A run from before every service was recorded has its first
                        // service's digest only: another service shows it only when it
                        // runs the very same image.
                        None if run.services.is_empty()
                            && (i == 0
                                || run.image.as_deref() == Some(&format!("{}:{tag}", s.image))) =>
                        {
                            run.digest.clone()
                        }
                        None => None,
                    };
                    LiveService {
                        name: s.name.clone(),
                        image: s.image.clone(),
                        tag,
                        digest,
                        since: run
                            .finished_at
                            .as_deref()
                            .and_then(|t| crate::events::Timestamp::parse(t).utc()),
                        drift: drift(&s.name),
                    }
                })
                .collect()
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SecretSource};

    struct Secrets;

    impl SecretSource for Secrets {
        fn env(&self, name: &str) -> Option<String> {
            ["T", "W"].contains(&name).then(|| "t".into())
        }
        fn file(&self, _: &std::path::Path) -> std::io::Result<String> {
            Ok("t".into())
        }
    }

    fn run(image: &str, digest: &str) -> RunRow {
        RunRow {
            id: 7,
            project: "acme/shop".into(),
            env: "production".into(),
            trigger: "tag".into(),
            requested_by: None,
            requester_id: None,
            ref_name: "v1.2.0".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            tag: Some("v1.2.0".into()),
            pipeline_id: Some(42),
            mr_iid: None,
            note_id: None,
            reply_internal: false,
            state: runs::SUCCEEDED.into(),
            steps: Vec::new(),
            image: Some(image.into()),
            digest: Some(digest.into()),
            services: Vec::new(),
            error: None,
            owner: None,
            created_at: "2026-12-07T10:00:00Z".into(),
            started_at: None,
            finished_at: Some("2026-12-07T10:01:00Z".into()),
        }
    }

    /// `/deploy status` shows each service with its own tag template: the web service
    /// runs `v1.2.0`, the worker `v1.2.0-0123456`. A run that recorded every service shows
    /// each one's digest; one from before that (its first image only) shows the digest of
    /// that service alone.
    #[test]
    fn each_live_service_shows_its_own_tag() {
        let text = r#"
[gitlab]
url = "http://gitlab.example"
token = "env:T"
[[projects]]
path = "acme/shop"
webhook_token = "env:W"
  [[projects.environments]]
  name = "production"
  policy = "tag"
  tag_pattern = "v*"
    [[projects.environments.services]]
    name = "web"
    image = "registry.example/acme/web"
    platforms = ["linux/amd64"]
    [[projects.environments.services]]
    name = "worker"
    image = "registry.example/acme/worker"
    platforms = ["linux/amd64"]
    tag = "{tag}-{short_sha}"
"#;
        let config =
            Config::parse(std::path::Path::new("hoist.toml"), text, &Secrets).expect("config");
        let project = &config.projects[0];
        let old = run("registry.example/acme/web:v1.2.0", "sha256:aaaa");
        let mut recorded = old.clone();
        recorded.services = vec![
            runs::ServiceImage {
                service: "web".into(),
                image: "registry.example/acme/web:v1.2.0".into(),
                digest: "sha256:aaaa".into(),
            },
            runs::ServiceImage {
                service: "worker".into(),
                image: "registry.example/acme/worker:v1.2.0-01234567".into(),
                digest: "sha256:bbbb".into(),
            },
        ];
        let live = |run: &RunRow| -> Vec<(String, String, Option<String>)> {
            env_status(project, "production", Some(run), &[], &|_| None)
                .expect("the environment")
                .live
                .into_iter()
                .map(|s| (s.name, s.tag, s.digest))
                .collect()
        };
        let row = |name: &str, tag: &str, digest: Option<&str>| {
            (
                name.to_string(),
                tag.to_string(),
                digest.map(str::to_string),
            )
        };
        assert_eq!(
            live(&old),
            [
                row("web", "v1.2.0", Some("sha256:aaaa")),
                row("worker", "v1.2.0-01234567", None)
            ]
        );
        assert_eq!(
            live(&recorded),
            [
                row("web", "v1.2.0", Some("sha256:aaaa")),
                row("worker", "v1.2.0-01234567", Some("sha256:bbbb"))
            ]
        );
    }
}
