//! The `outbox` table: written inside business transactions, read by the relay.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{MySql, QueryBuilder, Row};

use super::script::Script;
use super::{Ctx, StoreError, Tx};
use crate::config::Topics;
use crate::contracts::{Message, headers};
use crate::domain::OrderId;
use crate::telemetry::trace_context::TraceContext;

/// `aggregate_type` of every row this daemon writes.
pub const AGGREGATE_ORDER: &str = "order";
/// `event_type` of dead-letter rows (raw bytes, published to the DLQ topic).
pub const EVENT_TYPE_DEAD_LETTER: &str = "dead_letter";

/// One row to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxRow {
    pub event_id: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub topic: String,
    pub payload: String,
    pub headers: String,
    pub shard: u16,
    /// The order's region: the relay chooses the partition from it.
    pub tenant_region: Option<String>,
}

/// A region as `outbox.tenant_region` holds it.
fn region_column(region: &str) -> String {
    region.chars().take(super::limits::TENANT_REGION_MAX).collect()
}

/// Where committed rows may be waiting for the relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Waiting {
    /// Nowhere known.
    #[default]
    Nowhere,
    /// In these shards.
    Shards(BTreeSet<u16>),
    /// In any shard: the relay reads every shard it holds (asking the table
    /// first which have rows, [`pending_shards`], when nothing is in flight).
    Anywhere,
}

impl Waiting {
    /// Rows may be waiting where `self` says or where `other` says.
    pub fn add(&mut self, other: Waiting) {
        match (&mut *self, other) {
            (_, Waiting::Nowhere) | (Waiting::Anywhere, _) => {}
            (Waiting::Shards(mine), Waiting::Shards(theirs)) => mine.extend(theirs),
            (me, other) => *me = other,
        }
    }

    /// Rows may be waiting in `shards` too.
    pub fn add_shards(&mut self, shards: impl IntoIterator<Item = u16>) {
        let shards: BTreeSet<u16> = shards.into_iter().collect();
        if !shards.is_empty() {
            self.add(Waiting::Shards(shards));
        }
    }
}

/// How business transactions tell the relay that they committed outbox rows,
/// and in which shards: the relay reads at once, and only those shards when
/// it has nothing in flight (a read of every shard costs the database several
/// times a read of one: BENCHMARKS.md, "Wake-ups that name their shards").
/// Tell it after the commit. It lives here, beside the rows, because every
/// writer (HTTP, consumer, ops, sweeper) depends on `store` already.
#[derive(Debug, Default)]
pub struct RelayWakeup {
    waiting: Mutex<Waiting>,
    notify: tokio::sync::Notify,
}

impl RelayWakeup {
    /// Rows were committed in `shards`.
    pub fn rows_committed(&self, shards: impl IntoIterator<Item = u16>) {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).add_shards(shards);
        self.notify.notify_one();
    }

    /// Rows were committed or became due in shards the caller does not know
    /// (a timer sweep, an operator's action, a topic's partition count learnt).
    pub fn rows_committed_anywhere(&self) {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).add(Waiting::Anywhere);
        self.notify.notify_one();
    }

    /// Resolves once rows were committed since the last [`RelayWakeup::take`]
    /// (or spuriously: `take` may then return [`Waiting::Nowhere`]).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Where rows were committed since the last call.
    pub fn take(&self) -> Waiting {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Turns messages into outbox rows: resolves the topic, the shard and the
/// headers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboxWriter {
    pub topics: Topics,
    pub shards: u16,
}

impl OutboxWriter {
    pub fn shard_of(&self, order_id: OrderId) -> u16 {
        (order_id.get() % u64::from(self.shards.max(1))) as u16
    }

    pub fn row(&self, msg: &Message, trace: Option<&TraceContext>) -> Result<NewOutboxRow, StoreError> {
        let kind = msg.kind();
        let payload = msg
            .to_json()
            .map_err(|e| StoreError::Corrupt(format!("cannot serialise {kind} as JSON: {e}")))?
            .to_string();
        let mut hdrs = json!({
            headers::EVENT_ID: msg.event_id(),
            headers::EVENT_TYPE: kind.name(),
        });
        if let Some(tc) = trace {
            // The span that wrote the row: its publish span becomes a child of
            // it (`traceparent`, and the caller's `tracestate` when it had one).
            for (name, value) in tc.headers() {
                hdrs[name] = json!(value);
            }
        }
        Ok(NewOutboxRow {
            event_id: msg.event_id().to_owned(),
            aggregate_id: msg.order_id().to_string(),
            event_type: kind.name().to_owned(),
            topic: self.topics.of(kind).to_owned(),
            payload,
            headers: hdrs.to_string(),
            shard: OrderId::try_from(msg.order_id()).map_or(0, |id| self.shard_of(id)),
            tenant_region: Some(region_column(msg.tenant_region())),
        })
    }

    /// A dead-letter row: the original bytes go to the DLQ topic with the
    /// error in headers. `extra_headers` carries the source coordinates.
    pub fn dead_letter_row(
        &self,
        event_id: &str,
        order_key: Option<OrderId>,
        raw_key: Option<&[u8]>,
        raw_payload: Option<&[u8]>,
        region: Option<&str>,
        extra_headers: &[(&str, String)],
    ) -> NewOutboxRow {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut hdrs = serde_json::Map::new();
        hdrs.insert(headers::EVENT_ID.into(), json!(event_id));
        hdrs.insert(headers::EVENT_TYPE.into(), json!(EVENT_TYPE_DEAD_LETTER));
        for (k, v) in extra_headers {
            hdrs.insert((*k).into(), json!(v));
        }
        let payload = json!({
            "key_base64": raw_key.map(|k| b64.encode(k)),
            "value_base64": raw_payload.map(|p| b64.encode(p)),
        });
        NewOutboxRow {
            // The dead-letter copy gets its own id so that it never collides
            // with the id of a real event.
            event_id: super::limits::dead_letter_event_id(event_id),
            aggregate_id: order_key.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
            event_type: EVENT_TYPE_DEAD_LETTER.into(),
            topic: self.topics.dlq.clone(),
            payload: payload.to_string(),
            headers: serde_json::Value::Object(hdrs).to_string(),
            shard: order_key.map(|k| self.shard_of(k)).unwrap_or(0),
            // The dead letter of an order's event goes where its region's events go.
            tenant_region: region.map(region_column),
        }
    }
}

/// Inserts rows in one statement. `INSERT IGNORE` is deliberately not used: a
/// duplicate `event_id` is a bug that must surface, not vanish.
pub(crate) fn insert(s: &mut Script, rows: &[NewOutboxRow], now: DateTime<Utc>) {
    // Chunked: bounds one statement's size.
    for rows in rows.chunks(super::limits::ROWS_PER_STATEMENT) {
        s.statement("inserting outbox rows")
            .sql(
                "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, event_type, topic, payload, headers, shard, tenant_region, created_at) ",
            )
            .values(rows, |b, r| {
                b.lit(&r.event_id)
                    .lit(AGGREGATE_ORDER)
                    .lit(&r.aggregate_id)
                    .lit(&r.event_type)
                    .lit(&r.topic)
                    .lit(&r.payload)
                    .lit(&r.headers)
                    .lit(r.shard)
                    .lit(&r.tenant_region)
                    .lit(now);
            });
    }
}

/// An unpublished row, as the relay reads it.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub id: u64,
    pub event_id: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub topic: String,
    pub payload: String,
    pub headers: String,
    pub attempts: u32,
    pub shard: u16,
    pub tenant_region: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// How much of one shard's queue a relay read takes: the `limit` oldest
/// pending rows of `shard` (rows still in flight included; the relay filters
/// them out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardWindow {
    pub shard: u16,
    pub limit: u32,
}

/// `(id, shard)` of the oldest unpublished rows of each window's shard, at
/// most its `limit`, in id order, **fenced**: only rows of shards whose lease
/// `owner` holds now (database time), so a relay that just lost or gave up a
/// shard cannot read it again; and never a row at or after a held row of the
/// same order (per-order order). No locks: only the lease holder of a shard
/// reads it (see `outbox`).
///
/// One ordered index range per shard (`ix_outbox_pending` is
/// `(published_at, shard, id)`), so a read costs what it returns, whatever
/// the backlog and however many published rows are retained. One `IN` over
/// all shards with one `ORDER BY id LIMIT` cannot be served in id order from
/// that index: MariaDB either sorted the whole backlog or walked the primary
/// key through every retained published row, and the relay fell further
/// behind the longer it was behind (BENCHMARKS.md, "The relay at overload").
///
/// The held-row rule (`skip_held`) costs a join in every shard's branch:
/// three times the server CPU of the read without it, with nothing or a
/// batch pending (BENCHMARKS.md, "Reads that skip the held-row rule"). Held
/// rows are rare and only a shard's lease holder sets them aside ([`hold`],
/// [`defer`]), so the relay knows when none can be held ([`held_for`] when
/// it gains a shard, its own holds since) and then reads with `skip_held`
/// false: index-only branches.
pub async fn pending_ids<'e>(
    db: impl sqlx::MySqlExecutor<'e>,
    owner: &str,
    windows: &[ShardWindow],
    skip_held: bool,
) -> Result<Vec<(u64, u16)>, StoreError> {
    if windows.is_empty() {
        return Ok(Vec::new());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(if skip_held {
        "WITH held AS (SELECT id, aggregate_id FROM outbox WHERE held_until > NOW(6) AND published_at IS NULL) \
         SELECT p.id, p.shard FROM ("
    } else {
        "SELECT p.id, p.shard FROM ("
    });
    for (i, w) in windows.iter().enumerate() {
        if i > 0 {
            qb.push(" UNION ALL ");
        }
        qb.push(if skip_held {
            "(SELECT o.id, o.shard FROM outbox o FORCE INDEX (ix_outbox_pending) \
             LEFT JOIN held h ON h.aggregate_id = o.aggregate_id AND h.id <= o.id \
             WHERE o.published_at IS NULL AND h.id IS NULL AND o.shard = "
        } else {
            "(SELECT o.id, o.shard FROM outbox o FORCE INDEX (ix_outbox_pending) \
             WHERE o.published_at IS NULL AND o.shard = "
        });
        qb.push_bind(w.shard);
        qb.push(" ORDER BY o.id LIMIT ");
        qb.push_bind(w.limit);
        qb.push(")");
    }
    qb.push(") p JOIN outbox_leases l ON l.shard = p.shard AND l.lease_until > NOW(6) AND l.owner = ");
    qb.push_bind(owner);
    qb.push(" ORDER BY p.id");
    let rows = qb.build().fetch_all(db).await.ctx("reading pending outbox ids")?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<u64, _>("id").ctx("decoding outbox.id")?,
                r.try_get::<u16, _>("shard").ctx("decoding outbox.shard")?,
            ))
        })
        .collect()
}

/// Which of `shards` have unpublished rows (held or in flight included):
/// one loose index scan of `ix_outbox_pending`, a dive per shard that has
/// rows, however many are pending. The relay asks this when it does not know
/// where rows wait (its poll interval, a new lease) and has nothing in
/// flight, and reads only those shards: at idle, one cheap statement instead
/// of a read of every shard.
pub async fn pending_shards<'e>(db: impl sqlx::MySqlExecutor<'e>, shards: &[u16]) -> Result<Vec<u16>, StoreError> {
    if shards.is_empty() {
        return Ok(Vec::new());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT DISTINCT published_at, shard FROM outbox FORCE INDEX (ix_outbox_pending) \
         WHERE published_at IS NULL AND shard IN (",
    );
    let mut sep = qb.separated(", ");
    for shard in shards {
        sep.push_bind(*shard);
    }
    qb.push(")");
    let rows = qb.build().fetch_all(db).await.ctx("finding the shards with pending outbox rows")?;
    rows.iter().map(|r| r.try_get::<u16, _>("shard").ctx("decoding outbox.shard")).collect()
}

/// The longest [`hold`] sets a row aside (its `LEAST(…, 300)`).
pub const HOLD_MAX: Duration = Duration::from_secs(300);
/// How long [`defer`] sets a row aside.
pub const DEFER: Duration = Duration::from_secs(1);

/// How much longer the latest hold on an unpublished row lasts (database
/// time), or `None` when no row is held: one range of `ix_outbox_held`.
pub async fn held_for<'e>(db: impl sqlx::MySqlExecutor<'e>) -> Result<Option<Duration>, StoreError> {
    let us: Option<i64> = sqlx::query_scalar(
        "SELECT TIMESTAMPDIFF(MICROSECOND, NOW(6), MAX(held_until)) FROM outbox \
         WHERE held_until > NOW(6) AND published_at IS NULL",
    )
    .fetch_one(db)
    .await
    .ctx("finding how long outbox rows are held")?;
    Ok(us.map(|us| Duration::from_micros(us.max(0).unsigned_abs())))
}

/// Holds rows that cannot be encoded or delivered as they are: not retried
/// before `held_until` (5 s doubling per attempt, at most 5 minutes), and the
/// later rows of their order wait with them. Fixing the cause (a schema
/// registered, a row repaired, a broker limit raised) lets them go at the next try.
pub async fn hold(pool: &sqlx::MySqlPool, owner: &str, ids: &[u64], error: &str) -> Result<(), StoreError> {
    set_aside(
        pool,
        owner,
        ids,
        error,
        "held_until = NOW(6) + INTERVAL LEAST(5 * POW(2, LEAST(attempts, 6)), 300) SECOND, attempts = attempts + 1",
        "holding an outbox row",
    )
    .await
}

/// Sets rows aside for a second without counting an attempt: they wait for
/// something the relay is learning (a topic's partition count), and must
/// leave the pending window meanwhile so that a shard's other rows go on.
pub async fn defer(pool: &sqlx::MySqlPool, owner: &str, ids: &[u64], why: &str) -> Result<(), StoreError> {
    set_aside(pool, owner, ids, why, "held_until = NOW(6) + INTERVAL 1 SECOND", "deferring outbox rows").await
}

/// `UPDATE outbox SET {assignments}, last_error = {error}` for `ids`,
/// **fenced**: only rows of shards whose lease `owner` holds now, read with a
/// shared lock, so that a relay that lost a shard cannot set its rows aside
/// behind the new holder's back — the new holder takes the lease only after
/// this statement, and asks how long holds last ([`held_for`]) after that.
/// Its reads skip held rows only while a hold may last (`outbox::schedule`).
async fn set_aside(
    pool: &sqlx::MySqlPool,
    owner: &str,
    ids: &[u64],
    error: &str,
    assignments: &'static str,
    action: &'static str,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let error: String = error.chars().take(1000).collect();
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("UPDATE outbox SET ");
    qb.push(assignments).push(", last_error = ").push_bind(error).push(" WHERE id IN (");
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    qb.push(") AND shard IN (SELECT shard FROM outbox_leases WHERE owner = ")
        .push_bind(owner)
        .push(" AND lease_until > NOW(6) LOCK IN SHARE MODE)");
    qb.build().execute(pool).await.ctx(action)?;
    Ok(())
}

/// The rows with these ids, in id order.
pub async fn rows(pool: &sqlx::MySqlPool, ids: &[u64]) -> Result<Vec<PendingRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // One primary-key lookup per id, in the ids' order (`rowset`).
    let rows = sqlx::query(
        "SELECT o.id, o.event_id, o.aggregate_id, o.event_type, o.topic, o.payload, o.headers, o.attempts, o.shard, \
         o.tenant_region, o.created_at FROM JSON_TABLE(?, '$[*]' COLUMNS (k BIGINT UNSIGNED PATH '$')) AS j \
         STRAIGHT_JOIN outbox o FORCE INDEX (PRIMARY) ON o.id = j.k ORDER BY o.id",
    )
    .bind(super::rowset::encode(ids)?)
    .fetch_all(pool)
    .await
    .ctx("reading outbox rows")?;
    rows.iter()
        .map(|r| {
            Ok(PendingRow {
                id: r.try_get("id").ctx("decoding outbox.id")?,
                event_id: r.try_get("event_id").ctx("decoding outbox.event_id")?,
                aggregate_id: r.try_get("aggregate_id").ctx("decoding outbox.aggregate_id")?,
                event_type: r.try_get("event_type").ctx("decoding outbox.event_type")?,
                topic: r.try_get("topic").ctx("decoding outbox.topic")?,
                payload: r.try_get("payload").ctx("decoding outbox.payload")?,
                headers: r.try_get("headers").ctx("decoding outbox.headers")?,
                attempts: r.try_get("attempts").ctx("decoding outbox.attempts")?,
                shard: r.try_get("shard").ctx("decoding outbox.shard")?,
                tenant_region: r.try_get("tenant_region").ctx("decoding outbox.tenant_region")?,
                created_at: r.try_get("created_at").ctx("decoding outbox.created_at")?,
            })
        })
        .collect()
}

/// Marks rows as published.
pub async fn mark_published(pool: &sqlx::MySqlPool, ids: &[u64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE JSON_TABLE(?, '$[*]' COLUMNS (k BIGINT UNSIGNED PATH '$')) AS j \
         STRAIGHT_JOIN outbox o FORCE INDEX (PRIMARY) ON o.id = j.k SET o.published_at = NOW(6)",
    )
    .bind(super::rowset::encode(ids)?)
    .execute(pool)
    .await
    .ctx("marking outbox rows published")?;
    Ok(())
}

/// Records a failed attempt on rows (they stay pending).
pub async fn mark_failed(pool: &sqlx::MySqlPool, ids: &[u64], error: &str) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let error: String = error.chars().take(1000).collect();
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("UPDATE outbox SET attempts = attempts + 1, last_error = ");
    qb.push_bind(error).push(" WHERE id IN (");
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    qb.push(")");
    qb.build().execute(pool).await.ctx("recording outbox failure")?;
    Ok(())
}

/// Deletes published rows older than `older_than`, in small batches so that
/// no long transaction holds locks. Returns how many rows were deleted.
pub async fn purge_published(pool: &sqlx::MySqlPool, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ? ORDER BY id LIMIT 1000",
        )
        .bind(older_than)
        .execute(pool)
        .await
        .ctx("purging published outbox rows")?
        .rows_affected();
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}

/// Unpublished rows: count and age of the oldest, for metrics and readiness.
pub async fn backlog(pool: &sqlx::MySqlPool) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .ctx("measuring the outbox backlog")?;
    Ok((row.try_get("n").ctx("decoding count")?, row.try_get("oldest").ctx("decoding oldest")?))
}

/// Outbox rows written by this transaction after `after_id` for an order
/// (what an action did, for its report and its dry run).
pub async fn outbox_since(
    tx: &mut Tx,
    order_id: OrderId,
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
