//! The codec against the registry stand-in with injected faults: nothing a
//! registry answers once is kept as an error.

use std::time::Duration;

use super::{Codec, CodecError};
use crate::contracts::{Message, MessageKind, PaymentAuthorized, PaymentVoid, TimestampMicros};
use crate::devtools::registry::{DevRegistry, spawn_local};

fn void() -> Message {
    PaymentVoid {
        event_id: "e-1".into(),
        order_id: 7,
        occurred_at: TimestampMicros(1_700_000_000_000_000),
        tenant_region: "eu".into(),
        command_id: "7:authorize_payment:void:1".into(),
        payment_intent_id: "pi-7-1".into(),
        amount: "22.50".into(),
        currency: "EUR".into(),
        reason_code: "PAYMENT_TIMEOUT".into(),
    }
    .into()
}

async fn registry() -> (String, DevRegistry) {
    spawn_local().await.expect("registry stand-in")
}

#[tokio::test]
async fn a_registry_error_on_the_first_encode_is_not_kept() {
    let (url, reg) = registry().await;
    let codec = Codec::new(&url, Duration::from_secs(5)).unwrap();
    for status in [504, 500, 429, 401, 403] {
        let topic = format!("void-{status}");
        reg.fail_next(&format!("POST /subjects/{topic}-value"), status, 1);
        let e = codec.encode(&void(), &topic).await.unwrap_err();
        assert!(matches!(e, CodecError::Unavailable(_)), "{status}: transient, not a bad row: {e}");
        let before = reg.requests(&format!("POST /subjects/{topic}-value"));
        codec.encode(&void(), &topic).await.unwrap_or_else(|e| panic!("{status}: the next try asks again: {e}"));
        assert_eq!(reg.requests(&format!("POST /subjects/{topic}-value")), before + 1, "{status}: asked the registry");
    }
}

#[tokio::test]
async fn successes_are_cached() {
    let (url, reg) = registry().await;
    let codec = Codec::new(&url, Duration::from_secs(5)).unwrap();
    let a = codec.encode(&void(), "v").await.unwrap();
    let b = codec.encode(&void(), "v").await.unwrap();
    assert_eq!(a, b);
    assert_eq!(reg.requests("POST /subjects/v-value"), 1, "one registry call for two encodes");
    codec.decode(MessageKind::PaymentVoid, Some(&a)).await.unwrap();
    codec.decode(MessageKind::PaymentVoid, Some(&a)).await.unwrap();
    assert_eq!(reg.requests("GET /schemas/ids/"), 1, "one registry call for two decodes");
}

#[tokio::test]
async fn without_auto_registration_encoding_looks_up_and_never_registers() {
    let (url, reg) = registry().await;
    let registering = Codec::new(&url, Duration::from_secs(5)).unwrap();
    let id = registering.register(MessageKind::PaymentVoid, "ro").await.unwrap();
    let codec = Codec::with_auto_register(&url, Duration::from_secs(5), false).unwrap();
    // A read-only registry refuses registrations.
    reg.fail_next("POST /subjects/ro-value/versions", 403, 100);
    let before = reg.requests("POST /subjects/ro-value/versions");
    let bytes = codec.encode(&void(), "ro").await.unwrap();
    assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), id);
    assert_eq!(reg.requests("POST /subjects/ro-value/versions"), before, "no registration attempt");
    // A schema nobody registered is a transient error (registering it lets the row go), not a bad row.
    let e = codec.encode(&void(), "unregistered").await.unwrap_err();
    assert!(e.is_retriable(), "{e}");
    assert_eq!(reg.requests("POST /subjects/unregistered-value/versions"), 0);
    registering.register(MessageKind::PaymentVoid, "unregistered").await.unwrap();
    codec.encode(&void(), "unregistered").await.unwrap();
}

#[tokio::test]
async fn a_schema_id_404_is_poison_once_not_for_good() {
    let (url, reg) = registry().await;
    let codec = Codec::new(&url, Duration::from_secs(5)).unwrap();
    let writer = Codec::new(&url, Duration::from_secs(5)).unwrap();
    let bytes = writer.encode(&void(), "v").await.unwrap();
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    reg.fail_next(&format!("GET /schemas/ids/{id}"), 404, 1);
    let e = codec.decode(MessageKind::PaymentVoid, Some(&bytes)).await.unwrap_err();
    assert!(matches!(e, CodecError::Invalid { .. }), "{e}");
    codec.decode(MessageKind::PaymentVoid, Some(&bytes)).await.expect("the id is asked for again");
    // A registry that fails on the id is transient, and not kept either.
    let other = Codec::new(&url, Duration::from_secs(5)).unwrap();
    reg.fail_next(&format!("GET /schemas/ids/{id}"), 503, 1);
    assert!(other.decode(MessageKind::PaymentVoid, Some(&bytes)).await.unwrap_err().is_retriable());
    other.decode(MessageKind::PaymentVoid, Some(&bytes)).await.unwrap();
}

#[tokio::test]
async fn another_record_with_a_superset_of_the_fields_is_poison() {
    let (url, _reg) = registry().await;
    let codec = Codec::new(&url, Duration::from_secs(5)).unwrap();
    // A payment.void record (its own schema id) on the authorized topic: every
    // field of payment.authorized is in it, so Avro resolution alone accepts it.
    let bytes = codec.encode(&void(), "payment.authorized.v1").await.unwrap();
    let e = codec.decode(MessageKind::PaymentAuthorized, Some(&bytes)).await.unwrap_err();
    assert!(matches!(&e, CodecError::Invalid { reason, .. } if reason.contains("PaymentVoid")), "{e}");
    // The real thing decodes.
    let ok: Message = PaymentAuthorized {
        event_id: "e-2".into(),
        order_id: 7,
        occurred_at: TimestampMicros(1_700_000_000_000_000),
        tenant_region: "eu".into(),
        payment_intent_id: "pi-7-1".into(),
        amount: "22.50".into(),
        currency: "EUR".into(),
    }
    .into();
    let bytes = codec.encode(&ok, "authorized-elsewhere").await.unwrap();
    assert_eq!(codec.decode(MessageKind::PaymentAuthorized, Some(&bytes)).await.unwrap(), ok);
}

#[tokio::test]
async fn registry_errors_never_carry_the_url_and_its_credentials() {
    let codec = Codec::new("http://svc:s3cret@127.0.0.1:9", Duration::from_secs(1)).unwrap();
    let e = codec.encode(&void(), "v").await.unwrap_err();
    assert!(e.is_retriable(), "{e}");
    assert!(!e.to_string().contains("s3cret"), "{e}");
}

/// A registry that requires credentials: the codec sends them on every call
/// (registration, then the encode's lookups), and never prints them.
#[tokio::test]
async fn a_secured_registry_gets_its_credentials_on_every_call() {
    let (url, reg) = registry().await;
    reg.require_basic_auth("sr-key", "sr-secret");
    let without = Codec::new(&url, Duration::from_secs(5)).unwrap();
    assert!(without.encode(&void(), "voids").await.is_err(), "401 without credentials");
    let access = super::RegistryAccess { basic: Some(("sr-key".into(), "sr-secret".into())), ca_pem: None };
    assert!(!format!("{access:?}").contains("sr-secret"), "{access:?}");
    let with = Codec::with_access(&url, Duration::from_secs(5), true, access).unwrap();
    let bytes = with.encode(&void(), "voids").await.unwrap();
    assert_eq!(with.decode(MessageKind::PaymentVoid, Some(&bytes)).await.unwrap(), void());
}
