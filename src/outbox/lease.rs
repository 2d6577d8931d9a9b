//! The relay's shard leases: heartbeat, renew and acquire every `ttl / 3`,
//! independent of publish rounds, and tell the relay which shards it owns.

use super::*;

/// When the publish loop last went round, shared with the lease loop.
#[derive(Clone)]
pub(super) struct Liveness {
    start: Instant,
    last_round_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Liveness {
    pub(super) fn new() -> Liveness {
        Liveness { start: Instant::now(), last_round_ms: Arc::default() }
    }

    /// The publish loop completed a round.
    pub(super) fn round(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_round_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long ago the publish loop last completed a round.
    pub(super) fn since_last_round(&self) -> Duration {
        let last = Duration::from_millis(self.last_round_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Whether the lease loop may renew: the publish loop must have gone round
/// within one lease lifetime. A loop stuck (on a database connection that
/// went silent mid-statement, say) must not keep its shards from the other
/// replicas by renewing them for ever.
pub(super) fn may_renew(since_last_round: Duration, ttl: Duration) -> bool {
    since_last_round < ttl
}

/// Heartbeats and renews/acquires leases every `ttl / 3`, independent of
/// publish rounds, as long as the publish loop is alive ([`may_renew`]).
pub(super) async fn lease_loop(
    db: Db,
    s: RelaySettings,
    owned_tx: watch::Sender<(Vec<u16>, u32)>,
    alive: Liveness,
    shutdown: CancellationToken,
) {
    let period = s.lease_ttl / 3;
    loop {
        let renewed = if may_renew(alive.since_last_round(), s.lease_ttl) {
            let step = async {
                leases::ensure_shards(&db, s.shards).await?;
                let live = leases::heartbeat(&db, &s.owner, s.lease_ttl).await?;
                let fair = (u32::from(s.shards)).div_ceil(live);
                let owned = leases::renew_and_acquire(&db, &s.owner, s.lease_ttl, fair).await?;
                Ok::<_, StoreError>((owned, fair))
            };
            crate::store::deadline("renewing outbox leases", step).await.map_err(|e| {
                // Cannot tell what we still hold: publish nothing until a
                // renewal succeeds (reads are fenced in the database anyway).
                tracing::warn!(error = %e, "outbox lease renewal failed; not publishing until it succeeds");
            })
        } else {
            tracing::error!(stuck_for = ?alive.since_last_round(),
                "the outbox publish loop has not gone round within the lease TTL; not renewing its shards, so other replicas take them");
            Err(())
        };
        owned_tx.send_if_modified(|cur| match renewed {
            Ok(ref v) if cur != v => {
                *cur = v.clone();
                true
            }
            Ok(_) => false,
            Err(()) => {
                let changed = !cur.0.is_empty();
                cur.0.clear();
                changed
            }
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_loop_stuck_past_the_lease_ttl_stops_renewing() {
        let ttl = Duration::from_secs(30);
        assert!(may_renew(Duration::from_secs(29), ttl));
        assert!(!may_renew(Duration::from_secs(30), ttl));
        let alive = Liveness::new();
        alive.round();
        assert!(alive.since_last_round() < ttl);
    }
}
