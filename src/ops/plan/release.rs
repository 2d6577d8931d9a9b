//! `release` and `skip_poison`: lift the quarantine and replay the parked
//! events in order (`skip_poison` first resolves the poison ones as skipped).
//! A parked event that cannot be replayed refuses the release and says what
//! to do instead.

use crate::orchestrator::{Inbound, Source};
use crate::store::parked::parked_to_event;
use crate::telemetry::trace_context::TraceContext;

use super::{Expect, Plan, Refusal, Resolution, Snapshot, Write};

pub(super) fn plan(snap: &Snapshot, skip_poison: bool) -> Result<Plan, Refusal> {
    if snap.quarantined.is_none() {
        return Err(Refusal::NotAllowed("the saga is not quarantined".into()));
    }
    let mut writes = Vec::new();
    let mut replay: Vec<_> = snap.parked.iter().collect();
    if skip_poison {
        let poison: Vec<u64> = snap.parked.iter().filter(|p| p.poison).map(|p| p.id).collect();
        if poison.is_empty() {
            return Err(Refusal::NotAllowed("no unresolved poison event to skip".into()));
        }
        writes.push(Write::ResolveParked { ids: poison, resolution: Resolution::Skipped });
        replay.retain(|p| !p.poison);
    }
    let order_id = snap.saga.order_id;
    let events = replay
        .iter()
        .map(|p| {
            let event = parked_to_event(order_id, &p.event_id, &p.event_name, p.payload.as_deref()).map_err(|e| {
                Refusal::NotAllowed(format!(
                    "parked event {} cannot be replayed ({e}); skip it with skip_poison",
                    p.event_id
                ))
            })?;
            Ok(Inbound {
                event_id: p.event_id.clone(),
                order_id: Some(order_id),
                event_name: p.event_name.clone(),
                event: Ok(event),
                source: Source::Replay,
                trace: p.traceparent.as_deref().and_then(|tp| TraceContext::extract(tp, None)),
                raw: None,
            })
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    writes.extend([
        Write::ClearQuarantine,
        Write::ForgetInbox(replay.iter().map(|p| p.event_id.clone()).collect()),
        Write::ResolveParked { ids: replay.iter().map(|p| p.id).collect(), resolution: Resolution::Replayed },
        Write::Apply { events, expect: Expect::Any },
    ]);
    Ok(Plan { writes })
}
