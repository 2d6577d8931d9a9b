//! `order-saga simulate`: plays the inventory and payment services over Kafka.
//!
//! **Development tooling.** It consumes the commands the saga sends and answers
//! with the events a real participant would, after configurable delays and
//! with configurable outcomes:
//!
//! * rates (`--reservation-failure-rate 0.1` …), random per order, and
//! * rules that make a single order's fate predictable in demos and tests:
//!   a SKU starting with `OOS-` is out of stock (reservation fails, with that SKU
//!   short); a customer id starting with `decline-` has the payment declined;
//!   one starting with `silent-` never gets a payment answer (the saga's timeout fires).
//!
//! Commands are de-duplicated by `command_id`, as a real participant must.

// Message kinds are matched exhaustively here: a new kind must be handled,
// never swallowed by a `_` arm (ARCHITECTURE.md, "Adding a participant message").
#![warn(clippy::wildcard_enum_match_arm)]

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset};
use tokio_util::sync::CancellationToken;

use crate::codec::Codec;
use crate::config::{Config, Topics};
use crate::contracts::*;
use crate::kafka::ClientSettings;
use crate::kafka::producer::Producer;

/// The simulator's consumer context: a partition assigned without a
/// committed offset starts at offset 0, not at what the broker calls its
/// earliest offset. tansu 0.6.0 (the development broker) sometimes reports a
/// partition's earliest offset past records it still serves (seen: 2 for a
/// partition holding offsets 0–5), and `auto.offset.reset=earliest` would then
/// skip those commands for good (RELIABILITY.md). Development tooling only:
/// the daemon's own consumer is left as it must be for Apache Kafka.
struct FromOffsetZero;

impl ClientContext for FromOffsetZero {}

impl ConsumerContext for FromOffsetZero {
    fn rebalance(&self, base: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            match base.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(committed) => {
                    for e in committed.elements() {
                        if e.offset() == Offset::Invalid {
                            let _ = tpl.set_partition_offset(e.topic(), e.partition(), Offset::Offset(0));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "simulator: committed offsets unknown; the broker's reset applies")
                }
            }
            if cooperative { base.incremental_assign(tpl) } else { base.assign(tpl) }
        } else if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
            if cooperative { base.incremental_unassign(tpl) } else { base.unassign() }
        } else {
            tracing::warn!(error = ?err, "simulator: rebalance error");
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "simulator: applying the assignment failed");
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&r) { Ok(r) } else { Err("a rate is between 0 and 1".into()) }
}

/// Simulator options.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Share of reservations that fail (one item short of stock).
    #[arg(long, default_value = "0", value_parser = rate)]
    pub reservation_failure_rate: f64,
    /// Share of payments that are declined.
    #[arg(long, default_value = "0", value_parser = rate)]
    pub payment_failure_rate: f64,
    /// Share of payments never answered (the saga's payment timeout fires).
    #[arg(long, default_value = "0", value_parser = rate)]
    pub payment_silence_rate: f64,
    /// Delay before the inventory answers.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub inventory_delay: Duration,
    /// Delay before the payment service answers.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub payment_delay: Duration,
    /// Share of answers sent twice (to watch the inbox de-duplicate).
    #[arg(long, default_value = "0", value_parser = rate)]
    pub duplicate_rate: f64,
    /// How long after the first copy a duplicate is sent: a delay makes it
    /// arrive after later events of the same order (a reordered delivery).
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub duplicate_delay: Duration,
    /// Consumer group of the simulator.
    #[arg(long, default_value = "order-saga-simulator")]
    pub group_id: String,
}

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct SimStats {
    pub reserves: AtomicU64,
    pub releases: AtomicU64,
    pub authorizations: AtomicU64,
    pub voids: AtomicU64,
    pub duplicates_dropped: AtomicU64,
    pub answers: AtomicU64,
}

pub struct Simulator {
    pub args: SimulateArgs,
    pub codec: Codec,
    pub topics: Topics,
    pub producer: Producer,
    pub stats: Arc<SimStats>,
    seen: Mutex<HashSet<String>>,
}

/// Runs the simulator until `shutdown` resolves (the composition root passes
/// the process's SIGTERM / Ctrl-C).
pub async fn run(
    cfg: &Config,
    args: SimulateArgs,
    shutdown_signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    let brokers = cfg.kafka_brokers()?;
    let codec = Codec::new(cfg.schema_registry_url()?, cfg.registry.schema_registry_timeout)?;
    let topics = cfg.topics()?;
    let client = ClientSettings::from_config(cfg, brokers);
    let sim = Arc::new(Simulator::new(args, codec, topics, &client)?);
    sim.register().await?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal.await;
        stop.cancel();
    });
    let stats = sim.stats.clone();
    let report = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
                tracing::info!(
                    reserves = stats.reserves.load(Ordering::Relaxed),
                    authorizations = stats.authorizations.load(Ordering::Relaxed),
                    releases = stats.releases.load(Ordering::Relaxed),
                    voids = stats.voids.load(Ordering::Relaxed),
                    answers = stats.answers.load(Ordering::Relaxed),
                    "simulator"
                );
            }
        }
    });
    sim.run(&client, shutdown).await?;
    report.abort();
    Ok(ExitCode::SUCCESS)
}

impl Simulator {
    pub fn new(args: SimulateArgs, codec: Codec, topics: Topics, client: &ClientSettings) -> anyhow::Result<Simulator> {
        let producer = Producer::new(client, Duration::from_secs(30))?;
        Ok(Simulator { args, codec, topics, producer, stats: Arc::default(), seen: Mutex::default() })
    }

    /// Registers the schemas of the events the participants publish.
    pub async fn register(&self) -> anyhow::Result<()> {
        for &k in MessageKind::ALL.iter().filter(|k| k.direction() == Direction::In) {
            self.codec.register(k, self.topics.of(k)).await.with_context(|| format!("registering {k}"))?;
        }
        Ok(())
    }

    /// Consumes commands until `shutdown`.
    pub async fn run(self: &Arc<Self>, client: &ClientSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut c = client.client_config();
        c.set("group.id", &self.args.group_id);
        c.set("auto.offset.reset", "earliest");
        c.set("enable.auto.commit", "true");
        c.set("fetch.wait.max.ms", "20");
        c.set("session.timeout.ms", "10000");
        let consumer: StreamConsumer<FromOffsetZero> =
            c.create_with_context(FromOffsetZero).context("creating the simulator consumer")?;
        // Every command and compensation of the vocabulary.
        let topics: Vec<&str> =
            MessageKind::ALL.iter().filter(|k| k.command().is_some()).map(|&k| self.topics.of(k)).collect();
        consumer.subscribe(&topics).context("subscribing the simulator")?;
        tracing::info!(?topics, "simulator playing inventory and payment");
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = consumer.recv() => m,
            };
            let msg = match msg {
                Ok(m) => m.detach(),
                Err(e) => {
                    tracing::warn!(error = %e, "simulator consume error");
                    continue;
                }
            };
            let Some(kind) = self.topics.kind_of(msg.topic()) else {
                continue;
            };
            // A registry that cannot be reached is waited out (bounded), as a
            // real participant would; a command that cannot be decoded is skipped.
            let mut attempt = 0u32;
            let decoded = loop {
                match self.codec.decode(kind, msg.payload()).await {
                    Ok(m) => break Some(m),
                    Err(e) if e.is_retriable() && attempt < 60 => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "simulator cannot reach the registry; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "simulator cannot decode a command");
                        break None;
                    }
                }
            };
            let Some(decoded) = decoded else { continue };
            // A participant continues the caller's trace.
            // W3C context as received: `traceparent` and, when present, `tracestate`.
            let trace: Vec<(String, String)> = [headers::TRACEPARENT, headers::TRACESTATE]
                .into_iter()
                .filter_map(|h| crate::kafka::header_str(msg.headers(), h).map(|v| (h.to_owned(), v)))
                .collect();
            let me = self.clone();
            tokio::spawn(async move { me.handle(decoded, trace).await });
        }
    }

    fn first_time(&self, command_id: &str) -> bool {
        let fresh = self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(command_id.to_owned());
        if !fresh {
            self.stats.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
        }
        fresh
    }

    async fn handle(&self, cmd: Message, trace: Vec<(String, String)>) {
        let now = TimestampMicros::from_datetime(chrono::Utc::now());
        let new_id = || uuid::Uuid::new_v4().to_string();
        match cmd {
            Message::InventoryReserve(c) => {
                if !self.first_time(&c.command_id) {
                    return;
                }
                self.stats.reserves.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(self.args.inventory_delay).await;
                let oos: Vec<&SkuQty> = c.items.iter().filter(|i| i.sku.starts_with("OOS-")).collect();
                let random_fail = rand::random::<f64>() < self.args.reservation_failure_rate;
                let answer = if !oos.is_empty() || random_fail {
                    let short: Vec<Shortage> = if oos.is_empty() {
                        c.items
                            .iter()
                            .take(1)
                            .map(|i| Shortage { sku: i.sku.clone(), requested_qty: i.qty, available_qty: i.qty - 1 })
                            .collect()
                    } else {
                        oos.iter()
                            .map(|i| Shortage { sku: i.sku.clone(), requested_qty: i.qty, available_qty: 0 })
                            .collect()
                    };
                    Message::from(InventoryReservationFailed {
                        event_id: new_id(),
                        order_id: c.order_id,
                        occurred_at: now,
                        tenant_region: c.tenant_region.clone(),
                        command_id: Some(c.command_id.clone()),
                        reason: "OUT_OF_STOCK".into(),
                        shortages: short,
                    })
                } else {
                    Message::from(InventoryReserved {
                        event_id: new_id(),
                        order_id: c.order_id,
                        occurred_at: now,
                        tenant_region: c.tenant_region.clone(),
                        command_id: Some(c.command_id.clone()),
                    })
                };
                self.answer(answer, &trace).await;
            }
            Message::PaymentAuthorize(c) => {
                if !self.first_time(&c.command_id) {
                    return;
                }
                self.stats.authorizations.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(self.args.payment_delay).await;
                let r: f64 = rand::random();
                if c.customer_id.starts_with("silent-") || r < self.args.payment_silence_rate {
                    return;
                }
                let declined = c.customer_id.starts_with("decline-")
                    || r < self.args.payment_silence_rate + self.args.payment_failure_rate;
                let answer = if declined {
                    Message::from(PaymentFailed {
                        event_id: new_id(),
                        order_id: c.order_id,
                        occurred_at: now,
                        tenant_region: c.tenant_region.clone(),
                        payment_intent_id: c.payment_intent_id.clone(),
                        reason: "DECLINED".into(),
                    })
                } else {
                    Message::from(PaymentAuthorized {
                        event_id: new_id(),
                        order_id: c.order_id,
                        occurred_at: now,
                        tenant_region: c.tenant_region.clone(),
                        payment_intent_id: c.payment_intent_id.clone(),
                        amount: c.amount.clone(),
                        currency: c.currency.clone(),
                    })
                };
                self.answer(answer, &trace).await;
            }
            Message::InventoryRelease(c) => {
                if self.first_time(&c.command_id) {
                    self.stats.releases.fetch_add(1, Ordering::Relaxed);
                }
            }
            Message::PaymentVoid(c) => {
                if self.first_time(&c.command_id) {
                    self.stats.voids.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Not commands: the simulator does not subscribe to them.
            Message::OrderCreated(_)
            | Message::OrderStatusChanged(_)
            | Message::OrderItemBackordered(_)
            | Message::OrderAttentionRequired(_)
            | Message::InventoryReserved(_)
            | Message::InventoryReservationFailed(_)
            | Message::PaymentAuthorized(_)
            | Message::PaymentFailed(_) => {}
        }
    }

    async fn answer(&self, msg: Message, trace: &[(String, String)]) {
        let copies = if rand::random::<f64>() < self.args.duplicate_rate { 2 } else { 1 };
        for copy in 0..copies {
            if copy > 0 && !self.args.duplicate_delay.is_zero() {
                tokio::time::sleep(self.args.duplicate_delay).await;
            }
            if let Err(e) = publish(&self.producer, &self.codec, &self.topics, &msg, trace).await {
                tracing::warn!(error = %e, "simulator could not publish an answer");
                return;
            }
        }
        self.stats.answers.fetch_add(1, Ordering::Relaxed);
    }
}

/// Encodes and publishes one message (key = order id, standard headers).
/// Used by the simulator and by tests that play participants. `trace`: the
/// W3C context headers to continue (`traceparent`, `tracestate`), if any.
pub async fn publish(
    producer: &Producer,
    codec: &Codec,
    topics: &Topics,
    msg: &Message,
    trace: &[(String, String)],
) -> anyhow::Result<()> {
    let topic = topics.of(msg.kind());
    let bytes = codec.encode(msg, topic).await?;
    let mut headers = vec![
        (headers::EVENT_ID.to_owned(), msg.event_id().to_owned()),
        (headers::EVENT_TYPE.to_owned(), msg.kind().name().to_owned()),
    ];
    headers.extend(trace.iter().cloned());
    let key = msg.order_id().to_string();
    producer
        .enqueue(topic, key.as_bytes(), &bytes, &headers)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
