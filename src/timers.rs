//! The timeout sweeper: fires due timers through the saga transition function.
//!
//! Scheduled with tokio-cron-scheduler (only the trigger: the timers
//! themselves are rows in `saga_timers`, written in the transaction of the
//! transition that armed them). Each sweep claims due timers in short READ
//! COMMITTED transactions: the saga rows are locked `FOR UPDATE SKIP LOCKED`
//! (another sweeper or a consumer batch holding one simply means "not now"),
//! the timer row is re-checked against database time and deleted in the same
//! transaction as the transition it causes. A timer survives any crash (it is
//! only deleted by the commit that applies it) and never fires twice in effect.
//!
//! External schedulers can trigger a sweep: `order-saga timeouts sweep` or
//! `POST /ops/timeouts/sweep`.

use serde::Serialize;

use crate::saga::{Event, EventBody};
use crate::store::sagas::{Inbound, InboundOutcome, LockMode, SagaStore};
use crate::store::{Db, StoreError, timers};
use crate::telemetry::metrics::Metrics;

/// Result of a sweep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SweepReport {
    /// Timers that fired (their transition committed).
    pub fired: u32,
    /// Due timers skipped: disarmed meanwhile, or held by another sweeper.
    pub skipped: u32,
}

/// The inbox id of a timer firing: one arming fires at most once.
pub fn firing_id(t: &timers::DueTimer) -> String {
    format!("timer:{}:{}:{}", t.order_id, t.name, t.armed_version)
}

/// Fires every timer that is due now, in batches of `batch`, until none is
/// left (or the rest is held by someone else).
pub async fn sweep(
    db: &Db,
    sagas: &SagaStore,
    batch: u32,
    metrics: Option<&Metrics>,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    loop {
        let due = timers::due(&db.pool, batch).await?;
        if due.is_empty() {
            return Ok(report);
        }
        let inbound: Vec<Inbound> = due
            .iter()
            .map(|t| {
                let id = firing_id(t);
                Inbound {
                    event_id: id.clone(),
                    order_id: Some(t.order_id),
                    event_name: format!("{}{}", crate::saga::definition::TIMER_PREFIX, t.name),
                    event: Ok(Event { id, order_id: t.order_id, body: EventBody::Timer { name: t.name.clone() } }),
                    source: "timer".into(),
                    trace: Some(crate::telemetry::trace_context::TraceContext::new_root()),
                    raw: None,
                }
            })
            .collect();
        let result = sagas.apply_batch(db, &inbound, LockMode::SkipLocked).await?;
        // Fired and committed, not yet reported: a crash here must not fire twice.
        crate::failpoint::hit("sweeper.after_fire");
        let fired_now = result
            .outcomes
            .iter()
            .filter(|o| matches!(o, InboundOutcome::Applied { .. } | InboundOutcome::Ignored))
            .count() as u32;
        report.skipped += result.outcomes.len() as u32 - fired_now;
        if let Some(m) = metrics {
            m.sagas.saga_timers_fired_total.inc_by(u64::from(fired_now));
            crate::events::record_batch(m, &result);
        }
        if fired_now > 0 {
            tracing::info!(fired = fired_now, "timers fired");
        }
        report.fired += fired_now;
        if fired_now == 0 {
            // Everything due is held by another sweeper (or was disarmed):
            // do not spin on it.
            return Ok(report);
        }
    }
}
