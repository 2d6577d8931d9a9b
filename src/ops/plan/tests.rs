//! Every operator action planned on snapshots of the shipped definition:
//! what it writes, what it refuses and why, and which actions the console
//! offers — no database.

use crate::domain::OrderId;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::orchestrator::Source;
use crate::saga::{Catalog, EventBody, parse};

const OID: OrderId = OrderId::new(42).unwrap();

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
}

fn def() -> Arc<Definition> {
    let def = parse::parse(Path::new("sagas/order.toml"), include_str!("../../../sagas/order.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    Catalog::new(vec![def]).unwrap().latest().clone()
}

/// A saga in `state` at version 3 whose two steps ran once, the payment timeout armed.
fn snap(state: &str) -> Snapshot {
    let def = def();
    Snapshot {
        saga: crate::saga::fixtures::instance(&def, OID, state, now()),
        def,
        newer: Vec::new(),
        quarantined: None,
        timers: vec![ArmedTimer {
            name: "payment_timeout".into(),
            armed_version: crate::domain::SagaVersion(2),
            due: now(),
        }],
        parked: Vec::new(),
        retries: 0,
        now: now(),
        trace: TraceContext::new_root(),
    }
}

fn quarantined(mut s: Snapshot, parked: Vec<ParkedEvent>) -> Snapshot {
    s.quarantined = Some("poison event".into());
    s.parked = parked;
    s
}

fn parked(id: u64, event_name: &str, payload: Option<&str>, poison: bool) -> ParkedEvent {
    ParkedEvent {
        id,
        event_id: format!("ev-{id}"),
        event_name: event_name.into(),
        payload: payload.map(str::to_owned),
        traceparent: None,
        poison,
    }
}

const WHO: Actor<'static> = Actor { actor: "ops:alice", reason: "customer called" };

fn refusal(action: Action, s: &Snapshot) -> Refusal {
    plan(&action, s, WHO).expect_err("refused")
}

fn timer(name: &str) -> String {
    name.to_owned()
}

#[test]
fn the_console_offers_exactly_what_the_plans_accept() {
    let waiting = allowed_actions(&snap("AWAITING_PAYMENT"));
    for a in [
        Action::RetryStep,
        Action::Cancel,
        Action::FireTimer { timer: timer("payment_timeout") },
        Action::RescheduleTimer { timer: timer("payment_timeout"), at: None, after: None },
        Action::CancelTimer { timer: timer("payment_timeout") },
    ] {
        assert!(waiting.contains(&a), "{a:?} missing from {waiting:?}");
    }
    assert!(!waiting.contains(&Action::Release), "not quarantined: nothing to release");
    assert!(
        !waiting.contains(&Action::Force { event: "cancel.requested".into() }),
        "cancel is offered as itself, not twice"
    );
    assert!(
        !waiting.contains(&Action::Force { event: "reservation.retry.requested".into() }),
        "AWAITING_PAYMENT does not accept a reservation retry"
    );
    let review = allowed_actions(&snap("PENDING_REVIEW"));
    assert!(review.contains(&Action::Force { event: "reservation.retry.requested".into() }), "{review:?}");
    assert!(!review.contains(&Action::RetryStep), "the reservation already failed: a re-send would change nothing");

    let mut done = snap("COMPLETED");
    done.timers.clear();
    assert_eq!(allowed_actions(&done), vec![Action::Cancel], "a confirmed order can still be cancelled, nothing else");
    let mut cancelled = snap("CANCELLED");
    cancelled.timers.clear();
    assert_eq!(allowed_actions(&cancelled), vec![], "no step to retry, nothing to cancel");

    let mut unknown = snap("NO_SUCH_STATE");
    unknown.timers.clear();
    assert_eq!(allowed_actions(&unknown), vec![]);
}

#[test]
fn a_quarantined_saga_offers_release_first_and_only_what_can_be_replayed() {
    let held = allowed_actions(&quarantined(snap("AWAITING_PAYMENT"), vec![]));
    assert!(held.contains(&Action::Release));
    assert!(!held.contains(&Action::SkipPoison), "no poison event parked");
    assert!(!held.contains(&Action::Cancel) && !held.contains(&Action::RetryStep), "quarantine first: {held:?}");
    assert!(!held.iter().any(|a| matches!(a, Action::FireTimer { .. })));
    assert!(held.contains(&Action::CancelTimer { timer: timer("payment_timeout") }), "disarming moves nothing");

    // An undecodable poison event cannot be replayed: release would be
    // refused, so it is not offered; skipping it is.
    let poisoned = quarantined(snap("AWAITING_PAYMENT"), vec![parked(7, "payment.authorized.v1", None, true)]);
    let offered = allowed_actions(&poisoned);
    assert!(offered.contains(&Action::SkipPoison), "{offered:?}");
    assert!(!offered.contains(&Action::Release), "{offered:?}");
    assert!(refusal(Action::Release, &poisoned).to_string().contains("skip it with skip_poison"));
}

#[test]
fn every_offered_action_is_accepted_and_every_other_refused() {
    let d = def();
    let mut snapshots = Vec::new();
    for state in d.states.keys() {
        snapshots.push(snap(state));
        snapshots.push(quarantined(snap(state), vec![parked(1, "timer.payment_timeout", None, false)]));
    }
    for s in &snapshots {
        let offered = allowed_actions(s);
        let every = [
            Action::RetryStep,
            Action::Cancel,
            Action::Release,
            Action::SkipPoison,
            Action::Force { event: "reservation.retry.requested".into() },
            Action::FireTimer { timer: timer("payment_timeout") },
            Action::CancelTimer { timer: timer("payment_timeout") },
        ];
        for a in every {
            assert_eq!(
                offered.contains(&a),
                plan(&a, s, WHO).is_ok(),
                "{a:?} in {} ({:?})",
                s.saga.state,
                s.quarantined
            );
        }
    }
}

#[test]
fn fire_timer_makes_it_due_now_and_applies_the_sweepers_event() {
    let s = snap("AWAITING_PAYMENT");
    let p = plan(&Action::FireTimer { timer: timer("payment_timeout") }, &s, WHO).unwrap();
    let [Write::TimerDue { timer: t, due }, Write::Apply { events, expect: Expect::AppliedOrIgnored }] = &p.writes[..]
    else {
        panic!("{:?}", p.writes)
    };
    assert_eq!((t.as_str(), *due), ("payment_timeout", now() - chrono::Duration::microseconds(1)));
    let [e] = &events[..] else { panic!("{events:?}") };
    assert_eq!(e.event_id, "timer:42:payment_timeout:2", "the sweeper's id for this arming: one firing, whoever fires");
    assert_eq!(e.event_name, "timer.payment_timeout");
    assert_eq!(e.source, crate::orchestrator::Source::Ops);
    assert_eq!(e.trace.as_ref(), Some(&s.trace));
    assert_eq!(
        refusal(Action::FireTimer { timer: timer("nope") }, &s),
        Refusal::NotAllowed("timer nope is not armed".into())
    );
}

#[test]
fn reschedule_timer_is_judged_by_the_database_clock_and_checks_its_one_argument() {
    let s = snap("AWAITING_PAYMENT");
    let resched = |at: Option<DateTime<Utc>>, after: Option<&str>| Action::RescheduleTimer {
        timer: timer("payment_timeout"),
        at,
        after: after.map(str::to_owned),
    };
    let p = plan(&resched(None, Some("30m")), &s, WHO).unwrap();
    assert!(
        matches!(&p.writes[..], [Write::TimerDue { due, .. }] if *due == now() + chrono::Duration::minutes(30)),
        "{:?}",
        p.writes
    );
    let at = now() + chrono::Duration::days(2);
    assert!(
        matches!(&plan(&resched(Some(at), None), &s, WHO).unwrap().writes[..], [Write::TimerDue { due, .. }] if *due == at)
    );
    for (action, says) in [
        (resched(None, None), "exactly one"),
        (resched(Some(at), Some("1m")), "exactly one"),
        (resched(Some(now() + chrono::Duration::days(400)), None), "366 days"),
        (resched(None, Some("400d")), "after:"),
        (resched(None, Some("soon")), "after:"),
        (resched(None, Some("0s")), "after:"),
    ] {
        let r = refusal(action.clone(), &s);
        assert!(matches!(&r, Refusal::BadRequest(m) if m.contains(says)), "{action:?}: {r:?}");
    }
    let mut unarmed = s;
    unarmed.timers.clear();
    assert!(matches!(refusal(resched(None, None), &unarmed), Refusal::NotAllowed(_)), "the timer is checked first");
}

#[test]
fn cancel_timer_deletes_it_even_while_quarantined() {
    let s = quarantined(snap("AWAITING_PAYMENT"), vec![]);
    let p = plan(&Action::CancelTimer { timer: timer("payment_timeout") }, &s, WHO).unwrap();
    assert!(matches!(&p.writes[..], [Write::DeleteTimer { timer }] if timer == "payment_timeout"));
}

#[test]
fn cancel_delivers_the_definitions_manual_event_with_who_and_why() {
    let s = snap("AWAITING_PAYMENT");
    let p = plan(&Action::Cancel, &s, WHO).unwrap();
    let [Write::Apply { events, expect: Expect::Applied }] = &p.writes[..] else { panic!("{:?}", p.writes) };
    let [e] = &events[..] else { panic!("{events:?}") };
    assert_eq!(e.event_id, "ops:42:3:cancel.requested", "one id per saga version: a retried request is a duplicate");
    match &e.event.as_ref().unwrap().body {
        EventBody::Manual { name, actor, comment, .. } => {
            assert_eq!((name.as_str(), actor.as_str()), ("cancel.requested", "ops:alice"));
            assert_eq!(comment.as_deref(), Some("customer called"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn force_refuses_what_the_definition_or_the_state_does_not_accept() {
    let s = snap("AWAITING_PAYMENT");
    let r = refusal(Action::Force { event: "payment.authorized.v1".into() }, &s);
    assert!(r.to_string().contains("not a manual event") && r.to_string().contains("cancel.requested"), "{r}");
    let r = refusal(Action::Force { event: "reservation.retry.requested".into() }, &s);
    assert_eq!(
        r.to_string(),
        "transition not in the definition: state AWAITING_PAYMENT does not accept reservation.retry.requested"
    );
    let held = quarantined(snap("PENDING_REVIEW"), vec![]);
    let r = refusal(Action::Force { event: "reservation.retry.requested".into() }, &held);
    assert!(r.to_string().contains("quarantined"), "{r}");
}

#[test]
fn retry_step_resends_the_current_command_under_a_new_event_id_each_time() {
    let mut s = snap("AWAITING_PAYMENT");
    let sent = |s: &Snapshot| match &plan(&Action::RetryStep, s, WHO).unwrap().writes[..] {
        [Write::Outbox(Message::PaymentAuthorize(m))] => (m.event_id.clone(), m.command_id.clone()),
        other => panic!("{other:?}"),
    };
    let first = sent(&s);
    s.retries = 1;
    let second = sent(&s);
    assert_eq!(first.1, second.1, "the same command id: participants drop the copy");
    assert_ne!(first.0, second.0, "a new event id per retry: the outbox keys on it");
    assert!(matches!(refusal(Action::RetryStep, &snap("COMPLETED")), Refusal::NotAllowed(_)));
}

#[test]
fn release_replays_the_parked_events_in_order_after_lifting_the_quarantine() {
    let s = quarantined(
        snap("AWAITING_PAYMENT"),
        vec![parked(5, "timer.payment_timeout", None, false), parked(6, "timer.payment_timeout", None, false)],
    );
    let p = plan(&Action::Release, &s, WHO).unwrap();
    let [
        Write::ClearQuarantine,
        Write::ForgetInbox(forget),
        Write::ResolveParked { ids, resolution: Resolution::Replayed },
        Write::Apply { events, expect: Expect::Any },
    ] = &p.writes[..]
    else {
        panic!("{:?}", p.writes)
    };
    assert_eq!(forget, &["ev-5", "ev-6"]);
    assert_eq!(ids, &[5, 6]);
    let replayed: Vec<_> = events.iter().map(|e| (e.event_id.as_str(), &e.source)).collect();
    assert_eq!(replayed, [("ev-5", &Source::Replay), ("ev-6", &Source::Replay)]);
    assert_eq!(
        refusal(Action::Release, &snap("AWAITING_PAYMENT")),
        Refusal::NotAllowed("the saga is not quarantined".into())
    );
}

#[test]
fn skip_poison_resolves_the_poison_as_skipped_and_replays_the_rest() {
    let s = quarantined(
        snap("AWAITING_PAYMENT"),
        vec![parked(5, "payment.authorized.v1", None, true), parked(6, "timer.payment_timeout", None, false)],
    );
    let p = plan(&Action::SkipPoison, &s, WHO).unwrap();
    assert!(
        matches!(&p.writes[0], Write::ResolveParked { ids, resolution: Resolution::Skipped } if ids == &[5]),
        "{:?}",
        p.writes
    );
    assert!(
        matches!(&p.writes[..], [.., Write::Apply { events, .. }] if events.len() == 1 && events[0].event_id == "ev-6")
    );
    let clean = quarantined(snap("AWAITING_PAYMENT"), vec![parked(6, "timer.payment_timeout", None, false)]);
    assert_eq!(refusal(Action::SkipPoison, &clean), Refusal::NotAllowed("no unresolved poison event to skip".into()));
}
