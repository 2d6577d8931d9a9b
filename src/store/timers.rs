//! Durable timers (`saga_timers`). Armed and disarmed inside transitions; fired
//! by the sweeper through the same transition function. Due-ness is always
//! judged with database time (`NOW(6)`), so replicas with skewed clocks agree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{MySql, QueryBuilder, Row};

use super::script::Script;
use super::{Ctx, StoreError, Tx};
use crate::domain::{OrderId, SagaVersion};

/// The armed timers of `orders` that are due in database time, locked: what a
/// batch's firings may take (one statement for the whole batch).
pub(crate) async fn lock_due(
    tx: &mut Tx,
    orders: &std::collections::BTreeSet<OrderId>,
) -> Result<std::collections::HashSet<(OrderId, String)>, StoreError> {
    if orders.is_empty() {
        return Ok(Default::default());
    }
    // The primary key's prefix per order, in ascending order (`rowset`).
    let rows = sqlx::query(
        "SELECT t.order_id, t.timer_name FROM JSON_TABLE(?, '$[*]' COLUMNS (k BIGINT UNSIGNED PATH '$')) AS j \
         STRAIGHT_JOIN saga_timers t FORCE INDEX (PRIMARY) ON t.order_id = j.k AND t.due_at <= NOW(6) FOR UPDATE",
    )
    .bind(super::rowset::encode(orders)?)
    .fetch_all(&mut **tx)
    .await
    .ctx("locking due timers")?;
    rows.iter()
        .map(|r| {
            let order_id: OrderId = r.try_get("order_id").ctx("decoding order_id")?;
            Ok((order_id, r.try_get("timer_name").ctx("decoding timer_name")?))
        })
        .collect()
}

/// A timer that is due, with what the sweeper needs to judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub order_id: OrderId,
    pub name: String,
    pub armed_version: SagaVersion,
    pub due_at: DateTime<Utc>,
    /// The saga's state and definition version (which events could still move it).
    pub state: String,
    pub definition_version: u32,
}

/// Due timers of sagas that are not quarantined and run on one of `versions`
/// (a replica never touches a saga of a definition it has not loaded: during a
/// rolling deploy the newer replicas fire those), oldest first, from `after`
/// on (exclusive; `(due_at, order_id, name)`) so that timers held back do not
/// hide the ones behind them. A plain read: the firing transaction locks the
/// saga (SKIP LOCKED) and re-checks.
pub async fn due(
    pool: &sqlx::MySqlPool,
    versions: &[u32],
    after: Option<&DueTimer>,
    limit: u32,
) -> Result<Vec<DueTimer>, StoreError> {
    if versions.is_empty() {
        return Ok(Vec::new());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT t.order_id, t.timer_name, t.armed_version, t.due_at, s.state, s.definition_version \
         FROM saga_timers t JOIN saga_instances s ON s.order_id = t.order_id \
         WHERE t.due_at <= NOW(6) AND s.quarantined_at IS NULL AND s.definition_version IN (",
    );
    let mut sep = qb.separated(", ");
    for v in versions {
        sep.push_bind(*v);
    }
    qb.push(")");
    if let Some(a) = after {
        qb.push(" AND (t.due_at, t.order_id, t.timer_name) > (")
            .push_bind(a.due_at)
            .push(", ")
            .push_bind(a.order_id)
            .push(", ")
            .push_bind(a.name.as_str())
            .push(")");
    }
    qb.push(" ORDER BY t.due_at, t.order_id, t.timer_name LIMIT ").push_bind(limit);
    let rows = qb.build().fetch_all(pool).await.ctx("finding due timers")?;
    rows.iter()
        .map(|r| {
            let order_id: OrderId = r.try_get("order_id").ctx("decoding order_id")?;
            Ok(DueTimer {
                order_id,
                name: r.try_get("timer_name").ctx("decoding timer_name")?,
                armed_version: r.try_get("armed_version").ctx("decoding armed_version")?,
                due_at: r.try_get("due_at").ctx("decoding due_at")?,
                state: r.try_get("state").ctx("decoding state")?,
                definition_version: r.try_get("definition_version").ctx("decoding definition_version")?,
            })
        })
        .collect()
}

/// A pending timer as ops shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TimerView {
    pub name: String,
    pub due_at: DateTime<Utc>,
    pub armed_at: DateTime<Utc>,
    #[schema(value_type = u32)]
    pub armed_version: SagaVersion,
}

/// Pending timers of an order (from the pool, or inside a transaction).
pub async fn for_order<'e, E: sqlx::MySqlExecutor<'e>>(
    exec: E,
    order_id: OrderId,
) -> Result<Vec<TimerView>, StoreError> {
    let rows = sqlx::query(
        "SELECT timer_name, due_at, armed_at, armed_version FROM saga_timers WHERE order_id = ? ORDER BY due_at",
    )
    .bind(order_id)
    .fetch_all(exec)
    .await
    .ctx("reading timers")?;
    rows.iter().map(timer_view).collect()
}

fn timer_view(r: &sqlx::mysql::MySqlRow) -> Result<TimerView, StoreError> {
    Ok(TimerView {
        name: r.try_get("timer_name").ctx("decoding timer_name")?,
        due_at: r.try_get("due_at").ctx("decoding due_at")?,
        armed_at: r.try_get("armed_at").ctx("decoding armed_at")?,
        armed_version: r.try_get("armed_version").ctx("decoding armed_version")?,
    })
}

/// A status change to record in `order_status_history`.
/// The final state of a timer after a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TimerOp {
    Arm { due_at: DateTime<Utc>, armed_version: SagaVersion },
    Cancel,
}

/// Which clock `now` (and so each armed `due_at`) was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// The database's (`NOW(6)` read in this transaction): stored as is.
    Database,
    /// This host's (order creation, which reads no clock from the server):
    /// each timer is stored as `NOW(6)` plus its delay, so that the host's
    /// clock plays no part in when it fires.
    Host,
}

/// Arms (upsert) and disarms (delete) timers: one statement each.
pub(crate) fn flush_timers(
    s: &mut Script,
    ops: &BTreeMap<(OrderId, String), TimerOp>,
    now: DateTime<Utc>,
    clock: Clock,
) -> Result<(), StoreError> {
    let arms: Vec<(&(OrderId, String), DateTime<Utc>, SagaVersion)> = ops
        .iter()
        .filter_map(|(k, op)| match op {
            TimerOp::Arm { due_at, armed_version } => Some((k, *due_at, *armed_version)),
            TimerOp::Cancel => None,
        })
        .collect();
    let cancels: Vec<&(OrderId, String)> =
        ops.iter().filter(|(_, op)| matches!(op, TimerOp::Cancel)).map(|(k, _)| k).collect();
    if !arms.is_empty() {
        s.statement("arming timers")
            .sql("INSERT INTO saga_timers (order_id, timer_name, due_at, armed_version, armed_at) ")
            .values(&arms, |b, ((order_id, name), due_at, v)| {
                b.lit(*order_id).lit(name);
                match clock {
                    Clock::Database => {
                        b.lit(*due_at).lit(*v).lit(now);
                    }
                    Clock::Host => {
                        let delay = (*due_at - now).num_microseconds().unwrap_or(i64::MAX).max(0);
                        b.now_plus_micros(delay).lit(*v).sql("NOW(6)");
                    }
                }
            })
            .sql(
                " ON DUPLICATE KEY UPDATE due_at = VALUES(due_at), armed_version = VALUES(armed_version), armed_at = VALUES(armed_at)",
            );
    }
    if !cancels.is_empty() {
        // One primary-key lookup per timer, in key order (`rowset`).
        let keys = super::rowset::encode(cancels.iter().map(|(order_id, name)| (order_id, name)))?;
        s.statement("disarming timers").sql("DELETE t FROM JSON_TABLE(").lit(keys).sql(
            ", '$[*]' COLUMNS (k BIGINT UNSIGNED PATH '$[0]', \
                 timer_name LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$[1]')) AS j \
                 STRAIGHT_JOIN saga_timers t FORCE INDEX (PRIMARY) ON t.order_id = j.k AND t.timer_name = j.timer_name",
        );
    }
    Ok(())
}

/// The armed timers of one saga with their row locks (an operator acts on them).
pub async fn lock_for_order(tx: &mut Tx, order_id: OrderId) -> Result<Vec<TimerView>, StoreError> {
    let rows = sqlx::query(
        "SELECT timer_name, due_at, armed_at, armed_version FROM saga_timers WHERE order_id = ? \
         ORDER BY due_at FOR UPDATE",
    )
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await
    .ctx("locking timers")?;
    rows.iter().map(timer_view).collect()
}

/// Moves a timer's due time.
pub(crate) async fn set_timer_due(
    tx: &mut Tx,
    order_id: OrderId,
    name: &str,
    due_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE saga_timers SET due_at = ? WHERE order_id = ? AND timer_name = ?")
        .bind(due_at)
        .bind(order_id)
        .bind(name)
        .execute(&mut **tx)
        .await
        .ctx("rescheduling a timer")?;
    Ok(())
}

pub(crate) async fn delete_timer(tx: &mut Tx, order_id: OrderId, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM saga_timers WHERE order_id = ? AND timer_name = ?")
        .bind(order_id)
        .bind(name)
        .execute(&mut **tx)
        .await
        .ctx("cancelling a timer")?;
    Ok(())
}
