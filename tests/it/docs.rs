//! The documentation cannot drift from the code: every option, every metric
//! and the saga diagram in the READMEs are checked against the real thing.

use clap::CommandFactory;
use order_saga::config::Cli;

fn readme() -> String {
    std::fs::read_to_string("README.md").unwrap()
}

#[test]
fn the_configuration_table_lists_every_option() {
    let readme = readme();
    let cmd = Cli::command();
    let mut missing = Vec::new();
    for arg in cmd.get_arguments() {
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            if !readme.contains(&format!("`{env}`")) {
                missing.push(env.into_owned());
            }
        }
    }
    assert!(missing.is_empty(), "README.md does not document {missing:?}");
}

#[test]
fn the_metrics_table_lists_every_metric() {
    let mut registry = prometheus_client::registry::Registry::default();
    let _m = order_saga::telemetry::metrics::Metrics::register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let readme = readme();
    let mut missing = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        let exposed = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
        if !readme.contains(&format!("`{exposed}`")) {
            missing.push(exposed);
        }
    }
    assert!(missing.is_empty(), "README.md does not document {missing:?}");
}

#[test]
fn the_saga_diagrams_are_the_definition() {
    let catalog = order_saga::saga::Catalog::load(std::path::Path::new("sagas"), &Default::default()).unwrap();
    let graph = order_saga::saga::graph::mermaid(catalog.latest());
    for doc in ["README.md", "sagas/README.md"] {
        let text = std::fs::read_to_string(doc).unwrap();
        assert!(
            text.contains(&format!("```mermaid\n{graph}```")),
            "{doc}: the Mermaid diagram is stale; paste `order-saga sagas graph`"
        );
    }
}

#[test]
fn every_openapi_path_is_routed_and_every_route_documented() {
    let doc: serde_json::Value = serde_json::from_str(include_str!("../../src/http/openapi.json")).unwrap();
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    let router = ["src/http/mod.rs", "src/http/ops.rs", "src/http/console.rs"]
        .map(|f| std::fs::read_to_string(f).unwrap())
        .concat();
    for p in &paths {
        assert!(router.contains(&format!(".route(\"{p}\"")), "OpenAPI documents {p} but no route serves it");
    }
    for line in router.lines().filter(|l| l.trim_start().starts_with(".route(\"")) {
        let route = line.trim_start().trim_start_matches(".route(\"").split('"').next().unwrap();
        assert!(
            paths.iter().any(|p| p.as_str() == route),
            "route {route} is missing from openapi.json (scripts/openapi.py)"
        );
    }
}

/// ARCHITECTURE.md's first invariant, checked: the functional core (`saga/`,
/// `domain/`) names no database, broker, HTTP client, runtime or clock, so
/// the transition function stays a pure function of its arguments.
#[test]
fn the_functional_core_imports_no_io_and_reads_no_clock() {
    const FORBIDDEN: &[&str] = &[
        "sqlx",
        "rdkafka",
        "reqwest",
        "tokio",
        "axum",
        "Utc::now",
        "Local::now",
        "SystemTime",
        "Instant::now",
        "rand::",
    ];
    let mut offences = Vec::new();
    let mut files = 0;
    for dir in ["src/saga", "src/domain"] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                // Code only: comments may (and do) name what is forbidden.
                let code = line.split("//").next().unwrap_or_default();
                for word in FORBIDDEN.iter().filter(|w| code.contains(*w)) {
                    offences.push(format!("{}:{}: {word}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(files >= 8, "expected the saga and domain sources, found {files} files");
    assert!(offences.is_empty(), "the functional core must stay free of I/O and clocks: {offences:?}");
}
