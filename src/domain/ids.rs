//! Identifiers and versions as types: an order id is an [`OrderId`]
//! everywhere — the orders tables, the saga tables, the events on the wire,
//! the HTTP paths — and a saga's optimistic-concurrency counter is a
//! [`SagaVersion`], never confused with an order's version or a definition
//! version. (Their database encodings are in `store::ids`: the domain is pure.)

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An order's id: a positive integer no larger than `i64::MAX`, so that it
/// is the same number in MariaDB (`BIGINT UNSIGNED`), on the wire (Avro
/// `long`) and in JSON. Constructed only through the checked conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "u64")]
pub struct OrderId(u64);

/// A number that is not an order id (zero, negative, or beyond `i64::MAX`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not an order id (order ids are positive integers up to 2^63 - 1)")]
pub struct NotAnOrderId(pub String);

impl OrderId {
    /// The largest id: the largest Avro `long`.
    pub const MAX: u64 = i64::MAX as u64;

    /// The id `n`, when it is one.
    pub const fn new(n: u64) -> Option<OrderId> {
        if n >= 1 && n <= Self::MAX { Some(OrderId(n)) } else { None }
    }

    /// The id as the database and JSON hold it.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The id as an Avro `long` (lossless: ids never exceed `i64::MAX`).
    pub const fn wire(self) -> i64 {
        self.0 as i64
    }
}

impl TryFrom<u64> for OrderId {
    type Error = NotAnOrderId;
    fn try_from(n: u64) -> Result<Self, Self::Error> {
        OrderId::new(n).ok_or_else(|| NotAnOrderId(n.to_string()))
    }
}

impl TryFrom<i64> for OrderId {
    type Error = NotAnOrderId;
    fn try_from(n: i64) -> Result<Self, Self::Error> {
        u64::try_from(n).ok().and_then(OrderId::new).ok_or_else(|| NotAnOrderId(n.to_string()))
    }
}

impl From<OrderId> for u64 {
    fn from(id: OrderId) -> u64 {
        id.0
    }
}

impl FromStr for OrderId {
    type Err = NotAnOrderId;
    /// A decimal number as `u64` reads it (no minus sign, no spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u64>().ok().and_then(OrderId::new).ok_or_else(|| NotAnOrderId(format!("{s:?}")))
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for OrderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        OrderId::try_from(n).map_err(serde::de::Error::custom)
    }
}

/// A saga's version: 1 when it starts, one more with every transition it
/// applies (and with a migration). Actions and bulk jobs are guarded by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SagaVersion(pub u32);

impl SagaVersion {
    /// A new saga's version.
    pub const FIRST: SagaVersion = SagaVersion(1);

    /// The version after one more transition.
    #[must_use]
    pub const fn next(self) -> SagaVersion {
        SagaVersion(self.0.saturating_add(1))
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for SagaVersion {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(SagaVersion)
    }
}

impl fmt::Display for SagaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The order id `n`, for tests (panics on a number that is not one).
#[cfg(test)]
pub(crate) fn oid(n: i64) -> OrderId {
    OrderId::try_from(n).expect("an order id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_id_is_positive_and_fits_an_avro_long() {
        assert_eq!(OrderId::new(0), None);
        assert_eq!(OrderId::new(1).map(OrderId::wire), Some(1));
        assert_eq!(OrderId::new(OrderId::MAX).map(OrderId::wire), Some(i64::MAX));
        assert_eq!(OrderId::new(OrderId::MAX + 1), None);
        assert!(OrderId::try_from(-1i64).is_err());
        assert_eq!(OrderId::try_from(42i64).map(OrderId::get), Ok(42));
    }

    #[test]
    fn parses_positive_decimal_numbers_only() {
        assert_eq!("42".parse::<OrderId>().map(OrderId::get), Ok(42));
        for bad in ["0", "-1", " 1", "1.0", "", "x", "9223372036854775808"] {
            assert!(bad.parse::<OrderId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn json_is_a_plain_number() {
        let id = OrderId::new(7).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "7");
        assert_eq!(serde_json::from_str::<OrderId>("7").unwrap(), id);
        assert!(serde_json::from_str::<OrderId>("0").is_err());
        assert!(serde_json::from_str::<OrderId>("-7").is_err());
        assert_eq!(serde_json::to_string(&SagaVersion(3)).unwrap(), "3");
    }
}
