//! Orders, their items and their status history.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{MySql, QueryBuilder, Row};

use super::outbox::{self, OutboxWriter};
use super::script::Script;
use super::{Ctx, Db, OrderIds, StoreError, Tx, idempotency};
use crate::contracts::{Message, OrderCreated, OrderLine, OrderStatusChanged, TimestampMicros, event_id};
use crate::domain::{Currency, Money, NewOrder, OrderId, OrderStatus};
use crate::telemetry::trace_context::TraceContext;

/// An order as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    #[schema(value_type = u64)]
    pub order_id: OrderId,
    pub customer_id: String,
    pub tenant_region: String,
    pub currency: String,
    pub status: OrderStatus,
    /// Decimal string in the currency's minor units, e.g. "59.97".
    pub total_amount: String,
    pub item_count: u32,
    /// Increments on every change; send it back as `expected_version`.
    pub version: u32,
    pub created_at: DateTime<Utc>,
    /// When the order last changed. Readers in other regions use it to judge staleness.
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ItemView>>,
}

/// One line of an order; money as decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = OrderItem)]
pub struct ItemView {
    pub line_no: u16,
    pub sku: String,
    pub qty: u32,
    pub unit_price: String,
    pub line_total: String,
}

/// An amount as the API and the events write it: exactly the currency's
/// minor units ("5" EUR → "5.00").
fn money(amount: Decimal, currency: Currency) -> String {
    Money::new(amount, currency).to_string()
}

/// A currency code read from the database (written from a validated order).
fn stored_currency(code: &str) -> Result<Currency, StoreError> {
    Currency::parse(code).ok_or_else(|| StoreError::Corrupt(format!("orders.currency {code:?} is not a currency")))
}

/// Inserts new orders' rows: the `orders` rows (one statement for all of them
/// when the server hands out consecutive ids, else one per order — see
/// [`OrderIds`]), at once, for their ids; then adds one statement per table
/// for all of them to `script` (items, the first history row, by
/// `actors[i]`). Returns the new ids, in order.
pub(crate) async fn insert_rows(
    tx: &mut Tx,
    script: &mut Script,
    orders: &[&NewOrder],
    now: DateTime<Utc>,
    actors: &[&str],
    order_ids: OrderIds,
) -> Result<Vec<OrderId>, StoreError> {
    let mut ids = Vec::with_capacity(orders.len());
    let per_statement = match order_ids {
        OrderIds::Consecutive => super::limits::ROWS_PER_STATEMENT,
        OrderIds::PerRow => 1,
    };
    for chunk in orders.chunks(per_statement) {
        let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT INTO orders (customer_id, tenant_region, currency, total_amount, item_count, status, created_at, updated_at, version) ",
        );
        qb.push_values(chunk, |mut b, order| {
            b.push_bind(&order.customer_id)
                .push_bind(&order.tenant_region)
                .push_bind(order.currency.code())
                .push_bind(order.total())
                .push_bind(order.items.len() as u32)
                .push_bind("PENDING")
                .push_bind(now)
                .push_bind(now)
                .push_bind(1u32);
        });
        let res = qb.build().execute(&mut **tx).await.ctx("inserting orders")?;
        // The first id of the statement; the others follow it (OrderIds::Consecutive).
        let first = res.last_insert_id();
        if res.rows_affected() != chunk.len() as u64 || first == 0 {
            return Err(StoreError::Corrupt(format!(
                "inserting {} orders affected {} rows, first id {first}",
                chunk.len(),
                res.rows_affected()
            )));
        }
        for i in 0..chunk.len() as u64 {
            ids.push(OrderId::try_from(first + i).map_err(|e| StoreError::Corrupt(format!("a new order's id: {e}")))?);
        }
    }
    let items: Vec<(OrderId, u16, &crate::domain::NewOrderItem)> = orders
        .iter()
        .zip(&ids)
        .flat_map(|(o, id)| o.items.iter().enumerate().map(move |(i, item)| (*id, i as u16 + 1, item)))
        .collect();
    for chunk in items.chunks(super::limits::ROWS_PER_STATEMENT) {
        script
            .statement("inserting order items")
            .sql("INSERT INTO order_items (order_id, line_no, sku, qty, unit_price) ")
            .values(chunk, |b, (id, line, item)| {
                b.lit(*id).lit(*line).lit(&item.sku).lit(item.qty).lit(item.unit_price);
            });
    }
    let history: Vec<HistoryRow> = ids
        .iter()
        .zip(actors)
        .map(|(id, actor)| HistoryRow {
            order_id: *id,
            from: None,
            to: OrderStatus::Pending,
            reason_code: Some("ORDER_CREATED".into()),
            comment: None,
            actor: (*actor).to_owned(),
        })
        .collect();
    insert_history(script, &history, now);
    Ok(ids)
}

pub(crate) fn created_message(order_id: OrderId, order: &NewOrder, now: DateTime<Utc>) -> Message {
    let currency = order.currency;
    Message::from(OrderCreated {
        event_id: event_id(&format!("{order_id}:order.created.v1")),
        order_id: order_id.wire(),
        occurred_at: TimestampMicros::from_datetime(now),
        tenant_region: order.tenant_region.clone(),
        customer_id: order.customer_id.clone(),
        currency: currency.code().to_owned(),
        total_amount: money(order.total(), currency),
        items: order
            .items
            .iter()
            .map(|i| OrderLine { sku: i.sku.clone(), qty: i.qty as i32, unit_price: money(i.unit_price, currency) })
            .collect(),
    })
}

pub(crate) fn new_order_view(order_id: OrderId, order: &NewOrder, now: DateTime<Utc>) -> OrderView {
    let currency = order.currency;
    OrderView {
        order_id,
        customer_id: order.customer_id.clone(),
        tenant_region: order.tenant_region.clone(),
        currency: currency.code().to_owned(),
        status: OrderStatus::Pending,
        total_amount: money(order.total(), currency),
        item_count: order.items.len() as u32,
        version: 1,
        created_at: now,
        updated_at: now,
        items: Some(
            order
                .items
                .iter()
                .enumerate()
                .map(|(i, item)| ItemView {
                    line_no: i as u16 + 1,
                    sku: item.sku.clone(),
                    qty: item.qty,
                    unit_price: money(item.unit_price, currency),
                    line_total: money(item.line_total(), currency),
                })
                .collect(),
        ),
    }
}

/// One row of `order_status_history`.
#[derive(Debug, Clone)]
pub(crate) struct HistoryRow {
    pub order_id: OrderId,
    /// `None` for the creation row.
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
    pub reason_code: Option<String>,
    pub comment: Option<String>,
    pub actor: String,
}

/// Writes status history rows, one statement per 1,000 rows: the only
/// writer of `order_status_history` (creation, status requests, sagas).
pub(crate) fn insert_history(s: &mut Script, rows: &[HistoryRow], now: DateTime<Utc>) {
    // Chunked: bounds one statement's size.
    for rows in rows.chunks(super::limits::ROWS_PER_STATEMENT) {
        s.statement("inserting status history")
            .sql("INSERT INTO order_status_history (order_id, from_status, to_status, reason_code, comment, transitioned_at, actor) ")
            .values(rows, |b, r| {
                b.lit(r.order_id)
                    .lit(r.from.map(OrderStatus::as_str))
                    .lit(r.to.as_str())
                    .lit(&r.reason_code)
                    .lit(&r.comment)
                    .lit(now)
                    .lit(super::truncate(&r.actor, 128));
            });
    }
}

const ORDER_COLUMNS: &str =
    "order_id, customer_id, tenant_region, currency, status, total_amount, item_count, version, created_at, updated_at";

fn order_from_row(r: &sqlx::mysql::MySqlRow) -> Result<OrderView, StoreError> {
    let code: String = r.try_get("currency").ctx("decoding orders.currency")?;
    let currency = stored_currency(&code)?;
    let status: String = r.try_get("status").ctx("decoding orders.status")?;
    let total: Decimal = r.try_get("total_amount").ctx("decoding orders.total_amount")?;
    Ok(OrderView {
        order_id: r.try_get("order_id").ctx("decoding orders.order_id")?,
        customer_id: r.try_get("customer_id").ctx("decoding orders.customer_id")?,
        tenant_region: r.try_get("tenant_region").ctx("decoding orders.tenant_region")?,
        status: status.parse().map_err(|e| StoreError::Corrupt(format!("orders.status: {e}")))?,
        total_amount: money(total, currency),
        item_count: r.try_get("item_count").ctx("decoding orders.item_count")?,
        version: r.try_get("version").ctx("decoding orders.version")?,
        created_at: r.try_get("created_at").ctx("decoding orders.created_at")?,
        updated_at: r.try_get("updated_at").ctx("decoding orders.updated_at")?,
        currency: code,
        items: None,
    })
}

/// The order with its items, or `None`.
pub async fn get(db: &Db, order_id: OrderId) -> Result<Option<OrderView>, StoreError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?");
    let Some(row) =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order_id).fetch_optional(&db.pool).await.ctx("reading the order")?
    else {
        return Ok(None);
    };
    let mut view = order_from_row(&row)?;
    let items =
        sqlx::query("SELECT line_no, sku, qty, unit_price FROM order_items WHERE order_id = ? ORDER BY line_no")
            .bind(order_id)
            .fetch_all(&db.pool)
            .await
            .ctx("reading order items")?;
    let currency = stored_currency(&view.currency)?;
    let mut out = Vec::with_capacity(items.len());
    for r in &items {
        let qty: u32 = r.try_get("qty").ctx("decoding order_items.qty")?;
        let price: Decimal = r.try_get("unit_price").ctx("decoding order_items.unit_price")?;
        out.push(ItemView {
            line_no: r.try_get("line_no").ctx("decoding order_items.line_no")?,
            sku: r.try_get("sku").ctx("decoding order_items.sku")?,
            qty,
            unit_price: money(price, currency),
            line_total: money(price * Decimal::from(qty), currency),
        });
    }
    view.items = Some(out);
    Ok(Some(view))
}

/// Items of an order as (sku, qty, unit_price).
pub async fn items(tx: &mut Tx, order_id: OrderId) -> Result<Vec<(String, u32, Decimal)>, StoreError> {
    let rows = sqlx::query("SELECT sku, qty, unit_price FROM order_items WHERE order_id = ? ORDER BY line_no")
        .bind(order_id)
        .fetch_all(&mut **tx)
        .await
        .ctx("reading order items")?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("sku").ctx("decoding sku")?,
                r.try_get("qty").ctx("decoding qty")?,
                r.try_get("unit_price").ctx("decoding unit_price")?,
            ))
        })
        .collect()
}

/// A status-history row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryView {
    pub from_status: Option<OrderStatus>,
    pub to_status: OrderStatus,
    pub reason_code: Option<String>,
    pub comment: Option<String>,
    pub actor: String,
    pub transitioned_at: DateTime<Utc>,
}

pub async fn history(db: &Db, order_id: OrderId) -> Result<Vec<HistoryView>, StoreError> {
    let rows = sqlx::query(
        "SELECT from_status, to_status, reason_code, comment, actor, transitioned_at FROM order_status_history \
         WHERE order_id = ? ORDER BY history_id",
    )
    .bind(order_id)
    .fetch_all(&db.pool)
    .await
    .ctx("reading status history")?;
    rows.iter()
        .map(|r| {
            let from: Option<String> = r.try_get("from_status").ctx("decoding from_status")?;
            let to: String = r.try_get("to_status").ctx("decoding to_status")?;
            Ok(HistoryView {
                from_status: from.map(|s| s.parse()).transpose().map_err(|e| StoreError::Corrupt(format!("{e}")))?,
                to_status: to.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?,
                reason_code: r.try_get("reason_code").ctx("decoding reason_code")?,
                comment: r.try_get("comment").ctx("decoding comment")?,
                actor: r.try_get("actor").ctx("decoding actor")?,
                transitioned_at: r.try_get("transitioned_at").ctx("decoding transitioned_at")?,
            })
        })
        .collect()
}

/// The lockable header of an order, as transactions need it.
#[derive(Debug, Clone)]
pub struct OrderHead {
    pub order_id: OrderId,
    pub status: OrderStatus,
    pub version: u32,
    pub tenant_region: String,
    /// When the status last changed (for the time-in-status metric).
    pub updated_at: DateTime<Utc>,
}

/// The columns of an order's head, as `SELECT`ed alone (`PLAIN`) or beside a
/// saga row in one joined read (`JOINED`, aliased so that no name collides
/// with the saga's own `order_id`, `version` and `updated_at`).
pub(crate) struct HeadColumns {
    order_id: &'static str,
    status: &'static str,
    version: &'static str,
    tenant_region: &'static str,
    updated_at: &'static str,
}

impl HeadColumns {
    pub(crate) const PLAIN: HeadColumns = HeadColumns {
        order_id: "order_id",
        status: "status",
        version: "version",
        tenant_region: "tenant_region",
        updated_at: "updated_at",
    };
    /// Matches [`JOINED_HEAD_COLUMNS`].
    pub(crate) const JOINED: HeadColumns = HeadColumns {
        order_id: "head_order_id",
        status: "head_status",
        version: "head_version",
        tenant_region: "head_tenant_region",
        updated_at: "head_updated_at",
    };
}

/// The head's columns of `orders o`, aliased as [`HeadColumns::JOINED`] reads them.
pub(crate) const JOINED_HEAD_COLUMNS: &str = "o.order_id AS head_order_id, o.status AS head_status, \
     o.version AS head_version, o.tenant_region AS head_tenant_region, o.updated_at AS head_updated_at";

/// Decodes an order head from a row that holds its columns under `cols`' names.
pub(crate) fn head_from_row(r: &sqlx::mysql::MySqlRow, cols: &HeadColumns) -> Result<OrderHead, StoreError> {
    let status: String = r.try_get(cols.status).ctx("decoding status")?;
    Ok(OrderHead {
        order_id: r.try_get(cols.order_id).ctx("decoding order_id")?,
        status: status.parse::<OrderStatus>().map_err(|e| StoreError::Corrupt(e.to_string()))?,
        version: r.try_get(cols.version).ctx("decoding version")?,
        tenant_region: r.try_get(cols.tenant_region).ctx("decoding tenant_region")?,
        updated_at: r.try_get(cols.updated_at).ctx("decoding updated_at")?,
    })
}

/// Reads the head of an order inside `tx`; `lock` takes the row lock.
pub async fn head(tx: &mut Tx, order_id: OrderId, lock: bool) -> Result<Option<OrderHead>, StoreError> {
    let sql = if lock {
        "SELECT order_id, status, version, tenant_region, updated_at FROM orders WHERE order_id = ? FOR UPDATE"
    } else {
        "SELECT order_id, status, version, tenant_region, updated_at FROM orders WHERE order_id = ?"
    };
    let row = sqlx::query(sql).bind(order_id).fetch_optional(&mut **tx).await.ctx("reading the order head")?;
    row.map(|r| head_from_row(&r, &HeadColumns::PLAIN)).transpose()
}

/// The `order.status.changed.v1` event of a change to `new_version`. Its id is
/// derived from the order and the version: one change, one id.
pub(crate) fn status_changed_message(
    head: &OrderHead,
    to: OrderStatus,
    reason_code: Option<&str>,
    actor: &str,
    new_version: u32,
    now: DateTime<Utc>,
) -> Message {
    Message::from(OrderStatusChanged {
        event_id: event_id(&format!("{}:order.status.changed.v1:{new_version}", head.order_id)),
        order_id: head.order_id.wire(),
        occurred_at: TimestampMicros::from_datetime(now),
        tenant_region: head.tenant_region.clone(),
        from_status: head.status.as_str().to_owned(),
        to_status: to.as_str().to_owned(),
        reason_code: reason_code.map(str::to_owned),
        actor: actor.to_owned(),
        order_version: i64::from(new_version),
    })
}

/// Why a status change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRefusal {
    NotFound,
    /// The transition table does not allow `from → to`.
    Illegal {
        from: OrderStatus,
        to: OrderStatus,
    },
    /// `expected_version` did not match.
    VersionMismatch {
        expected: u64,
        actual: u32,
    },
    /// Another change committed between our read and our write.
    Concurrent,
    /// The saga drives the order now; the request is not something it accepts.
    SagaInProgress {
        saga_state: String,
    },
}

impl std::fmt::Display for ChangeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeRefusal::NotFound => f.write_str("the order does not exist"),
            ChangeRefusal::Illegal { from, to } => {
                write!(f, "an order cannot go from {} to {}", from.as_str(), to.as_str())
            }
            ChangeRefusal::VersionMismatch { expected, actual } => {
                write!(f, "the order is at version {actual}, not {expected}")
            }
            ChangeRefusal::Concurrent => f.write_str("another change to the order committed meanwhile"),
            ChangeRefusal::SagaInProgress { saga_state } => {
                write!(f, "the saga drives the order now (state {saga_state}) and does not accept this")
            }
        }
    }
}

/// Applies a status change to the order row (version-guarded), writes history and the
/// `order.status.changed.v1` outbox row. Does not commit. Returns the new version.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_status(
    tx: &mut Tx,
    head: &OrderHead,
    to: OrderStatus,
    reason_code: Option<&str>,
    comment: Option<&str>,
    actor: &str,
    now: DateTime<Utc>,
    outbox_writer: &OutboxWriter,
    trace: Option<&TraceContext>,
) -> Result<Result<u32, ChangeRefusal>, StoreError> {
    if !head.status.can_transition_to(to) {
        return Ok(Err(ChangeRefusal::Illegal { from: head.status, to }));
    }
    let updated = sqlx::query(
        "UPDATE orders SET status = ?, version = version + 1, updated_at = ? WHERE order_id = ? AND version = ?",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(head.order_id)
    .bind(head.version)
    .execute(&mut **tx)
    .await
    .ctx("updating the order status")?
    .rows_affected();
    if updated != 1 {
        return Ok(Err(ChangeRefusal::Concurrent));
    }
    let new_version = head.version + 1;
    let row = HistoryRow {
        order_id: head.order_id,
        from: Some(head.status),
        to,
        reason_code: reason_code.map(str::to_owned),
        comment: comment.map(str::to_owned),
        actor: actor.to_owned(),
    };
    let msg = status_changed_message(head, to, reason_code, actor, new_version, now);
    let mut script = Script::new();
    insert_history(&mut script, &[row], now);
    outbox::insert(&mut script, &[outbox_writer.row(&msg, trace)?], now);
    script.run(tx).await?;
    Ok(Ok(new_version))
}

/// Filters of `GET /orders/search`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchFilter {
    pub status: Option<OrderStatus>,
    pub tenant_region: Option<String>,
    pub customer_id: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    /// Only these tenant regions (the caller's region claim); `None`: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
}

/// Position after the last row of a page: newest first, ties by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    pub created_at: DateTime<Utc>,
    pub order_id: OrderId,
}

/// One page, newest first. Returns the rows and, if there are more, the
/// keyset of the last row.
pub async fn search(
    db: &Db,
    f: &SearchFilter,
    after: Option<Keyset>,
    limit: u32,
) -> Result<(Vec<OrderView>, Option<Keyset>), StoreError> {
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(format!("SELECT {ORDER_COLUMNS} FROM orders WHERE 1 = 1"));
    if let Some(s) = f.status {
        qb.push(" AND status = ").push_bind(s.as_str());
    }
    if let Some(r) = &f.tenant_region {
        qb.push(" AND tenant_region = ").push_bind(r.clone());
    }
    if let Some(c) = &f.customer_id {
        qb.push(" AND customer_id = ").push_bind(c.clone());
    }
    match f.regions.as_deref() {
        None => {}
        Some([]) => {
            qb.push(" AND 1 = 0");
        }
        Some(regions) => {
            qb.push(" AND tenant_region IN (");
            let mut list = qb.separated(", ");
            for r in regions {
                list.push_bind(r.clone());
            }
            qb.push(")");
        }
    }
    if let Some(t) = f.created_from {
        qb.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = f.created_to {
        qb.push(" AND created_at < ").push_bind(t);
    }
    if let Some(k) = after {
        qb.push(" AND (created_at < ")
            .push_bind(k.created_at)
            .push(" OR (created_at = ")
            .push_bind(k.created_at)
            .push(" AND order_id < ")
            .push_bind(k.order_id)
            .push("))");
    }
    qb.push(" ORDER BY created_at DESC, order_id DESC LIMIT ").push_bind(limit + 1);
    let rows = qb.build().fetch_all(&db.pool).await.ctx("searching orders")?;
    let mut views = rows.iter().map(order_from_row).collect::<Result<Vec<_>, _>>()?;
    let next = if views.len() > limit as usize {
        views.truncate(limit as usize);
        views.last().map(|v| Keyset { created_at: v.created_at, order_id: v.order_id })
    } else {
        None
    };
    Ok((views, next))
}

/// Deletes expired idempotency keys. Returns how many.
pub async fn purge_idempotency_keys(db: &Db, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
    idempotency::purge(&db.pool, older_than).await
}

/// Locks the order rows of `ids`, whose saga rows the caller already holds
/// (the lock order: ARCHITECTURE.md, "Locks are taken in one order").
pub(crate) async fn lock_heads(tx: &mut Tx, ids: &[OrderId]) -> Result<HashMap<OrderId, OrderHead>, StoreError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    // One primary-key lookup per id, locked in ascending order (`rowset`).
    let rows = sqlx::query(
        "SELECT o.order_id, o.status, o.version, o.tenant_region, o.updated_at \
         FROM JSON_TABLE(?, '$[*]' COLUMNS (k BIGINT UNSIGNED PATH '$')) AS j \
         STRAIGHT_JOIN orders o FORCE INDEX (PRIMARY) ON o.order_id = j.k FOR UPDATE",
    )
    .bind(super::rowset::encode(&sorted)?)
    .fetch_all(&mut **tx)
    .await
    .ctx("locking order rows")?;
    for r in rows {
        let head = head_from_row(&r, &HeadColumns::PLAIN)?;
        out.insert(head.order_id, head);
    }
    Ok(out)
}

/// Applies the final status and version of every changed order in one
/// statement (their rows are locked by this transaction: `lock_heads`).
pub(crate) fn update_orders(
    s: &mut Script,
    orders: &BTreeMap<OrderId, (OrderStatus, u32)>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if orders.is_empty() {
        return Ok(());
    }
    // One primary-key lookup per order, in ascending order (`rowset`).
    let rows = super::rowset::encode(orders.iter().map(|(id, (status, version))| (id, status.as_str(), version)))?;
    s.statement("updating order statuses")
        .sql("UPDATE JSON_TABLE(")
        .lit(rows)
        .sql(
            ", '$[*]' COLUMNS (k BIGINT UNSIGNED PATH '$[0]', status LONGTEXT PATH '$[1]', \
             version INT UNSIGNED PATH '$[2]')) AS j STRAIGHT_JOIN orders o FORCE INDEX (PRIMARY) ON o.order_id = j.k \
             SET o.status = j.status, o.version = j.version, o.updated_at = ",
        )
        .lit(now)
        .expect_rows(orders.len() as u64, "an order changed under its lock");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The joined read's aliases and the names its decoder reads are spelled
    /// twice; they must stay the same list, in `PLAIN`'s column order.
    #[test]
    fn the_joined_head_aliases_are_the_names_the_decoder_reads() {
        let aliases: Vec<(&str, &str)> =
            JOINED_HEAD_COLUMNS.split(',').map(|c| c.trim().split_once(" AS ").unwrap_or((c, "<no alias>"))).collect();
        let names = |c: &HeadColumns| [c.order_id, c.status, c.version, c.tenant_region, c.updated_at];
        let plain = names(&HeadColumns::PLAIN);
        let joined = names(&HeadColumns::JOINED);
        assert_eq!(aliases.len(), plain.len());
        for ((column, alias), (p, j)) in aliases.iter().zip(plain.iter().zip(joined.iter())) {
            assert_eq!(*column, format!("o.{p}"));
            assert_eq!(alias, j);
        }
    }
}
