//! The outbox relay: publishes committed outbox rows to Kafka, in id order per
//! shard, and marks them published.
//!
//! * **One publisher per shard.** Rows carry `shard = order_id mod N`; each
//!   shard is leased (database time) by one live relay, and shards are shared
//!   fairly between replicas. A crashed replica's shards move after the lease
//!   TTL. `SKIP LOCKED` alone would let two relays publish one order's rows out
//!   of order; leases cannot. Reads are **fenced**: the query itself only
//!   returns rows of shards whose lease this relay holds at that moment, so a
//!   relay that lost, failed to renew or gave up a shard cannot publish it
//!   again. A busy relay stops reading its surplus shards as soon as a new
//!   replica appears and releases each once its in-flight rows are settled —
//!   hand-off under load, not only when idle.
//! * **A row that cannot be encoded** is held (backoff, `held_until`), and the
//!   later rows of its order wait with it; other orders flow, and the relay
//!   does not spin on it.
//! * **Order per order.** Within a round, rows are enqueued in id order into
//!   an idempotent producer; rows of one order are in one shard and one
//!   partition, so Kafka keeps their order.
//! * **At-least-once.** Rows are marked published only after the broker's
//!   ack. A crash in between republishes them with the same `event_id`.
//! * **Low latency.** Business transactions wake the relay (`Notify`) after
//!   they commit; it also polls for rows other replicas wrote.
//! * **Outages.** While Kafka is down rounds fail, nothing is marked, and the
//!   relay backs off and retries; with `ORDER_SAGA_REST_MODE=fallback`
//!   commands go over REST after `ORDER_SAGA_REST_FALLBACK_AFTER`.

pub mod rest;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::rest::{RestOutcome, RestTransport};
use crate::codec::Codec;
use crate::config::RestMode;
use crate::contracts::{Message, MessageKind};
use crate::kafka::producer::Producer;
use crate::store::outbox::{self as table, EVENT_TYPE_DEAD_LETTER, PendingRow};
use crate::store::{Db, StoreError, leases};
use crate::telemetry::metrics::{Metrics, TransportLabel};
use crate::telemetry::traceparent::TraceParent;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("schema registry unavailable: {0}")]
    Registry(String),
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Unique per process (host name + pid + random).
    pub owner: String,
    pub shards: u16,
    pub batch: u32,
    pub poll_interval: Duration,
    pub lease_ttl: Duration,
    pub rest_mode: RestMode,
    pub rest_fallback_after: Duration,
}

/// What one settlement of delivery results did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub read: usize,
    pub published_kafka: usize,
    pub published_rest: usize,
    pub failed: usize,
}

/// Creates producers (the relay replaces a wedged one).
pub type ProducerFactory = Arc<dyn Fn() -> Result<Producer, crate::kafka::KafkaError> + Send + Sync>;

/// How many consecutive rounds in which no message got through before the
/// producer is replaced. A fatal idempotence error replaces it at once.
const WEDGED_ROUNDS: u32 = 3;

/// How long acks wait to be marked published together.
const SETTLE_DELAY: Duration = Duration::from_millis(3);

/// Settlement writes (mark published / failed) running at once. They run
/// beside the read-and-send loop, so a slow UPDATE under load does not hold
/// up the next read; their rows count as in flight until the write is done,
/// so no read sends them again meanwhile.
const SETTLE_WRITES: usize = 4;

/// What one settlement writes.
#[derive(Debug, Default)]
struct SettleWrites {
    published: Vec<u64>,
    failed: HashMap<String, Vec<u64>>,
}

impl SettleWrites {
    fn ids(&self) -> Vec<u64> {
        self.published.iter().chain(self.failed.values().flatten()).copied().collect()
    }

    async fn write(&self, db: &Db) -> Result<(), StoreError> {
        let t0 = Instant::now();
        table::mark_published(&db.pool, &self.published).await?;
        tracing::debug!(acks = self.published.len(), elapsed_us = t0.elapsed().as_micros() as u64, "outbox settle");
        for (error, ids) in &self.failed {
            table::mark_failed(&db.pool, ids, error).await?;
        }
        Ok(())
    }
}

/// A finished settlement write: its rows leave the in-flight set.
struct Settled {
    ids: Vec<u64>,
    result: Result<(), StoreError>,
}

pub struct Relay {
    pub db: Db,
    /// Chooses each message's partition (ORDER_SAGA_PARTITIONING).
    pub partitioner: Arc<crate::partitioning::Partitioner>,
    pub codec: Codec,
    pub producer: Producer,
    /// Makes a new producer when the current one is wedged (see `round`).
    new_producer: ProducerFactory,
    /// Consecutive settlements in which no Kafka send succeeded.
    wedged_rounds: u32,
    pub rest: Option<RestTransport>,
    pub settings: RelaySettings,
    pub wakeup: Arc<Notify>,
    pub metrics: Metrics,
    kafka_down_since: Option<Instant>,
    /// When topic metadata was last fetched for partitioning.
    metadata_tried: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Kafka,
    Rest,
}

/// The delivery result of one row.
struct Ack {
    id: u64,
    created_at: chrono::DateTime<chrono::Utc>,
    transport: Transport,
    result: Result<(i32, i64), AckError>,
}

/// Why a row was not delivered: the text stored in `last_error`, and whether
/// the transport said it cannot deliver anything any more (a fatal producer).
#[derive(Debug, Clone)]
struct AckError {
    message: String,
    fatal: bool,
}

impl From<crate::kafka::producer::DeliveryError> for AckError {
    fn from(e: crate::kafka::producer::DeliveryError) -> AckError {
        AckError { fatal: e.is_fatal(), message: e.message }
    }
}

/// A row ready to send.
struct Prepared {
    id: u64,
    kind: Option<MessageKind>,
    topic: String,
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, String)>,
    json: String,
    command_id: Option<String>,
    shard: u16,
    /// Explicit partition (regional placement), or the key's hash.
    partition: Option<i32>,
    /// The metric label of the order's region.
    region: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Rows sent and not yet settled: id → (created_at, shard).
type InFlight = HashMap<u64, (chrono::DateTime<chrono::Utc>, u16)>;

impl Relay {
    /// Regional placement (see `partitioning`): the row's region and order.
    fn place(
        &self,
        row: &PendingRow,
        audience: crate::partitioning::Audience,
    ) -> Result<(Option<i32>, String), PrepareError> {
        let region = row.tenant_region.as_deref();
        let order_id = row.aggregate_id.parse::<i64>().ok();
        let partition = self
            .partitioner
            .partition(audience, &row.topic, region, order_id)
            .map_err(|crate::partitioning::NotReady| PrepareError::NotReady)?;
        Ok((partition, self.metrics.region(region.unwrap_or("")).tenant_region))
    }

    /// Learns the partition counts of `topics` (the broker was unreachable
    /// when the daemon started), at most every few seconds, in the background:
    /// a metadata request to a broker that is down must not hold up the
    /// relay's other work (acks, REST).
    fn learn_partitions(&mut self, topics: Vec<String>) {
        if self.metadata_tried.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return;
        }
        self.metadata_tried = Some(Instant::now());
        let (producer, partitioner, wakeup) = (self.producer.clone(), self.partitioner.clone(), self.wakeup.clone());
        tokio::spawn(async move {
            match producer.partition_counts(topics).await {
                Ok(counts) if !counts.is_empty() => match partitioner.learn(counts) {
                    Ok(()) => wakeup.notify_one(),
                    // The map does not fit a topic: its rows wait (never
                    // published to a wrong partition).
                    Err(e) => {
                        tracing::error!(error = %e, "ORDER_SAGA_REGION_PARTITIONS does not fit the topics; their messages wait")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read topic metadata; regionally partitioned messages wait")
                }
            }
        });
    }
}

impl Relay {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        codec: Codec,
        new_producer: ProducerFactory,
        rest: Option<RestTransport>,
        settings: RelaySettings,
        wakeup: Arc<Notify>,
        metrics: Metrics,
    ) -> Result<Relay, crate::kafka::KafkaError> {
        let producer = new_producer()?;
        Ok(Relay {
            db,
            partitioner: Arc::new(crate::partitioning::Partitioner::default()),
            codec,
            producer,
            new_producer,
            wedged_rounds: 0,
            rest,
            settings,
            wakeup,
            metrics,
            kafka_down_since: None,
            metadata_tried: None,
        })
    }

    /// Sets how partitions are chosen (the default hashes keys).
    pub fn with_partitioner(mut self, p: Arc<crate::partitioning::Partitioner>) -> Relay {
        self.partitioner = p;
        self
    }

    /// Runs until `shutdown`; then waits (briefly) for in-flight messages,
    /// flushes the producer and gives the leases back.
    ///
    /// The loop is pipelined: it reads and enqueues new rows while earlier
    /// ones wait for their acks, so broker round trips overlap instead of
    /// adding up. Rows of one order still reach Kafka in id order: they are
    /// enqueued in id order into an idempotent producer, and a row is never
    /// enqueued twice while in flight.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Err(e) = leases::ensure_shards(&self.db, self.settings.shards).await {
            tracing::warn!(error = %e, "cannot create outbox lease rows; retrying in the lease loop");
        }
        let (owned_tx, mut owned_rx) = watch::channel::<(Vec<u16>, u32)>((Vec::new(), self.settings.shards as u32));
        let lease_task = tokio::spawn(lease_loop(self.db.clone(), self.settings.clone(), owned_tx, shutdown.clone()));
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Ack>();
        let mut in_flight: InFlight = HashMap::new();
        // Surplus shards released, until the lease loop stops listing them.
        let mut released: std::collections::HashSet<u16> = std::collections::HashSet::new();
        let mut failures = 0u32;
        let mut retry_at = Instant::now();
        let max_in_flight = (self.settings.batch as usize) * 4;
        let mut acks: Vec<Ack> = Vec::new();
        let (settled_tx, mut settled_rx) = mpsc::unbounded_channel::<Settled>();
        let mut settling = 0usize;
        // Acks are settled in small groups (one UPDATE per group, not per ack).
        let mut settle_at: Option<Instant> = None;
        let mut want_dispatch = true;
        let mut next_poll = Instant::now() + self.settings.poll_interval;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            while let Ok(a) = ack_rx.try_recv() {
                acks.push(a);
            }
            while let Ok(done) = settled_rx.try_recv() {
                settling -= 1;
                if self.settled(done, &mut in_flight) {
                    failures += 1;
                    retry_at = Instant::now() + backoff(failures);
                }
                // Room in the pipeline again.
                want_dispatch = true;
            }
            let now = Instant::now();
            if !acks.is_empty() && settle_at.is_none() {
                settle_at = Some(now + SETTLE_DELAY);
            }
            if (settle_at.is_some_and(|t| t <= now) || acks.len() >= self.settings.batch as usize)
                && settling < SETTLE_WRITES
            {
                settle_at = None;
                let batch = std::mem::take(&mut acks);
                let (r, writes) = self.settle(batch);
                if r.failed > 0 && r.published_kafka + r.published_rest == 0 {
                    failures += 1;
                    retry_at = Instant::now() + backoff(failures);
                } else {
                    failures = 0;
                }
                settling += 1;
                let (db, done) = (self.db.clone(), settled_tx.clone());
                tokio::spawn(async move {
                    let result = writes.write(&db).await;
                    let _ = done.send(Settled { ids: writes.ids(), result });
                });
            }
            if now >= next_poll {
                want_dispatch = true;
                next_poll = now + self.settings.poll_interval;
            }
            let (mut owned, fair) = owned_rx.borrow_and_update().clone();
            released.retain(|s| owned.contains(s));
            if owned.len() as u32 > fair {
                // Another replica appeared: stop reading the surplus at once,
                // and release each surplus shard once nothing of it is in flight.
                let surplus = owned.split_off(fair as usize);
                let idle: Vec<u16> = surplus
                    .iter()
                    .copied()
                    .filter(|s| !released.contains(s) && !in_flight.values().any(|(_, shard)| shard == s))
                    .collect();
                if !idle.is_empty() {
                    match leases::release(&self.db, &self.settings.owner, &idle).await {
                        Ok(()) => released.extend(idle),
                        Err(e) => tracing::warn!(error = %e, "cannot release surplus outbox shards"),
                    }
                }
            }
            self.metrics.outbox_shards_owned.set(owned.len() as i64);
            let can_dispatch = |in_flight: usize, retry_at: Instant| {
                !owned.is_empty() && in_flight < max_in_flight && Instant::now() >= retry_at
            };
            if want_dispatch && can_dispatch(in_flight.len(), retry_at) {
                want_dispatch = false;
                match self.dispatch(&owned, &mut in_flight, &ack_tx).await {
                    // A full read: there is probably more.
                    Ok(n) => want_dispatch = n >= self.settings.batch as usize,
                    Err(e) => {
                        failures += 1;
                        retry_at = Instant::now() + backoff(failures);
                        self.metrics.outbox_publish_errors_total.inc();
                        tracing::warn!(error = %e, failures, "outbox read or encode failed; backing off");
                    }
                }
            }
            if want_dispatch && can_dispatch(in_flight.len(), retry_at) {
                continue;
            }
            let mut wake = next_poll;
            if let Some(t) = settle_at {
                wake = wake.min(t);
            }
            if failures > 0 {
                wake = wake.max(retry_at);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                a = ack_rx.recv() => acks.extend(a),
                d = settled_rx.recv() => {
                    if let Some(done) = d {
                        settling -= 1;
                        if self.settled(done, &mut in_flight) {
                            failures += 1;
                            retry_at = Instant::now() + backoff(failures);
                        }
                        want_dispatch = true;
                    }
                }
                _ = self.wakeup.notified(), if failures == 0 => want_dispatch = true,
                _ = owned_rx.changed() => want_dispatch = true,
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        // Let in-flight messages finish (briefly) so their rows are marked.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        // Settlement writes still running: let them finish (briefly).
        while settling > 0 {
            match tokio::time::timeout_at(deadline, settled_rx.recv()).await {
                Ok(Some(done)) => {
                    settling -= 1;
                    self.settled(done, &mut in_flight);
                }
                _ => break,
            }
        }
        while !in_flight.is_empty() && acks.len() < in_flight.len() {
            match tokio::time::timeout_at(deadline, ack_rx.recv()).await {
                Ok(Some(a)) => acks.push(a),
                _ => break,
            }
        }
        let (_, writes) = self.settle(acks);
        if let Err(e) = writes.write(&self.db).await {
            tracing::warn!(error = %e, "cannot record the last publish results; those rows are republished later");
        }
        if let Err(e) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "producer flush at shutdown incomplete; unacknowledged rows are republished later");
        }
        lease_task.abort();
        if let Err(e) = leases::release_all(&self.db, &self.settings.owner).await {
            tracing::warn!(error = %e, "cannot release outbox leases; they expire by themselves");
        }
        tracing::info!("outbox relay stopped");
    }

    /// Reads rows not yet in flight and sends them: commands over REST when
    /// that transport is on, everything else into the producer (acks arrive on
    /// `acks`). Returns how many rows it read.
    async fn dispatch(
        &mut self,
        shards: &[u16],
        in_flight: &mut InFlight,
        acks: &mpsc::UnboundedSender<Ack>,
    ) -> Result<usize, RelayError> {
        let t0 = Instant::now();
        let limit = self.settings.batch + in_flight.len() as u32;
        let ids: Vec<u64> = table::pending_ids(&self.db.pool, &self.settings.owner, shards, limit)
            .await?
            .into_iter()
            .filter(|id| !in_flight.contains_key(id))
            .take(self.settings.batch as usize)
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let rows = table::rows(&self.db.pool, &ids).await?;
        let mut prepared = Vec::with_capacity(rows.len());
        // Orders with a held row in this read: their later rows wait too.
        let mut held_orders: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut unknown_topics: Vec<String> = Vec::new();
        // (order, topic) waiting for a partition count: order is per topic.
        let mut waiting: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
        for row in &rows {
            if held_orders.contains(row.aggregate_id.as_str())
                || waiting.contains(&(row.aggregate_id.as_str(), row.topic.as_str()))
            {
                continue;
            }
            match self.prepare(row).await {
                Ok(p) => prepared.push(p),
                Err(PrepareError::Registry(e)) => return Err(RelayError::Registry(e)),
                Err(PrepareError::NotReady) => {
                    // Later rows of the order on this topic wait too; the rest goes on.
                    waiting.insert((row.aggregate_id.as_str(), row.topic.as_str()));
                    if !unknown_topics.contains(&row.topic) {
                        unknown_topics.push(row.topic.clone());
                    }
                }
                Err(PrepareError::Bad(e)) => {
                    tracing::error!(outbox_id = row.id, order_id = %row.aggregate_id, error = %e,
                        "outbox row cannot be encoded; held with its order's later rows, retried with backoff");
                    self.metrics.outbox_publish_errors_total.inc();
                    table::hold(&self.db.pool, &[row.id], &e).await?;
                    held_orders.insert(row.aggregate_id.as_str());
                }
            }
        }
        if !unknown_topics.is_empty() {
            self.learn_partitions(unknown_topics);
        }
        let rest_now = match (self.settings.rest_mode, &self.rest) {
            (RestMode::Always, Some(_)) => true,
            (RestMode::Fallback, Some(_)) => {
                self.kafka_down_since.is_some_and(|t| t.elapsed() >= self.settings.rest_fallback_after)
            }
            _ => false,
        };
        let (via_rest, via_kafka): (Vec<Prepared>, Vec<Prepared>) = prepared
            .into_iter()
            .partition(|p| rest_now && p.kind.and_then(|k| self.rest.as_ref().and_then(|r| r.endpoint(k))).is_some());

        for mut p in via_kafka {
            in_flight.insert(p.id, (p.created_at, p.shard));
            // A producer span, child of the span that wrote the row; the
            // message carries the producer span's context to the consumer.
            let span = tracing::info_span!(
                "outbox.publish",
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.destination.name = %p.topic,
                outbox.id = p.id,
            );
            if let Some((_, v)) = p.headers.iter_mut().find(|(k, _)| k == crate::contracts::headers::TRACEPARENT) {
                if let Some(tp) = TraceParent::parse(v) {
                    crate::telemetry::otel::set_remote_parent(&span, &tp);
                }
                if let Some(own) = crate::telemetry::otel::traceparent_of(&span) {
                    *v = own.to_string();
                }
            }
            let sent = self.producer.enqueue_to(&p.topic, p.partition, &p.key, &p.value, &p.headers).await;
            self.metrics
                .outbox_published_messages_total
                .get_or_create(&crate::telemetry::metrics::TopicRegionLabel {
                    topic: p.topic.clone(),
                    tenant_region: p.region.clone(),
                })
                .inc();
            let tx = acks.clone();
            let (id, created_at) = (p.id, p.created_at);
            match sent {
                Ok(fut) => {
                    tokio::spawn(
                        async move {
                            let result = fut.await.map_err(AckError::from);
                            let _ = tx.send(Ack { id, created_at, transport: Transport::Kafka, result });
                        }
                        .instrument(span),
                    );
                }
                Err(e) => {
                    let _ = tx.send(Ack { id, created_at, transport: Transport::Kafka, result: Err(e.into()) });
                }
            }
        }
        // REST: one at a time, in order.
        if let Some(rest) = &self.rest {
            for p in &via_rest {
                let Some(url) = p.kind.and_then(|k| rest.endpoint(k)) else { continue };
                in_flight.insert(p.id, (p.created_at, p.shard));
                let cmd = p.command_id.clone().unwrap_or_default();
                let result = match rest.deliver(&url, &cmd, &p.json, &p.headers).await {
                    RestOutcome::Delivered => Ok((0, 0)),
                    RestOutcome::Transient(e) | RestOutcome::Rejected(e) => Err(AckError { message: e, fatal: false }),
                };
                let _ = acks.send(Ack { id: p.id, created_at: p.created_at, transport: Transport::Rest, result });
            }
        }
        tracing::debug!(
            rows = rows.len(),
            in_flight = in_flight.len(),
            elapsed_us = t0.elapsed().as_micros() as u64,
            "outbox dispatch"
        );
        Ok(rows.len())
    }

    /// A settlement write finished: its rows leave the in-flight set (marked,
    /// or to be read and sent again when the write failed). Returns whether
    /// it failed (the caller backs off).
    fn settled(&self, done: Settled, in_flight: &mut InFlight) -> bool {
        for id in &done.ids {
            in_flight.remove(id);
        }
        match done.result {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, rows = done.ids.len(), "cannot record publish results; rows are republished later");
                true
            }
        }
    }

    /// Takes delivery results: decides what to mark published or failed
    /// (written by the caller, see [`SettleWrites`]), keeps the Kafka-down
    /// clock for the REST fallback, and replaces a wedged producer.
    fn settle(&mut self, acks: Vec<Ack>) -> (RoundReport, SettleWrites) {
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
                    self.metrics.outbox_publish_lag_seconds.observe(lag);
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
                    writes.failed.entry(e.message.clone()).or_default().push(a.id);
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
        m.outbox_published_total
            .get_or_create(&TransportLabel { transport: "kafka".into() })
            .inc_by(report.published_kafka as u64);
        m.outbox_published_total
            .get_or_create(&TransportLabel { transport: "rest".into() })
            .inc_by(report.published_rest as u64);
        if report.failed > 0 {
            m.outbox_publish_errors_total.inc();
        }
        (report, writes)
    }

    async fn prepare(&self, row: &PendingRow) -> Result<Prepared, PrepareError> {
        let headers: Vec<(String, String)> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&row.headers)
                .map_err(|e| PrepareError::Bad(format!("headers are not a JSON object: {e}")))?
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
                .collect();
        if row.event_type == EVENT_TYPE_DEAD_LETTER {
            let v: serde_json::Value =
                serde_json::from_str(&row.payload).map_err(|e| PrepareError::Bad(e.to_string()))?;
            let b64 = base64::engine::general_purpose::STANDARD;
            let decode = |field: &str| -> Result<Vec<u8>, PrepareError> {
                match v[field].as_str() {
                    Some(s) => b64.decode(s).map_err(|e| PrepareError::Bad(e.to_string())),
                    None => Ok(Vec::new()),
                }
            };
            let key = decode("key_base64")?;
            let (partition, region) = self.place(row, crate::partitioning::Audience::Events)?;
            return Ok(Prepared {
                partition,
                region,
                id: row.id,
                kind: None,
                topic: row.topic.clone(),
                key: if key.is_empty() { row.aggregate_id.clone().into_bytes() } else { key },
                value: decode("value_base64")?,
                headers,
                json: String::new(),
                command_id: None,
                shard: row.shard,
                created_at: row.created_at,
            });
        }
        let kind: MessageKind = row.event_type.parse().map_err(|e| PrepareError::Bad(format!("{e}")))?;
        let json: serde_json::Value =
            serde_json::from_str(&row.payload).map_err(|e| PrepareError::Bad(e.to_string()))?;
        let msg = Message::from_json(kind, &json)
            .map_err(|e| PrepareError::Bad(format!("payload does not match {kind}: {e}")))?;
        let value = self.codec.encode(&msg, &row.topic).await.map_err(|e| {
            if e.is_retriable() { PrepareError::Registry(e.to_string()) } else { PrepareError::Bad(e.to_string()) }
        })?;
        let command_id = json.get("command_id").and_then(|v| v.as_str()).map(str::to_owned);
        let (partition, region) = self.place(row, crate::partitioning::audience(kind))?;
        Ok(Prepared {
            partition,
            region,
            id: row.id,
            kind: Some(kind),
            topic: row.topic.clone(),
            key: row.aggregate_id.clone().into_bytes(),
            value,
            headers,
            json: row.payload.clone(),
            command_id,
            shard: row.shard,
            created_at: row.created_at,
        })
    }
}

enum PrepareError {
    Registry(String),
    Bad(String),
    /// The partition cannot be chosen yet (partition count unknown): the row waits.
    NotReady,
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(6)).min(5_000))
}

/// Heartbeats and renews/acquires leases every `ttl / 3`, independent of
/// publish rounds (a round may wait on a broker for longer than the TTL).
async fn lease_loop(db: Db, s: RelaySettings, owned_tx: watch::Sender<(Vec<u16>, u32)>, shutdown: CancellationToken) {
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
