//! An amount of money: a decimal exact to its currency's minor unit.
//!
//! Amounts are `rust_decimal::Decimal` (never floats) and travel as decimal
//! strings with exactly the currency's minor units ("22.50" EUR, "1500" JPY,
//! "1.250" KWD); two amounts are equal when their values are ("22.5" = "22.50").

use std::fmt;

use rust_decimal::Decimal;

use super::Currency;

/// An amount in a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// `amount` in `currency`, rounded (half to even) to the currency's minor
    /// unit. Validated orders never need the rounding: their prices are
    /// representable, and sums and products of such prices are too.
    pub fn new(amount: Decimal, currency: Currency) -> Money {
        let mut amount = amount.round_dp(currency.minor_units());
        amount.rescale(currency.minor_units());
        Money { amount, currency }
    }

    pub fn amount(self) -> Decimal {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    /// Whether a decimal string names this amount (`"22.5"` and `"22.50"` do
    /// for 22.50; surrounding spaces are ignored; anything else does not).
    pub fn is_written_as(self, text: &str) -> bool {
        text.trim().parse::<Decimal>().is_ok_and(|d| d == self.amount)
    }
}

/// The amount alone, with exactly the currency's minor units: `22.50`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.amount, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(amount: &str, code: &str) -> Money {
        Money::new(amount.parse().unwrap(), Currency::parse(code).unwrap())
    }

    #[test]
    fn written_with_exactly_the_minor_units() {
        assert_eq!(money("22.5", "EUR").to_string(), "22.50");
        assert_eq!(money("5", "EUR").to_string(), "5.00");
        assert_eq!(money("1500", "JPY").to_string(), "1500");
        assert_eq!(money("1.25", "KWD").to_string(), "1.250");
        assert_eq!(money("0.125", "EUR").to_string(), "0.12", "half to even");
    }

    #[test]
    fn compares_by_value_not_by_text() {
        let m = money("22.50", "EUR");
        for same in ["22.50", "22.5", " 22.50 ", "22.500"] {
            assert!(m.is_written_as(same), "{same:?}");
        }
        for other in ["0.01", "22.51", "2250", "", "22,50", "EUR 22.50"] {
            assert!(!m.is_written_as(other), "{other:?}");
        }
        assert_ne!(money("22.50", "EUR"), money("22.50", "USD"));
    }
}
