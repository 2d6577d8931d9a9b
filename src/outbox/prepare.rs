//! Preparing an outbox row for the wire: its headers, its partition (pure
//! placement by region or key), and its bytes (Confluent Avro through the
//! codec, or the original bytes of a dead letter).

use base64::Engine as _;

use super::*;

/// A row ready to send.
pub(super) struct Prepared {
    pub(super) id: u64,
    pub(super) kind: Option<MessageKind>,
    pub(super) topic: String,
    pub(super) key: Vec<u8>,
    pub(super) value: Vec<u8>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) json: String,
    pub(super) command_id: Option<String>,
    pub(super) shard: u16,
    /// Explicit partition (regional placement), or the key's hash.
    pub(super) partition: Option<i32>,
    /// The metric label of the order's region.
    pub(super) region: String,
    pub(super) created_at: chrono::DateTime<chrono::Utc>,
}

impl Relay {
    /// Regional placement (see `partitioning`): the row's region and order.
    pub(super) fn place(
        &self,
        row: &PendingRow,
        audience: crate::partitioning::Audience,
    ) -> Result<(Option<i32>, String), PrepareError> {
        let region = row.tenant_region.as_deref();
        let order_id = row.aggregate_id.parse::<crate::domain::OrderId>().ok();
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
    pub(super) fn learn_partitions(&mut self, topics: Vec<String>) {
        if self.metadata_tried.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return;
        }
        self.metadata_tried = Some(Instant::now());
        let (producer, partitioner, wakeup) = (self.producer.clone(), self.partitioner.clone(), self.wakeup.clone());
        tokio::spawn(async move {
            match producer.partition_counts(topics).await {
                Ok(counts) if !counts.is_empty() => match partitioner.learn(counts) {
                    Ok(()) => wakeup.rows_committed_anywhere(),
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

    pub(super) async fn prepare(&self, row: &PendingRow) -> Result<Prepared, PrepareError> {
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

pub(super) enum PrepareError {
    Registry(String),
    Bad(String),
    /// The partition cannot be chosen yet (partition count unknown): the row waits.
    NotReady,
}
