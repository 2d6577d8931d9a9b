//! Event time: how far the consumer has applied each inbound partition,
//! reported into the database for every replica's sweeper (`crate::timers`).
//!
//! Every [`REPORT_EVERY`], the probe reads (off the async runtime) which
//! partitions this replica owns, how far each is applied, and the partitions'
//! end offsets; the result moves `consumer_watermarks` forward in one
//! statement. Once a minute the full partition list of the inbound topics is
//! written too (new rows start at the epoch), so that a partition no replica
//! consumes holds the timers it could answer rather than being invisible.

use std::time::Duration;

use chrono::DateTime;
use tokio_util::sync::CancellationToken;

use crate::kafka::consumer::WatermarkProbe;
use crate::store::watermarks::{self, Advance};
use crate::store::{Db, deadline};

/// How often watermarks are reported: a due timer fires at most about this
/// much (plus the allowed lateness) after its answers were all consumed.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How long one probe's broker calls may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the partition list is refreshed (in reports).
const LIST_EVERY: u32 = 60;

/// Reports watermarks until `stop` fires. Failures are logged and retried at
/// the next tick: a missed report only delays timers, it never fires one early.
pub async fn report(probe: WatermarkProbe, db: Db, stop: CancellationToken) {
    let mut probe = probe;
    let mut tick = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REPORT_EVERY) => {}
        }
        let list = tick.is_multiple_of(LIST_EVERY);
        tick = tick.wrapping_add(1);
        let probed = tokio::task::spawn_blocking(move || {
            // A panic in one probe must not end the reports (timers would
            // then wait for the deferral bound): keep the probe, skip the tick.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let partitions = if list { probe.partitions(PROBE_TIMEOUT) } else { Vec::new() };
                (partitions, probe.probe(PROBE_TIMEOUT))
            }));
            (probe, r)
        })
        .await;
        let Ok((back, r)) = probed else {
            tracing::error!("the watermark probe's thread was lost; event-time timers wait for the deferral bound");
            return;
        };
        probe = back;
        let Ok((partitions, marks)) = r else {
            tracing::error!("the watermark probe panicked; retrying at the next tick");
            continue;
        };
        if let Err(e) = deadline("listing partitions", watermarks::ensure(&db.pool, &partitions)).await {
            tracing::warn!(error = %e, "listing partitions for the watermarks failed; retried at the next tick");
            tick = 0;
        }
        let rows: Vec<Advance> = marks
            .into_iter()
            .filter_map(|m| {
                Some(Advance {
                    through: DateTime::from_timestamp_millis(m.through_ms)?,
                    topic: m.topic,
                    partition: m.partition,
                    next_offset: m.next_offset,
                })
            })
            .collect();
        if let Err(e) = deadline("advancing watermarks", watermarks::advance(&db.pool, &rows)).await {
            tracing::warn!(error = %e, "reporting consumer watermarks failed; retried at the next tick");
        }
    }
}
