//! The consumer's split-and-retry policy for one batch, as a sans-IO state
//! machine (quinn-proto's shape: the driver asks [`BatchRetry::poll`] what to
//! do, does it, and reports back with [`BatchRetry::applied`] or
//! [`BatchRetry::failed`]). No database, no runtime, no clock: time comes in
//! as an argument, so every path is unit-tested on a simulated clock.
//!
//! The rules, for a batch of `n` events applied in order:
//!
//! * A run that commits is done; the backoff starts again from the bottom.
//! * A **transient** failure retries the same run after a backoff (50 ms
//!   doubling to 5 s), whatever its size: nothing is split or dropped for a
//!   failure of the database.
//! * A run the database **refuses** is split in halves, first half first,
//!   until the event that causes it is alone. That event is refused alone
//!   [`REFUSALS_BEFORE_DEAD_LETTER`] times, with backoff, before it is blamed
//!   (an error code the allow-list does not know as transient must not cost a
//!   valid event its saga); then its poison copy is applied (dead letter,
//!   saga quarantined). If even that copy fails, the fault is not the
//!   event's: wait, and try the event again from the start.
//! * A saga on a definition version this replica has not loaded is waited
//!   for (a newer replica of a rolling deploy takes it) for `patience` from
//!   the first such failure; after that the run is applied with
//!   [`UnknownVersion::Quarantine`], which parks the event and quarantines the
//!   saga instead of waiting.
//!
//! Per-order order holds because runs are applied strictly in batch order: a
//! later run is only tried once every earlier one is applied or dead-lettered.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::orchestrator::UnknownVersion;

/// How many times one event alone must be refused by the database (with
/// backoff between) before it is dead-lettered.
pub const REFUSALS_BEFORE_DEAD_LETTER: u32 = 3;

/// Backoff before the `attempt`-th retry of the same run: 50 ms doubling to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(7)).min(5_000))
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply these events of the batch in one transaction.
    Apply { run: Range<usize>, unknown: UnknownVersion },
    /// Apply the poison copy of this event (its dead letter) in one transaction.
    DeadLetter { index: usize },
    /// Sleep this long, then poll again.
    Wait(Duration),
    /// Every event of the batch is applied or dead-lettered.
    Done,
}

/// How the last [`Step::Apply`] or [`Step::DeadLetter`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Running it again as it is may succeed (the database is unreachable,
    /// a deadlock, a failover…).
    Transient,
    /// Transient because a saga's definition version is not loaded here.
    DefinitionNotLoaded,
    /// Deterministic for this input: the database refused it, or the shell panicked.
    Refused,
}

/// What the policy made of a failure: for the driver's logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// The same run is retried after a backoff; `cause` labels the metric.
    Retry { cause: RetryCause, attempt: u32 },
    /// A refused run of `events` was split in halves.
    Split { events: usize },
    /// The event was refused alone often enough: its dead letter is next.
    DeadLetter { index: usize },
}

/// Why a run is retried (the `reason` label of `saga_consumer_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// The database (or the shell) failed in a way that may pass.
    Database,
    /// A saga's definition version is not loaded on this replica.
    DefinitionVersion,
    /// One event alone was refused; confirming before it is dead-lettered.
    Refused,
}

impl RetryCause {
    pub fn label(self) -> &'static str {
        match self {
            RetryCause::Database => "database",
            RetryCause::DefinitionVersion => "definition_version",
            RetryCause::Refused => "refused",
        }
    }
}

/// What was last handed to the driver, awaiting its report.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InFlight {
    Run(Range<usize>),
    DeadLetter(Range<usize>),
}

/// The split-and-retry state of one batch.
#[derive(Debug)]
pub struct BatchRetry {
    /// Runs still to apply, in batch order.
    runs: VecDeque<Range<usize>>,
    in_flight: Option<InFlight>,
    /// A backoff to sleep before the next attempt.
    pending_wait: Option<Duration>,
    /// Retries of the run at the front since the last commit.
    attempt: u32,
    /// Refusals of the single event at the front, before it is dead-lettered.
    refusals_alone: u32,
    /// Since when a saga's definition version is missing here.
    version_missing_since: Option<Instant>,
    patience: Duration,
}

impl BatchRetry {
    /// The policy for a batch of `len` events.
    pub fn new(len: usize, patience: Duration) -> BatchRetry {
        let mut runs = VecDeque::new();
        if len > 0 {
            runs.push_back(0..len);
        }
        BatchRetry {
            runs,
            in_flight: None,
            pending_wait: None,
            attempt: 0,
            refusals_alone: 0,
            version_missing_since: None,
            patience,
        }
    }

    /// The next thing to do at `now`. Call again after reporting the outcome
    /// of an `Apply` or `DeadLetter`, or after sleeping a `Wait`. Polling
    /// again before reporting hands out the step in flight again.
    pub fn poll(&mut self, now: Instant) -> Step {
        if let Some(d) = self.pending_wait.take() {
            return Step::Wait(d);
        }
        match &self.in_flight {
            Some(InFlight::Run(run)) => return Step::Apply { run: run.clone(), unknown: self.unknown(now) },
            Some(InFlight::DeadLetter(run)) => return Step::DeadLetter { index: run.start },
            None => {}
        }
        let Some(run) = self.runs.pop_front() else { return Step::Done };
        let step = Step::Apply { run: run.clone(), unknown: self.unknown(now) };
        self.in_flight = Some(InFlight::Run(run));
        step
    }

    fn unknown(&self, now: Instant) -> UnknownVersion {
        match self.version_missing_since {
            Some(t) if now.saturating_duration_since(t) >= self.patience => UnknownVersion::Quarantine,
            _ => UnknownVersion::Wait,
        }
    }

    /// The step in flight committed.
    pub fn applied(&mut self) {
        if let Some(InFlight::Run(_)) = self.in_flight {
            self.refusals_alone = 0;
        }
        self.in_flight = None;
        self.attempt = 0;
    }

    /// The step in flight failed at `now`; returns what the policy made of it
    /// (`None` only when nothing was in flight: the report changes nothing).
    pub fn failed(&mut self, now: Instant, failure: Failure) -> Option<Reaction> {
        let reaction = match self.in_flight.take()? {
            InFlight::DeadLetter(run) => {
                // Even the dead-letter copy failed: not this event's fault
                // (schema, privileges…). Wait it out, then start over with it.
                self.runs.push_front(run);
                self.retry_later(RetryCause::Database)
            }
            InFlight::Run(run) => match failure {
                Failure::Transient => {
                    self.runs.push_front(run);
                    self.retry_later(RetryCause::Database)
                }
                Failure::DefinitionNotLoaded => {
                    self.version_missing_since.get_or_insert(now);
                    self.runs.push_front(run);
                    self.retry_later(RetryCause::DefinitionVersion)
                }
                Failure::Refused if run.len() > 1 => {
                    let mid = run.start + run.len() / 2;
                    self.runs.push_front(mid..run.end);
                    self.runs.push_front(run.start..mid);
                    Reaction::Split { events: run.len() }
                }
                Failure::Refused if self.refusals_alone < REFUSALS_BEFORE_DEAD_LETTER => {
                    self.refusals_alone += 1;
                    self.runs.push_front(run);
                    self.retry_later(RetryCause::Refused)
                }
                Failure::Refused => {
                    self.refusals_alone = 0;
                    let index = run.start;
                    self.in_flight = Some(InFlight::DeadLetter(run));
                    Reaction::DeadLetter { index }
                }
            },
        };
        Some(reaction)
    }

    fn retry_later(&mut self, cause: RetryCause) -> Reaction {
        let attempt = self.attempt;
        self.pending_wait = Some(backoff(attempt));
        self.attempt += 1;
        Reaction::Retry { cause, attempt }
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
