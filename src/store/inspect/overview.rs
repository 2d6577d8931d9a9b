//! The fleet at a glance: in-flight sagas per definition version (drain),
//! the database-derived gauges, and the console's overview.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{OVERDUE_GRACE_SECONDS, SagaFilter, count, db_now};
use crate::domain::OrderId;
use crate::saga::Catalog;
use crate::store::{Ctx, Db, StoreError};

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
    /// The sagas that need a human, most urgent first, each with why.
    pub attention: super::AttentionList,
    pub states: Vec<StateOverview>,
    pub quarantined: i64,
    pub timers_overdue: i64,
    pub outbox_backlog: i64,
    pub outbox_oldest_age_seconds: Option<i64>,
    pub dead_lettered_last_hour: i64,
    /// Dead-lettered events that name no saga (undecodable, unknown order).
    pub dead_lettered_last_hour_without_saga: i64,
    /// The inbound partition consumed least far (event time): due timers that
    /// it could still answer wait until it passes their due time.
    pub slowest_partition: Option<SlowestPartition>,
    /// Every inbound partition's event-time watermark, as any replica last
    /// reported it (the whole consumer group).
    pub partitions: Vec<SlowestPartition>,
    /// Sagas in flight per definition version: every loaded version, and any
    /// other still in use.
    pub versions: Vec<VersionInFlight>,
    pub at: DateTime<Utc>,
}

/// In-flight sagas of one definition version, and where they could move.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInFlight {
    pub definition_version: u32,
    pub in_flight: i64,
    /// This daemon has the definition loaded.
    pub loaded: bool,
    /// New sagas start on it.
    pub newest: bool,
    /// Loaded newer versions that declare a migration from this one.
    pub migrates_to: Vec<u32>,
}

/// [`VersionInFlight`] of every loaded version and every version in use.
pub fn versions_in_flight(catalog: &Catalog, in_flight: &[(u32, i64, Vec<OrderId>)]) -> Vec<VersionInFlight> {
    let mut versions: Vec<u32> = catalog.versions().map(|d| d.version).collect();
    versions.extend(in_flight.iter().filter(|(_, n, _)| *n > 0).map(|(v, ..)| *v));
    versions.sort_unstable();
    versions.dedup();
    versions
        .into_iter()
        .map(|v| VersionInFlight {
            definition_version: v,
            in_flight: in_flight.iter().find(|(x, ..)| *x == v).map_or(0, |(_, n, _)| *n),
            loaded: catalog.get(v).is_some(),
            newest: catalog.latest().version == v,
            migrates_to: catalog.versions().filter(|d| d.migrations.contains_key(&v)).map(|d| d.version).collect(),
        })
        .collect()
}

/// The partition with the oldest event-time watermark.
#[derive(Debug, Clone, Serialize)]
pub struct SlowestPartition {
    pub topic: String,
    pub partition: i32,
    /// Every message produced up to here has been applied.
    pub consumed_through: DateTime<Utc>,
    /// How far that is behind the database's clock.
    pub behind_seconds: i64,
    /// When a replica last reported it.
    pub updated_at: DateTime<Utc>,
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

/// Sagas of each kind the overview's "needs attention" list takes.
pub const ATTENTION_LISTED: u32 = 50;

pub async fn overview(db: &Db, catalog: &Catalog) -> Result<Overview, StoreError> {
    let g = gauges(db, catalog).await?;
    let (outbox_backlog, oldest) = crate::store::outbox::backlog(&db.pool).await?;
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
    let (_, marks) = crate::store::watermarks::read(&db.pool).await?;
    // Every inbound partition any replica has reported, the whole group's view.
    let mut partitions: Vec<SlowestPartition> = marks
        .into_iter()
        .map(|w| SlowestPartition {
            behind_seconds: (now - w.consumed_through).num_seconds().max(0),
            topic: w.topic,
            partition: w.partition,
            consumed_through: w.consumed_through,
            updated_at: w.updated_at,
        })
        .collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let slowest_partition = partitions.iter().min_by_key(|w| w.consumed_through).cloned();
    let versions = versions_in_flight(catalog, &in_flight_by_version(db).await?);
    Ok(Overview {
        versions,
        partitions,
        attention: super::attention(db, catalog, ATTENTION_LISTED).await?,
        slowest_partition,
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

/// Sagas in flight per definition version: `(version, count, the first five
/// order ids)`, for the retirement check at startup.
pub async fn in_flight_by_version(db: &Db) -> Result<Vec<(u32, i64, Vec<OrderId>)>, StoreError> {
    let rows: Vec<(u32, i64, String)> = sqlx::query_as(
        "SELECT definition_version, COUNT(*), \
         CAST(GROUP_CONCAT(order_id ORDER BY order_id SEPARATOR ',' LIMIT 5) AS CHAR) \
         FROM saga_instances WHERE terminal = 0 GROUP BY definition_version",
    )
    .fetch_all(&db.pool)
    .await
    .ctx("counting sagas in flight per version")?;
    Ok(rows.into_iter().map(|(v, n, ids)| (v, n, ids.split(',').filter_map(|s| s.parse().ok()).collect())).collect())
}
