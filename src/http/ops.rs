//! `/ops` endpoints. Disabled (404) unless `ORDER_SAGA_OPS_TOKEN` is set;
//! every request needs `Authorization: Bearer <token>`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::AppState;
use super::error::ApiError;

/// Ops settings; `None` in `AppState` disables the endpoints.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    pub token: String,
    pub bulk_rate: u32,
    pub sweep_batch: u32,
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/ops/timeouts/sweep", post(sweep))
}

/// Checks the bearer token in constant time. Ops disabled → 404 (the endpoint
/// does not exist), bad or missing token → 401.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<OpsConfig, ApiError> {
    let Some(cfg) = &state.ops else {
        return Err(ApiError::not_found("ops endpoints are disabled (set ORDER_SAGA_OPS_TOKEN to enable them)"));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let a = given.as_bytes();
    let b = cfg.token.as_bytes();
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    if diff != 0 {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid ops bearer token is required"));
    }
    Ok(cfg.clone())
}

/// `POST /ops/timeouts/sweep` — fire every due timer now (for external schedulers).
async fn sweep(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let cfg = authorize(&state, &headers)?;
    let Some(sagas) = &state.sagas else {
        return Err(ApiError::not_found("sagas are not enabled"));
    };
    let report = crate::timers::sweep(&state.db, sagas, cfg.sweep_batch, Some(&state.metrics)).await?;
    if report.fired > 0 {
        state.relay_wakeup.notify_one();
    }
    Ok(axum::Json(report).into_response())
}
