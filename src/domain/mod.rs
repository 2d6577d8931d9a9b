//! The order domain: statuses, the transition table, and request validation.
//!
//! **Invariant:** pure. No I/O, no clock, no async — this module is tested
//! exhaustively with plain unit tests.

pub mod currency;
pub mod ids;
pub mod money;
pub mod order;
pub mod status;
mod validate;

pub use currency::Currency;
pub use ids::{NotAnOrderId, OrderId, SagaVersion};
pub use money::Money;
pub use order::{NewOrder, NewOrderItem, StatusChange, StatusChangeRequest, limits};
pub use status::OrderStatus;
pub use validate::FieldError;
