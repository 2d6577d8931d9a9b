//! Group commit of event runs: runs of different partitions that become
//! ready while earlier ones commit share one transaction.
//!
//! Each partition's worker applies its events in runs (a batch, or a part of
//! one while the retry policy splits it). Alone, every run costs a
//! transaction of about a dozen statements and a durable commit whatever its
//! length — at moderate load, where a partition rarely has more than one
//! event queued, that is a transaction per event. Here a run is handed to one
//! committer that keeps at most `in_flight` transactions open; runs that
//! arrive while they commit wait and go together into the next one, in the
//! order they arrived. Nothing waits on a timer: when the database keeps up,
//! every run goes alone at once.
//!
//! Every run keeps its own outcome. A shared transaction that fails for any
//! reason — a refusal caused by one run's event, a definition version one
//! run's saga needs, a transient error, a panic — is rolled back, and every
//! run of the group then goes alone, exactly as if it had never been grouped,
//! so one run cannot fail its neighbours and each run's retry policy sees only
//! its own failures.
//!
//! Ordering holds: a partition has one worker, which hands over one run at a
//! time and waits for its outcome. Runs of different partitions have no order
//! between them; within a group they are applied in arrival order, one serial
//! order among those the separate transactions could have committed in.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::orchestrator::{BatchResult, Inbound};

/// What the committer runs: one transaction for a run of events
/// (`EventHandler`'s `apply_once`).
pub trait RunApplier: Send + Sync + 'static {
    type Failure: Send + 'static;
    fn apply(&self, run: &[Inbound]) -> impl Future<Output = Result<BatchResult, Self::Failure>> + Send;
    /// Sees the number of runs of each transaction (a metric).
    fn grouped(&self, runs: usize);
}

/// The committer's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Runs per shared transaction at most (1: every run alone).
    pub max_runs: usize,
    /// A group stops taking runs once it holds this many events.
    pub max_events: usize,
    /// Transactions of groups open at once.
    pub in_flight: usize,
}

struct Job<F> {
    run: Vec<Inbound>,
    reply: oneshot::Sender<Result<BatchResult, F>>,
}

/// The consumer's front door to the committer. Cheap to clone.
pub struct RunCommitter<F> {
    jobs: mpsc::UnboundedSender<Job<F>>,
}

impl<F> Clone for RunCommitter<F> {
    fn clone(&self) -> Self {
        RunCommitter { jobs: self.jobs.clone() }
    }
}

impl<F: Send + 'static> RunCommitter<F> {
    /// Starts the committer on the current runtime. The queue needs no bound:
    /// each partition's worker has at most one run in it.
    pub fn spawn<A: RunApplier<Failure = F>>(applier: A, limits: GroupLimits) -> RunCommitter<F> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job<F>>();
        let applier = Arc::new(applier);
        let permits = Arc::new(Semaphore::new(limits.in_flight.max(1)));
        tokio::spawn(async move {
            // A run taken from the queue that did not fit the last group.
            let mut held: Option<Job<F>> = None;
            loop {
                // A free slot first: while every slot commits, runs queue here
                // and the next group takes them.
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let first = match held.take() {
                    Some(j) => j,
                    None => match rx.recv().await {
                        Some(j) => j,
                        None => return,
                    },
                };
                let mut events = first.run.len();
                let mut jobs = vec![first];
                while fits(&limits, jobs.len(), events) {
                    match rx.try_recv() {
                        Ok(j) if events + j.run.len() <= limits.max_events => {
                            events += j.run.len();
                            jobs.push(j);
                        }
                        Ok(j) => {
                            held = Some(j);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let applier = applier.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    commit(applier.as_ref(), jobs).await;
                });
            }
        });
        RunCommitter { jobs: tx }
    }

    /// Applies `run` in one transaction, possibly shared with other runs.
    /// `None`: the committer has stopped (the runtime is shutting down).
    pub async fn apply(&self, run: Vec<Inbound>) -> Option<Result<BatchResult, F>> {
        self.submit(run)?.await.ok()
    }

    /// Queues `run` now; its outcome comes on the receiver.
    fn submit(&self, run: Vec<Inbound>) -> Option<oneshot::Receiver<Result<BatchResult, F>>> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { run, reply }).ok()?;
        Some(answer)
    }
}

/// Whether a group of `runs` runs and `events` events may take another run.
fn fits(limits: &GroupLimits, runs: usize, events: usize) -> bool {
    runs < limits.max_runs && events < limits.max_events
}

/// One transaction for the group; on any failure, each run alone.
async fn commit<A: RunApplier>(applier: &A, jobs: Vec<Job<A::Failure>>) {
    if let [_] = jobs.as_slice() {
        let Some(job) = jobs.into_iter().next() else { return };
        applier.grouped(1);
        let outcome = applier.apply(&job.run).await;
        let _ = job.reply.send(outcome);
        return;
    }
    let lens: Vec<usize> = jobs.iter().map(|j| j.run.len()).collect();
    let all: Vec<Inbound> = jobs.iter().flat_map(|j| j.run.iter().cloned()).collect();
    match applier.apply(&all).await {
        Ok(result) => {
            applier.grouped(jobs.len());
            for (job, part) in jobs.into_iter().zip(split(result, &lens)) {
                let _ = job.reply.send(Ok(part));
            }
        }
        Err(_) => {
            tracing::debug!(runs = jobs.len(), "a shared event transaction failed; every run goes alone");
            for job in jobs {
                applier.grouped(1);
                let outcome = applier.apply(&job.run).await;
                let _ = job.reply.send(outcome);
            }
        }
    }
}

/// The result of a shared transaction, told back to its runs: each run gets
/// the outcomes of its own events; what the transaction did as a whole
/// (alerts, dwell, status changes, outbox rows) goes to the first run, so
/// that metrics count it once.
pub(crate) fn split(mut result: BatchResult, lens: &[usize]) -> Vec<BatchResult> {
    let total: usize = lens.iter().sum();
    if result.outcomes.len() != total || lens.is_empty() {
        // Not one outcome per event: nothing to tell apart, all to the first.
        let mut out = vec![result];
        out.extend(lens.iter().skip(1).map(|_| BatchResult::default()));
        return out;
    }
    let mut outcomes = std::mem::take(&mut result.outcomes).into_iter();
    let mut whole = Some(result);
    lens.iter()
        .map(|&n| BatchResult { outcomes: outcomes.by_ref().take(n).collect(), ..whole.take().unwrap_or_default() })
        .collect()
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
