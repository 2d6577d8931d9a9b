//! The one error shape of the API: `{"error": {"code", "message", "details"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::domain::FieldError;
use crate::store::StoreError;
use crate::store::orders::ChangeRefusal;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: Value::Null }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    pub fn validation(errors: Vec<FieldError>) -> ApiError {
        let n = errors.len();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("the request has {n} invalid field{}", if n == 1 { "" } else { "s" }),
        )
        .with_details(json!({ "fields": errors }))
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn order_not_found(order_id: u64) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "order_not_found", format!("order {order_id} does not exist"))
    }

    pub fn refusal(order_id: u64, r: ChangeRefusal) -> ApiError {
        match r {
            ChangeRefusal::NotFound => ApiError::order_not_found(order_id),
            ChangeRefusal::Illegal { from, to } => ApiError::new(
                StatusCode::CONFLICT,
                "illegal_transition",
                format!("order {order_id} cannot go from {from} to {to}"),
            )
            .with_details(json!({ "from_status": from, "to_status": to, "allowed": from.successors() })),
            ChangeRefusal::VersionMismatch { expected, actual } => ApiError::new(
                StatusCode::CONFLICT,
                "version_conflict",
                format!("order {order_id} is at version {actual}, not {expected}; read it again"),
            )
            .with_details(json!({ "expected_version": expected, "current_version": actual })),
            ChangeRefusal::Concurrent => ApiError::new(
                StatusCode::CONFLICT,
                "concurrent_modification",
                format!("order {order_id} changed while this request was handled; read it again"),
            ),
            ChangeRefusal::SagaInProgress { saga_state } => ApiError::new(
                StatusCode::CONFLICT,
                "saga_in_progress",
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
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is busy; retry with the same Idempotency-Key",
            );
        }
        tracing::error!(error = %e, "storage error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message, "details": self.details } });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
