//! Sessions of the ops console (`ops_sessions`).
//!
//! A session is a random 256-bit id, kept by the browser in an `HttpOnly;
//! SameSite=Strict` cookie. Its CSRF token is derived from the id
//! ([`csrf_token`]): the page reads it from a same-origin endpoint and sends it
//! in a header on every request, which a cross-site form or script cannot do.
//! Only the SHA-256 digest of the id is stored. A session ends when the
//! operator signs out, after [`IDLE`] without a request, or [`ABSOLUTE`] after
//! sign-in, or when the ops token it was signed in with is rotated (the
//! session keeps a digest of that credential), whichever comes first; the
//! database clock decides. A session carries its operator's role: `admin`
//! when signed in with the ops token, the identity provider's otherwise.
//!
//! Sign-ins through the OpenID Provider under way (`ops_sign_ins`) keep the
//! PKCE verifier and nonce here, keyed by a digest of `state`, until the
//! provider sends the browser back to whichever replica; each is used once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Ctx, Db, StoreError};
use crate::auth::OpsRole;
use crate::auth::oidc::Attempt;

/// A session unused for this long is over.
pub const IDLE: Duration = Duration::from_secs(60 * 60);
/// A session lasts at most this long after sign-in.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
/// A sign-in through the identity provider must come back within this.
pub const SIGN_IN_WITHIN: Duration = Duration::from_secs(10 * 60);

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    pub actor: String,
    pub role: OpsRole,
    pub expires_at: DateTime<Utc>,
}

/// A new session's id (for the cookie) and when it ends at the latest.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub expires_at: DateTime<Utc>,
}

/// The CSRF token of session `id`: only who holds the id can compute it.
pub fn csrf_token(id: &str) -> String {
    hex::encode(Sha256::digest(format!("order-saga ops csrf\0{id}").as_bytes()))
}

/// Whether `given` is session `id`'s CSRF token (compared in constant time).
pub fn csrf_matches(id: &str, given: &str) -> bool {
    let want = csrf_token(id);
    crate::auth::constant_time_eq(given.as_bytes(), want.as_bytes())
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn digest(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

/// The digest of the credential a session was signed in with.
fn credential_digest(credential: &str) -> Vec<u8> {
    digest(&format!("order-saga ops credential\0{credential}"))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Starts a session for `actor` with `role`, signed in with `credential`
/// (also forgets sessions that are over).
pub async fn create(db: &Db, actor: &str, role: OpsRole, credential: &str) -> Result<NewSession, StoreError> {
    sqlx::query("DELETE FROM ops_sessions WHERE expires_at < NOW(6) OR last_seen_at < NOW(6) - INTERVAL ? MICROSECOND")
        .bind(micros(IDLE))
        .execute(&db.pool)
        .await
        .ctx("forgetting ended ops sessions")?;
    let id = random_token();
    sqlx::query(
        "INSERT INTO ops_sessions (id_hash, actor, role, credential_hash, created_at, last_seen_at, expires_at) \
         VALUES (?, ?, ?, ?, NOW(6), NOW(6), NOW(6) + INTERVAL ? MICROSECOND)",
    )
    .bind(digest(&id))
    .bind(actor)
    .bind(role.name())
    .bind(credential_digest(credential))
    .bind(micros(ABSOLUTE))
    .execute(&db.pool)
    .await
    .ctx("starting an ops session")?;
    let expires_at: DateTime<Utc> = sqlx::query_scalar("SELECT expires_at FROM ops_sessions WHERE id_hash = ?")
        .bind(digest(&id))
        .fetch_one(&db.pool)
        .await
        .ctx("reading the new ops session")?;
    Ok(NewSession { id, expires_at })
}

/// The live session with this id, its idle clock restarted; `None` when it
/// never existed, was signed out, is over, or was signed in with none of
/// `credentials` (the token was rotated, the provider changed since).
pub async fn touch(db: &Db, id: &str, credentials: &[String]) -> Result<Option<Session>, StoreError> {
    if credentials.is_empty() || credentials.len() > 2 {
        return Ok(None);
    }
    let hash = digest(id);
    // At most two credentials exist (the ops token, the identity provider):
    // one statement text, the first repeated when there is one.
    let creds: Vec<Vec<u8>> = credentials.iter().map(|c| credential_digest(c)).collect();
    let (a, b) = (&creds[0], creds.get(1).unwrap_or(&creds[0]));
    // Restarting the idle clock of a session that is over changes nothing;
    // the read below decides whether it is live.
    sqlx::query(
        "UPDATE ops_sessions SET last_seen_at = NOW(6) WHERE id_hash = ? AND credential_hash IN (?, ?) \
         AND expires_at > NOW(6) AND last_seen_at > NOW(6) - INTERVAL ? MICROSECOND",
    )
    .bind(&hash)
    .bind(a)
    .bind(b)
    .bind(micros(IDLE))
    .execute(&db.pool)
    .await
    .ctx("touching the ops session")?;
    let row = sqlx::query(
        "SELECT actor, role, expires_at FROM ops_sessions WHERE id_hash = ? AND credential_hash IN (?, ?) \
         AND expires_at > NOW(6) AND last_seen_at > NOW(6) - INTERVAL ? MICROSECOND",
    )
    .bind(&hash)
    .bind(a)
    .bind(b)
    .bind(micros(IDLE))
    .fetch_optional(&db.pool)
    .await
    .ctx("reading the ops session")?;
    row.map(|r| {
        let role: String = r.try_get("role").ctx("decoding role")?;
        Ok(Session {
            actor: r.try_get("actor").ctx("decoding actor")?,
            // An unknown value grants the least.
            role: OpsRole::parse(&role).unwrap_or(OpsRole::Read),
            expires_at: r.try_get("expires_at").ctx("decoding expires_at")?,
        })
    })
    .transpose()
}

/// Remembers a sign-in sent to the identity provider (also forgets those
/// that were never finished).
pub async fn begin_sign_in(db: &Db, attempt: &Attempt, redirect: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM ops_sign_ins WHERE expires_at < NOW(6)")
        .execute(&db.pool)
        .await
        .ctx("forgetting unfinished sign-ins")?;
    sqlx::query(
        "INSERT INTO ops_sign_ins (state_hash, nonce, verifier, redirect, expires_at) \
         VALUES (?, ?, ?, ?, NOW(6) + INTERVAL ? MICROSECOND)",
    )
    .bind(digest(&attempt.state))
    .bind(&attempt.nonce)
    .bind(&attempt.verifier)
    .bind(redirect)
    .bind(micros(SIGN_IN_WITHIN))
    .execute(&db.pool)
    .await
    .ctx("remembering a sign-in")?;
    Ok(())
}

/// A sign-in under way, taken once: its nonce, PKCE verifier and redirect
/// URL; `None` when the state is unknown, used, or older than
/// [`SIGN_IN_WITHIN`].
pub async fn take_sign_in(db: &Db, state: &str) -> Result<Option<(String, String, String)>, StoreError> {
    let row = sqlx::query(
        "DELETE FROM ops_sign_ins WHERE state_hash = ? AND expires_at > NOW(6) RETURNING nonce, verifier, redirect",
    )
    .bind(digest(state))
    .fetch_optional(&db.pool)
    .await
    .ctx("taking a sign-in")?;
    row.map(|r| {
        Ok((
            r.try_get("nonce").ctx("decoding nonce")?,
            r.try_get("verifier").ctx("decoding verifier")?,
            r.try_get("redirect").ctx("decoding redirect")?,
        ))
    })
    .transpose()
}

/// Ends the session (sign-out). Ending one that is already over is not an error.
/// Ends every console session ("sign out everywhere"). Returns how many.
pub async fn delete_all(db: &Db) -> Result<u64, StoreError> {
    let r = sqlx::query("DELETE FROM ops_sessions").execute(&db.pool).await.ctx("ending every console session")?;
    Ok(r.rows_affected())
}

pub async fn delete(db: &Db, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM ops_sessions WHERE id_hash = ?")
        .bind(digest(id))
        .execute(&db.pool)
        .await
        .ctx("ending the ops session")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_each_has_its_own_csrf_token() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(csrf_matches(&a, &csrf_token(&a)));
        assert!(!csrf_matches(&a, &csrf_token(&b)));
        assert!(!csrf_matches(&a, ""));
        assert!(!csrf_matches(&a, &a), "the id is not its own token");
    }
}
