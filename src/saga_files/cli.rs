//! `order-saga sagas …`: check, draw, diff, test and preview definition
//! files. The composition root (`app`) hands in what needs configuration
//! (the sagas directory, timer overrides, the database for `preview`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::SagasCommand;
use crate::saga::Catalog;
use crate::store::Db;

/// `order-saga sagas diff OLD NEW`: needs no configuration, only the two files.
pub fn diff(old: &Path, new: &Path, format: &str) -> ExitCode {
    let load = |p: &Path| {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        crate::saga::parse::parse(p, &text).map_err(|e| e.to_string())
    };
    let (old, new) = match (load(old), load(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            for e in [a.err(), b.err()].into_iter().flatten() {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    let changes = crate::saga::diff::diff(&old, &new);
    if format == "json" {
        let out = serde_json::json!({"old_version": old.version, "new_version": new.version, "changes": changes});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("{} saga: version {} → {}, {} change(s)", new.name, old.version, new.version, changes.len());
        for c in &changes {
            println!("{c}");
        }
        println!();
        print!("{}", crate::saga::diff::mermaid(&old, &new, &changes));
    }
    if changes.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// `order-saga sagas preview NEW`: every in-flight saga judged against NEW
/// (`ops::preview`).
pub async fn preview(
    catalog: &Catalog,
    db: impl std::future::Future<Output = anyhow::Result<Db>>,
    new: &Path,
    format: &str,
    sample: usize,
) -> anyhow::Result<ExitCode> {
    let text = match std::fs::read_to_string(new) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", new.display());
            return Ok(ExitCode::from(2));
        }
    };
    let candidate = match crate::ops::preview::candidate(new, &text, catalog) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    // Connected only once the file is known to be valid.
    let db = db.await?;
    let report = crate::ops::preview::preview(&db, catalog, &candidate, sample).await?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} in flight, {} would behave differently under {} (version {}), judged in {:.0} ms",
            report.in_flight,
            report.divergent,
            new.display(),
            report.version,
            report.elapsed_ms
        );
        for (s, c) in &report.states {
            println!("  {s}: {} in flight, {} divergent", c.in_flight, c.divergent);
        }
        for e in &report.sample {
            println!("{}", serde_json::to_string(e)?);
        }
    }
    Ok(if report.divergent == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `order-saga sagas test`: every scenario file of `dir` against the catalog.
fn test(catalog: &Catalog, dir: &Path) -> ExitCode {
    use crate::saga::scenario;
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    files.sort();
    let started = std::time::Instant::now();
    let (mut reports, mut invalid) = (Vec::new(), false);
    for f in &files {
        let parsed = std::fs::read_to_string(f).map_err(|e| e.to_string()).and_then(|t| scenario::parse(&t));
        let s = match parsed {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                invalid = true;
                continue;
            }
        };
        let def = match s.definition_version {
            Some(v) => catalog.get(v),
            None => Some(catalog.latest()),
        };
        let Some(def) = def else {
            eprintln!("{}: no definition version {:?}", f.display(), s.definition_version);
            invalid = true;
            continue;
        };
        let r = scenario::run(def, &s);
        if r.passed() {
            println!("ok     {} ({})", r.name, f.display());
        } else {
            println!("FAILED {} ({})", r.name, f.display());
            for m in &r.failures {
                println!("       {m}");
            }
        }
        reports.push(r);
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    println!(
        "{} passed, {failed} failed in {:.1} ms",
        reports.len() - failed,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let uncovered = scenario::uncovered(catalog.latest(), &reports);
    for (state, event) in &uncovered {
        println!("not covered: {state} on {event}");
    }
    if uncovered.is_empty() {
        println!("every transition of version {} is covered", catalog.latest().version);
    }
    if invalid {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `order-saga sagas check | graph | diff | test` (`preview` is [`preview`]):
/// the definitions of `dir`, with the configured timer overrides.
pub fn run(
    dir: &Path,
    timer_overrides: &BTreeMap<String, Duration>,
    command: SagasCommand,
) -> anyhow::Result<ExitCode> {
    if let SagasCommand::Diff { old, new, format } = &command {
        return Ok(diff(old, new, format));
    }
    let catalog = match super::load_catalog(dir, timer_overrides) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} problem(s) in {}", errors.0.len(), dir.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    match command {
        SagasCommand::Check => {
            for d in catalog.versions() {
                println!(
                    "{}: saga {:?} version {} ok — {} states, {} steps, {} timers, {} transitions",
                    d.source.display(),
                    d.name,
                    d.version,
                    d.states.len(),
                    d.steps.len(),
                    d.timers.len(),
                    d.states.values().map(|s| s.transitions().count()).sum::<usize>() + 1
                );
            }
        }
        SagasCommand::Graph { version } => {
            let def = match version {
                Some(v) => catalog.get(v).with_context(|| format!("no definition version {v} in {}", dir.display()))?,
                None => catalog.latest(),
            };
            print!("{}", crate::saga::graph::mermaid(def));
        }
        SagasCommand::Diff { .. } => {}
        SagasCommand::Test { dir: scenarios } => return Ok(test(&catalog, &scenarios)),
        SagasCommand::Preview { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}
