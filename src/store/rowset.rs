//! Rows as one JSON parameter, so that a statement's text is the same for any
//! number of rows.
//!
//! **Why.** Every connection caches its prepared statements by text (sqlx
//! keeps 100 per connection). A multi-row `VALUES` list or an `IN (…)` list
//! has one text per length, so the saga shell's dozen hot statements came in
//! ~130 texts; the caches thrashed and a third of all executions at 300
//! sagas/s paid a prepare (a round trip and a parse) and a close
//! (BENCHMARKS.md, "Prepared statements"). A larger cache is no answer: the
//! server caps prepared statements for all connections of all replicas
//! together (`max_prepared_stmt_count`).
//!
//! **How.** The rows travel as one JSON array — one array per row, values by
//! position — and `JSON_TABLE` (MariaDB ≥ 10.6, MySQL ≥ 8.0.4) turns it back
//! into a table inside the statement:
//!
//! * **Inserts**: `INSERT INTO t (…) SELECT j.… FROM JSON_TABLE(?, '$[*]'
//!   COLUMNS (n FOR ORDINALITY, … PATH '$[0]', …)) AS j ORDER BY j.n` — rows go
//!   in in the list's order (auto-increment ids follow it). String columns
//!   are declared `LONGTEXT` in `COLUMNS`, so the target column's own checks
//!   apply exactly as to a bound value: a value too long or not in the
//!   column's character set is an error, never silently cut on the way.
//!   `ON DUPLICATE KEY UPDATE … VALUES(col)` works as with `VALUES` lists.
//! * **Reads, updates and deletes by key**: `STRAIGHT_JOIN` from the JSON
//!   table to the keyed table with `FORCE INDEX (PRIMARY)`: one primary-key
//!   lookup per listed key whatever the table's size or statistics, and row
//!   locks (`FOR UPDATE`) taken in the list's order — callers pass keys
//!   sorted, which keeps the one lock order every transaction of the crate
//!   follows. A key column compared with an `ascii` key is declared
//!   `CHARACTER SET ascii COLLATE ascii_bin` (otherwise the index cannot be
//!   used); a value outside ASCII cannot be in such a column, and callers
//!   leave it out of the list rather than let it convert to `?`.
//!
//! Checked on MariaDB 10.11: JSON `null` is SQL `NULL`; `DATETIME(6)` from
//! [`Micros`] and integers up to `u64` are exact; `EXPLAIN` of every key
//! lookup above shows the JSON table first and an `eq_ref`/`ref` on the
//! primary key (which `STRAIGHT_JOIN` and `FORCE INDEX` leave the optimizer no
//! other choice than). With `innodb_autoinc_lock_mode = 1` an `INSERT …
//! SELECT` into a table with an auto-increment key holds that table's
//! auto-increment lock for the statement (a `VALUES` list takes it only for the
//! id allocation); mode 2, MySQL 8's default, takes neither.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StoreError;

/// The JSON array of `rows` (each row serialises as an array: a tuple).
pub(crate) fn encode<T: Serialize>(rows: impl IntoIterator<Item = T>) -> Result<String, StoreError> {
    let mut out = Vec::with_capacity(256);
    serde::Serializer::collect_seq(&mut serde_json::Serializer::new(&mut out), rows)
        .map_err(|e| StoreError::Corrupt(format!("encoding rows as JSON: {e}")))?;
    String::from_utf8(out).map_err(|e| StoreError::Corrupt(format!("encoding rows as JSON: {e}")))
}

/// A timestamp as `DATETIME(6)` reads it from a string: UTC,
/// `YYYY-MM-DD HH:MM:SS.ffffff` (what binding a `DateTime<Utc>` sends).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Micros(pub DateTime<Utc>);

impl Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.format("%Y-%m-%d %H:%M:%S%.6f"))
    }
}

/// A `bool` as the `TINYINT(1)` column holds it.
pub(crate) fn flag(b: bool) -> u8 {
    u8::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn rows_are_arrays_by_position_with_nulls_and_microsecond_times() {
        let t = Utc.with_ymd_and_hms(2026, 12, 5, 9, 8, 7).unwrap() + chrono::Duration::microseconds(42);
        let json =
            encode([(1u64, "a\"b", None::<&str>, Micros(t), flag(true)), (2, "ü😀", Some("x"), Micros(t), 0)]).unwrap();
        assert_eq!(
            json,
            r#"[[1,"a\"b",null,"2026-12-05 09:08:07.000042",1],[2,"ü😀","x","2026-12-05 09:08:07.000042",0]]"#
        );
    }

    #[test]
    fn no_rows_is_an_empty_array() {
        assert_eq!(encode(std::iter::empty::<(u64,)>()).unwrap(), "[]");
    }
}
