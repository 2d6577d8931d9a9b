//! The saga shell: runs the pure engine inside MySQL transactions.
//!
//! Per event, in one transaction: the inbox row (de-duplication), the locked
//! saga row, the transition, the order status + history, the outbox rows, the
//! timer rows. Events of one Kafka partition are applied in batches, one
//! transaction per batch; saga rows are locked in `order_id` order so that
//! concurrent batches cannot deadlock on each other.
//!
//! Poison handling: an event that cannot be decoded, is for an unknown order,
//! or is not accepted by the saga's current state is dead-lettered (an outbox
//! row to the DLQ topic, so it is exactly as durable as the decision). When the
//! order is known, its saga is **quarantined**: every later event of that
//! order is parked in `saga_parked_events`, in arrival order, and nothing is
//! applied until an operator releases the saga (replaying the parked events)
//! or skips the poison event. Per-order ordering is therefore never broken.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{MySql, QueryBuilder, Row};

use super::orders::{self, ChangeRefusal, HistoryRow, OrderHead, insert_history};
use super::outbox::{self, NewOutboxRow, OutboxWriter};
use super::{Ctx, Db, StoreError, Tx, inbox, timers};
use crate::contracts::{Message, MessageKind, headers};
use crate::domain::{NewOrder, OrderStatus, StatusChange};
use crate::saga::model::{InstanceData, Item, OrderFacts};
use crate::saga::{self, Catalog, Effect, Event, EventBody, Instance, Outcome};
use crate::telemetry::traceparent::TraceParent;

/// `Inbound::source` of events replayed from `saga_parked_events`.
pub const SOURCE_REPLAY: &str = "replay";

/// One event offered to the saga shell.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub event_id: String,
    /// The order the event is about, when known (payload, or the Kafka key of an undecodable message).
    pub order_id: Option<i64>,
    /// The event name (message name, `timer.x`, manual name) for records.
    pub event_name: String,
    /// The decoded event, or why it could not be decoded.
    pub event: Result<Event, String>,
    /// Where it came from: `kafka:topic/partition@offset`, `timer`, `http`, `ops`, `replay`.
    pub source: String,
    pub trace: Option<TraceParent>,
    /// Original bytes and coordinates, for the dead-letter copy.
    pub raw: Option<RawMessage>,
}

#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// What happened to one inbound event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    Applied {
        from: String,
        to: String,
    },
    Ignored,
    /// Seen before (inbox hit, or twice in this batch).
    Duplicate,
    /// The saga is quarantined; the event waits for an operator.
    Parked,
    /// Poison: copied to the DLQ topic (and the saga quarantined when known).
    DeadLettered {
        kind: DeadLetterKind,
        reason: String,
        order_id: Option<i64>,
    },
    /// A timer that was disarmed or re-armed meanwhile, or a saga another
    /// sweeper holds: nothing to do.
    Stale,
    /// A manual event the saga refused (HTTP/ops answer 409); nothing recorded.
    Refused(ChangeRefusal),
}

/// Why a message was dead-lettered (a metric label: keep the set small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterKind {
    /// Not decodable as the topic's message (bytes, schema id, schema).
    Undecodable,
    /// Decodable, but no saga exists for its order.
    UnknownOrder,
    /// The saga's current state neither handles nor ignores it.
    RejectedByDefinition,
    /// The transition wanted an order status change the order table refuses.
    OrderTransitionRefused,
}

impl DeadLetterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Undecodable => "undecodable",
            DeadLetterKind::UnknownOrder => "unknown_order",
            DeadLetterKind::RejectedByDefinition => "rejected_by_definition",
            DeadLetterKind::OrderTransitionRefused => "order_transition_refused",
        }
    }
}

/// Alerts raised by transitions, reported by the caller after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub order_id: i64,
    pub code: String,
    pub message: String,
    pub tenant_region: String,
}

/// Result of a batch.
#[derive(Debug, Default)]
pub struct BatchResult {
    pub outcomes: Vec<InboundOutcome>,
    pub alerts: Vec<Alert>,
    /// (state entered, seconds spent in the previous state) per applied transition, for metrics.
    pub dwell: Vec<(String, f64)>,
    /// (from, to, seconds in `from`) per order status change, for metrics.
    pub status_changes: Vec<(OrderStatus, OrderStatus, f64)>,
    pub outbox_rows: usize,
}

/// What to do with an event for a saga whose definition version this replica
/// has not loaded (a newer replica of a rolling deploy wrote it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownVersion {
    /// Abort with [`StoreError::DefinitionNotLoaded`] (transient): retry later.
    Wait,
    /// Quarantine the saga and park the event until an operator acts.
    Quarantine,
}

/// How saga rows are locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Wait for the lock (consumers: every event must be applied).
    Wait,
    /// Skip sagas someone else holds (sweepers: another one is on it).
    SkipLocked,
}

/// Runs sagas against the database. Cheap to clone.
#[derive(Clone)]
pub struct SagaStore {
    pub catalog: Arc<Catalog>,
    pub outbox: OutboxWriter,
}

/// A saga row as loaded.
#[derive(Debug, Clone)]
struct Slot {
    inst: Instance,
    quarantined: Option<String>,
    quarantined_at: Option<DateTime<Utc>>,
    dirty: bool,
    quarantine_changed: bool,
}

struct TransitionRow {
    order_id: i64,
    saga_version: u32,
    event_id: String,
    event_name: String,
    from: String,
    to: String,
    actor: String,
    reason: Option<String>,
}

struct ParkedRow {
    order_id: i64,
    event_id: String,
    event_name: String,
    source: String,
    payload: Option<String>,
    traceparent: Option<String>,
    poison: bool,
    error: Option<String>,
}

/// A status change to record in `order_status_history`.
/// The final state of a timer after a batch.
#[derive(Debug, Clone, Copy)]
enum TimerOp {
    Arm { due_at: DateTime<Utc>, armed_version: u32 },
    Cancel,
}

/// Everything a batch writes, collected in memory and flushed with a few
/// multi-row statements at the end of the transaction: the number of round
/// trips per batch does not grow with the number of events in it.
#[derive(Default)]
struct Writes {
    inbox: Vec<inbox::InboxRow>,
    outbox: Vec<NewOutboxRow>,
    transitions: Vec<TransitionRow>,
    parked: Vec<ParkedRow>,
    history: Vec<HistoryRow>,
    /// Orders whose status changed: final (status, version).
    orders: BTreeMap<i64, (OrderStatus, u32)>,
    timers: BTreeMap<(i64, String), TimerOp>,
}

impl Writes {
    fn merge(&mut self, other: Writes) {
        self.inbox.extend(other.inbox);
        self.outbox.extend(other.outbox);
        self.transitions.extend(other.transitions);
        self.parked.extend(other.parked);
        self.history.extend(other.history);
        self.orders.extend(other.orders);
        self.timers.extend(other.timers);
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

impl SagaStore {
    pub fn new(catalog: Arc<Catalog>, outbox: OutboxWriter) -> SagaStore {
        SagaStore { catalog, outbox }
    }

    /// Starts the saga of a new order inside the order-creation transaction.
    /// Returns the outbox rows to write with the order's own.
    /// Starts the sagas of new orders in the order-creation transaction:
    /// one statement per table for all of them. Returns their outbox rows
    /// (each with the trace of the request that created its order).
    pub(crate) async fn start_many(
        &self,
        tx: &mut Tx,
        orders: &[(u64, &NewOrder, Option<&TraceParent>)],
        now: DateTime<Utc>,
    ) -> Result<Vec<NewOutboxRow>, StoreError> {
        let def = self.catalog.latest();
        let mut writes = Writes::default();
        let mut instances = Vec::with_capacity(orders.len());
        for (order_id, order, trace) in orders {
            let facts = OrderFacts {
                customer_id: order.customer_id.clone(),
                tenant_region: order.tenant_region.clone(),
                currency: order.currency.code().to_owned(),
                total_amount: orders::money(order.total(), order.currency.code()),
                items: order.items.iter().map(|i| Item { sku: i.sku.clone(), qty: i.qty }).collect(),
            };
            let (mut inst, effects) = saga::start(def, *order_id as i64, facts, now);
            // The start transition is version 1 of the saga.
            inst.version = 1;
            writes.transitions.push(TransitionRow {
                order_id: inst.order_id,
                saga_version: inst.version,
                event_id: format!("{order_id}:start"),
                event_name: def.start.event.clone(),
                from: "-".into(),
                to: inst.state.clone(),
                actor: "api".into(),
                reason: None,
            });
            // The start transition sets no order status, so there is no head to update.
            let mut head = None;
            let mut alerts = Vec::new();
            match self.execute(&inst, &mut head, &effects, "api", *trace, now, &mut alerts)? {
                Ok(w) => writes.merge(w),
                Err(r) => return Err(StoreError::Corrupt(format!("the start transition was refused: {r:?}"))),
            }
            let terminal = def.state(&inst.state).is_some_and(|s| s.terminal);
            instances.push((inst, terminal));
        }
        insert_instances(tx, &instances, now).await?;
        insert_transitions(tx, &writes.transitions, now).await?;
        flush_timers(tx, &writes.timers, now).await?;
        Ok(writes.outbox)
    }

    /// Turns effects into writes. The order status goes first: when the
    /// order's transition table refuses it, nothing of this event is written.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        inst: &Instance,
        head: &mut Option<OrderHead>,
        effects: &[Effect],
        actor: &str,
        trace: Option<&TraceParent>,
        now: DateTime<Utc>,
        alerts: &mut Vec<Alert>,
    ) -> Result<Result<Writes, ChangeRefusal>, StoreError> {
        let mut w = Writes::default();
        for effect in effects {
            match effect {
                Effect::SetOrderStatus { to, reason_code, comment } => {
                    let Some(h) = head.as_mut() else {
                        return Err(StoreError::Corrupt(format!(
                            "order {} has a saga but no order row",
                            inst.order_id
                        )));
                    };
                    if !h.status.can_transition_to(*to) {
                        return Ok(Err(ChangeRefusal::Illegal { from: h.status, to: *to }));
                    }
                    let new_version = h.version + 1;
                    w.history.push(HistoryRow {
                        order_id: inst.order_id as u64,
                        from: Some(h.status),
                        to: *to,
                        reason_code: reason_code.clone(),
                        comment: comment.clone(),
                        actor: actor.to_owned(),
                    });
                    let msg = orders::status_changed_message(h, *to, reason_code.as_deref(), actor, new_version, now);
                    w.outbox.push(self.outbox.row(&msg, trace)?);
                    w.orders.insert(inst.order_id, (*to, new_version));
                    h.version = new_version;
                    h.status = *to;
                }
                Effect::Publish(m) => w.outbox.push(self.outbox.row(m, trace)?),
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

    /// Applies a batch of inbound events in one transaction (retried as a
    /// whole on deadlocks). Events are applied in the given order.
    pub async fn apply_batch(&self, db: &Db, batch: &[Inbound], lock: LockMode) -> Result<BatchResult, StoreError> {
        self.apply(db, batch, lock, UnknownVersion::Quarantine).await
    }

    /// [`apply_batch`](Self::apply_batch) for the consumer, which chooses what
    /// a saga of a definition version this replica has not loaded means: during
    /// a rolling deploy, a newer replica will take it ([`UnknownVersion::Wait`]
    /// aborts the batch with [`StoreError::DefinitionNotLoaded`], a transient
    /// error); only when that lasts too long is the saga quarantined.
    pub async fn apply(
        &self,
        db: &Db,
        batch: &[Inbound],
        lock: LockMode,
        unknown: UnknownVersion,
    ) -> Result<BatchResult, StoreError> {
        super::retry(|| async {
            let mut tx = db.begin().await?;
            let result = self.apply_in_tx_with(&mut tx, batch, lock, unknown).await?;
            tx.commit().await.ctx("committing the event batch")?;
            Ok(result)
        })
        .await
    }

    pub(crate) async fn apply_in_tx(
        &self,
        tx: &mut Tx,
        batch: &[Inbound],
        lock: LockMode,
    ) -> Result<BatchResult, StoreError> {
        self.apply_in_tx_with(tx, batch, lock, UnknownVersion::Quarantine).await
    }

    async fn apply_in_tx_with(
        &self,
        tx: &mut Tx,
        batch: &[Inbound],
        lock: LockMode,
        unknown: UnknownVersion,
    ) -> Result<BatchResult, StoreError> {
        // Database time: timers armed here are fired by comparing with NOW(6).
        let now = super::db_now(tx).await?;
        let ids: Vec<&str> = batch.iter().map(|b| b.event_id.as_str()).collect();
        let seen_before = inbox::existing(tx, &ids).await?;
        let order_ids: BTreeSet<i64> =
            batch.iter().filter(|b| !seen_before.contains(&b.event_id)).filter_map(|b| b.order_id).collect();
        let mut slots = load_sagas(tx, &order_ids, lock).await?;
        let owned: Vec<i64> = slots.keys().copied().collect();
        let mut heads = lock_heads(tx, &owned).await?;

        let mut writes = Writes::default();
        let mut result = BatchResult::default();
        let mut seen_now: HashSet<&str> = HashSet::new();
        for b in batch {
            if b.event.is_ok() {
                crate::failpoint::panic_on("saga.apply.panic", &b.event_id);
            }
            if seen_before.contains(&b.event_id) || !seen_now.insert(&b.event_id) {
                result.outcomes.push(InboundOutcome::Duplicate);
                continue;
            }
            let outcome =
                self.apply_one(tx, b, &mut slots, &mut heads, lock, unknown, now, &mut writes, &mut result).await?;
            if !matches!(outcome, InboundOutcome::Stale | InboundOutcome::Refused(_) | InboundOutcome::Duplicate) {
                let label = match &outcome {
                    InboundOutcome::Applied { .. } => inbox::Outcome::Applied,
                    InboundOutcome::Ignored => inbox::Outcome::Ignored,
                    InboundOutcome::Parked => inbox::Outcome::Parked,
                    _ => inbox::Outcome::DeadLettered,
                };
                writes.inbox.push(inbox::InboxRow {
                    event_id: b.event_id.clone(),
                    order_id: b.order_id,
                    event_name: b.event_name.clone(),
                    source: b.source.clone(),
                    outcome: label,
                });
            }
            result.outcomes.push(outcome);
        }

        inbox::insert(tx, &writes.inbox, now).await?;
        let changed: Vec<&Slot> = slots.values().filter(|s| s.dirty || s.quarantine_changed).collect();
        upsert_instances(tx, &changed, &self.catalog, now).await?;
        update_orders(tx, &writes.orders, now).await?;
        insert_history(tx, &writes.history, now).await?;
        flush_timers(tx, &writes.timers, now).await?;
        insert_parked(tx, &writes.parked, now).await?;
        insert_transitions(tx, &writes.transitions, now).await?;
        result.outbox_rows = writes.outbox.len();
        outbox::insert(tx, &writes.outbox, now).await?;
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_one(
        &self,
        tx: &mut Tx,
        b: &Inbound,
        slots: &mut HashMap<i64, Slot>,
        heads: &mut HashMap<i64, OrderHead>,
        lock: LockMode,
        unknown: UnknownVersion,
        now: DateTime<Utc>,
        writes: &mut Writes,
        result: &mut BatchResult,
    ) -> Result<InboundOutcome, StoreError> {
        let manual = matches!(&b.event, Ok(Event { body: EventBody::Manual { .. }, .. }));
        let slot = b.order_id.and_then(|id| slots.get_mut(&id));
        let Some(slot) = slot else {
            if lock == LockMode::SkipLocked {
                return Ok(InboundOutcome::Stale);
            }
            if manual {
                return Ok(InboundOutcome::Refused(ChangeRefusal::NotFound));
            }
            let (kind, reason) = match &b.event {
                Err(e) => (DeadLetterKind::Undecodable, e.clone()),
                Ok(_) => (
                    DeadLetterKind::UnknownOrder,
                    format!("unknown order {}", b.order_id.map(|o| o.to_string()).unwrap_or_else(|| "-".into())),
                ),
            };
            self.dead_letter(b, &reason, None, writes);
            return Ok(InboundOutcome::DeadLettered { kind, reason, order_id: b.order_id });
        };

        // Timer firings: the timer must still be armed and due (database time).
        // A replayed (parked) firing has already taken its timer.
        if let Ok(Event { body: EventBody::Timer { name }, .. }) = &b.event
            && b.source != SOURCE_REPLAY
            && (slot.quarantined.is_some() || !timers::take_due(tx, slot.inst.order_id, name).await?)
        {
            return Ok(InboundOutcome::Stale);
        }

        if let Some(q) = &slot.quarantined {
            if manual {
                return Ok(InboundOutcome::Refused(ChangeRefusal::SagaInProgress {
                    saga_state: format!("{} (quarantined: {q})", slot.inst.state),
                }));
            }
            writes.parked.push(parked_row(b, false, None));
            return Ok(InboundOutcome::Parked);
        }

        let event = match &b.event {
            Ok(e) => e,
            Err(reason) => {
                self.quarantine(slot, b, reason, writes, true);
                return Ok(InboundOutcome::DeadLettered {
                    kind: DeadLetterKind::Undecodable,
                    reason: reason.clone(),
                    order_id: b.order_id,
                });
            }
        };
        let Some(def) = self.catalog.get(slot.inst.definition_version).cloned() else {
            if unknown == UnknownVersion::Wait {
                return Err(StoreError::DefinitionNotLoaded { version: slot.inst.definition_version });
            }
            let reason = format!("saga definition version {} is not loaded", slot.inst.definition_version);
            // Not the event's fault: park it (no dead-letter copy) until the version is deployed.
            slot.quarantined = Some(reason.clone());
            slot.quarantine_changed = true;
            writes.parked.push(parked_row(b, true, Some(&reason)));
            writes.transitions.push(quarantine_transition(slot, b, &reason));
            return Ok(InboundOutcome::Parked);
        };
        let t = match saga::transition(&def, &slot.inst, event, now) {
            Ok(t) => t,
            Err(rej) => {
                if manual {
                    return Ok(InboundOutcome::Refused(ChangeRefusal::SagaInProgress {
                        saga_state: slot.inst.state.clone(),
                    }));
                }
                let reason = rej.to_string();
                self.quarantine(slot, b, &reason, writes, true);
                return Ok(InboundOutcome::DeadLettered {
                    kind: DeadLetterKind::RejectedByDefinition,
                    reason,
                    order_id: b.order_id,
                });
            }
        };
        let (from, to, reason) = match &t.outcome {
            Outcome::Ignored => return Ok(InboundOutcome::Ignored),
            Outcome::Applied { from, to, reason } => (from.clone(), to.clone(), reason.clone()),
        };
        let mut head = heads.get(&slot.inst.order_id).cloned();
        let actor = event.actor();
        let mut alerts = Vec::new();
        let trace = b.trace.as_ref();
        // Effects write rows directly (status, history, timers) or into
        // `writes`; a refused status change comes first, before anything.
        let before = head.clone();
        match self.execute(&t.instance, &mut head, &t.effects, &actor, trace, now, &mut alerts)? {
            Ok(w) => writes.merge(w),
            Err(refusal) => {
                if manual {
                    return Ok(InboundOutcome::Refused(refusal));
                }
                let reason = format!("order status change refused: {refusal:?}");
                self.quarantine(slot, b, &reason, writes, true);
                return Ok(InboundOutcome::DeadLettered {
                    kind: DeadLetterKind::OrderTransitionRefused,
                    reason,
                    order_id: b.order_id,
                });
            }
        }
        if let (Some(b), Some(h)) = (before, head) {
            if b.status != h.status {
                let secs = (now - b.updated_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                result.status_changes.push((b.status, h.status, secs));
            }
            let mut h = h;
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

    /// `region`: the order's, when known (from its saga, or the decoded event).
    fn dead_letter(&self, b: &Inbound, reason: &str, region: Option<&str>, writes: &mut Writes) {
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
            extra.push((headers::TRACEPARENT, tp.to_string()));
        }
        let region = region.or(match &b.event {
            Ok(Event { body: EventBody::Message(m), .. }) => Some(m.tenant_region()),
            _ => None,
        });
        writes.outbox.push(self.outbox.dead_letter_row(&b.event_id, b.order_id, key, payload, region, &extra));
    }

    fn quarantine(&self, slot: &mut Slot, b: &Inbound, reason: &str, writes: &mut Writes, dead_letter: bool) {
        let reason = truncate(reason, 1000);
        if dead_letter {
            let region = slot.inst.data.order.tenant_region.clone();
            self.dead_letter(b, &reason, Some(&region), writes);
        }
        slot.quarantined = Some(reason.clone());
        slot.quarantine_changed = true;
        writes.parked.push(parked_row(b, true, Some(&reason)));
        writes.transitions.push(quarantine_transition(slot, b, &reason));
    }

    /// `POST /orders/{id}/status` when sagas are on: a status the definition
    /// maps to a manual event goes through the saga (with its compensations);
    /// other statuses are plain order transitions once the saga is terminal;
    /// while it runs, they are refused.
    pub(crate) async fn request_status(
        &self,
        tx: &mut Tx,
        head: &OrderHead,
        change: &StatusChange,
        now: DateTime<Utc>,
        trace: Option<&TraceParent>,
    ) -> Result<Result<u32, ChangeRefusal>, StoreError> {
        let order_id = head.order_id as i64;
        let slots = load_sagas(tx, &BTreeSet::from([order_id]), LockMode::Wait).await?;
        // Re-read the order under the lock: a change that committed since the
        // caller's read makes this request a concurrent one.
        let Some(locked) = orders::head(tx, head.order_id, true).await? else {
            return Ok(Err(ChangeRefusal::NotFound));
        };
        if locked.version != head.version {
            return Ok(Err(ChangeRefusal::Concurrent));
        }
        let Some(slot) = slots.get(&order_id) else {
            // An order without a saga (created before sagas were enabled).
            return self.plain_status(tx, &locked, change, now, trace).await;
        };
        if !head.status.can_transition_to(change.to_status) {
            return Ok(Err(ChangeRefusal::Illegal { from: head.status, to: change.to_status }));
        }
        let def = self.catalog.get(slot.inst.definition_version);
        let terminal = def.and_then(|d| d.state(&slot.inst.state)).is_some_and(|s| s.terminal);
        let manual = def.and_then(|d| d.manual_event_for_status(change.to_status)).map(|m| m.name.clone());
        let accepts = |name: &str| def.and_then(|d| d.state(&slot.inst.state)).is_some_and(|s| s.on.contains_key(name));
        match manual {
            Some(name) if slot.quarantined.is_none() && accepts(&name) => {
                let event_id = format!("http:{order_id}:{}:{}", slot.inst.version, name);
                let inbound = Inbound {
                    event_id: event_id.clone(),
                    order_id: Some(order_id),
                    event_name: name.clone(),
                    event: Ok(Event {
                        id: event_id,
                        order_id,
                        body: EventBody::Manual {
                            name,
                            actor: change.actor.clone(),
                            reason_code: change.reason_code.clone(),
                            comment: change.comment.clone(),
                        },
                    }),
                    source: "http".into(),
                    trace: trace.copied(),
                    raw: None,
                };
                let r = self.apply_in_tx(tx, std::slice::from_ref(&inbound), LockMode::Wait).await?;
                match r.outcomes.into_iter().next() {
                    Some(InboundOutcome::Applied { .. }) => Ok(Ok(head.version + 1)),
                    Some(InboundOutcome::Refused(refusal)) => Ok(Err(refusal)),
                    Some(InboundOutcome::Duplicate | InboundOutcome::Ignored) => Ok(Err(ChangeRefusal::Concurrent)),
                    other => Err(StoreError::Corrupt(format!("unexpected outcome of a status request: {other:?}"))),
                }
            }
            _ if terminal && slot.quarantined.is_none() => self.plain_status(tx, &locked, change, now, trace).await,
            _ => Ok(Err(ChangeRefusal::SagaInProgress {
                saga_state: match &slot.quarantined {
                    Some(q) => format!("{} (quarantined: {q})", slot.inst.state),
                    None => slot.inst.state.clone(),
                },
            })),
        }
    }
}

impl SagaStore {
    async fn plain_status(
        &self,
        tx: &mut Tx,
        head: &OrderHead,
        change: &StatusChange,
        now: DateTime<Utc>,
        trace: Option<&TraceParent>,
    ) -> Result<Result<u32, ChangeRefusal>, StoreError> {
        orders::apply_status(
            tx,
            head,
            change.to_status,
            change.reason_code.as_deref(),
            change.comment.as_deref(),
            &change.actor,
            now,
            &self.outbox,
            trace,
        )
        .await
    }
}

fn parked_row(b: &Inbound, poison: bool, error: Option<&str>) -> ParkedRow {
    let payload = match &b.event {
        Ok(Event { body: EventBody::Message(m), .. }) => m.to_json().ok().map(|v| v.to_string()),
        _ => None,
    };
    ParkedRow {
        order_id: b.order_id.unwrap_or_default(),
        event_id: b.event_id.clone(),
        event_name: b.event_name.clone(),
        source: b.source.clone(),
        payload,
        traceparent: b.trace.map(|t| t.to_string()),
        poison,
        error: error.map(|e| truncate(e, 2000)),
    }
}

fn quarantine_transition(slot: &Slot, b: &Inbound, reason: &str) -> TransitionRow {
    TransitionRow {
        order_id: slot.inst.order_id,
        saga_version: slot.inst.version,
        event_id: b.event_id.clone(),
        event_name: b.event_name.clone(),
        from: slot.inst.state.clone(),
        to: slot.inst.state.clone(),
        actor: "daemon".into(),
        reason: Some(truncate(&format!("QUARANTINED: {reason}"), 255)),
    }
}

const INSTANCE_COLUMNS: &str = "order_id, saga_name, definition_version, state, version, data, state_entered_at, quarantined_at, quarantine_reason";

/// When and why a saga was quarantined.
type Quarantine = (DateTime<Utc>, String);

fn instance_from_row(r: &sqlx::mysql::MySqlRow) -> Result<(Instance, Option<Quarantine>), StoreError> {
    let data: String = r.try_get("data").ctx("decoding saga data")?;
    let data: InstanceData =
        serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("saga_instances.data: {e}")))?;
    let order_id: u64 = r.try_get("order_id").ctx("decoding saga order_id")?;
    let quarantined_at: Option<DateTime<Utc>> = r.try_get("quarantined_at").ctx("decoding quarantined_at")?;
    let reason: Option<String> = r.try_get("quarantine_reason").ctx("decoding quarantine_reason")?;
    Ok((
        Instance {
            order_id: order_id as i64,
            saga_name: r.try_get("saga_name").ctx("decoding saga_name")?,
            definition_version: r.try_get("definition_version").ctx("decoding definition_version")?,
            state: r.try_get("state").ctx("decoding state")?,
            version: r.try_get("version").ctx("decoding version")?,
            state_entered_at: r.try_get("state_entered_at").ctx("decoding state_entered_at")?,
            data,
        },
        quarantined_at.map(|t| (t, reason.unwrap_or_default())),
    ))
}

async fn load_sagas(tx: &mut Tx, ids: &BTreeSet<i64>, lock: LockMode) -> Result<HashMap<i64, Slot>, StoreError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let mut qb: QueryBuilder<MySql> =
        QueryBuilder::new(format!("SELECT {INSTANCE_COLUMNS} FROM saga_instances WHERE order_id IN ("));
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    qb.push(") ORDER BY order_id FOR UPDATE");
    if lock == LockMode::SkipLocked {
        qb.push(" SKIP LOCKED");
    }
    let rows = qb.build().fetch_all(&mut **tx).await.ctx("locking saga rows")?;
    for r in &rows {
        let (inst, quarantined) = instance_from_row(r)?;
        out.insert(
            inst.order_id,
            Slot {
                inst,
                quarantined_at: quarantined.as_ref().map(|q| q.0),
                quarantined: quarantined.map(|q| q.1),
                dirty: false,
                quarantine_changed: false,
            },
        );
    }
    Ok(out)
}

/// Locks the order rows of `ids` (after the saga rows: the same order everywhere).
async fn lock_heads(tx: &mut Tx, ids: &[i64]) -> Result<HashMap<i64, OrderHead>, StoreError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT order_id, status, version, tenant_region, updated_at FROM orders WHERE order_id IN (",
    );
    let mut sep = qb.separated(", ");
    for id in &sorted {
        sep.push_bind(*id);
    }
    qb.push(") ORDER BY order_id FOR UPDATE");
    for r in qb.build().fetch_all(&mut **tx).await.ctx("locking order rows")? {
        let status: String = r.try_get("status").ctx("decoding status")?;
        let head = OrderHead {
            order_id: r.try_get("order_id").ctx("decoding order_id")?,
            status: status.parse::<OrderStatus>().map_err(|e| StoreError::Corrupt(e.to_string()))?,
            version: r.try_get("version").ctx("decoding version")?,
            tenant_region: r.try_get("tenant_region").ctx("decoding tenant_region")?,
            updated_at: r.try_get("updated_at").ctx("decoding updated_at")?,
        };
        out.insert(head.order_id as i64, head);
    }
    Ok(out)
}

async fn insert_instances(tx: &mut Tx, rows: &[(Instance, bool)], now: DateTime<Utc>) -> Result<(), StoreError> {
    for chunk in rows.chunks(crate::store::limits::ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT INTO saga_instances (order_id, saga_name, definition_version, state, version, terminal, tenant_region, data, \
             state_entered_at, created_at, updated_at) ",
        );
        let data: Vec<String> = chunk
            .iter()
            .map(|(inst, _)| serde_json::to_string(&inst.data).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect::<Result<_, _>>()?;
        qb.push_values(chunk.iter().zip(&data), |mut b, ((inst, terminal), data)| {
            b.push_bind(inst.order_id)
                .push_bind(&inst.saga_name)
                .push_bind(inst.definition_version)
                .push_bind(&inst.state)
                .push_bind(inst.version)
                .push_bind(*terminal)
                .push_bind(&inst.data.order.tenant_region)
                .push_bind(data)
                .push_bind(inst.state_entered_at)
                .push_bind(now)
                .push_bind(now);
        });
        qb.build().execute(&mut **tx).await.ctx("inserting sagas")?;
    }
    Ok(())
}

/// Writes the changed saga rows in one statement. The rows are locked by this
/// transaction (`load_sagas`), so `ON DUPLICATE KEY UPDATE` is a batched UPDATE.
async fn upsert_instances(
    tx: &mut Tx,
    slots: &[&Slot],
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if slots.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(slots.len());
    for s in slots {
        let data = serde_json::to_string(&s.inst.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let terminal =
            catalog.get(s.inst.definition_version).and_then(|d| d.state(&s.inst.state)).is_some_and(|st| st.terminal);
        let quarantined_at = match (&s.quarantined, s.quarantine_changed) {
            (None, _) => None,
            (Some(_), true) => Some(now),
            (Some(_), false) => s.quarantined_at.or(Some(now)),
        };
        rows.push((s, data, terminal, quarantined_at));
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "INSERT INTO saga_instances (order_id, saga_name, definition_version, state, version, terminal, tenant_region, data, \
         state_entered_at, created_at, updated_at, quarantined_at, quarantine_reason) ",
    );
    qb.push_values(&rows, |mut b, (s, data, terminal, quarantined_at)| {
        b.push_bind(s.inst.order_id)
            .push_bind(&s.inst.saga_name)
            .push_bind(s.inst.definition_version)
            .push_bind(&s.inst.state)
            .push_bind(s.inst.version)
            .push_bind(*terminal)
            .push_bind(&s.inst.data.order.tenant_region)
            .push_bind(data)
            .push_bind(s.inst.state_entered_at)
            .push_bind(now)
            .push_bind(now)
            .push_bind(*quarantined_at)
            .push_bind(&s.quarantined);
    });
    qb.push(
        " ON DUPLICATE KEY UPDATE state = VALUES(state), version = VALUES(version), terminal = VALUES(terminal), \
         data = VALUES(data), state_entered_at = VALUES(state_entered_at), updated_at = VALUES(updated_at), \
         quarantined_at = VALUES(quarantined_at), quarantine_reason = VALUES(quarantine_reason)",
    );
    qb.build().execute(&mut **tx).await.ctx("updating sagas")?;
    Ok(())
}

/// Applies the final status and version of every changed order in one
/// statement (their rows are locked by this transaction: `lock_heads`).
async fn update_orders(
    tx: &mut Tx,
    orders: &BTreeMap<i64, (OrderStatus, u32)>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if orders.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("UPDATE orders SET status = CASE order_id");
    for (id, (status, _)) in orders {
        qb.push(" WHEN ").push_bind(*id).push(" THEN ").push_bind(status.as_str());
    }
    qb.push(" END, version = CASE order_id");
    for (id, (_, version)) in orders {
        qb.push(" WHEN ").push_bind(*id).push(" THEN ").push_bind(*version);
    }
    qb.push(" END, updated_at = ").push_bind(now).push(" WHERE order_id IN (");
    let mut sep = qb.separated(", ");
    for id in orders.keys() {
        sep.push_bind(*id);
    }
    qb.push(")");
    let n = qb.build().execute(&mut **tx).await.ctx("updating order statuses")?.rows_affected();
    if n != orders.len() as u64 {
        return Err(StoreError::Race("an order changed under its lock"));
    }
    Ok(())
}

/// Arms (upsert) and disarms (delete) timers: one statement each.
async fn flush_timers(
    tx: &mut Tx,
    ops: &BTreeMap<(i64, String), TimerOp>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let arms: Vec<(&(i64, String), DateTime<Utc>, u32)> = ops
        .iter()
        .filter_map(|(k, op)| match op {
            TimerOp::Arm { due_at, armed_version } => Some((k, *due_at, *armed_version)),
            TimerOp::Cancel => None,
        })
        .collect();
    let cancels: Vec<&(i64, String)> =
        ops.iter().filter(|(_, op)| matches!(op, TimerOp::Cancel)).map(|(k, _)| k).collect();
    if !arms.is_empty() {
        let mut qb: QueryBuilder<MySql> =
            QueryBuilder::new("INSERT INTO saga_timers (order_id, timer_name, due_at, armed_version, armed_at) ");
        qb.push_values(&arms, |mut b, ((order_id, name), due_at, v)| {
            b.push_bind(*order_id).push_bind(name).push_bind(*due_at).push_bind(*v).push_bind(now);
        });
        qb.push(
            " ON DUPLICATE KEY UPDATE due_at = VALUES(due_at), armed_version = VALUES(armed_version), armed_at = VALUES(armed_at)",
        );
        qb.build().execute(&mut **tx).await.ctx("arming timers")?;
    }
    if !cancels.is_empty() {
        let mut qb: QueryBuilder<MySql> =
            QueryBuilder::new("DELETE FROM saga_timers WHERE (order_id, timer_name) IN (");
        let mut sep = qb.separated(", ");
        for (order_id, name) in &cancels {
            sep.push("(")
                .push_bind_unseparated(*order_id)
                .push_unseparated(", ")
                .push_bind_unseparated(name.as_str())
                .push_unseparated(")");
        }
        qb.push(")");
        qb.build().execute(&mut **tx).await.ctx("disarming timers")?;
    }
    Ok(())
}

async fn insert_transitions(tx: &mut Tx, rows: &[TransitionRow], now: DateTime<Utc>) -> Result<(), StoreError> {
    // Chunked: a statement binds at most 65,535 values.
    for rows in rows.chunks(crate::store::limits::ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT INTO saga_transitions (order_id, saga_version, event_id, event_name, from_state, to_state, actor, reason, occurred_at) ",
        );
        qb.push_values(rows, |mut b, r| {
            b.push_bind(r.order_id)
                .push_bind(r.saga_version)
                .push_bind(truncate(&r.event_id, 191))
                .push_bind(truncate(&r.event_name, 128))
                .push_bind(&r.from)
                .push_bind(&r.to)
                .push_bind(truncate(&r.actor, 128))
                .push_bind(r.reason.as_deref().map(|s| truncate(s, 255)))
                .push_bind(now);
        });
        qb.build().execute(&mut **tx).await.ctx("inserting saga transitions")?;
    }
    Ok(())
}

async fn insert_parked(tx: &mut Tx, rows: &[ParkedRow], now: DateTime<Utc>) -> Result<(), StoreError> {
    // Chunked: a statement binds at most 65,535 values.
    for rows in rows.chunks(crate::store::limits::ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT INTO saga_parked_events (order_id, event_id, event_name, source, payload, traceparent, poison, error, parked_at) ",
        );
        qb.push_values(rows, |mut b, r| {
            b.push_bind(r.order_id)
                .push_bind(truncate(&r.event_id, 191))
                .push_bind(truncate(&r.event_name, 128))
                .push_bind(truncate(&r.source, 300))
                .push_bind(&r.payload)
                .push_bind(&r.traceparent)
                .push_bind(r.poison)
                .push_bind(&r.error)
                .push_bind(now);
        });
        qb.build().execute(&mut **tx).await.ctx("parking events")?;
    }
    Ok(())
}

/// A saga as the ops surfaces show it.
#[derive(Debug, Clone, Serialize)]
pub struct SagaView {
    pub order_id: i64,
    pub saga_name: String,
    pub definition_version: u32,
    pub state: String,
    pub version: u32,
    pub state_entered_at: DateTime<Utc>,
    pub quarantined: Option<String>,
    #[serde(skip)]
    pub instance: Instance,
}

/// Reads one saga (no lock).
pub async fn get(db: &Db, order_id: i64) -> Result<Option<SagaView>, StoreError> {
    let sql = format!("SELECT {INSTANCE_COLUMNS} FROM saga_instances WHERE order_id = ?");
    let row =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order_id).fetch_optional(&db.pool).await.ctx("reading the saga")?;
    row.map(|r| {
        let (inst, quarantined) = instance_from_row(&r)?;
        Ok(SagaView {
            order_id: inst.order_id,
            saga_name: inst.saga_name.clone(),
            definition_version: inst.definition_version,
            state: inst.state.clone(),
            version: inst.version,
            state_entered_at: inst.state_entered_at,
            quarantined: quarantined.map(|q| q.1),
            instance: inst,
        })
    })
    .transpose()
}

/// Decodes a parked event back into an inbound event (for replay).
pub fn parked_to_event(
    order_id: i64,
    event_id: &str,
    event_name: &str,
    payload: Option<&str>,
) -> Result<Event, String> {
    if let Some(timer) = event_name.strip_prefix(crate::saga::definition::TIMER_PREFIX) {
        return Ok(Event { id: event_id.to_owned(), order_id, body: EventBody::Timer { name: timer.to_owned() } });
    }
    let kind: MessageKind =
        event_name.parse().map_err(|_| format!("{event_name} is not a message; it cannot be replayed"))?;
    let payload = payload.ok_or("the event could not be decoded when it arrived; it can only be skipped")?;
    let json: serde_json::Value = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    let msg = Message::from_json(kind, &json).map_err(|e| e.to_string())?;
    Ok(Event { id: event_id.to_owned(), order_id, body: EventBody::Message(msg) })
}

// ------------------------------------------------------------ operator support

/// Locks one saga row; `None` when the order has no saga.
pub async fn lock_one(tx: &mut Tx, order_id: i64) -> Result<Option<(Instance, Option<String>)>, StoreError> {
    let slots = load_sagas(tx, &BTreeSet::from([order_id]), LockMode::Wait).await?;
    Ok(slots.into_values().next().map(|s| (s.inst, s.quarantined)))
}

/// Clears a saga's quarantine (the caller replays or skips its parked events).
pub async fn clear_quarantine(tx: &mut Tx, order_id: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE saga_instances SET quarantined_at = NULL, quarantine_reason = NULL, updated_at = ? WHERE order_id = ?",
    )
    .bind(super::now())
    .bind(order_id)
    .execute(&mut **tx)
    .await
    .ctx("clearing the quarantine")?;
    Ok(())
}

/// An unresolved parked event, ready to replay.
pub struct ParkedEvent {
    pub id: u64,
    pub event_id: String,
    pub event_name: String,
    pub payload: Option<String>,
    pub traceparent: Option<String>,
    pub poison: bool,
}

pub async fn unresolved_parked(tx: &mut Tx, order_id: i64) -> Result<Vec<ParkedEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, event_id, event_name, payload, traceparent, poison FROM saga_parked_events \
         WHERE order_id = ? AND resolved_at IS NULL ORDER BY id FOR UPDATE",
    )
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await
    .ctx("reading parked events")?;
    rows.iter()
        .map(|r| {
            Ok(ParkedEvent {
                id: r.try_get("id").ctx("decoding")?,
                event_id: r.try_get("event_id").ctx("decoding")?,
                event_name: r.try_get("event_name").ctx("decoding")?,
                payload: r.try_get("payload").ctx("decoding")?,
                traceparent: r.try_get("traceparent").ctx("decoding")?,
                poison: r.try_get("poison").ctx("decoding")?,
            })
        })
        .collect()
}

/// Marks parked events resolved (`replayed` or `skipped`).
pub async fn resolve_parked(tx: &mut Tx, ids: &[u64], resolution: &str) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("UPDATE saga_parked_events SET resolved_at = ");
    qb.push_bind(super::now()).push(", resolution = ").push_bind(resolution.to_owned()).push(" WHERE id IN (");
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    qb.push(")");
    qb.build().execute(&mut **tx).await.ctx("resolving parked events")?;
    Ok(())
}

/// Forgets inbox rows so that parked events can be applied (they were
/// recorded as `parked` when they arrived).
pub async fn forget_inbox(tx: &mut Tx, event_ids: &[String]) -> Result<(), StoreError> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("DELETE FROM saga_inbox WHERE event_id IN (");
    let mut sep = qb.separated(", ");
    for id in event_ids {
        sep.push_bind(id.as_str());
    }
    qb.push(")");
    qb.build().execute(&mut **tx).await.ctx("forgetting inbox rows")?;
    Ok(())
}

/// An armed timer of one saga, locked.
pub async fn lock_timer(tx: &mut Tx, order_id: i64, name: &str) -> Result<Option<(DateTime<Utc>, u32)>, StoreError> {
    let row =
        sqlx::query("SELECT due_at, armed_version FROM saga_timers WHERE order_id = ? AND timer_name = ? FOR UPDATE")
            .bind(order_id)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .ctx("locking a timer")?;
    row.map(|r| Ok((r.try_get("due_at").ctx("decoding due_at")?, r.try_get("armed_version").ctx("decoding")?)))
        .transpose()
}

/// Moves a timer's due time (`None`: now, in database time).
pub async fn set_timer_due(
    tx: &mut Tx,
    order_id: i64,
    name: &str,
    due_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let q = match due_at {
        Some(t) => sqlx::query("UPDATE saga_timers SET due_at = ? WHERE order_id = ? AND timer_name = ?").bind(t),
        None => sqlx::query(
            "UPDATE saga_timers SET due_at = NOW(6) - INTERVAL 1 MICROSECOND WHERE order_id = ? AND timer_name = ?",
        ),
    };
    q.bind(order_id).bind(name).execute(&mut **tx).await.ctx("rescheduling a timer")?;
    Ok(())
}

pub async fn delete_timer(tx: &mut Tx, order_id: i64, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM saga_timers WHERE order_id = ? AND timer_name = ?")
        .bind(order_id)
        .bind(name)
        .execute(&mut **tx)
        .await
        .ctx("cancelling a timer")?;
    Ok(())
}

/// Outbox rows written by this transaction after `after_id` for an order
/// (what an action did, for its report and its dry run).
pub async fn outbox_since(
    tx: &mut Tx,
    order_id: i64,
    after_id: u64,
) -> Result<Vec<(String, String, serde_json::Value)>, StoreError> {
    let rows =
        sqlx::query("SELECT event_type, event_id, payload FROM outbox WHERE aggregate_id = ? AND id > ? ORDER BY id")
            .bind(order_id.to_string())
            .bind(after_id)
            .fetch_all(&mut **tx)
            .await
            .ctx("reading the action's outbox rows")?;
    rows.iter()
        .map(|r| {
            let payload: String = r.try_get("payload").ctx("decoding")?;
            Ok((
                r.try_get("event_type").ctx("decoding")?,
                r.try_get("event_id").ctx("decoding")?,
                serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
            ))
        })
        .collect()
}

pub async fn max_outbox_id(tx: &mut Tx) -> Result<u64, StoreError> {
    let row = sqlx::query("SELECT CAST(COALESCE(MAX(id), 0) AS UNSIGNED) AS m FROM outbox")
        .fetch_one(&mut **tx)
        .await
        .ctx("reading the outbox high-water mark")?;
    row.try_get("m").ctx("decoding")
}

/// One audit row.
#[allow(clippy::too_many_arguments)]
pub async fn audit(
    tx: &mut Tx,
    order_id: Option<i64>,
    action: &str,
    params: &serde_json::Value,
    actor: &str,
    reason: &str,
    version_before: Option<u32>,
    version_after: Option<u32>,
    result: &str,
    detail: Option<&str>,
    job_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ops_audit (order_id, action, params, actor, reason, version_before, version_after, result, detail, job_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(order_id)
    .bind(action)
    .bind(params.to_string())
    .bind(truncate(actor, 128))
    .bind(truncate(reason, 1000))
    .bind(version_before)
    .bind(version_after)
    .bind(result)
    .bind(detail.map(|d| truncate(d, 4000)))
    .bind(job_id)
    .bind(super::now())
    .execute(&mut **tx)
    .await
    .ctx("writing the audit row")?;
    Ok(())
}
