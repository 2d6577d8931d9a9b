//! Outbox shard leases: at most one live publisher per shard across replicas,
//! shards shared fairly among live relays. All times are database time.

use std::time::Duration;

use sqlx::{MySql, QueryBuilder, Row};

use super::{Ctx, Db, StoreError};

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

/// Creates the lease rows for shards `0..shards` (idempotent).
pub async fn ensure_shards(db: &Db, shards: u16) -> Result<(), StoreError> {
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new("INSERT IGNORE INTO outbox_leases (shard) ");
    qb.push_values(0..shards, |mut b, s| {
        b.push_bind(s);
    });
    qb.build().execute(&db.pool).await.ctx("creating outbox lease rows")?;
    Ok(())
}

/// Records that `owner` is alive; returns how many relays are alive (heartbeat within `ttl`).
pub async fn heartbeat(db: &Db, owner: &str, ttl: Duration) -> Result<u32, StoreError> {
    sqlx::query("INSERT INTO outbox_relays (owner, heartbeat_at) VALUES (?, NOW(6)) ON DUPLICATE KEY UPDATE heartbeat_at = NOW(6)")
        .bind(owner)
        .execute(&db.pool)
        .await
        .ctx("relay heartbeat")?;
    sqlx::query("DELETE FROM outbox_relays WHERE heartbeat_at < NOW(6) - INTERVAL ? MICROSECOND")
        .bind(micros(ttl * 10))
        .execute(&db.pool)
        .await
        .ctx("forgetting dead relays")?;
    let row =
        sqlx::query("SELECT COUNT(*) AS n FROM outbox_relays WHERE heartbeat_at >= NOW(6) - INTERVAL ? MICROSECOND")
            .bind(micros(ttl))
            .fetch_one(&db.pool)
            .await
            .ctx("counting live relays")?;
    let n: i64 = row.try_get("n").ctx("decoding count")?;
    Ok(n.max(1) as u32)
}

/// Renews `owner`'s leases and takes free or expired shards up to
/// `fair_share`. Never gives shards back (only the publisher may, between
/// rounds: see [`release`]). Returns the shards held afterwards.
pub async fn renew_and_acquire(db: &Db, owner: &str, ttl: Duration, fair_share: u32) -> Result<Vec<u16>, StoreError> {
    let ttl = micros(ttl);
    sqlx::query("UPDATE outbox_leases SET lease_until = NOW(6) + INTERVAL ? MICROSECOND WHERE owner = ?")
        .bind(ttl)
        .bind(owner)
        .execute(&db.pool)
        .await
        .ctx("renewing outbox leases")?;
    let mine = owned(db, owner).await?;
    if (mine.len() as u32) >= fair_share {
        return Ok(mine);
    }
    let want = fair_share - mine.len() as u32;
    sqlx::query(
        "UPDATE outbox_leases SET owner = ?, lease_until = NOW(6) + INTERVAL ? MICROSECOND \
         WHERE owner IS NULL OR lease_until IS NULL OR lease_until < NOW(6) ORDER BY shard LIMIT ?",
    )
    .bind(owner)
    .bind(ttl)
    .bind(want)
    .execute(&db.pool)
    .await
    .ctx("acquiring outbox leases")?;
    owned(db, owner).await
}

/// Gives `shards` back.
pub async fn release(db: &Db, owner: &str, shards: &[u16]) -> Result<(), StoreError> {
    if shards.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<MySql> =
        QueryBuilder::new("UPDATE outbox_leases SET owner = NULL, lease_until = NULL WHERE owner = ");
    qb.push_bind(owner).push(" AND shard IN (");
    let mut sep = qb.separated(", ");
    for s in shards {
        sep.push_bind(*s);
    }
    qb.push(")");
    qb.build().execute(&db.pool).await.ctx("releasing outbox leases")?;
    Ok(())
}

async fn owned(db: &Db, owner: &str) -> Result<Vec<u16>, StoreError> {
    let rows = sqlx::query("SELECT shard FROM outbox_leases WHERE owner = ? AND lease_until > NOW(6) ORDER BY shard")
        .bind(owner)
        .fetch_all(&db.pool)
        .await
        .ctx("reading owned outbox leases")?;
    rows.iter().map(|r| r.try_get::<u16, _>("shard").ctx("decoding shard")).collect()
}

/// Gives every lease of `owner` back (graceful shutdown) so others take over at once.
pub async fn release_all(db: &Db, owner: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox_leases SET owner = NULL, lease_until = NULL WHERE owner = ?")
        .bind(owner)
        .execute(&db.pool)
        .await
        .ctx("releasing outbox leases")?;
    sqlx::query("DELETE FROM outbox_relays WHERE owner = ?")
        .bind(owner)
        .execute(&db.pool)
        .await
        .ctx("leaving the relay group")?;
    Ok(())
}
