use crate::domain::ids::oid;
use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::contracts::Message;
use crate::contracts::PaymentAuthorized;
use crate::saga::fixtures::instance;
use crate::saga::model::{Event, EventBody, Outcome};
use crate::saga::parse::{parse, parse_all};

const V1: &str = include_str!("../../../sagas/order.toml");
const V2: &str = include_str!("../../../sagas/examples/order-v2.toml");

fn def(text: &str) -> Definition {
    parse(std::path::Path::new("order.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

fn both() -> Result<Vec<Definition>, String> {
    let files = vec![("sagas/order.toml".into(), V1.to_owned()), ("sagas/order-v2.toml".into(), V2.to_owned())];
    parse_all(std::path::Path::new("sagas"), &files).map_err(|e| e.to_string())
}

/// The example's version 2 with its migration section replaced by `section`.
fn v2_with(section: &str) -> String {
    let start = V2.find("[migrate.from.1]").unwrap_or_else(|| panic!("the example has a migration"));
    let end = start + V2[start..].find("\n\n").unwrap_or_else(|| panic!("a blank line after it"));
    format!("{}{section}{}", &V2[..start], &V2[end..])
}

fn check_errors(section: &str) -> Vec<String> {
    let (old, new) = (def(V1), def(&v2_with(section)));
    check(&old, &new, &new.migrations[&1])
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).single().unwrap_or_else(|| panic!("a valid time"))
}

#[test]
fn the_example_version_2_loads_beside_version_1_with_its_migration() {
    let defs = both().unwrap_or_else(|e| panic!("{e}"));
    let v2 = defs.iter().find(|d| d.version == 2).unwrap_or_else(|| panic!("version 2"));
    let m = &v2.migrations[&1];
    assert_eq!(m.states["AWAITING_PAYMENT"], "AWAITING_AUTHORIZATION");
    assert!(m.refuse.contains_key("PENDING_REVIEW"));
}

#[test]
fn every_mistake_in_a_migration_is_reported_at_load_time() {
    let unmapped = check_errors("[migrate.from.1]\nstates = { RESERVING_INVENTORY = \"RESERVING_INVENTORY\" }");
    assert_eq!(unmapped.len(), 2, "{unmapped:?}");
    assert!(unmapped.iter().any(|e| e.contains("state AWAITING_PAYMENT of version 1 is in neither")), "{unmapped:?}");
    assert!(unmapped.iter().any(|e| e.contains("state PENDING_REVIEW of version 1 is in neither")), "{unmapped:?}");

    let wrong = check_errors(
        "[migrate.from.1]\nstates = { RESERVING_INVENTORY = \"RESERVING\", AWAITING_PAYMENT = \"COMPLETED\", \
         PENDING_REVIEW = \"AWAITING_AUTHORIZATION\", COMPLETED = \"COMPLETED\", NOPE = \"PENDING_REVIEW\" }",
    );
    let expect = [
        "RESERVING_INVENTORY goes to RESERVING, which version 2 does not have",
        "AWAITING_PAYMENT goes to COMPLETED, a terminal state",
        "PENDING_REVIEW waits on step reserve_inventory in version 1, AWAITING_AUTHORIZATION on step authorize_payment",
        "state COMPLETED is terminal in version 1",
        "version 1 has no state NOPE",
    ];
    for e in expect {
        assert!(wrong.iter().any(|w| w.contains(e)), "{e} not in {wrong:?}");
    }

    let both_ways = check_errors(
        "[migrate.from.1]\nstates = { RESERVING_INVENTORY = \"RESERVING_INVENTORY\", AWAITING_PAYMENT = \
         \"AWAITING_AUTHORIZATION\", PENDING_REVIEW = \"PENDING_REVIEW\" }\nrefuse = { PENDING_REVIEW = \"no\" }",
    );
    assert_eq!(both_ways, vec!["migrate.from.1: state PENDING_REVIEW is both mapped and refused".to_owned()]);
}

#[test]
fn a_step_that_changed_its_messages_stops_the_migration_at_load_time() {
    // Version 2 answers reservations by payment intent instead of command id.
    let text = V2.replacen("correlate = \"command_id\"", "correlate = \"payment_intent_id\"", 1);
    let files = vec![("sagas/order.toml".into(), V1.to_owned()), ("sagas/order-v2.toml".into(), text)];
    let errors = parse_all(std::path::Path::new("sagas"), &files).err().map(|e| e.to_string()).unwrap_or_default();
    // (the reservation replies carry no payment_intent_id: the file itself is refused too)
    assert!(!errors.is_empty());

    let (old, mut new) = (def(V1), def(V2));
    if let Some(s) = new.steps.get_mut("authorize_payment") {
        s.compensation = crate::contracts::MessageKind::InventoryRelease;
    }
    let errors = check(&old, &new, &new.migrations[&1]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("step authorize_payment of version 1 is not in version 2 with the same"), "{errors:?}");
}

#[test]
fn a_migration_from_a_version_that_is_not_older_is_refused_by_the_parser() {
    let text = V2.replacen("[migrate.from.1]", "[migrate.from.2]", 1);
    let e = parse(std::path::Path::new("v2.toml"), &text).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("v2.toml:13: migrate.from.2: the version to migrate from must be older than this one (2)"),
        "{e}"
    );
}

fn awaiting_payment(old: &Definition) -> (Instance, Vec<Armed>) {
    let mut inst = instance(old, oid(42), "AWAITING_PAYMENT", t0());
    inst.version = crate::domain::SagaVersion(4);
    let timers = vec![Armed {
        name: "payment_timeout".into(),
        due: t0() + Duration::minutes(15),
        armed_version: crate::domain::SagaVersion(4),
    }];
    (inst, timers)
}

#[test]
fn a_saga_moves_to_the_mapped_state_keeping_its_correlation_and_its_timer_counts_from_when_it_was_armed() {
    let (old, new) = (def(V1), def(V2));
    let (inst, timers) = awaiting_payment(&old);
    let m = migrate(&old, &new, &inst, &timers).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.from_state, "AWAITING_PAYMENT");
    assert_eq!(m.instance.state, "AWAITING_AUTHORIZATION");
    assert_eq!((m.instance.definition_version, m.instance.version.get()), (2, 5));
    assert_eq!(m.instance.data, inst.data, "steps and command counts move unchanged: the same ids are awaited");
    assert_eq!(m.instance.state_entered_at, inst.state_entered_at);
    // 15 minutes in version 1, 20 in version 2: five minutes later, same firing id.
    assert_eq!(
        m.timers,
        vec![TimerChange::Moved {
            name: "payment_timeout".into(),
            from: t0() + Duration::minutes(15),
            to: t0() + Duration::minutes(20),
            armed_version: crate::domain::SagaVersion(4)
        }]
    );

    // The reply to the command it was waiting for completes it on version 2.
    let reply = Event {
        id: "e-auth".into(),
        order_id: oid(42),
        body: EventBody::Message(Message::from(PaymentAuthorized {
            event_id: "e-auth".into(),
            order_id: 42,
            occurred_at: crate::contracts::TimestampMicros(0),
            tenant_region: "eu-west".into(),
            payment_intent_id: "pi-42-1".into(),
            amount: "10.00".into(),
            currency: "EUR".into(),
        })),
    };
    let t = crate::saga::transition(&new, &m.instance, &reply, t0()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        t.outcome,
        Outcome::Applied {
            from: "AWAITING_AUTHORIZATION".into(),
            to: "COMPLETED".into(),
            reason: Some("PAYMENT_AUTHORIZED".into())
        }
    );
}

#[test]
fn sagas_are_refused_where_the_new_version_says_so_or_cannot_take_them() {
    let (old, new) = (def(V1), def(V2));
    let review = instance(&old, oid(7), "PENDING_REVIEW", t0());
    assert_eq!(
        migrate(&old, &new, &review, &[]),
        Err(Refused::StateRefused {
            to: 2,
            state: "PENDING_REVIEW".into(),
            why: "a review started on version 1 is finished there".into()
        })
    );
    let done = instance(&old, oid(7), "COMPLETED", t0());
    assert_eq!(migrate(&old, &new, &done, &[]), Err(Refused::Finished { state: "COMPLETED".into() }));
    let (inst, _) = awaiting_payment(&old);
    assert_eq!(migrate(&old, &old, &inst, &[]), Err(Refused::NotNewer { runs: 1, to: 1 }));
    let mut v3 = def(V1);
    v3.version = 3;
    assert_eq!(migrate(&old, &v3, &inst, &[]), Err(Refused::NoMigration { from: 1, to: 3 }));
    let on_v2 = instance(&new, oid(7), "AWAITING_AUTHORIZATION", t0());
    assert_eq!(migrate(&old, &new, &on_v2, &[]), Err(Refused::WrongDefinition { runs: 2, old: 1 }));
}

#[test]
fn timers_the_new_state_does_not_expect_are_disarmed_and_those_every_way_in_arms_are_armed() {
    let (old, mut new) = (def(V1), def(V2));
    // Version 2 without the payment timeout in AWAITING_AUTHORIZATION, and
    // with a reservation timeout armed on every way into RESERVING_INVENTORY.
    if let Some(s) = new.states.get_mut("AWAITING_AUTHORIZATION") {
        s.on.remove("timer.payment_timeout");
    }
    new.timers.insert("reservation_timeout".into(), std::time::Duration::from_secs(120));
    new.start.arm.push("reservation_timeout".into());
    if let Some(t) = new.states.get_mut("PENDING_REVIEW").and_then(|s| s.on.get_mut("reservation.retry.requested")) {
        t.arm.push("reservation_timeout".into());
    }
    let (inst, timers) = awaiting_payment(&old);
    let m = migrate(&old, &new, &inst, &timers).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        m.timers,
        vec![TimerChange::Disarmed {
            name: "payment_timeout".into(),
            why: "state AWAITING_AUTHORIZATION of version 2 does not expect it".into()
        }]
    );
    let reserving = instance(&old, oid(8), "RESERVING_INVENTORY", t0());
    let m = migrate(&old, &new, &reserving, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        m.timers,
        vec![TimerChange::Armed { name: "reservation_timeout".into(), due: t0() + Duration::minutes(2) }]
    );
    // Not every way in arms it: nothing is armed.
    if let Some(t) = new.states.get_mut("PENDING_REVIEW").and_then(|s| s.on.get_mut("reservation.retry.requested")) {
        t.arm.clear();
    }
    let m = migrate(&old, &new, &reserving, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.timers, vec![]);
}
