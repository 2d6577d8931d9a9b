//! `[migrate.from.<version>]` sections: parsed with their file (the version
//! is older than the file's own, each name well formed), and checked against
//! the older file when the directory holds it ([`check_versions`]). A child
//! of the parser (`super`), which owns the raw TOML types.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{Ctx, DefinitionError};
use crate::saga::definition::Definition;
use crate::saga::migrate::{self, Migration};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMigrate {
    #[serde(default)]
    from: BTreeMap<String, Spanned<RawMigration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMigration {
    /// Older state = this version's state.
    #[serde(default)]
    states: BTreeMap<String, String>,
    /// Older state = why its sagas may not move.
    #[serde(default)]
    refuse: BTreeMap<String, String>,
}

/// The migrations a file declares, keyed by the older version.
pub(super) fn parse_migrations(
    cx: &mut Ctx<'_>,
    raw: Option<&Spanned<RawMigrate>>,
    version: i64,
) -> BTreeMap<u32, Migration> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw else { return out };
    for (key, m) in &raw.get_ref().from {
        let from = match key.parse::<u32>() {
            Ok(v) if v >= 1 && i64::from(v) < version => v,
            _ => {
                cx.err(
                    m,
                    format!("migrate.from.{key}: the version to migrate from must be older than this one ({version})"),
                );
                continue;
            }
        };
        let rm = m.get_ref();
        if rm.states.is_empty() && rm.refuse.is_empty() {
            cx.err(m, format!("migrate.from.{from}: map states (`states`) or refuse them (`refuse`)"));
        }
        for (state, why) in &rm.refuse {
            if why.trim().is_empty() {
                cx.err(m, format!("migrate.from.{from}: refuse.{state} must say why"));
            }
        }
        let line = cx.line_of(m.span().start);
        out.insert(from, Migration { from, states: rm.states.clone(), refuse: rm.refuse.clone(), line });
    }
    out
}

/// Each definition's migrations checked against the older definitions of the
/// same directory. A migration from a version no longer in the directory is
/// left alone: nothing runs on it here (startup refuses otherwise).
pub(super) fn check_versions(defs: &[Definition]) -> Vec<DefinitionError> {
    let mut errors = Vec::new();
    for new in defs {
        for m in new.migrations.values() {
            let Some(old) = defs.iter().find(|d| d.version == m.from) else { continue };
            errors.extend(migrate::check(old, new, m).into_iter().map(|message| DefinitionError {
                file: new.source.clone(),
                line: m.line,
                message,
            }));
        }
    }
    errors
}
