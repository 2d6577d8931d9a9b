//! Bulk jobs: one action over every saga a filter selected, stored in the
//! database ([`crate::store::jobs`]) and run in the background, one saga at a
//! time at the configured rate. Any replica lists them and shows their
//! progress; a stop request is seen before the next saga; a job whose runner
//! stopped (crash, restart) is taken over by the next replica's supervisor
//! ([`Ops::resume_stalled_jobs`]) and continues where it was, without acting
//! twice on a saga (the audit trail says what the dead runner did).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{Action, Ops, OpsError, Request};
use crate::domain::{OrderId, SagaVersion};
use crate::store::StoreError;
use crate::store::inspect::SagaFilter;
use crate::store::jobs::{self as store_jobs, Created, JobSpec, Next};

pub use crate::store::jobs::JobStatus;

/// A bulk action over the sagas a filter selects.
#[derive(Debug, Clone)]
pub struct BulkRequest {
    pub filter: SagaFilter,
    /// The filter as the caller gave it (shown with the job).
    pub selection: Value,
    pub action: Action,
    pub actor: String,
    pub reason: String,
    pub dry_run: bool,
    pub limit: Option<u32>,
    pub rate_per_second: u32,
}

/// This process as a runner of bulk jobs: the owner id it heartbeats with.
#[derive(Clone, Debug)]
pub struct Jobs {
    owner: Arc<str>,
}

impl Default for Jobs {
    fn default() -> Jobs {
        Jobs { owner: format!("runner-{}", uuid::Uuid::new_v4()).into() }
    }
}

impl Jobs {
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

/// How long a runner waits after a database error before trying again (the
/// job's heartbeat lapses after [`store_jobs::STALE_AFTER_SECONDS`]; then
/// another runner may take it over and this one stops).
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Consecutive failed steps after which a runner gives the job up: it stays
/// `running`, its heartbeat lapses, and a supervisor (this replica's too)
/// resumes it once the database answers again.
const GIVE_UP_AFTER: u32 = 30;

/// What a job's run came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Finished,
    Cancelled,
    /// Another runner took it over, or this one gave it up (the database
    /// kept failing) for a supervisor to resume.
    Lost,
}

impl Ops {
    /// Stores a job over `selected` (each saga at the version it was
    /// selected at), owned by this process. Run it with [`Ops::run_job`].
    pub async fn create_job(&self, b: &BulkRequest, selected: &[(OrderId, SagaVersion)]) -> Result<JobSpec, OpsError> {
        let job_id = uuid::Uuid::new_v4().to_string();
        let action_json = serde_json::to_value(&b.action).unwrap_or(Value::Null);
        let new = store_jobs::NewJob {
            job_id: &job_id,
            action: b.action.name(),
            action_json: &action_json,
            selection: &b.selection,
            actor: &b.actor,
            reason: &b.reason,
            rate_per_second: b.rate_per_second,
            owner: self.jobs.owner(),
        };
        match store_jobs::create(&self.db, &new, selected).await? {
            Created::Yes => {}
            Created::TooMany(n) => return Err(OpsError::TooManyJobs(n)),
        }
        Ok(JobSpec {
            job_id,
            action_json,
            actor: b.actor.clone(),
            reason: b.reason.clone(),
            rate_per_second: b.rate_per_second,
        })
    }

    /// Runs a job this process owns until every saga has its result, an
    /// operator stops it, or another runner takes it over. `progress` sees
    /// each saga's result.
    pub async fn run_job(&self, spec: &JobSpec, mut progress: impl FnMut(OrderId, &Result<(), String>)) -> JobEnd {
        let owner = self.jobs.owner().to_owned();
        let action: Option<Action> = serde_json::from_value(spec.action_json.clone()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(spec.rate_per_second.max(1))));
        let mut failures = 0;
        loop {
            // The rate: the first tick is at once. A stop request seen by the
            // read below is honoured before the next saga.
            tick.tick().await;
            let step = async {
                match store_jobs::next(&self.db, &spec.job_id, &owner).await? {
                    Next::Lost => Ok::<_, StoreError>(Some(JobEnd::Lost)),
                    Next::Cancel => {
                        store_jobs::end(&self.db, &spec.job_id, &owner, true).await?;
                        Ok(Some(JobEnd::Cancelled))
                    }
                    Next::Done => {
                        store_jobs::end(&self.db, &spec.job_id, &owner, false).await?;
                        Ok(Some(JobEnd::Finished))
                    }
                    Next::Item { seq, order_id, expected_version } => {
                        // A runner before this one may have acted and died
                        // before recording it: its audit row says how it went.
                        let result = match store_jobs::audited(&self.db, &spec.job_id, order_id).await? {
                            Some((true, _)) => Ok(()),
                            Some((false, why)) => Err(why),
                            None => {
                                match &action {
                                    None => Err("the job's action cannot be read by this version".to_owned()),
                                    Some(action) => {
                                        let req = Request {
                                            order_id,
                                            action: action.clone(),
                                            expected_version,
                                            actor: spec.actor.clone(),
                                            reason: spec.reason.clone(),
                                            dry_run: false,
                                            job_id: Some(spec.job_id.clone()),
                                        };
                                        match self.act(&req).await {
                                            Ok(_) => Ok(()),
                                            // A database error is not the saga's answer: try it again.
                                            Err(OpsError::Store(e)) => return Err(e),
                                            Err(e) => Err(e.to_string()),
                                        }
                                    }
                                }
                            }
                        };
                        let recorded = result.as_ref().map(|_| ()).map_err(String::as_str);
                        store_jobs::record(&self.db, &spec.job_id, &owner, seq, recorded).await?;
                        progress(order_id, &result);
                        Ok(None)
                    }
                }
            };
            match step.await {
                Ok(Some(end)) => {
                    tracing::info!(job_id = %spec.job_id, end = ?end, "bulk job ended");
                    return end;
                }
                Ok(None) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures >= GIVE_UP_AFTER {
                        tracing::error!(job_id = %spec.job_id, error = %e, failures,
                            "bulk job: the database keeps failing; leaving the job to the supervisor");
                        return JobEnd::Lost;
                    }
                    tracing::warn!(job_id = %spec.job_id, error = %e, "bulk job step failed; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// Takes over the jobs whose runner stopped heartbeating and runs them in
    /// the background. Returns how many it took.
    pub async fn resume_stalled_jobs(&self) -> Result<usize, StoreError> {
        let specs = store_jobs::claim_stale(&self.db, self.jobs.owner()).await?;
        for spec in &specs {
            tracing::warn!(job_id = %spec.job_id, "resuming a bulk job whose runner stopped");
            let (ops, spec) = (self.clone(), spec.clone());
            tokio::spawn(async move { ops.run_job(&spec, |_, _| {}).await });
        }
        Ok(specs.len())
    }

    /// Asks a job to stop; `None` when there is no such job.
    pub async fn cancel_job(&self, job_id: &str, by: &str) -> Result<Option<JobStatus>, StoreError> {
        if store_jobs::request_cancel(&self.db, job_id, by).await?.is_none() {
            return Ok(None);
        }
        tracing::warn!(job_id, by, "bulk job stop requested");
        store_jobs::get(&self.db, job_id).await
    }

    /// One job with its per-item results.
    pub async fn job(&self, job_id: &str) -> Result<Option<JobStatus>, StoreError> {
        store_jobs::get(&self.db, job_id).await
    }

    /// The newest jobs first.
    pub async fn list_jobs(&self, limit: u32) -> Result<Vec<JobStatus>, StoreError> {
        store_jobs::list(&self.db, limit).await
    }
}

/// Resumes stalled jobs every `every` until `stop` (each replica runs one:
/// whichever sees a stalled job first takes it).
pub async fn supervise(ops: Ops, every: Duration, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = ops.resume_stalled_jobs().await {
            tracing::warn!(error = %e, "cannot look for stalled bulk jobs; the next tick retries");
        }
    }
}
