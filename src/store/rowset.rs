//! Keys as one JSON parameter, so that a lookup's text is the same for any
//! number of keys.
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
//! **How.** The keys travel as one JSON array and `JSON_TABLE` (MariaDB ≥
//! 10.6, MySQL ≥ 8.0.4) turns it into a table that the statement joins
//! `STRAIGHT_JOIN` to the keyed table with `FORCE INDEX (PRIMARY)`: one
//! primary-key lookup per listed key whatever the table's size or statistics,
//! and row locks (`FOR UPDATE`) taken in the list's order — callers pass keys
//! sorted, which keeps the one lock order every transaction of the crate
//! follows. Reads, `UPDATE`s and `DELETE`s by key go this way (the saga,
//! order and timer locks of a batch, the inbox check, the orders' new
//! statuses, disarmed timers, the relay's rows and their `published_at`).
//! String keys are `LONGTEXT` in `COLUMNS` with the key column's character
//! set and binary collation (nothing is cut on the way, the comparison is
//! the column's own, and the lookup still uses the index); a key compared with
//! an `ascii` column is declared `CHARACTER SET ascii COLLATE ascii_bin`
//! (otherwise the index cannot be used), and a value outside ASCII, which
//! cannot be in such a column, is left out of the list by the caller rather
//! than converted to `?`.
//!
//! **Not inserts.** Multi-row `INSERT`s keep their `VALUES` lists (one text
//! per row count). The same `INSERT … SELECT … FROM JSON_TABLE(?)` was built
//! and measured (BENCHMARKS.md, "Key lookups as one JSON parameter"): the
//! server parses every row's JSON on every execution — a 4-row outbox insert
//! took 120–150 µs of server time against 75–90 µs as a prepared `VALUES`
//! list, about what preparing it afresh costs — and with
//! `innodb_autoinc_lock_mode = 1` an `INSERT … SELECT` holds the table's
//! auto-increment lock for the whole statement. End to end it was slower
//! (300 sagas/s p50 272–281 ms against 221–222 ms). A key lookup through
//! `JSON_TABLE` costs what the `IN (…)` list did (~35 µs for 8 keys).
//! Since then a transaction's writes (these `VALUES` lists, and the updates
//! and deletes by a JSON list) are sent together as text, in one round trip
//! (`store::script`), so they prepare no statement at all.
//!
//! Checked on MariaDB 10.11: `EXPLAIN` of every lookup shows the JSON table
//! first and an `eq_ref`/`ref` on the primary key.

use serde::Serialize;

use super::StoreError;

/// The JSON array of `rows` (each row serialises as an array: a tuple).
pub(crate) fn encode<T: Serialize>(rows: impl IntoIterator<Item = T>) -> Result<String, StoreError> {
    let mut out = Vec::with_capacity(256);
    serde::Serializer::collect_seq(&mut serde_json::Serializer::new(&mut out), rows)
        .map_err(|e| StoreError::Corrupt(format!("encoding rows as JSON: {e}")))?;
    String::from_utf8(out).map_err(|e| StoreError::Corrupt(format!("encoding rows as JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_array_and_rows_are_arrays_by_position() {
        assert_eq!(encode([3u64, 5, 8]).unwrap(), "[3,5,8]");
        assert_eq!(encode(["a\"b", "ü"]).unwrap(), r#"["a\"b","ü"]"#);
        assert_eq!(
            encode([(1u64, "CONFIRMED", 2u32), (4, "CANCELLED", 3)]).unwrap(),
            r#"[[1,"CONFIRMED",2],[4,"CANCELLED",3]]"#
        );
    }

    #[test]
    fn no_rows_is_an_empty_array() {
        assert_eq!(encode(std::iter::empty::<(u64,)>()).unwrap(), "[]");
    }
}
