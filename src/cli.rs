//! The client commands: `hoist deploy` (through the server's API) and `hoist history` (from the store).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::engine::DeployRequest;
use crate::store::Store;
use crate::store::runs::{self, RunRow};

/// A command's failure, with the exit code SPEC §1 gives it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Usage or configuration (exit 2).
    #[error("{0}")]
    Config(String),
    /// The requested work failed (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

pub(crate) fn load(flag: Option<PathBuf>) -> Result<Config, CliError> {
    Config::load(&Config::path_from(flag)).map_err(|e| CliError::Config(e.to_string()))
}

/// A GitLab client for a person waiting at a terminal: fewer, shorter retries than the server's.
pub(crate) fn terminal_gitlab(config: &Config) -> Result<crate::gitlab::HttpClient, CliError> {
    let policy = crate::gitlab::RetryPolicy {
        max_attempts: 3,
        total_budget: Duration::from_secs(15),
        ..crate::gitlab::RetryPolicy::default()
    };
    crate::gitlab::HttpClient::with_policy(&config.gitlab.url, config.gitlab.token.clone(), policy)
        .map_err(|e| CliError::Config(format!("cannot set up the GitLab client: {e}")))
}

/// `hoist deploy`: POSTs the request to `server.public_url`; with `wait`, follows the run.
pub async fn deploy(
    flag: Option<PathBuf>,
    request: DeployRequest,
    wait: bool,
) -> Result<(), CliError> {
    let config = load(flag)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| CliError::Failed(format!("cannot set up HTTP: {e}")))?;
    let base = config.server.public_url.trim_end_matches('/').to_string();
    let auth = |r: reqwest::RequestBuilder| match &config.server.api_token {
        Some(t) => r.bearer_auth(t.expose()),
        None => r,
    };
    let resp = auth(client.post(format!("{base}/api/v1/deploys")).json(&request))
        .send()
        .await
        .map_err(|e| {
            CliError::Failed(format!("cannot reach hoist at {base}: {}", without_url(&e)))
        })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status.as_u16() != 202 {
        return Err(CliError::Failed(format!(
            "hoist answered {status}: {}",
            text.trim()
        )));
    }
    let run_id = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["run_id"].as_i64())
        .ok_or_else(|| CliError::Failed(format!("unexpected answer: {}", text.trim())))?;
    println!(
        "run {run_id} requested: {}/{}",
        request.project, request.env
    );
    if !wait {
        return Ok(());
    }
    let mut printed = 0usize;
    loop {
        let resp = auth(client.get(format!("{base}/api/v1/runs/{run_id}")))
            .send()
            .await
            .map_err(|e| {
                CliError::Failed(format!("cannot follow run {run_id}: {}", without_url(&e)))
            })?;
        let run: RunRow = match resp.json::<serde_json::Value>().await {
            Ok(v) => {
                run_from_json(&v).ok_or_else(|| CliError::Failed("unexpected run shape".into()))?
            }
            Err(e) => {
                return Err(CliError::Failed(format!(
                    "cannot read run {run_id}: {}",
                    without_url(&e)
                )));
            }
        };
        let finished: Vec<_> = run
            .steps
            .iter()
            .filter(|s| s.finished_at.is_some())
            .collect();
        for step in finished.iter().skip(printed) {
            println!(
                "  {:<10} {:<9} {}",
                step.name,
                step.state,
                step.detail.as_deref().unwrap_or("")
            );
        }
        printed = printed.max(finished.len());
        if ![runs::QUEUED, runs::RUNNING].contains(&run.state.as_str()) {
            println!(
                "run {run_id} {}{}",
                run.state,
                run.error.map(|e| format!(": {e}")).unwrap_or_default()
            );
            return if run.state == runs::SUCCEEDED {
                Ok(())
            } else {
                Err(CliError::Failed(format!("run {run_id} did not succeed")))
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn run_from_json(v: &serde_json::Value) -> Option<RunRow> {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let steps = v["steps"]
        .as_array()?
        .iter()
        .map(|st| runs::StepRow {
            name: st["name"].as_str().unwrap_or_default().to_string(),
            state: st["state"].as_str().unwrap_or_default().to_string(),
            started_at: st["started_at"].as_str().map(str::to_string),
            finished_at: st["finished_at"].as_str().map(str::to_string),
            detail: st["detail"].as_str().map(str::to_string),
        })
        .collect();
    Some(RunRow {
        id: v["id"].as_i64()?,
        project: s("project")?,
        env: s("env")?,
        trigger: s("trigger")?,
        requested_by: s("requested_by"),
        requester_id: None,
        ref_name: s("ref")?,
        sha: s("sha")?,
        tag: s("tag"),
        pipeline_id: v["pipeline_id"].as_i64(),
        mr_iid: v["mr_iid"].as_i64(),
        note_id: v["note_id"].as_i64(),
        reply_internal: false,
        state: s("state")?,
        steps,
        image: s("image"),
        digest: s("digest"),
        services: serde_json::from_value(v["services"].clone()).unwrap_or_default(),
        error: s("error"),
        owner: s("owner"),
        created_at: s("created_at")?,
        started_at: s("started_at"),
        finished_at: s("finished_at"),
    })
}

/// reqwest errors carry the URL; ours has no secret in it, but keep messages short.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "");
    }
    text.trim().trim_end_matches(['(', ')', ' ']).to_string()
}

/// `hoist history`: runs from the store, newest first.
pub async fn history(
    flag: Option<PathBuf>,
    project: Option<String>,
    env: Option<String>,
    limit: i64,
    json: bool,
) -> Result<(), CliError> {
    let file = Config::path_from(flag.clone());
    let config = load(flag)?;
    // A read must not leave an empty store behind (run from the wrong directory, a
    // relative `sqlite://hoist.db` names a file that is not the server's).
    if let Some(db) = Store::sqlite_file_of(config.store.url.expose())
        && !db.exists()
    {
        return Err(CliError::Config(format!(
            "{}: store.url: there is no store at {}; hoist serve creates it (is this the \
             server's config, run from the server's directory?)",
            file.display(),
            db.display()
        )));
    }
    let store = Store::open(config.store.url.expose())
        .await
        .map_err(|e| CliError::Failed(format!("cannot open the store: {e}")))?;
    let rows = store
        .runs(
            project.as_deref(),
            env.as_deref(),
            None,
            limit.clamp(1, 1000),
        )
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
        );
        return Ok(());
    }
    println!(
        "{:<6} {:<20} {:<12} {:<11} {:<10} {:<16} {:<12} {:<20} ERROR",
        "RUN", "PROJECT", "ENV", "STATE", "TRIGGER", "REF", "SHA", "CREATED"
    );
    for r in rows {
        println!(
            "{:<6} {:<20} {:<12} {:<11} {:<10} {:<16} {:<12} {:<20} {}",
            r.id,
            r.project,
            r.env,
            r.state,
            r.trigger,
            r.ref_name,
            &r.sha[..r.sha.len().min(8)],
            r.created_at.get(..19).unwrap_or(&r.created_at),
            r.error.unwrap_or_default()
        );
    }
    Ok(())
}

/// `hoist check` online: every check of [`crate::doctor`], one line each; fails when one failed.
pub async fn check_online(config: &Config) -> Result<(), CliError> {
    let gitlab = terminal_gitlab(config)?;
    let registry = crate::registry::RegistryClient::new(&config.registries);
    let swarm = crate::swarm::DockerSwarm::new(&config.docker);
    let doctor = crate::doctor::Doctor {
        config,
        gitlab: &gitlab,
        registry: &registry,
        swarm: &swarm,
    };
    let checks = doctor.all().await;
    print!("{}", crate::doctor::render_lines(&checks));
    let failed = checks
        .iter()
        .filter(|c| c.verdict == crate::doctor::Verdict::Fail)
        .count();
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} of {} checks failed",
            checks.len()
        )));
    }
    Ok(())
}
