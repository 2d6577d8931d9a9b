//! Contract tests: the Rust types agree with `schemas/*.avsc`, every schema
//! round-trips through the Confluent codec, and no change breaks BACKWARD
//! compatibility with the released version in `schemas/released/`.

use std::path::Path;

use apache_avro::schema::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde_json::Value;

use super::*;
use crate::codec::{Codec, avsc};

/// Schema JSON without documentation (docs may differ; structure may not).
fn structure(schema: &Schema) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("doc");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
    let mut v = serde_json::to_value(schema).unwrap();
    strip(&mut v);
    v
}

#[test]
fn every_schema_file_is_a_known_message_and_vice_versa() {
    let mut files: Vec<String> = std::fs::read_dir("schemas")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".avsc"))
        .collect();
    files.sort();
    let mut kinds: Vec<String> = MessageKind::ALL.iter().map(|k| k.schema_file()).collect();
    kinds.sort();
    assert_eq!(files, kinds);
    for k in MessageKind::ALL {
        assert_eq!(
            std::fs::read_to_string(Path::new("schemas").join(k.schema_file())).unwrap(),
            avsc(*k),
            "embedded copy of {k} is stale"
        );
    }
}

#[test]
fn rust_types_match_avsc_files() {
    for &kind in MessageKind::ALL {
        let file = Schema::parse_str(avsc(kind)).unwrap_or_else(|e| panic!("{}: {e}", kind.schema_file()));
        assert_eq!(structure(&kind.schema()), structure(&file), "{kind}: Rust type and {} differ", kind.schema_file());
    }
}

#[test]
fn every_message_carries_the_common_fields() {
    for &kind in MessageKind::ALL {
        let Schema::Record(r) = kind.schema() else { panic!("{kind} is not a record") };
        let names: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
        for required in ["event_id", "order_id", "occurred_at", "tenant_region"] {
            assert!(names.contains(&required), "{kind} lacks {required}");
        }
    }
}

#[test]
fn schemas_stay_backward_compatible_with_the_released_versions() {
    for &kind in MessageKind::ALL {
        let path = Path::new("schemas/released").join(kind.schema_file());
        let released = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!("{} has no released snapshot; copy it to schemas/released/ when releasing", kind.schema_file())
        });
        let old = Schema::parse_str(&released).unwrap();
        let new = Schema::parse_str(avsc(kind)).unwrap();
        // BACKWARD: a consumer with the new schema reads data written with the old one.
        if let Err(e) = SchemaCompatibility::can_read(&old, &new) {
            panic!("{} breaks BACKWARD compatibility with {}: {e}", kind.schema_file(), path.display());
        }
    }
}

#[test]
fn the_compatibility_check_catches_breaking_changes() {
    let old = Schema::parse_str(avsc(MessageKind::PaymentFailed)).unwrap();
    // A new required field without a default: old data cannot be read.
    let mut v: Value = serde_json::from_str(avsc(MessageKind::PaymentFailed)).unwrap();
    v["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "psp", "type": "string"}));
    let breaking = Schema::parse_str(&v.to_string()).unwrap();
    assert!(SchemaCompatibility::can_read(&old, &breaking).is_err());
    // The same field with a default is fine.
    v["fields"].as_array_mut().unwrap().last_mut().unwrap()["default"] = "unknown".into();
    let compatible = Schema::parse_str(&v.to_string()).unwrap();
    assert!(SchemaCompatibility::can_read(&old, &compatible).is_ok());
    // Changing a field's type breaks it too.
    let mut v: Value = serde_json::from_str(avsc(MessageKind::PaymentFailed)).unwrap();
    v["fields"][1]["type"] = "string".into();
    assert!(SchemaCompatibility::can_read(&old, &Schema::parse_str(&v.to_string()).unwrap()).is_err());
}

fn sample(kind: MessageKind) -> Message {
    let ts = TimestampMicros(1_764_000_000_123_456);
    let id = format!("ev-{}", kind.name());
    let r = "eu-west".to_string();
    match kind {
        MessageKind::OrderCreated => OrderCreated {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            customer_id: "c".into(),
            currency: "EUR".into(),
            total_amount: "39.98".into(),
            items: vec![OrderLine { sku: "A".into(), qty: 2, unit_price: "19.99".into() }],
        }
        .into(),
        MessageKind::OrderStatusChanged => OrderStatusChanged {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            from_status: "PENDING".into(),
            to_status: "CONFIRMED".into(),
            reason_code: Some("PAYMENT_AUTHORIZED".into()),
            actor: "saga".into(),
            order_version: 2,
        }
        .into(),
        MessageKind::InventoryReserve => InventoryReserve {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            command_id: "42:reserve_inventory:reserve:1".into(),
            items: vec![SkuQty { sku: "A".into(), qty: 2 }],
        }
        .into(),
        MessageKind::InventoryRelease => InventoryRelease {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            command_id: "42:reserve_inventory:release:1".into(),
            reason_code: "PAYMENT_FAILED".into(),
            items: vec![SkuQty { sku: "A".into(), qty: 2 }],
        }
        .into(),
        MessageKind::PaymentAuthorize => PaymentAuthorize {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            command_id: "c".into(),
            payment_intent_id: "pi-42-1".into(),
            customer_id: "c".into(),
            amount: "39.98".into(),
            currency: "EUR".into(),
        }
        .into(),
        MessageKind::PaymentVoid => PaymentVoid {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            command_id: "c".into(),
            payment_intent_id: "pi-42-1".into(),
            amount: "39.98".into(),
            currency: "EUR".into(),
            reason_code: "PAYMENT_TIMEOUT".into(),
        }
        .into(),
        MessageKind::OrderItemBackordered => OrderItemBackordered {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            sku: "A".into(),
            requested_qty: 2,
            available_qty: 1,
        }
        .into(),
        MessageKind::OrderAttentionRequired => OrderAttentionRequired {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            reason_code: "RESERVATION_FAILED".into(),
            saga_state: "PENDING_REVIEW".into(),
            message: "m".into(),
        }
        .into(),
        MessageKind::InventoryReserved => {
            InventoryReserved { event_id: id, order_id: 42, occurred_at: ts, tenant_region: r, command_id: None }.into()
        }
        MessageKind::InventoryReservationFailed => InventoryReservationFailed {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            command_id: Some("x".into()),
            reason: "OUT_OF_STOCK".into(),
            shortages: vec![Shortage { sku: "A".into(), requested_qty: 2, available_qty: 0 }],
        }
        .into(),
        MessageKind::PaymentAuthorized => PaymentAuthorized {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            payment_intent_id: "pi-42-1".into(),
            amount: "39.98".into(),
            currency: "EUR".into(),
        }
        .into(),
        MessageKind::PaymentFailed => PaymentFailed {
            event_id: id,
            order_id: 42,
            occurred_at: ts,
            tenant_region: r,
            payment_intent_id: "pi-42-1".into(),
            reason: "DECLINED".into(),
        }
        .into(),
    }
}

#[tokio::test]
async fn every_schema_round_trips_through_the_confluent_codec() {
    let (url, _registry) = crate::devtools::registry::spawn_local().await.unwrap();
    let codec = Codec::new(&url, std::time::Duration::from_secs(5)).unwrap();
    let mut ids = std::collections::HashSet::new();
    for &kind in MessageKind::ALL {
        let topic = format!("t.{}", kind.name());
        let id = codec.register(kind, &topic).await.unwrap();
        assert_eq!(codec.register(kind, &topic).await.unwrap(), id, "registration is idempotent");
        ids.insert(id);
        let msg = sample(kind);
        let bytes = codec.encode(&msg, &topic).await.unwrap();
        assert_eq!(bytes[0], 0, "Confluent magic byte");
        assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), id, "schema id prefix");
        assert_eq!(codec.decode(kind, Some(&bytes)).await.unwrap(), msg, "{kind} round trip");
        // The JSON form stored in the outbox round-trips too.
        assert_eq!(Message::from_json(kind, &msg.to_json().unwrap()).unwrap(), msg);
        assert!(codec.verify_readable(kind, &topic).await.unwrap());
    }
    assert_eq!(ids.len(), MessageKind::ALL.len(), "distinct schemas get distinct global ids");
}

#[tokio::test]
async fn decoding_rejects_garbage_and_unknown_schema_ids_as_poison() {
    let (url, _registry) = crate::devtools::registry::spawn_local().await.unwrap();
    let codec = Codec::new(&url, std::time::Duration::from_secs(5)).unwrap();
    for bad in [&b"not avro"[..], &[0, 0, 0, 0, 99, 1, 2][..], &[][..]] {
        let e = codec.decode(MessageKind::PaymentFailed, Some(bad)).await.unwrap_err();
        assert!(!e.is_retriable(), "{e}");
    }
    assert!(!codec.decode(MessageKind::PaymentFailed, None).await.unwrap_err().is_retriable());
    // A payload of another message kind does not resolve to this one.
    codec.register(MessageKind::OrderItemBackordered, "x").await.unwrap();
    let other = codec.encode(&sample(MessageKind::OrderItemBackordered), "x").await.unwrap();
    assert!(!codec.decode(MessageKind::PaymentFailed, Some(&other)).await.unwrap_err().is_retriable());
}

#[tokio::test]
async fn an_unreachable_registry_is_retriable_not_poison() {
    let codec = Codec::new("http://127.0.0.1:9", std::time::Duration::from_secs(1)).unwrap();
    let e = codec.decode(MessageKind::PaymentFailed, Some(&[0, 0, 0, 0, 1, 2])).await.unwrap_err();
    assert!(e.is_retriable(), "{e}");
}

#[tokio::test]
async fn a_participant_adding_a_field_with_a_default_does_not_break_us() {
    let (url, _registry) = crate::devtools::registry::spawn_local().await.unwrap();
    let codec = Codec::new(&url, std::time::Duration::from_secs(5)).unwrap();
    let mut v: Value = serde_json::from_str(avsc(MessageKind::PaymentFailed)).unwrap();
    v["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "psp", "type": "string", "default": "x"}));
    let newer = Schema::parse_str(&v.to_string()).unwrap();
    // The participant registers v2 (BACKWARD compatible) and writes with it.
    codec.register(MessageKind::PaymentFailed, "pf").await.unwrap();
    let client = reqwest::Client::new();
    let resp: Value = client
        .post(format!("{url}/subjects/pf-value/versions"))
        .json(&serde_json::json!({"schema": v.to_string()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = resp["id"].as_u64().unwrap() as u32;
    let Message::PaymentFailed(pf) = sample(MessageKind::PaymentFailed) else { unreachable!() };
    let mut value = apache_avro::to_value(&pf).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.push(("psp".into(), apache_avro::types::Value::String("adyen".into())));
    }
    let value = value.resolve(&newer).unwrap();
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend(
        apache_avro::writer::datum::GenericDatumWriter::builder(&newer)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap(),
    );
    assert_eq!(codec.decode(MessageKind::PaymentFailed, Some(&bytes)).await.unwrap(), Message::PaymentFailed(pf));
    assert!(codec.verify_readable(MessageKind::PaymentFailed, "pf").await.unwrap());
    // An incompatible v3 is refused by the registry (409).
    let mut bad: Value = serde_json::from_str(avsc(MessageKind::PaymentFailed)).unwrap();
    bad["fields"][1]["type"] = "string".into();
    let status = client
        .post(format!("{url}/subjects/pf-value/versions"))
        .json(&serde_json::json!({"schema": bad.to_string()}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 409);
}

#[test]
fn asyncapi_file_is_current() {
    let want = super::asyncapi::document();
    if std::env::var_os("ORDER_SAGA_BLESS").is_some() {
        std::fs::write("schemas/asyncapi.json", serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string("schemas/asyncapi.json").unwrap()).unwrap();
    assert!(doc == want, "schemas/asyncapi.json is stale: run scripts/dev asyncapi");
    assert_eq!(doc["asyncapi"], "3.0.0");
    for &kind in MessageKind::ALL {
        let channel = &doc["channels"][kind.name().replace('.', "_")];
        assert_eq!(channel["address"], kind.name(), "{kind} has no channel");
        let verb = if kind.direction() == Direction::Out { "send" } else { "receive" };
        assert!(
            doc["operations"].get(format!("{verb}_{}", kind.name().replace('.', "_"))).is_some(),
            "{kind}: no {verb} operation"
        );
        let Schema::Record(r) = kind.schema() else { unreachable!() };
        let msg = &doc["components"]["messages"][r.name.name()];
        assert_eq!(msg["payload"]["schema"]["$ref"], format!("./{}", kind.schema_file()));
    }
}

/// The vocabulary's own rules: command ids and REST endpoints are unique per
/// kind, and an event that may only be emitted on a message names a reply.
#[test]
fn the_vocabulary_is_consistent() {
    let commands: Vec<(MessageKind, Command)> =
        MessageKind::ALL.iter().filter_map(|&k| Some((k, k.command()?))).collect();
    for (i, (k, c)) in commands.iter().enumerate() {
        for (k2, c2) in &commands[i + 1..] {
            assert_ne!(c.action, c2.action, "{k} and {k2} share the action verb");
            assert!(
                (c.participant, c.rest_path) != (c2.participant, c2.rest_path),
                "{k} and {k2} share a REST endpoint"
            );
        }
        assert!(c.rest_path.starts_with('/'), "{k}: REST path must start with /");
    }
    for &k in MessageKind::ALL {
        if let Role::Event { emit: Emit::On(on) } = k.role() {
            assert_eq!(on.role(), Role::Reply, "{k} may only be emitted on a reply, not on {on}");
        }
        assert_eq!(k.name().parse::<MessageKind>().unwrap(), k);
    }
}
