//! The idempotent producer used by the outbox relay (and the simulator).
//!
//! `enable.idempotence=true` (which implies `acks=all` and bounded in-flight
//! requests) keeps the order of messages per partition across retries, so the
//! relay can pipeline a whole batch and still publish each order's messages in
//! outbox order. It does not remove duplicates from a relay that crashes
//! between the broker's ack and marking the rows published: consumers
//! de-duplicate on `event_id`.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

use super::{ClientSettings, headers_from, ms};

#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<super::KafkaLog>,
}

/// Why a message was not delivered, with librdkafka's error code when there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub message: String,
    pub code: Option<RDKafkaErrorCode>,
}

impl DeliveryError {
    fn of(e: &KafkaError) -> DeliveryError {
        DeliveryError { message: e.to_string(), code: e.rdkafka_error_code() }
    }

    fn local(message: impl Into<String>) -> DeliveryError {
        DeliveryError { message: message.into(), code: None }
    }

    /// The idempotent producer is dead (librdkafka's `Fatal`): only a new
    /// producer (a new producer id) can deliver again.
    pub fn is_fatal(&self) -> bool {
        self.code == Some(RDKafkaErrorCode::Fatal)
    }

    /// This message can never be delivered as it is (too large, or refused as
    /// invalid by the broker): sending it again will fail again.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.code,
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::MessageBatchTooLarge
                    | RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::InvalidMessage
            )
        )
    }
}

/// How long the producer waits for more messages before sending a batch,
/// unless `linger.ms` is among the operator's Kafka properties. 0 answers
/// ~17 ms sooner at moderate load (each of a saga's four broker hops stops
/// waiting for a batch that never fills) but costs 25 % at p99 near
/// saturation, where smaller produce requests cost the broker more
/// (BENCHMARKS.md, "Producer linger"): the default keeps throughput.
pub const LINGER_MS_DEFAULT: &str = "5";

/// The producer's librdkafka configuration: the operator's properties, then
/// ours — tuning defaults where the operator set none, correctness settings
/// always.
fn config(settings: &ClientSettings, delivery_timeout: Duration) -> rdkafka::ClientConfig {
    let mut c = settings.client_config();
    // Latency against requests per message: a tuning default the operator
    // may override (ORDER_SAGA_KAFKA_PROPERTIES), unlike the settings below.
    if c.get("linger.ms").is_none() && c.get("queue.buffering.max.ms").is_none() {
        c.set("linger.ms", LINGER_MS_DEFAULT);
    }
    c.set("message.timeout.ms", ms(delivery_timeout));
    // Java-compatible partitioning: the same key lands in the same
    // partition whichever client produced it.
    c.set("partitioner", "murmur2_random");
    // Correctness: not overridable.
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    // A message that fails while later ones of its partition succeed
    // would break per-order order on the wire: make that a fatal error
    // instead (the relay then starts a new producer and re-sends in order).
    c.set("enable.gapless.guarantee", "true");
    c
}

impl Producer {
    pub fn new(settings: &ClientSettings, delivery_timeout: Duration) -> Result<Producer, super::KafkaError> {
        let inner: FutureProducer<super::KafkaLog> = config(settings, delivery_timeout)
            .create_with_context(super::KafkaLog)
            .map_err(|source| super::KafkaError::Create { what: "producer", source })?;
        Ok(Producer { inner })
    }

    /// The partition count of each topic, from the cluster's metadata
    /// (topics the broker does not know are left out).
    pub async fn partition_counts(&self, topics: Vec<String>) -> Result<HashMap<String, i32>, DeliveryError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = HashMap::new();
            for t in topics {
                let md = inner
                    .client()
                    .fetch_metadata(Some(&t), Duration::from_secs(5))
                    .map_err(|e| DeliveryError::of(&e))?;
                if let Some(x) = md.topics().iter().find(|x| x.name() == t)
                    && !x.partitions().is_empty()
                {
                    out.insert(t, x.partitions().len() as i32);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| DeliveryError::local(e.to_string()))?
    }

    /// Enqueues a message in order and returns a future that resolves at the
    /// broker's acknowledgement. Waits (without blocking the thread) while the
    /// local queue is full.
    pub async fn enqueue(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &[(String, String)],
    ) -> Result<impl std::future::Future<Output = Result<(i32, i64), DeliveryError>> + Send + 'static, DeliveryError>
    {
        self.enqueue_to(topic, None, key, payload, headers).await
    }

    /// [`enqueue`](Self::enqueue) to an explicit partition (`None`: the
    /// producer hashes the key).
    pub async fn enqueue_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        headers: &[(String, String)],
    ) -> Result<impl std::future::Future<Output = Result<(i32, i64), DeliveryError>> + Send + 'static, DeliveryError>
    {
        let mut record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers_from(headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let fut = loop {
            match self.inner.send_result(record) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(DeliveryError::of(&e)),
            }
        };
        Ok(async move {
            match fut.await {
                Ok(Ok(d)) => Ok((d.partition, d.offset)),
                Ok(Err((e, _))) => Err(DeliveryError::of(&e)),
                Err(_) => Err(DeliveryError::local("the producer was dropped before the delivery report")),
            }
        })
    }

    /// Waits until every queued message is acknowledged or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), DeliveryError> {
        use rdkafka::producer::Producer as _;
        self.inner.flush(timeout).map_err(|e| DeliveryError::of(&e))
    }

    /// librdkafka's fatal error of this producer, if it has had one.
    pub fn fatal_error(&self) -> Option<String> {
        self.inner.client().fatal_error().map(|(code, reason)| format!("{code:?}: {reason}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(extra: &[(&str, &str)]) -> rdkafka::ClientConfig {
        let mut settings = ClientSettings::plaintext("127.0.0.1:9092");
        settings.extra = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        config(&settings, Duration::from_secs(30))
    }

    #[test]
    fn linger_is_a_default_the_operator_may_override() {
        assert_eq!(with(&[]).get("linger.ms"), Some(LINGER_MS_DEFAULT));
        assert_eq!(with(&[("linger.ms", "7")]).get("linger.ms"), Some("7"));
        // librdkafka's alias for the same setting counts as set.
        let alias = with(&[("queue.buffering.max.ms", "1")]);
        assert_eq!((alias.get("linger.ms"), alias.get("queue.buffering.max.ms")), (None, Some("1")));
    }

    #[test]
    fn correctness_settings_are_not_overridable() {
        let c = with(&[("enable.idempotence", "false"), ("acks", "1"), ("enable.gapless.guarantee", "false")]);
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.gapless.guarantee"), Some("true"));
    }
}
