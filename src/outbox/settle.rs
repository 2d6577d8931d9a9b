//! Settling a publish round: the delivery results decide which rows are
//! marked published or failed (written off the hot path, a few statements per
//! batch), keep the Kafka-down clock for the REST fallback, and replace a
//! wedged producer.

use std::time::Duration;

use super::*;

/// How long acks wait to be marked published together.
pub(super) const SETTLE_DELAY: Duration = Duration::from_millis(3);

/// Settlement writes (mark published / failed) running at once. They run
/// beside the read-and-send loop, so a slow UPDATE under load does not hold
/// up the next read; their rows count as in flight until the write is done,
/// so no read sends them again meanwhile.
pub(super) const SETTLE_WRITES: usize = 4;

/// What one settlement writes.
#[derive(Debug, Default)]
pub(super) struct SettleWrites {
    pub(super) published: Vec<u64>,
    pub(super) failed: HashMap<String, Vec<u64>>,
    /// Rows that cannot be delivered as they are, by error.
    pub(super) held: HashMap<String, Vec<u64>>,
}

impl SettleWrites {
    pub(super) fn ids(&self) -> Vec<u64> {
        self.published
            .iter()
            .chain(self.failed.values().flatten())
            .chain(self.held.values().flatten())
            .copied()
            .collect()
    }

    /// Writes them as relay `owner` (holds are fenced by its leases).
    pub(super) async fn write(&self, db: &Db, owner: &str) -> Result<(), StoreError> {
        let t0 = Instant::now();
        table::mark_published(&db.pool, &self.published).await?;
        tracing::debug!(acks = self.published.len(), elapsed_us = t0.elapsed().as_micros() as u64, "outbox settle");
        for (error, ids) in &self.failed {
            table::mark_failed(&db.pool, ids, error).await?;
        }
        for (error, ids) in &self.held {
            tracing::error!(rows = ?ids, error = %error,
                "outbox rows cannot be delivered as they are; held with their orders' later rows, retried with backoff");
            table::hold(&db.pool, owner, ids, error).await?;
        }
        Ok(())
    }
}

/// A finished settlement write: its rows leave the in-flight set.
pub(super) struct Settled {
    pub(super) ids: Vec<u64>,
    pub(super) result: Result<(), StoreError>,
}

/// The delivery result of one row.
pub(super) struct Ack {
    pub(super) id: u64,
    pub(super) created_at: chrono::DateTime<chrono::Utc>,
    pub(super) transport: Transport,
    pub(super) result: Result<(i32, i64), AckError>,
}

/// Why a row was not delivered: the text stored in `last_error`, and whether
/// the transport said it cannot deliver anything any more (a fatal producer).
#[derive(Debug, Clone)]
pub(super) struct AckError {
    pub(super) message: String,
    pub(super) fatal: bool,
    /// This row can never be delivered as it is: hold it (with backoff, and
    /// its order's later rows behind it) instead of sending it every round.
    pub(super) permanent: bool,
}

impl From<crate::kafka::producer::DeliveryError> for AckError {
    fn from(e: crate::kafka::producer::DeliveryError) -> AckError {
        AckError { fatal: e.is_fatal(), permanent: e.is_permanent(), message: e.message }
    }
}

impl Relay {
    /// A settlement write finished: its rows leave the in-flight set (marked,
    /// or to be read and sent again when the write failed, after a back-off).
    pub(super) fn settled<A>(&self, schedule: &mut super::schedule::Schedule<A>, done: Settled) {
        if let Err(e) = &done.result {
            tracing::warn!(error = %e, rows = done.ids.len(), "cannot record publish results; rows are republished later");
        }
        schedule.handle_settled(Instant::now(), &done.ids, done.result.is_ok());
    }

    /// Takes delivery results: decides what to mark published or failed
    /// (written by the caller, see [`SettleWrites`]), keeps the Kafka-down
    /// clock for the REST fallback, and replaces a wedged producer.
    pub(super) fn settle(&mut self, acks: Vec<Ack>) -> (RoundReport, SettleWrites) {
        let mut report = RoundReport { read: acks.len(), ..Default::default() };
        let mut writes = SettleWrites::default();
        let mut fatal = false;
        let mut kafka_ok = 0;
        let mut kafka_failed = 0;
        let now = chrono::Utc::now();
        for a in &acks {
            match (&a.result, a.transport) {
                (Ok(_), t) => {
                    writes.published.push(a.id);
                    let lag = (now - a.created_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                    self.metrics.outbox.outbox_publish_lag_seconds.observe(lag);
                    match t {
                        Transport::Kafka => {
                            kafka_ok += 1;
                            report.published_kafka += 1;
                        }
                        Transport::Rest => report.published_rest += 1,
                    }
                }
                (Err(e), t) => {
                    if t == Transport::Kafka {
                        kafka_failed += 1;
                    }
                    fatal |= e.fatal;
                    report.failed += 1;
                    let into = if e.permanent { &mut writes.held } else { &mut writes.failed };
                    into.entry(e.message.clone()).or_default().push(a.id);
                }
            }
        }
        if !writes.published.is_empty() {
            // Acknowledged by the broker, not yet marked: a crash republishes.
            crate::failpoint::hit("relay.after_ack");
        }
        if !writes.failed.is_empty() {
            tracing::warn!(failed = report.failed, errors = ?writes.failed.keys().collect::<Vec<_>>(), "some outbox rows were not delivered; retrying");
        }
        if kafka_ok + kafka_failed > 0 {
            if kafka_ok == 0 {
                self.kafka_down_since.get_or_insert_with(Instant::now);
            } else {
                self.kafka_down_since = None;
            }
            // An idempotent producer can wedge: a fatal error, a broker that
            // keeps refusing its sequence numbers, or producer state the
            // broker lost in an outage. Messages are only marked published
            // after an ack, so starting over with a new producer (a new
            // producer id) loses nothing; it is done after WEDGED_ROUNDS
            // settlements in which nothing at all got through.
            let fatal = fatal || self.producer.fatal_error().is_some();
            self.wedged_rounds = if kafka_ok == 0 { self.wedged_rounds + 1 } else { 0 };
            if fatal || self.wedged_rounds >= WEDGED_ROUNDS {
                match (self.new_producer)() {
                    Ok(p) => {
                        tracing::warn!(errors = ?writes.failed.keys().collect::<Vec<_>>(), "replacing a wedged Kafka producer");
                        self.producer = p;
                        self.wedged_rounds = 0;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot create a new Kafka producer"),
                }
            }
        }
        let m = &self.metrics;
        m.outbox
            .outbox_published_total
            .get_or_create(&TransportLabel { transport: "kafka".into() })
            .inc_by(report.published_kafka as u64);
        m.outbox
            .outbox_published_total
            .get_or_create(&TransportLabel { transport: "rest".into() })
            .inc_by(report.published_rest as u64);
        if report.failed > 0 {
            m.outbox.outbox_publish_errors_total.inc();
        }
        (report, writes)
    }
}
