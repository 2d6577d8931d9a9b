//! Gauges derived from the database (sagas per state, stuck, quarantined,
//! timers overdue), refreshed periodically by the daemon.

use chrono::Utc;

use crate::orchestrator::SagaStore;
use crate::store::{Db, StoreError, inspect};
use crate::telemetry::metrics::{Metrics, StateLabel, VersionLabel};

/// Refreshes the gauges that come from the database. Called periodically.
pub async fn refresh_gauges(db: &Db, sagas: &SagaStore, m: &Metrics) -> Result<(), StoreError> {
    let (backlog, oldest) = crate::store::outbox::backlog(&db.pool).await?;
    m.outbox.outbox_backlog.set(backlog);
    m.outbox.outbox_oldest_age_seconds.set(oldest.map(|t| (Utc::now() - t).num_seconds().max(0)).unwrap_or(0));
    let g = inspect::gauges(db, &sagas.catalog).await?;
    // Every state of every loaded definition gets a series, zero included.
    let mut states: Vec<String> = sagas.catalog.versions().flat_map(|d| d.states.keys().cloned()).collect();
    states.sort();
    states.dedup();
    let lookup = |v: &[(String, i64)], s: &str| v.iter().find(|(k, _)| k == s).map(|(_, n)| *n).unwrap_or(0);
    for s in &states {
        let label = StateLabel { state: s.clone() };
        m.sagas.saga_instances.get_or_create(&label).set(lookup(&g.per_state, s));
        let terminal = sagas.catalog.versions().any(|d| d.state(s).is_some_and(|x| x.terminal));
        if !terminal {
            m.sagas.saga_oldest_age_seconds.get_or_create(&label).set(lookup(&g.oldest_age, s));
            m.sagas.saga_stuck.get_or_create(&label).set(lookup(&g.stuck, s));
        }
    }
    m.sagas.saga_quarantined.set(g.quarantined);
    // Per version: every loaded one (zero included) and any other still in use.
    let in_flight = inspect::in_flight_by_version(db).await?;
    for v in inspect::versions_in_flight(&sagas.catalog, &in_flight) {
        let label = VersionLabel { definition_version: v.definition_version.to_string() };
        m.sagas.saga_in_flight_by_version.get_or_create(&label).set(v.in_flight);
    }
    m.sagas.saga_timers_overdue.set(g.timers_overdue);
    Ok(())
}
