//! Mermaid state diagram of a definition (`order-saga sagas graph`).

use std::fmt::Write as _;

use super::definition::{Compensate, Definition, TransitionDef};

/// Renders `stateDiagram-v2`. Labels list the event and what the transition
/// does: `run`, `compensate`, timers, order status.
pub fn mermaid(def: &Definition) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "stateDiagram-v2");
    let _ = writeln!(out, "    %% {} saga, definition version {}", def.name, def.version);
    let _ = writeln!(out, "    [*] --> {}: {}", def.start.to, label(def, &def.start));
    for (name, st) in &def.states {
        for t in st.on.values() {
            let _ = writeln!(out, "    {name} --> {}: {}", t.to, label(def, t));
        }
    }
    for (name, st) in &def.states {
        if st.terminal {
            let _ = writeln!(out, "    {name} --> [*]");
        }
        if let Some(d) = st.max_dwell {
            let _ = writeln!(out, "    note right of {name}: expected within {}", humantime::format_duration(d));
        }
    }
    out
}

fn label(def: &Definition, t: &TransitionDef) -> String {
    let mut parts = Vec::new();
    if let Some(run) = &t.run {
        let cmd = def.steps.get(run).map(|s| s.command.name()).unwrap_or(run.as_str());
        parts.push(format!("send {cmd}"));
    }
    match &t.compensate {
        Compensate::None => {}
        Compensate::All => parts.push("compensate all".into()),
        Compensate::Steps(steps) => {
            for s in steps {
                let cmd = def.steps.get(s).map(|x| x.compensation.name()).unwrap_or(s.as_str());
                parts.push(format!("send {cmd}"));
            }
        }
    }
    for a in &t.arm {
        parts.push(format!("arm {a}"));
    }
    for d in &t.disarm {
        parts.push(format!("disarm {d}"));
    }
    if let Some(st) = t.order_status {
        parts.push(format!("order {st}"));
    }
    for e in &t.emit {
        parts.push(format!("emit {}", e.name()));
    }
    // Mermaid ends a label at ';' and chokes on ':' inside it.
    let text = if parts.is_empty() { t.event.clone() } else { format!("{} / {}", t.event, parts.join(", ")) };
    text.replace([';', ':'], " ")
}
