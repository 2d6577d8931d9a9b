//! The one error shape of the API: `{"error": {"code", "message", "details"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::domain::{FieldError, OrderId};
use crate::store::StoreError;
use crate::store::orders::ChangeRefusal;

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $variant:ident => $code:literal, $status:ident; )+) => {
        /// Every error code the API returns, with its HTTP status: handlers
        /// can only answer with one of these, and the OpenAPI document lists
        /// exactly these (`tests/it/docs.rs::openapi_documents_every_error_code`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $( $(#[doc = $doc])+ $variant, )+ }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )+ ];

            /// The stable machine-readable code (`error.code`). Part of the contract.
            pub const fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )+ }
            }

            /// The HTTP status every response with this code has.
            pub const fn status(self) -> StatusCode {
                match self { $( ErrorCode::$variant => StatusCode::$status, )+ }
            }

            /// What the code means, for the OpenAPI document.
            pub fn description(self) -> String {
                let lines: &[&str] = match self { $( ErrorCode::$variant => &[$($doc),+], )+ };
                lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")
            }
        }
    };
}

error_codes! {
    /// The body is not an object of the documented fields and values (`details.fields`: JSON pointer, problem).
    ValidationFailed => "validation_failed", UNPROCESSABLE_ENTITY;
    /// The body is not JSON (`details.line`, `details.column`).
    MalformedJson => "malformed_json", BAD_REQUEST;
    /// The body could not be read.
    UnreadableBody => "unreadable_body", BAD_REQUEST;
    /// The body is larger than the API accepts.
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE;
    /// The body is not `application/json`.
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    /// A query parameter the endpoint does not know.
    UnknownParameter => "unknown_parameter", UNPROCESSABLE_ENTITY;
    /// A query parameter given twice.
    RepeatedParameter => "repeated_parameter", UNPROCESSABLE_ENTITY;
    /// A query or path parameter with an invalid value (`details.parameter`).
    InvalidParameter => "invalid_parameter", UNPROCESSABLE_ENTITY;
    /// `POST /orders` without an `Idempotency-Key` header.
    IdempotencyKeyMissing => "idempotency_key_missing", UNPROCESSABLE_ENTITY;
    /// The `Idempotency-Key` is empty, too long or not printable ASCII.
    IdempotencyKeyInvalid => "idempotency_key_invalid", UNPROCESSABLE_ENTITY;
    /// Two `Idempotency-Key` headers that differ.
    IdempotencyKeyConflict => "idempotency_key_conflict", UNPROCESSABLE_ENTITY;
    /// The key was used before with a different body.
    IdempotencyKeyReused => "idempotency_key_reused", UNPROCESSABLE_ENTITY;
    /// No such order.
    OrderNotFound => "order_not_found", NOT_FOUND;
    /// No such route.
    NotFound => "not_found", NOT_FOUND;
    /// The route exists, the method does not.
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED;
    /// The order's transition table does not allow the change (`details.allowed`).
    IllegalTransition => "illegal_transition", CONFLICT;
    /// `expected_version` differs from the order's version.
    VersionConflict => "version_conflict", CONFLICT;
    /// Another change committed while this one was handled; read again.
    ConcurrentModification => "concurrent_modification", CONFLICT;
    /// The saga drives the order now and does not accept this change (`details.saga_state`).
    SagaInProgress => "saga_in_progress", CONFLICT;
    /// The database is busy or failing over; retry (with the same Idempotency-Key).
    Unavailable => "unavailable", SERVICE_UNAVAILABLE;
    /// More `POST /orders` are waiting than the daemon queues; retry with the same Idempotency-Key.
    Overloaded => "overloaded", SERVICE_UNAVAILABLE;
    /// The daemon is shutting down; retry (another replica) with the same Idempotency-Key.
    ShuttingDown => "shutting_down", SERVICE_UNAVAILABLE;
    /// The request took longer than the server's request timeout.
    Timeout => "timeout", SERVICE_UNAVAILABLE;
    /// `/readyz`: the database does not answer.
    NotReady => "not_ready", SERVICE_UNAVAILABLE;
    /// A bug or corrupt data; logged with the details.
    Internal => "internal", INTERNAL_SERVER_ERROR;
    /// No valid credential: on `/orders` (when ORDER_SAGA_AUTH_* is set) a missing, malformed,
    /// expired or foreign bearer token (`WWW-Authenticate: Bearer` says which); on `/ops` no valid
    /// ops token or console session.
    Unauthorized => "unauthorized", UNAUTHORIZED;
    /// The bearer token lacks the scope the endpoint needs (`details.required_scope`).
    InsufficientScope => "insufficient_scope", FORBIDDEN;
    /// The bearer token's region claim does not include the order's tenant region.
    RegionNotAllowed => "region_not_allowed", FORBIDDEN;
    /// The caller sent more requests than ORDER_SAGA_HTTP_RATE_LIMIT allows; retry after `Retry-After` seconds.
    RateLimited => "rate_limited", TOO_MANY_REQUESTS;
    /// The identity provider's keys cannot be fetched to check the token; retry.
    IdentityProviderUnavailable => "identity_provider_unavailable", SERVICE_UNAVAILABLE;
    /// `/ops` from the console: the session's `X-CSRF-Token` is missing or wrong.
    CsrfTokenInvalid => "csrf_token_invalid", FORBIDDEN;
    /// `/ops`: the order has no saga.
    SagaNotFound => "saga_not_found", NOT_FOUND;
    /// `/ops`: the saga moved on since `expected_version` (dry run, then a changed saga).
    StaleVersion => "stale_version", CONFLICT;
    /// `/ops`: the definition does not allow this action in the saga's state.
    NotAllowed => "not_allowed", CONFLICT;
    /// `/ops`: the action's parameters are invalid.
    InvalidRequest => "invalid_request", UNPROCESSABLE_ENTITY;
    /// `/ops`: no such action (`details.actions` lists them).
    InvalidAction => "invalid_action", UNPROCESSABLE_ENTITY;
    /// `/ops/bulk`: the most bulk jobs that may run at once are running; wait or stop one.
    TooManyJobs => "too_many_jobs", CONFLICT;
    /// `/ops/definitions/preview`: the candidate definition is not valid (`details.errors`: line, message).
    InvalidDefinition => "invalid_definition", UNPROCESSABLE_ENTITY;
}

/// Completes the OpenAPI document (generated from the handlers, see
/// `http::openapi`) with the error codes of [`ErrorCode`]: `error.code`
/// becomes an enum of exactly these, each described with its status in
/// `x-error-codes`. Served as `/openapi.json`; the codes cannot drift from
/// the handlers because handlers can only answer with an [`ErrorCode`].
pub fn document_error_codes(doc: &mut Value) {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let table: serde_json::Map<String, Value> = ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str().to_owned(), json!({ "status": c.status().as_u16(), "description": c.description() })))
        .collect();
    let code = &mut doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"];
    *code = json!({
        "type": "string",
        "description": "Stable machine-readable code; x-error-codes gives each one's HTTP status and meaning",
        "enum": codes,
        "x-error-codes": table,
    });
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    /// `WWW-Authenticate` of a 401 or 403 (RFC 6750).
    pub challenge: Option<String>,
    /// `Retry-After` in seconds (a 503 says 1 without it).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            details: Value::Null,
            challenge: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    pub fn with_challenge(mut self, challenge: String) -> ApiError {
        self.challenge = Some(challenge);
        self
    }

    pub fn validation(errors: Vec<FieldError>) -> ApiError {
        let n = errors.len();
        ApiError::new(
            ErrorCode::ValidationFailed,
            format!("the request has {n} invalid field{}", if n == 1 { "" } else { "s" }),
        )
        .with_details(json!({ "fields": errors }))
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, what)
    }

    pub fn order_not_found(order_id: OrderId) -> ApiError {
        ApiError::new(ErrorCode::OrderNotFound, format!("order {order_id} does not exist"))
    }

    pub fn refusal(order_id: OrderId, r: ChangeRefusal) -> ApiError {
        match r {
            ChangeRefusal::NotFound => ApiError::order_not_found(order_id),
            ChangeRefusal::Illegal { from, to } => {
                ApiError::new(ErrorCode::IllegalTransition, format!("order {order_id} cannot go from {from} to {to}"))
                    .with_details(json!({ "from_status": from, "to_status": to, "allowed": from.successors() }))
            }
            ChangeRefusal::VersionMismatch { expected, actual } => ApiError::new(
                ErrorCode::VersionConflict,
                format!("order {order_id} is at version {actual}, not {expected}; read it again"),
            )
            .with_details(json!({ "expected_version": expected, "current_version": actual })),
            ChangeRefusal::Concurrent => ApiError::new(
                ErrorCode::ConcurrentModification,
                format!("order {order_id} changed while this request was handled; read it again"),
            ),
            ChangeRefusal::SagaInProgress { saga_state } => ApiError::new(
                ErrorCode::SagaInProgress,
                format!(
                    "order {order_id} is driven by its saga (state {saga_state}), which does not accept this change now"
                ),
            )
            .with_details(json!({ "saga_state": saga_state })),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if e.is_transient() {
            tracing::warn!(error = %e, "database busy; answering 503");
            return ApiError::new(ErrorCode::Unavailable, "the database is busy; retry with the same Idempotency-Key");
        }
        tracing::error!(error = %e, "storage error");
        ApiError::new(ErrorCode::Internal, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code.as_str(), "message": self.message, "details": self.details } });
        let mut resp = (self.status, axum::Json(body)).into_response();
        match self.retry_after {
            Some(secs) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            None if self.status == StatusCode::SERVICE_UNAVAILABLE => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            None => {}
        }
        if let Some(v) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}
