//! The OpenAPI document, generated from the handlers: each handler carries
//! its `#[utoipa::path]` (method, path, parameters, body, responses) and each
//! body its `ToSchema`, so the document is compiled from the code that serves
//! the API and cannot drift from it. Served as `/openapi.json`.
//!
//! Bodies the handlers read as raw JSON and validate field by field (to
//! report every invalid field with its JSON pointer) are described by the
//! schema types below; responses use the types the handlers return
//! (`OrderView`, `SweepReport`, `Report`, …). After generation,
//! [`document`] adds what every operation can answer (405, 500, 503), the
//! security schemes, and the error codes of [`ErrorCode`](crate::http::error::ErrorCode).
//!
//! Tests: `tests/it/docs.rs` checks that every documented path is routed and
//! every route documented, and that every error code is returned by some
//! handler and documented with its status.

use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use super::error::document_error_codes;

/// `POST /orders` body.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = OrderCreate)]
#[allow(dead_code)] // A schema: the handler validates the JSON field by field.
pub struct OrderCreate {
    #[schema(min_length = 1, max_length = 64)]
    customer_id: String,
    #[schema(min_length = 1, max_length = 32, pattern = "^[A-Za-z0-9_-]+$")]
    tenant_region: String,
    /// ISO 4217 code.
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    /// Distinct SKUs; total at most 100000000.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<OrderItemCreate>,
}

/// One line of `POST /orders`.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct OrderItemCreate {
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    sku: String,
    #[schema(minimum = 1, maximum = 10000)]
    qty: u32,
    /// Decimal string (never a JSON number), at most the currency's minor units; 0 to 1000000.
    #[schema(pattern = r"^\d{1,12}(\.\d{1,4})?$", example = "19.99")]
    unit_price: String,
}

/// `POST /orders/{order_id}/status` body.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = StatusChange)]
#[allow(dead_code)]
pub struct StatusChangeBody {
    to_status: crate::domain::OrderStatus,
    #[schema(pattern = "^[A-Z0-9_]{1,64}$")]
    reason_code: Option<String>,
    #[schema(max_length = 1000)]
    comment: Option<String>,
    /// Who asks. With bearer tokens (ORDER_SAGA_AUTH_*) the actor recorded is the token's subject
    /// and this is kept only as "on behalf of"; on an open API it is required.
    #[schema(min_length = 1, max_length = 128)]
    actor: Option<String>,
    /// Apply only if the order is still at this version.
    #[schema(minimum = 1)]
    expected_version: Option<u64>,
}

/// A page of `GET /orders/search`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OrderPage {
    /// Without their items.
    orders: Vec<crate::store::orders::OrderView>,
    /// Pass as `cursor` (with the same filters) for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// Every error: `{"error": {"code", "message", "details"}}`.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    code: String,
    message: String,
    /// Code-specific details, e.g. the invalid fields with JSON pointers; null when none.
    details: Option<Value>,
}

/// The action of `POST /ops/sagas/{order_id}/actions` and of bulk jobs.
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)]
pub struct OpsActionKind {
    #[schema(
        value_type = String,
        pattern = "^(retry_step|fire_timer|reschedule_timer|cancel_timer|cancel|force|release|skip_poison|migrate)$"
    )]
    action: String,
    /// fire_timer, reschedule_timer, cancel_timer.
    timer: Option<String>,
    /// reschedule_timer.
    at: Option<chrono::DateTime<chrono::Utc>>,
    /// reschedule_timer, e.g. 30m.
    after: Option<String>,
    /// force: a manual event of the definition.
    event: Option<String>,
    /// migrate: the newer loaded definition version to move the saga to.
    to_version: Option<u32>,
}

/// `POST /ops/sagas/{order_id}/actions` body: the action's fields, plus these.
#[derive(ToSchema, serde::Deserialize)]
#[schema(as = OpsAction)]
#[allow(dead_code)]
pub struct OpsActionBody {
    #[schema(inline)]
    #[serde(flatten)]
    action: OpsActionKind,
    /// The saga version you looked at.
    expected_version: u32,
    /// Who acts: required with the bearer token; with a console session it
    /// is the name given at sign-in (a value here is ignored).
    #[schema(max_length = 128)]
    actor: Option<String>,
    #[schema(max_length = 1000)]
    reason: String,
    dry_run: Option<bool>,
}

/// `POST /ops/definitions/preview` body.
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)]
pub struct DefinitionPreviewBody {
    /// The candidate definition's TOML text (the body is at most ORDER_SAGA_HTTP_MAX_BODY_BYTES).
    definition: String,
    /// How many divergent sagas to list (default 20, at most 100).
    sample: Option<u32>,
}

/// `POST /ops/bulk` body.
#[derive(ToSchema)]
#[schema(as = OpsBulk)]
#[allow(dead_code)]
pub struct OpsBulkBody {
    /// state, older_than, tenant_region, definition_version, quarantined,
    /// stuck, terminal, timers_overdue, unpublished, dead_lettered_within.
    filter: serde_json::Map<String, Value>,
    action: OpsActionKind,
    #[schema(max_length = 128)]
    actor: Option<String>,
    reason: String,
    dry_run: Option<bool>,
    #[schema(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// `POST /ops/ui/session` body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OpsSignIn {
    /// ORDER_SAGA_OPS_TOKEN.
    token: String,
    /// Recorded as the actor of every action of the session.
    #[schema(max_length = 128)]
    actor: String,
}

/// The signed-in operator and the session's CSRF token.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OpsSession {
    /// The operator: the identity provider's subject (with a readable name
    /// in front), or the name given with the ops token.
    actor: String,
    /// `read`, `act` or `admin` (from the provider's role claim; `admin` with the ops token).
    role: String,
    /// The ways to sign in this daemon offers: `{"identity_provider": bool, "token": bool}`.
    sign_in: Value,
    /// Send as X-CSRF-Token on every /ops request.
    csrf_token: String,
    expires_at: chrono::DateTime<chrono::Utc>,
    idle_timeout_seconds: Option<u64>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order-saga",
        version = "1",
        description = "System of record and saga orchestrator for e-commerce orders. Errors always have the shape \
                       {\"error\": {\"code\", \"message\", \"details\"}}; error.code lists every code (x-error-codes: \
                       status and meaning)."
    ),
    components(schemas(ErrorBody, ErrorDetail, OpsActionKind))
)]
struct Base;

/// The whole document, built once per call (the server caches it).
pub fn document() -> Value {
    let mut api = Base::openapi();
    api.merge(super::orders::Api::openapi());
    api.merge(super::ops::Api::openapi());
    api.merge(super::console::Api::openapi());
    api.merge(super::Api::openapi());
    let mut doc = serde_json::to_value(api).unwrap_or(Value::Null);
    // What any operation can answer: another method on its path, a bug, the
    // server's request timeout.
    if let Some(paths) = doc["paths"].as_object_mut() {
        for op in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|p| p.values_mut()) {
            let responses = &mut op["responses"];
            for status in ["405", "500", "503"] {
                if responses.get(status).is_none() {
                    responses[status] = json!({ "$ref": "#/components/responses/Error" });
                }
            }
        }
    }
    doc["components"]["responses"] = json!({
        "Error": {
            "description": "Error",
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
        }
    });
    doc["components"]["securitySchemes"] = json!({
        "bearerAuth": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "An OAuth 2.0 / OIDC access token of the issuer in ORDER_SAGA_AUTH_ISSUER for the audience \
                ORDER_SAGA_AUTH_AUDIENCE, with the operation's scope (scope or scp claim). Without ORDER_SAGA_AUTH_* the \
                orders API is open (the empty requirement). On /ops the scopes are roles: ops:read, ops:act (also actions on \
                one saga and the sweep), ops:admin (also bulk actions, release, skip_poison and migrate)." },
        "opsToken": { "type": "http", "scheme": "bearer",
            "description": "ORDER_SAGA_OPS_TOKEN (role admin); without it, and without ORDER_SAGA_AUTH_*, the ops endpoints do not exist" },
        "opsSession": { "type": "apiKey", "in": "cookie", "name": "order_saga_ops",
            "description": "Ops console session (POST /ops/ui/session); the actor of every action is the name given at sign-in" },
        "opsCsrf": { "type": "apiKey", "in": "header", "name": "X-CSRF-Token",
            "description": "The console session's CSRF token (from GET or POST /ops/ui/session); required with the session cookie" },
    });
    document_error_codes(&mut doc);
    doc
}
