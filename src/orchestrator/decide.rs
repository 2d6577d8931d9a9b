//! The decisions of the saga shell, as pure functions: what to do with one
//! inbound event given its saga row ([`decide`]), and which rows the effects
//! of a transition become ([`effects_to_writes`]). No database, no clock: the
//! shell (`super`) does the reads these need beforehand and the writes they
//! return afterwards, so every branch is unit-tested below without MariaDB.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};

use super::instances::{Slot, TransitionRow};
use super::{Alert, DeadLetterKind, Inbound, LockMode, Source, UnknownVersion};
use crate::contracts::headers;
use crate::domain::{OrderId, OrderStatus};
use crate::saga::{self, Catalog, Effect, Event, EventBody, Instance, Outcome, Transition};
use crate::store::orders::{self, ChangeRefusal, HistoryRow, OrderHead};
use crate::store::outbox::{NewOutboxRow, OutboxWriter};
use crate::store::parked::ParkedRow;
use crate::store::timers::TimerOp;
use crate::store::{StoreError, inbox, truncate};
use crate::telemetry::trace_context::TraceContext;

/// Everything a batch writes, collected in memory and flushed with a few
/// multi-row statements at the end of the transaction: the number of round
/// trips per batch does not grow with the number of events in it.
#[derive(Default)]
pub(crate) struct Writes {
    pub(crate) inbox: Vec<inbox::InboxRow>,
    pub(crate) outbox: Vec<NewOutboxRow>,
    pub(crate) transitions: Vec<TransitionRow>,
    pub(crate) parked: Vec<ParkedRow>,
    pub(crate) history: Vec<HistoryRow>,
    /// Orders whose status changed: final (status, version).
    pub(crate) orders: BTreeMap<OrderId, (OrderStatus, u32)>,
    pub(crate) timers: BTreeMap<(OrderId, String), TimerOp>,
}

impl Writes {
    pub(crate) fn merge(&mut self, other: Writes) {
        self.inbox.extend(other.inbox);
        self.outbox.extend(other.outbox);
        self.transitions.extend(other.transitions);
        self.parked.extend(other.parked);
        self.history.extend(other.history);
        self.orders.extend(other.orders);
        self.timers.extend(other.timers);
    }
}

/// What the shell does with one inbound event.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Nothing to do: a timer disarmed or re-armed meanwhile, or a saga
    /// another sweeper holds.
    Stale,
    /// A manual event the saga or the order refuses; nothing is recorded.
    Refuse(ChangeRefusal),
    /// No saga to quarantine: copy the event to the DLQ and move on.
    DeadLetter { kind: DeadLetterKind, reason: String },
    /// Quarantine the saga, park the event and copy it to the DLQ.
    Quarantine { kind: DeadLetterKind, reason: String },
    /// The saga runs on a definition version this replica has not loaded:
    /// quarantine it and park the event, without a DLQ copy (not its fault).
    QuarantineUnknownVersion { reason: String },
    /// Abort the batch (transient): a newer replica can apply it.
    WaitForDefinition { version: u32 },
    /// The saga is quarantined: park the event behind the poison one.
    Park,
    /// Declared as ignored in the saga's state: record it in the inbox only.
    Ignore,
    /// A reply to another command than the one its step waits for: record it
    /// (inbox, transition log with the reason), change nothing.
    StaleReply { reason: String },
    /// Apply the transition.
    Apply { transition: Box<Transition> },
}

/// The timer a firing must take (delete, if still armed and due in database
/// time) before [`decide`] can say anything: a live firing of a saga that
/// exists and is not quarantined. A replayed (parked) firing already took its
/// timer.
pub(crate) fn timer_to_take<'a>(b: &'a Inbound, slot: Option<&Slot>) -> Option<&'a str> {
    match (&b.event, slot) {
        (Ok(Event { body: EventBody::Timer { name }, .. }), Some(s))
            if b.source != Source::Replay && s.quarantined.is_none() =>
        {
            Some(name)
        }
        _ => None,
    }
}

/// Takes a firing's timer: `true` when it was armed and due at the batch's
/// read (and not taken by an earlier firing of this batch). A taken timer is
/// deleted with the batch's timer writes unless an event of the batch arms
/// it again (an arm earlier in the batch is kept, a later one replaces this).
pub(crate) fn take_timer(
    due: &mut HashSet<(OrderId, String)>,
    timers: &mut BTreeMap<(OrderId, String), TimerOp>,
    order_id: OrderId,
    name: &str,
) -> bool {
    let key = (order_id, name.to_owned());
    if !due.remove(&key) {
        return false;
    }
    timers.entry(key).or_insert(TimerOp::Cancel);
    true
}

/// Decides what to do with `b`. `slot` is its saga row (locked), when it has
/// one; `timer_taken` whether [`timer_to_take`]'s timer was taken.
pub(crate) fn decide(
    catalog: &Catalog,
    slot: Option<&Slot>,
    b: &Inbound,
    lock: LockMode,
    unknown: UnknownVersion,
    timer_taken: bool,
    now: DateTime<Utc>,
) -> Decision {
    let manual = matches!(&b.event, Ok(Event { body: EventBody::Manual { .. }, .. }));
    let Some(slot) = slot else {
        if lock == LockMode::SkipLocked {
            return Decision::Stale;
        }
        if manual {
            return Decision::Refuse(ChangeRefusal::NotFound);
        }
        return match &b.event {
            Err(e) => Decision::DeadLetter { kind: DeadLetterKind::Undecodable, reason: e.clone() },
            Ok(_) => Decision::DeadLetter {
                kind: DeadLetterKind::UnknownOrder,
                reason: format!("unknown order {}", b.order_id.map(|o| o.to_string()).unwrap_or_else(|| "-".into())),
            },
        };
    };
    let live_timer = matches!(&b.event, Ok(Event { body: EventBody::Timer { .. }, .. })) && b.source != Source::Replay;
    if live_timer && (slot.quarantined.is_some() || !timer_taken) {
        return Decision::Stale;
    }
    if let Some(q) = &slot.quarantined {
        if manual {
            return Decision::Refuse(ChangeRefusal::SagaInProgress {
                saga_state: format!("{} (quarantined: {q})", slot.inst.state),
            });
        }
        return Decision::Park;
    }
    let event = match &b.event {
        Ok(e) => e,
        Err(reason) => return Decision::Quarantine { kind: DeadLetterKind::Undecodable, reason: reason.clone() },
    };
    let Some(def) = catalog.get(slot.inst.definition_version).cloned() else {
        return match unknown {
            UnknownVersion::Wait => Decision::WaitForDefinition { version: slot.inst.definition_version },
            UnknownVersion::Quarantine => Decision::QuarantineUnknownVersion {
                reason: format!("saga definition version {} is not loaded", slot.inst.definition_version),
            },
        };
    };
    match saga::transition(&def, &slot.inst, event, now) {
        Ok(t) => match t.outcome {
            Outcome::Ignored => Decision::Ignore,
            Outcome::Stale { field, expected, got } => Decision::StaleReply {
                reason: format!(
                    "STALE_REPLY: {field} {} is not the awaited {expected}",
                    got.as_deref().unwrap_or("(none)")
                ),
            },
            Outcome::Applied { .. } => Decision::Apply { transition: Box::new(t) },
        },
        Err(_) if manual => Decision::Refuse(ChangeRefusal::SagaInProgress { saga_state: slot.inst.state.clone() }),
        Err(rej) => Decision::Quarantine { kind: DeadLetterKind::RejectedByDefinition, reason: rej.to_string() },
    }
}

/// Turns effects into writes. The order status goes first: when the order's
/// transition table refuses it, nothing of this event is written. `head` is
/// the order's row as this batch has left it, and is updated.
#[allow(clippy::too_many_arguments)]
pub(crate) fn effects_to_writes(
    outbox: &OutboxWriter,
    inst: &Instance,
    head: &mut Option<OrderHead>,
    effects: &[Effect],
    actor: &str,
    trace: Option<&TraceContext>,
    now: DateTime<Utc>,
    alerts: &mut Vec<Alert>,
) -> Result<Result<Writes, ChangeRefusal>, StoreError> {
    let mut w = Writes::default();
    for effect in effects {
        match effect {
            Effect::SetOrderStatus { to, reason_code, comment } => {
                let Some(h) = head.as_mut() else {
                    return Err(StoreError::Corrupt(format!("order {} has a saga but no order row", inst.order_id)));
                };
                if !h.status.can_transition_to(*to) {
                    return Ok(Err(ChangeRefusal::Illegal { from: h.status, to: *to }));
                }
                let new_version = h.version + 1;
                w.history.push(HistoryRow {
                    order_id: inst.order_id,
                    from: Some(h.status),
                    to: *to,
                    reason_code: reason_code.clone(),
                    comment: comment.clone(),
                    actor: actor.to_owned(),
                });
                let msg = orders::status_changed_message(h, *to, reason_code.as_deref(), actor, new_version, now);
                w.outbox.push(outbox.row(&msg, trace)?);
                w.orders.insert(inst.order_id, (*to, new_version));
                h.version = new_version;
                h.status = *to;
            }
            Effect::Publish(m) => w.outbox.push(outbox.row(m, trace)?),
            Effect::ArmTimer { name, due_at } => {
                w.timers.insert(
                    (inst.order_id, name.clone()),
                    TimerOp::Arm { due_at: *due_at, armed_version: inst.version },
                );
            }
            Effect::CancelTimer { name } => {
                w.timers.insert((inst.order_id, name.clone()), TimerOp::Cancel);
            }
            Effect::Alert { code, message } => alerts.push(Alert {
                order_id: inst.order_id,
                code: code.clone(),
                message: message.clone(),
                tenant_region: inst.data.order.tenant_region.clone(),
            }),
        }
    }
    Ok(Ok(w))
}

/// The DLQ copy of `b`: original key and bytes, the reason and the source
/// coordinates as headers. `region`: the order's, when known (from its saga,
/// or the decoded event).
pub(crate) fn dead_letter_row(outbox: &OutboxWriter, b: &Inbound, reason: &str, region: Option<&str>) -> NewOutboxRow {
    let mut extra = vec![
        (headers::DLQ_ERROR, truncate(reason, 1000)),
        (headers::DLQ_ERROR_KIND, if b.event.is_err() { "undecodable".into() } else { "rejected".into() }),
    ];
    let (key, payload) = match &b.raw {
        Some(raw) => {
            extra.push((headers::DLQ_SOURCE_TOPIC, raw.topic.clone()));
            extra.push((headers::DLQ_SOURCE_PARTITION, raw.partition.to_string()));
            extra.push((headers::DLQ_SOURCE_OFFSET, raw.offset.to_string()));
            (raw.key.as_deref(), raw.payload.as_deref())
        }
        None => (None, None),
    };
    if let Some(tp) = &b.trace {
        extra.extend(tp.headers());
    }
    let region = region.or(match &b.event {
        Ok(Event { body: EventBody::Message(m), .. }) => Some(m.tenant_region()),
        _ => None,
    });
    outbox.dead_letter_row(&b.event_id, b.order_id, key, payload, region, &extra)
}

/// The `saga_parked_events` row of `b`.
pub(crate) fn parked_row(order_id: OrderId, b: &Inbound, poison: bool, error: Option<&str>) -> ParkedRow {
    let payload = match &b.event {
        Ok(Event { body: EventBody::Message(m), .. }) => m.to_json().ok().map(|v| v.to_string()),
        _ => None,
    };
    ParkedRow {
        order_id,
        event_id: b.event_id.clone(),
        event_name: b.event_name.clone(),
        source: b.source.to_string(),
        payload,
        traceparent: b.trace.as_ref().map(|t| t.to_string()),
        poison,
        error: error.map(|e| truncate(e, 2000)),
    }
}

/// The transition-log row that records a quarantine (state unchanged).
pub(crate) fn quarantine_transition(slot: &Slot, b: &Inbound, reason: &str) -> TransitionRow {
    unchanged_transition(slot, b, "daemon".into(), &format!("QUARANTINED: {reason}"))
}

/// A transition-log row for an event recorded without moving the saga
/// (quarantined, stale reply), with why.
pub(crate) fn unchanged_transition(slot: &Slot, b: &Inbound, actor: String, reason: &str) -> TransitionRow {
    TransitionRow {
        order_id: slot.inst.order_id,
        saga_version: slot.inst.version,
        event_id: b.event_id.clone(),
        event_name: b.event_name.clone(),
        from: slot.inst.state.clone(),
        to: slot.inst.state.clone(),
        actor,
        reason: Some(truncate(reason, 255)),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
