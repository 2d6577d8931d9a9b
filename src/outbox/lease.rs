//! The relay's shard leases: heartbeat, renew and acquire every `ttl / 3`,
//! independent of publish rounds, and tell the relay which shards it owns.

use super::*;

pub(super) fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(6)).min(5_000))
}

/// Heartbeats and renews/acquires leases every `ttl / 3`, independent of
/// publish rounds (a round may wait on a broker for longer than the TTL).
pub(super) async fn lease_loop(
    db: Db,
    s: RelaySettings,
    owned_tx: watch::Sender<(Vec<u16>, u32)>,
    shutdown: CancellationToken,
) {
    let period = s.lease_ttl / 3;
    loop {
        let step = async {
            leases::ensure_shards(&db, s.shards).await?;
            let live = leases::heartbeat(&db, &s.owner, s.lease_ttl).await?;
            let fair = (u32::from(s.shards)).div_ceil(live);
            let owned = leases::renew_and_acquire(&db, &s.owner, s.lease_ttl, fair).await?;
            Ok::<_, StoreError>((owned, fair))
        };
        match step.await {
            Ok(v) => {
                owned_tx.send_if_modified(|cur| {
                    if *cur != v {
                        *cur = v;
                        true
                    } else {
                        false
                    }
                });
            }
            Err(e) => {
                // Cannot tell what we still hold: publish nothing until a
                // renewal succeeds (reads are fenced in the database anyway).
                tracing::warn!(error = %e, "outbox lease renewal failed; not publishing until it succeeds");
                owned_tx.send_if_modified(|cur| {
                    let changed = !cur.0.is_empty();
                    cur.0.clear();
                    changed
                });
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}
