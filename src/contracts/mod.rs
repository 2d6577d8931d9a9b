//! Message contracts: the Avro-described events and commands this daemon
//! publishes and consumes.
//!
//! * [`types`] holds one Rust struct per `.avsc` file in `schemas/`.
//! * [`MessageKind`] names each message (the name is also the default topic).
//! * [`Message`] is a typed value of any kind; it converts to and from the JSON
//!   stored in the outbox and the Avro value published on Kafka.
//! * [`asyncapi`] derives the AsyncAPI document from the vocabulary.
//!
//! Pure data: the Confluent wire-format codec that talks to the Schema
//! Registry is the top-level `codec` module, so the functional core can use these types
//! without importing anything that does I/O.
//!
//! **Invariant:** the message names and Avro record names are part of the public
//! contract with other services. Never rename one; add a `.v2` instead.

// Message kinds are matched exhaustively here: a new kind must be handled,
// never swallowed by a `_` arm (ARCHITECTURE.md, "Adding a participant message").
#![warn(clippy::wildcard_enum_match_arm)]

pub mod asyncapi;
pub mod types;

use std::fmt;
use std::str::FromStr;

use apache_avro::AvroSchema;
use apache_avro::schema::Schema;

pub use types::*;

macro_rules! contracts {
    ($( $variant:ident => $name:literal, $role:expr; )+) => {
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

            /// What the message is for: see [`Role`].
            pub const fn role(self) -> Role {
                match self { $( MessageKind::$variant => $role, )+ }
            }

            /// The `.avsc` text in `schemas/` that defines this message,
            /// embedded at compile time (`schemas/{name}.avsc`).
            pub const fn avsc(self) -> &'static str {
                match self { $( MessageKind::$variant => include_str!(concat!("../../schemas/", $name, ".avsc")), )+ }
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

            /// Reads a message of `kind` from JSON. Fields the kind does not
            /// have are ignored: the saga engine builds every command from one
            /// set of saga facts this way (see `saga::engine`).
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

// The message vocabulary: one line per message. Everything else — the schema
// file, topics and subjects, what the codec registers and verifies, which
// kinds a saga definition may run, compensate, emit or react to, the action
// verb in command ids, the REST endpoint, what the simulator subscribes to,
// and the AsyncAPI document — is derived from this table and the Rust type of
// the same name in `types.rs`. ARCHITECTURE.md: "Adding a participant message".
contracts! {
    OrderCreated => "order.created.v1", Role::Event { emit: Emit::Never };
    OrderStatusChanged => "order.status.changed.v1", Role::Event { emit: Emit::Never };
    InventoryReserve => "inventory.reserve.v1",
        Role::Command(Command { action: "reserve", participant: Participant::Inventory, rest_path: "/inventory/reserve" });
    InventoryRelease => "inventory.release.v1",
        Role::Compensation(Command { action: "release", participant: Participant::Inventory, rest_path: "/inventory/release" });
    PaymentAuthorize => "payment.authorize.v1",
        Role::Command(Command { action: "authorize", participant: Participant::Payment, rest_path: "/payments/intents" });
    PaymentVoid => "payment.void.v1",
        Role::Compensation(Command { action: "void", participant: Participant::Payment, rest_path: "/payments/intents/void" });
    OrderItemBackordered => "order.item.backordered.v1",
        Role::Event { emit: Emit::On(MessageKind::InventoryReservationFailed) };
    OrderAttentionRequired => "order.attention.required.v1", Role::Event { emit: Emit::Any };
    InventoryReserved => "inventory.reserved.v1", Role::Reply;
    InventoryReservationFailed => "inventory.reservation.failed.v1", Role::Reply;
    PaymentAuthorized => "payment.authorized.v1", Role::Reply;
    PaymentFailed => "payment.failed.v1", Role::Reply;
}

/// What a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A fact this daemon publishes. `emit` says whether a saga transition may
    /// publish it (`emit = [...]` in a definition); the others are written by
    /// the order shell itself.
    Event { emit: Emit },
    /// A command a saga step runs (`command = ...` in a definition).
    Command(Command),
    /// A command that undoes a step (`compensation = ...` in a definition).
    Compensation(Command),
    /// A participant's answer; consumed, it drives the saga (`on = ...`).
    Reply,
}

/// When a saga transition may emit an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Never: the order shell writes it.
    Never,
    /// On any transition.
    Any,
    /// Only on a transition taken on this message (its payload feeds the event).
    On(MessageKind),
}

/// A command (or compensation) sent to a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// The verb in command ids: `{order_id}:{step}:{action}:{n}`.
    pub action: &'static str,
    /// Who executes it (decides the REST base URL).
    pub participant: Participant,
    /// Path of the REST endpoint under the participant's base URL.
    pub rest_path: &'static str,
}

/// The services the saga sends commands to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Participant {
    Inventory,
    Payment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Published by this daemon (through the outbox).
    Out,
    /// Consumed by this daemon (drives the saga).
    In,
}

impl MessageKind {
    /// Whether this daemon publishes (`Out`) or consumes (`In`) the message.
    pub const fn direction(self) -> Direction {
        match self.role() {
            Role::Event { .. } | Role::Command(_) | Role::Compensation(_) => Direction::Out,
            Role::Reply => Direction::In,
        }
    }

    /// The `.avsc` file in `schemas/` that defines this message.
    pub fn schema_file(self) -> String {
        format!("{}.avsc", self.name())
    }

    /// The command this kind is, when it is a command or a compensation.
    pub const fn command(self) -> Option<Command> {
        match self.role() {
            Role::Command(c) | Role::Compensation(c) => Some(c),
            Role::Event { .. } | Role::Reply => None,
        }
    }

    /// Every kind with `role` matching `pred`, in declaration order.
    pub fn all_where(pred: impl Fn(Role) -> bool) -> impl Iterator<Item = MessageKind> {
        MessageKind::ALL.iter().copied().filter(move |k| pred(k.role()))
    }
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
    /// W3C `tracestate`, sent with `traceparent` when the caller had one.
    pub const TRACESTATE: &str = "tracestate";
    /// Set on dead-lettered messages.
    pub const DLQ_ERROR: &str = "dlq_error";
    pub const DLQ_ERROR_KIND: &str = "dlq_error_kind";
    pub const DLQ_SOURCE_TOPIC: &str = "dlq_source_topic";
    pub const DLQ_SOURCE_PARTITION: &str = "dlq_source_partition";
    pub const DLQ_SOURCE_OFFSET: &str = "dlq_source_offset";
}

#[cfg(test)]
mod tests;
