//! Each operator action in plain words: a short label for its button and a
//! sentence that says what it does, from the definition (manual events'
//! descriptions, where a timer leads). Pure.

use serde::Serialize;

use super::Snapshot;
use crate::ops::Action;

/// An action as the console offers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Described {
    pub label: String,
    pub description: String,
}

/// The first clause of a sentence, for a button: "Try the inventory
/// reservation again (after stock arrived)." → "Try the inventory reservation again".
fn first_clause(s: &str) -> String {
    let cut = [s.find(" ("), s.find('.')].into_iter().flatten().min().unwrap_or(s.len());
    let c = s[..cut].trim();
    if c.is_empty() { s.to_owned() } else { c.to_owned() }
}

/// Where firing `timer` leads from the saga's state, in words.
fn timer_leads(snap: &Snapshot, timer: &str) -> String {
    snap.def
        .on_timer(&snap.saga.state, timer)
        .map(|t| {
            let reason = t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            format!(": the saga goes to {}{reason}", t.to)
        })
        .unwrap_or_default()
}

pub fn describe(action: &Action, snap: &Snapshot) -> Described {
    let (label, description) = match action {
        Action::Release => (
            "Release the quarantine".to_owned(),
            "Lift the quarantine and apply its parked events in the order they arrived.".to_owned(),
        ),
        Action::SkipPoison => (
            "Skip the poison event".to_owned(),
            "Mark the event that cannot be decoded as skipped, then lift the quarantine and apply the other parked \
             events."
                .to_owned(),
        ),
        Action::RetryStep => {
            let step = snap.def.state(&snap.saga.state).and_then(|s| s.step.clone()).unwrap_or_default();
            (
                format!("Re-send the {step} command"),
                format!(
                    "Send the {step} command again under the same command id: for a command that was lost on the \
                     way. A participant that already handled it discards it; to start a new attempt use a manual \
                     event."
                ),
            )
        }
        Action::Cancel => {
            let d = snap
                .def
                .manual_event_for_status(crate::domain::OrderStatus::Cancelled)
                .and_then(|m| m.description.clone())
                .unwrap_or_else(|| "Cancel the order and compensate.".into());
            ("Cancel the order".to_owned(), d)
        }
        Action::Force { event } => {
            let d = snap.def.manual_events.get(event).and_then(|m| m.description.clone());
            match d {
                Some(d) => (first_clause(&d), format!("{d} (manual event {event})")),
                None => (format!("Send {event}"), format!("Deliver the manual event {event}.")),
            }
        }
        Action::FireTimer { timer } => (
            format!("Fire {timer} now"),
            format!("Fire the timer {timer} now, as if it were due{}.", timer_leads(snap, timer)),
        ),
        Action::RescheduleTimer { timer, .. } => {
            (format!("Reschedule {timer}"), format!("Move the timer {timer} to another time (after a delay from now)."))
        }
        Action::CancelTimer { timer } => {
            (format!("Cancel {timer}"), format!("Remove the timer {timer}: it will not fire."))
        }
        Action::Migrate { to_version } => {
            let to_state = snap
                .newer
                .iter()
                .find(|d| d.version == *to_version)
                .and_then(|d| d.migrations.get(&snap.def.version))
                .and_then(|m| m.states.get(&snap.saga.state))
                .map(|s| format!(", in state {s}"))
                .unwrap_or_default();
            (
                format!("Move to version {to_version}"),
                format!(
                    "Move the saga from definition version {} to version {to_version}{to_state}, as version \
                     {to_version} declares: it keeps waiting for the same replies, and its timers follow the new \
                     definition (the dry run lists each).",
                    snap.def.version
                ),
            )
        }
    };
    Described { label, description }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_button_gets_the_first_clause_of_a_description() {
        assert_eq!(
            first_clause("Try the inventory reservation again (after stock arrived)."),
            "Try the inventory reservation again"
        );
        assert_eq!(
            first_clause("Cancel the order and compensate everything done so far."),
            "Cancel the order and compensate everything done so far"
        );
        assert_eq!(first_clause("Retry."), "Retry");
    }
}
