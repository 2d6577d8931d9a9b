//! Reading saga definitions from disk: the filesystem half of loading a
//! [`Catalog`], kept out of the pure `saga` module (which parses and validates
//! text it is given), and the `order-saga sagas` commands over them (`cli`).

pub mod cli;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::saga::{Catalog, DefinitionError, DefinitionErrors};

/// Reads every `*.toml` in `dir` (sorted by name) and builds the catalog,
/// applying `timer_overrides` to every version.
pub fn load_catalog(dir: &Path, timer_overrides: &BTreeMap<String, Duration>) -> Result<Catalog, DefinitionErrors> {
    let one =
        |file: &Path, message: String| DefinitionErrors(vec![DefinitionError { file: file.into(), line: 0, message }]);
    let entries = std::fs::read_dir(dir).map_err(|e| one(dir, format!("cannot read the sagas directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => errors.push(DefinitionError { file: path, line: 0, message: format!("cannot read: {e}") }),
        }
    }
    if !errors.is_empty() {
        return Err(DefinitionErrors(errors));
    }
    Catalog::from_files(dir, &files, timer_overrides)
}
