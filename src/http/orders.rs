//! `/orders` handlers.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorCode};
use super::extract::{JsonBody, Trace, order_id, query_params};
use crate::auth::scopes;
use crate::domain::OrderId;
use crate::domain::{NewOrder, OrderStatus, StatusChangeRequest};
use crate::orchestrator::group_commit::{CreateRequest, NotTaken};
use crate::orchestrator::order_api::{self, CreateOutcome};
use crate::store::idempotency;
use crate::store::orders::{self, Keyset, SearchFilter};

/// The `/orders` part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, search, get, change_status))]
pub(super) struct Api;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const X_IDEMPOTENCY_KEY: &str = "x-idempotency-key";
pub const MAX_KEY_LEN: usize = 255;

/// Reads the idempotency key from `Idempotency-Key` or `X-Idempotency-Key`.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let read = |name: &str| -> Result<Option<String>, ApiError> {
        let mut values = headers.get_all(name).iter();
        let Some(v) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::new(ErrorCode::IdempotencyKeyInvalid, format!("{name} given more than once")));
        }
        let s = v.to_str().map_err(|_| {
            ApiError::new(ErrorCode::IdempotencyKeyInvalid, "the idempotency key must be visible ASCII")
        })?;
        Ok(Some(s.trim().to_owned()))
    };
    let key = match (read(IDEMPOTENCY_KEY)?, read(X_IDEMPOTENCY_KEY)?) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyConflict,
                "Idempotency-Key and X-Idempotency-Key differ; send one",
            ));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyMissing,
                "POST /orders requires an Idempotency-Key header (a unique value per order, e.g. a UUID)",
            ));
        }
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            ErrorCode::IdempotencyKeyInvalid,
            format!("the idempotency key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(key)
}

/// The stored form of a verified caller's key: scoped to the caller, so one
/// client can neither replay nor block another's key. Readable
/// (`subject key`: keys have no spaces) when it fits the column, else a
/// digest of both.
fn scoped_key(caller: &Caller, key: String) -> String {
    let Caller::Verified(p) = caller else {
        return key;
    };
    let readable = format!("{} {key}", p.subject);
    if readable.len() <= MAX_KEY_LEN && p.subject.bytes().all(|b| b.is_ascii_graphic()) {
        readable
    } else {
        format!("~ {}", hex::encode(Sha256::digest(format!("{}\0{key}", p.subject).as_bytes())))
    }
}

fn json_response(status: StatusCode, body: String, extra: &[(&'static str, String)]) -> Response {
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    for (k, v) in extra {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(*k, v);
        }
    }
    resp
}

/// `POST /orders`
#[utoipa::path(
    post,
    path = "/orders",
    security(("bearerAuth" = ["orders:write"]), ()),
    tag = "orders",
    summary = "Create an order (idempotent)",
    description = "Creates the order, its items, its first history row and the order.created.v1 outbox row in one \
                   transaction, and starts its saga.",
    request_body = crate::http::openapi::OrderCreate,
    params(("Idempotency-Key" = String, Header, description = "Unique per order (X-Idempotency-Key is accepted too). \
        Reusing it with another body is a 422.")),
    responses(
        (status = 401, description = "unauthorized: no valid bearer token (when ORDER_SAGA_AUTH_* is set)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "insufficient_scope or region_not_allowed", body = crate::http::openapi::ErrorBody),
        (status = 429, description = "rate_limited (ORDER_SAGA_HTTP_RATE_LIMIT): retry after Retry-After", body = crate::http::openapi::ErrorBody),
        (status = 201, description = "Created; the same key and body later return this response again (header \
            Idempotent-Replayed: true)", body = crate::store::orders::OrderView),
        (status = 400, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Trace(trace): Trace,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(scopes::ORDERS_WRITE)?;
    state.metrics.orders.order_create_requests_inflight.inc();
    let _inflight = scopeguard(|| {
        state.metrics.orders.order_create_requests_inflight.dec();
    });
    // 415/413/400 for the body come first: they say the request is not an
    // order at all. Then the key, then the content.
    let JsonBody(body) = body?;
    let key = scoped_key(&caller, idempotency_key(&headers)?);
    let order = NewOrder::from_json(&body).map_err(ApiError::validation)?;
    if !caller.may_see_region(&order.tenant_region) {
        return Err(ApiError::new(
            ErrorCode::RegionNotAllowed,
            format!("the token does not allow orders of tenant region {:?}", order.tenant_region),
        ));
    }
    let fingerprint = idempotency::fingerprint(&body);
    let req = CreateRequest { order: order.clone(), key, fingerprint, trace: Some(trace), actor: caller.actor(None) };
    let outcome = state.orders.create(req).await.map_err(|e| {
        let code = match e {
            NotTaken::Overloaded => ErrorCode::Overloaded,
            NotTaken::Stopped => ErrorCode::ShuttingDown,
        };
        ApiError::new(code, format!("{e}; retry with the same Idempotency-Key"))
    })?;
    match outcome? {
        CreateOutcome::Created { order_id, body } => {
            // Committed, response not sent: the client retries with its key.
            crate::failpoint::hit("http.create.after_commit");
            state.relay_wakeup.rows_committed([state.outbox.shard_of(order_id)]);
            state.metrics.orders.order_created_total.get_or_create(&state.metrics.region(&order.tenant_region)).inc();
            tracing::info!(order_id = order_id.get(), customer_id = %order.customer_id, status = "PENDING", "order created");
            Ok(json_response(StatusCode::CREATED, body, &[("location", format!("/orders/{order_id}"))]))
        }
        CreateOutcome::Replayed { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
            Ok(json_response(status, body, &[("idempotent-replayed", "true".into())]))
        }
        CreateOutcome::KeyReused => Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used with a different request body; use a new key for a new order",
        )),
    }
}

/// Runs `f` on drop.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// `GET /orders/{order_id}`
#[utoipa::path(
    get,
    path = "/orders/{order_id}",
    security(("bearerAuth" = ["orders:read"]), ()),
    tag = "orders",
    summary = "Read an order with its items",
    description = "updated_at lets readers in other regions judge staleness; ETag carries the version.",
    params(("order_id" = u64, Path, description = "Order id (positive integer)", minimum = 1)),
    responses(
        (status = 401, description = "unauthorized: no valid bearer token (when ORDER_SAGA_AUTH_* is set)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "insufficient_scope or region_not_allowed", body = crate::http::openapi::ErrorBody),
        (status = 429, description = "rate_limited (ORDER_SAGA_HTTP_RATE_LIMIT): retry after Retry-After", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "The order", body = crate::store::orders::OrderView),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(raw): Path<String>) -> Result<Response, ApiError> {
    caller.require(scopes::ORDERS_READ)?;
    let id = order_id(&raw)?;
    // Another region's order does not exist for this caller.
    let view = orders::get(&state.db, id)
        .await?
        .filter(|v| caller.may_see_region(&v.tenant_region))
        .ok_or_else(|| ApiError::order_not_found(id))?;
    let etag = format!("\"v{}\"", view.version);
    let mut resp = axum::Json(view).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// `POST /orders/{order_id}/status`
#[utoipa::path(
    post,
    path = "/orders/{order_id}/status",
    security(("bearerAuth" = ["orders:status"]), ()),
    tag = "orders",
    summary = "Change the status of an order",
    description = "409 codes: illegal_transition (not in the table), version_conflict (expected_version differs), \
                   concurrent_modification (another change won), saga_in_progress (the saga drives the order now). \
                   CANCELLED (and PENDING from PENDING_REVIEW) go through the saga and compensate.",
    request_body = crate::http::openapi::StatusChangeBody,
    params(("order_id" = u64, Path, description = "Order id (positive integer)", minimum = 1)),
    responses(
        (status = 401, description = "unauthorized: no valid bearer token (when ORDER_SAGA_AUTH_* is set)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "insufficient_scope or region_not_allowed", body = crate::http::openapi::ErrorBody),
        (status = 429, description = "rate_limited (ORDER_SAGA_HTTP_RATE_LIMIT): retry after Retry-After", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "The order after the change", body = crate::store::orders::OrderView),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
pub async fn change_status(
    State(state): State<AppState>,
    caller: Caller,
    Trace(trace): Trace,
    Path(raw): Path<String>,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(scopes::ORDERS_STATUS)?;
    let id = order_id(&raw)?;
    let JsonBody(body) = body?;
    let request = StatusChangeRequest::from_json(&body).map_err(ApiError::validation)?;
    // The actor is the principal (a body `actor` only "on behalf of"); an
    // open API requires the body's.
    let actor = caller.actor(request.actor.as_deref()).ok_or_else(|| {
        ApiError::validation(vec![crate::domain::FieldError {
            field: "/actor".into(),
            code: "required",
            message: "actor is required".into(),
        }])
    })?;
    let change = request.by(actor);
    if let Some(regions) = caller.regions() {
        let head = orders::get(&state.db, id).await?;
        if head.is_none_or(|o| !regions.contains(&o.tenant_region)) {
            return Err(ApiError::order_not_found(id));
        }
    }
    let result =
        order_api::change_status(&state.db, id, &change, &state.outbox, state.sagas.as_ref(), Some(&trace)).await?;
    match result {
        Ok(order_api::StatusChanged { order: view, previous, previous_since }) => {
            state.relay_wakeup.rows_committed([state.outbox.shard_of(id)]);
            let secs = (view.updated_at - previous_since).num_microseconds().unwrap_or(0) as f64 / 1e6;
            state
                .metrics
                .orders
                .order_status_transition_seconds
                .get_or_create(&crate::telemetry::metrics::TransitionLabel {
                    from_status: previous.as_str().into(),
                    to_status: view.status.as_str().into(),
                })
                .observe(secs.max(0.0));
            tracing::info!(order_id = id.get(), status = %view.status, actor = %change.actor, "order status changed");
            Ok(axum::Json(view).into_response())
        }
        Err(refusal) => Err(ApiError::refusal(id, refusal)),
    }
}

const SEARCH_PARAMS: &[&str] =
    &["status", "tenant_region", "customer_id", "created_from", "created_to", "limit", "cursor"];
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, message).with_details(json!({ "parameter": param }))
}

fn parse_time(param: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| crate::store::limits::is_storable_time(*t))
        .ok_or_else(|| {
            invalid(
                param,
                format!(
                    "{param} must be an RFC 3339 timestamp between the years 1000 and 9999 such as 2026-11-25T10:00:00Z, found {v:?}"
                ),
            )
        })
}

/// The cursor is opaque to clients: base64url of `{t, id, f}` where `f` ties
/// it to the filters it was issued for.
fn filter_tag(f: &SearchFilter) -> String {
    let canonical = serde_json::to_string(f).unwrap_or_default();
    hex::encode(&Sha256::digest(canonical.as_bytes())[..8])
}

fn encode_cursor(k: Keyset, f: &SearchFilter) -> String {
    let raw = json!({ "t": k.created_at.timestamp_micros(), "id": k.order_id, "f": filter_tag(f) }).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(s: &str, f: &SearchFilter) -> Result<Keyset, ApiError> {
    let bad = || invalid("cursor", "cursor is not one this server issued; start again without it".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if v["f"].as_str() != Some(filter_tag(f).as_str()) {
        return Err(invalid(
            "cursor",
            "cursor was issued for different filters; keep the filters of the first page".into(),
        ));
    }
    let created_at = v["t"]
        .as_i64()
        .and_then(DateTime::from_timestamp_micros)
        .filter(|t| crate::store::limits::is_storable_time(*t))
        .ok_or_else(bad)?;
    let order_id = v["id"].as_u64().and_then(OrderId::new).ok_or_else(bad)?;
    Ok(Keyset { created_at, order_id })
}

/// `GET /orders/search`
#[utoipa::path(
    get,
    path = "/orders/search",
    security(("bearerAuth" = ["orders:read"]), ()),
    tag = "orders",
    summary = "Search orders (newest first, keyset pagination)",
    params(
        ("status" = Option<OrderStatus>, Query, description = "Filter by status"),
        ("tenant_region" = Option<String>, Query, description = "Filter by tenant region"),
        ("customer_id" = Option<String>, Query, description = "Filter by customer"),
        ("created_from" = Option<DateTime<Utc>>, Query, description = "Created at or after (RFC 3339)"),
        ("created_to" = Option<DateTime<Utc>>, Query, description = "Created before (RFC 3339)"),
        ("limit" = Option<u32>, Query, description = "Page size (1-100, default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page (opaque; keep the same filters)"),
    ),
    responses(
        (status = 401, description = "unauthorized: no valid bearer token (when ORDER_SAGA_AUTH_* is set)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "insufficient_scope or region_not_allowed", body = crate::http::openapi::ErrorBody),
        (status = 429, description = "rate_limited (ORDER_SAGA_HTTP_RATE_LIMIT): retry after Retry-After", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "A page of orders", body = crate::http::openapi::OrderPage),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(scopes::ORDERS_READ)?;
    let params = query_params(q.as_deref(), SEARCH_PARAMS)?;
    let mut f = SearchFilter { regions: caller.regions().map(|r| r.iter().cloned().collect()), ..Default::default() };
    let mut limit = DEFAULT_LIMIT;
    let mut cursor = None;
    for (k, v) in &params {
        match k.as_str() {
            "status" => f.status = Some(v.parse::<OrderStatus>().map_err(|e| invalid(k, e.to_string()))?),
            "tenant_region" => f.tenant_region = Some(v.clone()),
            "customer_id" => f.customer_id = Some(v.clone()),
            "created_from" => f.created_from = Some(parse_time(k, v)?),
            "created_to" => f.created_to = Some(parse_time(k, v)?),
            "limit" => {
                limit = v.parse::<u32>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
                    invalid(k, format!("limit must be an integer between 1 and {MAX_LIMIT}, found {v:?}"))
                })?
            }
            _ => cursor = Some(v.clone()),
        }
    }
    if let (Some(a), Some(b)) = (f.created_from, f.created_to)
        && a >= b
    {
        return Err(invalid("created_to", "created_to must be after created_from".into()));
    }
    let after = cursor.as_deref().map(|c| decode_cursor(c, &f)).transpose()?;
    let (orders, next) = orders::search(&state.db, &f, after, limit).await?;
    Ok(axum::Json(json!({
        "orders": orders,
        "next_cursor": next.map(|k| encode_cursor(k, &f)),
    }))
    .into_response())
}
