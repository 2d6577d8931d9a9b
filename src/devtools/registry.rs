//! A Confluent Schema Registry stand-in for development and tests.
//!
//! **Test/dev tooling — never for production.** It keeps everything in memory
//! and implements only what the daemon, the simulator and the tests call, but
//! with the real semantics:
//!
//! * global schema ids: the same schema registered under two subjects has one id;
//! * idempotent registration: registering an identical schema (by Avro
//!   canonical form) again returns the existing id and creates no version;
//! * subject versions 1, 2, … and `latest`;
//! * BACKWARD compatibility checks on registration (409 when incompatible), the
//!   registry's default mode;
//! * Confluent error bodies: `{"error_code": 40401, "message": "…"}`.
//!
//! Endpoints: `POST /subjects/{s}/versions`, `POST /subjects/{s}` (lookup),
//! `GET /subjects`, `GET /subjects/{s}/versions`, `GET /subjects/{s}/versions/{v|latest}`,
//! `GET /schemas/ids/{id}`, `POST /compatibility/subjects/{s}/versions/{v|latest}`,
//! `GET /config`.

// Handlers return axum responses as errors; boxing them buys nothing here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use apache_avro::schema::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

const CT: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Default)]
struct Inner {
    /// id → (schema text, canonical form)
    schemas: Vec<(String, String)>,
    /// subject → versions (schema ids, version = index + 1)
    subjects: BTreeMap<String, Vec<u32>>,
    /// Injected faults (tests, chaos): the next matching requests get this status.
    faults: Vec<Fault>,
    /// Requests served, as `METHOD path`, in order (tests count them).
    log: Vec<String>,
    /// `Authorization` every request must carry (401 otherwise), when set.
    required_auth: Option<String>,
}

/// An injected fault: the next `remaining` requests whose `METHOD path` starts
/// with `prefix` are answered `status` without being served (until `until`,
/// when set).
struct Fault {
    prefix: String,
    status: StatusCode,
    remaining: u32,
    until: Option<std::time::Instant>,
}

/// The in-memory registry. Cheap to clone.
#[derive(Clone, Default)]
pub struct DevRegistry {
    inner: Arc<Mutex<Inner>>,
}

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, CT)], json!({"error_code": code, "message": message.into()}).to_string())
        .into_response()
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, CT)], body.to_string()).into_response()
}

fn parse_body(body: &Bytes) -> Result<(String, Schema), Response> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, 42203, format!("Invalid JSON: {e}")))?;
    if let Some(t) = v.get("schemaType").and_then(Value::as_str)
        && t != "AVRO"
    {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Schema type {t} is not supported by this stand-in"),
        ));
    }
    let text = v
        .get("schema")
        .and_then(Value::as_str)
        .ok_or_else(|| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Missing schema"))?;
    let schema = Schema::parse_str(text)
        .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("Invalid schema: {e}")))?;
    Ok((text.to_owned(), schema))
}

impl DevRegistry {
    pub fn router(&self) -> Router {
        Router::new()
            .route("/subjects", get(list_subjects))
            .route("/subjects/{subject}", post(lookup))
            .route("/subjects/{subject}/versions", get(list_versions).post(register))
            .route("/subjects/{subject}/versions/{version}", get(get_version))
            .route("/schemas/ids/{id}", get(get_by_id))
            .route("/compatibility/subjects/{subject}/versions/{version}", post(check_compat))
            .route("/config", get(|| async { ok(json!({"compatibilityLevel": "BACKWARD"})) }))
            .layer(axum::middleware::from_fn_with_state(self.clone(), inject_faults))
            .with_state(self.clone())
    }

    /// Answers the next `count` requests whose `METHOD path` starts with
    /// `prefix` (e.g. `"POST /subjects/"`, `"GET /schemas/ids/7"`, `""` for
    /// all) with `status`, as a failing registry or the proxy in front of it
    /// would. Faults are consumed in the order they were added.
    /// Every later request must carry HTTP basic auth with these credentials (401 otherwise).
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.lock().required_auth = Some(format!("Basic {token}"));
    }

    pub fn fail_next(&self, prefix: &str, status: u16, count: u32) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.lock().faults.push(Fault { prefix: prefix.to_owned(), status, remaining: count, until: None });
    }

    /// Answers every request whose `METHOD path` starts with `prefix` with
    /// `status` for the next `how_long` (a registry outage, or a gateway in
    /// front of it answering 5xx).
    pub fn fail_for(&self, prefix: &str, status: u16, how_long: std::time::Duration) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let until = Some(std::time::Instant::now() + how_long);
        self.lock().faults.push(Fault { prefix: prefix.to_owned(), status, remaining: u32::MAX, until });
    }

    /// How many requests whose `METHOD path` starts with `prefix` reached the
    /// registry (failed by an injected fault or served).
    pub fn requests(&self, prefix: &str) -> usize {
        self.lock().log.iter().filter(|r| r.starts_with(prefix)).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn version_entry(inner: &Inner, subject: &str, version: &str) -> Result<Value, Response> {
        let versions = inner
            .subjects
            .get(subject)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found.")))?;
        let n = if version == "latest" {
            versions.len()
        } else {
            version.parse::<usize>().map_err(|_| {
                error(StatusCode::UNPROCESSABLE_ENTITY, 42202, "The specified version is not a valid version id.")
            })?
        };
        let id = n
            .checked_sub(1)
            .and_then(|i| versions.get(i))
            .ok_or_else(|| error(StatusCode::NOT_FOUND, 40402, format!("Version {version} not found.")))?;
        let text = &inner.schemas[(*id - 1) as usize].0;
        Ok(json!({"subject": subject, "version": n, "id": id, "schema": text}))
    }
}

async fn list_subjects(State(r): State<DevRegistry>) -> Response {
    let inner = r.inner.lock().unwrap_or_else(|p| p.into_inner());
    ok(json!(inner.subjects.keys().collect::<Vec<_>>()))
}

async fn list_versions(State(r): State<DevRegistry>, Path(subject): Path<String>) -> Response {
    let inner = r.inner.lock().unwrap_or_else(|p| p.into_inner());
    match inner.subjects.get(&subject) {
        Some(v) => ok(json!((1..=v.len()).collect::<Vec<_>>())),
        None => error(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found.")),
    }
}

async fn get_version(State(r): State<DevRegistry>, Path((subject, version)): Path<(String, String)>) -> Response {
    let inner = r.inner.lock().unwrap_or_else(|p| p.into_inner());
    match DevRegistry::version_entry(&inner, &subject, &version) {
        Ok(v) => ok(v),
        Err(e) => e,
    }
}

async fn get_by_id(State(r): State<DevRegistry>, Path(id): Path<String>) -> Response {
    let inner = r.inner.lock().unwrap_or_else(|p| p.into_inner());
    let found = id.parse::<usize>().ok().filter(|i| *i >= 1).and_then(|i| inner.schemas.get(i - 1));
    match found {
        Some((text, _)) => ok(json!({"schema": text})),
        None => error(StatusCode::NOT_FOUND, 40403, format!("Schema {id} not found")),
    }
}

async fn lookup(State(r): State<DevRegistry>, Path(subject): Path<String>, body: Bytes) -> Response {
    let (_, schema) = match parse_body(&body) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let canonical = schema.canonical_form();
    let inner = r.inner.lock().unwrap_or_else(|p| p.into_inner());
    let Some(versions) = inner.subjects.get(&subject) else {
        return error(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found."));
    };
    for (i, id) in versions.iter().enumerate() {
        let (text, c) = &inner.schemas[(*id - 1) as usize];
        if *c == canonical {
            return ok(json!({"subject": subject, "version": i + 1, "id": id, "schema": text}));
        }
    }
    error(StatusCode::NOT_FOUND, 40403, "Schema not found")
}

fn backward_compatible(new: &Schema, old_text: &str) -> Result<(), String> {
    let old = Schema::parse_str(old_text).map_err(|e| e.to_string())?;
    // BACKWARD: consumers on the new schema can read data written with the old one.
    SchemaCompatibility::can_read(&old, new).map(|_| ()).map_err(|e| e.to_string())
}

async fn register(State(r): State<DevRegistry>, Path(subject): Path<String>, body: Bytes) -> Response {
    let (text, schema) = match parse_body(&body) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let canonical = schema.canonical_form();
    let mut inner = r.inner.lock().unwrap_or_else(|p| p.into_inner());
    let versions = inner.subjects.get(&subject).cloned().unwrap_or_default();
    // Idempotent: the same schema under this subject returns its id.
    for id in &versions {
        if inner.schemas[(*id - 1) as usize].1 == canonical {
            return ok(json!({"id": id}));
        }
    }
    if let Some(latest) = versions.last() {
        let old = inner.schemas[(*latest - 1) as usize].0.clone();
        if let Err(e) = backward_compatible(&schema, &old) {
            return error(
                StatusCode::CONFLICT,
                409,
                format!(
                    "Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {e}"
                ),
            );
        }
    }
    // Global ids: reuse the id of an identical schema from another subject.
    let id = match inner.schemas.iter().position(|(_, c)| *c == canonical) {
        Some(i) => (i + 1) as u32,
        None => {
            inner.schemas.push((text, canonical));
            inner.schemas.len() as u32
        }
    };
    inner.subjects.entry(subject).or_default().push(id);
    ok(json!({"id": id}))
}

async fn check_compat(
    State(r): State<DevRegistry>,
    Path((subject, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (_, schema) = match parse_body(&body) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let inner = r.inner.lock().unwrap_or_else(|p| p.into_inner());
    let entry = match DevRegistry::version_entry(&inner, &subject, &version) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let old = entry["schema"].as_str().unwrap_or_default();
    ok(json!({"is_compatible": backward_compatible(&schema, old).is_ok()}))
}

async fn inject_faults(
    State(r): State<DevRegistry>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", req.method(), req.uri().path());
    let status = {
        let mut inner = r.lock();
        inner.log.push(line.clone());
        let given = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if inner.required_auth.as_deref().is_some_and(|want| given != Some(want)) {
            return error(StatusCode::UNAUTHORIZED, 40101, "unauthorized");
        }
        let now = std::time::Instant::now();
        let fault = inner
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && f.until.is_none_or(|u| now < u) && line.starts_with(&f.prefix));
        fault.map(|f| {
            f.remaining -= 1;
            f.status
        })
    };
    match status {
        Some(s) => error(s, u32::from(s.as_u16()) * 100, "injected fault"),
        None => next.run(req).await,
    }
}

/// Serves the registry on `addr` until `shutdown` resolves.
pub async fn serve(addr: SocketAddr, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "dev schema registry listening (in-memory; not for production)");
    axum::serve(listener, DevRegistry::default().router()).with_graceful_shutdown(shutdown).await
}

/// Starts the registry on an ephemeral port in the background; returns its URL.
/// For tests.
pub async fn spawn_local() -> std::io::Result<(String, DevRegistry)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let registry = DevRegistry::default();
    let router = registry.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((format!("http://{addr}"), registry))
}
