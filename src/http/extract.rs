//! Extractors that answer in the API's error shape (axum's own rejections
//! are plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde_json::{Value, json};

use super::RequestTrace;
use super::error::{ApiError, ErrorCode};
use crate::domain::OrderId;
use crate::telemetry::trace_context::TraceContext;

/// A JSON body: requires a JSON content type (415), respects the body limit
/// (413), must parse (400).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let is_json = mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "expected Content-Type: application/json, found {:?}",
                    if ct.is_empty() { "nothing" } else { ct }
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than the server accepts")
            } else {
                ApiError::new(ErrorCode::UnreadableBody, format!("cannot read the request body: {rej}"))
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(ErrorCode::MalformedJson, format!("the body is not valid JSON: {e}"))
                .with_details(json!({ "line": e.line(), "column": e.column() }))
        })?;
        Ok(JsonBody(value))
    }
}

/// The request's trace context (set by the tracing middleware).
pub struct Trace(pub TraceContext);

impl<S: Send + Sync> FromRequestParts<S> for Trace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Trace(parts.extensions.get::<RequestTrace>().map(|t| t.0.clone()).unwrap_or_else(TraceContext::new_root)))
    }
}

/// Parses a positive integer order id from a path segment.
pub fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    raw.parse::<OrderId>().map_err(|_| {
        ApiError::new(ErrorCode::OrderNotFound, format!("{raw:?} is not an order id (order ids are positive integers)"))
    })
}

/// Query parameters as ordered pairs; rejects unknown and repeated names.
pub fn query_params(raw: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = match raw {
        None => Vec::new(),
        Some(q) => form_urlencoded_pairs(q),
    };
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::new(
                ErrorCode::UnknownParameter,
                format!("unknown query parameter {k:?}; allowed: {}", allowed.join(", ")),
            ));
        }
        if !seen.insert(k.clone()) {
            return Err(ApiError::new(ErrorCode::RepeatedParameter, format!("query parameter {k:?} given twice")));
        }
    }
    Ok(pairs)
}

fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let p = query_params(Some("a=1&b=x%2By+z&c=%zz"), &["a", "b", "c"]).unwrap();
        assert_eq!(p, vec![("a".into(), "1".into()), ("b".into(), "x+y z".into()), ("c".into(), "%zz".into())]);
        assert!(query_params(Some("a=1&a=2"), &["a"]).is_err());
        assert!(query_params(Some("d=1"), &["a"]).is_err());
        assert_eq!(query_params(Some("t=2026-01-01T00%3A00%3A00Z"), &["t"]).unwrap()[0].1, "2026-01-01T00:00:00Z");
    }
}
