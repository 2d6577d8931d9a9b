//! The HTTP ingress (axum): orders API, health, OpenAPI, metrics, ops.
//!
//! Every response that is not a success uses the error shape of [`error`];
//! bad input never produces a 500 and never panics (a panic would still be
//! caught and answered with the same shape).

pub mod auth;
pub mod console;
pub mod error;
pub mod extract;
pub mod limit;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use crate::store::outbox::RelayWakeup;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use tracing::Instrument;

use self::error::{ApiError, ErrorCode};
use crate::orchestrator::SagaStore;
use crate::store::Db;
use crate::store::outbox::OutboxWriter;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace_context::TraceContext;

/// Shared state of the handlers. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub outbox: OutboxWriter,
    /// Always `Some` in the daemon (`app::services`); `None` only in the tests
    /// of the order table on its own (`TestApp::without_sagas`).
    pub sagas: Option<SagaStore>,
    pub metrics: Metrics,
    pub registry: Arc<Registry>,
    /// The listener speaks TLS: answers carry `Strict-Transport-Security`.
    pub hsts: bool,
    /// Per-caller request budget of the orders API; `None`: no limit.
    pub limiter: Option<Arc<limit::RateLimiter>>,
    /// Verifies bearer tokens on the orders API; `None`: the API is open.
    pub auth: Option<Arc<crate::auth::JwtVerifier>>,
    /// Wakes the outbox relay after a commit that wrote outbox rows.
    pub relay_wakeup: Arc<RelayWakeup>,
    pub ops: Option<ops::OpsConfig>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// `POST /orders` goes through the group committer.
    pub orders: crate::orchestrator::group_commit::CreateBatcher,
}

/// The operational endpoints' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(healthz, readyz, openapi, metrics))]
struct Api;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything on one port (no ORDER_SAGA_OPS_ADDR).
    All,
    /// The business port when the admin surface has its own: the orders API,
    /// health, the OpenAPI document.
    Public,
    /// The admin port (ORDER_SAGA_OPS_ADDR): `/ops`, the console, `/metrics`, health.
    Admin,
}

/// Every endpoint on one listener.
pub fn router(state: AppState) -> Router {
    router_for(state, Surface::All)
}

/// The endpoints of one listener.
pub fn router_for(state: AppState, surface: Surface) -> Router {
    let max_body = state.max_body_bytes;
    let timeout = state.request_timeout;
    let hsts = state.hsts;
    let mut r = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz));
    if surface != Surface::Admin {
        r = r
            .route("/orders", post(orders::create))
            .route("/orders/search", get(orders::search))
            .route("/orders/{order_id}", get(orders::get))
            .route("/orders/{order_id}/status", post(orders::change_status))
            .route("/openapi.json", get(openapi));
    }
    if surface != Surface::Public {
        r = r.route("/metrics", get(metrics)).merge(ops::routes()).merge(console::routes());
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |req, next| with_timeout(timeout, req, next)))
        .layer(middleware::from_fn(trace_request))
        .layer(middleware::map_response(move |req_path: axum::extract::OriginalUri, resp: Response| async move {
            security_headers(&req_path.0, hsts, resp)
        }))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::new(ErrorCode::Internal, "internal error").into_response()
        }))
        .with_state(state)
}

/// The address a request came from (set per connection by [`server`]).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// The trace context of a request: the caller's `traceparent` or a new root.
#[derive(Debug, Clone)]
pub struct RequestTrace(pub TraceContext);

async fn trace_request(mut req: Request, next: Next) -> Response {
    let incoming = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        header(crate::contracts::headers::TRACEPARENT)
            .and_then(|tp| TraceContext::extract(tp, header(crate::contracts::headers::TRACESTATE)))
    };
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "-".into());
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.method = %req.method(),
        http.route = %route,
        trace_id = tracing::field::Empty,
        http.status = tracing::field::Empty,
    );
    if let Some(tp) = &incoming {
        crate::telemetry::otel::set_remote_parent(&span, tp);
    }
    // Outbox rows written by this request carry this span's context.
    let trace = crate::telemetry::otel::propagate(&span, incoming.as_ref());
    span.record("trace_id", tracing::field::display(trace.trace_id_hex()));
    req.extensions_mut().insert(RequestTrace(trace.clone()));
    let started = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.record("http.status", resp.status().as_u16());
    let status = resp.status();
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(elapsed_ms = started.elapsed().as_millis() as u64, "request failed");
        } else {
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "request served");
        }
    });
    for (name, value) in trace.headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// Headers every answer carries: no MIME sniffing; no caching of order and
/// ops data (customer ids, audit); HSTS when the listener speaks TLS.
fn security_headers(uri: &axum::http::Uri, hsts: bool, mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let path = uri.path();
    if (path.starts_with("/orders") || path.starts_with("/ops")) && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    resp
}

async fn with_timeout(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(ErrorCode::Timeout, "the request took too long; retry (with the same Idempotency-Key)")
            .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this endpoint; see /openapi.json")
}

#[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness",
    responses((status = 200, description = "The process is up", body = Object)))]
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", summary = "Readiness (database reachable)",
    responses((status = 200, description = "Ready", body = Object), (status = 503, description = "not_ready", body = crate::http::openapi::ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await {
        Ok(Ok(())) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(Err(e)) => {
            // The detail goes to the log: /readyz answers anyone.
            tracing::warn!(error = %e, "not ready: the database does not answer");
            ApiError::new(ErrorCode::NotReady, "database unreachable").into_response()
        }
        Err(_) => ApiError::new(ErrorCode::NotReady, "database did not answer within 2s").into_response(),
    }
}

/// The OpenAPI document served (`openapi::document`), built once.
pub fn openapi_document() -> &'static str {
    static DOC: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| openapi::document().to_string());
    &DOC
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_document()).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics (OpenMetrics text)",
    responses((status = 200, description = "Metrics", body = String, content_type = "application/openmetrics-text")))]
async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &state.registry).is_err() {
        return ApiError::new(ErrorCode::Internal, "cannot encode metrics").into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
