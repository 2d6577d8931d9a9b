//! `cancel` and `force`: deliver a manual event the definition declares and
//! the current state accepts (`cancel` is the definition's manual event for
//! CANCELLED, which compensates what the saga did).

use crate::domain::OrderStatus;
use crate::saga::{Event, EventBody};

use super::{Actor, Expect, Plan, Refusal, Snapshot, Write, originated};

pub(super) fn plan_cancel(snap: &Snapshot, who: Actor<'_>) -> Result<Plan, Refusal> {
    snap.not_quarantined()?;
    let event = snap
        .def
        .manual_event_for_status(OrderStatus::Cancelled)
        .ok_or_else(|| Refusal::NotAllowed("the definition has no manual event for CANCELLED".into()))?
        .name
        .clone();
    deliver(snap, event, who)
}

pub(super) fn plan_force(snap: &Snapshot, event: &str, who: Actor<'_>) -> Result<Plan, Refusal> {
    snap.not_quarantined()?;
    deliver(snap, event.to_owned(), who)
}

fn deliver(snap: &Snapshot, name: String, who: Actor<'_>) -> Result<Plan, Refusal> {
    let def = &snap.def;
    if !def.manual_events.contains_key(&name) {
        let declared = def.manual_events.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(Refusal::NotAllowed(format!(
            "\"{name}\" is not a manual event of the definition (declared: {declared})"
        )));
    }
    let state = &snap.saga.state;
    if !def.state(state).is_some_and(|s| s.on.contains_key(&name)) {
        return Err(Refusal::NotAllowed(format!(
            "transition not in the definition: state {state} does not accept {name}"
        )));
    }
    let order_id = snap.saga.order_id;
    // One id per saga version: a retried request is a duplicate, not a second event.
    let id = format!("ops:{order_id}:{}:{name}", snap.saga.version);
    let body = EventBody::Manual {
        name: name.clone(),
        actor: who.actor.to_owned(),
        reason_code: None,
        comment: Some(who.reason.to_owned()),
    };
    let event = Event { id, order_id, body };
    Ok(Plan { writes: vec![Write::Apply { events: vec![originated(snap, event, name)], expect: Expect::Applied }] })
}
