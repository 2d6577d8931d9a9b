//! From Kafka messages to applied saga events: the consumer's batch handler.
//!
//! Decoding failures are classified: a registry outage is waited out (the
//! partition stalls, nothing is lost, nothing is dead-lettered); bytes that
//! cannot be decoded as the topic's message are poison and go to the saga
//! shell as such (dead-letter + quarantine).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Message as _, OwnedMessage};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Topics;
use crate::contracts::codec::{Codec, CodecError};
use crate::contracts::headers;
use crate::kafka::consumer::{BatchHandler, Stopped};
use crate::kafka::header_str;
use crate::saga::{Event, EventBody};
use crate::store::Db;
use crate::store::sagas::{BatchResult, Inbound, InboundOutcome, LockMode, RawMessage, SagaStore};
use crate::telemetry::metrics::{CodeLabel, Metrics, OutcomeLabel, ReasonLabel, StateLabel, TransitionLabel};
use crate::telemetry::traceparent::TraceParent;

pub struct EventHandler {
    pub db: Db,
    pub sagas: SagaStore,
    pub codec: Codec,
    pub topics: Topics,
    pub metrics: Metrics,
    pub relay_wakeup: Arc<Notify>,
}

/// Backoff for retrying the same batch: 50 ms doubling to 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(7)).min(5_000))
}

impl EventHandler {
    async fn decode(&self, m: &OwnedMessage) -> Result<Inbound, CodecError> {
        let topic = m.topic();
        let source = format!("kafka:{topic}/{}@{}", m.partition(), m.offset());
        let header_id = header_str(m.headers(), headers::EVENT_ID);
        let trace = header_str(m.headers(), headers::TRACEPARENT).as_deref().and_then(TraceParent::parse);
        let key_order: Option<i64> =
            m.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| k.trim().parse().ok());
        let raw = RawMessage {
            topic: topic.to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        };
        let fallback_id =
            || header_id.clone().unwrap_or_else(|| format!("kafka:{topic}:{}:{}", m.partition(), m.offset()));
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
                if let Some(k) = key_order
                    && k != msg.order_id()
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
                let event =
                    Event { id: msg.event_id().to_owned(), order_id: msg.order_id(), body: EventBody::Message(msg) };
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

/// Metrics and logs of one applied batch (consumer, sweeper, ops actions).
pub fn record_batch(m: &Metrics, result: &BatchResult) {
    for o in &result.outcomes {
        let label = match o {
            InboundOutcome::Applied { .. } => "applied",
            InboundOutcome::Ignored => "ignored",
            InboundOutcome::Duplicate => {
                m.saga_inbox_duplicates_total.inc();
                "duplicate"
            }
            InboundOutcome::Parked => "parked",
            InboundOutcome::DeadLettered { kind, reason, order_id } => {
                m.saga_dead_lettered_total.get_or_create(&ReasonLabel { reason: kind.as_str().into() }).inc();
                tracing::warn!(order_id = order_id.unwrap_or_default(), reason = %reason, kind = kind.as_str(), "event dead-lettered; the saga is quarantined when the order is known");
                "dead_lettered"
            }
            InboundOutcome::Stale => "stale",
            InboundOutcome::Refused(_) => "refused",
        };
        m.saga_events_total.get_or_create(&OutcomeLabel { outcome: label.into() }).inc();
    }
    for (from, to, secs) in &result.status_changes {
        m.order_status_transition_seconds
            .get_or_create(&TransitionLabel { from_status: from.as_str().into(), to_status: to.as_str().into() })
            .observe(*secs);
    }
    for (state, secs) in &result.dwell {
        m.saga_state_dwell_seconds.get_or_create(&StateLabel { state: state.clone() }).observe(*secs);
    }
    for a in &result.alerts {
        m.saga_alerts_total.get_or_create(&CodeLabel { code: a.code.clone() }).inc();
        tracing::warn!(order_id = a.order_id, tenant_region = %a.tenant_region, alert = %a.code, "{}", a.message);
    }
}

fn poison(
    event_id: String,
    order_id: Option<i64>,
    event_name: String,
    reason: String,
    source: String,
    trace: Option<TraceParent>,
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
        order_id = i.order_id.unwrap_or_default(),
    );
    if let Some(tp) = &i.trace {
        crate::telemetry::otel::set_remote_parent(&span, tp);
    }
    span
}

impl BatchHandler for EventHandler {
    async fn handle(&self, batch: Vec<OwnedMessage>, stop: CancellationToken) -> Result<(), Stopped> {
        let mut inbound = Vec::with_capacity(batch.len());
        // One span per event, ended when the batch commits; the rows each
        // event writes carry its span's context onwards.
        let mut spans = Vec::with_capacity(batch.len());
        for m in &batch {
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
                        tracing::warn!(error = %e, attempt, "schema registry unavailable; retrying the batch");
                        tokio::select! {
                            _ = stop.cancelled() => return Err(Stopped),
                            _ = tokio::time::sleep(backoff(attempt)) => {}
                        }
                        attempt += 1;
                    }
                }
            }
        }
        let mut attempt = 0;
        loop {
            let tx_span = tracing::info_span!("db.transaction", db.system = "mysql", events = inbound.len());
            let applied = self.sagas.apply_batch(&self.db, &inbound, LockMode::Wait).instrument(tx_span).await;
            match applied {
                Ok(result) => {
                    // Committed, offset not stored yet: the window a crash test aims at.
                    crate::failpoint::hit("consumer.after_commit");
                    if result.outbox_rows > 0 {
                        self.relay_wakeup.notify_one();
                    }
                    self.metrics.consumer_batch_size.observe(inbound.len() as f64);
                    record_batch(&self.metrics, &result);
                    return Ok(());
                }
                Err(e) => {
                    if attempt >= 3 {
                        tracing::error!(error = %e, attempt, "cannot apply events; the partition waits until the database recovers");
                    } else {
                        tracing::warn!(error = %e, attempt, "applying events failed; retrying");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return Err(Stopped),
                        _ = tokio::time::sleep(backoff(attempt)) => {}
                    }
                    attempt += 1;
                }
            }
        }
    }
}
