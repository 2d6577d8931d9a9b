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
        for t in st.transitions() {
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

pub(crate) fn label(def: &Definition, t: &TransitionDef) -> String {
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
    let event = if !t.require.is_empty() {
        let fields: Vec<&str> = t.require.iter().map(|(f, _)| f.as_str()).collect();
        format!("{} [{} as ordered]", t.event, fields.join(", "))
    } else if t.is_otherwise {
        format!("{} [otherwise]", t.event)
    } else {
        t.event.clone()
    };
    // Mermaid ends a label at ';' and chokes on ':' inside it.
    let text = if parts.is_empty() { event } else { format!("{event} / {}", parts.join(", ")) };
    text.replace([';', ':'], " ")
}

/// The state diagram as data, laid out in columns, for the ops console to
/// draw: column = shortest distance from the start (so the happy path reads
/// left to right), row = order of discovery within the column, terminal
/// states last.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagram {
    pub nodes: Vec<DiagramNode>,
    pub edges: Vec<DiagramEdge>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiagramNode {
    /// A state name, or [`START`] for the entry point.
    pub name: String,
    pub terminal: bool,
    pub column: usize,
    pub row: usize,
    pub max_dwell_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiagramEdge {
    pub from: String,
    pub to: String,
    pub event: String,
    /// What the transition does, as in the Mermaid diagram.
    pub label: String,
}

/// The name of the entry node of [`Diagram`].
pub const START: &str = "[*]";

/// Lays out `def`'s states (see [`Diagram`]).
pub fn layout(def: &Definition) -> Diagram {
    let mut edges = vec![DiagramEdge {
        from: START.into(),
        to: def.start.to.clone(),
        event: def.start.event.clone(),
        label: label(def, &def.start),
    }];
    for (name, st) in &def.states {
        for t in st.transitions() {
            edges.push(DiagramEdge {
                from: name.clone(),
                to: t.to.clone(),
                event: t.event.clone(),
                label: label(def, t),
            });
        }
    }
    // Breadth-first from the start: each state in the column of its shortest distance.
    let mut column_of: Vec<(String, usize)> = vec![(START.into(), 0)];
    let mut frontier = vec![START.to_owned()];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for from in &frontier {
            let col = column_of.iter().find(|(n, _)| n == from).map_or(0, |(_, c)| *c);
            for e in edges.iter().filter(|e| &e.from == from) {
                if !column_of.iter().any(|(n, _)| *n == e.to) {
                    column_of.push((e.to.clone(), col + 1));
                    next.push(e.to.clone());
                }
            }
        }
        frontier = next;
    }
    // States no transition reaches still get drawn, after the others.
    let last = column_of.iter().map(|(_, c)| *c).max().unwrap_or(0);
    for name in def.states.keys() {
        if !column_of.iter().any(|(n, _)| n == name) {
            column_of.push((name.clone(), last + 1));
        }
    }
    // Within a column: states that lead on to a later column first, terminal
    // ones last, so that the happy path runs along the top row.
    let col_of = |n: &str| column_of.iter().find(|(x, _)| x == n).map_or(0, |(_, c)| *c);
    let sort_key = |name: &str, column: usize| {
        let terminal = def.states.get(name).is_some_and(|s| s.terminal);
        let leads_on = edges.iter().any(|e| e.from == name && col_of(&e.to) > column);
        (column, terminal, !leads_on)
    };
    let keys: Vec<(usize, bool, bool)> = column_of.iter().map(|(n, c)| sort_key(n, *c)).collect();
    let mut order: Vec<usize> = (0..column_of.len()).collect();
    order.sort_by_key(|i| keys[*i]);
    let column_of: Vec<(String, usize)> = order.into_iter().map(|i| column_of[i].clone()).collect();
    let mut rows_used: Vec<usize> = Vec::new();
    let nodes = column_of
        .into_iter()
        .map(|(name, column)| {
            if rows_used.len() <= column {
                rows_used.resize(column + 1, 0);
            }
            let row = rows_used[column];
            rows_used[column] += 1;
            let st = def.states.get(&name);
            DiagramNode {
                terminal: st.is_some_and(|s| s.terminal),
                max_dwell_seconds: st.and_then(|s| s.max_dwell).map(|d| d.as_secs()),
                name,
                column,
                row,
            }
        })
        .collect();
    Diagram { nodes, edges }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_saga_reads_left_to_right_and_every_state_is_placed_once() {
        let def = &crate::saga::parse::parse(
            std::path::Path::new("sagas/order.toml"),
            include_str!("../../sagas/order.toml"),
        )
        .expect("the shipped definition parses");
        let d = layout(def);
        let col = |n: &str| d.nodes.iter().find(|x| x.name == n).map(|x| x.column);
        assert_eq!(col(START), Some(0));
        assert_eq!(col("RESERVING_INVENTORY"), Some(1));
        assert_eq!(col("AWAITING_PAYMENT"), Some(2));
        assert_eq!(col("COMPLETED"), Some(3));
        assert_eq!(d.nodes.len(), def.states.len() + 1);
        let mut cells: Vec<(usize, usize)> = d.nodes.iter().map(|n| (n.column, n.row)).collect();
        cells.sort();
        cells.dedup();
        assert_eq!(cells.len(), d.nodes.len(), "no two states share a cell");
        for e in &d.edges {
            assert!(d.nodes.iter().any(|n| n.name == e.from) && d.nodes.iter().any(|n| n.name == e.to), "{e:?}");
        }
        assert!(d.nodes.iter().any(|n| n.name == "COMPLETED" && n.terminal));
        let row = |n: &str| d.nodes.iter().find(|x| x.name == n).map(|x| x.row);
        assert_eq!(
            [row(START), row("RESERVING_INVENTORY"), row("AWAITING_PAYMENT"), row("COMPLETED")],
            [Some(0); 4],
            "the happy path runs along the top row"
        );
    }
}
