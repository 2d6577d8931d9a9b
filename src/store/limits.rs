//! What the schema can hold, and ids derived so that they always fit.
//!
//! Every inbound value the store keeps is checked against these limits at the
//! edge (`kafka/inbound/`), so that a bad event becomes a dead-letter with a precise
//! reason instead of a database refusal. Ids the daemon derives from inbound
//! ids (inbox ids of invalid events, dead-letter copies) are hashed when the
//! original would not fit, and are deterministic so that a redelivery of the
//! same message de-duplicates.
//!
//! **Do not change** the derivations: they are de-duplication keys.

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use sha2::{Digest, Sha256};

/// Longest accepted inbound `event_id` (the inbox column is `VARCHAR(191)`;
/// the rest is room for derived ids).
pub const EVENT_ID_MAX: usize = 128;
/// `outbox.event_id` is `VARCHAR(64) ascii`.
pub const OUTBOX_EVENT_ID_MAX: usize = 64;
/// `orders.tenant_region` / `sagas.tenant_region` are `VARCHAR(32)`.
pub const TENANT_REGION_MAX: usize = 32;
/// Free-text fields kept in rows or headers (reasons, intent ids, command ids).
pub const TEXT_MAX: usize = 1000;
/// Ids other services give us (command ids, payment intents).
pub const FOREIGN_ID_MAX: usize = 128;
/// `DATETIME(6)` holds years 1000..=9999; micros since the epoch of 9999-12-31T23:59:59.999999Z.
pub const TIMESTAMP_MICROS_MAX: i64 = 253_402_300_799_999_999;
/// Rows per multi-row statement: far below the 65,535 placeholders of the
/// MySQL protocol for every table (the widest row binds 10 values).
pub const ROWS_PER_STATEMENT: usize = 1_000;
// The per-event rows of the largest consumer batch fit one statement.
const _: () = assert!(crate::config::CONSUMER_BATCH_MAX_LIMIT <= ROWS_PER_STATEMENT);

/// Whether `id` can be stored as an event id as it is: 1..=128 printable
/// ASCII characters without spaces. (The columns are `ascii_bin`, which pads:
/// ids differing only by trailing spaces would collide; non-ASCII would be
/// refused or mangled.)
pub fn is_storable_event_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= EVENT_ID_MAX && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Prefixes of the inbox ids this daemon gives its own events (timer
/// firings, HTTP status requests, operator actions, dead-letter copies). A
/// participant's `event_id` must not start with one: it would make a timer
/// un-fireable or an action look done.
pub const RESERVED_EVENT_ID_PREFIXES: [&str; 4] = ["timer:", "http:", "ops:", "dlq:"];

/// Whether an external event id uses an internal namespace.
pub fn is_reserved_event_id(id: &str) -> bool {
    RESERVED_EVENT_ID_PREFIXES.iter().any(|p| id.starts_with(p))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// `id` itself when storable and not in an internal namespace, else
/// `sha256:<hex of id>` (71 characters).
pub fn storable_event_id(id: &str) -> String {
    if is_storable_event_id(id) && !is_reserved_event_id(id) {
        id.to_owned()
    } else {
        format!("sha256:{}", sha256_hex(id))
    }
}

/// The id of the dead-letter copy of event `id`: `dlq:<id>` when that fits
/// `outbox.event_id`, else `dlq:` and 60 hex digits of the id's sha256.
pub fn dead_letter_event_id(id: &str) -> String {
    let plain = format!("dlq:{id}");
    if plain.len() <= OUTBOX_EVENT_ID_MAX && is_storable_event_id(id) {
        plain
    } else {
        format!("dlq:{}", &sha256_hex(id)[..OUTBOX_EVENT_ID_MAX - 4])
    }
}

/// Whether `t` fits a `DATETIME(6)` column (years 1000 to 9999). Timestamps
/// from clients (filters, cursors, operator times) are checked with this
/// before they reach a query: out of range, the driver refuses to encode them.
pub fn is_storable_time(t: DateTime<Utc>) -> bool {
    (1000..=9999).contains(&t.year())
}

/// The longest age a query may ask about (`older_than`): 100 years.
pub const MAX_AGE: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_ids_pass_through_and_others_are_hashed_deterministically() {
        assert_eq!(storable_event_id("evt-1"), "evt-1");
        for bad in ["", "é", "a b", "trailing ", &"x".repeat(129), "tab\t"] {
            let id = storable_event_id(bad);
            assert!(is_storable_event_id(&id), "{bad:?} -> {id}");
            assert!(id.starts_with("sha256:"));
            assert_eq!(id, storable_event_id(bad), "deterministic");
        }
        assert_ne!(storable_event_id("a "), storable_event_id("a  "), "trailing spaces do not collide");
        assert!(storable_event_id("timer:1:t:1").starts_with("sha256:"), "never an internal id");
    }

    #[test]
    fn dead_letter_ids_always_fit_the_outbox_column() {
        for id in ["e1", &"x".repeat(60), &"x".repeat(61), &"y".repeat(5000), "ünï", "kafka:t.very.long.topic:3:12"] {
            let d = dead_letter_event_id(id);
            assert!(d.len() <= OUTBOX_EVENT_ID_MAX && d.starts_with("dlq:") && d.is_ascii(), "{id} -> {d}");
            assert_eq!(d, dead_letter_event_id(id));
        }
        assert_eq!(dead_letter_event_id("e1"), "dlq:e1");
        assert_ne!(dead_letter_event_id(&"x".repeat(61)), dead_letter_event_id(&"x".repeat(62)));
    }
}
