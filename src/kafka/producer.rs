//! The idempotent producer used by the outbox relay (and the simulator).
//!
//! `enable.idempotence=true` (which implies `acks=all` and bounded in-flight
//! requests) keeps the order of messages per partition across retries, so the
//! relay can pipeline a whole batch and still publish each order's messages in
//! outbox order. It does not remove duplicates from a relay that crashes
//! between the broker's ack and marking the rows published: consumers
//! de-duplicate on `event_id`.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::{ClientSettings, headers_from, ms};

#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<super::KafkaLog>,
}

/// Why a message was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

impl Producer {
    pub fn new(settings: &ClientSettings, delivery_timeout: Duration) -> Result<Producer, super::KafkaError> {
        let mut c = settings.client_config();
        c.set("linger.ms", "5");
        c.set("message.timeout.ms", ms(delivery_timeout));
        // Java-compatible partitioning: the same key lands in the same
        // partition whichever client produced it.
        c.set("partitioner", "murmur2_random");
        // Correctness: not overridable.
        c.set("enable.idempotence", "true");
        c.set("acks", "all");
        let inner: FutureProducer<super::KafkaLog> = c
            .create_with_context(super::KafkaLog)
            .map_err(|source| super::KafkaError::Create { what: "producer", source })?;
        Ok(Producer { inner })
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
        let mut record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers_from(headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        let fut = loop {
            match self.inner.send_result(record) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(DeliveryError(e.to_string())),
            }
        };
        Ok(async move {
            match fut.await {
                Ok(Ok(d)) => Ok((d.partition, d.offset)),
                Ok(Err((e, _))) => Err(DeliveryError(e.to_string())),
                Err(_) => Err(DeliveryError("the producer was dropped before the delivery report".into())),
            }
        })
    }

    /// Waits until every queued message is acknowledged or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), DeliveryError> {
        use rdkafka::producer::Producer as _;
        self.inner.flush(timeout).map_err(|e| DeliveryError(e.to_string()))
    }
}
