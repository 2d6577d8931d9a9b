//! Rust mirrors of the Avro schemas in `schemas/`.
//!
//! The test `contracts::tests::rust_types_match_avsc_files` derives each type's
//! Avro schema and compares it with the `.avsc` file field by field, so the two
//! cannot drift apart. Every message carries `event_id`, `order_id`,
//! `occurred_at` and `tenant_region`.
//!
//! Money travels as a decimal string (`"59.97"`), never as a float.

use std::collections::HashSet;

use apache_avro::schema::{Name, NamespaceRef, Schema};
use apache_avro::{AvroSchema, AvroSchemaComponent};
use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, UTC (Avro `long` / `timestamp-micros`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimestampMicros(pub i64);

impl AvroSchemaComponent for TimestampMicros {
    fn get_schema_in_ctxt(_: &mut HashSet<Name>, _: NamespaceRef) -> Schema {
        Schema::TimestampMicros
    }
}

impl TimestampMicros {
    pub fn from_datetime(t: chrono::DateTime<chrono::Utc>) -> Self {
        TimestampMicros(t.timestamp_micros())
    }

    pub fn to_datetime(self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp_micros(self.0)
    }
}

/// One order line as published in `order.created.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct OrderLine {
    pub sku: String,
    pub qty: i32,
    /// Decimal string in the order currency.
    pub unit_price: String,
}

/// A quantity of one SKU, as used by inventory commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct SkuQty {
    pub sku: String,
    pub qty: i32,
}

/// A SKU the inventory could not fully reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct Shortage {
    pub sku: String,
    pub requested_qty: i32,
    pub available_qty: i32,
}

/// `order.created.v1` — published when an order is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct OrderCreated {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    pub customer_id: String,
    pub currency: String,
    pub total_amount: String,
    pub items: Vec<OrderLine>,
}

/// `order.status.changed.v1` — every change of `orders.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct OrderStatusChanged {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    pub from_status: String,
    pub to_status: String,
    #[avro(default = "null")]
    pub reason_code: Option<String>,
    pub actor: String,
    /// `orders.version` after the change; consumers can drop stale updates.
    pub order_version: i64,
}

/// `inventory.reserve.v1` — command to the inventory service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct InventoryReserve {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    /// Deterministic `{order_id}:{step}:{action}:{n}`; participants de-duplicate on it.
    pub command_id: String,
    pub items: Vec<SkuQty>,
}

/// `inventory.release.v1` — compensation: release what `command_id`'s
/// reservation (or part of it) holds. Releasing nothing is not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct InventoryRelease {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    pub command_id: String,
    pub reason_code: String,
    pub items: Vec<SkuQty>,
}

/// `inventory.reserved.v1` — the inventory service reserved every item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct InventoryReserved {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    /// The `command_id` of the reserve command this answers, when known.
    #[avro(default = "null")]
    pub command_id: Option<String>,
}

/// `inventory.reservation.failed.v1` — some items are short of stock. Items
/// that were reserved are held until released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct InventoryReservationFailed {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    #[avro(default = "null")]
    pub command_id: Option<String>,
    pub reason: String,
    pub shortages: Vec<Shortage>,
}

/// `payment.authorize.v1` — command to the payment service (the payment intent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct PaymentAuthorize {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    pub command_id: String,
    /// Stable across retries of the same attempt; the void refers to it.
    pub payment_intent_id: String,
    pub customer_id: String,
    pub amount: String,
    pub currency: String,
}

/// `payment.void.v1` — compensation: void the authorization of
/// `payment_intent_id`, or refund it if it was already captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct PaymentVoid {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    pub command_id: String,
    pub payment_intent_id: String,
    pub amount: String,
    pub currency: String,
    pub reason_code: String,
}

/// `payment.authorized.v1` — the payment service authorized the amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct PaymentAuthorized {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    pub payment_intent_id: String,
    pub amount: String,
    pub currency: String,
}

/// `payment.failed.v1` — the payment was declined or errored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct PaymentFailed {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    pub payment_intent_id: String,
    pub reason: String,
}

/// `order.item.backordered.v1` — one item of the order is short of stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct OrderItemBackordered {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    pub sku: String,
    pub requested_qty: i32,
    pub available_qty: i32,
}

/// `order.attention.required.v1` — a human should look at this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.ordersaga.v1")]
pub struct OrderAttentionRequired {
    pub event_id: String,
    pub order_id: i64,
    pub occurred_at: TimestampMicros,
    pub tenant_region: String,
    pub reason_code: String,
    pub saga_state: String,
    pub message: String,
}
