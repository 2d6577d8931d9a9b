//! Read models for operators: saga lists, one saga in full, the drain report,
//! and the audit trail.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{MySql, QueryBuilder, Row};

use super::{Ctx, Db, StoreError};
use crate::saga::Catalog;

/// Filters of the saga list.
#[derive(Debug, Clone, Default)]
pub struct SagaFilter {
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
    /// Only sagas with a timer more than [`OVERDUE_GRACE`] past due.
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
    pub order_id: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SagaSummary {
    pub order_id: i64,
    pub state: String,
    pub state_entered_at: DateTime<Utc>,
    pub age_in_state_seconds: i64,
    pub tenant_region: String,
    pub definition_version: u32,
    pub version: u32,
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
    if let Some(s) = &f.state {
        qb.push(" AND state = ").push_bind(s.clone());
    }
    if !f.include_terminal && f.state.is_none() {
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
    let order_id: u64 = r.try_get("order_id").ctx("decoding order_id")?;
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
        order_id: order_id as i64,
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
) -> Result<Vec<(i64, u32)>, StoreError> {
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("SELECT order_id, version FROM saga_instances WHERE 1 = 1");
    push_filter(&mut qb, f, catalog);
    qb.push(" ORDER BY state_entered_at, order_id LIMIT ").push_bind(max);
    let rows = qb.build().fetch_all(&db.pool).await.ctx("selecting sagas")?;
    rows.iter()
        .map(|r| {
            let id: u64 = r.try_get("order_id").ctx("decoding order_id")?;
            Ok((id as i64, r.try_get("version").ctx("decoding version")?))
        })
        .collect()
}

pub async fn count(db: &Db, catalog: &Catalog, f: &SagaFilter) -> Result<i64, StoreError> {
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("SELECT COUNT(*) AS n FROM saga_instances WHERE 1 = 1");
    push_filter(&mut qb, f, catalog);
    let row = qb.build().fetch_one(&db.pool).await.ctx("counting sagas")?;
    row.try_get("n").ctx("decoding count")
}

pub async fn summary_of(db: &Db, catalog: &Catalog, order_id: i64) -> Result<Option<SagaSummary>, StoreError> {
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM saga_instances WHERE order_id = ?");
    let row =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order_id).fetch_optional(&db.pool).await.ctx("reading the saga")?;
    let now = db_now(db).await?;
    row.map(|r| summary(&r, catalog, now)).transpose()
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TransitionView {
    pub saga_version: u32,
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

pub async fn transitions(db: &Db, order_id: i64) -> Result<Vec<TransitionView>, StoreError> {
    sqlx::query_as(
        "SELECT saga_version, event_id, event_name, from_state, to_state, actor, reason, occurred_at FROM saga_transitions \
         WHERE order_id = ? ORDER BY id",
    )
    .bind(order_id)
    .fetch_all(&db.pool)
    .await
    .ctx("reading transitions")
}

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
pub async fn unpublished(db: &Db, order_id: i64) -> Result<Vec<OutboxView>, StoreError> {
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

pub async fn dead_letters(db: &Db, order_id: i64) -> Result<Vec<DeadLetterView>, StoreError> {
    let rows = sqlx::query(
        "SELECT event_id, topic, headers, created_at, published_at FROM outbox \
         WHERE aggregate_id = ? AND event_type = ? ORDER BY id LIMIT 100",
    )
    .bind(order_id.to_string())
    .bind(super::outbox::EVENT_TYPE_DEAD_LETTER)
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

pub async fn inbox(db: &Db, order_id: i64) -> Result<Vec<InboxView>, StoreError> {
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
pub async fn parked(db: &Db, order_id: i64, unresolved_only: bool) -> Result<Vec<ParkedView>, StoreError> {
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

/// In-flight sagas per definition version and state.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    /// The version new sagas start on.
    pub latest_version: u32,
    pub versions: Vec<VersionDrain>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionDrain {
    pub definition_version: u32,
    /// Whether this daemon has the definition loaded.
    pub loaded: bool,
    pub in_flight: i64,
    pub quarantined: i64,
    pub states: BTreeMap<String, i64>,
    /// No saga is left on it: the definition file can be removed.
    pub drained: bool,
}

pub async fn drain(db: &Db, catalog: &Catalog) -> Result<DrainReport, StoreError> {
    let rows = sqlx::query(
        "SELECT definition_version, state, COUNT(*) AS n, SUM(quarantined_at IS NOT NULL) AS q FROM saga_instances \
         WHERE terminal = 0 GROUP BY definition_version, state ORDER BY definition_version, state",
    )
    .fetch_all(&db.pool)
    .await
    .ctx("building the drain report")?;
    let mut by_version: BTreeMap<u32, VersionDrain> = catalog
        .versions()
        .map(|d| {
            (
                d.version,
                VersionDrain {
                    definition_version: d.version,
                    loaded: true,
                    in_flight: 0,
                    quarantined: 0,
                    states: BTreeMap::new(),
                    drained: true,
                },
            )
        })
        .collect();
    for r in &rows {
        let v: u32 = r.try_get("definition_version").ctx("decoding")?;
        let state: String = r.try_get("state").ctx("decoding")?;
        let n: i64 = r.try_get("n").ctx("decoding")?;
        let q: rust_decimal::Decimal = r.try_get("q").ctx("decoding")?;
        let e = by_version.entry(v).or_insert_with(|| VersionDrain {
            definition_version: v,
            loaded: false,
            in_flight: 0,
            quarantined: 0,
            states: BTreeMap::new(),
            drained: true,
        });
        e.in_flight += n;
        e.quarantined += i64::try_from(q.mantissa()).unwrap_or(0);
        e.states.insert(state, n);
        e.drained = false;
    }
    Ok(DrainReport { latest_version: catalog.latest().version, versions: by_version.into_values().collect() })
}

/// Database-derived gauges.
#[derive(Debug, Clone, Default)]
pub struct GaugeSnapshot {
    /// (state, count) of every saga, terminal included.
    pub per_state: Vec<(String, i64)>,
    /// (state, oldest age in seconds) of non-terminal states.
    pub oldest_age: Vec<(String, i64)>,
    /// (state, stuck count).
    pub stuck: Vec<(String, i64)>,
    pub quarantined: i64,
    pub timers_overdue: i64,
}

pub async fn gauges(db: &Db, catalog: &Catalog) -> Result<GaugeSnapshot, StoreError> {
    let mut g = GaugeSnapshot::default();
    let rows = sqlx::query(
        "SELECT state, COUNT(*) AS n, \
           CAST(COALESCE(TIMESTAMPDIFF(SECOND, MIN(CASE WHEN terminal = 0 THEN state_entered_at END), NOW(6)), 0) AS SIGNED) AS oldest \
         FROM saga_instances GROUP BY state",
    )
    .fetch_all(&db.pool)
    .await
    .ctx("counting sagas per state")?;
    for r in &rows {
        let state: String = r.try_get("state").ctx("decoding")?;
        g.per_state.push((state.clone(), r.try_get("n").ctx("decoding")?));
        g.oldest_age.push((state, r.try_get("oldest").ctx("decoding")?));
    }
    let mut states: Vec<String> = catalog.versions().flat_map(|d| d.states.keys().cloned()).collect();
    states.sort();
    states.dedup();
    for state in states {
        let f = SagaFilter { state: Some(state.clone()), stuck: true, ..Default::default() };
        g.stuck.push((state, count(db, catalog, &f).await?));
    }
    g.quarantined = sqlx::query_scalar("SELECT COUNT(*) FROM saga_instances WHERE quarantined_at IS NOT NULL")
        .fetch_one(&db.pool)
        .await
        .ctx("counting quarantined sagas")?;
    g.timers_overdue = sqlx::query_scalar("SELECT COUNT(*) FROM saga_timers WHERE due_at < NOW(6) - INTERVAL ? SECOND")
        .bind(OVERDUE_GRACE_SECONDS)
        .fetch_one(&db.pool)
        .await
        .ctx("counting overdue timers")?;
    Ok(g)
}

/// What the console's overview shows: the gauges, per state with the
/// state's `max_dwell`, plus the outbox backlog and recent dead letters.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub states: Vec<StateOverview>,
    pub quarantined: i64,
    pub timers_overdue: i64,
    pub outbox_backlog: i64,
    pub outbox_oldest_age_seconds: Option<i64>,
    pub dead_lettered_last_hour: i64,
    /// Dead-lettered events that name no saga (undecodable, unknown order).
    pub dead_lettered_last_hour_without_saga: i64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StateOverview {
    pub state: String,
    pub terminal: bool,
    pub count: i64,
    pub stuck: i64,
    pub oldest_age_seconds: Option<i64>,
    pub max_dwell_seconds: Option<u64>,
}

pub async fn overview(db: &Db, catalog: &Catalog) -> Result<Overview, StoreError> {
    let g = gauges(db, catalog).await?;
    let (outbox_backlog, oldest) = super::outbox::backlog(&db.pool).await?;
    let now = db_now(db).await?;
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(order_id IS NULL OR order_id NOT IN \
           (SELECT order_id FROM saga_instances)), 0) AS SIGNED) AS orphans \
         FROM saga_inbox WHERE outcome = 'dead_lettered' AND received_at >= NOW(6) - INTERVAL 1 HOUR",
    )
    .fetch_one(&db.pool)
    .await
    .ctx("counting recent dead letters")?;
    // Every state of every loaded definition, in the latest definition's order first.
    let mut names: Vec<(String, bool, Option<u64>)> = Vec::new();
    for d in std::iter::once(catalog.latest()).chain(catalog.versions()) {
        for s in d.states.values() {
            if !names.iter().any(|(n, ..)| *n == s.name) {
                names.push((s.name.clone(), s.terminal, s.max_dwell.filter(|_| !s.terminal).map(|m| m.as_secs())));
            }
        }
    }
    let lookup = |v: &[(String, i64)], s: &str| v.iter().find(|(k, _)| k == s).map(|(_, n)| *n);
    let states = names
        .into_iter()
        .map(|(state, terminal, max_dwell_seconds)| {
            let count = lookup(&g.per_state, &state).unwrap_or(0);
            StateOverview {
                count,
                stuck: lookup(&g.stuck, &state).unwrap_or(0),
                oldest_age_seconds: lookup(&g.oldest_age, &state).filter(|_| !terminal && count > 0),
                terminal,
                max_dwell_seconds,
                state,
            }
        })
        .collect();
    Ok(Overview {
        states,
        quarantined: g.quarantined,
        timers_overdue: g.timers_overdue,
        outbox_backlog,
        outbox_oldest_age_seconds: oldest.map(|t| (now - t).num_seconds().max(0)),
        dead_lettered_last_hour: row.try_get("n").ctx("decoding count")?,
        dead_lettered_last_hour_without_saga: row.try_get("orphans").ctx("decoding count")?,
        at: now,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    pub id: u64,
    pub order_id: Option<u64>,
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

pub async fn audit(db: &Db, order_id: Option<i64>, limit: u32) -> Result<Vec<AuditView>, StoreError> {
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT id, order_id, action, params, actor, reason, version_before, version_after, result, detail, job_id, created_at \
         FROM ops_audit WHERE 1 = 1",
    );
    if let Some(o) = order_id {
        qb.push(" AND order_id = ").push_bind(o);
    }
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
