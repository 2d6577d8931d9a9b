//! The documentation cannot drift from the code: every option, every metric
//! and the saga diagram in the READMEs are checked against the real thing.

use clap::CommandFactory;
use order_saga::cli::Cli;

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
    let catalog = order_saga::saga_files::load_catalog(std::path::Path::new("sagas"), &Default::default()).unwrap();
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
    let doc: serde_json::Value = serde_json::from_str(order_saga::http::openapi_document()).unwrap();
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
            "route {route} has no #[utoipa::path] in the OpenAPI document (src/http/openapi.rs)"
        );
    }
}

/// The API's error codes, checked both ways: every code the served OpenAPI
/// document lists is one a handler returns somewhere (named in `src/http/`
/// outside its declaration), every code a handler can return is listed (they
/// can only return an `ErrorCode`), and every code's status is among the
/// responses documented for some operation.
#[test]
fn openapi_documents_every_error_code() {
    use order_saga::http::error::ErrorCode;
    let doc: serde_json::Value = serde_json::from_str(order_saga::http::openapi_document()).unwrap();
    let code = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"];
    let listed: Vec<&str> = code["enum"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, all);
    let handlers = ["mod.rs", "auth.rs", "ops.rs", "console.rs", "orders.rs", "extract.rs", "error.rs"]
        .map(|f| std::fs::read_to_string(format!("src/http/{f}")).unwrap())
        .concat();
    let mut documented_statuses = std::collections::BTreeSet::new();
    for op in doc["paths"].as_object().unwrap().values().flat_map(|p| p.as_object().unwrap().values()) {
        if let Some(r) = op["responses"].as_object() {
            documented_statuses.extend(r.keys().cloned());
        }
    }
    for c in ErrorCode::ALL {
        let name = format!("{c:?}");
        // The declaration names the variant alone; a handler names `ErrorCode::X`.
        let uses = handlers.matches(&format!("ErrorCode::{name}")).count();
        assert!(uses >= 1, "{} is declared but no handler returns it", c.as_str());
        assert!(
            documented_statuses.contains(c.status().as_str()),
            "{} answers {}, which no operation documents (#[utoipa::path] responses)",
            c.as_str(),
            c.status()
        );
        assert_eq!(code["x-error-codes"][c.as_str()]["status"], c.status().as_u16());
    }
}

/// The request bodies the handlers validate by hand are documented by schema
/// types (`src/http/openapi.rs`); this keeps the two in step: a body with
/// every documented property is accepted, each required property is really
/// required, and a property the schema does not list is refused.
#[test]
fn documented_request_bodies_match_the_validators() {
    use order_saga::domain::{NewOrder, StatusChangeRequest};
    use serde_json::{Value, json};
    let doc: Value = serde_json::from_str(order_saga::http::openapi_document()).unwrap();
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let names = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    type Validate = fn(&Value) -> bool;
    let cases: [(&str, Value, Validate); 2] = [
        (
            "OrderCreate",
            json!({"customer_id": "c-1", "tenant_region": "eu-west", "currency": "EUR",
                   "items": [{"sku": "A-1", "qty": 2, "unit_price": "19.99"}]}),
            |b| NewOrder::from_json(b).is_ok(),
        ),
        (
            "StatusChange",
            json!({"to_status": "CANCELLED", "reason_code": "CUSTOMER_REQUEST", "comment": "asked by phone",
                   "actor": "agent-7", "expected_version": 1}),
            |b| StatusChangeRequest::from_json(b).is_ok(),
        ),
    ];
    for (name, full, valid) in cases {
        let s = schema(name);
        let mut documented = names(&s["properties"]);
        let mut sent = names(&full);
        documented.sort();
        sent.sort();
        assert_eq!(documented, sent, "{name}: the schema's properties are not the ones the example exercises");
        assert!(valid(&full), "{name}: a body with every documented property is refused");
        for r in s["required"].as_array().unwrap() {
            let mut b = full.clone();
            b.as_object_mut().unwrap().remove(r.as_str().unwrap());
            assert!(!valid(&b), "{name}: {r} is documented as required but the handler accepts a body without it");
        }
        let optional: Vec<&String> =
            documented.iter().filter(|p| !s["required"].as_array().unwrap().iter().any(|r| r == p.as_str())).collect();
        for o in optional {
            let mut b = full.clone();
            b.as_object_mut().unwrap().remove(o.as_str());
            assert!(valid(&b), "{name}: {o} is documented as optional but the handler requires it");
        }
        let mut extra = full.clone();
        extra["not_documented"] = json!(1);
        assert!(!valid(&extra), "{name}: a property the schema does not list is accepted");
    }
    // The order line, through a whole order.
    let line = schema("OrderItemCreate");
    let mut fields = names(&line["properties"]);
    fields.sort();
    assert_eq!(fields, ["qty", "sku", "unit_price"]);
}

/// The `.rs` files under `dir`, subdirectories included, except those under a
/// directory named in `skip`.
fn rust_sources(dir: &std::path::Path, skip: &[&str], out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !skip.iter().any(|s| path.ends_with(s)) {
                rust_sources(&path, skip, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `file:line: word` for each code line of `sources` (comments left out: they
/// may, and do, name what is forbidden) that contains one of `words`.
fn lines_naming(sources: &[std::path::PathBuf], words: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for path in sources {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in words.iter().filter(|w| code.contains(*w)) {
                found.push(format!("{}:{}: {word}", path.display(), n + 1));
            }
        }
    }
    found
}

/// ARCHITECTURE.md's first invariant, checked: the functional core (`saga/`,
/// `domain/`, and the shell's pure policies: the per-event decision, the
/// consumer's split-and-retry machine, the operator actions' plans,
/// partitioning) names no database,
/// broker, HTTP client, runtime or clock, so each stays a pure function of
/// its arguments.
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
        // Filesystem I/O: the shell reads files (`saga_files`) and passes text in.
        "std::fs",
        "fs::",
        "File::",
        "read_to_string",
        "read_dir",
        // The codec talks to the Schema Registry; the core only needs `contracts`.
        "crate::codec",
        "codec::",
        "schema_registry",
    ];
    // Every .rs file under the core's directories, subdirectories included.
    let mut sources = Vec::new();
    for dir in ["src/saga", "src/domain", "src/ops/plan"] {
        rust_sources(std::path::Path::new(dir), &[], &mut sources);
    }
    // The shell's policies that are pure by design (sans-IO), outside the two directories.
    sources.extend(
        [
            "src/kafka/inbound/retry.rs",
            "src/outbox/schedule.rs",
            "src/orchestrator/batch.rs",
            "src/orchestrator/decide.rs",
            "src/partitioning.rs",
        ]
        .map(std::path::PathBuf::from),
    );
    let offences = lines_naming(&sources, FORBIDDEN);
    assert!(sources.len() >= 10, "expected the saga and domain sources, found {} files", sources.len());
    assert!(offences.is_empty(), "the functional core must stay free of I/O and clocks: {offences:?}");
}

/// ARCHITECTURE.md's invariant, checked: a saga's rows (its instance,
/// timers, inbox, parked events, transition log, and the outbox rows its
/// decisions publish) are written by `store/` on behalf of the orchestrator
/// only. Every other module — the consumer, the sweeper, ops actions, HTTP —
/// goes through `orchestrator` (events through the batch shell, an
/// operator's other writes through `orchestrator::operator`).
#[test]
fn saga_rows_are_written_only_by_the_orchestrator() {
    const WRITERS: &[&str] = &[
        "timers::set_timer_due",
        "timers::delete_timer",
        "timers::flush_timers",
        "outbox::insert(",
        "inbox::insert(",
        "inbox::forget_inbox",
        "parked::resolve_parked",
        "parked::insert_parked",
        "insert_transitions",
        "INSERT INTO saga_",
        "UPDATE saga_",
        "DELETE FROM saga_",
        "INSERT INTO outbox",
    ];
    let mut sources = Vec::new();
    rust_sources(std::path::Path::new("src"), &["store", "orchestrator"], &mut sources);
    let offences = lines_naming(&sources, WRITERS);
    assert!(sources.len() >= 50, "expected the crate's sources, found {} files", sources.len());
    assert!(offences.is_empty(), "saga rows written outside the orchestrator: {offences:?}");
}

/// ARCHITECTURE.md's layering, checked: no import cycle between the crate's
/// top-level modules (`crate::x` paths and `use crate::{x, y}` outside test
/// code). A cycle means a lower layer reached back up (config into the tools
/// its subcommands run, a tool into the composition root, …).
#[test]
fn top_level_modules_import_no_cycle() {
    use std::collections::{BTreeMap, BTreeSet};
    let src = std::path::Path::new("src");
    let mut all = Vec::new();
    rust_sources(src, &[], &mut all);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    for p in &all {
        let rel = p.strip_prefix(src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
        if top == "main" || top == "lib" || rel.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let deps = graph.entry(top.clone()).or_default();
        for part in code.split("crate::").skip(1) {
            if let Some(group) = part.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                deps.extend(inner.split(',').map(|x| ident(x.trim())).filter(|x| !x.is_empty()));
            } else {
                deps.insert(ident(part));
            }
        }
        deps.remove(&top);
    }
    let tops: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| tops.contains(d));
    }
    assert!(tops.len() >= 15, "expected the crate's modules, found {tops:?}");
    // A cycle exists iff some module reaches itself.
    let mut cycles = Vec::new();
    for start in &tops {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((m, path)) = stack.pop() {
            for d in &graph[&m] {
                if d == start {
                    cycles.push([path.clone(), vec![d.clone()]].concat().join(" -> "));
                } else if seen.insert(d.clone()) {
                    stack.push((d.clone(), [path.clone(), vec![d.clone()]].concat()));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "module import cycles: {cycles:#?}");
}
