//! One batch of inbound events, decided without I/O: the shell (`super`)
//! reads a [`Snapshot`] in a fixed number of statements — the database clock
//! and which event ids the inbox has seen, the sagas and order heads the batch
//! touches (locked, in order-id order), the due timers its firings may take —
//! and [`plan`] returns every row to write, the saga rows it changed and what
//! came of each event (with the observations metrics are recorded from:
//! dwell, status changes, alerts). The shell writes the plan with one
//! statement per table, all of them in one round trip (`store::script`).
//! Table tests of whole batches: `batch_tests.rs`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::decide::{self, Decision, Writes};
use super::instances::{Slot, TransitionRow};
use super::{BatchResult, DeadLetterKind, Inbound, InboundOutcome, LockMode, Source, UnknownVersion};
use crate::domain::OrderId;
use crate::saga::{Catalog, Event, EventBody, Outcome};
use crate::store::orders::OrderHead;
use crate::store::outbox::OutboxWriter;
use crate::store::{StoreError, inbox, truncate};

/// What a batch is decided on, read under the batch's locks.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// The database's clock in this transaction.
    pub(crate) now: DateTime<Utc>,
    /// The batch's event ids the inbox already holds.
    pub(crate) seen_before: HashSet<String>,
    /// The saga rows of the batch's orders (those that have one).
    pub(crate) slots: HashMap<OrderId, Slot>,
    /// The order rows of those sagas.
    pub(crate) heads: HashMap<OrderId, OrderHead>,
    /// The armed timers of the batch's live firings that are due now.
    pub(crate) due: HashSet<(OrderId, String)>,
}

/// What the shell writes for a batch.
pub(crate) struct Plan {
    pub(crate) writes: Writes,
    /// The saga rows to write back (moved, or quarantined).
    pub(crate) changed: Vec<Slot>,
    /// Each event's outcome, and the observations for metrics.
    pub(crate) result: BatchResult,
}

/// What every event of the batch is decided with.
struct Cx<'a> {
    catalog: &'a Catalog,
    outbox: &'a OutboxWriter,
    lock: LockMode,
    unknown: UnknownVersion,
    now: DateTime<Utc>,
}

/// Decides `batch` on `snap`, in order. Fails only for a definition version
/// this replica must wait for ([`StoreError::DefinitionNotLoaded`], with
/// [`UnknownVersion::Wait`]) or corrupt data; the caller then writes nothing.
pub(crate) fn plan(
    catalog: &Catalog,
    outbox: &OutboxWriter,
    batch: &[Inbound],
    snap: Snapshot,
    lock: LockMode,
    unknown: UnknownVersion,
) -> Result<Plan, StoreError> {
    let cx = Cx { catalog, outbox, lock, unknown, now: snap.now };
    let Snapshot { seen_before, mut slots, mut heads, mut due, .. } = snap;
    let mut writes = Writes::default();
    let mut result = BatchResult::default();
    let mut seen_now: HashSet<&str> = HashSet::new();
    for b in batch {
        if seen_before.contains(&b.event_id) || !seen_now.insert(&b.event_id) {
            result.outcomes.push(InboundOutcome::Duplicate);
            continue;
        }
        let outcome = apply_one(&cx, b, &mut slots, &mut heads, &mut due, &mut writes, &mut result)?;
        let label = match &outcome {
            InboundOutcome::Stale | InboundOutcome::Refused(_) | InboundOutcome::Duplicate => None,
            InboundOutcome::Applied { .. } => Some(inbox::Outcome::Applied),
            InboundOutcome::Ignored => Some(inbox::Outcome::Ignored),
            InboundOutcome::Parked => Some(inbox::Outcome::Parked),
            InboundOutcome::StaleReply { .. } => Some(inbox::Outcome::StaleReply),
            InboundOutcome::DeadLettered { .. } => Some(inbox::Outcome::DeadLettered),
        };
        if let Some(outcome) = label {
            writes.inbox.push(inbox::InboxRow {
                event_id: b.event_id.clone(),
                order_id: b.order_id,
                event_name: b.event_name.clone(),
                source: b.source.to_string(),
                outcome,
            });
        }
        result.outcomes.push(outcome);
    }
    result.outbox_rows = writes.outbox.len();
    result.outbox_shards =
        writes.outbox.iter().map(|r| r.shard).collect::<std::collections::BTreeSet<u16>>().into_iter().collect();
    let mut changed: Vec<Slot> = slots.into_values().filter(|s| s.dirty || s.quarantine_changed).collect();
    changed.sort_by_key(|s| s.inst.order_id);
    Ok(Plan { writes, changed, result })
}

/// Applies one event to what the batch read (no I/O): a firing takes its
/// timer from `due`, the decision, then its writes into `writes` and the
/// batch's saga rows.
#[allow(clippy::too_many_arguments)]
fn apply_one(
    cx: &Cx<'_>,
    b: &Inbound,
    slots: &mut HashMap<OrderId, Slot>,
    heads: &mut HashMap<OrderId, OrderHead>,
    due: &mut HashSet<(OrderId, String)>,
    writes: &mut Writes,
    result: &mut BatchResult,
) -> Result<InboundOutcome, StoreError> {
    let now = cx.now;
    let slot = b.order_id.and_then(|id| slots.get_mut(&id));
    let timer_taken = match (decide::timer_to_take(b, slot.as_deref()), b.order_id) {
        (Some(name), Some(order_id)) => decide::take_timer(due, &mut writes.timers, order_id, name),
        _ => false,
    };
    let decision = decide::decide(cx.catalog, slot.as_deref(), b, cx.lock, cx.unknown, timer_taken, now);
    let dead_lettered = |kind, reason| InboundOutcome::DeadLettered { kind, reason, order_id: b.order_id };
    let (t, slot) = match (decision, slot) {
        (Decision::Stale, _) => return Ok(InboundOutcome::Stale),
        (Decision::Refuse(r), _) => return Ok(InboundOutcome::Refused(r)),
        (Decision::WaitForDefinition { version }, _) => return Err(StoreError::DefinitionNotLoaded { version }),
        (Decision::DeadLetter { kind, reason }, _) => {
            writes.outbox.push(decide::dead_letter_row(cx.outbox, b, &reason, None));
            return Ok(dead_lettered(kind, reason));
        }
        (Decision::Park, Some(slot)) => {
            writes.parked.push(decide::parked_row(slot.inst.order_id, b, false, None));
            return Ok(InboundOutcome::Parked);
        }
        (Decision::Ignore, _) => return Ok(InboundOutcome::Ignored),
        (Decision::StaleReply { reason }, Some(slot)) => {
            let actor = b.event.as_ref().map(Event::actor).unwrap_or_default();
            writes.transitions.push(decide::unchanged_transition(slot, b, actor, &reason));
            return Ok(InboundOutcome::StaleReply { event: b.event_name.clone(), reason });
        }
        (Decision::Quarantine { kind, reason }, Some(slot)) => {
            quarantine(cx, slot, b, &reason, writes, true);
            return Ok(dead_lettered(kind, reason));
        }
        (Decision::QuarantineUnknownVersion { reason }, Some(slot)) => {
            quarantine(cx, slot, b, &reason, writes, false);
            return Ok(InboundOutcome::Parked);
        }
        (Decision::Apply { transition }, Some(slot)) => (*transition, slot),
        (
            d @ (Decision::Quarantine { .. }
            | Decision::QuarantineUnknownVersion { .. }
            | Decision::Apply { .. }
            | Decision::StaleReply { .. }
            | Decision::Park),
            None,
        ) => {
            return Err(StoreError::Corrupt(format!("decision {d:?} without a saga")));
        }
    };
    let Outcome::Applied { from, to, reason } = t.outcome.clone() else {
        return Ok(InboundOutcome::Ignored);
    };
    let actor = b.event.as_ref().map(Event::actor).unwrap_or_default();
    let mut head = heads.get(&slot.inst.order_id).cloned();
    let before = head.clone();
    let mut alerts = Vec::new();
    match decide::effects_to_writes(
        cx.outbox,
        &t.instance,
        &mut head,
        &t.effects,
        &actor,
        b.trace.as_ref(),
        now,
        &mut alerts,
    )? {
        Ok(w) => writes.merge(w),
        Err(refusal) if matches!(&b.event, Ok(Event { body: EventBody::Manual { .. }, .. })) => {
            return Ok(InboundOutcome::Refused(refusal));
        }
        Err(refusal) => {
            let reason = format!("order status change refused: {refusal}");
            quarantine(cx, slot, b, &reason, writes, true);
            return Ok(dead_lettered(DeadLetterKind::OrderTransitionRefused, reason));
        }
    }
    if let (Some(b), Some(mut h)) = (before, head) {
        if b.status != h.status {
            let secs = (now - b.updated_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
            result.status_changes.push((b.status, h.status, secs));
        }
        h.updated_at = now;
        heads.insert(slot.inst.order_id, h);
    }
    let dwell = (now - slot.inst.state_entered_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    if from != to {
        result.dwell.push((from.clone(), dwell.max(0.0)));
    }
    writes.transitions.push(TransitionRow {
        order_id: slot.inst.order_id,
        saga_version: t.instance.version,
        event_id: b.event_id.clone(),
        event_name: b.event_name.clone(),
        from: from.clone(),
        to: to.clone(),
        actor,
        reason,
    });
    slot.inst = t.instance;
    slot.dirty = true;
    result.alerts.extend(alerts);
    Ok(InboundOutcome::Applied { from, to })
}

/// Quarantines `slot`: parks `b` as its poison event, logs the quarantine
/// and, when `dead_letter`, copies `b` to the DLQ.
fn quarantine(cx: &Cx<'_>, slot: &mut Slot, b: &Inbound, reason: &str, writes: &mut Writes, dead_letter: bool) {
    let reason = truncate(reason, 1000);
    if dead_letter {
        let region = slot.inst.data.order.tenant_region.clone();
        let mut row = decide::dead_letter_row(cx.outbox, b, &reason, Some(&region));
        if b.source == Source::Replay {
            // Released and refused again: its first copy keeps `dlq:{id}`,
            // this one is another copy of the same event.
            row.event_id = crate::store::limits::dead_letter_event_id(&format!(
                "{}@replay:{}",
                b.event_id,
                cx.now.timestamp_micros()
            ));
        }
        writes.outbox.push(row);
    }
    slot.quarantined = Some(reason.clone());
    slot.quarantine_changed = true;
    writes.parked.push(decide::parked_row(slot.inst.order_id, b, true, Some(&reason)));
    writes.transitions.push(decide::quarantine_transition(slot, b, &reason));
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
