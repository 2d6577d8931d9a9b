//! What a new definition would do to a saga in flight (`order-saga sagas
//! preview NEW.toml`): its recorded transitions replayed through the new
//! definition (the first one it would take differently, and how), and what
//! its current state would do next in the old and the new definition. Pure:
//! definitions and a saga's history in, a verdict out.
//!
//! A saga the new definition would migrate (`super::migrate`) is judged as
//! moved: what its state would do next, with the state names mapped.
//!
//! The replay is by the transition log (from, event, to), from the saga's
//! last migration on when it was moved: the log keeps no payloads, so a guarded transition is judged by the branch that was taken
//! (`to`), not by re-evaluating the guard.

use serde::Serialize;

use super::definition::{Definition, TransitionDef};
use super::diff::behaviour;
use crate::domain::OrderId;

/// A saga in flight, as the preview reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub order_id: OrderId,
    pub definition_version: u32,
    pub state: String,
    /// Every applied transition, oldest first: `(from, event, to)`; the
    /// start's `from` is `-`.
    pub transitions: Vec<(String, String, String)>,
}

/// How the new definition would treat one saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Everything it did, the new definition would have done; its state
    /// answers every event as before.
    Same,
    /// Its history, replayed, would have gone another way.
    PastDiverges {
        /// Which recorded transition (0 = the first after the start).
        at: usize,
        event: String,
        how: String,
    },
    /// Its past replays the same, but its current state would answer events
    /// differently from now on.
    NextDiffers { how: Vec<String> },
}

impl Verdict {
    pub fn same(&self) -> bool {
        matches!(self, Verdict::Same)
    }
}

/// The transition `t` of `def` that a recorded `(event, to)` took: `t` itself
/// or its `otherwise`.
fn branch<'a>(t: &'a TransitionDef, to: &str) -> Option<&'a TransitionDef> {
    if t.to == to { Some(t) } else { t.otherwise.as_deref().filter(|o| o.to == to) }
}

/// Judges one saga: `old` is the definition it runs on, `new` the candidate.
pub fn judge(old: &Definition, new: &Definition, h: &History) -> Verdict {
    // A newer version that says where sagas of `old` in this state go judges
    // the saga as moved there: its past stays on `old` (the migration starts
    // its log afresh), what it does next is compared with the names mapped.
    if new.version > old.version
        && let Some(m) = new.migrations.get(&old.version)
        && let Some(target) = m.states.get(&h.state)
    {
        let rename = |s: &str| m.states.get(s).cloned().unwrap_or_else(|| s.to_owned());
        return next(old, new, &h.state, target, &rename);
    }
    // A migrated saga's past before its last migration ran on older versions
    // (with their own state names): what it did on `old` starts there.
    let since = h.transitions.iter().rposition(|(_, e, _)| e == super::migrate::MIGRATE_EVENT).map_or(0, |i| i + 1);
    for (i, (from, event, to)) in h.transitions.iter().enumerate().skip(since).filter(|(_, (from, ..))| from != "-") {
        let at = i.saturating_sub(1);
        let diverge = |how: String| Verdict::PastDiverges { at, event: event.clone(), how };
        let Some(state) = new.state(from) else {
            return diverge(format!("state {from} is not in the new definition"));
        };
        let Some(t) = state.on.get(event) else {
            return diverge(if state.ignore.contains(event) {
                format!("in {from} it would ignore {event} (it went to {to})")
            } else {
                format!("in {from} it would refuse {event} (it went to {to})")
            });
        };
        let Some(taken_new) = branch(t, to) else {
            return diverge(format!("in {from}, {event} would lead to {} instead of {to}", t.to));
        };
        let taken_old = old.state(from).and_then(|s| s.on.get(event)).and_then(|t| branch(t, to));
        if let Some(taken_old) = taken_old {
            let (a, b) = (behaviour(old, taken_old), behaviour(new, taken_new));
            if a != b {
                return diverge(format!("in {from}, {event} would do something else: {a} ⇒ {b}"));
            }
        }
    }
    next(old, new, &h.state, &h.state, &|s: &str| s.to_owned())
}

/// What a saga in `old_state` of `old` would do next, against `new_state` of
/// `new` (the same name, or where a migration maps it); `rename` maps the
/// old version's state names onto the new one's before comparing.
fn next(
    old: &Definition,
    new: &Definition,
    old_state: &str,
    new_state: &str,
    rename: &dyn Fn(&str) -> String,
) -> Verdict {
    let Some(now_new) = new.state(new_state) else {
        return Verdict::NextDiffers { how: vec![format!("its state {new_state} is not in the new definition")] };
    };
    let mut how = Vec::new();
    if let Some(now_old) = old.state(old_state) {
        // An old transition as the new version would name it.
        let renamed = |t: &TransitionDef| {
            let mut t = t.clone();
            t.to = rename(&t.to);
            if let Some(o) = t.otherwise.as_deref_mut() {
                o.to = rename(&o.to);
            }
            t
        };
        let events: std::collections::BTreeSet<&String> = now_old.on.keys().chain(now_new.on.keys()).collect();
        for e in events {
            match (now_old.on.get(e), now_new.on.get(e)) {
                (Some(a), Some(b)) => {
                    let (ba, bb) = (behaviour(old, &renamed(a)), behaviour(new, b));
                    if ba != bb {
                        how.push(format!("{e}: {ba} ⇒ {bb}"));
                    }
                }
                (Some(_), None) => how.push(format!("{e}: no longer accepted in {new_state}")),
                (None, Some(b)) => how.push(format!("{e}: newly accepted, {}", behaviour(new, b))),
                (None, None) => {}
            }
        }
        // A timer it reacts to that fires after another time.
        for e in now_new.on.keys().filter(|e| now_old.on.contains_key(*e)) {
            let Some(timer) = e.strip_prefix(super::definition::TIMER_PREFIX) else { continue };
            let (a, b) = (old.timers.get(timer), new.timers.get(timer));
            if a != b {
                let len = |d: Option<&std::time::Duration>| {
                    d.map_or_else(|| "none".to_owned(), |d| humantime::format_duration(*d).to_string())
                };
                how.push(format!("timer {timer} lasts {} ⇒ {}", len(a), len(b)));
            }
        }
        if now_old.ignore != now_new.ignore {
            how.push(format!("ignores {:?} ⇒ {:?}", now_old.ignore, now_new.ignore));
        }
        if now_old.max_dwell != now_new.max_dwell {
            how.push("its max_dwell changes (when it counts as stuck)".into());
        }
    }
    if how.is_empty() { Verdict::Same } else { Verdict::NextDiffers { how } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(text: &str) -> Definition {
        super::super::parse::parse(std::path::Path::new("order.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    const ORDER: &str = include_str!("../../sagas/order.toml");

    fn t(from: &str, event: &str, to: &str) -> (String, String, String) {
        (from.into(), event.into(), to.into())
    }

    fn awaiting_payment() -> History {
        History {
            order_id: crate::domain::ids::oid(7),
            definition_version: 1,
            state: "AWAITING_PAYMENT".into(),
            transitions: vec![
                t("-", "order.created.v1", "RESERVING_INVENTORY"),
                t("RESERVING_INVENTORY", "inventory.reserved.v1", "AWAITING_PAYMENT"),
            ],
        }
    }

    #[test]
    fn an_unchanged_copy_treats_every_saga_the_same() {
        let (old, new) = (def(ORDER), def(ORDER));
        assert_eq!(judge(&old, &new, &awaiting_payment()), Verdict::Same);
    }

    #[test]
    fn a_state_that_answers_differently_is_next_differs_only_for_sagas_in_it() {
        let old = def(ORDER);
        let mut new = old.clone();
        if let Some(t) = new.states.get_mut("AWAITING_PAYMENT").and_then(|s| s.on.get_mut("payment.failed.v1")) {
            t.reason = Some("PAYMENT_REFUSED".into());
        }
        let v = judge(&old, &new, &awaiting_payment());
        let Verdict::NextDiffers { how } = v else { panic!("{v:?}") };
        assert!(how[0].starts_with("payment.failed.v1:") && how[0].contains("PAYMENT_REFUSED"), "{how:?}");
        // A saga still reserving: its past and its state are untouched.
        let reserving = History {
            state: "RESERVING_INVENTORY".into(),
            transitions: vec![t("-", "order.created.v1", "RESERVING_INVENTORY")],
            ..awaiting_payment()
        };
        assert_eq!(judge(&old, &new, &reserving), Verdict::Same);
    }

    #[test]
    fn a_migrated_saga_is_replayed_from_its_migration_on() {
        let new = def(include_str!("../../sagas/examples/order-v2.toml"));
        let migrated = History {
            definition_version: 2,
            state: "AWAITING_AUTHORIZATION".into(),
            transitions: vec![
                t("-", "order.created.v1", "RESERVING_INVENTORY"),
                t("RESERVING_INVENTORY", "inventory.reserved.v1", "AWAITING_PAYMENT"),
                t("AWAITING_PAYMENT", crate::saga::migrate::MIGRATE_EVENT, "AWAITING_AUTHORIZATION"),
            ],
            ..awaiting_payment()
        };
        // Version 1's AWAITING_PAYMENT is not in version 2, but the saga left it by migrating.
        assert_eq!(judge(&new, &new, &migrated), Verdict::Same);
    }

    #[test]
    fn a_saga_the_new_version_migrates_is_judged_as_moved_there() {
        let (old, new) = (def(ORDER), def(include_str!("../../sagas/examples/order-v2.toml")));
        // AWAITING_PAYMENT becomes AWAITING_AUTHORIZATION: the same answers, but 20 minutes to pay.
        let v = judge(&old, &new, &awaiting_payment());
        assert_eq!(v, Verdict::NextDiffers { how: vec!["timer payment_timeout lasts 15m ⇒ 20m".into()] });
        // Still reserving: its next step leads to the renamed state, which is the same step.
        let reserving = History {
            state: "RESERVING_INVENTORY".into(),
            transitions: vec![t("-", "order.created.v1", "RESERVING_INVENTORY")],
            ..awaiting_payment()
        };
        assert_eq!(judge(&old, &new, &reserving), Verdict::Same);
        // Without the migration section, by names: the renamed state is gone.
        let mut unmapped = new;
        unmapped.migrations.clear();
        assert!(matches!(judge(&old, &unmapped, &awaiting_payment()), Verdict::PastDiverges { .. }));
    }

    #[test]
    fn a_past_transition_taken_differently_is_where_it_diverges() {
        let old = def(ORDER);
        let mut new = old.clone();
        if let Some(t) = new.states.get_mut("RESERVING_INVENTORY").and_then(|s| s.on.get_mut("inventory.reserved.v1")) {
            t.to = "PENDING_REVIEW".into();
        }
        let v = judge(&old, &new, &awaiting_payment());
        assert_eq!(
            v,
            Verdict::PastDiverges {
                at: 0,
                event: "inventory.reserved.v1".into(),
                how: "in RESERVING_INVENTORY, inventory.reserved.v1 would lead to PENDING_REVIEW instead of AWAITING_PAYMENT"
                    .into()
            }
        );
    }

    #[test]
    fn a_removed_older_version_still_in_use_is_refused_a_newer_one_waits() {
        let catalog = super::super::Catalog::new(vec![def(ORDER)]).unwrap_or_else(|| panic!("loads"));
        assert_eq!(catalog.retired_in_use(&[(1, 3, [1, 2, 3].map(crate::domain::ids::oid).to_vec())]), None, "loaded");
        assert_eq!(
            catalog.retired_in_use(&[(2, 3, vec![crate::domain::ids::oid(7)])]),
            None,
            "a newer version: a rolling deploy"
        );
        let mut v2 = def(ORDER);
        v2.version = 2;
        let only_v2 = super::super::Catalog::new(vec![v2]).unwrap_or_else(|| panic!("loads"));
        let why =
            only_v2.retired_in_use(&[(1, 3, [4, 5, 6].map(crate::domain::ids::oid).to_vec())]).unwrap_or_default();
        assert!(why.contains("version 1: 3 saga(s) in flight, e.g. orders 4, 5, 6"), "{why}");
        assert_eq!(only_v2.retired_in_use(&[(1, 0, vec![])]), None, "drained: it may go");
    }
}
