//! Table-driven tests of the engine over the shipped definition, and of the
//! definition validator.

use crate::domain::{Currency, Money, OrderId};
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};

use super::definition::Definition;
use super::model::{Effect, Event, EventBody, Instance, Item, OrderFacts, Outcome, Rejection};
use super::{engine, graph, parse};
use crate::contracts::*;
use crate::domain::OrderStatus;

const ORDER_TOML: &str = include_str!("../../sagas/order.toml");

fn def() -> Definition {
    parse::parse(Path::new("sagas/order.toml"), ORDER_TOML).unwrap_or_else(|e| panic!("{e}"))
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn facts() -> OrderFacts {
    OrderFacts {
        customer_id: "c-1".into(),
        tenant_region: "eu".into(),
        total: Money::new("39.98".parse().unwrap(), Currency::parse("EUR").unwrap()),
        items: vec![Item { sku: "A".into(), qty: 2 }, Item { sku: "B".into(), qty: 1 }],
    }
}

const OID: OrderId = OrderId::new(42).unwrap();

fn msg_event(id: &str, m: Message) -> Event {
    Event { id: id.into(), order_id: OID, body: EventBody::Message(m) }
}

fn ts() -> TimestampMicros {
    TimestampMicros::from_datetime(t0())
}

fn reserved() -> Event {
    msg_event(
        "e-res",
        Message::from(InventoryReserved {
            event_id: "e-res".into(),
            order_id: OID.wire(),
            occurred_at: ts(),
            tenant_region: "eu".into(),
            command_id: None,
        }),
    )
}

fn reservation_failed() -> Event {
    msg_event(
        "e-rf",
        Message::from(InventoryReservationFailed {
            event_id: "e-rf".into(),
            order_id: OID.wire(),
            occurred_at: ts(),
            tenant_region: "eu".into(),
            command_id: None,
            reason: "OUT_OF_STOCK".into(),
            shortages: vec![
                Shortage { sku: "A".into(), requested_qty: 2, available_qty: 1 },
                Shortage { sku: "B".into(), requested_qty: 1, available_qty: 0 },
            ],
        }),
    )
}

fn authorized() -> Event {
    msg_event(
        "e-auth",
        Message::from(PaymentAuthorized {
            event_id: "e-auth".into(),
            order_id: OID.wire(),
            occurred_at: ts(),
            tenant_region: "eu".into(),
            payment_intent_id: "pi-42-1".into(),
            amount: "39.98".into(),
            currency: "EUR".into(),
        }),
    )
}

fn payment_failed() -> Event {
    msg_event(
        "e-pf",
        Message::from(PaymentFailed {
            event_id: "e-pf".into(),
            order_id: OID.wire(),
            occurred_at: ts(),
            tenant_region: "eu".into(),
            payment_intent_id: "pi-42-1".into(),
            reason: "DECLINED".into(),
        }),
    )
}

fn timer() -> Event {
    Event { id: "e-timer".into(), order_id: OID, body: EventBody::Timer { name: "payment_timeout".into() } }
}

fn manual(name: &str) -> Event {
    Event {
        id: format!("e-{name}"),
        order_id: OID,
        body: EventBody::Manual { name: name.into(), actor: "support:alice".into(), reason_code: None, comment: None },
    }
}

fn all_events() -> Vec<Event> {
    vec![
        reserved(),
        reservation_failed(),
        authorized(),
        payment_failed(),
        timer(),
        manual("cancel.requested"),
        manual("reservation.retry.requested"),
    ]
}

fn instance_in(def: &Definition, state: &str) -> Instance {
    let (mut inst, _) = engine::start(def, OID, facts(), t0()).unwrap();
    // Make the state's typical history true: reservation ran; payment ran in later states.
    if state != "RESERVING_INVENTORY" && state != "PENDING_REVIEW" {
        let t = engine::transition(def, &inst, &reserved(), t0()).unwrap();
        inst = t.instance;
    }
    inst.state = state.into();
    inst
}

fn published(effects: &[Effect]) -> Vec<(MessageKind, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(m) => Some((m.kind(), command_of(m).unwrap_or_default())),
            _ => None,
        })
        .collect()
}

fn command_of(m: &Message) -> Option<String> {
    match m {
        Message::InventoryReserve(c) => Some(c.command_id.clone()),
        Message::InventoryRelease(c) => Some(c.command_id.clone()),
        Message::PaymentAuthorize(c) => Some(c.command_id.clone()),
        Message::PaymentVoid(c) => Some(c.command_id.clone()),
        _ => None,
    }
}

/// Expected result of every (state, event) pair: `Some(to)` applied,
/// `Some("=")` ignored, `None` rejected.
#[test]
fn every_state_event_pair() {
    use MessageKind::*;
    let d = def();
    let ev = |k: MessageKind| k.name().to_owned();
    let table: Vec<(&str, String, Option<&str>)> = vec![
        ("RESERVING_INVENTORY", ev(InventoryReserved), Some("AWAITING_PAYMENT")),
        ("RESERVING_INVENTORY", ev(InventoryReservationFailed), Some("PENDING_REVIEW")),
        ("RESERVING_INVENTORY", ev(PaymentAuthorized), Some("=")),
        ("RESERVING_INVENTORY", ev(PaymentFailed), Some("=")),
        ("RESERVING_INVENTORY", "timer.payment_timeout".into(), None),
        ("RESERVING_INVENTORY", "cancel.requested".into(), Some("CANCELLED")),
        ("RESERVING_INVENTORY", "reservation.retry.requested".into(), None),
        ("AWAITING_PAYMENT", ev(InventoryReserved), Some("=")),
        ("AWAITING_PAYMENT", ev(InventoryReservationFailed), Some("=")),
        ("AWAITING_PAYMENT", ev(PaymentAuthorized), Some("COMPLETED")),
        ("AWAITING_PAYMENT", ev(PaymentFailed), Some("CANCELLED")),
        ("AWAITING_PAYMENT", "timer.payment_timeout".into(), Some("CANCELLED")),
        ("AWAITING_PAYMENT", "cancel.requested".into(), Some("CANCELLED")),
        ("AWAITING_PAYMENT", "reservation.retry.requested".into(), None),
        ("PENDING_REVIEW", ev(InventoryReserved), Some("=")),
        ("PENDING_REVIEW", ev(InventoryReservationFailed), Some("=")),
        ("PENDING_REVIEW", ev(PaymentAuthorized), Some("=")),
        ("PENDING_REVIEW", ev(PaymentFailed), Some("=")),
        ("PENDING_REVIEW", "timer.payment_timeout".into(), None),
        ("PENDING_REVIEW", "cancel.requested".into(), Some("CANCELLED")),
        ("PENDING_REVIEW", "reservation.retry.requested".into(), Some("RESERVING_INVENTORY")),
        ("COMPLETED", ev(InventoryReserved), Some("=")),
        ("COMPLETED", ev(InventoryReservationFailed), Some("=")),
        ("COMPLETED", ev(PaymentAuthorized), Some("=")),
        ("COMPLETED", ev(PaymentFailed), Some("=")),
        ("COMPLETED", "timer.payment_timeout".into(), Some("=")),
        ("COMPLETED", "cancel.requested".into(), Some("CANCELLED")),
        ("COMPLETED", "reservation.retry.requested".into(), None),
        ("CANCELLED", ev(InventoryReserved), Some("CANCELLED")),
        ("CANCELLED", ev(InventoryReservationFailed), Some("=")),
        ("CANCELLED", ev(PaymentAuthorized), Some("CANCELLED")),
        ("CANCELLED", ev(PaymentFailed), Some("=")),
        ("CANCELLED", "timer.payment_timeout".into(), Some("=")),
        ("CANCELLED", "cancel.requested".into(), Some("=")),
        ("CANCELLED", "reservation.retry.requested".into(), Some("=")),
    ];
    // The table covers every state and every known event exactly once.
    assert_eq!(table.len(), d.states.len() * d.known_events().len());
    for (state, event_name, expected) in &table {
        let event = all_events().into_iter().find(|e| &e.name() == event_name).unwrap();
        let inst = instance_in(&d, state);
        let got = engine::transition(&d, &inst, &event, t0());
        match (expected, got) {
            (Some("="), Ok(t)) => {
                assert_eq!(t.outcome, Outcome::Ignored, "{state} + {event_name}");
                assert_eq!(t.instance, inst, "ignored events change nothing");
                assert!(t.effects.is_empty());
            }
            (Some(to), Ok(t)) => {
                assert!(
                    matches!(&t.outcome, Outcome::Applied { to: x, .. } if x == to),
                    "{state} + {event_name}: {:?}",
                    t.outcome
                );
                assert_eq!(t.instance.state, *to);
                assert_eq!(t.instance.version, inst.version.next());
            }
            (None, Err(Rejection::NotAccepted { state: s, event: e })) => {
                assert_eq!((&s, &e), (&state.to_string(), event_name));
            }
            (exp, got) => panic!("{state} + {event_name}: expected {exp:?}, got {got:?}"),
        }
    }
}

#[test]
fn start_sends_the_reserve_command_with_a_deterministic_id() {
    let d = def();
    let (inst, effects) = engine::start(&d, OID, facts(), t0()).unwrap();
    assert_eq!(inst.state, "RESERVING_INVENTORY");
    assert_eq!(inst.definition_version, 1);
    assert_eq!(published(&effects), vec![(MessageKind::InventoryReserve, "42:reserve_inventory:reserve:1".into())]);
    let Effect::Publish(Message::InventoryReserve(cmd)) = &effects[0] else { panic!() };
    assert_eq!(cmd.items, vec![SkuQty { sku: "A".into(), qty: 2 }, SkuQty { sku: "B".into(), qty: 1 }]);
    assert_eq!(cmd.event_id, event_id("42:reserve_inventory:reserve:1"));
}

#[test]
fn happy_path_confirms_and_disarms_the_timer() {
    let d = def();
    let (inst, _) = engine::start(&d, OID, facts(), t0()).unwrap();
    let t = engine::transition(&d, &inst, &reserved(), t0()).unwrap();
    assert_eq!(published(&t.effects), vec![(MessageKind::PaymentAuthorize, "42:authorize_payment:authorize:1".into())]);
    let due = t.effects.iter().find_map(|e| match e {
        Effect::ArmTimer { name, due_at } if name == "payment_timeout" => Some(*due_at),
        _ => None,
    });
    assert_eq!(due, Some(t0() + chrono::Duration::minutes(15)));
    let Some(Effect::Publish(Message::PaymentAuthorize(p))) =
        t.effects.iter().find(|e| matches!(e, Effect::Publish(_)))
    else {
        panic!()
    };
    assert_eq!((p.amount.as_str(), p.currency.as_str(), p.payment_intent_id.as_str()), ("39.98", "EUR", "pi-42-1"));

    let t2 = engine::transition(&d, &t.instance, &authorized(), t0()).unwrap();
    assert_eq!(t2.instance.state, "COMPLETED");
    assert!(t2.effects.contains(&Effect::CancelTimer { name: "payment_timeout".into() }));
    assert!(t2.effects.contains(&Effect::SetOrderStatus {
        to: OrderStatus::Confirmed,
        reason_code: Some("PAYMENT_AUTHORIZED".into()),
        comment: None
    }));
    assert!(published(&t2.effects).is_empty());
}

#[test]
fn payment_failure_releases_inventory_only() {
    let d = def();
    let inst = instance_in(&d, "AWAITING_PAYMENT");
    let t = engine::transition(&d, &inst, &payment_failed(), t0()).unwrap();
    assert_eq!(published(&t.effects), vec![(MessageKind::InventoryRelease, "42:reserve_inventory:release:1".into())]);
    assert!(t.effects.contains(&Effect::CancelTimer { name: "payment_timeout".into() }));
    assert!(
        matches!(&t.effects[0], Effect::SetOrderStatus { to: OrderStatus::Cancelled, reason_code: Some(r), .. } if r == "PAYMENT_FAILED")
    );
}

#[test]
fn payment_timeout_releases_inventory_and_voids_the_intent_newest_first() {
    let d = def();
    let inst = instance_in(&d, "AWAITING_PAYMENT");
    let t = engine::transition(&d, &inst, &timer(), t0()).unwrap();
    assert_eq!(
        published(&t.effects),
        vec![
            (MessageKind::PaymentVoid, "42:authorize_payment:void:1".into()),
            (MessageKind::InventoryRelease, "42:reserve_inventory:release:1".into()),
        ]
    );
    let Some(Effect::Publish(Message::PaymentVoid(v))) =
        t.effects.iter().find(|e| matches!(e, Effect::Publish(Message::PaymentVoid(_))))
    else {
        panic!()
    };
    assert_eq!((v.payment_intent_id.as_str(), v.reason_code.as_str()), ("pi-42-1", "PAYMENT_TIMEOUT"));
    assert!(
        matches!(&t.effects[0], Effect::SetOrderStatus { to: OrderStatus::Cancelled, reason_code: Some(r), .. } if r == "PAYMENT_TIMEOUT")
    );
}

#[test]
fn reservation_failure_backorders_each_short_item_releases_and_alerts() {
    let d = def();
    let (inst, _) = engine::start(&d, OID, facts(), t0()).unwrap();
    let t = engine::transition(&d, &inst, &reservation_failed(), t0()).unwrap();
    assert_eq!(t.instance.state, "PENDING_REVIEW");
    let kinds: Vec<MessageKind> = published(&t.effects).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        vec![
            MessageKind::InventoryRelease,
            MessageKind::OrderItemBackordered,
            MessageKind::OrderItemBackordered,
            MessageKind::OrderAttentionRequired
        ]
    );
    let skus: Vec<String> = t
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(Message::OrderItemBackordered(b)) => {
                Some(format!("{}:{}/{}", b.sku, b.available_qty, b.requested_qty))
            }
            _ => None,
        })
        .collect();
    assert_eq!(skus, vec!["A:1/2", "B:0/1"]);
    assert!(t.effects.iter().any(|e| matches!(e, Effect::Alert { code, .. } if code == "RESERVATION_FAILED")));
    assert!(matches!(&t.effects[0], Effect::SetOrderStatus { to: OrderStatus::PendingReview, .. }));

    // An operator retries: a new reservation attempt with a new command id.
    let t2 = engine::transition(&d, &t.instance, &manual("reservation.retry.requested"), t0()).unwrap();
    assert_eq!(t2.instance.state, "RESERVING_INVENTORY");
    assert_eq!(published(&t2.effects), vec![(MessageKind::InventoryReserve, "42:reserve_inventory:reserve:2".into())]);
}

#[test]
fn late_payment_after_cancellation_is_voided_with_a_new_command_id() {
    let d = def();
    let inst = instance_in(&d, "AWAITING_PAYMENT");
    let cancelled = engine::transition(&d, &inst, &timer(), t0()).unwrap().instance;
    let t = engine::transition(&d, &cancelled, &authorized(), t0()).unwrap();
    assert_eq!(t.instance.state, "CANCELLED");
    assert_eq!(published(&t.effects), vec![(MessageKind::PaymentVoid, "42:authorize_payment:void:2".into())]);
    assert!(!t.effects.iter().any(|e| matches!(e, Effect::SetOrderStatus { .. })), "the order stays as it is");
}

#[test]
fn cancel_of_a_completed_order_compensates_everything() {
    let d = def();
    let inst = instance_in(&d, "AWAITING_PAYMENT");
    let done = engine::transition(&d, &inst, &authorized(), t0()).unwrap().instance;
    let t = engine::transition(&d, &done, &manual("cancel.requested"), t0()).unwrap();
    let kinds: Vec<_> = published(&t.effects).into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, vec![MessageKind::PaymentVoid, MessageKind::InventoryRelease]);
}

#[test]
fn manual_reason_and_comment_reach_the_order_status() {
    let d = def();
    let inst = instance_in(&d, "AWAITING_PAYMENT");
    let ev = Event {
        id: "m".into(),
        order_id: OID,
        body: EventBody::Manual {
            name: "cancel.requested".into(),
            actor: "support:bob".into(),
            reason_code: Some("CUSTOMER_REQUEST".into()),
            comment: Some("called in".into()),
        },
    };
    let t = engine::transition(&d, &inst, &ev, t0()).unwrap();
    assert_eq!(
        t.effects[0],
        Effect::SetOrderStatus {
            to: OrderStatus::Cancelled,
            reason_code: Some("CUSTOMER_REQUEST".into()),
            comment: Some("called in".into())
        }
    );
}

#[test]
fn transitions_are_deterministic() {
    let d = def();
    let inst = instance_in(&d, "AWAITING_PAYMENT");
    let a = engine::transition(&d, &inst, &timer(), t0()).unwrap();
    let b = engine::transition(&d, &inst, &timer(), t0()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn events_for_another_order_or_definition_are_rejected() {
    let d = def();
    let inst = instance_in(&d, "AWAITING_PAYMENT");
    let mut ev = authorized();
    ev.order_id = crate::domain::ids::oid(7);
    assert!(matches!(engine::transition(&d, &inst, &ev, t0()), Err(Rejection::WrongOrder { .. })));
    let mut other = inst.clone();
    other.definition_version = 9;
    assert!(matches!(engine::transition(&d, &other, &authorized(), t0()), Err(Rejection::WrongDefinition { .. })));
    let mut lost = inst;
    lost.state = "GONE".into();
    assert!(matches!(engine::transition(&d, &lost, &authorized(), t0()), Err(Rejection::UnknownState { .. })));
}

#[test]
fn retry_current_step_keeps_the_command_id() {
    let d = def();
    let inst = instance_in(&d, "AWAITING_PAYMENT");
    let m = engine::retry_current_step(&d, &inst, t0(), 1).unwrap();
    assert_eq!(command_of(&m).as_deref(), Some("42:authorize_payment:authorize:1"));
    assert_ne!(m.event_id(), event_id("42:authorize_payment:authorize:1"), "a new event id for the outbox");
    let m2 = engine::retry_current_step(&d, &inst, t0(), 2).unwrap();
    assert_ne!(m.event_id(), m2.event_id());
    let done = engine::transition(&d, &inst, &authorized(), t0()).unwrap().instance;
    assert!(matches!(engine::retry_current_step(&d, &done, t0(), 1), Err(Rejection::NoCurrentStep { .. })));
}

/// PENDING_REVIEW names the reservation step, but its failure already came:
/// re-sending the failed reserve command (same id) would be discarded.
#[test]
fn a_step_whose_reply_already_came_is_not_retried() {
    let d = def();
    let review = instance_in(&d, "PENDING_REVIEW");
    assert_eq!(review.state, "PENDING_REVIEW");
    assert!(
        matches!(engine::retry_current_step(&d, &review, t0(), 1), Err(Rejection::StepNotAwaited { .. })),
        "{:?}",
        engine::retry_current_step(&d, &review, t0(), 1)
    );
    let reserving = instance_in(&d, "RESERVING_INVENTORY");
    assert!(engine::retry_current_step(&d, &reserving, t0(), 1).is_ok(), "still waiting for its reply");
}

#[test]
fn mermaid_shows_every_transition() {
    let d = def();
    let g = graph::mermaid(&d);
    assert!(g.starts_with("stateDiagram-v2\n"));
    assert!(g.contains("[*] --> RESERVING_INVENTORY: order.created.v1 / send inventory.reserve.v1"));
    assert!(g.contains("AWAITING_PAYMENT --> CANCELLED: timer.payment_timeout / compensate all, order CANCELLED"));
    let edges = g.lines().filter(|l| l.contains("-->") && !l.contains("[*]")).count();
    assert_eq!(edges, d.states.values().map(|s| s.transitions().count()).sum::<usize>());
}

// ------------------------------------------------------------ validation

fn errors(text: &str) -> Vec<String> {
    match parse::parse(Path::new("t.toml"), text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn edited(from: &str, to: &str) -> String {
    assert!(ORDER_TOML.contains(from), "fixture text {from:?} not found");
    ORDER_TOML.replacen(from, to, 1)
}

fn line_of(needle: &str, text: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn unknown_state_is_reported_with_file_and_line() {
    let text = edited("to = \"COMPLETED\"", "to = \"COMPLETD\"");
    let errs = errors(&text);
    let line = line_of("COMPLETD", &text);
    assert!(
        errs.iter().any(|e| e.starts_with(&format!("t.toml:{line}:")) && e.contains("unknown state \"COMPLETD\"")),
        "{errs:?}"
    );
}

#[test]
fn unknown_event_is_reported() {
    let text = edited("event = \"payment.failed.v1\"", "event = \"payment.declined.v1\"");
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.contains("unknown event \"payment.declined.v1\"")), "{errs:?}");
}

#[test]
fn step_without_compensation_is_reported() {
    let text = edited("compensation = \"payment.void.v1\"\n", "");
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.contains("step authorize_payment has no compensation")), "{errs:?}");
}

#[test]
fn unreachable_state_is_reported() {
    let text = format!("{ORDER_TOML}\n[states.LIMBO]\nterminal = true\n");
    let errs = errors(&text);
    let line = line_of("[states.LIMBO]", &text);
    assert!(
        errs.iter().any(
            |e| e == &format!("t.toml:{line}: state LIMBO is unreachable from the start state RESERVING_INVENTORY")
        ),
        "{errs:?}"
    );
}

#[test]
fn waiting_state_with_no_way_out_is_reported() {
    // PENDING_REVIEW loses both exits.
    let text = edited(
        "  event = \"reservation.retry.requested\"\n  to = \"RESERVING_INVENTORY\"",
        "  event = \"reservation.retry.requested\"\n  to = \"PENDING_REVIEW\"",
    );
    let text = text.replacen(
        "  [[states.PENDING_REVIEW.on]]\n  event = \"cancel.requested\"\n  to = \"CANCELLED\"",
        "  [[states.PENDING_REVIEW.on]]\n  event = \"cancel.requested\"\n  to = \"PENDING_REVIEW\"",
        1,
    );
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.contains("state PENDING_REVIEW is a waiting state with no way out")), "{errs:?}");
}

#[test]
fn timer_that_can_fire_unhandled_is_reported() {
    // COMPLETED no longer ignores the timer and payment.authorized no longer disarms it.
    let text = edited("disarm = [\"payment_timeout\"]\n", "");
    let text = text.replacen(
        "\"payment.failed.v1\", \"timer.payment_timeout\"]\n\n  [[states.COMPLETED.on]]",
        "\"payment.failed.v1\"]\n\n  [[states.COMPLETED.on]]",
        1,
    );
    let errs = errors(&text);
    assert!(
        errs.iter().any(|e| e.contains("state COMPLETED can be entered with timer payment_timeout armed")),
        "{errs:?}"
    );
}

#[test]
fn syntax_errors_and_unknown_keys_have_lines() {
    let errs = errors("name = \"order\"\nversion = 1\n[start\n");
    assert!(errs[0].starts_with("t.toml:3:"), "{errs:?}");
    let text = edited("max_dwell = \"2m\"", "max_dwel = \"2m\"");
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.contains("max_dwel")), "{errs:?}");
}

#[test]
fn bad_values_are_reported() {
    assert!(errors(&edited("after = \"15m\"", "after = \"soon\"")).iter().any(|e| e.contains("timer payment_timeout")));
    assert!(
        errors(&edited("order_status = \"CONFIRMED\"", "order_status = \"DONE\""))
            .iter()
            .any(|e| e.contains("unknown order status"))
    );
    assert!(
        errors(&edited("run = \"authorize_payment\"", "run = \"charge\""))
            .iter()
            .any(|e| e.contains("unknown step \"charge\""))
    );
    assert!(
        errors(&edited("arm = [\"payment_timeout\"]", "arm = [\"pay_timeout\"]"))
            .iter()
            .any(|e| e.contains("unknown timer \"pay_timeout\""))
    );
    assert!(
        errors(&edited("command = \"payment.authorize.v1\"", "command = \"payment.capture.v1\""))
            .iter()
            .any(|e| e.contains("unknown command"))
    );
}

#[test]
fn timer_overrides_apply_and_unknown_names_fail() {
    let mut d = def();
    let mut o = std::collections::BTreeMap::new();
    o.insert("payment_timeout".to_string(), std::time::Duration::from_secs(2));
    d.override_timers(&o).unwrap();
    assert_eq!(d.timers["payment_timeout"], std::time::Duration::from_secs(2));
    o.insert("nope".to_string(), std::time::Duration::from_secs(2));
    assert!(d.override_timers(&o).unwrap_err().contains("nope"));
}

/// The vocabulary and the engine cannot disagree: every command and
/// compensation the vocabulary declares is built from the saga's facts, with
/// the command id, the event id, the order's region and (for compensations)
/// the reason filled in.
#[test]
fn every_command_builds_from_saga_facts() {
    let facts = engine::CommandFacts {
        event_id: "e-1".into(),
        order_id: OID,
        occurred_at: ts(),
        tenant_region: "eu-west",
        command_id: "42:step:act:1",
        items: vec![SkuQty { sku: "SKU-1".into(), qty: 2 }],
        payment_intent_id: engine::payment_intent_id(OID, 1),
        customer_id: "c-1",
        amount: "10.00".into(),
        currency: "EUR",
        reason_code: "TEST_REASON",
    };
    let commands: Vec<MessageKind> = MessageKind::ALL.iter().copied().filter(|k| k.command().is_some()).collect();
    assert!(commands.len() >= 4, "the vocabulary lost its commands: {commands:?}");
    for kind in commands {
        let m = facts.build(kind).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(m.kind(), kind);
        assert_eq!((m.event_id(), m.order_id(), m.tenant_region()), ("e-1", OID.wire(), "eu-west"));
        let json = m.to_json().unwrap();
        assert_eq!(json["command_id"], "42:step:act:1", "{kind} carries no command id");
        if matches!(kind.role(), Role::Compensation(_)) {
            assert_eq!(json["reason_code"], "TEST_REASON", "{kind} carries no reason");
        }
    }
    // Events and replies are not commands.
    for &kind in MessageKind::ALL.iter().filter(|k| k.command().is_none()) {
        assert!(
            matches!(kind.role(), Role::Event { .. } | Role::Reply),
            "{kind} has neither a command nor an event role"
        );
    }
}

// ------------------------------------------------ correlation and guards

fn reserved_for(cmd: Option<&str>) -> Event {
    msg_event(
        &format!("e-res-{}", cmd.unwrap_or("none")),
        Message::from(InventoryReserved {
            event_id: "x".into(),
            order_id: OID.wire(),
            occurred_at: ts(),
            tenant_region: "eu".into(),
            command_id: cmd.map(str::to_owned),
        }),
    )
}

fn failed_for(cmd: Option<&str>) -> Event {
    let Event { body: EventBody::Message(Message::InventoryReservationFailed(mut f)), .. } = reservation_failed()
    else {
        unreachable!()
    };
    f.command_id = cmd.map(str::to_owned);
    msg_event(&format!("e-rf-{}", cmd.unwrap_or("none")), Message::from(f))
}

fn authorized_with(intent: &str, amount: &str, currency: &str) -> Event {
    msg_event(
        "e-auth-x",
        Message::from(PaymentAuthorized {
            event_id: "e-auth-x".into(),
            order_id: OID.wire(),
            occurred_at: ts(),
            tenant_region: "eu".into(),
            payment_intent_id: intent.into(),
            amount: amount.into(),
            currency: currency.into(),
        }),
    )
}

/// Start → reserve #1 fails → PENDING_REVIEW → operator retry → reserve #2 out.
fn waiting_on_second_reservation(d: &Definition) -> Instance {
    let (inst, _) = engine::start(d, OID, facts(), t0()).unwrap();
    let inst =
        engine::transition(d, &inst, &failed_for(Some("42:reserve_inventory:reserve:1")), t0()).unwrap().instance;
    assert_eq!(inst.state, "PENDING_REVIEW");
    let t = engine::transition(d, &inst, &manual("reservation.retry.requested"), t0()).unwrap();
    assert_eq!(published(&t.effects), vec![(MessageKind::InventoryReserve, "42:reserve_inventory:reserve:2".into())]);
    t.instance
}

#[test]
fn a_reply_to_an_earlier_command_moves_nothing() {
    let d = def();
    let inst = waiting_on_second_reservation(&d);
    for stale in [
        reserved_for(Some("42:reserve_inventory:reserve:1")),
        failed_for(Some("42:reserve_inventory:reserve:1")),
        // Never sent.
        reserved_for(Some("42:reserve_inventory:reserve:3")),
        // Without a command id, a reply cannot say which of two commands it answers.
        reserved_for(None),
    ] {
        let t = engine::transition(&d, &inst, &stale, t0()).unwrap();
        assert!(
            matches!(&t.outcome, Outcome::Stale { field: "command_id", expected, .. } if expected == "42:reserve_inventory:reserve:2"),
            "{:?}",
            t.outcome
        );
        assert_eq!(t.instance, inst, "a stale reply changes nothing");
        assert!(t.effects.is_empty(), "and sends nothing");
    }
    // The answer to the command the saga waits for moves it.
    let t = engine::transition(&d, &inst, &reserved_for(Some("42:reserve_inventory:reserve:2")), t0()).unwrap();
    assert_eq!(t.instance.state, "AWAITING_PAYMENT");
}

#[test]
fn a_reply_without_a_command_id_is_taken_while_the_step_ran_once() {
    let d = def();
    let (inst, _) = engine::start(&d, OID, facts(), t0()).unwrap();
    let t = engine::transition(&d, &inst, &reserved_for(None), t0()).unwrap();
    assert_eq!(t.instance.state, "AWAITING_PAYMENT");
}

#[test]
fn a_payment_reply_for_another_intent_moves_nothing() {
    let d = def();
    let inst = instance_in(&d, "AWAITING_PAYMENT");
    let t = engine::transition(&d, &inst, &authorized_with("pi-42-2", "39.98", "EUR"), t0()).unwrap();
    assert!(matches!(&t.outcome, Outcome::Stale { field: "payment_intent_id", .. }), "{:?}", t.outcome);
    assert!(t.effects.is_empty());
    // In a state that has not sent the command at all.
    let inst = instance_in(&d, "RESERVING_INVENTORY");
    let inst = Instance { state: "AWAITING_PAYMENT".into(), ..inst };
    let t = engine::transition(&d, &inst, &authorized_with("pi-42-1", "39.98", "EUR"), t0()).unwrap();
    assert!(matches!(&t.outcome, Outcome::Stale { .. }), "{:?}", t.outcome);
}

#[test]
fn an_authorization_that_does_not_match_the_order_cancels_and_voids_it() {
    let d = def();
    let inst = instance_in(&d, "AWAITING_PAYMENT");
    for (amount, currency) in [("0.01", "USD"), ("39.98", "USD"), ("39.97", "EUR"), ("39.99", "EUR"), ("abc", "EUR")] {
        let t = engine::transition(&d, &inst, &authorized_with("pi-42-1", amount, currency), t0()).unwrap();
        assert_eq!(t.instance.state, "CANCELLED", "{amount} {currency}");
        assert!(matches!(&t.outcome, Outcome::Applied { reason: Some(r), .. } if r == "PAYMENT_MISMATCH"));
        assert!(t.effects.contains(&Effect::SetOrderStatus {
            to: OrderStatus::Cancelled,
            reason_code: Some("PAYMENT_MISMATCH".into()),
            comment: None
        }));
        let sent: Vec<MessageKind> = published(&t.effects).into_iter().map(|(k, _)| k).collect();
        assert!(sent.contains(&MessageKind::PaymentVoid), "the authorization is voided: {sent:?}");
        assert!(sent.contains(&MessageKind::InventoryRelease), "the stock is released: {sent:?}");
        assert!(t.effects.iter().any(|e| matches!(e, Effect::Alert { code, .. } if code == "PAYMENT_MISMATCH")));
        assert!(t.effects.contains(&Effect::CancelTimer { name: "payment_timeout".into() }));
    }
    // The same amount written differently is the same amount.
    let t = engine::transition(&d, &inst, &authorized_with("pi-42-1", "39.980", "EUR"), t0()).unwrap();
    assert_eq!(t.instance.state, "COMPLETED");
}

#[test]
fn guards_and_correlation_are_checked_at_load_time() {
    let with = |from: &str, to: &str| ORDER_TOML.replacen(from, to, 1);
    let cases = [
        (with("correlate = \"command_id\"", "correlate = \"order_id\""), "correlate must be"),
        (with("correlate = \"payment_intent_id\"", "correlate = \"command_id\""), "has no field command_id"),
        (with("replies = [\"payment.authorized.v1\", \"payment.failed.v1\"]\n", ""), "go together"),
        (with("amount = \"order.total_amount\"", "amount = \"order.price\""), "unknown fact"),
        (with("amount = \"order.total_amount\"", "amonut = \"order.total_amount\""), "has no field \"amonut\""),
        (with("[states.AWAITING_PAYMENT.on.otherwise]", "[states.AWAITING_PAYMENT.on.otherwize]"), "unknown field"),
        (
            with("require = { amount = \"order.total_amount\", currency = \"order.currency\" }\n", ""),
            "otherwise needs a require",
        ),
    ];
    for (text, expected) in cases {
        let e = parse::parse(Path::new("x.toml"), &text).expect_err(expected).to_string();
        assert!(e.contains(expected), "expected {expected:?} in: {e}");
    }
}

#[test]
fn order_facts_keep_their_stored_form() {
    // `saga_instances.data` written before the total became `Money` reads back,
    // and is written the same way: the currency code and a decimal string.
    let stored = serde_json::json!({
        "customer_id": "c-1", "tenant_region": "eu", "currency": "EUR", "total_amount": "39.98",
        "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}],
    });
    let f: OrderFacts = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(f, facts());
    assert_eq!(f.total.to_string(), "39.98");
    assert_eq!(serde_json::to_value(&f).unwrap(), stored);
    let jpy = serde_json::json!({"customer_id": "c", "tenant_region": "r", "currency": "JPY", "total_amount": "1500", "items": []});
    assert_eq!(
        serde_json::from_value::<OrderFacts>(jpy.clone()).map(|f| serde_json::to_value(f).unwrap()).unwrap(),
        jpy
    );
    let bad = serde_json::json!({"customer_id": "c", "tenant_region": "r", "currency": "XXX", "total_amount": "1", "items": []});
    assert!(serde_json::from_value::<OrderFacts>(bad).is_err(), "not a currency");
}
