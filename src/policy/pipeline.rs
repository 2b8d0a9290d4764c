//! Pipeline readiness: has the pipeline reached the manual job hoist plays first, with everything before it green?

use crate::events::Status;

/// One job of a pipeline, as a hook or the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    pub name: String,
    pub stage: String,
    pub status: Status,
    pub allow_failure: bool,
}

/// Whether a run can start from this pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Start the run. `manifest_done`: the first job hoist would play already
    /// succeeded, so the run skips playing it.
    Ready { manifest_done: bool },
    /// Not yet: a later hook may make it ready.
    NotYet(String),
    /// This pipeline will not start a run (as it stands).
    Never(String),
}

/// Judges `jobs` of a pipeline whose stages run in the order `stages`
/// (`object_attributes.stages`).
///
/// The job hoist plays first is `manifest_job`, or `deploy_job` when the project
/// has no manifest job. It is ready when that job waits in `manual` and every job
/// of an earlier stage succeeded (a job with `allow_failure` may also have failed,
/// been canceled or skipped, or still wait in manual). A first job that already
/// succeeded is ready with `manifest_done`; one already running is `Never`
/// (someone, or an earlier run, played it). Jobs in stages not listed in
/// `stages` are not judged. With neither job named, the pipeline is ready once
/// every job succeeded.
pub fn pipeline_ready(
    jobs: &[JobView],
    stages: &[String],
    manifest_job: &str,
    deploy_job: &str,
) -> Readiness {
    let first = if manifest_job.is_empty() {
        deploy_job
    } else {
        manifest_job
    };
    if first.is_empty() {
        return earlier_jobs(jobs.iter(), "the pipeline's jobs").unwrap_or(Readiness::Ready {
            manifest_done: true,
        });
    }
    let Some(job) = jobs.iter().find(|j| j.name == first) else {
        return Readiness::Never(format!("the pipeline has no job {first}"));
    };
    match &job.status {
        Status::Manual => {}
        Status::Success => {
            return Readiness::Ready {
                manifest_done: true,
            };
        }
        Status::Created => {
            return Readiness::NotYet(format!("job {first} waits for earlier stages"));
        }
        Status::Scheduled => {
            return Readiness::NotYet(format!("job {first} is scheduled to start by itself"));
        }
        Status::Pending
        | Status::Preparing
        | Status::WaitingForResource
        | Status::Running
        | Status::Canceling => {
            return Readiness::Never(format!("job {first} is already {}", job.status));
        }
        Status::Failed => return Readiness::Never(format!("job {first} failed")),
        Status::Canceled => return Readiness::Never(format!("job {first} was canceled")),
        Status::Skipped => {
            return Readiness::Never(format!(
                "job {first} was skipped (an earlier stage failed), so it cannot be played"
            ));
        }
        Status::Other(s) => {
            return Readiness::NotYet(format!("job {first} has status {s:?}"));
        }
    }
    let Some(position) = stages.iter().position(|s| *s == job.stage) else {
        return Readiness::Never(format!(
            "job {first}'s stage {} is not among the pipeline's stages",
            job.stage
        ));
    };
    let earlier = &stages[..position];
    let what = format!("the stages before {first}");
    earlier_jobs(jobs.iter().filter(|j| earlier.contains(&j.stage)), &what).unwrap_or(
        Readiness::Ready {
            manifest_done: false,
        },
    )
}

/// `None` when every job passed; else the first blocker, a `Never` before any `NotYet`.
fn earlier_jobs<'a>(jobs: impl Iterator<Item = &'a JobView>, what: &str) -> Option<Readiness> {
    let mut not_yet = None;
    for j in jobs {
        let desc = || format!("job {} (stage {})", j.name, j.stage);
        match &j.status {
            Status::Success => {}
            _ if j.allow_failure
                && matches!(
                    j.status,
                    Status::Failed | Status::Canceled | Status::Skipped | Status::Manual
                ) => {}
            Status::Failed | Status::Canceled | Status::Skipped => {
                return Some(Readiness::Never(format!(
                    "{} {} in {what}",
                    desc(),
                    past(&j.status)
                )));
            }
            Status::Manual => {
                not_yet.get_or_insert_with(|| {
                    Readiness::NotYet(format!("{} waits to be played", desc()))
                });
            }
            other => {
                not_yet.get_or_insert_with(|| Readiness::NotYet(format!("{} is {other}", desc())));
            }
        }
    }
    not_yet
}

fn past(status: &Status) -> &'static str {
    match status {
        Status::Failed => "failed",
        Status::Canceled => "was canceled",
        _ => "was skipped",
    }
}

impl From<&crate::events::Build> for JobView {
    fn from(b: &crate::events::Build) -> Self {
        Self {
            name: b.name.clone(),
            stage: b.stage.clone(),
            status: b.status.clone(),
            allow_failure: b.allow_failure,
        }
    }
}
