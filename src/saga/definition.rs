//! Saga definitions: the validated model. Parsing and validation of the TOML
//! text (`sagas/*.toml`) is `super::parse`.
//!
//! A definition names the states, the events each state accepts, where each
//! event leads, and what the transition does: run a step (send its command),
//! compensate steps, arm or disarm timers, set the order status, emit events,
//! raise an alert. The vocabulary of commands and events is fixed by the
//! contracts in `schemas/`; the definition wires it together.
//!
//! Validation reports every problem with its file and line: unknown names,
//! unreachable states, waiting states with no way out, steps without a
//! compensation, timers that could fire in a state that does not expect them.

// Message kinds are matched exhaustively here: a new kind must be handled,
// never swallowed by a `_` arm (ARCHITECTURE.md, "Adding a participant message").
#![warn(clippy::wildcard_enum_match_arm)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::contracts::{MessageKind, Role};
use crate::domain::OrderStatus;

/// The event that starts every saga: the order was created (over HTTP, in
/// the same transaction as the saga row).
pub const START_EVENT: &str = "order.created.v1";

/// Prefix of timer events: `timer.payment_timeout`.
pub const TIMER_PREFIX: &str = "timer.";

/// A validated definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    pub source: PathBuf,
    pub start: TransitionDef,
    pub steps: BTreeMap<String, StepDef>,
    pub timers: BTreeMap<String, Duration>,
    pub manual_events: BTreeMap<String, ManualEventDef>,
    pub states: BTreeMap<String, StateDef>,
    /// How sagas of older versions move onto this one, by older version
    /// (`[migrate.from.<version>]`, see `super::migrate`).
    pub migrations: BTreeMap<u32, super::migrate::Migration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDef {
    pub name: String,
    /// Command sent when the step runs.
    pub command: MessageKind,
    /// Command that undoes the step.
    pub compensation: MessageKind,
    /// The replies that answer this step's command, and how each is matched
    /// with the command the saga is waiting for (`replies`/`correlate`).
    pub replies: Vec<MessageKind>,
    pub correlate: Option<Correlation>,
}

/// How a reply names the command it answers. A reply whose key is not the
/// step's latest command is *stale*: recorded, and it moves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correlation {
    /// The reply's `command_id` is the step's latest command id
    /// (`{order}:{step}:{action}:{n}`). A reply without one is taken only while
    /// the step has run once (nothing else it could answer).
    CommandId,
    /// The reply's `payment_intent_id` is the step's latest intent (`pi-{order}-{run}`).
    PaymentIntentId,
}

impl Correlation {
    /// The reply field that carries the key.
    pub const fn field(self) -> &'static str {
        match self {
            Correlation::CommandId => "command_id",
            Correlation::PaymentIntentId => "payment_intent_id",
        }
    }

    pub fn parse(s: &str) -> Option<Correlation> {
        [Correlation::CommandId, Correlation::PaymentIntentId].into_iter().find(|c| c.field() == s)
    }
}

/// A saga fact a guard compares a reply field with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// `order.total_amount`, compared as a decimal amount (`22.5` = `22.50`).
    TotalAmount,
    /// `order.currency`, compared exactly.
    Currency,
    /// `order.tenant_region`, compared exactly.
    TenantRegion,
    /// `order.customer_id`, compared exactly.
    CustomerId,
}

impl Fact {
    pub const ALL: [Fact; 4] = [Fact::TotalAmount, Fact::Currency, Fact::TenantRegion, Fact::CustomerId];

    pub const fn name(self) -> &'static str {
        match self {
            Fact::TotalAmount => "order.total_amount",
            Fact::Currency => "order.currency",
            Fact::TenantRegion => "order.tenant_region",
            Fact::CustomerId => "order.customer_id",
        }
    }
}

/// An event that people send (HTTP status requests, operators), not services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualEventDef {
    pub name: String,
    /// `POST /orders/{id}/status` with this `to_status` becomes this event.
    pub order_status: Option<OrderStatus>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateDef {
    pub name: String,
    /// No further progress is expected (the saga is done), although late
    /// events may still be handled, e.g. to compensate.
    pub terminal: bool,
    /// The step this state waits on; "retry the current step" re-sends its command.
    pub step: Option<String>,
    /// Expected maximum time in this state; longer means "stuck".
    pub max_dwell: Option<Duration>,
    pub description: Option<String>,
    pub on: BTreeMap<String, TransitionDef>,
    /// Events accepted and deliberately ignored here (recorded, no effect).
    pub ignore: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compensate {
    None,
    /// Every step that ran and was not compensated yet, newest first.
    All,
    /// These steps, in this order, even if compensated before.
    Steps(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionDef {
    pub event: String,
    pub to: String,
    pub order_status: Option<OrderStatus>,
    pub reason: Option<String>,
    pub run: Option<String>,
    pub compensate: Compensate,
    pub arm: Vec<String>,
    pub disarm: Vec<String>,
    pub emit: Vec<MessageKind>,
    pub alert: Option<String>,
    /// Guard (`require = { field = "fact" }`): the reply's fields must equal the
    /// saga's facts for this transition to be taken; otherwise `otherwise` is.
    pub require: Vec<(String, Fact)>,
    /// The transition taken when `require` does not hold (required with it).
    pub otherwise: Option<Box<TransitionDef>>,
    /// This is the `otherwise` of a guarded transition.
    pub is_otherwise: bool,
    /// Line in the source file (1-based), for messages.
    pub line: usize,
}

impl StateDef {
    /// Every transition out of this state: each `on` and its `otherwise`.
    pub fn transitions(&self) -> impl Iterator<Item = &TransitionDef> {
        self.on.values().flat_map(|t| std::iter::once(t).chain(t.otherwise.as_deref()))
    }
}

impl Definition {
    /// The events a saga can receive: inbound messages, timers, manual events.
    pub fn known_events(&self) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = inbound_kinds().map(|k| k.name().to_owned()).collect();
        s.extend(self.timers.keys().map(|t| format!("{TIMER_PREFIX}{t}")));
        s.extend(self.manual_events.keys().cloned());
        s
    }

    pub fn state(&self, name: &str) -> Option<&StateDef> {
        self.states.get(name)
    }

    /// What `timer` firing does in `state`, if the state handles it.
    pub fn on_timer(&self, state: &str, timer: &str) -> Option<&TransitionDef> {
        self.state(state)?.on.get(&format!("{TIMER_PREFIX}{timer}"))
    }

    /// Whether a saga in `state` waits for an operator: the state is not
    /// terminal and only manual events (no participant reply, no timer) move
    /// it on, e.g. PENDING_REVIEW.
    pub fn awaits_operator(&self, state: &str) -> bool {
        self.state(state)
            .is_some_and(|s| !s.terminal && !s.on.is_empty() && s.on.keys().all(|e| self.manual_events.contains_key(e)))
    }

    /// The step whose command `kind` answers, with how it is correlated.
    pub fn step_answered_by(&self, kind: MessageKind) -> Option<(&StepDef, Correlation)> {
        self.steps.values().find(|s| s.replies.contains(&kind)).and_then(|s| s.correlate.map(|c| (s, c)))
    }

    /// The manual event a status request maps to, if any.
    pub fn manual_event_for_status(&self, status: OrderStatus) -> Option<&ManualEventDef> {
        self.manual_events.values().find(|m| m.order_status == Some(status))
    }

    /// Applies timer overrides (from configuration). Unknown timer names are errors.
    pub fn override_timers(&mut self, overrides: &BTreeMap<String, Duration>) -> Result<(), String> {
        for (name, d) in overrides {
            let d = check_timer(*d).map_err(|e| format!("timer override {name:?}: {e}"))?;
            match self.timers.get_mut(name) {
                Some(slot) => *slot = d,
                None => {
                    return Err(format!(
                        "timer override {name:?}: no such timer in {} (known: {})",
                        self.source.display(),
                        self.timers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// All problems found in one or more files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionErrors(pub Vec<DefinitionError>);

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The longest a timer may be armed for (definition, override or operator
/// reschedule): far beyond any business timeout, far below what `DATETIME`
/// and date arithmetic can hold.
pub const MAX_TIMER: Duration = Duration::from_secs(366 * 24 * 3600);

/// A timer duration is greater than zero and at most [`MAX_TIMER`].
pub fn check_timer(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        return Err("duration must be greater than zero".into());
    }
    if d > MAX_TIMER {
        return Err(format!("{} is longer than the 366 days a timer may last", humantime::format_duration(d)));
    }
    Ok(d)
}

/// Replies (the inbound messages), from the vocabulary.
pub(crate) fn inbound_kinds() -> impl Iterator<Item = MessageKind> {
    MessageKind::all_where(|r| r == Role::Reply)
}
