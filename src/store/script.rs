//! A transaction's writes as one round trip: several statements, sent as one
//! multi-statement text query.
//!
//! **Why.** A saga batch writes up to eight tables (inbox, sagas, orders,
//! history, timers, parked events, transitions, outbox), and an order group
//! six. As prepared statements that is one round trip each: a send, a wake-up
//! of a server thread, a reply and a wake-up of the daemon's task. On this
//! box a round trip costs the server ≈ 20 µs of CPU beyond the statement's own
//! work (six inserts per transaction, sent one by one or as one query), and
//! the transaction holds its row locks for every one of them. Sent as one,
//! the daemon's CPU per saga fell 7–12 % and the p99 at 600 sagas/s by a
//! quarter (BENCHMARKS.md, "Writes as one round trip").
//!
//! **How.** A [`Script`] is the text of the statements, each with what it is
//! (for errors) and what its result must show (a row count, or a duplicate
//! key that means a lost race). Values are written as literals that cannot
//! break out of their place whatever they hold: strings as hexadecimal with
//! an explicit character set (`_utf8mb4 X'…'`, independent of `sql_mode` and
//! of the connection's character set), numbers and times from their typed
//! values. [`Script::run`] sends it with the text protocol; the server runs
//! the statements in order and stops at the first error, which is reported
//! as the failing statement's, classified as before (deadlocks and lock
//! timeouts stay retryable, see [`super::retry`]).
//!
//! **What it costs.** The server parses the text on every execution (no
//! prepared statement), and strings travel at twice their size. No statement
//! cache is used, so none thrashes. A script is split before
//! [`CHUNK_BYTES`] so that no query comes near `max_allowed_packet`.
//!
//! **Logs.** The text holds the values, so the pool does not log statements
//! (`Db::connect`); a slow script is logged here by its steps' names.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use rust_decimal::Decimal;

use super::{Ctx, StoreError, Tx};
use crate::domain::{OrderId, SagaVersion};

/// A script's text is cut between statements into queries of about this
/// size (a query can exceed it by its last statement): far below
/// `max_allowed_packet` (16 MiB by default in MariaDB, 64 MiB in MySQL 8),
/// and big enough that a usual batch is one query.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// A script slower than this is logged (by its steps' names).
const SLOW: Duration = Duration::from_secs(1);

/// What a statement's result must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Any result.
    Any,
    /// Exactly this many affected rows, else [`StoreError::Race`] with the message.
    Rows(u64, &'static str),
}

#[derive(Debug, Clone)]
struct Step {
    what: &'static str,
    expect: Expect,
    /// A duplicate key here is this lost race ([`StoreError::Race`]).
    duplicate_is_race: Option<&'static str>,
}

/// Statements to run in one round trip (see the module documentation).
/// `Debug` names the statements, never the text (it holds values).
#[derive(Default)]
pub(crate) struct Script {
    /// Queries already cut (see [`CHUNK_BYTES`]), with their steps.
    done: Vec<(String, Vec<Step>)>,
    sql: String,
    steps: Vec<Step>,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> =
            self.done.iter().flat_map(|(_, steps)| steps).chain(&self.steps).map(|s| s.what).collect();
        f.debug_struct("Script").field("statements", &names).finish_non_exhaustive()
    }
}

impl Script {
    pub(crate) fn new() -> Script {
        Script::default()
    }

    /// The number of statements (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.steps.len() + self.done.iter().map(|(_, s)| s.len()).sum::<usize>()
    }

    /// Starts a statement; `what` names it in errors ("inserting outbox rows").
    pub(crate) fn statement(&mut self, what: &'static str) -> Statement<'_> {
        if self.sql.len() >= CHUNK_BYTES {
            let sql = std::mem::take(&mut self.sql);
            let steps = std::mem::take(&mut self.steps);
            self.done.push((sql, steps));
        }
        if !self.sql.is_empty() {
            self.sql.push_str(";\n");
        }
        self.steps.push(Step { what, expect: Expect::Any, duplicate_is_race: None });
        Statement { script: self }
    }

    /// The queries' text (for tests).
    #[cfg(test)]
    pub(crate) fn text(&self) -> String {
        let mut all: Vec<&str> = self.done.iter().map(|(s, _)| s.as_str()).collect();
        all.push(&self.sql);
        all.join(";\n")
    }

    /// Runs the statements in order, one query per chunk; the first error
    /// stops the rest and is reported as its statement's.
    pub(crate) async fn run(self, tx: &mut Tx) -> Result<(), StoreError> {
        let Script { mut done, sql, steps } = self;
        if !steps.is_empty() {
            done.push((sql, steps));
        }
        for (sql, steps) in done {
            let started = Instant::now();
            let n = steps.len();
            run_one(tx, sql, &steps).await?;
            let took = started.elapsed();
            if took >= SLOW {
                let names: Vec<&str> = steps.iter().map(|s| s.what).collect();
                tracing::warn!(statements = n, took_ms = took.as_millis() as u64, steps = ?names, "slow write script");
            }
        }
        Ok(())
    }
}

async fn run_one(tx: &mut Tx, sql: String, steps: &[Step]) -> Result<(), StoreError> {
    let mut results = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute_many(&mut **tx);
    let mut i = 0;
    loop {
        let step = steps.get(i);
        let next = match results.try_next().await {
            Ok(next) => next,
            Err(e) => {
                if let (sqlx::Error::Database(db), Some(race)) = (&e, step.and_then(|s| s.duplicate_is_race))
                    && db.is_unique_violation()
                {
                    return Err(StoreError::Race(race));
                }
                return Err(e).ctx(step.map_or("running a write script", |s| s.what));
            }
        };
        let Some(done) = next else { break };
        let Some(step) = step else {
            return Err(StoreError::Corrupt(format!(
                "a write script of {} statements returned more results",
                steps.len()
            )));
        };
        if let Expect::Rows(n, race) = step.expect
            && done.rows_affected() != n
        {
            return Err(StoreError::Race(race));
        }
        i += 1;
    }
    if i != steps.len() {
        return Err(StoreError::Corrupt(format!("a write script of {} statements returned {i} results", steps.len())));
    }
    Ok(())
}

/// One statement being written.
pub(crate) struct Statement<'a> {
    script: &'a mut Script,
}

impl Statement<'_> {
    /// SQL text, as is: only constant text, never a value.
    pub(crate) fn sql(&mut self, sql: &'static str) -> &mut Self {
        self.script.sql.push_str(sql);
        self
    }

    /// A value, as a literal.
    pub(crate) fn lit(&mut self, v: impl Literal) -> &mut Self {
        v.write(&mut self.script.sql);
        self
    }

    /// `VALUES (…), (…)`: one parenthesised row per item, its values
    /// separated by commas (see [`Row`]).
    pub(crate) fn values<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Row<'_>, T),
    ) -> &mut Self {
        self.script.sql.push_str("VALUES ");
        for (n, item) in items.into_iter().enumerate() {
            self.script.sql.push_str(if n == 0 { "(" } else { ", (" });
            row(&mut Row { sql: &mut self.script.sql, first: true }, item);
            self.script.sql.push(')');
        }
        self
    }

    /// The statement must affect exactly `n` rows, else the batch lost `race`.
    pub(crate) fn expect_rows(&mut self, n: u64, race: &'static str) -> &mut Self {
        if let Some(step) = self.script.steps.last_mut() {
            step.expect = Expect::Rows(n, race);
        }
        self
    }

    /// A duplicate key in this statement is a lost race, not an error.
    pub(crate) fn duplicate_is_race(&mut self, race: &'static str) -> &mut Self {
        if let Some(step) = self.script.steps.last_mut() {
            step.duplicate_is_race = Some(race);
        }
        self
    }
}

/// The values of one row of a `VALUES` list.
pub(crate) struct Row<'a> {
    sql: &'a mut String,
    first: bool,
}

impl Row<'_> {
    fn sep(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.sql.push_str(", ");
        }
    }

    /// The next value, as a literal.
    pub(crate) fn lit(&mut self, v: impl Literal) -> &mut Self {
        self.sep();
        v.write(self.sql);
        self
    }

    /// The next value as an SQL expression: only constant text (`NOW(6)`).
    pub(crate) fn sql(&mut self, sql: &'static str) -> &mut Self {
        self.sep();
        self.sql.push_str(sql);
        self
    }

    /// `NOW(6) + INTERVAL <micros> MICROSECOND`.
    pub(crate) fn now_plus_micros(&mut self, micros: i64) -> &mut Self {
        self.sep();
        let _ = write!(self.sql, "NOW(6) + INTERVAL {micros} MICROSECOND");
        self
    }
}

/// A value that can be written into SQL text as a literal that stays one
/// value whatever it holds.
pub(crate) trait Literal {
    fn write(&self, out: &mut String);
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

impl Literal for str {
    /// `_utf8mb4 X'…'`: hexadecimal digits only, so no byte of the value is
    /// ever read as SQL, whatever `sql_mode` (`NO_BACKSLASH_ESCAPES`) says.
    fn write(&self, out: &mut String) {
        out.push_str("_utf8mb4 ");
        self.as_bytes().write(out);
    }
}

impl Literal for [u8] {
    /// `X'…'`: a binary string, hexadecimal digits only.
    fn write(&self, out: &mut String) {
        out.reserve(self.len() * 2 + 3);
        out.push_str("X'");
        for b in self {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
        out.push('\'');
    }
}

impl Literal for String {
    fn write(&self, out: &mut String) {
        self.as_str().write(out);
    }
}

impl<T: Literal + ?Sized> Literal for &T {
    fn write(&self, out: &mut String) {
        (**self).write(out);
    }
}

impl<T: Literal> Literal for Option<T> {
    fn write(&self, out: &mut String) {
        match self {
            Some(v) => v.write(out),
            None => out.push_str("NULL"),
        }
    }
}

macro_rules! integer_literal {
    ($($t:ty),*) => {$(
        impl Literal for $t {
            fn write(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_literal!(u8, u16, u32, u64, i32, i64);

impl Literal for bool {
    fn write(&self, out: &mut String) {
        out.push_str(if *self { "1" } else { "0" });
    }
}

impl Literal for Decimal {
    /// Digits, a point and a sign only.
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Literal for DateTime<Utc> {
    /// A `DATETIME(6)` literal in UTC (the session's `time_zone`, see `store`).
    fn write(&self, out: &mut String) {
        let _ = write!(out, "TIMESTAMP'{}'", self.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f"));
    }
}

impl Literal for OrderId {
    fn write(&self, out: &mut String) {
        self.get().write(out);
    }
}

impl Literal for SagaVersion {
    fn write(&self, out: &mut String) {
        self.0.write(out);
    }
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
