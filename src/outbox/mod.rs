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
//! * **Low latency.** Business transactions wake the relay after they
//!   commit, naming the shards they wrote ([`RelayWakeup`]); it reads at
//!   once (only those shards when it has nothing in flight). It also polls
//!   for rows other replicas wrote, asking the table first which shards have
//!   any when it has nothing in flight. A read skips held rows and their
//!   orders' later rows only while a hold may last (see `schedule`).
//! * **Outages.** While Kafka is down rounds fail, nothing is marked, and the
//!   relay backs off and retries; with `ORDER_SAGA_REST_MODE=fallback`
//!   commands go over REST after `ORDER_SAGA_REST_FALLBACK_AFTER`.

mod lease;
mod prepare;
pub mod rest;
mod schedule;
mod settle;

use std::collections::HashMap;

use std::sync::Arc;

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use tokio_util::sync::CancellationToken;

use tracing::Instrument;

use self::lease::lease_loop;
use self::prepare::{PrepareError, Prepared};
use self::rest::{RestOutcome, RestTransport};
use self::schedule::{Action, Schedule};
use self::settle::{Ack, AckError, Settled};

use crate::codec::Codec;

use crate::config::RestMode;

use crate::contracts::{Message, MessageKind};

use crate::kafka::producer::Producer;

use crate::store::outbox::{self as table, EVENT_TYPE_DEAD_LETTER, PendingRow, RelayWakeup};

use crate::store::{Db, StoreError, leases};

use crate::telemetry::metrics::{Metrics, TransportLabel};

use crate::telemetry::trace_context::TraceContext;

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
    pub wakeup: Arc<RelayWakeup>,
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

impl Relay {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        codec: Codec,
        new_producer: ProducerFactory,
        rest: Option<RestTransport>,
        settings: RelaySettings,
        wakeup: Arc<RelayWakeup>,
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
        let alive = lease::Liveness::new();
        let lease_task =
            tokio::spawn(lease_loop(self.db.clone(), self.settings.clone(), owned_tx, alive.clone(), shutdown.clone()));
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Ack>();
        let (settled_tx, mut settled_rx) = mpsc::unbounded_channel::<Settled>();
        let mut schedule: Schedule<Ack> =
            Schedule::new(self.settings.batch as usize, self.settings.poll_interval, Instant::now());
        'rounds: loop {
            alive.round();
            if shutdown.is_cancelled() {
                break;
            }
            while let Ok(a) = ack_rx.try_recv() {
                schedule.handle_ack(Instant::now(), a);
            }
            while let Ok(done) = settled_rx.try_recv() {
                self.settled(&mut schedule, done);
            }
            if schedule.listens_to_wakeups() {
                // Wake-ups that came during the last read: their shards are
                // read together with the full windows' shards, not only once
                // those run short.
                schedule.handle_wakeup(self.wakeup.take());
            }
            {
                let owned = owned_rx.borrow_and_update();
                schedule.handle_owned(&owned.0, owned.1);
            }
            while let Some(action) = schedule.poll(Instant::now()) {
                let probe = matches!(action, Action::Probe(_));
                match action {
                    Action::Settle(acks) => {
                        let (r, writes) = self.settle(acks);
                        schedule.handle_settle_decided(Instant::now(), r.published_kafka + r.published_rest, r.failed);
                        if !writes.held.is_empty() {
                            schedule.handle_holding(Instant::now(), hold_lasting(table::HOLD_MAX));
                        }
                        let (db, done, owner) = (self.db.clone(), settled_tx.clone(), self.settings.owner.clone());
                        tokio::spawn(async move {
                            let result =
                                crate::store::deadline("settling published rows", writes.write(&db, &owner)).await;
                            let _ = done.send(Settled { ids: writes.ids(), result });
                        });
                    }
                    Action::Release(shards) => {
                        let released = leases::release(&self.db, &self.settings.owner, &shards).await;
                        if let Err(e) = &released {
                            tracing::warn!(error = %e, "cannot release surplus outbox shards");
                        }
                        schedule.handle_released(Instant::now(), &shards, released.is_ok());
                    }
                    Action::Dispatch(shards) | Action::Probe(shards) => {
                        let read = tokio::time::timeout(
                            crate::store::deadline_duration(),
                            self.dispatch(&shards, probe, &mut schedule, &ack_tx),
                        );
                        let read = read
                            .await
                            .unwrap_or(Err(RelayError::Store(StoreError::Timeout { action: "reading the outbox" })));
                        if let Err(e) = &read {
                            self.metrics.outbox.outbox_publish_errors_total.inc();
                            tracing::warn!(error = %e, "outbox read or encode failed; backing off");
                        }
                        schedule.handle_dispatched(Instant::now(), read.map_err(|_| ()));
                        // Take in what arrived meanwhile before the next read.
                        continue 'rounds;
                    }
                }
            }
            self.metrics.outbox.outbox_shards_owned.set(schedule.readable().len() as i64);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                a = ack_rx.recv() => if let Some(a) = a { schedule.handle_ack(Instant::now(), a) },
                d = settled_rx.recv() => if let Some(done) = d { self.settled(&mut schedule, done) },
                _ = self.wakeup.notified(), if schedule.listens_to_wakeups() => schedule.handle_wakeup(self.wakeup.take()),
                _ = owned_rx.changed() => {}
                _ = tokio::time::sleep_until(schedule.poll_timeout().into()) => {}
            }
        }
        // Let in-flight messages finish (briefly) so their rows are marked.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        // Settlement writes still running: let them finish (briefly).
        while schedule.settling() > 0 {
            match tokio::time::timeout_at(deadline, settled_rx.recv()).await {
                Ok(Some(done)) => self.settled(&mut schedule, done),
                _ => break,
            }
        }
        while schedule.awaiting_acks() {
            match tokio::time::timeout_at(deadline, ack_rx.recv()).await {
                Ok(Some(a)) => schedule.handle_ack(Instant::now(), a),
                _ => break,
            }
        }
        let (_, writes) = self.settle(schedule.take_acks());
        if let Err(e) = writes.write(&self.db, &self.settings.owner).await {
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

    /// Reads rows not yet in flight from `shards` (from those of them with
    /// pending rows, when `probe`) and sends them: commands over REST when
    /// that transport is on, everything else into the producer (acks arrive on
    /// `acks`). Returns the shards where more is probably waiting.
    async fn dispatch(
        &mut self,
        shards: &[u16],
        probe: bool,
        schedule: &mut Schedule<Ack>,
        acks: &mpsc::UnboundedSender<Ack>,
    ) -> Result<Vec<u16>, RelayError> {
        let t0 = Instant::now();
        let probed;
        let shards = if probe {
            probed = table::pending_shards(&self.db.pool, shards).await?;
            &probed[..]
        } else {
            shards
        };
        let t_probe = t0.elapsed();
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        if schedule.holds_unknown() {
            let remaining = table::held_for(&self.db.pool).await?;
            schedule.handle_holds_found(Instant::now(), remaining);
        }
        let skip_held = schedule.skips_held(Instant::now());
        let windows = schedule.windows(shards);
        let read = table::pending_ids(&self.db.pool, &self.settings.owner, &windows, skip_held).await?;
        let returned = read.len();
        let fresh = schedule.fresh(&windows, &read);
        let ids = fresh.ids;
        if ids.is_empty() {
            return Ok(fresh.more);
        }
        // Where a dispatch spends its time (debug log; BENCHMARKS.md "Profile").
        let t_ids = t0.elapsed();
        let rows = table::rows(&self.db.pool, &ids).await?;
        let t_rows = t0.elapsed();
        let mut prepared = Vec::with_capacity(rows.len());
        // Orders with a held row in this read: their later rows wait too.
        let mut held_orders: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut unknown_topics: Vec<String> = Vec::new();
        let mut not_ready: Vec<u64> = Vec::new();
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
                    not_ready.push(row.id);
                }
                Err(PrepareError::Bad(e)) => {
                    tracing::error!(outbox_id = row.id, order_id = %row.aggregate_id, error = %e,
                        "outbox row cannot be encoded; held with its order's later rows, retried with backoff");
                    self.metrics.outbox.outbox_publish_errors_total.inc();
                    schedule.handle_holding(Instant::now(), hold_lasting(table::HOLD_MAX));
                    table::hold(&self.db.pool, &self.settings.owner, &[row.id], &e).await?;
                    held_orders.insert(row.aggregate_id.as_str());
                }
            }
        }
        if !unknown_topics.is_empty() {
            // Set aside for a second, so that they leave the pending window:
            // a shard full of them must not starve its other rows.
            let why = format!("the partition count of {} is not known yet", unknown_topics.join(", "));
            schedule.handle_holding(Instant::now(), hold_lasting(table::DEFER));
            table::defer(&self.db.pool, &self.settings.owner, &not_ready, &why).await?;
            self.learn_partitions(unknown_topics);
        }
        let rest_now = match (self.settings.rest_mode, &self.rest) {
            (RestMode::Always, Some(_)) => true,
            (RestMode::Fallback, Some(_)) => {
                self.kafka_down_since.is_some_and(|t| t.elapsed() >= self.settings.rest_fallback_after)
            }
            _ => false,
        };
        let t_prepared = t0.elapsed();
        let (via_rest, via_kafka): (Vec<Prepared>, Vec<Prepared>) = prepared
            .into_iter()
            .partition(|p| rest_now && p.kind.and_then(|k| self.rest.as_ref().and_then(|r| r.endpoint(k))).is_some());

        for mut p in via_kafka {
            schedule.sent(p.id, p.shard);
            // A producer span, child of the span that wrote the row; the
            // message carries the producer span's context to the consumer.
            let span = tracing::info_span!(
                "outbox.publish",
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.destination.name = %p.topic,
                outbox.id = p.id,
            );
            let tracestate =
                p.headers.iter().find(|(k, _)| k == crate::contracts::headers::TRACESTATE).map(|(_, v)| v.clone());
            if let Some((_, v)) = p.headers.iter_mut().find(|(k, _)| k == crate::contracts::headers::TRACEPARENT) {
                if let Some(tc) = TraceContext::extract(v, tracestate.as_deref()) {
                    crate::telemetry::otel::set_remote_parent(&span, &tc);
                }
                if let Some(own) = crate::telemetry::otel::traceparent_of(&span) {
                    *v = own.to_string();
                }
            }
            let sent = self.producer.enqueue_to(&p.topic, p.partition, &p.key, &p.value, &p.headers).await;
            self.metrics
                .outbox
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
                schedule.sent(p.id, p.shard);
                let cmd = p.command_id.clone().unwrap_or_default();
                let result = match rest.deliver(&url, &cmd, &p.json, &p.headers).await {
                    RestOutcome::Delivered => Ok((0, 0)),
                    RestOutcome::Transient(e) => Err(AckError { message: e, fatal: false, permanent: false }),
                    RestOutcome::Rejected(e) => Err(AckError { message: e, fatal: false, permanent: true }),
                };
                let _ = acks.send(Ack { id: p.id, created_at: p.created_at, transport: Transport::Rest, result });
            }
        }
        tracing::debug!(
            rows = rows.len(),
            in_flight = schedule.in_flight(),
            shards = windows.len(),
            returned,
            skip_held,
            probe_us = probe.then_some(t_probe.as_micros() as u64),
            read_ids_us = t_ids.as_micros() as u64,
            read_rows_us = (t_rows - t_ids).as_micros() as u64,
            encode_us = (t_prepared - t_rows).as_micros() as u64,
            elapsed_us = t0.elapsed().as_micros() as u64,
            "outbox dispatch"
        );
        Ok(fresh.more)
    }
}

/// How long a hold written now may last, in this process's time: the hold
/// itself, counted by the database from when the write runs, which is within
/// the database deadline of now.
fn hold_lasting(hold: Duration) -> Duration {
    hold + crate::store::deadline_duration()
}
