//! ISO 4217 currency codes with their minor units.
//!
//! Orders are priced in a real, circulating currency, and every amount must be
//! representable in that currency's minor unit (no 0.001 USD). Precious metals,
//! testing codes and SDRs (XAU, XTS, XXX, XDR, …) have no minor unit and are not
//! accepted for orders.

use std::fmt;

use serde::{Deserialize, Serialize};

/// (code, minor unit exponent) for the active ISO 4217 list (amendment 178).
#[rustfmt::skip]
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("ANG", 2), ("AOA", 2), ("ARS", 2),
    ("AUD", 2), ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2),
    ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2),
    ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2),
    ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0), ("CNY", 2), ("COP", 2),
    ("COU", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0), ("DKK", 2),
    ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2),
    ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0),
    ("GTQ", 2), ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2),
    ("ILS", 2), ("INR", 2), ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3),
    ("JPY", 0), ("KES", 2), ("KGS", 2), ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0),
    ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2), ("LKR", 2), ("LRD", 2),
    ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2), ("MKD", 2), ("MMK", 2),
    ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2), ("MXN", 2),
    ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2),
    ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2),
    ("PKR", 2), ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2),
    ("RWF", 0), ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2),
    ("SHP", 2), ("SLE", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2),
    ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TND", 3), ("TOP", 2),
    ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0), ("USD", 2),
    ("USN", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2), ("VES", 2),
    ("VND", 0), ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0),
    ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

/// A validated ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "&'static str")]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

impl Currency {
    /// Parses an upper-case three-letter code from the active ISO 4217 list.
    pub fn parse(code: &str) -> Option<Currency> {
        CURRENCIES.iter().find(|(c, _)| *c == code).map(|&(code, minor_units)| Currency { code, minor_units })
    }

    pub fn code(self) -> &'static str {
        self.code
    }

    /// Number of decimal places of the currency's minor unit (2 for EUR, 0 for JPY, 3 for KWD).
    pub fn minor_units(self) -> u32 {
        self.minor_units
    }
}

impl From<Currency> for &'static str {
    fn from(c: Currency) -> Self {
        c.code
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an ISO 4217 currency code")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_and_minor_units() {
        assert_eq!(Currency::parse("EUR").map(Currency::minor_units), Some(2));
        assert_eq!(Currency::parse("JPY").map(Currency::minor_units), Some(0));
        assert_eq!(Currency::parse("KWD").map(Currency::minor_units), Some(3));
        assert_eq!(Currency::parse("CLF").map(Currency::minor_units), Some(4));
    }

    #[test]
    fn rejects_lower_case_unknown_and_non_currency_codes() {
        for bad in ["eur", "EURO", "EU", "", "ZZZ", "XAU", "XTS", "XXX", "XDR", " EUR"] {
            assert!(Currency::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for w in CURRENCIES.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        assert!(CURRENCIES.iter().all(|(c, _)| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
    }
}
