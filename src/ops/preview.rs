//! What a candidate definition would do to every saga in flight: the
//! `order-saga sagas preview NEW.toml` command and `POST
//! /ops/definitions/preview` (the console's Definitions page) share this.
//! Read-only, in pages of 1,000 sagas so memory stays bounded whatever their
//! number; each saga judged by the pure `saga::preview`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::domain::OrderId;
use crate::saga::preview::{Verdict, judge};
use crate::saga::{Catalog, Definition, DefinitionError, DefinitionErrors};
use crate::store::{Db, StoreError, inspect};

/// The preview of one candidate.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PreviewReport {
    /// The candidate's version.
    pub version: u32,
    pub in_flight: u64,
    /// Sagas the candidate would treat differently.
    pub divergent: u64,
    /// Per current state.
    pub states: BTreeMap<String, StateCount>,
    /// The first divergent sagas (at most the sample asked for), each with its timeline.
    pub sample: Vec<Divergent>,
    pub elapsed_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct StateCount {
    pub in_flight: u64,
    pub divergent: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Divergent {
    #[schema(value_type = i64)]
    pub order_id: OrderId,
    pub state: String,
    pub definition_version: u32,
    /// The verdict: where its past diverges, or how its state would answer differently.
    #[schema(value_type = Object)]
    pub how: Verdict,
    /// Its transitions, `from --event--> to`.
    pub timeline: Vec<String>,
}

/// Parses a candidate file's text and checks its `[migrate.from.N]` sections
/// against the versions loaded here, as loading it beside them would.
pub fn candidate(file: &Path, text: &str, catalog: &Catalog) -> Result<Definition, DefinitionErrors> {
    let def = crate::saga::parse::parse(file, text)?;
    let errors: Vec<DefinitionError> = def
        .migrations
        .values()
        .filter_map(|m| catalog.get(m.from).map(|old| (m, old)))
        .flat_map(|(m, old)| {
            crate::saga::migrate::check(old, &def, m).into_iter().map(|message| DefinitionError {
                file: file.to_path_buf(),
                line: m.line,
                message,
            })
        })
        .collect();
    if errors.is_empty() { Ok(def) } else { Err(DefinitionErrors(errors)) }
}

/// Judges every saga in flight against `candidate` (each against the
/// version it runs on), keeping at most `sample` divergent examples.
pub async fn preview(
    db: &Db,
    catalog: &Catalog,
    candidate: &Definition,
    sample: usize,
) -> Result<PreviewReport, StoreError> {
    let started = std::time::Instant::now();
    let mut report = PreviewReport {
        version: candidate.version,
        in_flight: 0,
        divergent: 0,
        states: BTreeMap::new(),
        sample: Vec::new(),
        elapsed_ms: 0.0,
    };
    let mut after = None;
    loop {
        let page = inspect::in_flight_histories(db, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.order_id);
        for h in page {
            report.in_flight += 1;
            let entry = report.states.entry(h.state.clone()).or_default();
            entry.in_flight += 1;
            let verdict = match catalog.get(h.definition_version) {
                Some(old) => judge(old, candidate, &h),
                None => Verdict::NextDiffers {
                    how: vec![format!("its definition version {} is not loaded here", h.definition_version)],
                },
            };
            if verdict.same() {
                continue;
            }
            entry.divergent += 1;
            report.divergent += 1;
            if report.sample.len() < sample {
                report.sample.push(Divergent {
                    timeline: h.transitions.iter().map(|(f, e, t)| format!("{f} --{e}--> {t}")).collect(),
                    order_id: h.order_id,
                    state: h.state,
                    definition_version: h.definition_version,
                    how: verdict,
                });
            }
        }
    }
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(report)
}
