//! One saga in detail, for operators: its transitions, unpublished outbox
//! rows, dead letters, inbox, parked events and audit trail.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{MySql, QueryBuilder, Row};

use crate::domain::{OrderId, SagaVersion};
use crate::store::{Ctx, Db, StoreError};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TransitionView {
    pub saga_version: SagaVersion,
    pub event_id: String,
    #[sqlx(rename = "event_name")]
    pub event: String,
    #[sqlx(rename = "from_state")]
    pub from: String,
    #[sqlx(rename = "to_state")]
    pub to: String,
    pub actor: String,
    pub reason: Option<String>,
    #[sqlx(rename = "occurred_at")]
    pub at: DateTime<Utc>,
}

pub async fn transitions(db: &Db, order_id: OrderId) -> Result<Vec<TransitionView>, StoreError> {
    sqlx::query_as(
        "SELECT saga_version, event_id, event_name, from_state, to_state, actor, reason, occurred_at FROM saga_transitions \
         WHERE order_id = ? ORDER BY id",
    )
    .bind(order_id)
    .fetch_all(&db.pool)
    .await
    .ctx("reading transitions")
}

/// The transitions that took the saga past `version` (the newest
/// [`CHANGES_SHOWN`]): who changed it and what, for an operator whose action
/// was refused as stale.
pub async fn changes_since(
    tx: &mut crate::store::Tx,
    order_id: OrderId,
    version: SagaVersion,
) -> Result<Vec<TransitionView>, StoreError> {
    let mut rows: Vec<TransitionView> = sqlx::query_as(
        "SELECT saga_version, event_id, event_name, from_state, to_state, actor, reason, occurred_at FROM saga_transitions \
         WHERE order_id = ? AND saga_version > ? ORDER BY id DESC LIMIT ?",
    )
    .bind(order_id)
    .bind(version)
    .bind(CHANGES_SHOWN)
    .fetch_all(&mut **tx)
    .await
    .ctx("reading the changes since a version")?;
    rows.reverse();
    Ok(rows)
}

/// Changes listed with a stale-version refusal.
pub const CHANGES_SHOWN: u32 = 10;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OutboxView {
    pub id: u64,
    pub event_id: String,
    pub event_type: String,
    pub topic: String,
    pub created_at: DateTime<Utc>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Outbox rows of an order not yet published.
pub async fn unpublished(db: &Db, order_id: OrderId) -> Result<Vec<OutboxView>, StoreError> {
    sqlx::query_as(
        "SELECT id, event_id, event_type, topic, created_at, attempts, last_error FROM outbox \
         WHERE aggregate_id = ? AND published_at IS NULL ORDER BY id",
    )
    .bind(order_id.to_string())
    .fetch_all(&db.pool)
    .await
    .ctx("reading unpublished outbox rows")
}

/// A dead-letter copy of one of the order's events, with the headers that
/// say why (as published to the DLQ topic, or about to be).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub event_id: String,
    pub topic: String,
    pub headers: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
}

pub async fn dead_letters(db: &Db, order_id: OrderId) -> Result<Vec<DeadLetterView>, StoreError> {
    let rows = sqlx::query(
        "SELECT event_id, topic, headers, created_at, published_at FROM outbox \
         WHERE aggregate_id = ? AND event_type = ? ORDER BY id LIMIT 100",
    )
    .bind(order_id.to_string())
    .bind(crate::store::outbox::EVENT_TYPE_DEAD_LETTER)
    .fetch_all(&db.pool)
    .await
    .ctx("reading dead letters")?;
    rows.iter()
        .map(|r| {
            let headers: String = r.try_get("headers").ctx("decoding headers")?;
            Ok(DeadLetterView {
                event_id: r.try_get("event_id").ctx("decoding event_id")?,
                topic: r.try_get("topic").ctx("decoding topic")?,
                // Written by us as a JSON object; shown as text if it ever is not.
                headers: serde_json::from_str(&headers).unwrap_or(serde_json::Value::String(headers)),
                created_at: r.try_get("created_at").ctx("decoding created_at")?,
                published_at: r.try_get("published_at").ctx("decoding published_at")?,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InboxView {
    pub event_id: String,
    #[sqlx(rename = "event_name")]
    pub event: String,
    pub source: String,
    pub outcome: String,
    pub received_at: DateTime<Utc>,
}

pub async fn inbox(db: &Db, order_id: OrderId) -> Result<Vec<InboxView>, StoreError> {
    sqlx::query_as(
        "SELECT event_id, event_name, source, CAST(outcome AS CHAR) AS outcome, received_at FROM saga_inbox \
         WHERE order_id = ? ORDER BY received_at, event_id",
    )
    .bind(order_id)
    .fetch_all(&db.pool)
    .await
    .ctx("reading the inbox")
}

#[derive(Debug, Clone, Serialize)]
pub struct ParkedView {
    pub id: u64,
    pub event_id: String,
    pub event: String,
    pub source: String,
    pub poison: bool,
    pub error: Option<String>,
    pub replayable: bool,
    pub parked_at: DateTime<Utc>,
    pub resolution: Option<String>,
}

/// Parked events of an order; `unresolved_only` hides replayed/skipped ones.
pub async fn parked(db: &Db, order_id: OrderId, unresolved_only: bool) -> Result<Vec<ParkedView>, StoreError> {
    let sql = if unresolved_only {
        "SELECT id, event_id, event_name, source, poison, error, payload IS NOT NULL AS has_payload, parked_at, \
         CAST(resolution AS CHAR) AS resolution FROM saga_parked_events WHERE order_id = ? AND resolved_at IS NULL ORDER BY id"
    } else {
        "SELECT id, event_id, event_name, source, poison, error, payload IS NOT NULL AS has_payload, parked_at, \
         CAST(resolution AS CHAR) AS resolution FROM saga_parked_events WHERE order_id = ? ORDER BY id"
    };
    let rows = sqlx::query(sql).bind(order_id).fetch_all(&db.pool).await.ctx("reading parked events")?;
    rows.iter()
        .map(|r| {
            let event: String = r.try_get("event_name").ctx("decoding")?;
            let has_payload: bool = r.try_get::<i64, _>("has_payload").ctx("decoding")? != 0;
            Ok(ParkedView {
                id: r.try_get("id").ctx("decoding")?,
                event_id: r.try_get("event_id").ctx("decoding")?,
                replayable: has_payload || event.starts_with(crate::saga::definition::TIMER_PREFIX),
                event,
                source: r.try_get("source").ctx("decoding")?,
                poison: r.try_get("poison").ctx("decoding")?,
                error: r.try_get("error").ctx("decoding")?,
                parked_at: r.try_get("parked_at").ctx("decoding")?,
                resolution: r.try_get("resolution").ctx("decoding")?,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    pub id: u64,
    pub order_id: Option<OrderId>,
    pub action: String,
    pub params: serde_json::Value,
    pub actor: String,
    pub reason: String,
    pub version_before: Option<u32>,
    pub version_after: Option<u32>,
    pub result: String,
    pub detail: Option<String>,
    pub job_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Which audit rows: newest first, optionally of one order, one bulk job or
/// one actor, and older than `before_id` (the next page).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub order_id: Option<OrderId>,
    pub job_id: Option<String>,
    pub actor: Option<String>,
    pub before_id: Option<u64>,
    pub limit: u32,
}

pub async fn audit(db: &Db, q: &AuditQuery) -> Result<Vec<AuditView>, StoreError> {
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT id, order_id, action, params, actor, reason, version_before, version_after, result, detail, job_id, created_at \
         FROM ops_audit WHERE 1 = 1",
    );
    if let Some(o) = q.order_id {
        qb.push(" AND order_id = ").push_bind(o);
    }
    if let Some(j) = &q.job_id {
        qb.push(" AND job_id = ").push_bind(j.clone());
    }
    if let Some(a) = &q.actor {
        qb.push(" AND actor = ").push_bind(a.clone());
    }
    if let Some(b) = q.before_id {
        qb.push(" AND id < ").push_bind(b);
    }
    let limit = q.limit;
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    let rows = qb.build().fetch_all(&db.pool).await.ctx("reading the audit trail")?;
    rows.iter()
        .map(|r| {
            let params: String = r.try_get("params").ctx("decoding")?;
            Ok(AuditView {
                id: r.try_get("id").ctx("decoding")?,
                order_id: r.try_get("order_id").ctx("decoding")?,
                action: r.try_get("action").ctx("decoding")?,
                params: serde_json::from_str(&params).unwrap_or(serde_json::Value::String(params)),
                actor: r.try_get("actor").ctx("decoding")?,
                reason: r.try_get("reason").ctx("decoding")?,
                version_before: r.try_get("version_before").ctx("decoding")?,
                version_after: r.try_get("version_after").ctx("decoding")?,
                result: r.try_get("result").ctx("decoding")?,
                detail: r.try_get("detail").ctx("decoding")?,
                job_id: r.try_get("job_id").ctx("decoding")?,
                created_at: r.try_get("created_at").ctx("decoding")?,
            })
        })
        .collect()
}

/// Whether a transition-log row records a change (not a quarantine or a
/// stale reply, which the log keeps but which moved nothing).
pub fn moved_something(reason: Option<&str>) -> bool {
    !reason.is_some_and(|r| r.starts_with("QUARANTINED:") || r.starts_with("STALE_REPLY:"))
}

/// In-flight sagas after `after` (from the first when `None`; at most `limit`, by order id)
/// with their applied transitions, for `sagas preview`: read in pages so any
/// number of sagas fits in bounded memory. Rows the transition log keeps for
/// what changed nothing (quarantines, stale replies) are left out.
pub async fn in_flight_histories(
    db: &Db,
    after: Option<OrderId>,
    limit: u32,
) -> Result<Vec<crate::saga::preview::History>, StoreError> {
    let sagas: Vec<(OrderId, u32, String)> = sqlx::query_as(
        "SELECT order_id, definition_version, state FROM saga_instances \
         WHERE terminal = 0 AND order_id > ? ORDER BY order_id LIMIT ?",
    )
    .bind(after.map_or(0, OrderId::get))
    .bind(limit)
    .fetch_all(&db.pool)
    .await
    .ctx("reading in-flight sagas")?;
    let (Some(first), Some(last)) = (sagas.first(), sagas.last()) else { return Ok(Vec::new()) };
    let rows: Vec<(OrderId, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT t.order_id, t.from_state, t.event_name, t.to_state, t.reason FROM saga_transitions t \
         JOIN saga_instances s ON s.order_id = t.order_id AND s.terminal = 0 \
         WHERE t.order_id BETWEEN ? AND ? ORDER BY t.order_id, t.id",
    )
    .bind(first.0)
    .bind(last.0)
    .fetch_all(&db.pool)
    .await
    .ctx("reading in-flight sagas' transitions")?;
    let mut out: Vec<crate::saga::preview::History> = sagas
        .into_iter()
        .map(|(order_id, definition_version, state)| crate::saga::preview::History {
            order_id,
            definition_version,
            state,
            transitions: Vec::new(),
        })
        .collect();
    let mut i = 0;
    for (order_id, from, event, to, reason) in rows {
        let unchanged =
            reason.as_deref().is_some_and(|r| r.starts_with("QUARANTINED:") || r.starts_with("STALE_REPLY:"));
        if unchanged {
            continue;
        }
        while i < out.len() && out[i].order_id < order_id {
            i += 1;
        }
        if let Some(h) = out.get_mut(i).filter(|h| h.order_id == order_id) {
            h.transitions.push((from, event, to));
        }
    }
    Ok(out)
}
