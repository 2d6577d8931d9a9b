//! Message contracts: the Avro-described events and commands this daemon
//! publishes and consumes.
//!
//! * [`types`] holds one Rust struct per `.avsc` file in `schemas/`.
//! * [`MessageKind`] names each message (the name is also the default topic).
//! * [`Message`] is a typed value of any kind; it converts to and from the JSON
//!   stored in the outbox and the Avro value published on Kafka.
//! * [`codec`] is the Confluent wire-format codec backed by the Schema Registry.
//!
//! **Invariant:** the message names and Avro record names are part of the public
//! contract with other services. Never rename one; add a `.v2` instead.

pub mod codec;
pub mod types;

use std::fmt;
use std::str::FromStr;

use apache_avro::AvroSchema;
use apache_avro::schema::Schema;

pub use types::*;

macro_rules! contracts {
    ($( $variant:ident => $name:literal, $file:literal, $dir:ident; )+) => {
        /// Every message kind, with its stable name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MessageKind { $( $variant, )+ }

        impl MessageKind {
            pub const ALL: &'static [MessageKind] = &[ $( MessageKind::$variant, )+ ];

            /// The stable message name, e.g. `order.created.v1`. Also the
            /// default topic name.
            pub const fn name(self) -> &'static str {
                match self { $( MessageKind::$variant => $name, )+ }
            }

            /// The `.avsc` file in `schemas/` that defines this message.
            pub const fn schema_file(self) -> &'static str {
                match self { $( MessageKind::$variant => $file, )+ }
            }

            /// Whether this daemon publishes (`Out`) or consumes (`In`) the message.
            pub const fn direction(self) -> Direction {
                match self { $( MessageKind::$variant => Direction::$dir, )+ }
            }

            /// The Avro schema derived from the Rust type.
            pub fn schema(self) -> Schema {
                match self { $( MessageKind::$variant => <$variant as AvroSchema>::get_schema(), )+ }
            }
        }

        /// A message of any kind.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Message { $( $variant($variant), )+ }

        impl Message {
            pub fn kind(&self) -> MessageKind {
                match self { $( Message::$variant(_) => MessageKind::$variant, )+ }
            }

            pub fn event_id(&self) -> &str {
                match self { $( Message::$variant(m) => &m.event_id, )+ }
            }

            pub fn order_id(&self) -> i64 {
                match self { $( Message::$variant(m) => m.order_id, )+ }
            }

            pub fn tenant_region(&self) -> &str {
                match self { $( Message::$variant(m) => &m.tenant_region, )+ }
            }

            /// The JSON form stored in `outbox.payload`: exactly the Avro
            /// record's fields, so a CDC pipeline can read it too.
            pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
                match self { $( Message::$variant(m) => serde_json::to_value(m), )+ }
            }

            pub fn from_json(kind: MessageKind, json: &serde_json::Value) -> Result<Message, serde_json::Error> {
                Ok(match kind { $( MessageKind::$variant => Message::$variant(<$variant as serde::Deserialize>::deserialize(json)?), )+ })
            }

            pub fn to_avro(&self) -> Result<apache_avro::types::Value, apache_avro::Error> {
                match self { $( Message::$variant(m) => apache_avro::to_value(m), )+ }
            }

            /// Converts a value already resolved to this kind's reader schema.
            pub fn from_avro(kind: MessageKind, value: &apache_avro::types::Value) -> Result<Message, apache_avro::Error> {
                Ok(match kind { $( MessageKind::$variant => Message::$variant(apache_avro::from_value::<$variant>(value)?), )+ })
            }
        }

        $( impl From<$variant> for Message { fn from(m: $variant) -> Message { Message::$variant(m) } } )+
    };
}

contracts! {
    OrderCreated => "order.created.v1", "order.created.v1.avsc", Out;
    OrderStatusChanged => "order.status.changed.v1", "order.status.changed.v1.avsc", Out;
    InventoryReserve => "inventory.reserve.v1", "inventory.reserve.v1.avsc", Out;
    InventoryRelease => "inventory.release.v1", "inventory.release.v1.avsc", Out;
    PaymentAuthorize => "payment.authorize.v1", "payment.authorize.v1.avsc", Out;
    PaymentVoid => "payment.void.v1", "payment.void.v1.avsc", Out;
    OrderItemBackordered => "order.item.backordered.v1", "order.item.backordered.v1.avsc", Out;
    OrderAttentionRequired => "order.attention.required.v1", "order.attention.required.v1.avsc", Out;
    InventoryReserved => "inventory.reserved.v1", "inventory.reserved.v1.avsc", In;
    InventoryReservationFailed => "inventory.reservation.failed.v1", "inventory.reservation.failed.v1.avsc", In;
    PaymentAuthorized => "payment.authorized.v1", "payment.authorized.v1.avsc", In;
    PaymentFailed => "payment.failed.v1", "payment.failed.v1.avsc", In;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Published by this daemon (through the outbox).
    Out,
    /// Consumed by this daemon (drives the saga).
    In,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message kind {0:?}")]
pub struct UnknownMessageKind(pub String);

impl FromStr for MessageKind {
    type Err = UnknownMessageKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageKind::ALL.iter().copied().find(|k| k.name() == s).ok_or_else(|| UnknownMessageKind(s.to_owned()))
    }
}

/// Namespace for the deterministic (v5) ids of the messages this daemon writes.
/// Do not change: ids derived from it are how retries and participants de-duplicate.
pub const EVENT_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f72_6465_722d_7361_6761_2d65_7665_6e74);

/// Deterministic event id for a fact named by `name` (e.g. `42:order.created.v1`):
/// the same fact always gets the same id, so a retried transaction cannot
/// publish one fact under two ids.
pub fn event_id(name: &str) -> String {
    uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// Kafka header names. Part of the wire contract: do not change.
pub mod headers {
    pub const EVENT_ID: &str = "event_id";
    pub const EVENT_TYPE: &str = "event_type";
    pub const TRACEPARENT: &str = "traceparent";
    /// Set on dead-lettered messages.
    pub const DLQ_ERROR: &str = "dlq_error";
    pub const DLQ_ERROR_KIND: &str = "dlq_error_kind";
    pub const DLQ_SOURCE_TOPIC: &str = "dlq_source_topic";
    pub const DLQ_SOURCE_PARTITION: &str = "dlq_source_partition";
    pub const DLQ_SOURCE_OFFSET: &str = "dlq_source_offset";
}

#[cfg(test)]
mod tests;
