//! Idempotency keys of `POST /orders`.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Ctx, StoreError, Tx};
use crate::domain::OrderId;

/// SHA-256 of the canonical form of a JSON body: object keys sorted,
/// insignificant whitespace removed. Two bodies that mean the same request
/// have the same fingerprint.
pub fn fingerprint(body: &serde_json::Value) -> [u8; 32] {
    let mut canonical = String::new();
    canonicalize(body, &mut canonical);
    Sha256::digest(canonical.as_bytes()).into()
}

/// Writes `v` with object keys sorted. Explicit rather than relying on
/// serde_json's map type, which a dependency enabling `preserve_order` changes.
fn canonicalize(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonicalize(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonicalize(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Inserts the key. `false` when it already exists (the caller replays).
/// Blocks while another uncommitted transaction holds the same key.
pub(crate) async fn claim(
    tx: &mut Tx,
    key: &str,
    fingerprint: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let res =
        sqlx::query("INSERT INTO idempotency_keys (idempotency_key, request_fingerprint, created_at) VALUES (?, ?, ?)")
            .bind(key)
            .bind(&fingerprint[..])
            .bind(now)
            .execute(&mut **tx)
            .await;
    match res {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(false),
        Err(e) => Err(e).ctx("claiming the idempotency key"),
    }
}

pub(crate) async fn complete(
    tx: &mut Tx,
    key: &str,
    order_id: OrderId,
    status: u16,
    body: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE idempotency_keys SET order_id = ?, response_status = ?, response_body = ? WHERE idempotency_key = ?",
    )
    .bind(order_id)
    .bind(status)
    .bind(body)
    .bind(key)
    .execute(&mut **tx)
    .await
    .ctx("storing the idempotent response")?;
    Ok(())
}

pub(crate) struct Stored {
    pub fingerprint: [u8; 32],
    pub status: Option<u16>,
    pub body: Option<String>,
}

pub(crate) async fn lookup(pool: &sqlx::MySqlPool, key: &str) -> Result<Option<Stored>, StoreError> {
    let row = sqlx::query(
        "SELECT request_fingerprint, response_status, response_body FROM idempotency_keys WHERE idempotency_key = ?",
    )
    .bind(key)
    .fetch_optional(pool)
    .await
    .ctx("reading the idempotency key")?;
    row.map(|r| {
        let fp: Vec<u8> = r.try_get("request_fingerprint").ctx("decoding fingerprint")?;
        Ok(Stored {
            fingerprint: fp.try_into().map_err(|_| StoreError::Corrupt("fingerprint is not 32 bytes".into()))?,
            status: r.try_get("response_status").ctx("decoding response_status")?,
            body: r.try_get("response_body").ctx("decoding response_body")?,
        })
    })
    .transpose()
}

pub(crate) async fn purge(pool: &sqlx::MySqlPool, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT 1000")
            .bind(older_than)
            .execute(pool)
            .await
            .ctx("purging idempotency keys")?
            .rows_affected();
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn fingerprint_ignores_key_order_and_whitespace_but_not_values() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(super::fingerprint(&a), super::fingerprint(&b));
        assert_ne!(super::fingerprint(&a), super::fingerprint(&json!({"a": {"x": "s", "y": [2, 1]}, "b": 1})));
    }
}
