//! `/ops` endpoints.

use axum::Router;

use super::AppState;

/// Ops settings; `None` in `AppState` disables the endpoints.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    pub token: String,
}

pub fn routes() -> Router<AppState> {
    Router::new()
}
