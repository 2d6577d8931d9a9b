//! Prometheus metrics (prometheus-client). One registry, built in `app.rs`.
//! No order ids in labels: cardinality stays bounded by regions, states,
//! topics and partitions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabel {
    pub tenant_region: String,
}

/// Regions reported as label values by default (`ORDER_SAGA_METRIC_REGIONS`).
pub use crate::config::DEFAULT_METRIC_REGIONS as DEFAULT_REGIONS;
/// The label value of every region not configured: bounded cardinality,
/// whatever clients send.
pub const OTHER_REGION: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicRegionLabel {
    pub topic: String,
    pub tenant_region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabel {
    pub from_status: String,
    pub to_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub definition_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
    pub result: String,
}

/// Every metric of the daemon, one block per component, all in one
/// registry. Cheap to clone (all handles are `Arc`s inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub orders: OrderMetrics,
    pub sagas: SagaMetrics,
    pub consumer: ConsumerMetrics,
    pub outbox: OutboxMetrics,
    pub ops: OpsMetrics,
    /// Regions that are label values; others are reported as [`OTHER_REGION`].
    regions: std::sync::Arc<std::collections::BTreeSet<String>>,
}

/// The orders API.
#[derive(Clone, Debug)]
pub struct OrderMetrics {
    pub order_created_total: Family<RegionLabel, Counter>,
    pub order_status_transition_seconds: Family<TransitionLabel, Histogram>,
    pub order_create_requests_inflight: Gauge,
    /// Orders per group-commit transaction of `POST /orders`.
    pub order_group_commit_size: Histogram,
    /// Bearer tokens refused on the orders API, by reason.
    pub auth_failures_total: Family<ReasonLabel, Counter>,
    /// HTTP connections closed on arrival: ORDER_SAGA_HTTP_MAX_CONNECTIONS were open.
    pub http_connections_refused_total: Counter,
    /// TLS handshakes that failed or did not finish within the header-read timeout.
    pub http_tls_handshake_failures_total: Counter,
}

impl OrderMetrics {
    fn register(r: &mut Registry) -> OrderMetrics {
        let m = OrderMetrics {
            order_created_total: Family::default(),
            order_status_transition_seconds: Family::new_with_constructor(|| Histogram::new(dwell_buckets())),
            order_create_requests_inflight: Gauge::default(),
            order_group_commit_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            auth_failures_total: Family::default(),
            http_connections_refused_total: Counter::default(),
            http_tls_handshake_failures_total: Counter::default(),
        };
        r.register(
            "http_connections_refused",
            "HTTP connections closed on arrival because ORDER_SAGA_HTTP_MAX_CONNECTIONS were open",
            m.http_connections_refused_total.clone(),
        );
        r.register(
            "http_tls_handshake_failures",
            "TLS handshakes on the HTTP listener that failed or did not finish within the header-read timeout",
            m.http_tls_handshake_failures_total.clone(),
        );
        r.register(
            "auth_failures",
            "Bearer tokens refused on the orders API, by reason (missing, malformed, algorithm, unknown_key, invalid, no_subject)",
            m.auth_failures_total.clone(),
        );
        r.register("order_created", "Orders created, by tenant region", m.order_created_total.clone());
        r.register(
            "order_status_transition_seconds",
            "Time an order spent in its previous status when its status changed",
            m.order_status_transition_seconds.clone(),
        );
        r.register(
            "order_create_requests_inflight",
            "POST /orders requests being handled",
            m.order_create_requests_inflight.clone(),
        );
        r.register(
            "order_group_commit_size",
            "Orders committed together by one POST /orders transaction (group commit)",
            m.order_group_commit_size.clone(),
        );
        m
    }
}

/// Saga outcomes, states, timers and alerts.
#[derive(Clone, Debug)]
pub struct SagaMetrics {
    pub saga_events_total: Family<OutcomeLabel, Counter>,
    pub saga_inbox_duplicates_total: Counter,
    pub saga_dead_lettered_total: Family<ReasonLabel, Counter>,
    pub saga_alerts_total: Family<CodeLabel, Counter>,
    pub saga_state_dwell_seconds: Family<StateLabel, Histogram>,
    pub saga_instances: Family<StateLabel, Gauge>,
    pub saga_oldest_age_seconds: Family<StateLabel, Gauge>,
    pub saga_stuck: Family<StateLabel, Gauge>,
    pub saga_quarantined: Gauge,
    /// Sagas in flight per definition version (who is left on an old one).
    pub saga_in_flight_by_version: Family<VersionLabel, Gauge>,
    pub saga_timers_overdue: Gauge,
    pub saga_timers_fired_total: Counter,
    /// Replies that did not answer the command their step waits for.
    pub saga_stale_replies_total: Family<EventLabel, Counter>,
    /// Due timers held back until every partition that could still answer
    /// has been consumed past their due time (event time).
    pub saga_timers_deferred: Gauge,
    /// How far behind the due time of the oldest deferred timer the slowest
    /// partition holding it is consumed, in seconds.
    pub saga_timer_watermark_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Timers fired at the deferral bound although a partition still lagged.
    pub saga_timers_fired_past_bound_total: Counter,
}

impl SagaMetrics {
    fn register(r: &mut Registry) -> SagaMetrics {
        let m = SagaMetrics {
            saga_events_total: Family::default(),
            saga_inbox_duplicates_total: Counter::default(),
            saga_dead_lettered_total: Family::default(),
            saga_alerts_total: Family::default(),
            saga_state_dwell_seconds: Family::new_with_constructor(|| Histogram::new(dwell_buckets())),
            saga_instances: Family::default(),
            saga_oldest_age_seconds: Family::default(),
            saga_stuck: Family::default(),
            saga_quarantined: Gauge::default(),
            saga_in_flight_by_version: Family::default(),
            saga_timers_overdue: Gauge::default(),
            saga_timers_fired_total: Counter::default(),
            saga_stale_replies_total: Family::default(),
            saga_timers_deferred: Gauge::default(),
            saga_timer_watermark_lag_seconds: Gauge::default(),
            saga_timers_fired_past_bound_total: Counter::default(),
        };
        r.register(
            "saga_events",
            "Events offered to sagas, by outcome (applied, ignored, duplicate, parked, dead_lettered, stale, stale_reply)",
            m.saga_events_total.clone(),
        );
        r.register(
            "saga_inbox_duplicates",
            "Events dropped because their event_id was seen before",
            m.saga_inbox_duplicates_total.clone(),
        );
        r.register(
            "saga_dead_lettered",
            "Messages copied to the dead-letter topic, by reason",
            m.saga_dead_lettered_total.clone(),
        );
        r.register("saga_alerts", "Alerts raised by saga transitions, by code", m.saga_alerts_total.clone());
        r.register(
            "saga_state_dwell_seconds",
            "Time sagas spent in a state before leaving it",
            m.saga_state_dwell_seconds.clone(),
        );
        r.register("saga_instances", "Sagas per current state (refreshed periodically)", m.saga_instances.clone());
        r.register(
            "saga_oldest_age_seconds",
            "Age in state of the oldest saga per non-terminal state",
            m.saga_oldest_age_seconds.clone(),
        );
        r.register("saga_stuck", "Sagas that overstay their state's max_dwell, per state", m.saga_stuck.clone());
        r.register("saga_quarantined", "Quarantined sagas", m.saga_quarantined.clone());
        r.register(
            "saga_in_flight_by_version",
            "Sagas in flight (not terminal) per definition version, every loaded version included",
            m.saga_in_flight_by_version.clone(),
        );
        r.register(
            "saga_timers_overdue",
            "Timers due more than 30 seconds ago and not fired",
            m.saga_timers_overdue.clone(),
        );
        r.register("saga_timers_fired", "Timers fired", m.saga_timers_fired_total.clone());
        r.register(
            "saga_stale_replies",
            "Replies recorded without effect: they answer an older command than the one their step waits for",
            m.saga_stale_replies_total.clone(),
        );
        r.register(
            "saga_timers_deferred",
            "Due timers held back because a partition that could still answer them is not consumed past their due time",
            m.saga_timers_deferred.clone(),
        );
        r.register(
            "saga_timer_watermark_lag_seconds",
            "Due time of the oldest deferred timer minus the consumed watermark of the partition holding it",
            m.saga_timer_watermark_lag_seconds.clone(),
        );
        r.register(
            "saga_timers_fired_past_bound",
            "Timers fired at ORDER_SAGA_TIMER_MAX_DEFER although a partition had not been consumed past their due time",
            m.saga_timers_fired_past_bound_total.clone(),
        );
        m
    }
}

/// The saga consumer (batches, lag, partitions, retries).
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    pub consumer_batch_size: Histogram,
    /// Partitions' runs per consumer transaction (group commit).
    pub consumer_group_commit_runs: Histogram,
    /// Set through [`Metrics::set_consumer_lag`], which also keeps the sum
    /// the ops console shows.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    pub(crate) lag_by_partition: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<(String, String), i64>>>,
    pub consumer_partitions_assigned: Gauge,
    /// Partitions paused because their worker's queue is full (backpressure).
    pub consumer_partitions_paused: Gauge,
    /// Batch applications retried after a transient failure, by cause.
    pub consumer_retries_total: Family<ReasonLabel, Counter>,
    /// Batches split to find the event the database refused.
    pub consumer_batch_splits_total: Counter,
    /// Batches whose handler panicked; replayed one by one, the culprit dead-lettered.
    pub consumer_handler_panics_total: Counter,
}

impl ConsumerMetrics {
    fn register(r: &mut Registry) -> ConsumerMetrics {
        let m = ConsumerMetrics {
            consumer_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            consumer_group_commit_runs: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            consumer_lag: Family::default(),
            lag_by_partition: Default::default(),
            consumer_partitions_assigned: Gauge::default(),
            consumer_partitions_paused: Gauge::default(),
            consumer_retries_total: Family::default(),
            consumer_batch_splits_total: Counter::default(),
            consumer_handler_panics_total: Counter::default(),
        };
        r.register(
            "saga_consumer_batch_size",
            "Events applied per database transaction",
            m.consumer_batch_size.clone(),
        );
        r.register(
            "saga_consumer_group_commit_runs",
            "Partitions' runs of events committed together by one consumer transaction (group commit)",
            m.consumer_group_commit_runs.clone(),
        );
        r.register(
            "saga_consumer_lag",
            "Messages behind the partition end, per topic and partition",
            m.consumer_lag.clone(),
        );
        r.register(
            "saga_consumer_partitions_assigned",
            "Partitions this replica consumes",
            m.consumer_partitions_assigned.clone(),
        );
        r.register(
            "saga_consumer_partitions_paused",
            "Partitions paused because their worker is behind (backpressure; the member stays in the group)",
            m.consumer_partitions_paused.clone(),
        );
        r.register(
            "saga_consumer_retries",
            "Event batches retried after a transient failure, by cause (database, registry)",
            m.consumer_retries_total.clone(),
        );
        r.register(
            "saga_consumer_batch_splits",
            "Event batches split to isolate an event the database refused",
            m.consumer_batch_splits_total.clone(),
        );
        r.register(
            "saga_consumer_handler_panics",
            "Event batches whose handler panicked (replayed one message at a time; the culprit is dead-lettered)",
            m.consumer_handler_panics_total.clone(),
        );
        m
    }
}

/// The outbox relay.
#[derive(Clone, Debug)]
pub struct OutboxMetrics {
    pub outbox_backlog: Gauge,
    pub outbox_oldest_age_seconds: Gauge,
    pub outbox_published_total: Family<TransportLabel, Counter>,
    pub outbox_publish_lag_seconds: Histogram,
    pub outbox_publish_errors_total: Counter,
    /// Messages handed to the producer, by topic and region (bounded: the
    /// configured regions and `other`).
    pub outbox_published_messages_total: Family<TopicRegionLabel, Counter>,
    pub outbox_shards_owned: Gauge,
}

impl OutboxMetrics {
    fn register(r: &mut Registry) -> OutboxMetrics {
        let m = OutboxMetrics {
            outbox_backlog: Gauge::default(),
            outbox_oldest_age_seconds: Gauge::default(),
            outbox_published_total: Family::default(),
            outbox_publish_lag_seconds: Histogram::new(latency_buckets()),
            outbox_publish_errors_total: Counter::default(),
            outbox_published_messages_total: Family::default(),
            outbox_shards_owned: Gauge::default(),
        };
        r.register("outbox_backlog", "Outbox rows not yet published", m.outbox_backlog.clone());
        r.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row",
            m.outbox_oldest_age_seconds.clone(),
        );
        r.register(
            "outbox_published",
            "Outbox rows published, by transport (kafka, rest)",
            m.outbox_published_total.clone(),
        );
        r.register(
            "outbox_publish_lag_seconds",
            "Time from outbox commit to publish acknowledgement",
            m.outbox_publish_lag_seconds.clone(),
        );
        r.register("outbox_publish_errors", "Failed publish rounds", m.outbox_publish_errors_total.clone());
        r.register(
            "outbox_published_messages",
            "Messages sent to Kafka, by topic and tenant region (configured regions, others as `other`)",
            m.outbox_published_messages_total.clone(),
        );
        r.register("outbox_shards_owned", "Outbox shards this replica publishes", m.outbox_shards_owned.clone());
        m
    }
}

/// Operator actions.
#[derive(Clone, Debug)]
pub struct OpsMetrics {
    pub ops_actions_total: Family<ActionLabel, Counter>,
    /// Refused ops credentials: bearer tokens and console sign-ins.
    pub ops_auth_failures_total: Counter,
}

impl OpsMetrics {
    fn register(r: &mut Registry) -> OpsMetrics {
        let m = OpsMetrics { ops_actions_total: Family::default(), ops_auth_failures_total: Counter::default() };
        r.register("ops_actions", "Operator actions, by action and result", m.ops_actions_total.clone());
        r.register(
            "ops_auth_failures",
            "Refused ops credentials (bearer tokens, console sign-ins)",
            m.ops_auth_failures_total.clone(),
        );
        m
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

fn dwell_buckets() -> impl Iterator<Item = f64> {
    // 10 ms .. ~3 days
    exponential_buckets(0.01, 3.0, 17)
}

impl Metrics {
    /// Sets the regions that are label values (the rest are `other`).
    pub fn with_regions(mut self, regions: &[String]) -> Metrics {
        self.regions = std::sync::Arc::new(regions.iter().cloned().collect());
        self
    }

    /// The label of a client-supplied region: itself when configured, else `other`.
    pub fn region(&self, region: &str) -> RegionLabel {
        let r = if self.regions.contains(region) { region } else { OTHER_REGION };
        RegionLabel { tenant_region: r.to_owned() }
    }

    /// Records the lag of a partition this replica owns.
    pub fn set_consumer_lag(&self, label: &PartitionLabel, lag: i64) {
        self.consumer.consumer_lag.get_or_create(label).set(lag);
        self.consumer
            .lag_by_partition
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((label.topic.clone(), label.partition.clone()), lag);
    }

    /// Forgets the lag of a partition this replica no longer owns.
    pub fn remove_consumer_lag(&self, label: &PartitionLabel) {
        self.consumer.consumer_lag.remove(label);
        self.consumer
            .lag_by_partition
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(label.topic.clone(), label.partition.clone()));
    }

    /// The lag of each partition this replica owns: (topic, partition, messages).
    pub fn consumer_lag_by_partition(&self) -> Vec<(String, String, i64)> {
        let map = self.consumer.lag_by_partition.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|((t, p), lag)| (t.clone(), p.clone(), *lag)).collect()
    }

    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        Metrics {
            orders: OrderMetrics::register(registry),
            sagas: SagaMetrics::register(registry),
            consumer: ConsumerMetrics::register(registry),
            outbox: OutboxMetrics::register(registry),
            ops: OpsMetrics::register(registry),
            regions: std::sync::Arc::new(DEFAULT_REGIONS.split(',').map(str::to_owned).collect()),
        }
    }
}
