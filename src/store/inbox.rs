//! The saga inbox: one row per handled event id.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{MySql, QueryBuilder, Row};

use super::script::Script;
use super::{Ctx, StoreError, Tx};
use crate::domain::OrderId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Ignored,
    Parked,
    DeadLettered,
    /// A reply to an older command than the one its step waits for.
    StaleReply,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Ignored => "ignored",
            Outcome::Parked => "parked",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::StaleReply => "stale_reply",
        }
    }
}

#[derive(Debug, Clone)]
pub struct InboxRow {
    pub event_id: String,
    pub order_id: Option<OrderId>,
    pub event_name: String,
    pub source: String,
    pub outcome: Outcome,
}

/// The database's clock ([`super::db_now`]) and which of `ids` were handled
/// before — the two reads every batch starts with, in one round trip: the
/// ids as a JSON table left-joined to the inbox give one row per id, with the
/// clock on each (`NOW(6)` is the same for every row of a statement) and the
/// stored id where there is one. One statement text for any number of ids
/// (`store::rowset`).
pub async fn db_now_and_existing(tx: &mut Tx, ids: &[&str]) -> Result<(DateTime<Utc>, HashSet<String>), StoreError> {
    // `event_id` is an ASCII column: an id outside ASCII cannot be in it (and
    // would convert to `?` in the lookup), so it is not looked up.
    let ascii: Vec<&str> = ids.iter().copied().filter(|id| id.is_ascii()).collect();
    if ascii.is_empty() {
        return Ok((super::db_now(tx).await?, HashSet::new()));
    }
    let rows = sqlx::query(
        "SELECT NOW(6) AS db_now, i.event_id FROM JSON_TABLE(?, '$[*]' COLUMNS (\
         event_id LONGTEXT CHARACTER SET ascii COLLATE ascii_bin PATH '$')) AS j \
         LEFT JOIN saga_inbox i FORCE INDEX (PRIMARY) ON i.event_id = j.event_id",
    )
    .bind(super::rowset::encode(&ascii)?)
    .fetch_all(&mut **tx)
    .await
    .ctx("reading the inbox and the database clock")?;
    let first = rows.first().ok_or_else(|| StoreError::Corrupt("the inbox read returned no row".into()))?;
    let now: chrono::NaiveDateTime = first.try_get("db_now").ctx("decoding the database clock")?;
    let mut seen = HashSet::new();
    for r in &rows {
        if let Some(id) = r.try_get::<Option<String>, _>("event_id").ctx("decoding inbox event_id")? {
            seen.insert(id);
        }
    }
    Ok((super::from_db_clock(now), seen))
}

/// Plain INSERT: if a concurrent transaction inserted one of these ids after
/// our `db_now_and_existing` check, the duplicate-key error rolls the batch back and the
/// retry sees the id as handled.
pub(crate) fn insert(s: &mut Script, rows: &[InboxRow], now: DateTime<Utc>) {
    // Chunked: bounds one statement's size.
    for rows in rows.chunks(super::limits::ROWS_PER_STATEMENT) {
        s.statement("inserting inbox rows")
            .sql("INSERT INTO saga_inbox (event_id, order_id, event_name, source, outcome, received_at) ")
            .values(rows, |b, r| {
                b.lit(&r.event_id).lit(r.order_id).lit(&r.event_name).lit(&r.source).lit(r.outcome.as_str()).lit(now);
            })
            .duplicate_is_race("an event of the batch was handled concurrently");
    }
}

/// Deletes inbox rows older than `older_than` in small batches.
pub async fn purge(pool: &sqlx::MySqlPool, older_than: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = sqlx::query("DELETE FROM saga_inbox WHERE received_at < ? ORDER BY received_at LIMIT 1000")
            .bind(older_than)
            .execute(pool)
            .await
            .ctx("purging the inbox")?
            .rows_affected();
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}

/// Forgets inbox rows so that parked events can be applied (they were
/// recorded as `parked` when they arrived).
pub(crate) async fn forget_inbox(tx: &mut Tx, event_ids: &[String]) -> Result<(), StoreError> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("DELETE FROM saga_inbox WHERE event_id IN (");
    let mut sep = qb.separated(", ");
    for id in event_ids {
        sep.push_bind(id.as_str());
    }
    qb.push(")");
    qb.build().execute(&mut **tx).await.ctx("forgetting inbox rows")?;
    Ok(())
}
