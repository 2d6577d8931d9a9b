//! What an applied batch is observed as: counters, histograms and the log
//! lines of its outcomes (the consumer, the sweeper and ops actions apply
//! batches; each records its result here, outside the transaction).

use crate::domain::OrderId;
use crate::telemetry::metrics::{
    CodeLabel, EventLabel, Metrics, OutcomeLabel, ReasonLabel, StateLabel, TransitionLabel,
};

use super::{BatchResult, InboundOutcome};

/// Metrics and logs of one applied batch (consumer, sweeper, ops actions).
pub fn record_batch(m: &Metrics, result: &BatchResult) {
    for o in &result.outcomes {
        let label = match o {
            InboundOutcome::Applied { .. } => "applied",
            InboundOutcome::Ignored => "ignored",
            InboundOutcome::Duplicate => {
                m.sagas.saga_inbox_duplicates_total.inc();
                "duplicate"
            }
            InboundOutcome::Parked => "parked",
            InboundOutcome::DeadLettered { kind, reason, order_id } => {
                m.sagas.saga_dead_lettered_total.get_or_create(&ReasonLabel { reason: kind.as_str().into() }).inc();
                tracing::warn!(order_id = order_id.map_or(0, OrderId::get), reason = %reason, kind = kind.as_str(), "event dead-lettered; the saga is quarantined when the order is known");
                "dead_lettered"
            }
            InboundOutcome::Stale => "stale",
            InboundOutcome::StaleReply { event, reason } => {
                m.sagas.saga_stale_replies_total.get_or_create(&EventLabel { event: event.clone() }).inc();
                tracing::info!(event = %event, reason = %reason, "stale reply recorded; the saga did not move");
                "stale_reply"
            }
            InboundOutcome::Refused(_) => "refused",
        };
        m.sagas.saga_events_total.get_or_create(&OutcomeLabel { outcome: label.into() }).inc();
    }
    for (from, to, secs) in &result.status_changes {
        m.orders
            .order_status_transition_seconds
            .get_or_create(&TransitionLabel { from_status: from.as_str().into(), to_status: to.as_str().into() })
            .observe(*secs);
    }
    for (state, secs) in &result.dwell {
        m.sagas.saga_state_dwell_seconds.get_or_create(&StateLabel { state: state.clone() }).observe(*secs);
    }
    for a in &result.alerts {
        m.sagas.saga_alerts_total.get_or_create(&CodeLabel { code: a.code.clone() }).inc();
        tracing::warn!(order_id = a.order_id.get(), tenant_region = %a.tenant_region, alert = %a.code, "{}", a.message);
    }
}
