//! The order domain: statuses, the transition table, and request validation.
//!
//! **Invariant:** pure. No I/O, no clock, no async — this module is tested
//! exhaustively with plain unit tests.

pub mod currency;
pub mod order;
pub mod status;
mod validate;

pub use currency::Currency;
pub use order::{NewOrder, NewOrderItem, StatusChange, StatusChangeRequest, limits};
pub use status::OrderStatus;
pub use validate::FieldError;
