//! Every branch of the shell's decisions, without a database.

use crate::domain::OrderId;
use std::path::Path;

use chrono::TimeZone;

use super::*;
use crate::config::Topics;
use crate::contracts::{Message, PaymentAuthorized, TimestampMicros};
use crate::orchestrator::{RawMessage, Source};
use crate::saga::{Catalog, parse};

const OID: OrderId = OrderId::new(42).unwrap();

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn catalog() -> Catalog {
    let def = parse::parse(Path::new("sagas/order.toml"), include_str!("../../sagas/order.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    Catalog::new(vec![def]).unwrap()
}

fn slot(catalog: &Catalog, state: &str) -> Slot {
    let def = catalog.latest();
    Slot {
        inst: crate::saga::fixtures::instance(def, OID, state, now()),
        quarantined: None,
        quarantined_at: None,
        dirty: false,
        quarantine_changed: false,
    }
}

fn kafka() -> Source {
    Source::Kafka { topic: "payment.authorized.v1".into(), partition: 3, offset: 77 }
}

fn inbound(event: Result<Event, String>, source: Source) -> Inbound {
    let (event_id, event_name) = match &event {
        Ok(e) => (e.id.clone(), e.name()),
        Err(_) => ("bad-1".to_owned(), "payment.authorized.v1".to_owned()),
    };
    Inbound {
        event_id,
        order_id: Some(OID),
        event_name,
        event,
        source,
        trace: None,
        raw: Some(RawMessage {
            topic: "payment.authorized.v1".into(),
            partition: 3,
            offset: 77,
            key: Some(b"42".to_vec()),
            payload: Some(b"\x00junk".to_vec()),
        }),
    }
}

fn authorized() -> Inbound {
    let m = Message::from(PaymentAuthorized {
        event_id: "pa-1".into(),
        order_id: OID.wire(),
        occurred_at: TimestampMicros(0),
        tenant_region: "eu-west".into(),
        payment_intent_id: "pi-42-1".into(),
        amount: "10.00".into(),
        currency: "EUR".into(),
    });
    inbound(Ok(Event { id: "pa-1".into(), order_id: OID, body: EventBody::Message(m) }), kafka())
}

fn timer(source: Source) -> Inbound {
    let body = EventBody::Timer { name: "payment_timeout".into() };
    inbound(Ok(Event { id: "timer:42:payment_timeout:2".into(), order_id: OID, body }), source)
}

fn manual(name: &str) -> Inbound {
    let body = EventBody::Manual { name: name.into(), actor: "ops:alice".into(), reason_code: None, comment: None };
    inbound(Ok(Event { id: format!("ops:{name}"), order_id: OID, body }), Source::Ops)
}

fn decide_with(slot: Option<&Slot>, b: &Inbound, lock: LockMode, timer_taken: bool) -> Decision {
    decide(&catalog(), slot, b, lock, UnknownVersion::Quarantine, timer_taken, now())
}

#[test]
fn an_event_without_a_saga_is_dead_lettered_refused_or_stale() {
    match decide_with(None, &authorized(), LockMode::Wait, false) {
        Decision::DeadLetter { kind: DeadLetterKind::UnknownOrder, reason } => assert_eq!(reason, "unknown order 42"),
        d => panic!("{d:?}"),
    }
    let bad = inbound(Err("bad magic byte".into()), kafka());
    assert!(matches!(
        decide_with(None, &bad, LockMode::Wait, false),
        Decision::DeadLetter { kind: DeadLetterKind::Undecodable, .. }
    ));
    assert!(matches!(
        decide_with(None, &manual("cancel.requested"), LockMode::Wait, false),
        Decision::Refuse(ChangeRefusal::NotFound)
    ));
    // A sweeper skipped a locked saga: someone else is on it.
    assert!(matches!(decide_with(None, &timer(Source::Timer), LockMode::SkipLocked, false), Decision::Stale));
}

#[test]
fn a_timer_fires_only_when_its_row_was_taken() {
    let c = catalog();
    let s = slot(&c, "AWAITING_PAYMENT");
    assert_eq!(timer_to_take(&timer(Source::Timer), Some(&s)), Some("payment_timeout"));
    assert!(matches!(decide_with(Some(&s), &timer(Source::Timer), LockMode::SkipLocked, false), Decision::Stale));
    assert!(matches!(decide_with(Some(&s), &timer(Source::Timer), LockMode::SkipLocked, true), Decision::Apply { .. }));
    // A replayed firing already took its timer.
    assert_eq!(timer_to_take(&timer(Source::Replay), Some(&s)), None);
    assert!(matches!(decide_with(Some(&s), &timer(Source::Replay), LockMode::Wait, false), Decision::Apply { .. }));
    // A quarantined saga's timers wait (no row is taken).
    let mut q = s;
    q.quarantined = Some("poison".into());
    assert_eq!(timer_to_take(&timer(Source::Timer), Some(&q)), None);
    assert!(matches!(decide_with(Some(&q), &timer(Source::Timer), LockMode::Wait, false), Decision::Stale));
}

#[test]
fn a_quarantined_saga_parks_events_and_refuses_manual_ones() {
    let c = catalog();
    let mut s = slot(&c, "AWAITING_PAYMENT");
    s.quarantined = Some("poison".into());
    assert!(matches!(decide_with(Some(&s), &authorized(), LockMode::Wait, false), Decision::Park));
    match decide_with(Some(&s), &manual("cancel.requested"), LockMode::Wait, false) {
        Decision::Refuse(ChangeRefusal::SagaInProgress { saga_state }) => {
            assert_eq!(saga_state, "AWAITING_PAYMENT (quarantined: poison)")
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn poison_quarantines_the_saga() {
    let c = catalog();
    let s = slot(&c, "AWAITING_PAYMENT");
    let bad = inbound(Err("bad magic byte".into()), kafka());
    match decide_with(Some(&s), &bad, LockMode::Wait, false) {
        Decision::Quarantine { kind: DeadLetterKind::Undecodable, reason } => assert_eq!(reason, "bad magic byte"),
        d => panic!("{d:?}"),
    }
    // Rejected by the definition: quarantined for an event, refused for a human.
    let lost = slot(&c, "NO_SUCH_STATE");
    assert!(matches!(
        decide_with(Some(&lost), &authorized(), LockMode::Wait, false),
        Decision::Quarantine { kind: DeadLetterKind::RejectedByDefinition, .. }
    ));
    assert!(matches!(
        decide_with(Some(&s), &manual("no.such.event"), LockMode::Wait, false),
        Decision::Refuse(ChangeRefusal::SagaInProgress { .. })
    ));
    // Declared as ignored in the state: recorded, nothing else.
    let early = slot(&c, "RESERVING_INVENTORY");
    assert!(matches!(decide_with(Some(&early), &authorized(), LockMode::Wait, false), Decision::Ignore));
}

#[test]
fn an_unloaded_definition_version_waits_or_quarantines() {
    let c = catalog();
    let mut s = slot(&c, "AWAITING_PAYMENT");
    s.inst.definition_version = 99;
    let wait = decide(&c, Some(&s), &authorized(), LockMode::Wait, UnknownVersion::Wait, false, now());
    assert!(matches!(wait, Decision::WaitForDefinition { version: 99 }));
    let q = decide(&c, Some(&s), &authorized(), LockMode::Wait, UnknownVersion::Quarantine, false, now());
    match q {
        Decision::QuarantineUnknownVersion { reason } => assert!(reason.contains("version 99"), "{reason}"),
        d => panic!("{d:?}"),
    }
}

#[test]
fn an_accepted_event_is_applied_and_its_effects_become_rows() {
    let c = catalog();
    let s = slot(&c, "AWAITING_PAYMENT");
    let Decision::Apply { transition } = decide_with(Some(&s), &authorized(), LockMode::Wait, false) else {
        panic!("not applied");
    };
    assert_eq!(transition.instance.state, "COMPLETED");
    let writer = OutboxWriter { topics: Topics::with_prefix("t."), shards: 4 };
    let mut head = Some(OrderHead {
        order_id: OID,
        status: OrderStatus::Pending,
        version: 1,
        tenant_region: "eu-west".into(),
        updated_at: now(),
    });
    let mut alerts = Vec::new();
    let w = effects_to_writes(
        &writer,
        &transition.instance,
        &mut head,
        &transition.effects,
        "svc",
        None,
        now(),
        &mut alerts,
    )
    .unwrap()
    .unwrap();
    // PENDING → CONFIRMED: one history row, the status event, the new version.
    assert_eq!(w.history.len(), 1);
    assert_eq!(w.orders.get(&OID), Some(&(OrderStatus::Confirmed, 2)));
    assert!(
        w.outbox.iter().any(|r| r.event_type == "order.status.changed.v1" && r.topic == "t.order.status.changed.v1")
    );
    // The payment timeout is disarmed.
    assert!(matches!(w.timers.get(&(OID, "payment_timeout".to_owned())), Some(TimerOp::Cancel)));
    assert_eq!(head.as_ref().map(|h| (h.status, h.version)), Some((OrderStatus::Confirmed, 2)));

    // The same effects on an order the table does not let move: refused, nothing written.
    let mut cancelled = Some(OrderHead { status: OrderStatus::Cancelled, ..head.clone().unwrap() });
    let refused = effects_to_writes(
        &writer,
        &transition.instance,
        &mut cancelled,
        &transition.effects,
        "svc",
        None,
        now(),
        &mut alerts,
    )
    .unwrap();
    assert!(matches!(refused, Err(ChangeRefusal::Illegal { from: OrderStatus::Cancelled, .. })));
    // A saga without its order row is corrupt data, not a refusal.
    let mut none = None;
    assert!(
        effects_to_writes(
            &writer,
            &transition.instance,
            &mut none,
            &transition.effects,
            "svc",
            None,
            now(),
            &mut alerts
        )
        .is_err()
    );
}

#[test]
fn the_dead_letter_copy_keeps_the_bytes_and_says_why() {
    let writer = OutboxWriter { topics: Topics::with_prefix(""), shards: 4 };
    let bad = inbound(Err("bad magic byte".into()), kafka());
    let row = dead_letter_row(&writer, &bad, "bad magic byte", Some("eu-west"));
    let headers: serde_json::Value = serde_json::from_str(&row.headers).unwrap();
    assert_eq!(headers[headers::DLQ_ERROR], "bad magic byte");
    assert_eq!(headers[headers::DLQ_ERROR_KIND], "undecodable");
    assert_eq!(headers[headers::DLQ_SOURCE_OFFSET], "77");
    assert_eq!(row.topic, "order-saga.dlq");
    let parked = parked_row(bad.order_id.unwrap(), &bad, true, Some("bad magic byte"));
    assert!(parked.poison && parked.payload.is_none());
    let c = catalog();
    let q = quarantine_transition(&slot(&c, "AWAITING_PAYMENT"), &bad, "bad magic byte");
    assert_eq!((q.from.as_str(), q.to.as_str()), ("AWAITING_PAYMENT", "AWAITING_PAYMENT"));
    assert_eq!(q.reason.as_deref(), Some("QUARANTINED: bad magic byte"));
}

#[test]
fn a_reply_to_another_command_is_recorded_as_stale_and_moves_nothing() {
    let c = catalog();
    let s = slot(&c, "AWAITING_PAYMENT");
    let mut b = authorized();
    if let Ok(Event { body: EventBody::Message(Message::PaymentAuthorized(p)), .. }) = &mut b.event {
        p.payment_intent_id = "pi-42-7".into();
    }
    match decide_with(Some(&s), &b, LockMode::Wait, false) {
        Decision::StaleReply { reason } => {
            assert!(reason.starts_with("STALE_REPLY"), "{reason}");
            assert!(
                reason.contains("pi-42-7") && reason.contains("pi-42-1"),
                "says what came and what was awaited: {reason}"
            );
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn a_firing_takes_its_timer_once_from_the_batchs_read_and_keeps_an_earlier_arm() {
    use std::collections::{BTreeMap, HashSet};
    let mut due: HashSet<(OrderId, String)> = [(OID, "payment_timeout".to_owned())].into();
    let mut timers = BTreeMap::new();
    assert!(!take_timer(&mut due, &mut timers, OID, "other"), "not due at the batch's read: stale");
    assert!(timers.is_empty());
    assert!(take_timer(&mut due, &mut timers, OID, "payment_timeout"));
    assert!(matches!(timers[&(OID, "payment_timeout".to_owned())], TimerOp::Cancel), "deleted with the batch");
    assert!(!take_timer(&mut due, &mut timers, OID, "payment_timeout"), "a second firing in the batch finds nothing");

    // An event earlier in the batch armed it again: the new arming stands.
    let mut due: HashSet<(OrderId, String)> = [(OID, "payment_timeout".to_owned())].into();
    let armed = TimerOp::Arm { due_at: now(), armed_version: crate::domain::SagaVersion(4) };
    let mut timers = BTreeMap::from([((OID, "payment_timeout".to_owned()), armed)]);
    assert!(take_timer(&mut due, &mut timers, OID, "payment_timeout"));
    assert!(matches!(
        timers[&(OID, "payment_timeout".to_owned())],
        TimerOp::Arm { armed_version: crate::domain::SagaVersion(4), .. }
    ));
}
