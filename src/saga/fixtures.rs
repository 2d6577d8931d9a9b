//! Test fixtures shared by the unit tests of the shell's pure parts.

use chrono::{DateTime, Utc};

use super::model::{InstanceData, Item, OrderFacts, StepProgress};
use super::{Definition, Instance};
use crate::domain::OrderId;

/// A saga of `def` in `state` at version 3, for an order of 10.00 EUR, whose
/// two steps ran once each: every reply to their commands answers the latest.
pub(crate) fn instance(def: &Definition, order_id: OrderId, state: &str, now: DateTime<Utc>) -> Instance {
    Instance {
        order_id,
        saga_name: def.name.clone(),
        definition_version: def.version,
        state: state.into(),
        version: crate::domain::SagaVersion(3),
        state_entered_at: now,
        data: InstanceData {
            order: OrderFacts {
                customer_id: "c-1".into(),
                tenant_region: "eu-west".into(),
                total: crate::domain::Money::new(
                    rust_decimal::Decimal::new(1000, 2),
                    crate::domain::Currency::parse("EUR").expect("EUR"),
                ),
                items: vec![Item { sku: "A".into(), qty: 1 }],
            },
            steps: [("reserve_inventory", 1), ("authorize_payment", 2)]
                .into_iter()
                .map(|(n, seq)| (n.to_owned(), StepProgress { runs: 1, active: true, run_seq: seq }))
                .collect(),
            emitted: [("reserve_inventory:reserve".to_owned(), 1), ("authorize_payment:authorize".to_owned(), 1)]
                .into_iter()
                .collect(),
            seq: 2,
        },
    }
}
