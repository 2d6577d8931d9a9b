//! The operator actions and which of them a saga's definition allows in its
//! current state (pure: what the console offers and the API accepts).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::OrderStatus;

/// What an operator can do to one saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Re-send the current step's command with the same command id.
    RetryStep,
    /// Fire a pending timer now.
    FireTimer { timer: String },
    /// Move a pending timer (`at` an RFC 3339 time, or `after` a duration from now).
    RescheduleTimer {
        timer: String,
        #[serde(default)]
        at: Option<DateTime<Utc>>,
        #[serde(default)]
        after: Option<String>,
    },
    /// Disarm a pending timer.
    CancelTimer { timer: String },
    /// Cancel the order, compensating what the saga did (the definition's
    /// manual event for CANCELLED).
    Cancel,
    /// Deliver a manual event the definition declares and the current state accepts.
    Force { event: String },
    /// Lift the quarantine and replay the parked events in order.
    Release,
    /// Skip the poison event(s), then release.
    SkipPoison,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::RetryStep => "retry_step",
            Action::FireTimer { .. } => "fire_timer",
            Action::RescheduleTimer { .. } => "reschedule_timer",
            Action::CancelTimer { .. } => "cancel_timer",
            Action::Cancel => "cancel",
            Action::Force { .. } => "force",
            Action::Release => "release",
            Action::SkipPoison => "skip_poison",
        }
    }
}

/// The actions [`Ops::act`](super::Ops::act) would accept for a saga of `def` in `state`
/// (quarantined or not, with these timers armed) — what the console offers.
/// Each is the request body's `action` part, e.g. `{"action": "fire_timer", "timer": "t"}`.
pub fn allowed_actions(
    def: &crate::saga::Definition,
    state: &str,
    quarantined: bool,
    unresolved_poison: bool,
    armed_timers: &[&str],
) -> Vec<Action> {
    let Some(st) = def.state(state) else { return Vec::new() };
    let mut out = Vec::new();
    if quarantined {
        // Everything else that moves the saga waits for the quarantine to be lifted.
        out.push(Action::Release);
        if unresolved_poison {
            out.push(Action::SkipPoison);
        }
    } else {
        if st.step.is_some() {
            out.push(Action::RetryStep);
        }
        let cancel = def.manual_event_for_status(OrderStatus::Cancelled).map(|m| m.name.clone());
        if cancel.as_ref().is_some_and(|c| st.on.contains_key(c)) {
            out.push(Action::Cancel);
        }
        for m in def.manual_events.keys() {
            if st.on.contains_key(m) && Some(m) != cancel.as_ref() {
                out.push(Action::Force { event: m.clone() });
            }
        }
        for t in armed_timers {
            out.push(Action::FireTimer { timer: (*t).to_owned() });
        }
    }
    for t in armed_timers {
        out.push(Action::RescheduleTimer { timer: (*t).to_owned(), at: None, after: None });
        out.push(Action::CancelTimer { timer: (*t).to_owned() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_saga() -> std::sync::Arc<crate::saga::Definition> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sagas");
        let catalog = crate::saga_files::load_catalog(&dir, &Default::default()).expect("the shipped definition loads");
        catalog.latest().clone()
    }

    #[test]
    fn the_console_offers_what_the_definition_allows_in_the_current_state() {
        let def = order_saga();
        let waiting = allowed_actions(&def, "AWAITING_PAYMENT", false, false, &["payment_timeout"]);
        assert!(waiting.contains(&Action::RetryStep));
        assert!(waiting.contains(&Action::Cancel));
        assert!(waiting.contains(&Action::FireTimer { timer: "payment_timeout".into() }));
        assert!(waiting.contains(&Action::CancelTimer { timer: "payment_timeout".into() }));
        assert!(!waiting.contains(&Action::Release), "not quarantined: nothing to release");

        let done = allowed_actions(&def, "COMPLETED", false, false, &[]);
        assert_eq!(done, vec![Action::Cancel], "a confirmed order can still be cancelled (compensating), nothing else");
        let cancelled = allowed_actions(&def, "CANCELLED", false, false, &[]);
        assert!(!cancelled.contains(&Action::Cancel), "{cancelled:?}");
        assert!(!cancelled.contains(&Action::RetryStep), "no step to retry when done");

        let held = allowed_actions(&def, "AWAITING_PAYMENT", true, false, &["payment_timeout"]);
        assert!(held.contains(&Action::Release));
        assert!(!held.contains(&Action::SkipPoison), "no poison event parked");
        assert!(!held.contains(&Action::Cancel) && !held.contains(&Action::RetryStep), "quarantine first: {held:?}");
        assert!(!held.iter().any(|a| matches!(a, Action::FireTimer { .. })));
        assert!(allowed_actions(&def, "AWAITING_PAYMENT", true, true, &[]).contains(&Action::SkipPoison));
        assert!(allowed_actions(&def, "NO_SUCH_STATE", false, false, &[]).is_empty());
    }
}
