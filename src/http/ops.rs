//! `/ops` endpoints. Disabled (404) unless `ORDER_SAGA_OPS_TOKEN`, named
//! credentials, the bearer-JWT settings (`ORDER_SAGA_AUTH_*`) or the
//! console's identity provider (`ORDER_SAGA_OPS_OIDC_*`) are set. Every request needs one
//! of: `Authorization: Bearer <ops token>` (scripts, the CLI; role admin),
//! `Authorization: Bearer <JWT>` with an `ops:*` scope (each person or tool
//! its own identity and [`Role`]), or a console session: its cookie plus its
//! CSRF token in the `X-CSRF-Token` header (see [`super::console`]).
//!
//! Roles: `ops:read` sees everything; `ops:act` also acts on one saga and
//! sweeps timeouts; `ops:admin` also runs bulk actions and releases or skips
//! poison events.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::{JsonBody, query_params};
use crate::domain::{OrderId, SagaVersion};
use crate::ops::{Action, BulkRequest, Jobs, Ops, OpsError, Request};
use crate::store::inspect::{self, SagaFilter, SagaKeyset};

/// Ops settings; `None` in `AppState` disables the endpoints.
#[derive(Clone)]
pub struct OpsConfig {
    /// The shared ops token (role admin, and console sign-in); `None` when
    /// only bearer JWTs are accepted.
    pub token: Option<String>,
    /// Named credentials, each with a role (ORDER_SAGA_OPS_CREDENTIALS).
    pub credentials: Vec<crate::auth::OpsCredential>,
    /// The console's sign-in through an OpenID Provider, when configured.
    pub oidc: Option<std::sync::Arc<crate::auth::oidc::OidcClient>>,
    pub bulk_rate: u32,
    pub sweep_batch: u32,
    /// How the sweeper judges due timers (event time).
    pub timer_policy: std::sync::Arc<crate::timers::TimerPolicy>,
    pub jobs: Jobs,
}

impl OpsConfig {
    /// The credentials a live console session may have been signed in with:
    /// the ops token and the identity provider, as configured now.
    pub fn session_credentials(&self) -> Vec<String> {
        self.token.iter().cloned().chain(self.oidc.as_ref().map(|o| o.credential())).collect()
    }
}

impl std::fmt::Debug for OpsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsConfig").field("bulk_rate", &self.bulk_rate).finish_non_exhaustive()
    }
}

/// The `/ops` part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list,
    show,
    act,
    overview,
    drain,
    preview_definition,
    bulk,
    jobs,
    job,
    cancel_job,
    audit,
    sweep,
    end_sessions
))]
pub(super) struct Api;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ops/sagas", get(list))
        .route("/ops/sagas/{order_id}", get(show))
        .route("/ops/sagas/{order_id}/actions", post(act))
        .route("/ops/overview", get(overview))
        .route("/ops/drain", get(drain))
        .route("/ops/definitions/preview", post(preview_definition))
        .route("/ops/bulk", post(bulk))
        .route("/ops/jobs", get(jobs))
        .route("/ops/jobs/{job_id}", get(job))
        .route("/ops/jobs/{job_id}/cancel", post(cancel_job))
        .route("/ops/audit", get(audit))
        .route("/ops/timeouts/sweep", post(sweep))
        .route("/ops/sessions", axum::routing::delete(end_sessions))
}

/// Who is calling `/ops`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The shared bearer token: the caller names the actor in each request.
    Token,
    /// A console session: every action is recorded under its operator (the
    /// identity provider's subject, or the name given with the ops token).
    Session { actor: String, role: Role },
    /// A bearer JWT: every action is recorded under its subject.
    Jwt { subject: String, role: Role },
    /// A named credential (ORDER_SAGA_OPS_CREDENTIALS): recorded under its name.
    Named { name: String, role: Role },
}

pub use crate::auth::OpsRole as Role;

impl Principal {
    pub fn role(&self) -> Role {
        match self {
            // The shared secret (its console sessions are stored as admin).
            Principal::Token => Role::Admin,
            Principal::Session { role, .. } | Principal::Jwt { role, .. } | Principal::Named { role, .. } => *role,
        }
    }

    /// Who this principal is, for the records: the session's operator, the
    /// token's subject, the credential's name; `None` for the shared token,
    /// whose caller names the actor in each request.
    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::Token => None,
            Principal::Session { actor, .. } => Some(actor),
            Principal::Jwt { subject, .. } | Principal::Named { name: subject, .. } => Some(subject),
        }
    }

    /// 403 unless the principal has `need`.
    pub fn require(&self, need: Role) -> Result<(), ApiError> {
        if self.role() >= need { Ok(()) } else { Err(super::auth::insufficient_scope(need.scope())) }
    }
}

/// Compares a secret in constant time.
pub(crate) fn secret_matches(given: &str, want: &str) -> bool {
    crate::auth::constant_time_eq(given.as_bytes(), want.as_bytes())
}

/// Authenticates an `/ops` request. Ops disabled → 404 (the endpoint does not
/// exist); a bearer token is checked in constant time; otherwise the console
/// session cookie must name a live session and `X-CSRF-Token` must be its
/// token (403 without it); neither → 401.
pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    need: Role,
) -> Result<(OpsConfig, Ops, Principal), ApiError> {
    let Some(cfg) = &state.ops else {
        return Err(ApiError::not_found(
            "ops endpoints are disabled (set ORDER_SAGA_OPS_TOKEN, ORDER_SAGA_AUTH_* or ORDER_SAGA_OPS_OIDC_* to enable them)",
        ));
    };
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let principal = match (bearer, super::console::session_cookie(headers)) {
        (Some(given), _) => {
            if cfg.token.as_deref().is_some_and(|t| secret_matches(given, t)) {
                Principal::Token
            } else if let Some(c) = crate::auth::OpsCredential::find(&cfg.credentials, given) {
                Principal::Named { name: c.name.clone(), role: c.role }
            } else if let Some(verifier) = &state.auth {
                let p = match verifier.verify(given).await {
                    Ok(p) => p,
                    Err(e) if e.is_transient() => return Err(super::auth::unavailable(&e)),
                    Err(e) => return Err(refused(state, &e.to_string())),
                };
                let role = Role::of(&p).ok_or_else(|| super::auth::insufficient_scope(need.scope()))?;
                Principal::Jwt { subject: p.subject, role }
            } else {
                return Err(refused(state, "not the ops token"));
            }
        }
        (None, Some(id)) => {
            let Some(session) = crate::store::sessions::touch(&state.db, &id, &cfg.session_credentials()).await? else {
                return Err(unauthorized());
            };
            let csrf = headers.get(super::console::CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !crate::store::sessions::csrf_matches(&id, csrf) {
                return Err(ApiError::new(
                    ErrorCode::CsrfTokenInvalid,
                    "a console request must carry the session's X-CSRF-Token header",
                ));
            }
            Principal::Session { actor: session.actor, role: session.role }
        }
        (None, None) => return Err(unauthorized()),
    };
    principal.require(need)?;
    let Some(sagas) = state.sagas.clone() else {
        return Err(ApiError::not_found("sagas are not enabled"));
    };
    let ops = Ops {
        db: state.db.clone(),
        sagas,
        metrics: Some(state.metrics.clone()),
        relay_wakeup: Some(state.relay_wakeup.clone()),
        jobs: cfg.jobs.clone(),
    };
    Ok((cfg.clone(), ops, principal))
}

fn unauthorized() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "a valid ops bearer token or console session is required")
        .with_challenge("Bearer realm=\"order-saga\"".into())
}

/// A refused bearer credential: logged, counted, answered 401.
fn refused(state: &AppState, why: &str) -> ApiError {
    state.metrics.ops.ops_auth_failures_total.inc();
    tracing::warn!(reason = why, "ops bearer credential refused");
    unauthorized()
}

/// The actor of an action: the session's operator, the token's subject (a
/// body `actor` only "on behalf of"), or with the shared token the request's
/// `actor` field.
fn actor_of(principal: &Principal, obj: &mut serde_json::Map<String, Value>) -> Result<String, ApiError> {
    match (principal, principal.name()) {
        (Principal::Session { .. }, Some(actor)) => {
            obj.remove("actor");
            Ok(actor.to_owned())
        }
        (_, Some(subject)) => {
            let claimed = match obj.remove("actor") {
                Some(Value::String(s)) => Some(s),
                _ => None,
            };
            Ok(super::auth::on_behalf_of(subject, claimed.as_deref()))
        }
        (_, None) => take_str(obj, "actor"),
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> ApiError {
        match e {
            OpsError::NotFound(id) => ApiError::new(ErrorCode::SagaNotFound, format!("order {id} has no saga")),
            OpsError::StaleVersion { expected, actual, changes } => {
                let who: Vec<&str> = changes.iter().map(|c| c.actor.as_str()).collect();
                ApiError::new(
                    ErrorCode::StaleVersion,
                    format!(
                        "the saga is at version {actual}, not {expected} (changed since by {}); look at it again",
                        if who.is_empty() { "someone".to_owned() } else { who.join(", ") }
                    ),
                )
                .with_details(json!({"expected_version": expected, "current_version": actual, "changes": changes}))
            }
            OpsError::NotAllowed(m) => ApiError::new(ErrorCode::NotAllowed, m),
            OpsError::BadRequest(m) => ApiError::new(ErrorCode::InvalidRequest, m),
            e @ OpsError::TooManyJobs(_) => ApiError::new(ErrorCode::TooManyJobs, e.to_string()),
            OpsError::Store(s) => ApiError::from(s),
        }
    }
}

/// A job id in a path: every job id is a UUID, anything else names no job
/// (checked before it reaches the database's ASCII column).
fn job_id(given: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(given).map(|u| u.to_string()).map_err(|_| ApiError::not_found(format!("no job {given:?}")))
}

fn bad(param: &str, msg: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, msg).with_details(json!({"parameter": param}))
}

fn parse_bool(k: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(k, format!("{k} must be true or false"))),
    }
}

/// Builds a filter from (key, value) pairs; shared by the list query and the bulk body.
pub fn filter_from(pairs: &[(String, String)]) -> Result<SagaFilter, ApiError> {
    let mut f = SagaFilter::default();
    for (k, v) in pairs {
        match k.as_str() {
            "order_id" => {
                f.order_id =
                    Some(v.trim().parse::<OrderId>().map_err(|_| bad(k, "order_id must be a positive number".into()))?)
            }
            "customer_id" => f.customer_id = Some(v.trim().to_owned()),
            "state" => f.state = Some(v.clone()),
            "older_than" => {
                let d = humantime::parse_duration(v).map_err(|e| bad(k, format!("older_than: {e} (e.g. 15m)")))?;
                if d > crate::store::limits::MAX_AGE {
                    return Err(bad(k, "older_than: at most 100 years".into()));
                }
                f.older_than = Some(d)
            }
            "tenant_region" => f.tenant_region = Some(v.clone()),
            "definition_version" => {
                f.definition_version =
                    Some(v.parse().map_err(|_| bad(k, "definition_version must be a number".into()))?)
            }
            "quarantined" => f.quarantined = Some(parse_bool(k, v)?),
            "stuck" => f.stuck = parse_bool(k, v)?,
            "terminal" => f.include_terminal = parse_bool(k, v)?,
            "timers_overdue" => f.timers_overdue = parse_bool(k, v)?,
            "unpublished" => f.unpublished = parse_bool(k, v)?,
            "dead_lettered_within" => {
                let d =
                    humantime::parse_duration(v).map_err(|e| bad(k, format!("dead_lettered_within: {e} (e.g. 1h)")))?;
                if d > crate::store::limits::MAX_AGE {
                    return Err(bad(k, "dead_lettered_within: at most 100 years".into()));
                }
                f.dead_lettered_within = Some(d)
            }
            _ => {}
        }
    }
    Ok(f)
}

/// The filters of the saga list and of bulk actions.
pub const FILTER_KEYS: [&str; 12] = [
    "order_id",
    "customer_id",
    "state",
    "older_than",
    "tenant_region",
    "definition_version",
    "quarantined",
    "stuck",
    "terminal",
    "timers_overdue",
    "unpublished",
    "dead_lettered_within",
];

#[utoipa::path(
    get,
    path = "/ops/sagas",
    tag = "ops",
    summary = "List sagas, oldest in their state first",
    params(
        ("order_id" = Option<u64>, Query, description = "Only this order (terminal included)"),
        ("customer_id" = Option<String>, Query, description = "Only orders of this customer (terminal included)"),
        ("state" = Option<String>, Query, description = "Only this saga state"),
        ("older_than" = Option<String>, Query, description = "At least this long in the current state, e.g. 15m"),
        ("tenant_region" = Option<String>, Query, description = "Only this tenant region"),
        ("definition_version" = Option<u32>, Query, description = "Only sagas started on this definition version"),
        ("quarantined" = Option<bool>, Query, description = "Only quarantined (true) or not (false)"),
        ("stuck" = Option<bool>, Query, description = "Only sagas over their state's max_dwell"),
        ("terminal" = Option<bool>, Query, description = "Include terminal states"),
        ("timers_overdue" = Option<bool>, Query, description = "Only sagas with a timer more than 30s past due"),
        ("unpublished" = Option<bool>, Query, description = "Only sagas with outbox rows not yet published"),
        ("dead_lettered_within" = Option<String>, Query, description = "Only sagas with an event dead-lettered within this long, e.g. 1h"),
        ("limit" = Option<u32>, Query, description = "1-500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    security(("bearerAuth" = ["ops:read"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "JSON", body = Object),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn list(State(state): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let (_, ops, _) = authorize(&state, &headers, Role::Read).await?;
    let mut allowed: Vec<&str> = FILTER_KEYS.to_vec();
    allowed.extend(["limit", "cursor"]);
    let params = query_params(q.as_deref(), &allowed)?;
    let f = filter_from(&params)?;
    let mut limit = 50;
    let mut after = None;
    for (k, v) in &params {
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=500).contains(l))
                    .ok_or_else(|| bad(k, "limit must be 1 to 500".into()))?
            }
            "cursor" => after = Some(decode_cursor(v)?),
            _ => {}
        }
    }
    let (sagas, next) = inspect::list(&ops.db, &ops.sagas.catalog, &f, after, limit).await?;
    Ok(axum::Json(json!({ "sagas": sagas, "next_cursor": next.map(encode_cursor) })).into_response())
}

fn encode_cursor(k: SagaKeyset) -> String {
    format!("{}.{}", k.state_entered_at.timestamp_micros(), k.order_id)
}

fn decode_cursor(s: &str) -> Result<SagaKeyset, ApiError> {
    let bad_cursor = || bad("cursor", "cursor is not one this server issued".into());
    let (t, id) = s.split_once('.').ok_or_else(bad_cursor)?;
    Ok(SagaKeyset {
        state_entered_at: t
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::from_timestamp_micros)
            .filter(|t| crate::store::limits::is_storable_time(*t))
            .ok_or_else(bad_cursor)?,
        order_id: id.parse().map_err(|_| bad_cursor())?,
    })
}

fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    raw.parse::<OrderId>().map_err(|_| ApiError::new(ErrorCode::SagaNotFound, format!("{raw:?} is not an order id")))
}

#[utoipa::path(
    get,
    path = "/ops/sagas/{order_id}",
    tag = "ops",
    summary = "One saga: order, state, transitions, history, timers, unpublished outbox, inbox, parked events",
    params(
        ("order_id" = u64, Path, description = "Order id of the saga", minimum = 1),
    ),
    security(("bearerAuth" = ["ops:read"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "JSON", body = Object),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let (_, ops, _) = authorize(&state, &headers, Role::Read).await?;
    Ok(axum::Json(ops.show(order_id(&raw)?).await?).into_response())
}

/// Splits the common fields (actor, reason, dry_run, …) from the action.
/// A request body that must be a JSON object.
fn json_object(body: Result<JsonBody, ApiError>) -> Result<serde_json::Map<String, Value>, ApiError> {
    match body? {
        JsonBody(Value::Object(obj)) => Ok(obj),
        JsonBody(_) => Err(bad("body", "expected a JSON object".into())),
    }
}

fn take_str(obj: &mut serde_json::Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(key, format!("{key} must be a string"))),
        None => Err(bad(key, format!("{key} is required"))),
    }
}

fn take_bool(obj: &mut serde_json::Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match obj.remove(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(bad(key, format!("{key} must be true or false"))),
    }
}

fn parse_action(v: Value) -> Result<Action, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        ApiError::new(ErrorCode::InvalidAction, format!("{e}")).with_details(json!({
            "actions": ["retry_step", "fire_timer {timer}", "reschedule_timer {timer, at|after}", "cancel_timer {timer}", "cancel", "force {event}", "release", "skip_poison", "migrate {to_version}"]
        }))
    })
}

#[utoipa::path(
    post,
    path = "/ops/sagas/{order_id}/actions",
    tag = "ops",
    summary = "Act on one saga (validated, version-guarded, audited; dry_run shows the effects)",
    description = "409 codes: stale_version (expected_version differs), not_allowed (not in the definition, not armed, quarantined, ...).",
    request_body = crate::http::openapi::OpsActionBody,
    params(
        ("order_id" = u64, Path, description = "Order id of the saga", minimum = 1),
    ),
    security(("bearerAuth" = ["ops:act"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "What the action did, or would do (dry run)", body = crate::ops::Report),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let (_, ops, principal) = authorize(&state, &headers, Role::Act).await?;
    let mut obj = json_object(body)?;
    let expected_version = match obj.remove("expected_version") {
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad("expected_version", "expected_version must be a number".into()))?,
        None => {
            return Err(bad("expected_version", "expected_version is required: the saga version you looked at".into()));
        }
    };
    let actor = actor_of(&principal, &mut obj)?;
    let reason = take_str(&mut obj, "reason")?;
    let dry_run = take_bool(&mut obj, "dry_run")?;
    let action = parse_action(Value::Object(obj))?;
    if matches!(action, Action::Release | Action::SkipPoison | Action::Migrate { .. }) {
        principal.require(Role::Admin)?;
    }
    let req = Request {
        order_id: order_id(&raw)?,
        action,
        expected_version: SagaVersion(expected_version),
        actor,
        reason,
        dry_run,
        job_id: None,
    };
    Ok(axum::Json(ops.act(&req).await?).into_response())
}

/// `GET /ops/overview` — the console's first page: sagas per state (stuck,
/// oldest), quarantined, overdue timers, outbox backlog, recent dead letters,
/// and this replica's consumer lag.
#[utoipa::path(
    get,
    path = "/ops/overview",
    tag = "ops",
    summary = "The console's overview: sagas per state (stuck, oldest, max_dwell), quarantined, overdue timers, outbox backlog, dead letters of the last hour, this replica's consumer lag",
    security(("bearerAuth" = ["ops:read"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "JSON", body = Object),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (_, ops, _) = authorize(&state, &headers, Role::Read).await?;
    let o = inspect::overview(&ops.db, &ops.sagas.catalog).await?;
    let lag = state.metrics.consumer_lag_by_partition();
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "consumer_lag".into(),
            json!({
                "scope": match std::env::var("HOSTNAME") {
                    Ok(h) if !h.is_empty() => format!("replica {h}"),
                    _ => "this replica".to_owned(),
                },
                "messages": lag.iter().map(|(_, _, n)| n).sum::<i64>(),
                "partitions": lag.iter().map(|(t, p, n)| json!({"topic": t, "partition": p, "lag": n})).collect::<Vec<_>>(),
            }),
        );
    }
    Ok(axum::Json(v).into_response())
}

#[utoipa::path(
    get,
    path = "/ops/drain",
    tag = "ops",
    summary = "In-flight sagas per definition version and state",
    security(("bearerAuth" = ["ops:read"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "JSON", body = Object),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn drain(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (_, ops, _) = authorize(&state, &headers, Role::Read).await?;
    Ok(axum::Json(inspect::drain(&ops.db, &ops.sagas.catalog).await?).into_response())
}

/// `POST /ops/definitions/preview` — what a candidate definition would do to
/// every saga in flight (`order-saga sagas preview` over HTTP).
#[utoipa::path(
    post,
    path = "/ops/definitions/preview",
    tag = "ops",
    summary = "Preview a candidate definition against every saga in flight (read-only)",
    description = "Body: {\"definition\": the TOML text, \"sample\": divergent sagas to list (default 20, at most 100)}. \
                   422 invalid_definition lists each problem with its line (details.errors), including a \
                   [migrate.from.N] that does not fit a version loaded here.",
    request_body = crate::http::openapi::DefinitionPreviewBody,
    security(("bearerAuth" = ["ops:read"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "Per-state counts and the divergent sagas", body = crate::ops::preview::PreviewReport),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn preview_definition(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let (_, ops, _) = authorize(&state, &headers, Role::Read).await?;
    let mut obj = json_object(body)?;
    let text = take_str(&mut obj, "definition")?;
    let sample = match obj.remove("sample") {
        None => 20,
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= 100)
            .ok_or_else(|| bad("sample", "sample must be a number from 0 to 100".into()))?,
    };
    if let Some(k) = obj.keys().next() {
        return Err(bad(k, format!("unknown field {k:?}; allowed: definition, sample")));
    }
    let catalog = &ops.sagas.catalog;
    let candidate =
        crate::ops::preview::candidate(std::path::Path::new("candidate.toml"), &text, catalog).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidDefinition,
                format!("the definition is not valid ({} problem(s))", e.0.len()),
            )
            .with_details(json!({
                "errors": e.0.iter().map(|d| json!({"line": d.line, "message": d.message})).collect::<Vec<_>>()
            }))
        })?;
    let report = crate::ops::preview::preview(&ops.db, catalog, &candidate, sample as usize).await?;
    Ok(axum::Json(report).into_response())
}

#[utoipa::path(
    post,
    path = "/ops/bulk",
    tag = "ops",
    summary = "Bulk action over a filter: dry_run previews the count; otherwise 202 with a job id",
    request_body = crate::http::openapi::OpsBulkBody,
    security(("bearerAuth" = ["ops:admin"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "JSON", body = Object),
        (status = 202, description = "The job started", body = crate::ops::JobStatus),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn bulk(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let (cfg, ops, principal) = authorize(&state, &headers, Role::Admin).await?;
    let mut obj = json_object(body)?;
    let selection = obj.get("filter").cloned().unwrap_or(Value::Null);
    let filter = match obj.remove("filter") {
        Some(Value::Object(f)) => {
            let mut pairs = Vec::new();
            for (k, v) in f {
                if !FILTER_KEYS.contains(&k.as_str()) {
                    return Err(bad("filter", format!("unknown filter {k:?}; allowed: {}", FILTER_KEYS.join(", "))));
                }
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                pairs.push((k, s));
            }
            filter_from(&pairs)?
        }
        None => return Err(bad("filter", "filter is required (an empty object selects every in-flight saga)".into())),
        Some(_) => return Err(bad("filter", "filter must be an object".into())),
    };
    let action = match obj.remove("action") {
        Some(a) => parse_action(a)?,
        None => return Err(bad("action", "action is required, e.g. {\"action\": \"retry_step\"}".into())),
    };
    let limit = match obj.remove("limit") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("limit", "limit must be a positive number".into()))?,
        ),
    };
    let req = BulkRequest {
        filter,
        selection,
        action,
        actor: actor_of(&principal, &mut obj)?,
        reason: take_str(&mut obj, "reason")?,
        dry_run: take_bool(&mut obj, "dry_run")?,
        limit,
        rate_per_second: cfg.bulk_rate,
    };
    if let Some(k) = obj.keys().next() {
        return Err(bad(k, format!("unknown field {k:?}")));
    }
    let out = ops.bulk(&req).await?;
    let status = if req.dry_run { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, axum::Json(out)).into_response())
}

#[utoipa::path(
    get,
    path = "/ops/jobs/{job_id}",
    tag = "ops",
    summary = "A bulk job: state, progress and each saga's result (any replica)",
    params(
        ("job_id" = String, Path, description = "Job id"),
    ),
    security(("bearerAuth" = ["ops:read"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "The job", body = crate::ops::JobStatus),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn job(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (_, ops, _) = authorize(&state, &headers, Role::Read).await?;
    let id = job_id(&id)?;
    let status = ops.job(&id).await?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(axum::Json(status).into_response())
}

#[utoipa::path(
    get,
    path = "/ops/jobs",
    tag = "ops",
    summary = "Bulk jobs, newest first (stored: every replica lists them; finished ones kept 30 days)",
    params(
        ("limit" = Option<u32>, Query, description = "1-200 (default 50)"),
    ),
    security(("bearerAuth" = ["ops:read"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "`{\"jobs\": [...]}` without per-saga results", body = Object),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn jobs(State(state): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let (_, ops, _) = authorize(&state, &headers, Role::Read).await?;
    let params = query_params(q.as_deref(), &["limit"])?;
    let mut limit = 50;
    for (k, v) in &params {
        if k == "limit" {
            limit = v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=200).contains(n))
                .ok_or_else(|| bad("limit", "limit must be 1-200".into()))?;
        }
    }
    Ok(axum::Json(json!({"jobs": ops.list_jobs(limit).await?})).into_response())
}

#[utoipa::path(
    post,
    path = "/ops/jobs/{job_id}/cancel",
    tag = "ops",
    summary = "Stop a running bulk job before its next saga (what it did stays done)",
    params(
        ("job_id" = String, Path, description = "Job id"),
    ),
    security(("bearerAuth" = ["ops:admin"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "The job (state `running` until its runner stops it, then `cancelled`)", body = crate::ops::JobStatus),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn cancel_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, ops, principal) = authorize(&state, &headers, Role::Admin).await?;
    let id = job_id(&id)?;
    let by = principal.name().unwrap_or("ops token");
    let status = ops.cancel_job(&id, by).await?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(axum::Json(status).into_response())
}

#[utoipa::path(
    get,
    path = "/ops/audit",
    tag = "ops",
    summary = "Audit trail of ops actions, newest first",
    params(
        ("order_id" = Option<u64>, Query, description = "Only this order"),
        ("job_id" = Option<String>, Query, description = "Only the actions of this bulk job"),
        ("actor" = Option<String>, Query, description = "Only this actor's actions"),
        ("before_id" = Option<u64>, Query, description = "Older than this row (`next_before_id` of the previous page)"),
        ("limit" = Option<u32>, Query, description = "1-1000 (default 100)"),
    ),
    security(("bearerAuth" = ["ops:read"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "JSON", body = Object),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn audit(State(state): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let (_, ops, _) = authorize(&state, &headers, Role::Read).await?;
    let params = query_params(q.as_deref(), &["order_id", "job_id", "actor", "before_id", "limit"])?;
    let mut query = inspect::AuditQuery { limit: 100, ..Default::default() };
    for (k, v) in &params {
        match k.as_str() {
            "order_id" => query.order_id = Some(order_id(v)?),
            "job_id" => {
                query.job_id = Some(
                    uuid::Uuid::parse_str(v.trim())
                        .map_err(|_| bad(k, "job_id must be a job id (a UUID)".into()))?
                        .to_string(),
                )
            }
            "actor" => query.actor = Some(v.trim().to_owned()),
            "before_id" => {
                query.before_id = Some(v.parse().map_err(|_| bad(k, "before_id must be an audit row id".into()))?)
            }
            _ => {
                query.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| bad(k, "limit must be 1 to 1000".into()))?
            }
        }
    }
    let rows = inspect::audit(&ops.db, &query).await?;
    // The next page: rows older than the last one shown, when the page is full.
    let next = (rows.len() == query.limit as usize).then(|| rows.last().map(|r| r.id)).flatten();
    Ok(axum::Json(json!({ "audit": rows, "next_before_id": next })).into_response())
}

/// `POST /ops/timeouts/sweep` — fire every due timer now (for external schedulers).
#[utoipa::path(
    post,
    path = "/ops/timeouts/sweep",
    tag = "ops",
    summary = "Fire every due timer now (for external schedulers)",
    security(("bearerAuth" = ["ops:act"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "What fired", body = crate::timers::SweepReport),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn sweep(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (cfg, ops, _) = authorize(&state, &headers, Role::Act).await?;
    let report =
        crate::timers::sweep(&ops.db, &ops.sagas, cfg.sweep_batch, &cfg.timer_policy, Some(&state.metrics)).await?;
    if report.fired > 0 {
        state.relay_wakeup.rows_committed_anywhere();
    }
    Ok(axum::Json(report).into_response())
}

/// `DELETE /ops/sessions` — "sign out everywhere": ends every console session
/// (each operator signs in again). Admin only; audited in the log.
#[utoipa::path(
    delete,
    path = "/ops/sessions",
    tag = "ops",
    summary = "End every ops console session (sign out everywhere)",
    security(("bearerAuth" = ["ops:admin"]), ("opsToken" = []), ("opsSession" = [], "opsCsrf" = [])),
    responses(
        (status = 200, description = "How many sessions ended: {\"ended\": n}", body = Object),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn end_sessions(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (_, _, principal) = authorize(&state, &headers, Role::Admin).await?;
    let ended = crate::store::sessions::delete_all(&state.db).await?;
    tracing::warn!(by = ?principal, ended, "every ops console session ended");
    Ok(axum::Json(json!({ "ended": ended })).into_response())
}
