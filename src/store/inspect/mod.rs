//! Read models for operators: saga lists, one saga in full, the drain report,
//! and the audit trail.

mod attention;
mod detail;
mod overview;

pub use self::attention::*;
pub use self::detail::*;
pub use self::overview::*;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{MySql, QueryBuilder, Row};

use super::{Ctx, Db, StoreError};
use crate::domain::{OrderId, SagaVersion};
use crate::saga::Catalog;

/// Filters of the saga list.
#[derive(Debug, Clone, Default)]
pub struct SagaFilter {
    /// Only this order.
    pub order_id: Option<OrderId>,
    /// Only orders of this customer.
    pub customer_id: Option<String>,
    pub state: Option<String>,
    /// At least this long in the current state.
    pub older_than: Option<Duration>,
    pub tenant_region: Option<String>,
    pub definition_version: Option<u32>,
    pub quarantined: Option<bool>,
    /// Only sagas that overstay their state's `max_dwell`.
    pub stuck: bool,
    /// Include sagas in terminal states (excluded by default).
    pub include_terminal: bool,
    /// Only sagas with a timer more than [`OVERDUE_GRACE_SECONDS`] past due.
    pub timers_overdue: bool,
    /// Only sagas with outbox rows not yet published.
    pub unpublished: bool,
    /// Only sagas one of whose events was dead-lettered within this long.
    pub dead_lettered_within: Option<Duration>,
}

/// A timer this long past due counts as overdue (the sweeper runs every few
/// seconds; later than this means it is not keeping up or not running).
pub const OVERDUE_GRACE_SECONDS: u32 = 30;

/// A page position: oldest first by time in state, then order id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaKeyset {
    pub state_entered_at: DateTime<Utc>,
    pub order_id: OrderId,
}

#[derive(Debug, Clone, Serialize)]
pub struct SagaSummary {
    pub order_id: OrderId,
    pub state: String,
    pub state_entered_at: DateTime<Utc>,
    pub age_in_state_seconds: i64,
    pub tenant_region: String,
    pub definition_version: u32,
    pub version: SagaVersion,
    pub terminal: bool,
    pub quarantined: Option<String>,
    /// The state's expected maximum dwell, from the definition.
    pub max_dwell_seconds: Option<u64>,
    /// The saga overstays its state's expectation.
    pub stuck: bool,
}

/// `(definition_version, state) → max_dwell` for every non-terminal state that has one.
fn dwell_limits(catalog: &Catalog) -> Vec<(u32, String, Duration)> {
    catalog
        .versions()
        .flat_map(|d| {
            d.states
                .values()
                .filter(|s| !s.terminal)
                .filter_map(|s| s.max_dwell.map(|m| (d.version, s.name.clone(), m)))
        })
        .collect()
}

fn push_filter(qb: &mut QueryBuilder<MySql>, f: &SagaFilter, catalog: &Catalog) {
    if let Some(id) = f.order_id {
        qb.push(" AND order_id = ").push_bind(id);
    }
    if let Some(c) = &f.customer_id {
        qb.push(" AND order_id IN (SELECT order_id FROM orders WHERE customer_id = ").push_bind(c.clone()).push(")");
    }
    if let Some(s) = &f.state {
        qb.push(" AND state = ").push_bind(s.clone());
    }
    // Looking up one order or one customer's finds finished sagas too.
    if !f.include_terminal && f.state.is_none() && f.order_id.is_none() && f.customer_id.is_none() {
        qb.push(" AND terminal = 0");
    }
    if let Some(d) = f.older_than {
        qb.push(" AND state_entered_at <= NOW(6) - INTERVAL ").push_bind(d.as_micros() as i64).push(" MICROSECOND");
    }
    if let Some(r) = &f.tenant_region {
        qb.push(" AND tenant_region = ").push_bind(r.clone());
    }
    if let Some(v) = f.definition_version {
        qb.push(" AND definition_version = ").push_bind(v);
    }
    match f.quarantined {
        Some(true) => {
            qb.push(" AND quarantined_at IS NOT NULL");
        }
        Some(false) => {
            qb.push(" AND quarantined_at IS NULL");
        }
        None => {}
    }
    if f.timers_overdue {
        qb.push(" AND order_id IN (SELECT order_id FROM saga_timers WHERE due_at < NOW(6) - INTERVAL ")
            .push_bind(OVERDUE_GRACE_SECONDS)
            .push(" SECOND)");
    }
    if f.unpublished {
        qb.push(
            " AND EXISTS (SELECT 1 FROM outbox o WHERE o.aggregate_id = CAST(saga_instances.order_id AS CHAR) \
             AND o.published_at IS NULL)",
        );
    }
    if let Some(d) = f.dead_lettered_within {
        qb.push(
            " AND order_id IN (SELECT order_id FROM saga_inbox WHERE outcome = 'dead_lettered' \
             AND received_at >= NOW(6) - INTERVAL ",
        )
        .push_bind(d.as_micros() as i64)
        .push(" MICROSECOND)");
    }
    if f.stuck {
        let limits = dwell_limits(catalog);
        if limits.is_empty() {
            qb.push(" AND 1 = 0");
        } else {
            qb.push(" AND (");
            for (i, (version, state, dwell)) in limits.into_iter().enumerate() {
                if i > 0 {
                    qb.push(" OR ");
                }
                qb.push("(definition_version = ")
                    .push_bind(version)
                    .push(" AND state = ")
                    .push_bind(state)
                    .push(" AND state_entered_at < NOW(6) - INTERVAL ")
                    .push_bind(dwell.as_micros() as i64)
                    .push(" MICROSECOND)");
            }
            qb.push(")");
        }
    }
}

fn summary(r: &sqlx::mysql::MySqlRow, catalog: &Catalog, now: DateTime<Utc>) -> Result<SagaSummary, StoreError> {
    let order_id: OrderId = r.try_get("order_id").ctx("decoding order_id")?;
    let state: String = r.try_get("state").ctx("decoding state")?;
    let version: u32 = r.try_get("definition_version").ctx("decoding definition_version")?;
    let entered: DateTime<Utc> = r.try_get("state_entered_at").ctx("decoding state_entered_at")?;
    let quarantined_at: Option<DateTime<Utc>> = r.try_get("quarantined_at").ctx("decoding quarantined_at")?;
    let reason: Option<String> = r.try_get("quarantine_reason").ctx("decoding quarantine_reason")?;
    let terminal: bool = r.try_get("terminal").ctx("decoding terminal")?;
    let max_dwell =
        catalog.get(version).and_then(|d| d.state(&state)).filter(|s| !s.terminal).and_then(|s| s.max_dwell);
    let age = (now - entered).num_seconds().max(0);
    Ok(SagaSummary {
        order_id,
        stuck: max_dwell.is_some_and(|m| (now - entered).to_std().unwrap_or_default() > m),
        max_dwell_seconds: max_dwell.map(|m| m.as_secs()),
        state,
        state_entered_at: entered,
        age_in_state_seconds: age,
        tenant_region: r.try_get("tenant_region").ctx("decoding tenant_region")?,
        definition_version: version,
        version: r.try_get("version").ctx("decoding version")?,
        terminal,
        quarantined: quarantined_at.map(|_| reason.unwrap_or_default()),
    })
}

const SUMMARY_COLUMNS: &str = "order_id, state, state_entered_at, tenant_region, definition_version, version, terminal, quarantined_at, quarantine_reason";

async fn db_now(db: &Db) -> Result<DateTime<Utc>, StoreError> {
    let row = sqlx::query("SELECT NOW(6) AS now").fetch_one(&db.pool).await.ctx("reading database time")?;
    let t: chrono::NaiveDateTime = row.try_get("now").ctx("decoding NOW()")?;
    Ok(t.and_utc())
}

/// One page of sagas, oldest in their state first.
pub async fn list(
    db: &Db,
    catalog: &Catalog,
    f: &SagaFilter,
    after: Option<SagaKeyset>,
    limit: u32,
) -> Result<(Vec<SagaSummary>, Option<SagaKeyset>), StoreError> {
    let mut qb: QueryBuilder<MySql> =
        QueryBuilder::new(format!("SELECT {SUMMARY_COLUMNS} FROM saga_instances WHERE 1 = 1"));
    push_filter(&mut qb, f, catalog);
    if let Some(k) = after {
        qb.push(" AND (state_entered_at > ")
            .push_bind(k.state_entered_at)
            .push(" OR (state_entered_at = ")
            .push_bind(k.state_entered_at)
            .push(" AND order_id > ")
            .push_bind(k.order_id)
            .push("))");
    }
    qb.push(" ORDER BY state_entered_at, order_id LIMIT ").push_bind(limit + 1);
    let rows = qb.build().fetch_all(&db.pool).await.ctx("listing sagas")?;
    let now = db_now(db).await?;
    let mut out = rows.iter().map(|r| summary(r, catalog, now)).collect::<Result<Vec<_>, _>>()?;
    let next = if out.len() > limit as usize {
        out.truncate(limit as usize);
        out.last().map(|s| SagaKeyset { state_entered_at: s.state_entered_at, order_id: s.order_id })
    } else {
        None
    };
    Ok((out, next))
}

/// `(order_id, version)` of every saga matching `f` (up to `max`), for bulk actions.
pub async fn select_for_bulk(
    db: &Db,
    catalog: &Catalog,
    f: &SagaFilter,
    max: u32,
) -> Result<Vec<(OrderId, SagaVersion)>, StoreError> {
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("SELECT order_id, version FROM saga_instances WHERE 1 = 1");
    push_filter(&mut qb, f, catalog);
    qb.push(" ORDER BY state_entered_at, order_id LIMIT ").push_bind(max);
    let rows = qb.build().fetch_all(&db.pool).await.ctx("selecting sagas")?;
    rows.iter()
        .map(|r| Ok((r.try_get("order_id").ctx("decoding order_id")?, r.try_get("version").ctx("decoding version")?)))
        .collect()
}

pub async fn count(db: &Db, catalog: &Catalog, f: &SagaFilter) -> Result<i64, StoreError> {
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("SELECT COUNT(*) AS n FROM saga_instances WHERE 1 = 1");
    push_filter(&mut qb, f, catalog);
    let row = qb.build().fetch_one(&db.pool).await.ctx("counting sagas")?;
    row.try_get("n").ctx("decoding count")
}

pub async fn summary_of(db: &Db, catalog: &Catalog, order_id: OrderId) -> Result<Option<SagaSummary>, StoreError> {
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM saga_instances WHERE order_id = ?");
    let row =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order_id).fetch_optional(&db.pool).await.ctx("reading the saga")?;
    let now = db_now(db).await?;
    row.map(|r| summary(&r, catalog, now)).transpose()
}
