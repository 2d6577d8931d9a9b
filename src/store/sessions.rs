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
//! database clock decides.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Ctx, Db, StoreError};

/// A session unused for this long is over.
pub const IDLE: Duration = Duration::from_secs(60 * 60);
/// A session lasts at most this long after sign-in.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    pub actor: String,
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
    want.len() == given.len() && want.bytes().zip(given.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
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

/// Starts a session for `actor`, signed in with `credential` (also forgets
/// sessions that are over).
pub async fn create(db: &Db, actor: &str, credential: &str) -> Result<NewSession, StoreError> {
    sqlx::query("DELETE FROM ops_sessions WHERE expires_at < NOW(6) OR last_seen_at < NOW(6) - INTERVAL ? MICROSECOND")
        .bind(micros(IDLE))
        .execute(&db.pool)
        .await
        .ctx("forgetting ended ops sessions")?;
    let id = random_token();
    sqlx::query(
        "INSERT INTO ops_sessions (id_hash, actor, credential_hash, created_at, last_seen_at, expires_at) \
         VALUES (?, ?, ?, NOW(6), NOW(6), NOW(6) + INTERVAL ? MICROSECOND)",
    )
    .bind(digest(&id))
    .bind(actor)
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
/// never existed, was signed out, is over, or was signed in with another
/// credential than `credential` (the token was rotated since).
pub async fn touch(db: &Db, id: &str, credential: &str) -> Result<Option<Session>, StoreError> {
    let hash = digest(id);
    let cred = credential_digest(credential);
    // Restarting the idle clock of a session that is over changes nothing;
    // the read below decides whether it is live.
    sqlx::query(
        "UPDATE ops_sessions SET last_seen_at = NOW(6) \
         WHERE id_hash = ? AND credential_hash = ? AND expires_at > NOW(6) AND last_seen_at > NOW(6) - INTERVAL ? MICROSECOND",
    )
    .bind(&hash)
    .bind(&cred)
    .bind(micros(IDLE))
    .execute(&db.pool)
    .await
    .ctx("touching the ops session")?;
    let row = sqlx::query(
        "SELECT actor, expires_at FROM ops_sessions WHERE id_hash = ? AND credential_hash = ? \
         AND expires_at > NOW(6) AND last_seen_at > NOW(6) - INTERVAL ? MICROSECOND",
    )
    .bind(&hash)
    .bind(&cred)
    .bind(micros(IDLE))
    .fetch_optional(&db.pool)
    .await
    .ctx("reading the ops session")?;
    row.map(|r| {
        Ok(Session {
            actor: r.try_get("actor").ctx("decoding actor")?,
            expires_at: r.try_get("expires_at").ctx("decoding expires_at")?,
        })
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
