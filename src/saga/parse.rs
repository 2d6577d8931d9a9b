//! Parsing and validating saga definitions from TOML text (`sagas/*.toml`,
//! read by the `saga_files` module), into the model of `super::definition`.
//!
//! Validation reports every problem with its file and line: unknown names,
//! unreachable states, waiting states with no way out, steps without a
//! compensation, timers that could fire in a state that does not expect them.
//! Which messages a step may run, compensate, emit or react to comes from the
//! message vocabulary (`contracts::Role`).

// Message kinds are matched exhaustively here: a new kind must be handled,
// never swallowed by a `_` arm (ARCHITECTURE.md, "Adding a participant message").
#![warn(clippy::wildcard_enum_match_arm)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::definition::{
    Compensate, Correlation, Definition, DefinitionError, DefinitionErrors, Fact, ManualEventDef, START_EVENT,
    StateDef, StepDef, TIMER_PREFIX, TransitionDef, check_timer, inbound_kinds,
};
use crate::contracts::{Emit, MessageKind, Role};
use crate::domain::OrderStatus;

mod graph_check;
mod migrations;
use self::graph_check::check_graph;
use self::migrations::{RawMigrate, check_versions, parse_migrations};

/// Commands a step may run (`command = ...`), from the vocabulary.
fn run_commands() -> Vec<MessageKind> {
    MessageKind::all_where(|r| matches!(r, Role::Command(_))).collect()
}

/// Compensations a step may send (`compensation = ...`), from the vocabulary.
fn compensations() -> Vec<MessageKind> {
    MessageKind::all_where(|r| matches!(r, Role::Compensation(_))).collect()
}

/// Events a transition may emit (commands are sent by running/compensating steps).
fn emittable() -> Vec<MessageKind> {
    MessageKind::all_where(|r| matches!(r, Role::Event { emit: Emit::Any | Emit::On(_) })).collect()
}

fn names(kinds: &[MessageKind]) -> impl Iterator<Item = &'static str> + '_ {
    kinds.iter().map(|k| k.name())
}

// ---------------------------------------------------------------- raw TOML

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: Spanned<String>,
    version: Spanned<i64>,
    description: Option<String>,
    start: Spanned<RawTransition>,
    #[serde(default)]
    steps: BTreeMap<String, Spanned<RawStep>>,
    #[serde(default)]
    timers: BTreeMap<String, Spanned<RawTimer>>,
    #[serde(default)]
    manual_events: BTreeMap<String, Spanned<RawManual>>,
    #[serde(default)]
    states: BTreeMap<String, Spanned<RawState>>,
    /// `[migrate.from.<version>]`: how sagas of older versions move onto this one.
    migrate: Option<Spanned<RawMigrate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    command: Spanned<String>,
    compensation: Option<Spanned<String>>,
    #[serde(default)]
    replies: Vec<Spanned<String>>,
    correlate: Option<Spanned<String>>,
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimer {
    after: Spanned<String>,
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManual {
    order_status: Option<Spanned<String>>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    #[serde(default)]
    terminal: bool,
    step: Option<Spanned<String>>,
    max_dwell: Option<Spanned<String>>,
    description: Option<String>,
    #[serde(default)]
    ignore: Vec<Spanned<String>>,
    #[serde(default)]
    on: Vec<Spanned<RawTransition>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCompensate {
    Keyword(String),
    Steps(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransition {
    /// Required, except in an `otherwise`, which takes its parent's.
    event: Option<Spanned<String>>,
    to: Spanned<String>,
    order_status: Option<Spanned<String>>,
    reason: Option<String>,
    run: Option<Spanned<String>>,
    compensate: Option<Spanned<RawCompensate>>,
    #[serde(default)]
    arm: Vec<Spanned<String>>,
    #[serde(default)]
    disarm: Vec<Spanned<String>>,
    #[serde(default)]
    emit: Vec<Spanned<String>>,
    alert: Option<String>,
    #[serde(default)]
    require: BTreeMap<String, Spanned<String>>,
    otherwise: Option<Box<Spanned<RawTransition>>>,
    #[allow(dead_code)]
    description: Option<String>,
}

// ---------------------------------------------------------------- parsing

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<DefinitionError>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn err<T>(&mut self, span: &Spanned<T>, message: impl Into<String>) {
        let line = self.line_of(span.span().start);
        self.err_at(line, message);
    }

    fn err_at(&mut self, line: usize, message: impl Into<String>) {
        self.errors.push(DefinitionError { file: self.file.to_path_buf(), line, message: message.into() });
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e}); e.g. \"15m\""))?;
    check_timer(d)
}

fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = names.into_iter().map(|s| s.as_ref().to_owned()).collect();
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

/// Parses and validates one definition file's text.
pub fn parse(file: &Path, text: &str) -> Result<Definition, DefinitionErrors> {
    let mut cx = Ctx { file, text, errors: Vec::new() };
    let raw: RawDefinition = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let line = e.span().map(|s| cx.line_of(s.start)).unwrap_or(1);
            cx.err_at(line, e.message().to_owned());
            return Err(DefinitionErrors(cx.errors));
        }
    };

    let name = raw.name.get_ref().clone();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        cx.err(&raw.name, format!("saga name {name:?} must be lower-case letters, digits, '_' or '-'"));
    }
    let version = *raw.version.get_ref();
    if !(1..=i64::from(u32::MAX)).contains(&version) {
        cx.err(&raw.version, "version must be a positive integer");
    }

    // Steps.
    let mut steps = BTreeMap::new();
    let (run_commands, compensations) = (run_commands(), compensations());
    for (sname, s) in &raw.steps {
        let rs = s.get_ref();
        let command = match rs.command.get_ref().parse::<MessageKind>() {
            Ok(k) if run_commands.contains(&k) => Some(k),
            _ => {
                cx.err(
                    &rs.command,
                    format!(
                        "step {sname}: unknown command {:?} (known: {})",
                        rs.command.get_ref(),
                        list(names(&run_commands))
                    ),
                );
                None
            }
        };
        let compensation = match &rs.compensation {
            None => {
                cx.err(s, format!("step {sname} has no compensation; every step must say how it is undone"));
                None
            }
            Some(c) => match c.get_ref().parse::<MessageKind>() {
                Ok(k) if compensations.contains(&k) => Some(k),
                _ => {
                    cx.err(
                        c,
                        format!(
                            "step {sname}: unknown compensation {:?} (known: {})",
                            c.get_ref(),
                            list(names(&compensations))
                        ),
                    );
                    None
                }
            },
        };
        let (replies, correlate) = parse_replies(&mut cx, sname, s);
        if let (Some(command), Some(compensation)) = (command, compensation) {
            steps.insert(sname.clone(), StepDef { name: sname.clone(), command, compensation, replies, correlate });
        }
    }
    let mut answered: BTreeMap<MessageKind, &str> = BTreeMap::new();
    for st in steps.values() {
        for k in &st.replies {
            if let Some(other) = answered.insert(*k, &st.name) {
                let span = &raw.steps[&st.name];
                cx.err(span, format!("{} answers both step {other} and step {}", k.name(), st.name));
            }
        }
    }

    // Timers.
    let mut timers = BTreeMap::new();
    for (tname, t) in &raw.timers {
        match parse_duration(t.get_ref().after.get_ref()) {
            Ok(d) => {
                timers.insert(tname.clone(), d);
            }
            Err(e) => cx.err(&t.get_ref().after, format!("timer {tname}: {e}")),
        }
    }

    // Manual events.
    let mut manual_events = BTreeMap::new();
    let inbound: BTreeSet<&str> = inbound_kinds().map(|k| k.name()).collect();
    for (mname, m) in &raw.manual_events {
        if inbound.contains(mname.as_str()) || mname.starts_with(TIMER_PREFIX) || mname == START_EVENT {
            cx.err(m, format!("manual event {mname:?} clashes with a message or timer event name"));
            continue;
        }
        let order_status = match &m.get_ref().order_status {
            None => None,
            Some(s) => match s.get_ref().parse::<OrderStatus>() {
                Ok(st) => Some(st),
                Err(e) => {
                    cx.err(s, e.to_string());
                    None
                }
            },
        };
        manual_events.insert(
            mname.clone(),
            ManualEventDef { name: mname.clone(), order_status, description: m.get_ref().description.clone() },
        );
    }
    let mut mapped = BTreeMap::new();
    for m in manual_events.values() {
        if let Some(st) = m.order_status
            && let Some(other) = mapped.insert(st, m.name.clone())
        {
            let span = &raw.manual_events[&m.name];
            cx.err(span, format!("order_status {st} is mapped by both {other} and {}", m.name));
        }
    }

    let state_names: BTreeSet<String> = raw.states.keys().cloned().collect();
    let mut known_events: BTreeSet<String> = inbound.iter().map(|s| (*s).to_owned()).collect();
    known_events.extend(timers.keys().map(|t| format!("{TIMER_PREFIX}{t}")));
    known_events.extend(manual_events.keys().cloned());
    // Also names the raw timers declare, so a bad duration does not cascade.
    known_events.extend(raw.timers.keys().map(|t| format!("{TIMER_PREFIX}{t}")));

    let migrations = parse_migrations(&mut cx, raw.migrate.as_ref(), version);

    let start = parse_transition(&mut cx, &raw.start, None, None, &state_names, &raw.steps, &raw.timers);
    match &raw.start.get_ref().event {
        Some(ev) if ev.get_ref() == START_EVENT => {}
        Some(ev) => cx.err(ev, format!("the start event must be {START_EVENT:?}")),
        None => cx.err(&raw.start, format!("the start transition needs event = {START_EVENT:?}")),
    }

    // States.
    let mut states = BTreeMap::new();
    for (sname, s) in &raw.states {
        if sname.is_empty() || !sname.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
            cx.err(s, format!("state name {sname:?} must be UPPER_SNAKE_CASE"));
        }
        let rs = s.get_ref();
        let step = rs.step.as_ref().and_then(|st| {
            if raw.steps.contains_key(st.get_ref()) {
                Some(st.get_ref().clone())
            } else {
                cx.err(
                    st,
                    format!("state {sname}: unknown step {:?} (known: {})", st.get_ref(), list(raw.steps.keys())),
                );
                None
            }
        });
        let max_dwell = rs.max_dwell.as_ref().and_then(|d| match parse_duration(d.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                cx.err(d, format!("state {sname}: max_dwell: {e}"));
                None
            }
        });
        let mut on = BTreeMap::new();
        for t in &rs.on {
            let Some(ev_span) = &t.get_ref().event else {
                cx.err(t, format!("state {sname}: a transition needs an event"));
                continue;
            };
            let ev = ev_span.get_ref();
            if !known_events.contains(ev) {
                cx.err(ev_span, format!("state {sname}: unknown event {ev:?} (known: {})", list(&known_events)));
            }
            if let Some(td) = parse_transition(&mut cx, t, Some(sname), None, &state_names, &raw.steps, &raw.timers) {
                if on.contains_key(&td.event) {
                    cx.err(ev_span, format!("state {sname}: event {ev:?} has two transitions"));
                }
                on.insert(td.event.clone(), td);
            }
        }
        let mut ignore = BTreeSet::new();
        for ev in &rs.ignore {
            if !known_events.contains(ev.get_ref()) {
                cx.err(
                    ev,
                    format!(
                        "state {sname}: unknown event {:?} in ignore (known: {})",
                        ev.get_ref(),
                        list(&known_events)
                    ),
                );
            } else if on.contains_key(ev.get_ref()) {
                cx.err(ev, format!("state {sname}: event {:?} is both handled and ignored", ev.get_ref()));
            }
            ignore.insert(ev.get_ref().clone());
        }
        states.insert(
            sname.clone(),
            StateDef {
                name: sname.clone(),
                terminal: rs.terminal,
                step,
                max_dwell,
                description: rs.description.clone(),
                on,
                ignore,
            },
        );
    }

    if !cx.errors.is_empty() {
        return Err(DefinitionErrors(cx.errors));
    }
    let Some(start) = start else {
        return Err(DefinitionErrors(cx.errors));
    };
    let def = Definition {
        name,
        version: version as u32,
        description: raw.description.clone(),
        source: file.to_path_buf(),
        start,
        steps,
        timers,
        manual_events,
        states,
        migrations,
    };
    check_graph(&mut cx, &def, &raw);
    if cx.errors.is_empty() { Ok(def) } else { Err(DefinitionErrors(cx.errors)) }
}

/// A step's `replies` and `correlate`: each reply an inbound message that
/// carries the correlation field; both or neither.
fn parse_replies(cx: &mut Ctx<'_>, sname: &str, s: &Spanned<RawStep>) -> (Vec<MessageKind>, Option<Correlation>) {
    let rs = s.get_ref();
    let correlate = rs.correlate.as_ref().and_then(|c| {
        let parsed = Correlation::parse(c.get_ref());
        if parsed.is_none() {
            cx.err(
                c,
                format!(
                    "step {sname}: correlate must be \"command_id\" or \"payment_intent_id\", found {:?}",
                    c.get_ref()
                ),
            );
        }
        parsed
    });
    let mut replies = Vec::new();
    for r in &rs.replies {
        match r.get_ref().parse::<MessageKind>() {
            Ok(k) if k.role() == Role::Reply => {
                if let Some(c) = correlate
                    && !message_fields(k).iter().any(|f| f == c.field())
                {
                    cx.err(r, format!("step {sname}: {} has no field {} to correlate on", k.name(), c.field()));
                }
                replies.push(k);
            }
            _ => cx.err(
                r,
                format!(
                    "step {sname}: {:?} is not a reply (known: {})",
                    r.get_ref(),
                    list(inbound_kinds().map(|k| k.name()))
                ),
            ),
        }
    }
    if replies.is_empty() != rs.correlate.is_none() {
        cx.err(s, format!("step {sname}: replies and correlate go together (which replies answer the step, and how)"));
    }
    (replies, correlate)
}

/// The field names of a message's Avro record.
fn message_fields(kind: MessageKind) -> Vec<String> {
    if let apache_avro::schema::Schema::Record(r) = kind.schema() {
        r.fields.iter().map(|f| f.name.clone()).collect()
    } else {
        Vec::new()
    }
}

fn parse_transition(
    cx: &mut Ctx<'_>,
    t: &Spanned<RawTransition>,
    state: Option<&str>,
    parent_event: Option<&str>,
    states: &BTreeSet<String>,
    steps: &BTreeMap<String, Spanned<RawStep>>,
    timers: &BTreeMap<String, Spanned<RawTimer>>,
) -> Option<TransitionDef> {
    let rt = t.get_ref();
    let event = match (parent_event, &rt.event) {
        (None, Some(e)) => e.get_ref().clone(),
        (Some(p), None) => p.to_owned(),
        (Some(p), Some(e)) => {
            cx.err(e, format!("an otherwise takes its transition's event ({p}); do not name one"));
            p.to_owned()
        }
        (None, None) => String::new(),
    };
    let here = match (state, parent_event) {
        (Some(s), None) => format!("state {s}, on {event}"),
        (Some(s), Some(_)) => format!("state {s}, on {event}, otherwise"),
        (None, _) => "start".into(),
    };
    let before = cx.errors.len();
    if !states.contains(rt.to.get_ref()) {
        cx.err(&rt.to, format!("{here}: unknown state {:?} (known: {})", rt.to.get_ref(), list(states)));
    }
    let order_status = rt.order_status.as_ref().and_then(|s| match s.get_ref().parse::<OrderStatus>() {
        Ok(st) => Some(st),
        Err(e) => {
            cx.err(s, format!("{here}: {e}"));
            None
        }
    });
    if let Some(run) = &rt.run
        && !steps.contains_key(run.get_ref())
    {
        cx.err(run, format!("{here}: unknown step {:?} (known: {})", run.get_ref(), list(steps.keys())));
    }
    let compensate = match &rt.compensate {
        None => Compensate::None,
        Some(c) => match c.get_ref() {
            RawCompensate::Keyword(k) if k == "all" => Compensate::All,
            RawCompensate::Keyword(k) => {
                cx.err(c, format!("{here}: compensate must be \"all\" or a list of steps, found {k:?}"));
                Compensate::None
            }
            RawCompensate::Steps(list_) => {
                for s in list_ {
                    if !steps.contains_key(s) {
                        cx.err(
                            c,
                            format!("{here}: compensate names unknown step {s:?} (known: {})", list(steps.keys())),
                        );
                    }
                }
                Compensate::Steps(list_.clone())
            }
        },
    };
    for tm in rt.arm.iter().chain(&rt.disarm) {
        if !timers.contains_key(tm.get_ref()) {
            cx.err(tm, format!("{here}: unknown timer {:?} (known: {})", tm.get_ref(), list(timers.keys())));
        }
    }
    let mut emit = Vec::new();
    let emittable = emittable();
    for e in &rt.emit {
        match e.get_ref().parse::<MessageKind>() {
            Ok(k) if emittable.contains(&k) => {
                if let Role::Event { emit: Emit::On(on) } = k.role()
                    && event != on.name()
                {
                    cx.err(e, format!("{here}: {} can only be emitted on {}", k.name(), on.name()));
                }
                emit.push(k);
            }
            _ => cx.err(
                e,
                format!(
                    "{here}: cannot emit {:?} (emittable: {}; commands are sent by run/compensate)",
                    e.get_ref(),
                    list(names(&emittable))
                ),
            ),
        }
    }
    if let Some(reason) = &rt.reason
        && !reason.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        cx.err(t, format!("{here}: reason {reason:?} must be UPPER_SNAKE_CASE"));
    }
    let require = parse_require(cx, &here, &event, rt);
    let otherwise = match (&rt.otherwise, require.is_empty()) {
        (Some(o), false) => parse_transition(cx, o, state, Some(&event), states, steps, timers).map(Box::new),
        (Some(o), true) => {
            cx.err(o.as_ref(), format!("{here}: otherwise needs a require on its transition"));
            None
        }
        (None, false) => {
            cx.err(t, format!("{here}: a require needs an otherwise (what happens when the reply does not match)"));
            None
        }
        (None, true) => None,
    };
    if parent_event.is_some() && rt.otherwise.is_some() {
        cx.err(t, format!("{here}: an otherwise cannot have its own otherwise"));
    }
    if cx.errors.len() > before {
        return None;
    }
    Some(TransitionDef {
        event,
        require,
        otherwise,
        is_otherwise: parent_event.is_some(),
        to: rt.to.get_ref().clone(),
        order_status,
        reason: rt.reason.clone(),
        run: rt.run.as_ref().map(|r| r.get_ref().clone()),
        compensate,
        arm: rt.arm.iter().map(|a| a.get_ref().clone()).collect(),
        disarm: rt.disarm.iter().map(|a| a.get_ref().clone()).collect(),
        emit,
        alert: rt.alert.clone(),
        line: cx.line_of(t.span().start),
    })
}

/// A transition's guard: `require = { reply_field = "order.fact" }`, only on
/// transitions taken on a reply, naming fields the reply has and known facts.
fn parse_require(cx: &mut Ctx<'_>, here: &str, event: &str, rt: &RawTransition) -> Vec<(String, Fact)> {
    if rt.require.is_empty() {
        return Vec::new();
    }
    let kind = event.parse::<MessageKind>().ok().filter(|k| k.role() == Role::Reply);
    let fields = kind.map(message_fields).unwrap_or_default();
    let mut out = Vec::new();
    for (field, fact) in &rt.require {
        if kind.is_none() {
            cx.err(fact, format!("{here}: require is only for transitions taken on a reply"));
            continue;
        }
        if !fields.contains(field) {
            cx.err(fact, format!("{here}: {event} has no field {field:?} (fields: {})", list(&fields)));
        }
        match Fact::ALL.into_iter().find(|f| f.name() == fact.get_ref()) {
            Some(f) => out.push((field.clone(), f)),
            None => cx.err(
                fact,
                format!("{here}: unknown fact {:?} (known: {})", fact.get_ref(), list(Fact::ALL.map(Fact::name))),
            ),
        }
    }
    out
}

/// Parses every definition file of a directory (`dir`, for error messages;
/// `files`: each file's path and text, read by the shell — see
/// the `saga_files` module). All files must define the same saga name, each with a
/// distinct version.
pub fn parse_all(dir: &Path, files: &[(PathBuf, String)]) -> Result<Vec<Definition>, DefinitionErrors> {
    if files.is_empty() {
        return Err(DefinitionErrors(vec![DefinitionError {
            file: dir.into(),
            line: 0,
            message: "no saga definition (*.toml) found".into(),
        }]));
    }
    let mut defs = Vec::new();
    let mut errors = Vec::new();
    for (f, text) in files {
        match parse(f, text) {
            Ok(d) => defs.push(d),
            Err(DefinitionErrors(es)) => errors.extend(es),
        }
    }
    if !errors.is_empty() {
        return Err(DefinitionErrors(errors));
    }
    let name = defs[0].name.clone();
    let mut versions = BTreeMap::new();
    for d in &defs {
        if d.name != name {
            errors.push(DefinitionError {
                file: d.source.clone(),
                line: 1,
                message: format!(
                    "saga name {:?} differs from {:?} in {}; one saga per directory",
                    d.name,
                    name,
                    defs[0].source.display()
                ),
            });
        }
        if let Some(other) = versions.insert(d.version, d.source.clone()) {
            errors.push(DefinitionError {
                file: d.source.clone(),
                line: 1,
                message: format!("version {} is also defined in {}", d.version, other.display()),
            });
        }
    }
    errors.extend(check_versions(&defs));
    if errors.is_empty() { Ok(defs) } else { Err(DefinitionErrors(errors)) }
}
