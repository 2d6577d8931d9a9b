//! Order lifecycle: the statuses and the allowed-transition table.
//!
//! This is the single source of truth for which status changes are legal. The
//! HTTP handler, the saga shell and the operator tooling all ask [`OrderStatus::can_transition_to`]
//! before they write, so an illegal change cannot enter the database from any path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The status of an order (the `orders.status` column and both enums of
/// `order_status_history`).
///
/// Do not rename variants: their string forms are stored in MySQL, published in
/// `order.status.changed.v1` and used by clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Fulfilled,
    Returned,
    Cancelled,
    PendingReview,
}

impl OrderStatus {
    /// Every status, in lifecycle order. Used by exhaustive tests and by the
    /// `/metrics` exporter, which must publish a series per status.
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Pending,
        OrderStatus::PendingReview,
        OrderStatus::Confirmed,
        OrderStatus::Fulfilled,
        OrderStatus::Returned,
        OrderStatus::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Fulfilled => "FULFILLED",
            OrderStatus::Returned => "RETURNED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::PendingReview => "PENDING_REVIEW",
        }
    }

    /// The statuses reachable from `self` in one step.
    pub const fn successors(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            Pending => &[Confirmed, Cancelled, PendingReview],
            PendingReview => &[Pending, Confirmed, Cancelled],
            Confirmed => &[Fulfilled, Cancelled],
            Fulfilled => &[Returned],
            // Terminal: nothing leaves RETURNED or CANCELLED.
            Returned | Cancelled => &[],
        }
    }

    pub fn can_transition_to(self, to: OrderStatus) -> bool {
        self.successors().contains(&to)
    }

    pub fn is_terminal(self) -> bool {
        self.successors().is_empty()
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string was not one of the status names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown order status {0:?}; expected one of PENDING, PENDING_REVIEW, CONFIRMED, FULFILLED, RETURNED, CANCELLED"
)]
pub struct UnknownStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::{self, *};

    /// The full 6x6 table, written out by hand so that a change to
    /// `successors` that is not also made here fails.
    const TABLE: [(OrderStatus, OrderStatus, bool); 36] = [
        (Pending, Pending, false),
        (Pending, PendingReview, true),
        (Pending, Confirmed, true),
        (Pending, Fulfilled, false),
        (Pending, Returned, false),
        (Pending, Cancelled, true),
        (PendingReview, Pending, true),
        (PendingReview, PendingReview, false),
        (PendingReview, Confirmed, true),
        (PendingReview, Fulfilled, false),
        (PendingReview, Returned, false),
        (PendingReview, Cancelled, true),
        (Confirmed, Pending, false),
        (Confirmed, PendingReview, false),
        (Confirmed, Confirmed, false),
        (Confirmed, Fulfilled, true),
        (Confirmed, Returned, false),
        (Confirmed, Cancelled, true),
        (Fulfilled, Pending, false),
        (Fulfilled, PendingReview, false),
        (Fulfilled, Confirmed, false),
        (Fulfilled, Fulfilled, false),
        (Fulfilled, Returned, true),
        (Fulfilled, Cancelled, false),
        (Returned, Pending, false),
        (Returned, PendingReview, false),
        (Returned, Confirmed, false),
        (Returned, Fulfilled, false),
        (Returned, Returned, false),
        (Returned, Cancelled, false),
        (Cancelled, Pending, false),
        (Cancelled, PendingReview, false),
        (Cancelled, Confirmed, false),
        (Cancelled, Fulfilled, false),
        (Cancelled, Returned, false),
        (Cancelled, Cancelled, false),
    ];

    #[test]
    fn every_pair_matches_the_table() {
        for (from, to, allowed) in TABLE {
            assert_eq!(
                from.can_transition_to(to),
                allowed,
                "{from} -> {to} should be {}",
                if allowed { "allowed" } else { "refused" }
            );
        }
        // The table covers every pair exactly once.
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(TABLE.iter().filter(|(f, t, _)| *f == from && *t == to).count(), 1);
            }
        }
    }

    #[test]
    fn terminal_states_are_exactly_returned_and_cancelled() {
        let terminal: Vec<_> = OrderStatus::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, vec![Returned, Cancelled]);
    }

    #[test]
    fn names_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        assert!("pending".parse::<OrderStatus>().is_err());
        assert!("".parse::<OrderStatus>().is_err());
    }
}
