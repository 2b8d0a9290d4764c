//! Runs, their steps and the outbox: the rows the run engine's state machine lives in.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
// Dynamic SQL here only splices the constant RUN_COLUMNS list; values are always bound.
use sqlx::{AssertSqlSafe, Row};

use super::{Conn, Store, StoreError, now_text};

/// Run states (SPEC §3).
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const ROLLED_BACK: &str = "rolled_back";
pub const SUPERSEDED: &str = "superseded";
pub const REFUSED: &str = "refused";

/// Step names, in order (SPEC §4).
pub const STEPS: [&str; 6] = [
    "manifest",
    "verify",
    "deploy-job",
    "swarm",
    "converge",
    "report",
];

/// A run to be created.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub project: String,
    pub env: String,
    /// `tag`, `mr_comment`, `job_play` or `cli`.
    pub trigger: String,
    pub requested_by: Option<String>,
    /// GitLab user id of the requester (for the role check).
    pub requester_id: Option<i64>,
    pub ref_name: String,
    pub sha: String,
    pub tag: Option<String>,
    pub pipeline_id: Option<i64>,
    pub mr_iid: Option<i64>,
    pub note_id: Option<i64>,
    /// `queued` or `refused`.
    pub state: String,
    pub error: Option<String>,
    /// Asked in an internal note: the run's replies on the merge request are internal.
    pub reply_internal: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepRow {
    pub name: String,
    pub state: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub detail: Option<String>,
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub project: String,
    pub env: String,
    pub trigger: String,
    pub requested_by: Option<String>,
    #[serde(skip)]
    pub requester_id: Option<i64>,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub sha: String,
    pub tag: Option<String>,
    pub pipeline_id: Option<i64>,
    pub mr_iid: Option<i64>,
    pub note_id: Option<i64>,
    /// Asked in an internal note: its replies on the merge request are internal.
    #[serde(skip)]
    pub reply_internal: bool,
    pub state: String,
    pub steps: Vec<StepRow>,
    pub image: Option<String>,
    pub digest: Option<String>,
    /// Every service the run deploys, at its digest (empty for runs before migration 0006
    /// and until the verify step resolved them).
    pub services: Vec<ServiceImage>,
    pub error: Option<String>,
    pub owner: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// One service of a run, as its verify step resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceImage {
    pub service: String,
    /// The image with its tag (`registry/path:tag`).
    pub image: String,
    pub digest: String,
}

impl ServiceImage {
    /// `registry/path:tag@sha256:…`, the way Swarm names a pinned image.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.image, self.digest)
    }
}

impl RunRow {
    /// What the run deployed as `service`, if recorded.
    pub fn service(&self, name: &str) -> Option<&ServiceImage> {
        self.services.iter().find(|s| s.service == name)
    }
}

const RUN_COLUMNS: &str = "id, project, env, trigger, requested_by, requester_id, ref_name, sha, tag, pipeline_id, mr_iid, note_id, reply_internal, state, image, digest, services, error, owner, created_at, started_at, finished_at";

fn run_from(r: &AnyRow) -> Result<RunRow, sqlx::Error> {
    Ok(RunRow {
        id: r.try_get("id")?,
        project: r.try_get("project")?,
        env: r.try_get("env")?,
        trigger: r.try_get("trigger")?,
        requested_by: r.try_get("requested_by")?,
        requester_id: r.try_get("requester_id")?,
        ref_name: r.try_get("ref_name")?,
        sha: r.try_get("sha")?,
        tag: r.try_get("tag")?,
        pipeline_id: r.try_get("pipeline_id")?,
        mr_iid: r.try_get("mr_iid")?,
        note_id: r.try_get("note_id")?,
        reply_internal: r.try_get::<Option<i64>, _>("reply_internal")? == Some(1),
        state: r.try_get("state")?,
        steps: Vec::new(),
        image: r.try_get("image")?,
        digest: r.try_get("digest")?,
        // Written by hoist only; a list it cannot read counts as not recorded.
        services: r
            .try_get::<Option<String>, _>("services")?
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default(),
        error: r.try_get("error")?,
        owner: r.try_get("owner")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// Creates a run with its six steps `pending`. None when a queued or running run for the same commit exists.
pub async fn insert_run(conn: &mut Conn, run: &NewRun) -> Result<Option<i64>, StoreError> {
    let now = now_text();
    let finished = (run.state == REFUSED).then(|| now.clone());
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO runs (project, env, trigger, requested_by, ref_name, sha, tag, pipeline_id, mr_iid, note_id, state, error, created_at, finished_at, requester_id, reply_internal)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&run.project)
    .bind(&run.env)
    .bind(&run.trigger)
    .bind(&run.requested_by)
    .bind(&run.ref_name)
    .bind(&run.sha)
    .bind(&run.tag)
    .bind(run.pipeline_id)
    .bind(run.mr_iid)
    .bind(run.note_id)
    .bind(&run.state)
    .bind(&run.error)
    .bind(&now)
    .bind(&finished)
    .bind(run.requester_id)
    .bind(run.reply_internal.then_some(1_i64))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else { return Ok(None) };
    let step_state = if run.state == REFUSED {
        "skipped"
    } else {
        "pending"
    };
    for (position, name) in STEPS.iter().enumerate() {
        sqlx::query(
            "INSERT INTO run_steps (run_id, position, name, state) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(position as i64)
        .bind(*name)
        .bind(step_state)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Some(id))
}

/// Runs for one commit in one environment, newest first.
pub async fn runs_for_commit(
    conn: &mut Conn,
    project: &str,
    env: &str,
    sha: &str,
) -> Result<Vec<RunRow>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 AND env = $2 AND sha = $3 ORDER BY id DESC"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(project)
        .bind(env)
        .bind(sha)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(run_from).collect::<Result<_, _>>()?)
}

/// Marks queued runs of (project, env) older than `newer` superseded; returns them.
pub async fn supersede_older(
    conn: &mut Conn,
    project: &str,
    env: &str,
    newer: i64,
) -> Result<Vec<RunRow>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 AND env = $2 AND state = 'queued' AND id < $3 ORDER BY id"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(project)
        .bind(env)
        .bind(newer)
        .fetch_all(&mut *conn)
        .await?;
    let older: Vec<RunRow> = rows.iter().map(run_from).collect::<Result<_, _>>()?;
    let now = now_text();
    for run in &older {
        sqlx::query("UPDATE runs SET state = 'superseded', finished_at = $1, error = $2 WHERE id = $3 AND state = 'queued'")
            .bind(&now)
            .bind(format!("superseded by run {newer}"))
            .bind(run.id)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE run_steps SET state = 'skipped' WHERE run_id = $1 AND state = 'pending'",
        )
        .bind(run.id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(older)
}

/// Starts a step: `running` with its start time.
pub async fn start_step(conn: &mut Conn, run_id: i64, step: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE run_steps SET state = 'running', started_at = $1 WHERE run_id = $2 AND name = $3",
    )
    .bind(now_text())
    .bind(run_id)
    .bind(step)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Ends a step with `succeeded`, `failed` or `skipped` and a detail line.
pub async fn finish_step(
    conn: &mut Conn,
    run_id: i64,
    step: &str,
    state: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let now = now_text();
    sqlx::query(
        "UPDATE run_steps SET state = $1, finished_at = $2, started_at = COALESCE(started_at, $2), detail = $3
         WHERE run_id = $4 AND name = $5",
    )
    .bind(state)
    .bind(&now)
    .bind(detail)
    .bind(run_id)
    .bind(step)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets a run's state (and, for final states, its end time and error).
pub async fn set_run_state(
    conn: &mut Conn,
    run_id: i64,
    state: &str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let now = now_text();
    let final_state = ![QUEUED, RUNNING].contains(&state);
    sqlx::query(
        "UPDATE runs SET state = $1, error = COALESCE($2, error),
             started_at = CASE WHEN $1 = 'running' THEN COALESCE(started_at, $3) ELSE started_at END,
             finished_at = CASE WHEN $4 THEN $3 ELSE finished_at END
         WHERE id = $5",
    )
    .bind(state)
    .bind(error)
    .bind(&now)
    .bind(final_state)
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    if final_state {
        sqlx::query(
            "UPDATE run_steps SET state = 'skipped' WHERE run_id = $1 AND state = 'pending'",
        )
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records the images and digests a run deploys: every service's, and the first's in
/// `image` and `digest` (what the API and older readers show).
pub async fn set_run_images(
    conn: &mut Conn,
    run_id: i64,
    services: &[ServiceImage],
) -> Result<(), StoreError> {
    let Some(first) = services.first() else {
        return Ok(());
    };
    let list = serde_json::to_string(services)
        .map_err(|e| StoreError::Failed(format!("cannot write the run's images: {e}")))?;
    sqlx::query("UPDATE runs SET image = $1, digest = $2, services = $3 WHERE id = $4")
        .bind(&first.image)
        .bind(&first.digest)
        .bind(list)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A GitLab write to send: `commit_comment`, `commit_status`, `mr_note`, `react`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    pub run_id: Option<i64>,
    pub project: String,
    /// The run's environment (for log lines), when the write belongs to a run.
    pub env: Option<String>,
    pub kind: String,
    /// `pending`, or `sending` when an attempt may have reached GitLab without its answer
    /// being recorded (hoist stopped in between).
    pub state: String,
    /// What the write targets: a sha, `iid`, or `iid/note_id`.
    pub target: String,
    pub body: String,
    pub attempts: i64,
}

pub async fn enqueue(
    conn: &mut Conn,
    run_id: Option<i64>,
    project: &str,
    kind: &str,
    target: &str,
    body: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (run_id, project, kind, target, body, state, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6)",
    )
    .bind(run_id)
    .bind(project)
    .bind(kind)
    .bind(target)
    .bind(body)
    .bind(now_text())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Runs newest first, filtered.
    pub async fn runs(
        &self,
        project: Option<&str>,
        env: Option<&str>,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1 IS NULL OR project = $1) AND ($2 IS NULL OR env = $2) AND ($3 IS NULL OR state = $3)
             ORDER BY id DESC LIMIT $4"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(project)
            .bind(env)
            .bind(state)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut runs: Vec<RunRow> = rows.iter().map(run_from).collect::<Result<_, _>>()?;
        for run in &mut runs {
            run.steps = self.steps(run.id).await?;
        }
        Ok(runs)
    }

    pub async fn run(&self, id: i64) -> Result<Option<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let mut run = run_from(&row)?;
        run.steps = self.steps(id).await?;
        Ok(Some(run))
    }

    async fn steps(&self, run_id: i64) -> Result<Vec<StepRow>, StoreError> {
        let rows = sqlx::query("SELECT name, state, started_at, finished_at, detail FROM run_steps WHERE run_id = $1 ORDER BY position")
            .bind(run_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StepRow {
                    name: r.try_get("name")?,
                    state: r.try_get("state")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// The oldest queued run of each (project, env) that has no running run.
    pub async fn runnable(&self) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r WHERE state = 'queued'
               AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.project = r.project AND o.env = r.env AND o.state = 'running')
               AND id = (SELECT MIN(id) FROM runs q WHERE q.project = r.project AND q.env = r.env AND q.state = 'queued')
             ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(run_from).collect::<Result<_, _>>()?)
    }

    /// Runs left `running` (by a previous process): resumed at start.
    pub async fn running_runs(&self) -> Result<Vec<RunRow>, StoreError> {
        self.runs(None, None, Some(RUNNING), 1000).await
    }

    /// The newest succeeded run of (project, env): what is live.
    pub async fn live_run(&self, project: &str, env: &str) -> Result<Option<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 AND env = $2 AND state = 'succeeded' ORDER BY finished_at DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(project)
            .bind(env)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref()
            .map(run_from)
            .transpose()
            .map_err(StoreError::from)
    }

    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, o.run_id, o.project, r.env, o.kind, o.state, o.target, o.body, o.attempts
             FROM outbox o LEFT JOIN runs r ON r.id = o.run_id
             WHERE o.state IN ('pending', 'sending') ORDER BY o.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxItem {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    project: r.try_get("project")?,
                    env: r.try_get("env")?,
                    kind: r.try_get("kind")?,
                    state: r.try_get("state")?,
                    target: r.try_get("target")?,
                    body: r.try_get("body")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Records the intent to send an item: if hoist stops before the answer is recorded, the
    /// next attempt first checks whether GitLab has it.
    pub async fn mark_sending(&self, id: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE outbox SET state = 'sending' WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks an outbox item `sent`, or `failed` for good, or bumps its attempts.
    pub async fn outbox_result(
        &self,
        id: i64,
        state: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE outbox SET state = $1, error = $2, attempts = attempts + 1,
                 sent_at = CASE WHEN $1 = 'sent' THEN $3 ELSE sent_at END WHERE id = $4",
        )
        .bind(state)
        .bind(error)
        .bind(now_text())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Writes a step's whole record at once (when its times are known only afterwards).
pub async fn record_step(
    conn: &mut Conn,
    run_id: i64,
    step: &str,
    state: &str,
    started_at: &str,
    finished_at: &str,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE run_steps SET state = $1, started_at = $2, finished_at = $3, detail = $4 WHERE run_id = $5 AND name = $6")
        .bind(state)
        .bind(started_at)
        .bind(finished_at)
        .bind(detail)
        .bind(run_id)
        .bind(step)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Marks a step that is still `running` (or `pending`) failed: the step a run stopped in.
pub async fn fail_open_step(
    conn: &mut Conn,
    run_id: i64,
    step: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let now = now_text();
    sqlx::query(
        "UPDATE run_steps SET state = 'failed', finished_at = $1, started_at = COALESCE(started_at, $1), detail = $2
         WHERE run_id = $3 AND name = $4 AND state IN ('running', 'pending')",
    )
    .bind(&now)
    .bind(detail)
    .bind(run_id)
    .bind(step)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
