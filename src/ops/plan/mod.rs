//! Every operator action as a pure plan (mini-redis's one command per file,
//! quinn-proto's "no I/O, time is an argument"): given a [`Snapshot`] of the
//! saga — read by the shell under the saga's lock in a fixed number of
//! statements — an action either becomes a [`Plan`], the list of writes the
//! shell performs in the same transaction, or is refused with a [`Refusal`]
//! that says why.
//!
//! The actions the console offers ([`allowed_actions`]) are exactly those
//! whose plan succeeds on the same snapshot, so the console and the API
//! cannot disagree. Events an action originates (a manual event, a timer
//! fired now, replayed parked events) are applied by the saga shell in
//! [`Write::Apply`], through the same transition function as any event.

mod cancel_timer;
pub mod consequences;
pub mod describe;
mod fire_timer;
mod manual;
mod migrate;
mod release;
mod reschedule_timer;
mod retry_step;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::contracts::Message;
use crate::domain::SagaVersion;
use crate::orchestrator::Inbound;
use crate::saga::{Definition, Event, Instance};
use crate::store::parked::ParkedEvent;
use crate::telemetry::trace_context::TraceContext;

use super::Action;

/// Everything an action is decided on, read under the saga's lock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The definition the saga runs on.
    pub def: Arc<Definition>,
    /// The loaded definitions newer than it (what it could be migrated to), oldest first.
    pub newer: Vec<Arc<Definition>>,
    pub saga: Instance,
    /// Why the saga is quarantined, when it is.
    pub quarantined: Option<String>,
    /// The saga's armed timers.
    pub timers: Vec<ArmedTimer>,
    /// Its unresolved parked events, oldest first.
    pub parked: Vec<ParkedEvent>,
    /// `retry_step` actions applied to it so far (the next retry's number is one more).
    pub retries: u32,
    /// Database time of this transaction.
    pub now: DateTime<Utc>,
    /// The trace an event originated by this action starts (a fresh root:
    /// randomness is an input here, like time).
    pub trace: TraceContext,
}

/// An armed timer, as an action needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmedTimer {
    pub name: String,
    /// The saga version that armed it (part of its firing's event id).
    pub armed_version: SagaVersion,
    pub due: DateTime<Utc>,
}

impl Snapshot {
    fn timer(&self, name: &str) -> Result<&ArmedTimer, Refusal> {
        self.timers
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Refusal::NotAllowed(format!("timer {name} is not armed")))
    }

    fn not_quarantined(&self) -> Result<(), Refusal> {
        match &self.quarantined {
            Some(q) => Err(Refusal::NotAllowed(format!(
                "the saga is quarantined ({q}); release it or skip the poison event first"
            ))),
            None => Ok(()),
        }
    }
}

/// Who acts and why (recorded on manual events).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub actor: &'a str,
    pub reason: &'a str,
}

/// Why an action was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The saga's state does not allow it (409).
    #[error("{0}")]
    NotAllowed(String),
    /// The request itself is malformed (400).
    #[error("{0}")]
    BadRequest(String),
}

/// The writes of one action, in order, inside the action's transaction.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub writes: Vec<Write>,
}

/// One write of a plan.
#[derive(Debug, Clone)]
pub enum Write {
    /// Publish this message through the outbox (a command re-sent as is).
    Outbox(Message),
    /// Move an armed timer's due time.
    TimerDue { timer: String, due: DateTime<Utc> },
    /// Disarm a timer.
    DeleteTimer { timer: String },
    /// Mark parked events resolved.
    ResolveParked { ids: Vec<u64>, resolution: Resolution },
    /// Lift the saga's quarantine.
    ClearQuarantine,
    /// Forget inbox rows, so that their events can be applied again (replay).
    ForgetInbox(Vec<String>),
    /// Move the saga onto a newer definition version (the pure
    /// `saga::migrate`): its row, a transition-log row by `actor`, its timers.
    Migrate { migrated: Box<crate::saga::migrate::Migrated>, event_id: String, actor: String },
    /// Apply these events through the saga shell; `expect` is what must come
    /// of the first for the action to stand (otherwise it is refused and
    /// rolled back).
    Apply { events: Vec<Inbound>, expect: Expect },
}

/// How a parked event was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Replayed,
    Skipped,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Replayed => "replayed",
            Resolution::Skipped => "skipped",
        }
    }
}

/// What an applied event must come to for its action to stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A transition (a manual event).
    Applied,
    /// A transition, or ignored by the current state (a timer fired now).
    AppliedOrIgnored,
    /// Whatever each comes to (replayed events: reported one by one).
    Any,
}

/// The plan of `action` on `snap`, or why it is refused.
pub fn plan(action: &Action, snap: &Snapshot, who: Actor<'_>) -> Result<Plan, Refusal> {
    match action {
        Action::RetryStep => retry_step::plan(snap),
        Action::FireTimer { timer } => fire_timer::plan(snap, timer),
        Action::RescheduleTimer { timer, at, after } => reschedule_timer::plan(snap, timer, *at, after.as_deref()),
        Action::CancelTimer { timer } => cancel_timer::plan(snap, timer),
        Action::Cancel => manual::plan_cancel(snap, who),
        Action::Force { event } => manual::plan_force(snap, event, who),
        Action::Release => release::plan(snap, false),
        Action::SkipPoison => release::plan(snap, true),
        Action::Migrate { to_version } => migrate::plan(snap, *to_version, who),
    }
}

/// The actions [`plan`] accepts on `snap` — what the console offers. Each is
/// the request body's `action` part, e.g. `{"action": "fire_timer", "timer": "t"}`;
/// `reschedule_timer` is offered without its `at`/`after` (the operator picks).
pub fn allowed_actions(snap: &Snapshot) -> Vec<Action> {
    let cancel = snap.def.manual_event_for_status(crate::domain::OrderStatus::Cancelled).map(|m| m.name.as_str());
    let mut candidates = vec![Action::Release, Action::SkipPoison, Action::RetryStep, Action::Cancel];
    // `cancel` is offered as itself, not also as a forced manual event.
    candidates.extend(
        snap.def
            .manual_events
            .keys()
            .filter(|m| Some(m.as_str()) != cancel)
            .map(|m| Action::Force { event: m.clone() }),
    );
    candidates.extend(snap.timers.iter().map(|t| Action::FireTimer { timer: t.name.clone() }));
    candidates.extend(snap.newer.iter().map(|d| Action::Migrate { to_version: d.version }));
    for t in &snap.timers {
        candidates.push(Action::RescheduleTimer { timer: t.name.clone(), at: None, after: None });
        candidates.push(Action::CancelTimer { timer: t.name.clone() });
    }
    let who = Actor { actor: "console", reason: "which actions are allowed" };
    candidates
        .into_iter()
        .filter(|a| {
            // Judged with an example of the operator's choice where it takes one.
            let probe = match a {
                Action::RescheduleTimer { timer, .. } => {
                    Action::RescheduleTimer { timer: timer.clone(), at: None, after: Some("1m".into()) }
                }
                other => other.clone(),
            };
            plan(&probe, snap, who).is_ok()
        })
        .collect()
}

/// An event this action originates, for the saga shell.
fn originated(snap: &Snapshot, event: Event, event_name: String) -> Inbound {
    Inbound {
        event_id: event.id.clone(),
        order_id: Some(snap.saga.order_id),
        event_name,
        event: Ok(event),
        source: crate::orchestrator::Source::Ops,
        trace: Some(snap.trace.clone()),
        raw: None,
    }
}
