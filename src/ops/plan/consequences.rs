//! What an action will do, in words, from its dry-run report: the state and
//! order status it moves to, each command it sends (a re-send under the same
//! command id is labelled: a participant that saw it discards it), each timer
//! that is already due and so fires at once (and where that leads), the
//! quarantine lifted and the parked events replayed. Pure: the report, the
//! definition and the database clock in; sentences out.

use chrono::{DateTime, Utc};

use crate::saga::Definition;
use crate::saga::migrate::{Migrated, TimerChange};
use crate::store::inspect::age_in_words;

/// The facts of a report the sentences are made from.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub state_before: &'a str,
    pub state_after: &'a str,
    pub status_before: Option<&'a str>,
    pub status_after: Option<&'a str>,
    /// `(message type, command id)` of each message written.
    pub messages: &'a [(String, Option<String>)],
    /// `(timer, due at)` after the action.
    pub timers_after: &'a [(String, DateTime<Utc>)],
    pub quarantined_after: Option<&'a str>,
    pub quarantined_before: bool,
    pub replayed: &'a [String],
    /// The migration the action made, when it is `migrate`.
    pub migrated: Option<&'a Migrated>,
}

/// Every consequence in words. `resent` lists the command ids already sent
/// before this action.
pub fn consequences(o: &Outcome<'_>, def: &Definition, now: DateTime<Utc>, resent: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = o.migrated {
        out.extend(migration(m));
    } else if o.state_before != o.state_after {
        out.push(format!("The saga moves from {} to {}.", o.state_before, o.state_after));
    } else {
        out.push(format!("The saga stays in {}.", o.state_after));
    }
    match (o.status_before, o.status_after) {
        (Some(a), Some(b)) if a != b => out.push(format!("The order's status becomes {b} (was {a}).")),
        _ => {}
    }
    for (kind, command) in o.messages {
        match command {
            Some(id) if resent.contains(id) => out.push(format!(
                "Sends {kind} again under the same command id {id}: a participant that already handled it discards \
                 it (use a manual event to start a new attempt)."
            )),
            Some(id) => out.push(format!("Sends {kind} (command id {id}).")),
            None => out.push(format!("Publishes {kind}.")),
        }
    }
    if o.quarantined_before && o.quarantined_after.is_none() {
        out.push("The quarantine is lifted: its parked events are applied now.".to_owned());
    }
    for r in o.replayed {
        out.push(format!("Replays a parked event: {r}."));
    }
    for (timer, due) in o.timers_after {
        let late = (now - *due).num_seconds();
        if late < 0 {
            continue;
        }
        let leads = def
            .on_timer(o.state_after, timer)
            .map(|t| {
                let reason = t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                let status = t.order_status.map(|s| format!(", order {s}")).unwrap_or_default();
                format!(" → {}{reason}{status}", t.to)
            })
            .unwrap_or_default();
        let when = if o.quarantined_after.is_some() { "when the quarantine is lifted" } else { "at once" };
        out.push(format!("Timer {timer} is overdue by {}: it fires {when}{leads}.", age_in_words(late)));
    }
    if let Some(q) = o.quarantined_after {
        out.push(format!("The saga stays quarantined: {q}."));
    }
    out
}

/// A migration in words: the version and state the saga moves to, and what
/// happens to each of its timers.
fn migration(m: &Migrated) -> Vec<String> {
    let (from, to) = (m.from_version, m.instance.definition_version);
    let at = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let mut out = vec![if m.from_state == m.instance.state {
        format!(
            "The saga moves from definition version {from} to {to}, staying in {}; its outstanding commands keep \
             their ids.",
            m.from_state
        )
    } else {
        format!(
            "The saga moves from definition version {from} to {to}: {} becomes {}; its outstanding commands keep \
             their ids.",
            m.from_state, m.instance.state
        )
    }];
    for t in &m.timers {
        out.push(match t {
            TimerChange::Kept { name, due } => format!("Timer {name} stays due at {}.", at(due)),
            TimerChange::Moved { name, from, to: due, .. } => {
                format!("Timer {name} moves from {} to {}, as long as version {to} makes it.", at(from), at(due))
            }
            TimerChange::Armed { name, due } => format!(
                "Timer {name} is armed, due at {} (version {to} arms it on every way into {}).",
                at(due),
                m.instance.state
            ),
            TimerChange::Disarmed { name, why } => format!("Timer {name} is disarmed: {why}."),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> std::sync::Arc<Definition> {
        let def = crate::saga::parse::parse(
            std::path::Path::new("sagas/order.toml"),
            include_str!("../../../sagas/order.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        crate::saga::Catalog::new(vec![def]).unwrap_or_else(|| panic!("the order definition loads")).latest().clone()
    }

    fn now() -> DateTime<Utc> {
        use chrono::TimeZone as _;
        Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).single().unwrap_or_default()
    }

    #[test]
    fn an_overdue_timer_is_said_to_fire_at_once_and_where_it_leads() {
        let now = now();
        let timers = [("payment_timeout".to_owned(), now - chrono::Duration::minutes(6))];
        let o = Outcome {
            state_before: "AWAITING_PAYMENT",
            state_after: "AWAITING_PAYMENT",
            status_before: Some("PENDING"),
            status_after: Some("PENDING"),
            messages: &[],
            timers_after: &timers,
            quarantined_after: None,
            quarantined_before: true,
            replayed: &[],
            migrated: None,
        };
        let c = consequences(&o, &def(), now, &[]);
        assert!(c.contains(&"The quarantine is lifted: its parked events are applied now.".to_owned()), "{c:?}");
        let fires = c.iter().find(|s| s.starts_with("Timer payment_timeout")).unwrap();
        assert!(
            fires.starts_with("Timer payment_timeout is overdue by 6 min: it fires at once → CANCELLED"),
            "{fires}"
        );
        // Still quarantined: it fires only when that is lifted.
        let q = Outcome { quarantined_after: Some("poison"), ..o };
        assert!(consequences(&q, &def(), now, &[]).iter().any(|s| s.contains("fires when the quarantine is lifted")));
        // A timer not due yet is no consequence.
        let later = [("payment_timeout".to_owned(), now + chrono::Duration::minutes(6))];
        let l = Outcome { timers_after: &later, ..o };
        assert!(!consequences(&l, &def(), now, &[]).iter().any(|s| s.starts_with("Timer")));
    }

    #[test]
    fn a_resend_under_the_same_command_id_is_labelled() {
        let msgs = [("inventory.reserve.v1".to_owned(), Some("7:reserve_inventory:reserve:1".to_owned()))];
        let o = Outcome {
            state_before: "RESERVING_INVENTORY",
            state_after: "RESERVING_INVENTORY",
            status_before: None,
            status_after: None,
            messages: &msgs,
            timers_after: &[],
            quarantined_after: None,
            quarantined_before: false,
            replayed: &[],
            migrated: None,
        };
        let fresh = consequences(&o, &def(), now(), &[]);
        assert!(fresh.contains(&"Sends inventory.reserve.v1 (command id 7:reserve_inventory:reserve:1).".to_owned()));
        let again = consequences(&o, &def(), now(), &["7:reserve_inventory:reserve:1".to_owned()]);
        assert!(again.iter().any(|s| s.contains("again under the same command id")), "{again:?}");
        assert_eq!(again[0], "The saga stays in RESERVING_INVENTORY.");
    }
}
