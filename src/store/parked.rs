//! Parked events (`saga_parked_events`): the events of a quarantined saga,
//! kept in arrival order until an operator replays or skips them.

use chrono::{DateTime, Utc};
use sqlx::{MySql, QueryBuilder, Row};

use super::script::Script;
use super::{Ctx, StoreError, Tx, truncate};
use crate::contracts::{Message, MessageKind};
use crate::domain::OrderId;
use crate::saga::{Event, EventBody};

pub(crate) struct ParkedRow {
    pub(crate) order_id: OrderId,
    pub(crate) event_id: String,
    pub(crate) event_name: String,
    pub(crate) source: String,
    pub(crate) payload: Option<String>,
    pub(crate) traceparent: Option<String>,
    pub(crate) poison: bool,
    pub(crate) error: Option<String>,
}

pub(crate) fn insert_parked(s: &mut Script, rows: &[ParkedRow], now: DateTime<Utc>) {
    // Chunked: bounds one statement's size.
    for rows in rows.chunks(crate::store::limits::ROWS_PER_STATEMENT) {
        s.statement("parking events")
            .sql(
                "INSERT INTO saga_parked_events (order_id, event_id, event_name, source, payload, traceparent, poison, error, parked_at) ",
            )
            .values(rows, |b, r| {
                b.lit(r.order_id)
                    .lit(truncate(&r.event_id, 191))
                    .lit(truncate(&r.event_name, 128))
                    .lit(truncate(&r.source, 300))
                    .lit(&r.payload)
                    .lit(&r.traceparent)
                    .lit(r.poison)
                    .lit(&r.error)
                    .lit(now);
            });
    }
}

/// An unresolved parked event, ready to replay.
#[derive(Debug, Clone)]
pub struct ParkedEvent {
    pub id: u64,
    pub event_id: String,
    pub event_name: String,
    pub payload: Option<String>,
    pub traceparent: Option<String>,
    pub poison: bool,
}

/// The unresolved parked events of a saga, oldest first; `lock` takes their
/// row locks (an action), without it they are only read (the console).
pub async fn unresolved_parked(tx: &mut Tx, order_id: OrderId, lock: bool) -> Result<Vec<ParkedEvent>, StoreError> {
    let sql = if lock {
        "SELECT id, event_id, event_name, payload, traceparent, poison FROM saga_parked_events \
         WHERE order_id = ? AND resolved_at IS NULL ORDER BY id FOR UPDATE"
    } else {
        "SELECT id, event_id, event_name, payload, traceparent, poison FROM saga_parked_events \
         WHERE order_id = ? AND resolved_at IS NULL ORDER BY id"
    };
    let rows = sqlx::query(sql).bind(order_id).fetch_all(&mut **tx).await.ctx("reading parked events")?;
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
pub(crate) async fn resolve_parked(tx: &mut Tx, ids: &[u64], resolution: &str) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("UPDATE saga_parked_events SET resolved_at = ");
    qb.push_bind(crate::store::now()).push(", resolution = ").push_bind(resolution.to_owned()).push(" WHERE id IN (");
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    qb.push(")");
    qb.build().execute(&mut **tx).await.ctx("resolving parked events")?;
    Ok(())
}

/// Decodes a parked event back into an inbound event (for replay).
pub fn parked_to_event(
    order_id: OrderId,
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
