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

/// `retention.ms` of each topic as the brokers report it (`-1` = forever).
/// `Err` when the brokers cannot describe topic configurations.
pub async fn retention_ms(
    settings: &ClientSettings,
    topics: &[&str],
) -> Result<Vec<(String, Option<i64>)>, KafkaError> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<super::KafkaLog> = settings
        .client_config()
        .create_with_context(super::KafkaLog)
        .map_err(|source| KafkaError::Create { what: "admin client", source })?;
    let specs: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin.describe_configs(&specs, &opts).await.map_err(|e| KafkaError::Admin(e.to_string()))?;
    let mut out = Vec::new();
    for r in results {
        let r = r.map_err(|code| KafkaError::Admin(format!("cannot describe a topic's configuration: {code}")))?;
        let topic = match &r.specifier {
            rdkafka::admin::OwnedResourceSpecifier::Topic(t) => t.clone(),
            _ => continue,
        };
        let retention = r.get("retention.ms").and_then(|e| e.value.as_deref()).and_then(|v| v.parse().ok());
        out.push((topic, retention));
    }
    Ok(out)
}

/// Whether the inbox outlives every redelivery: a message can be delivered
/// again as long as its topic keeps it (a consumer group whose offsets expired
/// starts over from the beginning). An event redelivered after the inbox
/// forgot it would be applied twice. Returns the offending topics.
pub fn unsafe_for_inbox(retention: &[(String, Option<i64>)], inbox: Duration) -> Vec<String> {
    let inbox_ms = i64::try_from(inbox.as_millis()).unwrap_or(i64::MAX);
    retention
        .iter()
        .filter_map(|(t, r)| match r {
            Some(ms) if *ms < 0 || *ms >= inbox_ms => {
                let kept = if *ms < 0 { "forever".to_owned() } else { format!("{} h", ms / 3_600_000) };
                Some(format!("{t} (retention.ms {ms}: kept {kept})"))
            }
            _ => None,
        })
        .collect()
}

/// The partition count of each topic, from the cluster's metadata (0 when a
/// topic does not exist).
pub async fn partition_counts(
    settings: &ClientSettings,
    topics: &[&str],
) -> Result<std::collections::HashMap<String, i32>, KafkaError> {
    let admin: AdminClient<super::KafkaLog> = settings
        .client_config()
        .create_with_context(super::KafkaLog)
        .map_err(|source| KafkaError::Create { what: "admin client", source })?;
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut out = std::collections::HashMap::new();
        for t in topics {
            let md = admin
                .inner()
                .fetch_metadata(Some(&t), Duration::from_secs(10))
                .map_err(|e| KafkaError::Admin(format!("cannot read the metadata of topic {t}: {e}")))?;
            let n = md.topics().iter().find(|x| x.name() == t).map_or(0, |x| x.partitions().len() as i32);
            out.insert(t, n);
        }
        Ok(out)
    })
    .await
    .map_err(|e| KafkaError::Thread(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_must_outlive_every_topic_retention() {
        let day = 86_400_000;
        let inbox = Duration::from_secs(8 * 86_400);
        let r = vec![
            ("a".to_owned(), Some(7 * day)),
            ("b".to_owned(), Some(8 * day)),
            ("c".to_owned(), Some(-1)),
            ("d".to_owned(), None),
        ];
        let bad = unsafe_for_inbox(&r, inbox);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("b ") && bad[1].starts_with("c ") && bad[1].contains("forever"), "{bad:?}");
    }
}
