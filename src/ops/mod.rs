//! Operator tooling: inspect stuck sagas and act on them safely.

pub mod cli;

use crate::store::sagas::SagaStore;
use crate::store::{Db, StoreError};
use crate::telemetry::metrics::Metrics;

/// Refreshes the gauges that come from the database (saga counts, ages,
/// backlog). Called periodically by the scheduler.
pub async fn refresh_gauges(db: &Db, _sagas: &SagaStore, m: &Metrics) -> Result<(), StoreError> {
    let (backlog, oldest) = crate::store::outbox::backlog(&db.pool).await?;
    m.outbox_backlog.set(backlog);
    let age = oldest.map(|t| (chrono::Utc::now() - t).num_seconds().max(0)).unwrap_or(0);
    m.outbox_oldest_age_seconds.set(age);
    Ok(())
}
