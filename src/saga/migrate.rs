//! Moving sagas in flight from an older definition version onto a newer one.
//!
//! A definition says, for an older version, where each of that version's
//! non-terminal states goes, or why sagas in it may not move:
//!
//! ```toml
//! [migrate.from.1]
//! states = { AWAITING_PAYMENT = "AWAITING_AUTHORIZATION", RESERVING_INVENTORY = "RESERVING_INVENTORY" }
//! refuse = { PENDING_REVIEW = "reviews finish on version 1" }
//! ```
//!
//! [`check`] validates that against the older file when both are loaded:
//! every non-terminal state mapped or refused, targets that exist and are not
//! terminal, the same step waited on, and every step of the older version
//! still there with the same messages — so that a saga's outstanding command
//! keeps its correlation (command ids and payment intents are derived from
//! step names and run counts, which move with the saga unchanged) and what it
//! did can still be compensated. [`migrate`] is the decision for one saga:
//! its new state and version, and its timers re-armed as the new definition
//! says. Pure: definitions, the saga and the database's `now` in.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::definition::Definition;
use super::model::Instance;
use crate::domain::SagaVersion;

/// The event name of a migration in the transition log.
pub const MIGRATE_EVENT: &str = "definition.migrated";

/// The transition log's reason for a migration row.
pub const MIGRATED_REASON: &str = "MIGRATED";

/// `[migrate.from.<from>]` of a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub from: u32,
    /// Older state → this version's state.
    pub states: BTreeMap<String, String>,
    /// Older state → why its sagas may not move.
    pub refuse: BTreeMap<String, String>,
    /// Line of the section, for messages.
    pub line: usize,
}

/// What `new`'s migration from `old` gets wrong (empty when it is sound).
pub fn check(old: &Definition, new: &Definition, m: &Migration) -> Vec<String> {
    let (o, n) = (old.version, new.version);
    let mut errors = Vec::new();
    for name in m.states.keys().chain(m.refuse.keys()) {
        match old.state(name) {
            None => errors.push(format!("migrate.from.{o}: version {o} has no state {name}")),
            Some(s) if s.terminal => errors.push(format!(
                "migrate.from.{o}: state {name} is terminal in version {o}; finished sagas stay on their version"
            )),
            Some(_) => {}
        }
    }
    for name in m.states.keys().filter(|s| m.refuse.contains_key(*s)) {
        errors.push(format!("migrate.from.{o}: state {name} is both mapped and refused"));
    }
    for s in old.states.values().filter(|s| !s.terminal) {
        if !m.states.contains_key(&s.name) && !m.refuse.contains_key(&s.name) {
            errors.push(format!(
                "migrate.from.{o}: state {} of version {o} is in neither `states` nor `refuse`; say where its sagas go, \
                 or refuse them",
                s.name
            ));
        }
    }
    for (from, to) in &m.states {
        let Some(target) = new.state(to) else {
            errors.push(format!("migrate.from.{o}: {from} goes to {to}, which version {n} does not have"));
            continue;
        };
        if target.terminal {
            errors.push(format!(
                "migrate.from.{o}: {from} goes to {to}, a terminal state; a migration must not finish a saga \
                 (it would skip the effects of getting there)"
            ));
        }
        let waited = old.state(from).and_then(|s| s.step.as_deref());
        if old.state(from).is_some() && waited != target.step.as_deref() {
            errors.push(format!(
                "migrate.from.{o}: {from} waits on step {} in version {o}, {to} on step {} in version {n}; the reply \
                 its saga waits for would not be the one expected",
                waited.unwrap_or("none"),
                target.step.as_deref().unwrap_or("none")
            ));
        }
    }
    for step in old.steps.values() {
        if new.steps.get(&step.name) != Some(step) {
            errors.push(format!(
                "migrate.from.{o}: step {} of version {o} is not in version {n} with the same command, compensation, \
                 replies and correlation; sagas that ran it could not be answered or compensated",
                step.name
            ));
        }
    }
    errors
}

/// An armed timer as a migration sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed {
    pub name: String,
    pub due: DateTime<Utc>,
    /// The saga version that armed it (part of its firing's event id).
    pub armed_version: SagaVersion,
}

/// What a migration does to one timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerChange {
    /// Armed and staying at the same due time.
    Kept { name: String, due: DateTime<Utc> },
    /// Armed; its due time moves by the difference of the two durations.
    Moved { name: String, from: DateTime<Utc>, to: DateTime<Utc>, armed_version: SagaVersion },
    /// Not armed; every way into the new state arms it, so it is armed,
    /// counted from when the saga entered its state.
    Armed { name: String, due: DateTime<Utc> },
    /// Armed, but the new definition would not expect it in the new state.
    Disarmed { name: String, why: String },
}

/// One saga moved: its new row and what happens to its timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub instance: Instance,
    pub from_version: u32,
    pub from_state: String,
    pub timers: Vec<TimerChange>,
}

impl Migrated {
    /// The transition log's reason for it, e.g. `MIGRATED:v1→v2`.
    pub fn reason(&self) -> String {
        format!("{MIGRATED_REASON}:v{}→v{}", self.from_version, self.instance.definition_version)
    }
}

/// Why a saga cannot be migrated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the saga runs on version {runs}, which is already version {to} or newer")]
    NotNewer { runs: u32, to: u32 },
    #[error("version {to} declares no migration from version {from} ([migrate.from.{from}])")]
    NoMigration { from: u32, to: u32 },
    #[error("the saga is finished (state {state}); finished sagas stay on their version")]
    Finished { state: String },
    #[error("version {to} refuses to migrate sagas in state {state}: {why}")]
    StateRefused { to: u32, state: String, why: String },
    #[error("version {to} does not say where state {state} goes")]
    Unmapped { to: u32, state: String },
    #[error("the saga runs on version {runs}, not {old}")]
    WrongDefinition { runs: u32, old: u32 },
}

/// Moves `inst` (on `old`) onto `new`, with its armed `timers`.
pub fn migrate(old: &Definition, new: &Definition, inst: &Instance, timers: &[Armed]) -> Result<Migrated, Refused> {
    let (from, to) = (old.version, new.version);
    if inst.definition_version != from {
        return Err(Refused::WrongDefinition { runs: inst.definition_version, old: from });
    }
    if to <= from {
        return Err(Refused::NotNewer { runs: from, to });
    }
    let m = new.migrations.get(&from).ok_or(Refused::NoMigration { from, to })?;
    let state = &inst.state;
    if old.state(state).is_none_or(|s| s.terminal) {
        return Err(Refused::Finished { state: state.clone() });
    }
    if let Some(why) = m.refuse.get(state) {
        return Err(Refused::StateRefused { to, state: state.clone(), why: why.clone() });
    }
    let target_name = m.states.get(state).ok_or_else(|| Refused::Unmapped { to, state: state.clone() })?;
    let target = new.state(target_name).ok_or_else(|| Refused::Unmapped { to, state: state.clone() })?;

    let mut changes = Vec::new();
    let expects = |name: &str| {
        let ev = format!("{}{name}", super::definition::TIMER_PREFIX);
        target.on.contains_key(&ev) || target.ignore.contains(&ev)
    };
    for t in timers {
        let Some(new_len) = new.timers.get(&t.name) else {
            changes.push(TimerChange::Disarmed {
                name: t.name.clone(),
                why: format!("version {to} has no timer {}", t.name),
            });
            continue;
        };
        if !expects(&t.name) {
            changes.push(TimerChange::Disarmed {
                name: t.name.clone(),
                why: format!("state {target_name} of version {to} does not expect it"),
            });
            continue;
        }
        // Counted from when it was armed: the due time moves by the change in length.
        let shift = old
            .timers
            .get(&t.name)
            .and_then(|old_len| {
                let (n, o) = (chrono::Duration::from_std(*new_len).ok()?, chrono::Duration::from_std(*old_len).ok()?);
                Some(n - o)
            })
            .unwrap_or_else(chrono::Duration::zero);
        let due = t.due.checked_add_signed(shift).unwrap_or(t.due);
        changes.push(if due == t.due {
            TimerChange::Kept { name: t.name.clone(), due }
        } else {
            TimerChange::Moved { name: t.name.clone(), from: t.due, to: due, armed_version: t.armed_version }
        });
    }
    let armed: BTreeSet<&str> = timers.iter().map(|t| t.name.as_str()).collect();
    for name in arms_on_every_way_in(new, target_name) {
        if armed.contains(name.as_str()) {
            continue;
        }
        let Some(len) = new.timers.get(&name).and_then(|d| chrono::Duration::from_std(*d).ok()) else { continue };
        let due = inst.state_entered_at.checked_add_signed(len).unwrap_or(inst.state_entered_at);
        changes.push(TimerChange::Armed { name, due });
    }

    let mut instance = inst.clone();
    instance.definition_version = to;
    instance.state = target_name.clone();
    instance.version = inst.version.next();
    Ok(Migrated { instance, from_version: from, from_state: state.clone(), timers: changes })
}

/// The timers every transition into `state` arms (none when no transition leads there).
fn arms_on_every_way_in(def: &Definition, state: &str) -> BTreeSet<String> {
    // A self-loop keeps the state's timers as they are: it is not a way in.
    let ways = std::iter::once(&def.start)
        .chain(def.states.values().filter(|s| s.name != state).flat_map(|s| s.transitions()))
        .filter(|t| t.to == state);
    let mut common: Option<BTreeSet<String>> = None;
    for t in ways {
        let arms: BTreeSet<String> = t.arm.iter().cloned().collect();
        common = Some(match common {
            None => arms,
            Some(c) => c.intersection(&arms).cloned().collect(),
        });
    }
    common.unwrap_or_default()
}

#[cfg(test)]
mod tests;
