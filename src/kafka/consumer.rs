//! The saga consumer: one poll thread, one worker task per assigned partition.
//!
//! ```text
//!   poll thread (BaseConsumer)            worker task per partition (tokio)
//!   ─────────────────────────             ─────────────────────────────────
//!   poll → route by (topic,partition) ──▶ take up to batch_max queued messages
//!   rebalance callbacks run here          handler: decode + ONE db transaction
//!   revoke: stop workers, wait, commit    store_offset(last) — only after commit
//! ```
//!
//! * Offsets are stored (`enable.auto.offset.store=false`) only after the batch's
//!   database transaction committed, and librdkafka's auto-commit sends stored
//!   offsets to the broker. A crash anywhere before the offset store means
//!   redelivery, which the inbox turns into a no-op.
//! * A partition is processed by exactly one task, in order, so per-order
//!   ordering holds (the Kafka key is the order id).
//! * On revoke (rebalance) the revoked partitions' workers finish the batch
//!   they are in, store its offset, and stop; then the stored offsets are
//!   committed synchronously *before* the partitions are handed over.
//! * Backpressure: the poll thread never blocks on a worker. When a worker's
//!   queue is full, the message is held and its partition **paused**; the
//!   thread keeps polling (heartbeats, rebalances, other partitions, shutdown)
//!   and resumes the partition once the held messages fit. librdkafka resumes
//!   fetching right after the last message handed to us, so nothing is skipped.
//!   A database outage therefore stalls only the partitions that need it, never
//!   the member: it stays in the group and SIGTERM ends it within the grace.
//! * A handler that panics does not lose its batch: the worker replays the
//!   batch one message at a time, and the one message that panics alone is
//!   handed to [`BatchHandler::dead_letter`]; offsets are stored only for
//!   messages that were applied or dead-lettered.
//! * Shutdown: stop polling, let every worker finish its current batch (bounded
//!   by the grace period), commit, leave the group.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ClientSettings, KafkaError, ms};
use crate::telemetry::metrics::{Metrics, PartitionLabel};

/// The batch was not handled because the worker was told to stop; its offset
/// is not stored and the messages will be delivered again.
#[derive(Debug, Clone, Copy)]
pub struct Stopped;

/// Handles a batch of one partition's messages, in order, durably. It retries
/// transient failures itself (with backoff, never giving up while they are
/// transient) and returns `Ok` once **every** message of the batch was either
/// applied or dead-lettered, or `Err(Stopped)` if `stop` fired first.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle(
        &self,
        batch: &[OwnedMessage],
        stop: CancellationToken,
    ) -> impl Future<Output = Result<(), Stopped>> + Send;

    /// Dead-letters one message that could not be handled (`handle` panicked
    /// on it alone), so that its partition moves on. Retries transient
    /// failures like `handle`.
    fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: String,
        stop: CancellationToken,
    ) -> impl Future<Output = Result<(), Stopped>> + Send;
}

/// The text of a panic payload, for logs and dead-letter reasons.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub client: ClientSettings,
    pub group_id: String,
    pub topics: Vec<String>,
    pub session_timeout: Duration,
    pub fetch_wait_max: Duration,
    pub batch_max: usize,
    /// Messages queued per partition worker before the poll thread waits.
    pub queue_capacity: usize,
    /// How long a revoke or a shutdown waits for in-flight batches.
    pub drain_timeout: Duration,
}

type Tp = (String, i32);

struct Worker {
    tx: mpsc::Sender<OwnedMessage>,
    stop: CancellationToken,
    join: JoinHandle<()>,
}

/// Consumer context: owns the partition workers so that rebalance callbacks
/// (which run on the poll thread, inside `poll`) can stop them.
pub struct SagaContext {
    workers: Mutex<HashMap<Tp, Worker>>,
    /// Messages polled for a partition whose worker queue was full, in order;
    /// the partition is paused while this is non-empty.
    held: Mutex<HashMap<Tp, VecDeque<OwnedMessage>>>,
    rt: tokio::runtime::Handle,
    drain_timeout: Duration,
    metrics: Option<Metrics>,
    assigned: Mutex<HashSet<Tp>>,
    /// How far each partition has been applied here (after the commit).
    applied: Mutex<HashMap<Tp, Applied>>,
    /// The offset after the last message polled for each partition (handed
    /// to its worker or held): messages below it and at or above the applied
    /// offset are in flight.
    polled: Mutex<HashMap<Tp, i64>>,
    /// When each partition was assigned here.
    assigned_at: Mutex<HashMap<Tp, std::time::Instant>>,
}

/// How far a partition has been applied: the next offset to apply and the
/// newest Kafka timestamp (ms) among the applied messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub next_offset: i64,
    pub through_ms: Option<i64>,
}

impl SagaContext {
    fn take_workers(&self, which: impl Fn(&Tp) -> bool) -> Vec<(Tp, Worker)> {
        let mut map = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<Tp> = map.keys().filter(|k| which(k)).cloned().collect();
        keys.into_iter().filter_map(|k| map.remove(&k).map(|w| (k, w))).collect()
    }

    /// Tells workers to stop after their current batch and waits for them.
    fn stop_workers(&self, workers: Vec<(Tp, Worker)>) {
        if workers.is_empty() {
            return;
        }
        for (_, w) in &workers {
            w.stop.cancel();
        }
        let joins: Vec<JoinHandle<()>> = workers.into_iter().map(|(_, w)| w.join).collect();
        let drain = self.drain_timeout;
        let finished =
            self.rt.block_on(async move { tokio::time::timeout(drain, futures::future::join_all(joins)).await });
        if finished.is_err() {
            tracing::warn!(
                timeout_ms = drain.as_millis() as u64,
                "partition workers did not finish within the drain timeout"
            );
        }
    }
}

impl ClientContext for SagaContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        super::error_librdkafka(error, reason);
    }

    fn stats(&self, stats: Statistics) {
        let Some(m) = &self.metrics else { return };
        // Statistics list every partition of the subscribed topics, owned or
        // not: report lag only for the partitions this replica owns, so a sum
        // over replicas counts each partition once.
        let assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                let label = PartitionLabel { topic: topic.clone(), partition: partition.to_string() };
                if !assigned.contains(&(topic.clone(), *partition)) {
                    m.remove_consumer_lag(&label);
                    continue;
                }
                if *partition >= 0 && p.consumer_lag >= 0 {
                    m.set_consumer_lag(&label, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SagaContext {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked: HashSet<Tp> =
                    tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                tracing::info!(partitions = revoked.len(), "partitions revoked; draining their workers");
                let workers = self.take_workers(|k| revoked.contains(k));
                self.stop_workers(workers);
                // Held messages were never handled: the next owner reads them again.
                self.held.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| !revoked.contains(k));
                if let Some(m) = &self.metrics {
                    for (topic, partition) in &revoked {
                        m.remove_consumer_lag(&PartitionLabel {
                            topic: topic.clone(),
                            partition: partition.to_string(),
                        });
                    }
                }
                if base.assignment_lost() {
                    // Someone else owns them already: committing would fail or be wrong.
                    return;
                }
                commit_stored(base);
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && tpl.count() > 0
            && let Err(e) = base.resume(tpl)
        {
            // A partition we paused, lost and got back must not stay paused.
            tracing::debug!(error = %e, "resuming newly assigned partitions");
        }
        // Tracked from the callbacks: librdkafka applies (incremental)
        // assignments asynchronously, so `assignment()` lags here.
        let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut at = self.assigned_at.lock().unwrap_or_else(|p| p.into_inner());
                for e in tpl.elements() {
                    let tp = (e.topic().to_owned(), e.partition());
                    at.insert(tp.clone(), std::time::Instant::now());
                    assigned.insert(tp);
                }
            }
            Rebalance::Revoke(tpl) => {
                let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
                let mut polled = self.polled.lock().unwrap_or_else(|p| p.into_inner());
                for e in tpl.elements() {
                    let tp = (e.topic().to_owned(), e.partition());
                    assigned.remove(&tp);
                    applied.remove(&tp);
                    polled.remove(&tp);
                }
            }
            Rebalance::Error(_) => {}
        }
        if let Some(m) = &self.metrics {
            m.consumer.consumer_partitions_assigned.set(assigned.len() as i64);
            m.consumer.consumer_partitions_paused.set(self.held.lock().unwrap_or_else(|p| p.into_inner()).len() as i64);
        }
    }
}

fn commit_stored<C: ConsumerContext>(c: &BaseConsumer<C>) {
    match c.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            tracing::warn!(error = %e, "committing stored offsets failed; the next owner re-reads from the last commit")
        }
    }
}

/// The running consumer.
pub struct SagaConsumer {
    thread: std::thread::JoinHandle<Result<(), KafkaError>>,
    consumer: Arc<BaseConsumer<SagaContext>>,
    topics: Vec<String>,
}

impl SagaConsumer {
    /// Subscribes and starts the poll thread. Must be called inside a tokio runtime.
    pub fn start<H: BatchHandler>(
        settings: ConsumerSettings,
        handler: Arc<H>,
        metrics: Option<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<SagaConsumer, KafkaError> {
        let mut c = settings.client.client_config();
        c.set("partition.assignment.strategy", "cooperative-sticky");
        c.set("auto.offset.reset", "earliest");
        c.set("statistics.interval.ms", "5000");
        // User properties came first; these are what correctness depends on.
        c.set("group.id", &settings.group_id);
        c.set("enable.auto.commit", "true");
        c.set("auto.commit.interval.ms", "1000");
        c.set("enable.auto.offset.store", "false");
        c.set("enable.partition.eof", "false");
        c.set("session.timeout.ms", ms(settings.session_timeout));
        c.set("fetch.wait.max.ms", ms(settings.fetch_wait_max));
        let rt = tokio::runtime::Handle::current();
        let ctx = SagaContext {
            workers: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            rt: rt.clone(),
            drain_timeout: settings.drain_timeout,
            metrics,
            assigned: Mutex::new(HashSet::new()),
            applied: Mutex::new(HashMap::new()),
            polled: Mutex::new(HashMap::new()),
            assigned_at: Mutex::new(HashMap::new()),
        };
        let consumer: BaseConsumer<SagaContext> =
            c.create_with_context(ctx).map_err(|source| KafkaError::Create { what: "consumer", source })?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| KafkaError::Subscribe { topics: settings.topics.clone(), source })?;
        let consumer = Arc::new(consumer);
        let polled = consumer.clone();
        let topics = settings.topics.clone();
        let thread = std::thread::Builder::new()
            .name("saga-consumer".into())
            .spawn(move || {
                poll_loop(&polled, &settings, handler, &rt, &shutdown);
                Ok(())
            })
            .map_err(|e| KafkaError::Thread(e.to_string()))?;
        Ok(SagaConsumer { thread, consumer, topics })
    }

    /// A probe of how far this replica has applied its partitions (event time).
    pub fn watermark_probe(&self) -> WatermarkProbe {
        WatermarkProbe { consumer: self.consumer.clone(), topics: self.topics.clone() }
    }

    /// Waits for the poll thread to finish (after the shutdown token fired).
    pub async fn join(self) -> Result<(), KafkaError> {
        tokio::task::spawn_blocking(move || self.thread.join())
            .await
            .map_err(|e| KafkaError::Thread(e.to_string()))?
            .map_err(|_| KafkaError::Thread("the consumer thread panicked".into()))?
    }
}

fn poll_loop<H: BatchHandler>(
    consumer: &Arc<BaseConsumer<SagaContext>>,
    settings: &ConsumerSettings,
    handler: Arc<H>,
    rt: &tokio::runtime::Handle,
    shutdown: &CancellationToken,
) {
    let spawn = |tp: &Tp| spawn_worker(consumer, settings, &handler, rt, tp);
    // Chaos tests: a consumer that joins its group late (slow rebalance).
    crate::failpoint::pause("consumer.before_poll");
    while !shutdown.is_cancelled() {
        flush_held(consumer, &spawn);
        let msg = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error; librdkafka retries by itself");
                continue;
            }
            Some(Ok(m)) => m.detach(),
        };
        dispatch(consumer, &spawn, msg);
    }
    tracing::info!("consumer stopping: finishing in-flight batches");
    let ctx = consumer.context();
    let workers = ctx.take_workers(|_| true);
    ctx.stop_workers(workers);
    commit_stored(consumer.as_ref());
    consumer.unsubscribe();
    tracing::info!("consumer stopped; offsets committed");
}

/// Where a message goes: its partition's worker, or — when that worker's
/// queue is full, or messages of the partition are already held — the held
/// queue, with the partition paused. Never blocks.
fn dispatch(
    consumer: &BaseConsumer<SagaContext>,
    spawn: &impl Fn(&Tp) -> mpsc::Sender<OwnedMessage>,
    msg: OwnedMessage,
) {
    let ctx = consumer.context();
    let tp: Tp = (msg.topic().to_owned(), msg.partition());
    {
        // In flight from here until its offset is stored (the watermarks' rule).
        let mut polled = ctx.polled.lock().unwrap_or_else(|p| p.into_inner());
        match polled.get_mut(&tp) {
            Some(next) => *next = msg.offset() + 1,
            None => {
                polled.insert(tp.clone(), msg.offset() + 1);
            }
        }
    }
    let mut held = ctx.held.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(q) = held.get_mut(&tp) {
        // Paused meanwhile: keep the order, behind what is held already.
        q.push_back(msg);
        return;
    }
    if let Err(m) = deliver(consumer, spawn, &tp, msg) {
        held.insert(tp.clone(), VecDeque::from([m]));
        pause(consumer, &tp, true);
        if let Some(metrics) = &ctx.metrics {
            metrics.consumer.consumer_partitions_paused.set(held.len() as i64);
        }
    }
}

/// Queues `msg` for its partition's worker, starting one if the last one
/// stopped (its partition was revoked). Gives the message back when the
/// worker's queue is full.
fn deliver(
    consumer: &BaseConsumer<SagaContext>,
    spawn: &impl Fn(&Tp) -> mpsc::Sender<OwnedMessage>,
    tp: &Tp,
    mut msg: OwnedMessage,
) -> Result<(), OwnedMessage> {
    loop {
        match sender(consumer, spawn, tp).try_send(msg) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(m)) => return Err(m),
            Err(mpsc::error::TrySendError::Closed(m)) => {
                remove_worker(consumer, tp);
                msg = m;
            }
        }
    }
}

/// Hands held messages to their workers as room frees up; resumes a
/// partition once all of its held messages are queued.
fn flush_held(consumer: &BaseConsumer<SagaContext>, spawn: &impl Fn(&Tp) -> mpsc::Sender<OwnedMessage>) {
    let ctx = consumer.context();
    let mut held = ctx.held.lock().unwrap_or_else(|p| p.into_inner());
    if held.is_empty() {
        return;
    }
    let mut drained = Vec::new();
    for (tp, q) in held.iter_mut() {
        while let Some(m) = q.pop_front() {
            if let Err(m) = deliver(consumer, spawn, tp, m) {
                q.push_front(m);
                break;
            }
        }
        if q.is_empty() {
            drained.push(tp.clone());
        }
    }
    for tp in drained {
        held.remove(&tp);
        pause(consumer, &tp, false);
    }
    if let Some(metrics) = &ctx.metrics {
        metrics.consumer.consumer_partitions_paused.set(held.len() as i64);
    }
}

fn pause(consumer: &BaseConsumer<SagaContext>, tp: &Tp, paused: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.0, tp.1);
    let r = if paused { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
    tracing::debug!(topic = %tp.0, partition = tp.1, paused, "backpressure: partition paused or resumed");
    if let Err(e) = r {
        // Only fails for a partition no longer assigned: nothing to pause.
        tracing::debug!(error = %e, topic = %tp.0, partition = tp.1, paused, "pause/resume failed");
    }
}

fn sender(
    consumer: &BaseConsumer<SagaContext>,
    spawn: &impl Fn(&Tp) -> mpsc::Sender<OwnedMessage>,
    tp: &Tp,
) -> mpsc::Sender<OwnedMessage> {
    {
        let map = consumer.context().workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = map.get(tp)
            && !w.tx.is_closed()
        {
            return w.tx.clone();
        }
    }
    spawn(tp)
}

fn spawn_worker<H: BatchHandler>(
    consumer: &Arc<BaseConsumer<SagaContext>>,
    settings: &ConsumerSettings,
    handler: &Arc<H>,
    rt: &tokio::runtime::Handle,
    tp: &Tp,
) -> mpsc::Sender<OwnedMessage> {
    let mut map = consumer.context().workers.lock().unwrap_or_else(|p| p.into_inner());
    let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
    let stop = CancellationToken::new();
    let join = rt.spawn(worker(tp.clone(), rx, handler.clone(), consumer.clone(), stop.clone(), settings.batch_max));
    map.insert(tp.clone(), Worker { tx: tx.clone(), stop, join });
    tx
}

fn remove_worker(consumer: &BaseConsumer<SagaContext>, tp: &Tp) {
    let mut map = consumer.context().workers.lock().unwrap_or_else(|p| p.into_inner());
    map.remove(tp);
}

async fn worker<H: BatchHandler>(
    tp: Tp,
    mut rx: mpsc::Receiver<OwnedMessage>,
    handler: Arc<H>,
    consumer: Arc<BaseConsumer<SagaContext>>,
    stop: CancellationToken,
    batch_max: usize,
) {
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        let mut batch = Vec::with_capacity(batch_max);
        batch.push(first);
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let last = batch.last().map(|m| m.offset()).unwrap_or_default();
        let newest = batch.iter().filter_map(timestamp_ms).max();
        match AssertUnwindSafe(handler.handle(&batch, stop.clone())).catch_unwind().await {
            Ok(Ok(())) => store(&consumer, &tp, last, newest),
            Ok(Err(Stopped)) => break,
            Err(panic) => {
                let why = panic_message(panic.as_ref());
                tracing::error!(topic = %tp.0, partition = tp.1, first_offset = batch[0].offset(), panic = %why,
                    "the event handler panicked; replaying the batch one message at a time");
                if let Some(m) = &consumer.context().metrics {
                    m.consumer.consumer_handler_panics_total.inc();
                }
                if isolate(&tp, &batch, handler.as_ref(), &consumer, &stop).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// After a panic: each message alone; the one that panics alone is
/// dead-lettered. Every offset stored here was applied or dead-lettered.
async fn isolate<H: BatchHandler>(
    tp: &Tp,
    batch: &[OwnedMessage],
    handler: &H,
    consumer: &BaseConsumer<SagaContext>,
    stop: &CancellationToken,
) -> Result<(), Stopped> {
    for m in batch {
        match AssertUnwindSafe(handler.handle(std::slice::from_ref(m), stop.clone())).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(Stopped)) => return Err(Stopped),
            Err(panic) => {
                let reason = format!("the event handler panicked: {}", panic_message(panic.as_ref()));
                let mut attempt = 0u32;
                loop {
                    match AssertUnwindSafe(handler.dead_letter(m, reason.clone(), stop.clone())).catch_unwind().await {
                        Ok(Ok(())) => break,
                        Ok(Err(Stopped)) => return Err(Stopped),
                        Err(p) => {
                            // A bug in the dead-letter path itself: never store past the message.
                            tracing::error!(offset = m.offset(), panic = %panic_message(p.as_ref()), "dead-lettering panicked; retrying");
                            tokio::select! {
                                _ = stop.cancelled() => return Err(Stopped),
                                _ = tokio::time::sleep(Duration::from_millis((100u64 << attempt.min(6)).min(5_000))) => {}
                            }
                            attempt += 1;
                        }
                    }
                }
            }
        }
        store(consumer, tp, m.offset(), timestamp_ms(m));
    }
    Ok(())
}

/// A message's Kafka timestamp (create or log-append time), in ms.
fn timestamp_ms(m: &OwnedMessage) -> Option<i64> {
    m.timestamp().to_millis().filter(|&t| t >= 0)
}

/// Stores `offset` (librdkafka commits `offset + 1`) and notes how far the
/// partition is applied (`newest_ms`: the newest timestamp applied with it).
/// `ERR__STATE` means the partition was revoked meanwhile: benign, the inbox
/// absorbs the redelivery.
fn store(consumer: &BaseConsumer<SagaContext>, tp: &Tp, offset: i64, newest_ms: Option<i64>) {
    {
        let mut applied = consumer.context().applied.lock().unwrap_or_else(|p| p.into_inner());
        let a = applied.entry(tp.clone()).or_insert(Applied { next_offset: 0, through_ms: None });
        a.next_offset = a.next_offset.max(offset + 1);
        a.through_ms = a.through_ms.max(newest_ms);
    }
    let r: KafkaResult<()> = {
        let mut tpl = TopicPartitionList::new();
        match tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(offset + 1)) {
            Ok(()) => consumer.store_offsets(&tpl),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, topic = %tp.0, partition = tp.1, offset, "offset not stored (partition revoked?)");
    }
}

/// Reads how far this replica has applied each partition it owns, for the
/// event-time watermarks (the `event_time` module). Blocking: call it from a
/// blocking thread.
pub struct WatermarkProbe {
    consumer: Arc<BaseConsumer<SagaContext>>,
    topics: Vec<String>,
}

/// One partition's event-time watermark as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionWatermark {
    pub topic: String,
    pub partition: i32,
    /// Every message produced at or before this (ms since the epoch) is applied.
    pub through_ms: i64,
    pub next_offset: i64,
}

impl WatermarkProbe {
    /// The watermarks of the assigned partitions. `now_ms` is read *before*
    /// the end offsets are asked for, so a partition applied up to its end is
    /// current as of `now_ms`: whatever was produced before then is below the
    /// end offset. Broker calls that fail leave the timestamp rule alone.
    pub fn probe(&self, timeout: Duration) -> Vec<PartitionWatermark> {
        let ctx = self.consumer.context();
        let assigned: Vec<Tp> = ctx.assigned.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        if assigned.is_empty() {
            return Vec::new();
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &assigned {
            // Offset::End asks for the end (latest) offset.
            if let Err(e) = tpl.add_partition_offset(t, *p, Offset::End) {
                tracing::debug!(error = %e, "watermark probe: bad partition");
            }
        }
        let ends = offsets_of(self.consumer.offsets_for_times(tpl.clone(), timeout), "end offsets");
        let committed = offsets_of(self.consumer.committed_offsets(tpl, timeout), "committed offsets");
        let applied = ctx.applied.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let polled = ctx.polled.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let assigned_at = ctx.assigned_at.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assigned
            .into_iter()
            .filter_map(|tp| {
                let fetched = Fetched {
                    polled_next: polled.get(&tp).copied(),
                    settled: assigned_at.get(&tp).is_some_and(|t| t.elapsed() >= SETTLE_AFTER_ASSIGN),
                };
                let (through_ms, next_offset) = partition_watermark(
                    now_ms,
                    applied.get(&tp).copied(),
                    committed.get(&tp).copied(),
                    ends.get(&tp).copied(),
                    fetched,
                )?;
                Some(PartitionWatermark { topic: tp.0, partition: tp.1, through_ms, next_offset })
            })
            .collect()
    }

    /// Every partition of the subscribed topics (metadata), owned or not.
    pub fn partitions(&self, timeout: Duration) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for topic in &self.topics {
            match self.consumer.fetch_metadata(Some(topic), timeout) {
                Ok(md) => {
                    for t in md.topics().iter().filter(|t| t.name() == topic && t.error().is_none()) {
                        out.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
                    }
                }
                Err(e) => tracing::debug!(error = %e, %topic, "watermark probe: no metadata"),
            }
        }
        out
    }
}

fn offsets_of(r: KafkaResult<TopicPartitionList>, what: &str) -> HashMap<Tp, i64> {
    match r {
        Ok(tpl) => tpl
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) if e.error().is_ok() => Some(((e.topic().to_owned(), e.partition()), o)),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "watermark probe: {what} unavailable");
            HashMap::new()
        }
    }
}

/// How long after an assignment a partition must have been fetched before it
/// may be called caught up: its first fetch has returned by then, and what it
/// returned is in flight. On Apache Kafka the end offset alone decides; a
/// broker that under-reports end offsets (tansu 0.6.0 does, by a batch)
/// would otherwise make a fresh assignment look caught up.
pub const SETTLE_AFTER_ASSIGN: Duration = Duration::from_secs(2);

/// What the poll loop has fetched of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// The offset after the last message polled, if any.
    pub polled_next: Option<i64>,
    /// Assigned for at least [`SETTLE_AFTER_ASSIGN`].
    pub settled: bool,
}

/// A partition's watermark (pure): through the newest applied timestamp, and
/// through `now_ms` when everything up to the end offset is applied (by this
/// process, or committed by whoever owned it before), nothing polled is still
/// in flight, and the partition has been fetched since its assignment.
/// `None` when nothing is known yet.
pub fn partition_watermark(
    now_ms: i64,
    applied: Option<Applied>,
    committed: Option<i64>,
    end: Option<i64>,
    fetched: Fetched,
) -> Option<(i64, i64)> {
    let next = applied.map(|a| a.next_offset).max(committed);
    let in_flight = fetched.polled_next.is_some_and(|p| next.is_none_or(|n| p > n));
    let caught_up = fetched.settled
        && !in_flight
        && match (next, end) {
            (Some(n), Some(e)) => n >= e,
            // An empty partition (end 0) with nothing committed yet.
            (None, Some(0)) => true,
            _ => false,
        };
    let through = applied.and_then(|a| a.through_ms).max(caught_up.then_some(now_ms))?;
    Some((through, next.unwrap_or(0)))
}

#[cfg(test)]
mod watermark_tests {
    use super::{Applied, Fetched, partition_watermark};

    const IDLE: Fetched = Fetched { polled_next: Some(10), settled: true };
    const NEVER_POLLED: Fetched = Fetched { polled_next: None, settled: true };

    #[test]
    fn a_caught_up_partition_is_current_as_of_the_probe() {
        let a = Some(Applied { next_offset: 10, through_ms: Some(500) });
        assert_eq!(partition_watermark(9_000, a, Some(7), Some(10), IDLE), Some((9_000, 10)));
        // Caught up through what the previous owner committed, nothing applied here.
        assert_eq!(partition_watermark(9_000, None, Some(10), Some(10), NEVER_POLLED), Some((9_000, 10)));
        assert_eq!(partition_watermark(9_000, None, None, Some(0), NEVER_POLLED), Some((9_000, 0)), "empty");
    }

    #[test]
    fn a_lagging_partition_is_current_only_through_its_newest_applied_message() {
        let a = Some(Applied { next_offset: 10, through_ms: Some(500) });
        assert_eq!(partition_watermark(9_000, a, Some(10), Some(11), IDLE), Some((500, 10)));
        // The end offset could not be read: no claim beyond what was applied.
        assert_eq!(partition_watermark(9_000, a, None, None, IDLE), Some((500, 10)));
        // Nothing applied here and behind the end: nothing is known.
        assert_eq!(partition_watermark(9_000, None, Some(3), Some(10), NEVER_POLLED), None);
        assert_eq!(partition_watermark(9_000, None, None, None, NEVER_POLLED), None);
    }

    #[test]
    fn messages_in_flight_or_a_fresh_assignment_are_never_caught_up() {
        let a = Some(Applied { next_offset: 10, through_ms: Some(500) });
        // The broker says the end is 10, but 10..16 were polled and are being applied.
        let busy = Fetched { polled_next: Some(16), settled: true };
        assert_eq!(partition_watermark(9_000, a, None, Some(10), busy), Some((500, 10)));
        // Just assigned: its first fetch may not have come back yet.
        let fresh = Fetched { polled_next: None, settled: false };
        assert_eq!(partition_watermark(9_000, None, Some(10), Some(10), fresh), None);
    }
}
