//! The ops console: a web page served by the daemon under `/ops/ui`.
//!
//! * Every asset is compiled into the binary (`src/http/console/`): no CDN,
//!   no build step, no network beyond the daemon's own origin — the
//!   Content-Security-Policy says so to the browser too (no inline script, no
//!   inline style, `connect-src 'self'`).
//! * Served when operators can sign in: with `ORDER_SAGA_OPS_TOKEN` or an
//!   OpenID Provider (`ORDER_SAGA_OPS_OIDC_*`); 404 otherwise.
//! * Sign-in through the identity provider ([`crate::auth::oidc`]):
//!   `GET /ops/ui/sign-in` remembers a fresh `state`, `nonce` and PKCE
//!   verifier in the database, sets the `state` in a short-lived
//!   `SameSite=Lax` cookie scoped to the callback (it must survive the
//!   provider's redirect back, a cross-site navigation), and sends the
//!   browser to the provider; `GET /ops/ui/callback` requires that cookie to
//!   equal the returned `state`, takes the attempt once, trades the code, and
//!   checks the ID token. The operator's subject is the actor and the role
//!   claim their role; an account without an ops role gets no session.
//! * Sign-in with the ops token trades it (in a JSON body, never in a URL)
//!   and the operator's name for an `admin` session.
//! * Either way the session ([`crate::store::sessions`]) is an
//!   `HttpOnly; SameSite=Strict` cookie scoped to `/ops`, `Secure` unless the
//!   page was reached on a loopback host (port-forwarding, development). The
//!   page then calls the same `/ops` JSON endpoints as the CLI, with the
//!   session's CSRF token in `X-CSRF-Token`; the session's actor is the actor
//!   of every action it takes, its role bounds what it may do.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::extract::JsonBody;
use crate::store::sessions;

/// The session cookie's name.
pub const COOKIE: &str = "order_saga_ops";
/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Scripts and styles from this origin only, no inline code, no framing, no
/// form posts anywhere, fetches to this origin only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");
const ICON_SVG: &str = include_str!("console/icon.svg");

/// The console part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(index, index_slash, asset, current, sign_in, sign_out, sign_in_oidc, callback))]
pub(super) struct Api;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ops/ui", get(index))
        .route("/ops/ui/", get(index_slash))
        .route("/ops/ui/assets/{file}", get(asset))
        .route("/ops/ui/session", get(current).post(sign_in).delete(sign_out))
        .route("/ops/ui/sign-in", get(sign_in_oidc))
        .route("/ops/ui/callback", get(callback))
}

/// The ops settings, when operators can sign in to the console (with the
/// ops token or through an identity provider).
fn enabled(state: &AppState) -> Result<&super::ops::OpsConfig, ApiError> {
    state.ops.as_ref().filter(|o| o.token.is_some() || o.oidc.is_some()).ok_or_else(|| {
        ApiError::not_found(
            "the ops console is disabled (set ORDER_SAGA_OPS_OIDC_* or ORDER_SAGA_OPS_TOKEN to enable it)",
        )
    })
}

/// The cookie that ties the provider's redirect back to the browser that
/// started the sign-in.
const SIGN_IN_COOKIE: &str = "order_saga_ops_sign_in";

/// How long a refused sign-in waits before it is answered: online guessing
/// gets one try per second per connection, and shows in logs and metrics.
const FAILED_SIGN_IN_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// The headers every console response carries.
fn hardened(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[utoipa::path(
    get,
    path = "/ops/ui",
    tag = "ops console",
    summary = "The ops console (sign-in, overview, sagas, one saga, actions, bulk)",
    responses(
        (status = 200, description = "The console page", body = String, content_type = "text/html"),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn index(State(state): State<AppState>) -> Result<Response, ApiError> {
    enabled(&state)?;
    Ok(hardened(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML).into_response()))
}

/// The asset named `file`, with its content type; `None` for any other name.
pub fn asset_of(file: &str) -> Option<(&'static str, &'static str)> {
    match file {
        "app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Some(("text/css; charset=utf-8", APP_CSS)),
        "icon.svg" => Some(("image/svg+xml", ICON_SVG)),
        _ => None,
    }
}

#[utoipa::path(
    get,
    path = "/ops/ui/",
    tag = "ops console",
    summary = "The ops console (same page)",
    responses(
        (status = 200, description = "The console page", body = String, content_type = "text/html"),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn index_slash(state: State<AppState>) -> Result<Response, ApiError> {
    index(state).await
}

#[utoipa::path(
    get,
    path = "/ops/ui/assets/{file}",
    tag = "ops console",
    summary = "A console asset embedded in the binary (app.js, app.css, icon.svg)",
    params(
        ("file" = String, Path, description = "Asset name"),
    ),
    responses(
        (status = 200, description = "The asset", body = String),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn asset(State(state): State<AppState>, Path(file): Path<String>) -> Result<Response, ApiError> {
    enabled(&state)?;
    let (ct, body) = asset_of(&file).ok_or_else(|| ApiError::not_found(format!("no console asset {file:?}")))?;
    Ok(hardened(([(header::CONTENT_TYPE, ct)], body).into_response()))
}

/// The session id in the request's cookie, when it has the shape of one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, COOKIE).filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether the request reached us on a loopback name, where browsers accept
/// a cookie without `Secure` and plain HTTP is expected (port-forwarding).
pub fn is_loopback_host(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    // An address parsed as one (not "127.ops.example.com"), or localhost.
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn cookie(value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/ops; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// Checks the operator's name: what the audit trail will show.
pub fn valid_actor(actor: &str) -> Result<&str, String> {
    let actor = actor.trim();
    if actor.is_empty() || actor.chars().count() > 128 {
        return Err("your name is required (1-128 characters); it is recorded with every action".into());
    }
    if actor.chars().any(char::is_control) {
        return Err("your name may not contain control characters".into());
    }
    Ok(actor)
}

#[utoipa::path(
    post,
    path = "/ops/ui/session",
    tag = "ops console",
    summary = "Sign in: trades the ops token and the operator's name for a session cookie (HttpOnly, SameSite=Strict)",
    request_body = crate::http::openapi::OpsSignIn,
    responses(
        (status = 200, description = "The signed-in operator and the session's CSRF token", body = crate::http::openapi::OpsSession),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let cfg = enabled(&state)?;
    let ops_token = cfg.token.clone().ok_or_else(|| {
        ApiError::not_found("signing in with the ops token is disabled: sign in through the identity provider")
    })?;
    let JsonBody(body) = body?;
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let (token, actor) = (field("token"), field("actor"));
    if !super::ops::secret_matches(&token, &ops_token) {
        state.metrics.ops.ops_auth_failures_total.inc();
        tracing::warn!(actor = %actor.chars().take(64).collect::<String>(), "ops console sign-in refused: not the ops token");
        tokio::time::sleep(FAILED_SIGN_IN_DELAY).await;
        return Err(ApiError::new(ErrorCode::Unauthorized, "that is not the ops token"));
    }
    let actor = valid_actor(&actor)
        .map_err(|m| ApiError::new(ErrorCode::InvalidParameter, m).with_details(json!({"parameter": "actor"})))?;
    let s = sessions::create(&state.db, actor, Role::Admin, &ops_token).await?;
    tracing::info!(actor, "ops console sign-in with the ops token");
    let body = session_body(cfg, actor, Role::Admin, &s.id, s.expires_at);
    let set = cookie(&s.id, sessions::ABSOLUTE.as_secs(), !is_loopback_host(&headers));
    let mut resp = axum::Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&set) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(hardened(resp))
}

use super::ops::Role;

/// What the page learns about its session.
fn session_body(
    cfg: &super::ops::OpsConfig,
    actor: &str,
    role: Role,
    id: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Value {
    json!({
        "sign_in": sign_in_methods(cfg),
        "actor": actor,
        "role": role.name(),
        "csrf_token": sessions::csrf_token(id),
        "expires_at": expires_at,
        "idle_timeout_seconds": sessions::IDLE.as_secs(),
    })
}

/// The ways to sign in this daemon offers (the page shows them).
fn sign_in_methods(cfg: &super::ops::OpsConfig) -> Value {
    json!({"identity_provider": cfg.oidc.is_some(), "token": cfg.token.is_some()})
}

/// Where the provider sends the browser back: the configured URL, or this
/// host's `/ops/ui/callback` (`http` only on a loopback host).
fn redirect_url(configured: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = configured {
        return Some(url.to_owned());
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).filter(|h| !h.is_empty())?;
    let scheme = if is_loopback_host(headers) { "http" } else { "https" };
    Some(format!("{scheme}://{host}/ops/ui/callback"))
}

/// A 303 to `location`, with `set_cookie` headers.
fn see_other(location: &str, set_cookies: &[String]) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    for c in set_cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    hardened(resp)
}

/// Back to the console's sign-in page with why the sign-in failed (a code
/// the page explains; never the provider's own text).
fn sign_in_failed(state: &AppState, headers: &HeaderMap, code: &str, why: &dyn std::fmt::Display) -> Response {
    state.metrics.ops.ops_auth_failures_total.inc();
    tracing::warn!(code, reason = %why, "ops console sign-in through the identity provider failed");
    let clear = sign_in_cookie("", 0, !is_loopback_host(headers));
    see_other(&format!("/ops/ui?sign_in_error={code}"), &[clear])
}

fn sign_in_cookie(value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    // Lax, not Strict: the provider's redirect back is a cross-site navigation.
    format!("{SIGN_IN_COOKIE}={value}; Path=/ops/ui/callback; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[utoipa::path(
    get,
    path = "/ops/ui/sign-in",
    tag = "ops console",
    summary = "Sign in through the identity provider: redirects there (authorization code + PKCE)",
    responses(
        (status = 303, description = "To the provider's authorization endpoint (or back to the console when it cannot be reached)"),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn sign_in_oidc(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let oidc = enabled(&state)?.oidc.clone().ok_or_else(|| {
        ApiError::not_found("no identity provider is configured (ORDER_SAGA_OPS_OIDC_ISSUER): use the ops token")
    })?;
    let redirect = redirect_url(oidc.settings().redirect_url.as_deref(), &headers).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidParameter, "no Host header: set ORDER_SAGA_OPS_OIDC_REDIRECT_URL")
    })?;
    let attempt = crate::auth::oidc::Attempt::new();
    let url = match oidc.begin(&attempt, &redirect).await {
        Ok(url) => url,
        Err(e) => {
            let code = if e.is_transient() { "unavailable" } else { "provider" };
            return Ok(sign_in_failed(&state, &headers, code, &e));
        }
    };
    sessions::begin_sign_in(&state.db, &attempt, &redirect).await?;
    let max_age = sessions::SIGN_IN_WITHIN.as_secs();
    Ok(see_other(url.as_str(), &[sign_in_cookie(&attempt.state, max_age, !is_loopback_host(&headers))]))
}

#[utoipa::path(
    get,
    path = "/ops/ui/callback",
    tag = "ops console",
    summary = "Where the identity provider sends the browser back: starts a session, then to the console",
    params(
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("state" = Option<String>, Query, description = "This sign-in's state"),
        ("error" = Option<String>, Query, description = "Why the provider did not sign the operator in"),
    ),
    responses(
        (status = 303, description = "To the console: signed in (session cookie set), or with `sign_in_error` (no_role, expired, mismatch, refused, unavailable, provider, invalid_token)"),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    use crate::auth::oidc::OidcError;
    let cfg = enabled(&state)?;
    let oidc = cfg.oidc.clone().ok_or_else(|| ApiError::not_found("no identity provider is configured"))?;
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let given_state = q.get("state").cloned().unwrap_or_default();
    // The browser that started this sign-in, and no other, comes back with it.
    let kept = cookie_value(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if given_state.is_empty() || !crate::auth::constant_time_eq(kept.as_bytes(), given_state.as_bytes()) {
        return Ok(sign_in_failed(&state, &headers, "mismatch", &"the state is not this browser's sign-in"));
    }
    let Some((nonce, verifier, redirect)) = sessions::take_sign_in(&state.db, &given_state).await? else {
        return Ok(sign_in_failed(&state, &headers, "expired", &"unknown, used or expired state"));
    };
    if let Some(err) = q.get("error") {
        let code = if err == "access_denied" { "refused" } else { "provider" };
        return Ok(sign_in_failed(&state, &headers, code, &format!("the provider answered {err}")));
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return Ok(sign_in_failed(&state, &headers, "provider", &"no code"));
    };
    let operator = match oidc.finish(code, &redirect, &verifier, &nonce).await {
        Ok(op) => op,
        Err(e) => {
            let code = match &e {
                e if e.is_transient() => "unavailable",
                OidcError::Refused(_) => "expired",
                OidcError::IdToken(_) | OidcError::Nonce => "invalid_token",
                OidcError::Unavailable(_) | OidcError::Discovery(_) => "provider",
            };
            return Ok(sign_in_failed(&state, &headers, code, &e));
        }
    };
    let Some(role) = operator.role else {
        let why = format!("{} has no ops role in claim {}", operator.actor, oidc.settings().role_claim);
        return Ok(sign_in_failed(&state, &headers, "no_role", &why));
    };
    let s = sessions::create(&state.db, &operator.actor, role, &oidc.credential()).await?;
    tracing::info!(actor = %operator.actor, role = role.name(), "ops console sign-in through the identity provider");
    let secure = !is_loopback_host(&headers);
    let cookies = [cookie(&s.id, sessions::ABSOLUTE.as_secs(), secure), sign_in_cookie("", 0, secure)];
    Ok(see_other("/ops/ui#/", &cookies))
}

/// The signed-in operator and the session's CSRF token (same origin only:
/// another site's script cannot read this answer, and `SameSite=Strict`
/// keeps the cookie off its requests).
#[utoipa::path(
    get,
    path = "/ops/ui/session",
    tag = "ops console",
    summary = "The current console session (from its cookie)",
    responses(
        (status = 200, description = "The signed-in operator and the session's CSRF token", body = crate::http::openapi::OpsSession),
        (status = 401, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn current(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let cfg = enabled(&state)?;
    let no_session = || {
        ApiError::new(ErrorCode::Unauthorized, "not signed in").with_details(json!({"sign_in": sign_in_methods(cfg)}))
    };
    let id = session_cookie(&headers).ok_or_else(no_session)?;
    let s = sessions::touch(&state.db, &id, &cfg.session_credentials()).await?.ok_or_else(no_session)?;
    Ok(hardened(axum::Json(session_body(cfg, &s.actor, s.role, &id, s.expires_at)).into_response()))
}

/// Sign-out: ends the session on every replica and clears the cookie. Needs
/// the CSRF token, so another site cannot sign the operator out.
#[utoipa::path(
    delete,
    path = "/ops/ui/session",
    tag = "ops console",
    summary = "Sign out: ends the session on every replica (needs X-CSRF-Token)",
    responses(
        (status = 204, description = "Signed out"),
        (status = 403, description = "See error.code", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "See error.code", body = crate::http::openapi::ErrorBody)
    )
)]
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    enabled(&state)?;
    if let Some(id) = session_cookie(&headers) {
        let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !sessions::csrf_matches(&id, csrf) {
            return Err(ApiError::new(
                ErrorCode::CsrfTokenInvalid,
                "signing out needs the session's X-CSRF-Token header",
            ));
        }
        sessions::delete(&state.db, &id).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie("", 0, !is_loopback_host(&headers))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(hardened(resp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("")));
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_must_look_like_one() {
        let id = "ab".repeat(32);
        let h = headers(&[("cookie", &format!("theme=dark; {COOKIE}={id}; other=1"))]);
        assert_eq!(session_cookie(&h), Some(id.clone()));
        let h = headers(&[("cookie", "a=b"), ("cookie", &format!("{COOKIE}={id}"))]);
        assert_eq!(session_cookie(&h), Some(id));
        assert_eq!(session_cookie(&headers(&[("cookie", &format!("{COOKIE}=short"))])), None);
        assert_eq!(session_cookie(&headers(&[("cookie", &format!("{COOKIE}={}", "zz".repeat(32)))])), None);
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn cookies_are_secure_except_on_loopback() {
        for host in ["127.0.0.1:8080", "localhost", "localhost:8080", "[::1]:8080"] {
            assert!(is_loopback_host(&headers(&[("host", host)])), "{host}");
        }
        for host in ["ops.example.com", "10.0.0.7:8080", "localhost.example.com", "127.ops.example.com", ""] {
            assert!(!is_loopback_host(&headers(&[("host", host)])), "{host}");
        }
        let c = cookie("x", 60, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"), "{c}");
        assert!(!cookie("x", 60, false).contains("Secure"));
        // The sign-in's state must come back with the provider's cross-site
        // redirect (Lax), only to the callback, and not outlive the attempt.
        let c = sign_in_cookie("st", 600, true);
        assert!(c.contains("SameSite=Lax") && c.contains("Path=/ops/ui/callback") && c.contains("HttpOnly"), "{c}");
        assert!(c.contains("Max-Age=600") && c.ends_with("; Secure"), "{c}");
    }

    #[test]
    fn actors_are_trimmed_and_bounded() {
        assert_eq!(valid_actor("  alice "), Ok("alice"));
        assert!(valid_actor("   ").is_err());
        assert!(valid_actor(&"x".repeat(129)).is_err());
        assert!(valid_actor("al\nice").is_err());
    }

    #[test]
    fn assets_are_embedded_and_the_page_has_no_inline_code() {
        for f in ["app.js", "app.css", "icon.svg"] {
            assert!(asset_of(f).is_some_and(|(_, body)| !body.is_empty()), "{f}");
        }
        assert!(asset_of("../Cargo.toml").is_none());
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="), "no inline script or style");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"), "no external address");
        assert!(!APP_JS.contains("innerHTML"), "the page builds DOM nodes, never HTML from data");
        assert!(!APP_JS.contains("eval(") && !APP_JS.contains("new Function"));
    }
}
