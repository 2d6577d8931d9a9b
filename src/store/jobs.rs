//! Bulk jobs in the database (`ops_jobs`, `ops_job_items`): listed and
//! followed from any replica, stopped by a request any replica can record,
//! and resumed by another runner when theirs stops heartbeating.
//!
//! A job's runner (`Ops::run_job` in the ops module) takes the next pending
//! item, acts on it (the action's own transaction writes its audit row with
//! the job id), then records the result here. If it dies in between, the
//! runner that resumes the job finds the audit row and records that result
//! instead of acting twice.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{MySql, QueryBuilder, Row};

use super::{Ctx, Db, StoreError, truncate};
use crate::domain::{OrderId, SagaVersion};

/// Jobs running at once, over every replica: more are refused (409).
pub const MAX_RUNNING: i64 = 4;
/// Finished and cancelled jobs are kept this many days.
pub const RETENTION_DAYS: u32 = 30;
/// A runner that has not heartbeated for this long has stopped: another takes over.
pub const STALE_AFTER_SECONDS: u32 = 30;
/// Per-item results returned with a job (the counts cover every item).
pub const RESULTS_SHOWN: u32 = 1000;

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub job_id: &'a str,
    pub action: &'a str,
    pub action_json: &'a Value,
    pub selection: &'a Value,
    pub actor: &'a str,
    pub reason: &'a str,
    pub rate_per_second: u32,
    pub owner: &'a str,
}

/// Why a job could not be created.
#[derive(Debug)]
pub enum Created {
    Yes,
    /// [`MAX_RUNNING`] jobs run already.
    TooMany(i64),
}

/// Creates a job with its items (each saga at the version it was selected
/// at), owned by `owner`, unless [`MAX_RUNNING`] jobs run already.
pub async fn create(db: &Db, job: &NewJob<'_>, items: &[(OrderId, SagaVersion)]) -> Result<Created, StoreError> {
    let mut tx = db.begin().await?;
    // Serialises job creation: the count below holds until commit.
    let running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ops_jobs WHERE state = 'running' FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .ctx("counting running jobs")?;
    if running >= MAX_RUNNING {
        return Ok(Created::TooMany(running));
    }
    let state = if items.is_empty() { "finished" } else { "running" };
    sqlx::query(
        "INSERT INTO ops_jobs (job_id, action, action_json, selection, actor, reason, state, total, rate_per_second, \
         owner, heartbeat_at, created_at, finished_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NOW(6), NOW(6), IF(? = 'finished', NOW(6), NULL))",
    )
    .bind(job.job_id)
    .bind(truncate(job.action, 64))
    .bind(job.action_json.to_string())
    .bind(job.selection.to_string())
    .bind(truncate(job.actor, 128))
    .bind(truncate(job.reason, 1000))
    .bind(state)
    .bind(u32::try_from(items.len()).unwrap_or(u32::MAX))
    .bind(job.rate_per_second)
    .bind(job.owner)
    .bind(state)
    .execute(&mut *tx)
    .await
    .ctx("creating a bulk job")?;
    for (chunk_no, chunk) in items.chunks(crate::store::limits::ROWS_PER_STATEMENT).enumerate() {
        let base = chunk_no * crate::store::limits::ROWS_PER_STATEMENT;
        let mut qb: QueryBuilder<MySql> =
            QueryBuilder::new("INSERT INTO ops_job_items (job_id, seq, order_id, expected_version) ");
        qb.push_values(chunk.iter().enumerate(), |mut b, (i, (order_id, version))| {
            b.push_bind(job.job_id)
                .push_bind(u32::try_from(base + i).unwrap_or(u32::MAX))
                .push_bind(*order_id)
                .push_bind(*version);
        });
        qb.build().execute(&mut *tx).await.ctx("storing the job's sagas")?;
    }
    tx.commit().await.ctx("committing the job")?;
    Ok(Created::Yes)
}

/// What a runner needs to (re)start a job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub job_id: String,
    pub action_json: Value,
    pub actor: String,
    pub reason: String,
    pub rate_per_second: u32,
}

/// Takes over running jobs whose runner stopped heartbeating (crashed,
/// restarted, partitioned away): each now owned by `owner`.
pub async fn claim_stale(db: &Db, owner: &str) -> Result<Vec<JobSpec>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT job_id FROM ops_jobs WHERE state = 'running' AND heartbeat_at < NOW(6) - INTERVAL ? SECOND LIMIT 16",
    )
    .bind(STALE_AFTER_SECONDS)
    .fetch_all(&db.pool)
    .await
    .ctx("finding stalled jobs")?;
    let mut claimed = Vec::new();
    for id in ids {
        // One replica wins each job: the condition is re-checked by the update.
        let won = sqlx::query(
            "UPDATE ops_jobs SET owner = ?, heartbeat_at = NOW(6), resumed = resumed + 1 \
             WHERE job_id = ? AND state = 'running' AND heartbeat_at < NOW(6) - INTERVAL ? SECOND",
        )
        .bind(owner)
        .bind(&id)
        .bind(STALE_AFTER_SECONDS)
        .execute(&db.pool)
        .await
        .ctx("taking over a stalled job")?
        .rows_affected()
            == 1;
        if won && let Some(spec) = spec(db, &id).await? {
            claimed.push(spec);
        }
    }
    Ok(claimed)
}

async fn spec(db: &Db, job_id: &str) -> Result<Option<JobSpec>, StoreError> {
    let row = sqlx::query("SELECT action_json, actor, reason, rate_per_second FROM ops_jobs WHERE job_id = ?")
        .bind(job_id)
        .fetch_optional(&db.pool)
        .await
        .ctx("reading a job")?;
    row.map(|r| {
        let action: String = r.try_get("action_json").ctx("decoding action_json")?;
        Ok(JobSpec {
            job_id: job_id.to_owned(),
            action_json: serde_json::from_str(&action).unwrap_or(Value::Null),
            actor: r.try_get("actor").ctx("decoding actor")?,
            reason: r.try_get("reason").ctx("decoding reason")?,
            rate_per_second: r.try_get("rate_per_second").ctx("decoding rate_per_second")?,
        })
    })
    .transpose()
}

/// What the runner should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Act on this item.
    Item { seq: u32, order_id: OrderId, expected_version: SagaVersion },
    /// Every item has its result.
    Done,
    /// An operator asked to stop it.
    Cancel,
    /// Another runner owns it now (this one stalled): stop without writing.
    Lost,
}

/// Heartbeats (while `owner` still owns the job) and says what comes next.
pub async fn next(db: &Db, job_id: &str, owner: &str) -> Result<Next, StoreError> {
    let owned =
        sqlx::query("UPDATE ops_jobs SET heartbeat_at = NOW(6) WHERE job_id = ? AND owner = ? AND state = 'running'")
            .bind(job_id)
            .bind(owner)
            .execute(&db.pool)
            .await
            .ctx("heartbeating a job")?
            .rows_affected()
            == 1;
    if !owned {
        return Ok(Next::Lost);
    }
    let cancel: Option<String> = sqlx::query_scalar("SELECT cancel_requested_by FROM ops_jobs WHERE job_id = ?")
        .bind(job_id)
        .fetch_one(&db.pool)
        .await
        .ctx("reading a job's cancel request")?;
    if cancel.is_some() {
        return Ok(Next::Cancel);
    }
    let row = sqlx::query(
        "SELECT seq, order_id, expected_version FROM ops_job_items WHERE job_id = ? AND result = 'pending' \
         ORDER BY seq LIMIT 1",
    )
    .bind(job_id)
    .fetch_optional(&db.pool)
    .await
    .ctx("reading a job's next saga")?;
    let Some(r) = row else { return Ok(Next::Done) };
    let order_id: OrderId = r.try_get("order_id").ctx("decoding order_id")?;
    Ok(Next::Item {
        seq: r.try_get("seq").ctx("decoding seq")?,
        order_id,
        expected_version: r.try_get("expected_version").ctx("decoding expected_version")?,
    })
}

/// The result an earlier runner's action on this saga recorded in the audit
/// trail (it died before recording it here), if any.
pub async fn audited(db: &Db, job_id: &str, order_id: OrderId) -> Result<Option<(bool, String)>, StoreError> {
    let row = sqlx::query("SELECT result, detail FROM ops_audit WHERE job_id = ? AND order_id = ? ORDER BY id LIMIT 1")
        .bind(job_id)
        .bind(order_id)
        .fetch_optional(&db.pool)
        .await
        .ctx("reading a job's audit")?;
    row.map(|r| {
        let result: String = r.try_get("result").ctx("decoding result")?;
        let detail: Option<String> = r.try_get("detail").ctx("decoding detail")?;
        Ok((result == "applied", detail.unwrap_or_default()))
    })
    .transpose()
}

/// Records one item's result and the job's counters (while `owner` owns it).
pub async fn record(db: &Db, job_id: &str, owner: &str, seq: u32, result: Result<(), &str>) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    let (label, error) = match result {
        Ok(()) => ("applied", None),
        Err(e) => ("refused", Some(truncate(e, 1000))),
    };
    let changed = sqlx::query(
        "UPDATE ops_job_items SET result = ?, error = ? WHERE job_id = ? AND seq = ? AND result = 'pending'",
    )
    .bind(label)
    .bind(error)
    .bind(job_id)
    .bind(seq)
    .execute(&mut *tx)
    .await
    .ctx("recording a job item")?
    .rows_affected();
    if changed == 1 {
        let ok = u32::from(result.is_ok());
        sqlx::query(
            "UPDATE ops_jobs SET done = done + 1, succeeded = succeeded + ?, failed = failed + ?, heartbeat_at = NOW(6) \
             WHERE job_id = ? AND owner = ?",
        )
        .bind(ok)
        .bind(1 - ok)
        .bind(job_id)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .ctx("counting a job item")?;
    }
    tx.commit().await.ctx("committing a job item")?;
    Ok(())
}

/// Ends a job: `finished`, or `cancelled` with its pending items marked so.
pub async fn end(db: &Db, job_id: &str, owner: &str, cancelled: bool) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    let state = if cancelled { "cancelled" } else { "finished" };
    let mine = sqlx::query(
        "UPDATE ops_jobs SET state = ?, finished_at = NOW(6) WHERE job_id = ? AND owner = ? AND state = 'running'",
    )
    .bind(state)
    .bind(job_id)
    .bind(owner)
    .execute(&mut *tx)
    .await
    .ctx("ending a job")?
    .rows_affected()
        == 1;
    if mine && cancelled {
        sqlx::query("UPDATE ops_job_items SET result = 'cancelled' WHERE job_id = ? AND result = 'pending'")
            .bind(job_id)
            .execute(&mut *tx)
            .await
            .ctx("marking a cancelled job's sagas")?;
    }
    tx.commit().await.ctx("committing a job's end")?;
    Ok(())
}

/// Asks a running job to stop (its runner stops before the next saga).
/// Returns the job's state, or `None` when there is no such job.
pub async fn request_cancel(db: &Db, job_id: &str, by: &str) -> Result<Option<String>, StoreError> {
    sqlx::query(
        "UPDATE ops_jobs SET cancel_requested_by = COALESCE(cancel_requested_by, ?) \
         WHERE job_id = ? AND state = 'running'",
    )
    .bind(truncate(by, 128))
    .bind(job_id)
    .execute(&db.pool)
    .await
    .ctx("asking a job to stop")?;
    sqlx::query_scalar("SELECT CAST(state AS CHAR) FROM ops_jobs WHERE job_id = ?")
        .bind(job_id)
        .fetch_optional(&db.pool)
        .await
        .ctx("reading a job's state")
}

/// Forgets finished and cancelled jobs older than [`RETENTION_DAYS`].
pub async fn purge(db: &Db) -> Result<u64, StoreError> {
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT job_id FROM ops_jobs WHERE state <> 'running' AND finished_at < NOW(6) - INTERVAL ? DAY LIMIT 1000",
    )
    .bind(RETENTION_DAYS)
    .fetch_all(&db.pool)
    .await
    .ctx("finding old jobs")?;
    for id in &old {
        let mut tx = db.begin().await?;
        sqlx::query("DELETE FROM ops_job_items WHERE job_id = ?").bind(id).execute(&mut *tx).await.ctx("purge")?;
        sqlx::query("DELETE FROM ops_jobs WHERE job_id = ?").bind(id).execute(&mut *tx).await.ctx("purge")?;
        tx.commit().await.ctx("purging a job")?;
    }
    Ok(old.len() as u64)
}

/// A job as `/ops/jobs` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub job_id: String,
    pub action: String,
    /// The selection the job was started with (the filter previewed).
    #[schema(value_type = Object)]
    pub selection: Value,
    pub actor: String,
    pub reason: String,
    /// `running`, `finished` or `cancelled`.
    pub state: String,
    pub total: u32,
    pub done: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// `done == total` or stopped: nothing more will happen.
    pub finished: bool,
    /// Who asked it to stop.
    pub cancel_requested_by: Option<String>,
    /// How many times a runner took it over from one that stopped.
    pub resumed: u32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds since its runner last reported (a running job whose runner
    /// stopped is resumed after [`STALE_AFTER_SECONDS`]).
    pub heartbeat_age_seconds: f64,
    /// The first failures, by order id (only with one job).
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<Value>,
    /// Every item's result in order (`applied`, `refused` with the error,
    /// `cancelled`, `pending`), the first [`RESULTS_SHOWN`] (only with one job).
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
}

/// The columns of a [`JobStatus`] (a macro: statement texts stay literals).
macro_rules! select_jobs {
    ($rest:literal) => {
        concat!(
            "SELECT job_id, action, selection, actor, reason, CAST(state AS CHAR) AS state, total, done, succeeded, \
             failed, cancel_requested_by, resumed, created_at, finished_at, \
             TIMESTAMPDIFF(MICROSECOND, heartbeat_at, NOW(6)) AS heartbeat_age_us FROM ops_jobs ",
            $rest
        )
    };
}

fn job_of(r: &sqlx::mysql::MySqlRow) -> Result<JobStatus, StoreError> {
    let state: String = r.try_get("state").ctx("decoding state")?;
    let selection: String = r.try_get("selection").ctx("decoding selection")?;
    let age_us: i64 = r.try_get("heartbeat_age_us").ctx("decoding heartbeat age")?;
    Ok(JobStatus {
        job_id: r.try_get("job_id").ctx("decoding job_id")?,
        action: r.try_get("action").ctx("decoding action")?,
        selection: serde_json::from_str(&selection).unwrap_or(Value::Null),
        actor: r.try_get("actor").ctx("decoding actor")?,
        reason: r.try_get("reason").ctx("decoding reason")?,
        finished: state != "running",
        state,
        total: r.try_get("total").ctx("decoding total")?,
        done: r.try_get("done").ctx("decoding done")?,
        succeeded: r.try_get("succeeded").ctx("decoding succeeded")?,
        failed: r.try_get("failed").ctx("decoding failed")?,
        cancel_requested_by: r.try_get("cancel_requested_by").ctx("decoding cancel_requested_by")?,
        resumed: r.try_get("resumed").ctx("decoding resumed")?,
        created_at: r.try_get("created_at").ctx("decoding created_at")?,
        finished_at: r.try_get("finished_at").ctx("decoding finished_at")?,
        heartbeat_age_seconds: age_us.max(0) as f64 / 1e6,
        errors: Vec::new(),
        results: Vec::new(),
    })
}

/// One job with its per-item results.
pub async fn get(db: &Db, job_id: &str) -> Result<Option<JobStatus>, StoreError> {
    let Some(row) = sqlx::query(select_jobs!("WHERE job_id = ?"))
        .bind(job_id)
        .fetch_optional(&db.pool)
        .await
        .ctx("reading a job")?
    else {
        return Ok(None);
    };
    let mut job = job_of(&row)?;
    let items = sqlx::query(
        "SELECT order_id, CAST(result AS CHAR) AS result, error FROM ops_job_items WHERE job_id = ? ORDER BY seq LIMIT ?",
    )
    .bind(job_id)
    .bind(RESULTS_SHOWN)
    .fetch_all(&db.pool)
    .await
    .ctx("reading a job's results")?;
    for r in items {
        let order_id: OrderId = r.try_get("order_id").ctx("decoding order_id")?;
        let result: String = r.try_get("result").ctx("decoding result")?;
        let error: Option<String> = r.try_get("error").ctx("decoding error")?;
        if let Some(e) = &error
            && job.errors.len() < 50
        {
            job.errors.push(json!({"order_id": order_id, "error": e}));
        }
        job.results.push(match error {
            Some(e) => json!({"order_id": order_id, "result": result, "error": e}),
            None => json!({"order_id": order_id, "result": result}),
        });
    }
    Ok(Some(job))
}

/// The newest jobs first (without per-item results).
pub async fn list(db: &Db, limit: u32) -> Result<Vec<JobStatus>, StoreError> {
    let rows = sqlx::query(select_jobs!("ORDER BY created_at DESC, job_id LIMIT ?"))
        .bind(limit)
        .fetch_all(&db.pool)
        .await
        .ctx("listing jobs")?;
    rows.iter().map(job_of).collect()
}
