//! What changed between two saga definitions (`order-saga sagas diff OLD NEW`):
//! states, steps, timers, manual events and transitions added, removed and
//! changed, in words, and the new definition's Mermaid diagram with the
//! changes marked. Pure: two definitions in, changes out.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::definition::{Definition, StateDef, TransitionDef};
use super::graph::label;

/// Added, removed or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Added,
    Removed,
    Changed,
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub kind: Kind,
    /// What: `state PENDING_REVIEW`, `transition AWAITING_PAYMENT on payment.authorized.v1`, `timer payment_timeout`.
    pub what: String,
    /// How, in words: `→ COMPLETED / send …` or `15m → 20m`.
    pub detail: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = match self.kind {
            Kind::Added => "+",
            Kind::Removed => "-",
            Kind::Changed => "~",
        };
        write!(f, "{sign} {}: {}", self.what, self.detail)
    }
}

/// A transition as compared: what it does (target, effects, reason, alert,
/// its `otherwise`), not where it is written.
pub fn behaviour(def: &Definition, t: &TransitionDef) -> String {
    let mut s = format!("→ {} / {}", t.to, label(def, t));
    if let Some(r) = &t.reason {
        let _ = write!(s, " (reason {r})");
    }
    if let Some(a) = &t.alert {
        let _ = write!(s, " (alert {a})");
    }
    if let Some(o) = &t.otherwise {
        let _ = write!(s, "; otherwise {}", behaviour(def, o));
    }
    s
}

fn state_facts(s: &StateDef) -> Vec<(&'static str, String)> {
    vec![
        ("terminal", s.terminal.to_string()),
        ("step", s.step.clone().unwrap_or_else(|| "none".into())),
        ("max_dwell", s.max_dwell.map(|d| humantime::format_duration(d).to_string()).unwrap_or_else(|| "none".into())),
        ("ignores", s.ignore.iter().cloned().collect::<Vec<_>>().join(", ")),
        ("description", s.description.clone().unwrap_or_default()),
    ]
}

/// Every difference from `old` to `new`, in a stable order.
pub fn diff(old: &Definition, new: &Definition) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |kind, what: String, detail: String| out.push(Change { kind, what, detail });
    if behaviour(old, &old.start) != behaviour(new, &new.start) {
        push(Kind::Changed, "start".into(), format!("{} ⇒ {}", behaviour(old, &old.start), behaviour(new, &new.start)));
    }
    let names = |a: &mut dyn Iterator<Item = &String>| a.cloned().collect::<BTreeSet<String>>();
    for name in names(&mut old.states.keys().chain(new.states.keys())) {
        match (old.states.get(&name), new.states.get(&name)) {
            (Some(_), None) => push(Kind::Removed, format!("state {name}"), "no longer in the definition".into()),
            (None, Some(s)) => push(
                Kind::Added,
                format!("state {name}"),
                s.description.clone().unwrap_or_else(|| if s.terminal { "terminal".into() } else { String::new() }),
            ),
            (Some(a), Some(b)) => {
                for ((k, va), (_, vb)) in state_facts(a).into_iter().zip(state_facts(b)) {
                    if va != vb {
                        push(Kind::Changed, format!("state {name}"), format!("{k}: {va:?} ⇒ {vb:?}"));
                    }
                }
                for event in names(&mut a.on.keys().chain(b.on.keys())) {
                    let what = format!("transition {name} on {event}");
                    match (a.on.get(&event), b.on.get(&event)) {
                        (Some(_), None) => push(Kind::Removed, what, "the event is no longer accepted here".into()),
                        (None, Some(t)) => push(Kind::Added, what, behaviour(new, t)),
                        (Some(x), Some(y)) => {
                            let (bx, by) = (behaviour(old, x), behaviour(new, y));
                            if bx != by {
                                push(Kind::Changed, what, format!("{bx} ⇒ {by}"));
                            }
                        }
                        (None, None) => {}
                    }
                }
            }
            (None, None) => {}
        }
    }
    for name in names(&mut old.steps.keys().chain(new.steps.keys())) {
        let show = |s: &super::definition::StepDef| {
            let replies: Vec<&str> = s.replies.iter().map(|k| k.name()).collect();
            format!("send {}, undo with {}, replies {}", s.command.name(), s.compensation.name(), replies.join(", "))
        };
        match (old.steps.get(&name), new.steps.get(&name)) {
            (Some(_), None) => push(Kind::Removed, format!("step {name}"), String::new()),
            (None, Some(s)) => push(Kind::Added, format!("step {name}"), show(s)),
            (Some(a), Some(b)) if a != b => {
                push(Kind::Changed, format!("step {name}"), format!("{} ⇒ {}", show(a), show(b)))
            }
            _ => {}
        }
    }
    for name in names(&mut old.timers.keys().chain(new.timers.keys())) {
        let show = |d: &std::time::Duration| humantime::format_duration(*d).to_string();
        match (old.timers.get(&name), new.timers.get(&name)) {
            (Some(_), None) => push(Kind::Removed, format!("timer {name}"), String::new()),
            (None, Some(d)) => push(Kind::Added, format!("timer {name}"), format!("after {}", show(d))),
            (Some(a), Some(b)) if a != b => {
                push(Kind::Changed, format!("timer {name}"), format!("{} ⇒ {}", show(a), show(b)))
            }
            _ => {}
        }
    }
    for name in names(&mut old.manual_events.keys().chain(new.manual_events.keys())) {
        let show = |m: &super::definition::ManualEventDef| {
            format!(
                "order status {}; {}",
                m.order_status.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                m.description.clone().unwrap_or_default()
            )
        };
        match (old.manual_events.get(&name), new.manual_events.get(&name)) {
            (Some(_), None) => push(Kind::Removed, format!("manual event {name}"), String::new()),
            (None, Some(m)) => push(Kind::Added, format!("manual event {name}"), show(m)),
            (Some(a), Some(b)) if a != b => {
                push(Kind::Changed, format!("manual event {name}"), format!("{} ⇒ {}", show(a), show(b)))
            }
            _ => {}
        }
    }
    out
}

/// The new definition's Mermaid diagram with the changes marked: added
/// transitions labelled `+`, changed `~`, removed ones kept as `-` edges;
/// added states green, changed amber, removed red.
pub fn mermaid(old: &Definition, new: &Definition, changes: &[Change]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "stateDiagram-v2");
    let _ = writeln!(out, "    %% {} saga: version {} → {}", new.name, old.version, new.version);
    let _ = writeln!(out, "    classDef added fill:#d9f2dd,stroke:#1a7f37");
    let _ = writeln!(out, "    classDef changed fill:#fff1c2,stroke:#9a6700");
    let _ = writeln!(out, "    classDef removed fill:#ffd8d3,stroke:#cf222e");
    let _ = writeln!(out, "    [*] --> {}: {}", new.start.to, label(new, &new.start));
    let mark = |what: &str| changes.iter().find(|c| c.what == what).map(|c| c.kind);
    for (name, st) in &new.states {
        for t in st.transitions() {
            let sign = match mark(&format!("transition {name} on {}", t.event)) {
                Some(Kind::Added) => "+ ",
                Some(Kind::Changed) => "~ ",
                _ => "",
            };
            let _ = writeln!(out, "    {name} --> {}: {sign}{}", t.to, label(new, t));
        }
    }
    for (name, st) in &old.states {
        for t in st.transitions() {
            if mark(&format!("transition {name} on {}", t.event)) == Some(Kind::Removed)
                || !new.states.contains_key(name)
            {
                let _ = writeln!(out, "    {name} --> {}: - {}", t.to, label(old, t));
            }
        }
    }
    for name in old.states.keys().chain(new.states.keys()).collect::<BTreeSet<_>>() {
        if let Some(kind) = mark(&format!("state {name}")) {
            let class = match kind {
                Kind::Added => "added",
                Kind::Removed => "removed",
                Kind::Changed => "changed",
            };
            let _ = writeln!(out, "    class {name} {class}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Definition {
        super::super::parse::parse(std::path::Path::new("order.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    const ORDER: &str = include_str!("../../sagas/order.toml");

    #[test]
    fn an_unchanged_copy_has_no_difference() {
        assert_eq!(diff(&parse(ORDER), &parse(ORDER)), vec![]);
    }

    #[test]
    fn a_changed_reply_a_timer_and_a_new_state_are_each_said_once() {
        let new = ORDER.replace("after = \"15m\"", "after = \"20m\"").replace(
            "description = \"Out of stock; an operator retries the reservation or cancels.\"",
            "description = \"Out of stock; wait for stock or cancel.\"",
        );
        let changes = diff(&parse(ORDER), &parse(&new));
        let said: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert!(said.iter().any(|c| c.starts_with("~ timer payment_timeout: 15m ⇒ 20m")), "{said:#?}");
        assert!(said.iter().any(|c| c.starts_with("~ state PENDING_REVIEW: description")), "{said:#?}");
        assert_eq!(changes.len(), 2, "{said:#?}");
        let m = mermaid(&parse(ORDER), &parse(&new), &changes);
        assert!(m.contains("class PENDING_REVIEW changed"), "{m}");
    }

    #[test]
    fn a_transition_that_goes_elsewhere_is_a_change_with_both_sides() {
        let old = parse(ORDER);
        let mut new = old.clone();
        let t = new
            .states
            .get_mut("AWAITING_PAYMENT")
            .and_then(|s| s.on.get_mut("payment.failed.v1"))
            .unwrap_or_else(|| panic!("AWAITING_PAYMENT answers payment.failed.v1"));
        t.reason = Some("PAYMENT_DECLINED_V2".into());
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1, "{changes:#?}");
        assert_eq!(changes[0].kind, Kind::Changed);
        assert_eq!(changes[0].what, "transition AWAITING_PAYMENT on payment.failed.v1");
        assert!(changes[0].detail.contains("⇒") && changes[0].detail.contains("PAYMENT_DECLINED_V2"));
        assert!(mermaid(&old, &new, &changes).contains("~ payment.failed.v1"));
        // Removing it: the event is no longer accepted there, drawn as a removed edge.
        new.states.get_mut("AWAITING_PAYMENT").map(|s| s.on.remove("payment.failed.v1"));
        let changes = diff(&old, &new);
        assert_eq!(
            (changes[0].kind, changes[0].what.as_str()),
            (Kind::Removed, "transition AWAITING_PAYMENT on payment.failed.v1")
        );
        assert!(mermaid(&old, &new, &changes).contains(": - payment.failed.v1"));
    }
}
