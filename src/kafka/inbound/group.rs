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
//! order they arrived. By default nothing waits on a timer: when the database
//! keeps up, every run goes alone at once. A `linger` (off by default) trades
//! latency for fewer transactions at moderate load: a group with a free slot
//! waits up to that long after its first run for more runs before it commits.
//! A run long enough to pay for its own transaction (a fair share of a
//! group's events) does not queue at all: it
//! commits alone at once, outside the slots — under load, when partitions'
//! runs are long, the committer must not become the one queue every
//! partition waits in (BENCHMARKS.md, "Consumer group commit").
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
use std::time::Duration;

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
    /// A group stops taking runs once it holds this many events; a run of
    /// `max_events / max_runs` events or more goes alone ([`GroupLimits::shares`]).
    pub max_events: usize,
    /// Transactions of groups open at once.
    pub in_flight: usize,
    /// How long a group with a free slot waits after its first run for more
    /// runs (zero: it commits at once). It stops waiting as soon as it is full.
    pub linger: Duration,
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
            let mut open = true;
            loop {
                let first = match held.take() {
                    Some(j) => j,
                    None if open => match rx.recv().await {
                        Some(j) => j,
                        None => return,
                    },
                    None => return,
                };
                if !limits.shares(first.run.len()) {
                    alone(&applier, first);
                    continue;
                }
                let arrived = tokio::time::Instant::now();
                let mut group = Group { events: first.run.len(), jobs: vec![first] };
                // A free slot first: while every slot commits, small runs join
                // this group and large ones go at once.
                let permit = loop {
                    tokio::select! {
                        biased;
                        p = permits.clone().acquire_owned() => match p {
                            Ok(p) => break p,
                            Err(_) => return,
                        },
                        j = rx.recv(), if open && held.is_none() => match j {
                            Some(j) => held = group.take(&limits, j, &applier),
                            None => open = false,
                        },
                    }
                };
                while held.is_none() && group.fits(&limits) {
                    match rx.try_recv() {
                        Ok(j) => held = group.take(&limits, j, &applier),
                        Err(_) => break,
                    }
                }
                // Deliberate batching: with a slot in hand, wait for more runs
                // until the group is full or its first run has waited `linger`.
                if !limits.linger.is_zero() {
                    let deadline = arrived + limits.linger;
                    while open && held.is_none() && group.fits(&limits) {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(j)) => held = group.take(&limits, j, &applier),
                            Ok(None) => open = false,
                            Err(_) => break,
                        }
                    }
                }
                let (applier, jobs) = (applier.clone(), group.jobs);
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

impl GroupLimits {
    /// Whether a run of `events` events gains from sharing a transaction.
    /// One that holds at least a group's fair share of events
    /// (`max_events / max_runs`) already pays for its own transaction: it
    /// goes at once, alone, without waiting for a slot — under load, when
    /// partitions' runs are long, the committer must not become the one
    /// queue every partition waits in.
    pub fn shares(&self, events: usize) -> bool {
        events.saturating_mul(self.max_runs) < self.max_events
    }
}

/// Runs gathered for one transaction.
struct Group<F> {
    jobs: Vec<Job<F>>,
    events: usize,
}

impl<F: Send + 'static> Group<F> {
    /// Whether the group may take another run.
    fn fits(&self, limits: &GroupLimits) -> bool {
        self.jobs.len() < limits.max_runs && self.events < limits.max_events
    }

    /// Places a run that arrived while the group waits: a large one goes at
    /// once, a small one joins if it fits; one that does not is handed back
    /// (it starts the next group).
    fn take<A: RunApplier<Failure = F>>(
        &mut self,
        limits: &GroupLimits,
        job: Job<F>,
        applier: &Arc<A>,
    ) -> Option<Job<F>> {
        if !limits.shares(job.run.len()) {
            alone(applier, job);
            None
        } else if self.fits(limits) && self.events + job.run.len() <= limits.max_events {
            self.events += job.run.len();
            self.jobs.push(job);
            None
        } else {
            Some(job)
        }
    }
}

/// Commits one run in its own transaction now, outside the slots.
fn alone<A: RunApplier>(applier: &Arc<A>, job: Job<A::Failure>) {
    let applier = applier.clone();
    tokio::spawn(async move { commit(applier.as_ref(), vec![job]).await });
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
