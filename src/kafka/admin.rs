//! Topic creation (`order-saga topics create`, the dev environment and tests).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use super::{ClientSettings, KafkaError};

/// Creates `topics` (idempotent: existing topics are fine).
pub async fn create_topics(
    settings: &ClientSettings,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaError> {
    let admin: AdminClient<super::KafkaLog> = settings
        .client_config()
        .create_with_context(super::KafkaLog)
        .map_err(|source| KafkaError::Create { what: "admin client", source })?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new, &opts).await.map_err(|e| KafkaError::Admin(e.to_string()))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::Admin(format!("cannot create topic {topic}: {code}")));
            }
        }
    }
    Ok(())
}
