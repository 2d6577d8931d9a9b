//! The caller of an orders endpoint: a verified principal when
//! `ORDER_SAGA_AUTH_*` is set, otherwise anyone (the API is open).
//!
//! Answers follow RFC 6750: 401 with `WWW-Authenticate: Bearer` (and
//! `error="invalid_token"` when a token was sent) without a valid token, 403
//! with `error="insufficient_scope"` and the scope needed.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::auth::{AuthError, Principal};
use crate::domain::limits::MAX_ACTOR_LEN;

const REALM: &str = "order-saga";

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No verification configured: every caller is accepted, and says who it is.
    Open,
    /// A verified bearer token's principal.
    Verified(Principal),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(verifier) = &state.auth else {
            if let Some(limiter) = &state.limiter {
                let peer = parts.extensions.get::<super::Peer>().map(|p| p.0.ip().to_string());
                within_budget(limiter, peer.as_deref().unwrap_or("unknown"))?;
            }
            return Ok(Caller::Open);
        };
        let token = bearer(parts).ok_or_else(|| refused(&AuthError::Missing))?;
        match verifier.verify(token).await {
            Ok(p) => {
                if let Some(limiter) = &state.limiter {
                    within_budget(limiter, &p.subject)?;
                }
                Ok(Caller::Verified(p))
            }
            Err(e) if e.is_transient() => Err(unavailable(&e)),
            Err(e) => {
                state.metrics.orders.auth_failures_total.get_or_create(&reason_label(&e)).inc();
                tracing::info!(reason = %e, "bearer token refused");
                Err(refused(&e))
            }
        }
    }
}

/// 429 when `caller` has used its request budget.
fn within_budget(limiter: &super::limit::RateLimiter, caller: &str) -> Result<(), ApiError> {
    limiter.check(caller, std::time::Instant::now()).map_err(|wait| {
        let mut e = ApiError::new(ErrorCode::RateLimited, "too many requests from this caller; retry later");
        e.retry_after = Some(wait.as_secs().max(1));
        e
    })
}

/// The token of `Authorization: Bearer …` (scheme case-insensitive).
fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn reason_label(e: &AuthError) -> crate::telemetry::metrics::ReasonLabel {
    let reason = match e {
        AuthError::Missing => "missing",
        AuthError::Malformed => "malformed",
        AuthError::Algorithm => "algorithm",
        AuthError::UnknownKey => "unknown_key",
        AuthError::Invalid(_) => "invalid",
        AuthError::NoSubject => "no_subject",
        AuthError::KeysUnavailable(_) => "keys_unavailable",
    };
    crate::telemetry::metrics::ReasonLabel { reason: reason.into() }
}

/// A 401 for a token that was not accepted.
fn refused(e: &AuthError) -> ApiError {
    let challenge = match e {
        AuthError::Missing => format!("Bearer realm=\"{REALM}\""),
        other => format!("Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"", quoted(other)),
    };
    ApiError::new(ErrorCode::Unauthorized, e.to_string()).with_challenge(challenge)
}

/// 503 for a token that cannot be checked now (the issuer's keys are
/// unreachable): the client retries, its token is not at fault.
pub(crate) fn unavailable(e: &AuthError) -> ApiError {
    tracing::warn!(error = %e, "cannot check a bearer token: the identity provider's keys are unavailable");
    ApiError::new(
        ErrorCode::IdentityProviderUnavailable,
        "the identity provider cannot be reached to check the token; retry",
    )
}

/// 403: the principal lacks `scope` (RFC 6750's `insufficient_scope`).
pub(crate) fn insufficient_scope(scope: &str) -> ApiError {
    ApiError::new(ErrorCode::InsufficientScope, format!("this needs the {scope} scope"))
        .with_details(json!({ "required_scope": scope }))
        .with_challenge(format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\""))
}

/// Text safe inside a quoted header parameter.
fn quoted(e: &AuthError) -> String {
    e.to_string().chars().filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\').collect()
}

impl Caller {
    /// 403 unless the caller has `scope` (an open API grants every scope).
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        match self {
            Caller::Verified(p) if !p.has_scope(scope) => Err(insufficient_scope(scope)),
            _ => Ok(()),
        }
    }

    /// Whether the caller may see orders of this tenant region.
    pub fn may_see_region(&self, region: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Verified(p) => p.may_see_region(region),
        }
    }

    /// The regions the caller is limited to, if it is.
    pub fn regions(&self) -> Option<&BTreeSet<String>> {
        match self {
            Caller::Open => None,
            Caller::Verified(p) => p.regions.as_ref(),
        }
    }

    /// The actor recorded for a change: the principal's subject; a different
    /// `actor` in the body is kept only as "on behalf of". An open API takes
    /// the body's (required there).
    pub fn actor(&self, claimed: Option<&str>) -> Option<String> {
        match (self, claimed) {
            (Caller::Open, claimed) => claimed.map(str::to_owned),
            (Caller::Verified(p), claimed) => Some(on_behalf_of(&p.subject, claimed)),
        }
    }
}

/// The actor recorded for a verified `subject`: itself, or "`subject` (on
/// behalf of `claimed`)" when the request names someone else (cut to the
/// actor column's length; the subject always stays whole).
pub(crate) fn on_behalf_of(subject: &str, claimed: Option<&str>) -> String {
    match claimed {
        Some(c) if c != subject => {
            let mut a = format!("{subject} (on behalf of {c})");
            if a.len() > MAX_ACTOR_LEN {
                let mut end = MAX_ACTOR_LEN;
                while !a.is_char_boundary(end) {
                    end -= 1;
                }
                a.truncate(end);
            }
            a
        }
        _ => subject.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Caller {
        Caller::Verified(Principal {
            subject: "alice".into(),
            scopes: ["orders:read".to_owned()].into(),
            regions: Some(["eu-west".to_owned()].into()),
        })
    }

    #[test]
    fn the_actor_is_the_principal_and_a_claimed_other_is_only_on_behalf_of() {
        assert_eq!(alice().actor(None).as_deref(), Some("alice"));
        assert_eq!(alice().actor(Some("alice")).as_deref(), Some("alice"));
        assert_eq!(alice().actor(Some("ops:bob")).as_deref(), Some("alice (on behalf of ops:bob)"));
        let long = "é".repeat(MAX_ACTOR_LEN);
        let a = alice().actor(Some(&long)).unwrap_or_default();
        assert!(a.starts_with("alice (on behalf of ") && a.len() <= MAX_ACTOR_LEN);
        assert_eq!(Caller::Open.actor(Some("ops:bob")).as_deref(), Some("ops:bob"));
        assert_eq!(Caller::Open.actor(None), None);
    }

    #[test]
    fn scopes_and_regions_of_a_principal_an_open_api_grants_everything() {
        assert!(alice().require("orders:read").is_ok());
        let e = alice().require("orders:status").err().map(|e| (e.code, e.challenge));
        assert_eq!(
            e,
            Some((
                ErrorCode::InsufficientScope,
                Some("Bearer realm=\"order-saga\", error=\"insufficient_scope\", scope=\"orders:status\"".into())
            ))
        );
        assert!(alice().may_see_region("eu-west") && !alice().may_see_region("us-east"));
        assert!(Caller::Open.require("orders:status").is_ok() && Caller::Open.may_see_region("us-east"));
    }
}
