//! The AsyncAPI 3.0 document (`schemas/asyncapi.json`), derived from the
//! message vocabulary and the embedded `.avsc` files.
//!
//! Pure: the test `contracts::tests::asyncapi_file_is_current` compares the
//! committed file with [`document`], and rewrites it when run with
//! `ORDER_SAGA_BLESS=1` (`scripts/dev asyncapi`), so the published contract
//! cannot drift from the code.

use serde_json::{Map, Value, json};

use super::{Direction, MessageKind, Participant, Role};

const EVENT_PARTITIONING: &str = "Partitioned by tenant region (ORDER_SAGA_PARTITIONING=tenant_region, the default): \
    a region listed in ORDER_SAGA_REGION_PARTITIONS (e.g. eu-west=0-3,us-east=4-7) owns that partition range, and an \
    order goes to first + order_id mod width of it; any other region goes to one partition chosen by FNV-1a-64 of the \
    region name over the partitions no region owns. All messages of one order share a partition. A regional consumer \
    assigns itself its region's partitions. With ORDER_SAGA_PARTITIONING=key the producer hashes the key.";

const COMMAND_PARTITIONING: &str = "Partitioned by the hash of the key (order id) by default \
    (ORDER_SAGA_COMMAND_PARTITIONING=key); tenant_region places them like the domain events.";

/// The AsyncAPI verb of a kind.
pub fn action(kind: MessageKind) -> &'static str {
    match kind.direction() {
        Direction::Out => "send",
        Direction::In => "receive",
    }
}

/// The channel id of a kind (`order.created.v1` → `order_created_v1`).
pub fn channel_id(kind: MessageKind) -> String {
    kind.name().replace('.', "_")
}

/// The whole document.
pub fn document() -> Value {
    let headers = json!({
        "type": "object",
        "required": ["event_id", "event_type"],
        "properties": {
            "event_id": {"type": "string", "description": "Unique id; consumers de-duplicate on it"},
            "event_type": {"type": "string", "description": "The message name"},
            "traceparent": {"type": "string", "description": "W3C trace context"},
        },
    });
    let (mut channels, mut operations, mut messages) = (Map::new(), Map::new(), Map::new());
    for &kind in MessageKind::ALL {
        let name = kind.name();
        // The embedded schema parses (tested); an unparsable one documents as empty.
        let avsc: Value = serde_json::from_str(kind.avsc()).unwrap_or(Value::Null);
        let record = avsc["name"].as_str().unwrap_or(name).to_owned();
        let mut summary = avsc["doc"].as_str().unwrap_or("").to_owned();
        if let Some(c) = kind.command() {
            let base = match c.participant {
                Participant::Inventory => "ORDER_SAGA_REST_INVENTORY_URL",
                Participant::Payment => "ORDER_SAGA_REST_PAYMENT_URL",
            };
            summary.push_str(&format!(
                " REST transport: POST ${base}{} with the JSON payload, Idempotency-Key = command_id.",
                c.rest_path
            ));
        }
        messages.insert(
            record.clone(),
            json!({
                "name": name,
                "title": record,
                "summary": summary,
                "contentType": "application/vnd.apache.avro+binary",
                "headers": headers,
                "payload": {
                    "schemaFormat": "application/vnd.apache.avro+json;version=1.9.0",
                    "schema": {"$ref": format!("./{}", kind.schema_file())},
                },
                "bindings": {"kafka": {
                    "key": {"type": "string", "description": "order_id as a decimal string"},
                    "schemaIdLocation": "payload",
                    "schemaIdPayloadEncoding": "confluent",
                    "bindingVersion": "0.5.0",
                }},
            }),
        );
        let placement = match kind.role() {
            Role::Reply => String::new(),
            Role::Event { .. } => format!(" {EVENT_PARTITIONING}"),
            Role::Command(_) | Role::Compensation(_) => format!(" {COMMAND_PARTITIONING}"),
        };
        let cid = channel_id(kind);
        channels.insert(
            cid.clone(),
            json!({
                "address": name,
                "description": format!(
                    "Topic {name} (ORDER_SAGA_KAFKA_TOPIC_PREFIX applies). Subject {name}-value.{placement}"
                ),
                "messages": {record.clone(): {"$ref": format!("#/components/messages/{record}")}},
            }),
        );
        operations.insert(
            format!("{}_{cid}", action(kind)),
            json!({
                "action": action(kind),
                "channel": {"$ref": format!("#/channels/{cid}")},
                "messages": [{"$ref": format!("#/channels/{cid}/messages/{record}")}],
            }),
        );
    }
    channels.insert(
        "dead_letters".into(),
        json!({
            "address": "order-saga.dlq",
            "description": "Poison messages, original key and bytes, with dlq_error, dlq_error_kind and dlq_source_* \
                headers. Placed like the domain events when the order's region is known, else by the key's hash.",
            "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        }),
    );
    operations.insert(
        "send_dead_letters".into(),
        json!({
            "action": "send",
            "channel": {"$ref": "#/channels/dead_letters"},
            "messages": [{"$ref": "#/channels/dead_letters/messages/DeadLetter"}],
        }),
    );
    messages.insert(
        "DeadLetter".into(),
        json!({
            "name": "dead_letter",
            "contentType": "application/octet-stream",
            "summary": "The original message, unchanged",
            "payload": {"type": "string", "format": "binary"},
        }),
    );
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "order-saga",
            "version": "1",
            "description": "Events and commands of the order saga. Kafka key = order id; Confluent Avro values. \
                Domain events are partitioned by tenant region (see each channel).",
        },
        "defaultContentType": "application/vnd.apache.avro+binary",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    })
}
