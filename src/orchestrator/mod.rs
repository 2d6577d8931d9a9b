//! The saga orchestrator: the shell that runs the pure engine (`saga`)
//! inside MySQL transactions, over the tables of `store`. `order_api` and
//! `group_commit` are the order API's transactions, which start sagas and
//! route status changes through them.
//!
//! Events of one Kafka partition are applied in batches, one transaction per
//! batch, in three moves: **read** a snapshot in a fixed number of statements
//! (inbox hits, the saga and order rows locked in `order_id` order so that
//! concurrent batches cannot deadlock on each other, the due timers its
//! firings take), **plan** the whole batch without I/O (`batch.rs`, each
//! event decided by `decide.rs`), **flush** the plan with one statement per
//! table: inbox rows (de-duplication), saga rows, order status + history,
//! outbox rows, timer rows, parked events, the transition log.
//!
//! Poison handling: an event that cannot be decoded, is for an unknown order,
//! or is not accepted by the saga's current state is dead-lettered (an outbox
//! row to the DLQ topic, so it is exactly as durable as the decision). When the
//! order is known, its saga is **quarantined**: every later event of that
//! order is parked in `saga_parked_events`, in arrival order, and nothing is
//! applied until an operator releases the saga (replaying the parked events)
//! or skips the poison event. Per-order ordering is therefore never broken.

mod batch;
mod decide;
pub mod group_commit;
mod instances;
mod observe;
pub mod operator;
pub mod order_api;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use self::decide::Writes;
pub use self::instances::{SagaView, clear_quarantine, get, lock_one, read_one, write_migration};
use self::instances::{
    Slot, TransitionRow, insert_instances, insert_transitions, load_sagas, lock_sagas_and_orders, upsert_instances,
};
pub use self::observe::record_batch;
use crate::domain::{Money, NewOrder, OrderId, OrderStatus, SagaVersion, StatusChange};
use crate::saga::model::{Item, OrderFacts};
use crate::saga::{self, Catalog, Event, EventBody};
use crate::store::orders::{self, ChangeRefusal, OrderHead, insert_history, update_orders};
use crate::store::outbox::{self, NewOutboxRow, OutboxWriter};
use crate::store::parked::insert_parked;
use crate::store::script::Script;
use crate::store::timers::{Clock, flush_timers};
use crate::store::{Ctx, Db, StoreError, Tx, inbox, timers};
use crate::telemetry::trace_context::TraceContext;

/// Where an inbound event came from. Recorded (as its [`Display`](std::fmt::Display)
/// text) in the inbox, the parked events and the transition log; replays are
/// treated differently by the decisions (a replayed timer takes no timer row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Kafka message: `kafka:{topic}/{partition}@{offset}`.
    Kafka { topic: String, partition: i32, offset: i64 },
    /// A due timer fired by the sweeper: `timer`.
    Timer,
    /// A status change requested over the orders API: `http`.
    Http,
    /// An event an operator action originates: `ops`.
    Ops,
    /// An event replayed from `saga_parked_events`: `replay`.
    Replay,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Kafka { topic, partition, offset } => write!(f, "kafka:{topic}/{partition}@{offset}"),
            Source::Timer => f.write_str("timer"),
            Source::Http => f.write_str("http"),
            Source::Ops => f.write_str("ops"),
            Source::Replay => f.write_str("replay"),
        }
    }
}

/// One event offered to the saga shell.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub event_id: String,
    /// The order the event is about, when known (payload, or the Kafka key of an undecodable message).
    pub order_id: Option<OrderId>,
    /// The event name (message name, `timer.x`, manual name) for records.
    pub event_name: String,
    /// The decoded event, or why it could not be decoded.
    pub event: Result<Event, String>,
    /// Where it came from.
    pub source: Source,
    pub trace: Option<TraceContext>,
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
    /// A reply that answers an older command than the one its step waits for:
    /// recorded (inbox, transition log), nothing changed.
    StaleReply {
        event: String,
        reason: String,
    },
    /// Seen before (inbox hit, or twice in this batch).
    Duplicate,
    /// The saga is quarantined; the event waits for an operator.
    Parked,
    /// Poison: copied to the DLQ topic (and the saga quarantined when known).
    DeadLettered {
        kind: DeadLetterKind,
        reason: String,
        order_id: Option<OrderId>,
    },
    /// A timer that was disarmed or re-armed meanwhile, or a saga another
    /// sweeper holds: nothing to do.
    Stale,
    /// A manual event the saga refused (HTTP/ops answer 409); nothing recorded.
    Refused(ChangeRefusal),
}

/// For people (an operator's report, a refusal): what happened, in words.
impl std::fmt::Display for InboundOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InboundOutcome::Applied { from, to } => write!(f, "applied: {from} → {to}"),
            InboundOutcome::Ignored => f.write_str("ignored: the current state does not react to it"),
            InboundOutcome::StaleReply { event, reason } => write!(f, "stale reply {event}: {reason}"),
            InboundOutcome::Duplicate => f.write_str("a duplicate: applied before"),
            InboundOutcome::Parked => f.write_str("parked: the saga is quarantined"),
            InboundOutcome::DeadLettered { kind, reason, .. } => {
                write!(f, "dead-lettered ({}): {reason}", kind.as_str())
            }
            InboundOutcome::Stale => f.write_str("stale: the timer was re-armed or disarmed meanwhile"),
            InboundOutcome::Refused(r) => write!(f, "refused: {r}"),
        }
    }
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
    pub order_id: OrderId,
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
    /// The shards of those rows (ascending, once each): the relay reads them.
    pub outbox_shards: Vec<u16>,
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

impl SagaStore {
    pub fn new(catalog: Arc<Catalog>, outbox: OutboxWriter) -> SagaStore {
        SagaStore { catalog, outbox }
    }

    /// Starts the sagas of new orders in the order-creation transaction:
    /// one statement per table for all of them. Returns their outbox rows
    /// (each with the trace of the request that created its order).
    pub(crate) fn start_many(
        &self,
        script: &mut Script,
        orders: &[(OrderId, &NewOrder, Option<&TraceContext>)],
        now: DateTime<Utc>,
    ) -> Result<Vec<NewOutboxRow>, StoreError> {
        let def = self.catalog.latest();
        let mut writes = Writes::default();
        let mut instances = Vec::with_capacity(orders.len());
        for (order_id, order, trace) in orders {
            let facts = OrderFacts {
                customer_id: order.customer_id.clone(),
                tenant_region: order.tenant_region.clone(),
                total: Money::new(order.total(), order.currency),
                items: order.items.iter().map(|i| Item { sku: i.sku.clone(), qty: i.qty }).collect(),
            };
            let (mut inst, effects) = saga::start(def, *order_id, facts, now)
                .map_err(|r| StoreError::Corrupt(format!("the start transition was refused: {r}")))?;
            // The start transition is version 1 of the saga.
            inst.version = SagaVersion::FIRST;
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
            match decide::effects_to_writes(&self.outbox, &inst, &mut head, &effects, "api", *trace, now, &mut alerts)?
            {
                Ok(w) => writes.merge(w),
                Err(r) => return Err(StoreError::Corrupt(format!("the start transition was refused: {r:?}"))),
            }
            let terminal = def.state(&inst.state).is_some_and(|s| s.terminal);
            instances.push((inst, terminal));
        }
        insert_instances(script, &instances, now)?;
        insert_transitions(script, &writes.transitions, now);
        // `now` is the host's here (order creation reads no server clock).
        flush_timers(script, &writes.timers, now, Clock::Host)?;
        Ok(writes.outbox)
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
        crate::store::retry(|| async {
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
        let ids: Vec<&str> = batch.iter().map(|b| b.event_id.as_str()).collect();
        let (now, seen_before) = inbox::db_now_and_existing(tx, &ids).await?;
        let order_ids: BTreeSet<OrderId> =
            batch.iter().filter(|b| !seen_before.contains(&b.event_id)).filter_map(|b| b.order_id).collect();
        let (slots, heads) = lock_sagas_and_orders(tx, &order_ids, lock).await?;
        // The due timers the batch's live firings may take, read and locked in
        // one statement (not one round trip per firing).
        let firing: BTreeSet<OrderId> = batch
            .iter()
            .filter(|b| !seen_before.contains(&b.event_id))
            .filter(|b| decide::timer_to_take(b, b.order_id.and_then(|id| slots.get(&id))).is_some())
            .filter_map(|b| b.order_id)
            .collect();
        let due = timers::lock_due(tx, &firing).await?;
        for b in batch.iter().filter(|b| b.event.is_ok()) {
            crate::failpoint::panic_on("saga.apply.panic", &b.event_id);
        }

        // Everything is read: the batch is decided without I/O.
        let snapshot = batch::Snapshot { now, seen_before, slots, heads, due };
        let batch::Plan { writes, changed, result } =
            batch::plan(&self.catalog, &self.outbox, batch, snapshot, lock, unknown)?;

        // Every write in one round trip (`store::script`), in the order the
        // statements ran when they were sent one by one.
        let mut script = Script::new();
        inbox::insert(&mut script, &writes.inbox, now);
        let changed: Vec<&Slot> = changed.iter().collect();
        upsert_instances(&mut script, &changed, &self.catalog, now)?;
        update_orders(&mut script, &writes.orders, now)?;
        insert_history(&mut script, &writes.history, now);
        flush_timers(&mut script, &writes.timers, now, Clock::Database)?;
        insert_parked(&mut script, &writes.parked, now);
        insert_transitions(&mut script, &writes.transitions, now);
        outbox::insert(&mut script, &writes.outbox, now);
        script.run(tx).await?;
        Ok(result)
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
        trace: Option<&TraceContext>,
    ) -> Result<Result<u32, ChangeRefusal>, StoreError> {
        let order_id = head.order_id;
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
                    source: Source::Http,
                    trace: trace.cloned(),
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
        trace: Option<&TraceContext>,
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
