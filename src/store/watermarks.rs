//! Event-time watermarks of the inbound topics (`consumer_watermarks`): per
//! partition, the time up to which every message has been applied. Written by
//! the replica that consumes the partition, only ever moved forward, and read
//! by every replica's sweeper (timers are judged by them: the `timers` module).

use chrono::{DateTime, Utc};
use sqlx::{MySql, QueryBuilder, Row};

use super::{Ctx, StoreError};

/// One partition's watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub topic: String,
    pub partition: i32,
    /// Every message of the partition produced at or before this has been applied.
    pub consumed_through: DateTime<Utc>,
    /// The next offset to apply, when it was last moved.
    pub next_offset: i64,
    /// When a replica last reported it (database time).
    pub updated_at: DateTime<Utc>,
}

/// Where the consumer reports a partition to be: applied through `through`,
/// next offset `next_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    pub topic: String,
    pub partition: i32,
    pub through: DateTime<Utc>,
    pub next_offset: i64,
}

/// Moves watermarks forward (never back: a replica that lost the partition
/// reports what was true when it had it). One statement.
pub async fn advance(pool: &sqlx::MySqlPool, rows: &[Advance]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "INSERT INTO consumer_watermarks (topic, kafka_partition, consumed_through, next_offset, updated_at) ",
    );
    qb.push_values(rows, |mut b, r| {
        b.push_bind(&r.topic).push_bind(r.partition).push_bind(r.through).push_bind(r.next_offset).push("NOW(6)");
    });
    // updated_at first: assignments run left to right.
    qb.push(
        " ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at), \
         consumed_through = GREATEST(consumed_through, VALUES(consumed_through)), \
         next_offset = GREATEST(next_offset, VALUES(next_offset))",
    );
    qb.build().execute(pool).await.ctx("advancing consumer watermarks")?;
    Ok(())
}

/// Makes sure every partition of the inbound topics has a row, so that a
/// partition no replica consumes holds the timers it could answer instead of
/// being invisible. New rows start at the epoch; existing rows are untouched.
pub async fn ensure(pool: &sqlx::MySqlPool, partitions: &[(String, i32)]) -> Result<(), StoreError> {
    if partitions.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "INSERT IGNORE INTO consumer_watermarks (topic, kafka_partition, consumed_through, next_offset, updated_at) ",
    );
    qb.push_values(partitions, |mut b, (topic, partition)| {
        b.push_bind(topic).push_bind(*partition).push("'1970-01-01 00:00:00'").push_bind(0i64).push("NOW(6)");
    });
    qb.build().execute(pool).await.ctx("listing consumer partitions")?;
    Ok(())
}

/// Every watermark, with the database's clock (one statement).
pub async fn read(pool: &sqlx::MySqlPool) -> Result<(DateTime<Utc>, Vec<Watermark>), StoreError> {
    let rows = sqlx::query(
        "SELECT c.now, w.topic, w.kafka_partition, w.consumed_through, w.next_offset, w.updated_at \
         FROM (SELECT NOW(6) AS now) c LEFT JOIN consumer_watermarks w ON TRUE ORDER BY w.topic, w.kafka_partition",
    )
    .fetch_all(pool)
    .await
    .ctx("reading consumer watermarks")?;
    let mut now = None;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        now = Some(super::from_db_clock(r.try_get("now").ctx("decoding the database clock")?));
        let Some(topic) = r.try_get::<Option<String>, _>("topic").ctx("decoding topic")? else {
            continue;
        };
        out.push(Watermark {
            topic,
            partition: r.try_get("kafka_partition").ctx("decoding kafka_partition")?,
            consumed_through: r.try_get("consumed_through").ctx("decoding consumed_through")?,
            next_offset: r.try_get("next_offset").ctx("decoding next_offset")?,
            updated_at: r.try_get("updated_at").ctx("decoding updated_at")?,
        });
    }
    let now = now.ok_or_else(|| StoreError::Corrupt("the clock read returned no row".into()))?;
    Ok((now, out))
}
