//! Saga instances, incoming events and the effects a transition produces.
//! Plain data: serialisable, comparable, no behaviour that touches the world.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::contracts::Message;
use crate::domain::{Currency, Money, OrderId, OrderStatus, SagaVersion};

/// Facts about the order that commands need, captured when the saga starts
/// so that handling an event never has to read the order tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredFacts", into = "StoredFacts")]
pub struct OrderFacts {
    pub customer_id: String,
    pub tenant_region: String,
    /// The order's total, in its currency.
    pub total: Money,
    pub items: Vec<Item>,
}

/// [`OrderFacts`] as `saga_instances.data` holds them: the currency code and
/// the total as a decimal string in its minor units (`"EUR"`, `"22.50"`).
#[derive(Serialize, Deserialize)]
struct StoredFacts {
    customer_id: String,
    tenant_region: String,
    currency: Currency,
    total_amount: Decimal,
    items: Vec<Item>,
}

impl From<StoredFacts> for OrderFacts {
    fn from(s: StoredFacts) -> OrderFacts {
        OrderFacts {
            customer_id: s.customer_id,
            tenant_region: s.tenant_region,
            total: Money::new(s.total_amount, s.currency),
            items: s.items,
        }
    }
}

impl From<OrderFacts> for StoredFacts {
    fn from(f: OrderFacts) -> StoredFacts {
        StoredFacts {
            customer_id: f.customer_id,
            tenant_region: f.tenant_region,
            currency: f.total.currency(),
            total_amount: f.total.amount(),
            items: f.items,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
}

/// Progress of one step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProgress {
    /// How many times the step's command was issued by a transition.
    pub runs: u32,
    /// The step ran and has not been compensated since.
    pub active: bool,
    /// Order in which active steps ran (for "compensate all": newest first).
    pub run_seq: u32,
}

/// One saga instance (one per order). Persisted as a row of `saga_instances`
/// with this struct's `data` part as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub order_id: OrderId,
    pub saga_name: String,
    /// The definition version the saga started on; it stays on it.
    pub definition_version: u32,
    pub state: String,
    /// Increments with every applied transition (optimistic concurrency).
    pub version: SagaVersion,
    pub state_entered_at: DateTime<Utc>,
    pub data: InstanceData,
}

/// The JSON part of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceData {
    pub order: OrderFacts,
    #[serde(default)]
    pub steps: BTreeMap<String, StepProgress>,
    /// How often each `{step}:{action}` command was emitted; the count is the
    /// last component of the deterministic command id.
    #[serde(default)]
    pub emitted: BTreeMap<String, u32>,
    /// Counter for `StepProgress::run_seq`.
    #[serde(default)]
    pub seq: u32,
}

/// Something that happened to a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id (inbox key).
    pub id: String,
    pub order_id: OrderId,
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    /// A message from a participant (inventory, payment).
    Message(Message),
    /// A durable timer fired.
    Timer { name: String },
    /// A person asked for it (HTTP status request, operator).
    Manual { name: String, actor: String, reason_code: Option<String>, comment: Option<String> },
}

impl Event {
    /// The event name used in definitions: the message name, `timer.<name>`,
    /// or the manual event's name.
    pub fn name(&self) -> String {
        match &self.body {
            EventBody::Message(m) => m.kind().name().to_owned(),
            EventBody::Timer { name } => format!("{}{name}", super::definition::TIMER_PREFIX),
            EventBody::Manual { name, .. } => name.clone(),
        }
    }

    /// Who caused it, for history and audit.
    pub fn actor(&self) -> String {
        match &self.body {
            EventBody::Message(m) => format!("service:{}", m.kind().name()),
            EventBody::Timer { name } => format!("timer:{name}"),
            EventBody::Manual { actor, .. } => actor.clone(),
        }
    }
}

/// What the shell must do, in order, in the same transaction as the state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Change the order's status (checked against the order transition table by the shell).
    SetOrderStatus { to: OrderStatus, reason_code: Option<String>, comment: Option<String> },
    /// Write a command or event to the outbox.
    Publish(Message),
    /// Arm (or re-arm) a durable timer.
    ArmTimer { name: String, due_at: DateTime<Utc> },
    /// Disarm a timer; no-op when not armed.
    CancelTimer { name: String },
    /// Tell a human: metric, WARN log (and the definition usually emits an attention event).
    Alert { code: String, message: String },
}

/// Result of feeding one event to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub instance: Instance,
    pub effects: Vec<Effect>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        from: String,
        to: String,
        reason: Option<String>,
    },
    /// Declared as ignored in this state: recorded, nothing changes.
    Ignored,
    /// A reply that does not answer the command its step is waiting for (an
    /// older command, or one never sent): recorded, nothing changes.
    Stale {
        /// The correlation field (`command_id`, `payment_intent_id`).
        field: &'static str,
        /// What the saga waits for.
        expected: String,
        /// What the reply carried.
        got: Option<String>,
    },
}

/// The event cannot be applied to this instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("state {state} does not accept event {event}")]
    NotAccepted { state: String, event: String },
    #[error("the saga is in state {state}, which definition version {version} does not have")]
    UnknownState { state: String, version: u32 },
    #[error("event is for order {event_order} but the saga is for order {saga_order}")]
    WrongOrder { event_order: OrderId, saga_order: OrderId },
    #[error("saga runs on definition version {instance}, not {definition}")]
    WrongDefinition { instance: u32, definition: u32 },
    #[error("state {state} has no current step to retry")]
    NoCurrentStep { state: String },
    #[error("step {step} has not run yet; nothing to retry")]
    StepNotRun { step: String },
    /// The step's reply already came (the state no longer accepts one):
    /// re-sending the same command id would be discarded by the participant.
    #[error(
        "state {state} no longer waits for a reply of step {step}: re-sending its command (same command id) would change nothing; use the state's manual events to run it again"
    )]
    StepNotAwaited { state: String, step: String },
    /// The definition names a message that is not a command where a command
    /// is needed (the validator refuses such definitions).
    #[error("{kind} is not a command or compensation")]
    NotACommand { kind: &'static str },
    /// The definition emits an event a transition may not emit (the validator
    /// refuses such definitions).
    #[error("{kind} cannot be emitted by a transition")]
    NotEmittable { kind: &'static str },
    /// The command's Rust type needs a field the saga facts do not have (the
    /// validator and a unit test refuse such vocabularies).
    #[error("cannot build {kind} from the saga's facts: {reason}")]
    CommandUnbuildable { kind: &'static str, reason: String },
}
