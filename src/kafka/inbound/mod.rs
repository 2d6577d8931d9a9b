//! From Kafka messages to applied saga events: the consumer's batch handler.
//!
//! Every failure is classified, and nothing is retried forever:
//!
//! * **Transient** (registry or database unreachable, deadlock, lock wait,
//!   failover): the same batch is retried with backoff while the consumer
//!   keeps polling (its partition is paused, the member stays in the group);
//!   `saga_consumer_retries_total{reason}` counts it.
//! * **Permanent for one event**: bytes that do not decode, a field the store
//!   cannot hold (checked here, at the edge, against [`crate::store::limits`]),
//!   or anything the database refuses or the shell panics on. Decode and
//!   validation failures become poison directly. A batch the database refuses
//!   is split in halves (in order) until the one event that causes it is
//!   alone; that event is dead-lettered with the reason and its saga
//!   quarantined, and the rest of the batch is applied. Per-order order holds:
//!   halves are applied in order, and a quarantined saga parks its later events.

mod group;
mod retry;

pub use self::group::GroupLimits;
pub use self::retry::REFUSALS_BEFORE_DEAD_LETTER;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;

use crate::store::outbox::RelayWakeup;
use rdkafka::message::{Message as _, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::consumer::{BatchHandler, Stopped, panic_message};
use super::header_str;
use crate::codec::{Codec, CodecError};
use crate::config::Topics;
use crate::contracts::{Message, headers};
use crate::domain::OrderId;
use crate::orchestrator::{BatchResult, Inbound, LockMode, RawMessage, SagaStore, Source, UnknownVersion};
use crate::saga::{Event, EventBody};
use crate::store::{Db, StoreError, limits};
use crate::telemetry::metrics::{Metrics, ReasonLabel};
use crate::telemetry::trace_context::TraceContext;

use self::retry::{BatchRetry, Failure, Reaction, Step};

pub struct EventHandler {
    pub db: Db,
    pub sagas: SagaStore,
    pub codec: Codec,
    pub topics: Topics,
    pub metrics: Metrics,
    pub relay_wakeup: Arc<RelayWakeup>,
    /// How long events of a saga on a definition version this replica has not
    /// loaded are retried (a newer replica of a rolling deploy takes them)
    /// before the saga is quarantined.
    pub version_patience: Duration,
    /// Where runs go to share transactions with other partitions' runs;
    /// `None`: every run in its own transaction.
    pub group_commit: Option<GroupCommit>,
}

/// The consumer's group committer (`group.rs`): runs of different partitions
/// that become ready while earlier ones commit share one transaction.
#[derive(Clone)]
pub struct GroupCommit(group::RunCommitter<ApplyFailure>);

impl GroupCommit {
    /// Starts the committer on the current runtime; `None` when `limits`
    /// allow one run per transaction (grouping off).
    pub fn spawn(db: &Db, sagas: &SagaStore, metrics: &Metrics, limits: GroupLimits) -> Option<GroupCommit> {
        let applier = Transactions { db: db.clone(), sagas: sagas.clone(), metrics: metrics.clone() };
        (limits.max_runs > 1).then(|| GroupCommit(group::RunCommitter::spawn(applier, limits)))
    }
}

/// One database transaction per run of events: what the handler runs alone
/// and the group committer runs for a group.
struct Transactions {
    db: Db,
    sagas: SagaStore,
    metrics: Metrics,
}

/// One transaction for `run`, with a panic in the shell turned into a refusal.
async fn apply_run(
    db: &Db,
    sagas: &SagaStore,
    metrics: &Metrics,
    run: &[Inbound],
    unknown: UnknownVersion,
) -> Result<BatchResult, ApplyFailure> {
    let tx_span = tracing::info_span!("db.transaction", db.system = "mysql", events = run.len());
    let fut = sagas.apply(db, run, LockMode::Wait, unknown).instrument(tx_span);
    let outcome = match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) if e.is_transient() => Err(ApplyFailure::Transient(e)),
        Ok(Err(e)) => Err(ApplyFailure::Refused(e.to_string())),
        Err(p) => Err(ApplyFailure::Refused(format!("the saga shell panicked: {}", panic_message(p.as_ref())))),
    };
    if outcome.is_ok() {
        metrics.consumer.consumer_batch_size.observe(run.len() as f64);
    }
    outcome
}

impl group::RunApplier for Transactions {
    type Failure = ApplyFailure;

    async fn apply(&self, run: &[Inbound]) -> Result<BatchResult, ApplyFailure> {
        apply_run(&self.db, &self.sagas, &self.metrics, run, UnknownVersion::Wait).await
    }

    fn grouped(&self, runs: usize) {
        self.metrics.consumer.consumer_group_commit_runs.observe(runs as f64);
    }
}

impl EventHandler {
    async fn decode(&self, m: &OwnedMessage) -> Result<Inbound, CodecError> {
        let topic = m.topic();
        let source = source_of(m);
        let header_id = header_str(m.headers(), headers::EVENT_ID);
        let tracestate = header_str(m.headers(), headers::TRACESTATE);
        let trace = header_str(m.headers(), headers::TRACEPARENT)
            .and_then(|tp| TraceContext::extract(&tp, tracestate.as_deref()));
        let key_order = key_order(m);
        let raw = raw_of(m);
        // Deterministic, so that a redelivery de-duplicates; hashed when it would not fit.
        let fallback_id = || {
            limits::storable_event_id(
                &header_id.clone().unwrap_or_else(|| format!("kafka:{topic}:{}:{}", m.partition(), m.offset())),
            )
        };
        let Some(kind) = self.topics.kind_of(topic) else {
            return Ok(poison(
                fallback_id(),
                key_order,
                "unknown".into(),
                format!("no message kind is mapped to topic {topic}"),
                source,
                trace,
                raw,
            ));
        };
        match self.codec.decode(kind, m.payload()).await {
            Ok(msg) => {
                let order_id = match validate(&msg) {
                    Ok(order_id) => order_id,
                    Err(reason) => {
                        let order_id = OrderId::try_from(msg.order_id()).ok().or(key_order);
                        let id = limits::storable_event_id(msg.event_id());
                        return Ok(poison(id, order_id, kind.name().into(), reason, source, trace, raw));
                    }
                };
                if let Some(k) = key_order
                    && k != order_id
                {
                    let reason = format!("Kafka key {k} does not match order_id {} in the payload", msg.order_id());
                    return Ok(poison(
                        msg.event_id().to_owned(),
                        Some(k),
                        kind.name().into(),
                        reason,
                        source,
                        trace,
                        raw,
                    ));
                }
                let event = Event { id: msg.event_id().to_owned(), order_id, body: EventBody::Message(msg) };
                Ok(Inbound {
                    event_id: event.id.clone(),
                    order_id: Some(event.order_id),
                    event_name: kind.name().to_owned(),
                    event: Ok(event),
                    source,
                    trace,
                    raw: Some(raw),
                })
            }
            Err(e) if e.is_retriable() => Err(e),
            Err(e) => Ok(poison(fallback_id(), key_order, kind.name().into(), e.to_string(), source, trace, raw)),
        }
    }
}

/// The order a message's Kafka key names, when it could be an order's id.
fn key_order(m: &OwnedMessage) -> Option<OrderId> {
    m.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| k.trim().parse().ok())
}

/// The original bytes and coordinates, for a dead-letter copy.
fn raw_of(m: &OwnedMessage) -> RawMessage {
    RawMessage {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
    }
}

/// Where a consumed message came from.
fn source_of(m: &OwnedMessage) -> Source {
    Source::Kafka { topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset() }
}

fn poison(
    event_id: String,
    order_id: Option<OrderId>,
    event_name: String,
    reason: String,
    source: Source,
    trace: Option<TraceContext>,
    raw: RawMessage,
) -> Inbound {
    Inbound { event_id, order_id, event_name, event: Err(reason), source, trace, raw: Some(raw) }
}

/// A consumer span for one message, child of the producer's context.
fn event_span(m: &OwnedMessage, i: &Inbound) -> tracing::Span {
    let span = tracing::info_span!(
        "saga.event",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = %m.topic(),
        messaging.kafka.partition = m.partition(),
        messaging.kafka.offset = m.offset(),
        messaging.message.id = %i.event_id,
        event.type = %i.event_name,
        order_id = i.order_id.map_or(0, OrderId::get),
    );
    if let Some(tp) = &i.trace {
        crate::telemetry::otel::set_remote_parent(&span, tp);
    }
    span
}

/// Checks every inbound field the store keeps against what it can hold, so
/// that a bad value is a dead-letter with a precise reason, not a database
/// refusal. Returns the order the message is about, or the first problem found.
pub fn validate(msg: &Message) -> Result<OrderId, String> {
    fn text(field: &str, v: &str, max: usize) -> Result<(), String> {
        let n = v.chars().count();
        if n > max {
            return Err(format!("{field} is {n} characters long; at most {max} are accepted"));
        }
        if v.chars().any(char::is_control) {
            return Err(format!("{field} contains control characters"));
        }
        Ok(())
    }
    fn qty(field: &str, v: i32) -> Result<(), String> {
        if v < 0 { Err(format!("{field} is negative ({v})")) } else { Ok(()) }
    }
    let id = msg.event_id();
    if !limits::is_storable_event_id(id) {
        return Err(format!(
            "event_id must be 1 to {} printable ASCII characters without spaces (got {} bytes: {:?})",
            limits::EVENT_ID_MAX,
            id.len(),
            id.chars().take(40).collect::<String>()
        ));
    }
    if limits::is_reserved_event_id(id) {
        return Err(format!(
            "event_id {id:?} starts with a prefix this daemon reserves for its own events ({})",
            limits::RESERVED_EVENT_ID_PREFIXES.join(", ")
        ));
    }
    let order_id = OrderId::try_from(msg.order_id())
        .map_err(|_| format!("order_id must be a positive integer (got {})", msg.order_id()))?;
    text("tenant_region", msg.tenant_region(), limits::TENANT_REGION_MAX)?;
    let occurred = |t: crate::contracts::TimestampMicros| {
        if (0..=limits::TIMESTAMP_MICROS_MAX).contains(&t.0) {
            Ok(())
        } else {
            Err(format!("occurred_at ({} µs since the epoch) is outside 1970..9999", t.0))
        }
    };
    let opt = |field: &str, v: &Option<String>| v.as_deref().map_or(Ok(()), |v| text(field, v, limits::FOREIGN_ID_MAX));
    let fields = match msg {
        Message::InventoryReserved(m) => {
            occurred(m.occurred_at)?;
            opt("command_id", &m.command_id)
        }
        Message::InventoryReservationFailed(m) => {
            occurred(m.occurred_at)?;
            opt("command_id", &m.command_id)?;
            text("reason", &m.reason, limits::TEXT_MAX)?;
            for s in &m.shortages {
                text("shortages.sku", &s.sku, 64)?;
                qty("shortages.requested_qty", s.requested_qty)?;
                qty("shortages.available_qty", s.available_qty)?;
            }
            Ok(())
        }
        Message::PaymentAuthorized(m) => {
            occurred(m.occurred_at)?;
            text("payment_intent_id", &m.payment_intent_id, limits::FOREIGN_ID_MAX)?;
            text("amount", &m.amount, 64)?;
            text("currency", &m.currency, 3)
        }
        Message::PaymentFailed(m) => {
            occurred(m.occurred_at)?;
            text("payment_intent_id", &m.payment_intent_id, limits::FOREIGN_ID_MAX)?;
            text("reason", &m.reason, limits::TEXT_MAX)
        }
        // Messages this daemon publishes are never consumed from an inbound
        // topic; if one arrives there, the saga definition rejects it.
        Message::OrderCreated(_)
        | Message::OrderStatusChanged(_)
        | Message::InventoryReserve(_)
        | Message::InventoryRelease(_)
        | Message::PaymentAuthorize(_)
        | Message::PaymentVoid(_)
        | Message::OrderItemBackordered(_)
        | Message::OrderAttentionRequired(_) => Ok(()),
    };
    fields.map(|()| order_id)
}

/// Why applying a run of events failed.
#[derive(Debug)]
enum ApplyFailure {
    /// Running it again as it is may succeed.
    Transient(StoreError),
    /// Deterministic for this input: the database refused it, or the shell panicked.
    Refused(String),
}

impl ApplyFailure {
    /// The policy's view of it.
    fn kind(&self) -> Failure {
        match self {
            ApplyFailure::Transient(StoreError::DefinitionNotLoaded { .. }) => Failure::DefinitionNotLoaded,
            ApplyFailure::Transient(_) => Failure::Transient,
            ApplyFailure::Refused(_) => Failure::Refused,
        }
    }

    fn reason(&self) -> String {
        match self {
            ApplyFailure::Refused(r) => r.clone(),
            ApplyFailure::Transient(e) => e.to_string(),
        }
    }
}

/// A poison form of `b`, safe to store whatever was wrong with it: its id
/// made storable, and its order kept only when it could be an order's id.
fn as_poison(b: &Inbound, reason: String) -> Inbound {
    Inbound {
        event_id: limits::storable_event_id(&b.event_id),
        order_id: b.order_id,
        event_name: b.event_name.clone(),
        event: Err(reason),
        source: b.source.clone(),
        trace: b.trace.clone(),
        raw: b.raw.clone(),
    }
}

impl EventHandler {
    /// One transaction for `run`: shared with other partitions' runs when
    /// the group committer is on and the run may simply wait for a
    /// definition version; alone otherwise.
    async fn try_apply(&self, run: &[Inbound], unknown: UnknownVersion) -> Result<BatchResult, ApplyFailure> {
        if let (Some(GroupCommit(group)), UnknownVersion::Wait) = (&self.group_commit, unknown)
            && let Some(outcome) = group.apply(run.to_vec()).await
        {
            return outcome;
        }
        apply_run(&self.db, &self.sagas, &self.metrics, run, unknown).await
    }

    fn committed(&self, result: &BatchResult) {
        // Committed, offset not stored yet: the window a crash test aims at.
        crate::failpoint::hit("consumer.after_commit");
        if result.outbox_rows > 0 {
            self.relay_wakeup.rows_committed(result.outbox_shards.iter().copied());
        }
        crate::orchestrator::record_batch(&self.metrics, result);
    }

    async fn wait(&self, stop: &CancellationToken, delay: Duration) -> Result<(), Stopped> {
        tokio::select! {
            _ = stop.cancelled() => Err(Stopped),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// Applies `inbound` in order: every event ends applied (or parked,
    /// ignored, duplicate) or dead-lettered, or `Stopped` is returned. The
    /// policy (split, retry, dead-letter, patience) is [`BatchRetry`]'s; this
    /// driver runs its transactions and sleeps its waits.
    async fn apply_all(&self, inbound: &[Inbound], stop: &CancellationToken) -> Result<(), Stopped> {
        let mut policy = BatchRetry::new(inbound.len(), self.version_patience);
        // The last failure, for the log line of the wait it causes.
        let mut last: Option<ApplyFailure> = None;
        loop {
            let result = match policy.poll(Instant::now()) {
                Step::Done => return Ok(()),
                Step::Wait(delay) => {
                    self.wait(stop, delay).await?;
                    continue;
                }
                Step::Apply { run, unknown } => self.try_apply(&inbound[run], unknown).await,
                Step::DeadLetter { index } => {
                    let reason = last.as_ref().map(ApplyFailure::reason).unwrap_or_default();
                    let poison = as_poison(&inbound[index], format!("refused by the store: {reason}"));
                    self.try_apply(std::slice::from_ref(&poison), UnknownVersion::Quarantine).await
                }
            };
            match result {
                Ok(r) => {
                    self.committed(&r);
                    policy.applied();
                }
                Err(f) => {
                    match policy.failed(Instant::now(), f.kind()) {
                        Some(Reaction::Retry { cause, attempt }) => self.retrying(cause.label(), &f, attempt),
                        Some(Reaction::Split { events }) => {
                            tracing::warn!(events, error = ?f, "the database refused an event batch; splitting it to find the event");
                            self.metrics.consumer.consumer_batch_splits_total.inc();
                        }
                        Some(Reaction::DeadLetter { .. }) | None => {}
                    }
                    last = Some(f);
                }
            }
        }
    }

    fn retrying(&self, cause: &'static str, failure: &dyn std::fmt::Debug, attempt: u32) {
        self.metrics.consumer.consumer_retries_total.get_or_create(&ReasonLabel { reason: cause.into() }).inc();
        if attempt >= 3 {
            tracing::error!(error = ?failure, attempt, cause, "cannot apply events; the partition is paused until it recovers");
        } else {
            tracing::warn!(error = ?failure, attempt, cause, "applying events failed; retrying");
        }
    }

    /// Decodes every message; a registry outage is waited out.
    async fn decode_all(
        &self,
        batch: &[OwnedMessage],
        stop: &CancellationToken,
    ) -> Result<(Vec<Inbound>, Vec<tracing::Span>), Stopped> {
        let mut inbound = Vec::with_capacity(batch.len());
        // One span per event, ended when the batch commits; the rows each
        // event writes carry its span's context onwards.
        let mut spans = Vec::with_capacity(batch.len());
        for m in batch {
            let mut attempt = 0;
            loop {
                match self.decode(m).await {
                    Ok(mut i) => {
                        let span = event_span(m, &i);
                        i.trace = Some(crate::telemetry::otel::propagate(&span, i.trace.as_ref()));
                        spans.push(span);
                        inbound.push(i);
                        break;
                    }
                    Err(e) => {
                        self.retrying("registry", &e, attempt);
                        self.wait(stop, retry::backoff(attempt)).await?;
                        attempt += 1;
                    }
                }
            }
        }
        Ok((inbound, spans))
    }
}

impl BatchHandler for EventHandler {
    async fn handle(&self, batch: &[OwnedMessage], stop: CancellationToken) -> Result<(), Stopped> {
        let (inbound, _spans) = self.decode_all(batch, &stop).await?;
        self.apply_all(&inbound, &stop).await
    }

    async fn dead_letter(&self, m: &OwnedMessage, reason: String, stop: CancellationToken) -> Result<(), Stopped> {
        let header_id = header_str(m.headers(), headers::EVENT_ID);
        let id = header_id.unwrap_or_else(|| format!("kafka:{}:{}:{}", m.topic(), m.partition(), m.offset()));
        let order_id = key_order(m);
        let raw = raw_of(m);
        let source = source_of(m);
        let name = self.topics.kind_of(m.topic()).map(|k| k.name()).unwrap_or("unknown").to_owned();
        let p = poison(limits::storable_event_id(&id), order_id, name, reason, source, None, raw);
        self.apply_all(std::slice::from_ref(&p), &stop).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved(event_id: &str, order_id: i64) -> Message {
        Message::InventoryReserved(crate::contracts::InventoryReserved {
            event_id: event_id.into(),
            order_id,
            occurred_at: crate::contracts::TimestampMicros(1_700_000_000_000_000),
            tenant_region: "eu-west".into(),
            command_id: None,
        })
    }

    #[test]
    fn validation_names_the_field_the_store_cannot_hold() {
        assert_eq!(validate(&reserved("e-1", 1)), Ok(OrderId::new(1).unwrap()));
        let cases = [
            (reserved("e-1", -5), "order_id"),
            (reserved("e-1", 0), "order_id"),
            (reserved("ünïcode", 1), "event_id"),
            (reserved("trailing ", 1), "event_id"),
            (reserved(&"x".repeat(129), 1), "event_id"),
            (reserved("", 1), "event_id"),
            (reserved("timer:1:payment_timeout:2", 1), "event_id"),
            (reserved("ops:1:2:cancel", 1), "event_id"),
        ];
        for (m, field) in cases {
            let e = validate(&m).expect_err(field);
            assert!(e.starts_with(field), "{e}");
        }
        let mut long_region = reserved("e", 1);
        if let Message::InventoryReserved(m) = &mut long_region {
            m.tenant_region = "r".repeat(33);
        }
        assert!(validate(&long_region).unwrap_err().starts_with("tenant_region"));
        let mut far = reserved("e", 1);
        if let Message::InventoryReserved(m) = &mut far {
            m.occurred_at = crate::contracts::TimestampMicros(i64::MAX);
        }
        assert!(validate(&far).unwrap_err().starts_with("occurred_at"));
    }
}
