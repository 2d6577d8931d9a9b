//! The saga: definitions and the pure engine that drives instances.
//!
//! **Invariant:** this module is the functional core. It never imports sqlx,
//! rdkafka, reqwest, tokio or the clock; the shell (`orchestrator`, the
//! consumer, the sweeper, the ops actions) passes `now` in and carries the
//! returned effects out, in one database transaction.

pub mod definition;
pub mod diff;
pub mod engine;
pub mod graph;
pub mod migrate;
pub mod model;
pub mod parse;
pub mod preview;
pub mod scenario;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use definition::{Definition, DefinitionError, DefinitionErrors, MAX_TIMER, check_timer};
pub use engine::{retry_current_step, start, transition};
pub use model::{Effect, Event, EventBody, Instance, Outcome, Rejection, Transition};

/// Every loaded version of the saga definition. New sagas start on the
/// newest; running sagas stay on the version they started on.
#[derive(Debug, Clone)]
pub struct Catalog {
    versions: BTreeMap<u32, Arc<Definition>>,
    latest: Arc<Definition>,
}

impl Catalog {
    /// `None` when `defs` is empty.
    pub fn new(defs: Vec<Definition>) -> Option<Catalog> {
        let versions: BTreeMap<u32, Arc<Definition>> = defs.into_iter().map(|d| (d.version, Arc::new(d))).collect();
        let latest = versions.values().next_back()?.clone();
        Some(Catalog { versions, latest })
    }

    /// Parses and validates the definition files of `dir` (path and text of
    /// each, read by the `saga_files` module), applying timer overrides to every
    /// version.
    pub fn from_files(
        dir: &Path,
        files: &[(PathBuf, String)],
        timer_overrides: &BTreeMap<String, Duration>,
    ) -> Result<Catalog, DefinitionErrors> {
        let mut defs = parse::parse_all(dir, files)?;
        let mut errors = Vec::new();
        for d in &mut defs {
            if let Err(message) = d.override_timers(timer_overrides) {
                errors.push(DefinitionError { file: d.source.clone(), line: 0, message });
            }
        }
        if !errors.is_empty() {
            return Err(DefinitionErrors(errors));
        }
        Catalog::new(defs).ok_or_else(|| {
            DefinitionErrors(vec![DefinitionError {
                file: dir.into(),
                line: 0,
                message: "no saga definition found".into(),
            }])
        })
    }

    /// The newest version (sagas start on it).
    pub fn latest(&self) -> &Arc<Definition> {
        &self.latest
    }

    pub fn get(&self, version: u32) -> Option<&Arc<Definition>> {
        self.versions.get(&version)
    }

    pub fn versions(&self) -> impl Iterator<Item = &Arc<Definition>> {
        self.versions.values()
    }

    /// Why the daemon must not start with this catalog, given the sagas in
    /// flight per definition version `(version, count, first order ids)`: an
    /// older version removed from the files while sagas still run on it
    /// (they could never move again). A version *newer* than the latest
    /// loaded is another replica's rolling deploy: its sagas wait, that is
    /// not an error here.
    pub fn retired_in_use(&self, in_flight: &[(u32, i64, Vec<crate::domain::OrderId>)]) -> Option<String> {
        let missing: Vec<String> = in_flight
            .iter()
            .filter(|(v, n, _)| *n > 0 && *v < self.latest.version && self.get(*v).is_none())
            .map(|(v, n, ids)| {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                format!("version {v}: {n} saga(s) in flight, e.g. orders {}", ids.join(", "))
            })
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "definition versions removed from the sagas directory are still in use ({}): restore their files, or \
                 let those sagas finish (order-saga ops drain shows who is left) before retiring them",
                missing.join("; ")
            )
        })
    }
}
