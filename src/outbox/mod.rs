//! The outbox relay: publishes committed outbox rows to Kafka, in id order per
//! shard, and marks them published.
//!
//! * **One publisher per shard.** Rows carry `shard = order_id mod N`; each
//!   shard is leased (database time) by one live relay, and shards are shared
//!   fairly between replicas. A crashed replica's shards move after the lease
//!   TTL. `SKIP LOCKED` alone would let two relays publish one order's rows out
//!   of order; leases cannot.
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
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use self::rest::{RestOutcome, RestTransport};
use crate::config::RestMode;
use crate::contracts::codec::Codec;
use crate::contracts::{Message, MessageKind};
use crate::kafka::producer::Producer;
use crate::store::outbox::{self as table, EVENT_TYPE_DEAD_LETTER, PendingRow};
use crate::store::{Db, StoreError, leases};
use crate::telemetry::metrics::{Metrics, TransportLabel};

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

/// What one round did.
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

pub struct Relay {
    pub db: Db,
    pub codec: Codec,
    pub producer: Producer,
    /// Makes a new producer when the current one is wedged (see `round`).
    new_producer: ProducerFactory,
    /// Consecutive rounds in which no send succeeded.
    wedged_rounds: u32,
    pub rest: Option<RestTransport>,
    pub settings: RelaySettings,
    pub wakeup: Arc<Notify>,
    pub metrics: Metrics,
    kafka_down_since: Option<Instant>,
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
    created_at: chrono::DateTime<chrono::Utc>,
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
            codec,
            producer,
            new_producer,
            wedged_rounds: 0,
            rest,
            settings,
            wakeup,
            metrics,
            kafka_down_since: None,
        })
    }

    /// Runs until `shutdown`; then finishes the current round, flushes the
    /// producer and gives the leases back.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Err(e) = leases::ensure_shards(&self.db, self.settings.shards).await {
            tracing::warn!(error = %e, "cannot create outbox lease rows; retrying in the lease loop");
        }
        let (owned_tx, mut owned_rx) = watch::channel::<(Vec<u16>, u32)>((Vec::new(), self.settings.shards as u32));
        let lease_task = tokio::spawn(lease_loop(self.db.clone(), self.settings.clone(), owned_tx, shutdown.clone()));
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let (mut owned, fair) = owned_rx.borrow_and_update().clone();
            if owned.len() as u32 > fair {
                // Between rounds: safe to hand surplus shards to another replica.
                let surplus = owned.split_off(fair as usize);
                if let Err(e) = leases::release(&self.db, &self.settings.owner, &surplus).await {
                    tracing::warn!(error = %e, "cannot release surplus outbox shards");
                }
            }
            self.metrics.outbox_shards_owned.set(owned.len() as i64);
            let round = if owned.is_empty() { Ok(RoundReport::default()) } else { self.round(&owned).await };
            let wait = match &round {
                Ok(r) if r.read as u32 >= self.settings.batch => Duration::ZERO,
                Ok(r) if r.failed > 0 => {
                    failures += 1;
                    backoff(failures)
                }
                Ok(_) => {
                    failures = 0;
                    self.settings.poll_interval
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.outbox_publish_errors_total.inc();
                    tracing::warn!(error = %e, failures, "outbox round failed; backing off");
                    backoff(failures)
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wakeup.notified(), if failures == 0 => {}
                _ = owned_rx.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
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

    /// One round over `shards`: read, encode, publish, mark.
    pub async fn round(&mut self, shards: &[u16]) -> Result<RoundReport, RelayError> {
        let rows = table::pending(&self.db.pool, shards, self.settings.batch).await?;
        let mut report = RoundReport { read: rows.len(), ..Default::default() };
        if rows.is_empty() {
            return Ok(report);
        }
        let mut prepared = Vec::with_capacity(rows.len());
        let mut bad: Vec<(u64, String)> = Vec::new();
        for row in &rows {
            match self.prepare(row).await {
                Ok(p) => prepared.push(p),
                Err(PrepareError::Registry(e)) => return Err(RelayError::Registry(e)),
                Err(PrepareError::Bad(e)) => bad.push((row.id, e)),
            }
        }
        for (id, e) in &bad {
            tracing::error!(outbox_id = id, error = %e, "outbox row cannot be encoded; it stays unpublished until fixed");
            table::mark_failed(&self.db.pool, &[*id], e).await?;
        }
        report.failed += bad.len();

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

        // Kafka: enqueue everything in order, then await the acks.
        let mut futures = Vec::with_capacity(via_kafka.len());
        for p in &via_kafka {
            futures.push(self.producer.enqueue(&p.topic, &p.key, &p.value, &p.headers).await);
        }
        let mut published = Vec::new();
        let mut failed: HashMap<String, Vec<u64>> = HashMap::new();
        let now = chrono::Utc::now();
        for (p, f) in via_kafka.iter().zip(futures) {
            let r = match f {
                Ok(fut) => fut.await,
                Err(e) => Err(e),
            };
            match r {
                Ok(_) => {
                    published.push(p.id);
                    let lag = (now - p.created_at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                    self.metrics.outbox_publish_lag_seconds.observe(lag);
                }
                Err(e) => failed.entry(e.0).or_default().push(p.id),
            }
        }
        if !via_kafka.is_empty() {
            if published.is_empty() {
                self.kafka_down_since.get_or_insert_with(Instant::now);
            } else {
                self.kafka_down_since = None;
            }
            // An idempotent producer can wedge: a fatal error, a broker that
            // keeps refusing its sequence numbers, or producer state the
            // broker lost in an outage. Messages are only marked published
            // after an ack, so starting over with a new producer (a new
            // producer id) loses nothing; it is done after WEDGED_ROUNDS
            // rounds in which nothing at all got through.
            let nothing_through = published.is_empty() && !failed.is_empty();
            let fatal = failed.keys().any(|e| e.contains("Fatal"));
            self.wedged_rounds = if nothing_through { self.wedged_rounds + 1 } else { 0 };
            if fatal || self.wedged_rounds >= WEDGED_ROUNDS {
                match (self.new_producer)() {
                    Ok(p) => {
                        tracing::warn!(errors = ?failed.keys().collect::<Vec<_>>(), "replacing a wedged Kafka producer");
                        self.producer = p;
                        self.wedged_rounds = 0;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot create a new Kafka producer"),
                }
            }
        }
        report.published_kafka = published.len();

        // REST: one at a time, in order.
        let mut rest_published = Vec::new();
        if let Some(rest) = &self.rest {
            for p in &via_rest {
                let Some(url) = p.kind.and_then(|k| rest.endpoint(k)) else {
                    continue;
                };
                let cmd = p.command_id.clone().unwrap_or_default();
                match rest.deliver(&url, &cmd, &p.json, &p.headers).await {
                    RestOutcome::Delivered => rest_published.push(p.id),
                    RestOutcome::Transient(e) | RestOutcome::Rejected(e) => failed.entry(e).or_default().push(p.id),
                }
            }
        }
        report.published_rest = rest_published.len();

        table::mark_published(&self.db.pool, &published).await?;
        table::mark_published(&self.db.pool, &rest_published).await?;
        for (error, ids) in &failed {
            report.failed += ids.len();
            table::mark_failed(&self.db.pool, ids, error).await?;
        }
        if !failed.is_empty() {
            tracing::warn!(failed = report.failed, errors = ?failed.keys().collect::<Vec<_>>(), "some outbox rows were not delivered; retrying");
        }
        let m = &self.metrics;
        m.outbox_published_total
            .get_or_create(&TransportLabel { transport: "kafka".into() })
            .inc_by(published.len() as u64);
        m.outbox_published_total
            .get_or_create(&TransportLabel { transport: "rest".into() })
            .inc_by(rest_published.len() as u64);
        Ok(report)
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
            return Ok(Prepared {
                id: row.id,
                kind: None,
                topic: row.topic.clone(),
                key: if key.is_empty() { row.aggregate_id.clone().into_bytes() } else { key },
                value: decode("value_base64")?,
                headers,
                json: String::new(),
                command_id: None,
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
        Ok(Prepared {
            id: row.id,
            kind: Some(kind),
            topic: row.topic.clone(),
            key: row.aggregate_id.clone().into_bytes(),
            value,
            headers,
            json: row.payload.clone(),
            command_id,
            created_at: row.created_at,
        })
    }
}

enum PrepareError {
    Registry(String),
    Bad(String),
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
            Err(e) => tracing::warn!(error = %e, "outbox lease renewal failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}
