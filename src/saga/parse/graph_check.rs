//! The graph checks of a parsed definition: every state reachable, every
//! waiting state has a way out, no timer can fire in a state that does not
//! expect it. A child of the parser (`super`), which owns the raw TOML types.

use std::collections::{BTreeSet, VecDeque};

use super::{Ctx, RawDefinition};
use crate::saga::definition::*;

/// Whole-graph checks: reachability, ways out, timer coverage.
pub(super) fn check_graph(cx: &mut Ctx<'_>, def: &Definition, raw: &RawDefinition) {
    let line_of_state = |cx: &Ctx<'_>, s: &str| raw.states.get(s).map(|sp| cx.line_of(sp.span().start)).unwrap_or(1);

    if !def.states.values().any(|s| s.terminal) {
        cx.err_at(1, "no state is terminal; a saga must be able to finish");
    }

    // Reachability from the start state.
    let mut reachable = BTreeSet::new();
    let mut queue = VecDeque::from([def.start.to.clone()]);
    while let Some(s) = queue.pop_front() {
        if !reachable.insert(s.clone()) {
            continue;
        }
        if let Some(st) = def.states.get(&s) {
            queue.extend(st.transitions().map(|t| t.to.clone()));
        }
    }
    for s in def.states.keys() {
        if !reachable.contains(s) {
            let line = line_of_state(cx, s);
            cx.err_at(line, format!("state {s} is unreachable from the start state {}", def.start.to));
        }
    }

    // Every non-terminal state must be able to reach a terminal one.
    for (name, st) in &def.states {
        if st.terminal {
            continue;
        }
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([name.clone()]);
        let mut found = false;
        while let Some(s) = queue.pop_front() {
            if !seen.insert(s.clone()) {
                continue;
            }
            match def.states.get(&s) {
                Some(x) if x.terminal => {
                    found = true;
                    break;
                }
                Some(x) => queue.extend(x.transitions().map(|t| t.to.clone())),
                None => {}
            }
        }
        if !found {
            let line = line_of_state(cx, name);
            let why = if st.transitions().all(|t| t.to == *name) {
                "a waiting state with no way out (no transition leaves it)"
            } else {
                "no path from it reaches a terminal state"
            };
            cx.err_at(line, format!("state {name} is {why}"));
        }
    }

    // Timer coverage: explore (state, armed timers); every armed timer must be
    // handled or ignored by every state it can fire in.
    let apply = |armed: &BTreeSet<String>, t: &TransitionDef, fired: Option<&str>| {
        let mut next = armed.clone();
        if let Some(f) = fired {
            next.remove(f);
        }
        for d in &t.disarm {
            next.remove(d);
        }
        next.extend(t.arm.iter().cloned());
        next
    };
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([(def.start.to.clone(), apply(&BTreeSet::new(), &def.start, None))]);
    let mut reported = BTreeSet::new();
    while let Some((s, armed)) = queue.pop_front() {
        if !seen.insert((s.clone(), armed.clone())) {
            continue;
        }
        let Some(st) = def.states.get(&s) else {
            continue;
        };
        for timer in &armed {
            let ev = format!("{TIMER_PREFIX}{timer}");
            if !st.on.contains_key(&ev) && !st.ignore.contains(&ev) && reported.insert((s.clone(), timer.clone())) {
                let line = line_of_state(cx, &s);
                cx.err_at(
                    line,
                    format!("state {s} can be entered with timer {timer} armed but neither handles nor ignores {ev}"),
                );
            }
        }
        for t in st.transitions() {
            let fired = t.event.strip_prefix(TIMER_PREFIX);
            queue.push_back((t.to.clone(), apply(&armed, t, fired)));
        }
    }
}
