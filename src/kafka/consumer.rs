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
//! * Backpressure: when a worker's queue is full the poll thread waits for it
//!   (one database transaction at most), and librdkafka's bounded local queue
//!   carries the backpressure to the fetcher.
//! * Shutdown: stop polling, let every worker finish its current batch (bounded
//!   by the grace period), commit, leave the group.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
/// transient failures itself and returns `Ok` once the batch is committed,
/// or `Err(Stopped)` if `stop` fired while it was waiting to retry.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle(
        &self,
        batch: Vec<OwnedMessage>,
        stop: CancellationToken,
    ) -> impl Future<Output = Result<(), Stopped>> + Send;
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
    rt: tokio::runtime::Handle,
    drain_timeout: Duration,
    metrics: Option<Metrics>,
    assigned: Mutex<HashSet<Tp>>,
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
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    m.consumer_lag
                        .get_or_create(&PartitionLabel { topic: topic.clone(), partition: partition.to_string() })
                        .set(p.consumer_lag);
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

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Tracked from the callbacks: librdkafka applies (incremental)
        // assignments asynchronously, so `assignment()` lags here.
        let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
        match rebalance {
            Rebalance::Assign(tpl) => {
                assigned.extend(tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())))
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    assigned.remove(&(e.topic().to_owned(), e.partition()));
                }
            }
            Rebalance::Error(_) => {}
        }
        if let Some(m) = &self.metrics {
            m.consumer_partitions_assigned.set(assigned.len() as i64);
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
            rt: rt.clone(),
            drain_timeout: settings.drain_timeout,
            metrics,
            assigned: Mutex::new(HashSet::new()),
        };
        let consumer: BaseConsumer<SagaContext> =
            c.create_with_context(ctx).map_err(|source| KafkaError::Create { what: "consumer", source })?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| KafkaError::Subscribe { topics: settings.topics.clone(), source })?;
        let consumer = Arc::new(consumer);
        let thread = std::thread::Builder::new()
            .name("saga-consumer".into())
            .spawn(move || {
                poll_loop(&consumer, &settings, handler, &rt, &shutdown);
                Ok(())
            })
            .map_err(|e| KafkaError::Thread(e.to_string()))?;
        Ok(SagaConsumer { thread })
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
    while !shutdown.is_cancelled() {
        let msg = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error; librdkafka retries by itself");
                continue;
            }
            Some(Ok(m)) => m.detach(),
        };
        let tp: Tp = (msg.topic().to_owned(), msg.partition());
        let mut msg = Some(msg);
        while let Some(m) = msg.take() {
            let tx = sender_for(consumer, settings, &handler, rt, &tp);
            // Blocks while the worker's queue is full: backpressure reaches
            // the broker through librdkafka's bounded local queue. A full
            // queue drains at the speed of one database transaction, far
            // below max.poll.interval.ms; pausing the partition instead
            // would re-fetch from the middle of a record batch, which
            // tansu 0.6.0 cannot serve.
            if let Err(mpsc::error::SendError(m)) = tx.blocking_send(m) {
                // The worker stopped (its partition was revoked): start a new one.
                remove_worker(consumer, &tp);
                msg = Some(m);
            }
        }
    }
    tracing::info!("consumer stopping: finishing in-flight batches");
    let ctx = consumer.context();
    let workers = ctx.take_workers(|_| true);
    ctx.stop_workers(workers);
    commit_stored(consumer.as_ref());
    consumer.unsubscribe();
    tracing::info!("consumer stopped; offsets committed");
}

fn sender_for<H: BatchHandler>(
    consumer: &Arc<BaseConsumer<SagaContext>>,
    settings: &ConsumerSettings,
    handler: &Arc<H>,
    rt: &tokio::runtime::Handle,
    tp: &Tp,
) -> mpsc::Sender<OwnedMessage> {
    let mut map = consumer.context().workers.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(w) = map.get(tp)
        && !w.tx.is_closed()
    {
        return w.tx.clone();
    }
    let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
    let stop = CancellationToken::new();
    let join = rt.spawn(worker(tp.clone(), rx, handler.clone(), consumer.clone(), stop.clone(), settings.batch_max));
    map.insert(tp.clone(), Worker { tx: tx.clone(), stop, join });
    tx
}

fn remove_worker(consumer: &Arc<BaseConsumer<SagaContext>>, tp: &Tp) {
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
        match handler.handle(batch, stop.clone()).await {
            Ok(()) => store(&consumer, &tp, last),
            Err(Stopped) => break,
        }
    }
}

/// Stores `offset` (librdkafka commits `offset + 1`). `ERR__STATE` means the
/// partition was revoked meanwhile: benign, the inbox absorbs the redelivery.
fn store(consumer: &BaseConsumer<SagaContext>, tp: &Tp, offset: i64) {
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
