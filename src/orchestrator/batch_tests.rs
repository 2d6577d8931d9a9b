//! Whole batches planned on snapshots, without a database: what each event
//! comes to, and every row the shell would write.

use std::path::Path;

use chrono::TimeZone;

use super::*;
use crate::config::Topics;
use crate::contracts::{InventoryReservationFailed, Message, PaymentAuthorized, Shortage, TimestampMicros};
use crate::domain::OrderStatus;
use crate::domain::ids::oid;
use crate::saga::parse;
use crate::store::inbox::Outcome as Recorded;
use crate::store::timers::TimerOp;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
}

fn catalog() -> Catalog {
    let def = parse::parse(Path::new("sagas/order.toml"), include_str!("../../sagas/order.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    Catalog::new(vec![def]).unwrap()
}

fn writer() -> OutboxWriter {
    OutboxWriter { topics: Topics::with_prefix(""), shards: 4 }
}

/// Sagas of orders `ids` in `state`, entered 90 s ago, and their order rows
/// (PENDING, version 1, last changed 2 min ago).
fn snapshot(catalog: &Catalog, state: &str, ids: &[i64]) -> Snapshot {
    let mut slots = HashMap::new();
    let mut heads = HashMap::new();
    for id in ids.iter().copied().map(oid) {
        let inst = crate::saga::fixtures::instance(catalog.latest(), id, state, now() - chrono::Duration::seconds(90));
        slots.insert(
            id,
            Slot { inst, quarantined: None, quarantined_at: None, dirty: false, quarantine_changed: false },
        );
        heads.insert(
            id,
            OrderHead {
                order_id: id,
                status: OrderStatus::Pending,
                version: 1,
                tenant_region: "eu-west".into(),
                updated_at: now() - chrono::Duration::seconds(120),
            },
        );
    }
    Snapshot { now: now(), seen_before: HashSet::new(), slots, heads, due: HashSet::new() }
}

fn kafka(offset: i64) -> Source {
    Source::Kafka { topic: "payment.authorized.v1".into(), partition: 0, offset }
}

fn of(m: Message, source: Source) -> Inbound {
    Inbound {
        event_id: m.event_id().to_owned(),
        order_id: Some(oid(m.order_id())),
        event_name: m.kind().name().to_owned(),
        event: Ok(Event { id: m.event_id().to_owned(), order_id: oid(m.order_id()), body: EventBody::Message(m) }),
        source,
        trace: None,
        raw: None,
    }
}

/// The payment service authorized order `id`'s intent `intent` (10.00 EUR, the fixture's amount).
fn authorized(id: i64, event: &str, intent: &str) -> Inbound {
    of(
        Message::from(PaymentAuthorized {
            event_id: event.into(),
            order_id: id,
            occurred_at: TimestampMicros(0),
            tenant_region: "eu-west".into(),
            payment_intent_id: intent.into(),
            amount: "10.00".into(),
            currency: "EUR".into(),
        }),
        kafka(1),
    )
}

fn undecodable(id: i64, event: &str) -> Inbound {
    Inbound {
        event_id: event.into(),
        order_id: Some(oid(id)),
        event_name: "payment.authorized.v1".into(),
        event: Err("unknown schema id 99".into()),
        source: kafka(2),
        trace: None,
        raw: None,
    }
}

fn firing(id: i64, event: &str) -> Inbound {
    Inbound {
        event_id: event.into(),
        order_id: Some(oid(id)),
        event_name: "timer.payment_timeout".into(),
        event: Ok(Event {
            id: event.into(),
            order_id: oid(id),
            body: EventBody::Timer { name: "payment_timeout".into() },
        }),
        source: Source::Timer,
        trace: None,
        raw: None,
    }
}

fn plan_of(batch: &[Inbound], snap: Snapshot) -> Plan {
    plan(&catalog(), &writer(), batch, snap, LockMode::Wait, UnknownVersion::Quarantine)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn recorded(p: &Plan) -> Vec<(&str, Recorded)> {
    p.writes.inbox.iter().map(|r| (r.event_id.as_str(), r.outcome)).collect()
}

fn changed(p: &Plan) -> Vec<(i64, &str, Option<&str>)> {
    p.changed.iter().map(|s| (s.inst.order_id.wire(), s.inst.state.as_str(), s.quarantined.as_deref())).collect()
}

#[test]
fn poison_mid_batch_quarantines_its_saga_parks_what_follows_and_the_other_orders_move() {
    let c = catalog();
    let batch = [undecodable(1, "bad-1"), authorized(1, "pa-1", "pi-1-1"), authorized(2, "pa-2", "pi-2-1")];
    let p = plan_of(&batch, snapshot(&c, "AWAITING_PAYMENT", &[1, 2]));
    assert!(matches!(
        &p.result.outcomes[0],
        InboundOutcome::DeadLettered { kind: DeadLetterKind::Undecodable, order_id: Some(id), .. } if id.get() == 1
    ));
    assert_eq!(p.result.outcomes[1], InboundOutcome::Parked);
    assert_eq!(
        p.result.outcomes[2],
        InboundOutcome::Applied { from: "AWAITING_PAYMENT".into(), to: "COMPLETED".into() }
    );
    assert_eq!(
        recorded(&p),
        vec![("bad-1", Recorded::DeadLettered), ("pa-1", Recorded::Parked), ("pa-2", Recorded::Applied)]
    );
    // The poison event and the one behind it are parked in arrival order, the poison one marked.
    let parked: Vec<(&str, bool)> = p.writes.parked.iter().map(|r| (r.event_id.as_str(), r.poison)).collect();
    assert_eq!(parked, vec![("bad-1", true), ("pa-1", false)]);
    assert_eq!(changed(&p), vec![(1, "AWAITING_PAYMENT", Some("unknown schema id 99")), (2, "COMPLETED", None)]);
    // Order 1: a DLQ copy; order 2: its status change event. Order 2 CONFIRMED, its timer disarmed.
    let kinds: Vec<&str> = p.writes.outbox.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(p.writes.outbox[0].topic.contains("dlq"), "{}", p.writes.outbox[0].topic);
    assert_eq!(p.writes.orders.get(&oid(2)), Some(&(OrderStatus::Confirmed, 2)));
    assert!(!p.writes.orders.contains_key(&oid(1)));
    assert!(matches!(p.writes.timers.get(&(oid(2), "payment_timeout".into())), Some(TimerOp::Cancel)));
    let log: Vec<(i64, Option<&str>)> =
        p.writes.transitions.iter().map(|t| (t.order_id.wire(), t.reason.as_deref())).collect();
    assert_eq!(log, vec![(1, Some("QUARANTINED: unknown schema id 99")), (2, Some("PAYMENT_AUTHORIZED"))]);
}

#[test]
fn duplicates_seen_before_or_twice_in_the_batch_are_recorded_once() {
    let c = catalog();
    let mut snap = snapshot(&c, "AWAITING_PAYMENT", &[1, 2]);
    snap.seen_before.insert("pa-1".into());
    let batch = [authorized(1, "pa-1", "pi-1-1"), authorized(2, "pa-2", "pi-2-1"), authorized(2, "pa-2", "pi-2-1")];
    let p = plan_of(&batch, snap);
    assert_eq!(p.result.outcomes[0], InboundOutcome::Duplicate);
    assert!(matches!(p.result.outcomes[1], InboundOutcome::Applied { .. }));
    assert_eq!(p.result.outcomes[2], InboundOutcome::Duplicate);
    assert_eq!(recorded(&p), vec![("pa-2", Recorded::Applied)]);
    assert_eq!(changed(&p), vec![(2, "COMPLETED", None)]);
}

#[test]
fn a_due_timer_fires_once_and_a_firing_whose_timer_is_not_due_is_stale_and_not_recorded() {
    let c = catalog();
    let mut snap = snapshot(&c, "AWAITING_PAYMENT", &[1, 2]);
    snap.due.insert((oid(1), "payment_timeout".into()));
    let batch =
        [firing(1, "timer:1:payment_timeout:3"), firing(1, "timer:1:payment_timeout:4"), firing(2, "timer:2:x")];
    let p = plan_of(&batch, snap);
    assert_eq!(
        p.result.outcomes[0],
        InboundOutcome::Applied { from: "AWAITING_PAYMENT".into(), to: "CANCELLED".into() }
    );
    assert_eq!(p.result.outcomes[1], InboundOutcome::Stale, "its timer was taken by the first");
    assert_eq!(p.result.outcomes[2], InboundOutcome::Stale, "not armed and due at the read");
    assert_eq!(recorded(&p), vec![("timer:1:payment_timeout:3", Recorded::Applied)]);
    assert!(matches!(p.writes.timers.get(&(oid(1), "payment_timeout".into())), Some(TimerOp::Cancel)));
    assert!(!p.writes.timers.contains_key(&(oid(2), "payment_timeout".into())));
    // Compensation: release and void, newest first, and the status change.
    let kinds: Vec<&str> = p.writes.outbox.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(kinds, vec!["order.status.changed.v1", "payment.void.v1", "inventory.release.v1"]);
}

#[test]
fn a_stale_reply_is_logged_with_why_and_moves_nothing() {
    let c = catalog();
    let p = plan_of(&[authorized(1, "pa-old", "pi-1-0")], snapshot(&c, "AWAITING_PAYMENT", &[1]));
    let InboundOutcome::StaleReply { reason, .. } = &p.result.outcomes[0] else { panic!("{:?}", p.result.outcomes) };
    assert_eq!(reason, "STALE_REPLY: payment_intent_id pi-1-0 is not the awaited pi-1-1");
    assert_eq!(recorded(&p), vec![("pa-old", Recorded::StaleReply)]);
    assert_eq!(changed(&p), vec![]);
    assert!(p.writes.outbox.is_empty() && p.writes.orders.is_empty() && p.writes.timers.is_empty());
    let t = &p.writes.transitions[0];
    assert_eq!(
        (t.from.as_str(), t.to.as_str(), t.reason.as_deref()),
        ("AWAITING_PAYMENT", "AWAITING_PAYMENT", Some(reason.as_str()))
    );
}

#[test]
fn a_saga_on_an_unknown_definition_version_waits_or_is_quarantined_without_a_dead_letter() {
    let c = catalog();
    let mut snap = snapshot(&c, "AWAITING_PAYMENT", &[1]);
    if let Some(s) = snap.slots.get_mut(&oid(1)) {
        s.inst.definition_version = 9;
    }
    let batch = [authorized(1, "pa-1", "pi-1-1")];
    let wait = plan(&c, &writer(), &batch, snap.clone(), LockMode::Wait, UnknownVersion::Wait);
    assert!(matches!(wait, Err(StoreError::DefinitionNotLoaded { version: 9 })));
    let p = plan_of(&batch, snap);
    assert_eq!(p.result.outcomes, vec![InboundOutcome::Parked]);
    assert_eq!(changed(&p), vec![(1, "AWAITING_PAYMENT", Some("saga definition version 9 is not loaded"))]);
    assert!(p.writes.outbox.is_empty(), "not the event's fault: no DLQ copy");
}

#[test]
fn dwell_status_changes_and_alerts_come_out_of_the_plan() {
    let c = catalog();
    let failed = of(
        Message::from(InventoryReservationFailed {
            event_id: "rf-1".into(),
            order_id: 1,
            occurred_at: TimestampMicros(0),
            tenant_region: "eu-west".into(),
            command_id: None,
            reason: "OUT_OF_STOCK".into(),
            shortages: vec![Shortage { sku: "A".into(), requested_qty: 1, available_qty: 0 }],
        }),
        kafka(3),
    );
    let p = plan_of(&[failed], snapshot(&c, "RESERVING_INVENTORY", &[1]));
    assert_eq!(p.result.dwell, vec![("RESERVING_INVENTORY".to_owned(), 90.0)]);
    assert_eq!(p.result.status_changes, vec![(OrderStatus::Pending, OrderStatus::PendingReview, 120.0)]);
    let alerts: Vec<&str> = p.result.alerts.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(alerts, vec!["RESERVATION_FAILED"]);
    assert_eq!(p.result.outbox_rows, p.writes.outbox.len());
}

#[test]
fn an_order_status_the_order_table_refuses_quarantines_the_saga() {
    let c = catalog();
    let mut snap = snapshot(&c, "AWAITING_PAYMENT", &[1]);
    // The order was cancelled outside the saga: CONFIRMED is no longer reachable.
    if let Some(h) = snap.heads.get_mut(&oid(1)) {
        h.status = OrderStatus::Cancelled;
    }
    let p = plan_of(&[authorized(1, "pa-1", "pi-1-1")], snap);
    let InboundOutcome::DeadLettered { kind: DeadLetterKind::OrderTransitionRefused, reason, .. } =
        &p.result.outcomes[0]
    else {
        panic!("{:?}", p.result.outcomes)
    };
    // In words (the DLQ header and the quarantine say it), not Rust's Debug form.
    assert_eq!(reason, "order status change refused: an order cannot go from CANCELLED to CONFIRMED");
    assert_eq!(changed(&p)[0].1, "AWAITING_PAYMENT", "nothing of the transition is written");
    assert!(p.writes.orders.is_empty());
}
