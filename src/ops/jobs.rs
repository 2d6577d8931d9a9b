//! Bulk jobs: one action over every saga a filter selects, run in the
//! background with progress and per-item results.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};

use super::Action;
use crate::store::inspect::SagaFilter;

/// A bulk action over the sagas a filter selects.
#[derive(Debug, Clone)]
pub struct BulkRequest {
    pub filter: SagaFilter,
    pub action: Action,
    pub actor: String,
    pub reason: String,
    pub dry_run: bool,
    pub limit: Option<u32>,
    pub rate_per_second: u32,
}

/// Progress of bulk jobs (per process). At most `JOBS_KEPT` (100) finished jobs
/// are remembered; older finished ones are forgotten first.
#[derive(Clone, Default)]
pub struct Jobs {
    inner: Arc<Mutex<JobMap>>,
}

#[derive(Default)]
struct JobMap {
    by_id: HashMap<String, JobStatus>,
    /// Job ids, oldest first.
    order: std::collections::VecDeque<String>,
}

/// Finished bulk jobs remembered per process.
pub const JOBS_KEPT: usize = 100;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub job_id: String,
    pub action: String,
    pub total: usize,
    pub done: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub finished: bool,
    /// The first errors, by order id.
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<Value>,
    /// Every item's result in order (`applied` or `refused` with the error),
    /// the first [`JOB_RESULTS_KEPT`] of them.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
}

/// Per-item results kept per bulk job (the counts cover every item).
pub const JOB_RESULTS_KEPT: usize = 1000;

impl Jobs {
    pub(super) fn start(&self, action: &str, total: usize) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let status = JobStatus {
            job_id: id.clone(),
            action: action.into(),
            total,
            done: 0,
            succeeded: 0,
            failed: 0,
            finished: total == 0,
            errors: Vec::new(),
            results: Vec::new(),
        };
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.by_id.insert(id.clone(), status);
        map.order.push_back(id.clone());
        let JobMap { by_id, order } = &mut *map;
        let mut finished = by_id.values().filter(|s| s.finished).count();
        order.retain(|j| {
            let evict = finished > JOBS_KEPT && by_id.get(j).is_some_and(|s| s.finished);
            if evict {
                by_id.remove(j);
                finished -= 1;
            }
            !evict
        });
        id
    }

    pub(super) fn progress(&self, job: &str, order_id: i64, r: Result<(), String>) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.by_id.get_mut(job) {
            s.done += 1;
            let item = match &r {
                Ok(()) => json!({"order_id": order_id, "result": "applied"}),
                Err(e) => json!({"order_id": order_id, "result": "refused", "error": e}),
            };
            if s.results.len() < JOB_RESULTS_KEPT {
                s.results.push(item);
            }
            match r {
                Ok(()) => s.succeeded += 1,
                Err(e) => {
                    s.failed += 1;
                    if s.errors.len() < 50 {
                        s.errors.push(json!({"order_id": order_id, "error": e}));
                    }
                }
            }
        }
    }

    pub(super) fn finish(&self, job: &str) {
        if let Some(s) = self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.get_mut(job) {
            s.finished = true;
        }
    }

    pub fn get(&self, job: &str) -> Option<JobStatus> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.get(job).cloned()
    }

    /// How many jobs are remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_jobs_are_forgotten_oldest_first_running_ones_never() {
        let jobs = Jobs::default();
        let running = jobs.start("cancel", 5);
        let first_done = jobs.start("cancel", 0);
        for _ in 0..10_000 {
            jobs.start("cancel", 0);
        }
        assert_eq!(jobs.len(), JOBS_KEPT + 1, "the finished ones kept, and the running one");
        assert!(jobs.get(&running).is_some(), "a running job is never forgotten");
        assert!(jobs.get(&first_done).is_none(), "the oldest finished job went first");
    }
}
