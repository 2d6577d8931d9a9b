//! MySQL/MariaDB persistence (sqlx).
//!
//! * Every connection runs at READ COMMITTED (set with `SET SESSION TRANSACTION
//!   ISOLATION LEVEL`, which MariaDB and MySQL 8 both accept). Correctness comes
//!   from row locks and version checks, not from snapshots; and under REPEATABLE
//!   READ a relay or sweeper scan that reaches the end of an index takes a gap
//!   lock that blocks every concurrent INSERT (measured on MariaDB 10.11).
//! * Transactions are short and never span a network call to Kafka or HTTP.
//! * Deadlocks (1213), lock wait timeouts (1205) and snapshot conflicts (1020)
//!   are retried by [`retry`] with jittered backoff; every transaction in this
//!   crate is written so that running it again is safe.
//! * Timestamps are UTC `DATETIME(6)`; the driver sets `time_zone='+00:00'`.

pub mod audit;
pub mod idempotency;
mod ids;
pub mod inbox;
pub mod inspect;
pub mod jobs;
pub mod leases;
pub mod limits;
pub mod orders;
pub mod outbox;
pub mod parked;
pub(crate) mod rowset;
pub(crate) mod script;
pub mod sessions;
pub mod timers;
pub mod watermarks;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection as _, Executor, MySql, MySqlPool, Transaction};

/// Errors of the storage layer, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error while {action}: {source}")]
    Database {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A race with another transaction that running again resolves.
    #[error("lost a race: {0}")]
    Race(&'static str),
    /// A saga of a definition version this replica has not loaded: a newer
    /// replica (rolling deploy) can apply it; this one waits.
    #[error("saga definition version {version} is not loaded by this replica")]
    DefinitionNotLoaded { version: u32 },
    /// The database did not answer within the deadline ([`set_deadline`]): a
    /// connection that went silent mid-statement (a stuck server or proxy, a
    /// path that drops packets). Transient: the next try takes another connection.
    #[error("the database did not answer within {}s while {action}", deadline_duration().as_secs_f64())]
    Timeout { action: &'static str },
}

/// The deadline when none is configured.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// A pooled connection idle at least this long is pinged before it is handed
/// out. One used more recently is not: its last reply proved it alive, and a
/// connection that failed since would have left an exchange unfinished, which
/// makes the pool ping it on release and close it (vendor/sqlx-core).
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

static DEADLINE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Sets the process's database deadline (`ORDER_SAGA_DATABASE_DEADLINE`),
/// once, at connect; later calls change nothing.
pub fn set_deadline(d: Duration) {
    let _ = DEADLINE.set(d);
}

/// The longest any transaction, or any statement outside one, may take: far
/// beyond what a healthy one needs, short enough that a silent connection
/// cannot hold a consumer partition, the relay or the sweeper for long. The
/// connection that went silent is dropped (the vendored sqlx closes it when its
/// release ping does not answer in 5 s; TCP keepalive ends it if the peer is
/// gone), and the server ends its session, locks and all, at twice the
/// deadline ([`SessionLimits`]).
pub fn deadline_duration() -> Duration {
    DEADLINE.get().copied().unwrap_or(DEFAULT_DEADLINE)
}

/// Runs `op` with the deadline.
pub async fn deadline<T>(
    action: &'static str,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(deadline_duration(), op).await.unwrap_or(Err(StoreError::Timeout { action }))
}

impl StoreError {
    /// Whether running the whole transaction again may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database { source, .. } => is_transient(source),
            StoreError::Race(_) | StoreError::DefinitionNotLoaded { .. } | StoreError::Timeout { .. } => true,
            _ => false,
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database { source: sqlx::Error::Database(db), .. } if db.is_unique_violation())
    }
}

/// Adds what the code was doing to a sqlx error: `.ctx("inserting the order")`.
pub(crate) trait Ctx<T> {
    fn ctx(self, action: &'static str) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for Result<T, sqlx::Error> {
    fn ctx(self, action: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Database { action, source })
    }
}

/// Whether running the transaction again may succeed without any change to
/// its input: it lost a race (deadlock 1213, lock wait 1205, snapshot 1020),
/// or the server is unreachable, restarting, read-only during a failover or
/// out of connections. Everything else the server refuses is deterministic
/// for the same input — the consumer then isolates the event that causes it.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let number = db.try_downcast_ref::<MySqlDatabaseError>().map(MySqlDatabaseError::number);
            matches!(
                number,
                // races
                Some(1213 | 1205 | 1020)
                // too many connections, server shutdown, connection killed, query interrupted
                | Some(1040 | 1053 | 1927 | 1317)
                // read-only during a failover
                | Some(1290 | 1836)
                // client-side connection errors reported as server errors
                | Some(2002 | 2003 | 2006 | 2013)
                // statement deadline (MariaDB max_statement_time, MySQL max_execution_time)
                | Some(1969 | 3024)
                // group replication / Galera: certification rollback, node not ready, deadlock on commit
                | Some(3101 | 1047 | 1180)
                // MySQL 8's idle disconnect; prepared-statement limit reached
                | Some(4031 | 1461)
            ) || db.code().as_deref() == Some("40001")
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

pub const MAX_ATTEMPTS: u32 = 8;

/// Runs `op` until it succeeds, fails with a non-transient error, or
/// [`MAX_ATTEMPTS`] transient failures happened. Backoff: 5 ms doubling to
/// ~320 ms, with full jitter so that colliding transactions spread out.
pub async fn retry<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0;
    loop {
        match deadline("running a transaction", op()).await {
            // A missing definition version is waited out by the caller, not here.
            Err(e)
                if e.is_transient()
                    && !matches!(e, StoreError::DefinitionNotLoaded { .. })
                    && attempt + 1 < MAX_ATTEMPTS =>
            {
                attempt += 1;
                let cap = 5u64 << attempt.min(6);
                let sleep = rand::random_range(1..=cap);
                tracing::debug!(attempt, error = %e, "transient database error; retrying transaction");
                tokio::time::sleep(Duration::from_millis(sleep)).await;
            }
            other => return other,
        }
    }
}

/// The first `n` characters of `s` (columns have character limits).
pub(crate) fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Wall-clock time truncated to what `DATETIME(6)` stores, so values read back
/// compare equal to the ones written. Bookkeeping only (`created_at`-like
/// columns); saga transitions and timers use [`db_now`].
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The database's clock, truncated like [`now`]. Saga transitions read time
/// here, so that timers are armed with the same clock that fires them
/// (`timers::lock_due` compares with `NOW(6)`): a replica whose host clock is skewed
/// can neither fire a timeout early nor late.
pub async fn db_now(tx: &mut Tx) -> Result<DateTime<Utc>, StoreError> {
    let t: chrono::NaiveDateTime =
        sqlx::query_scalar("SELECT NOW(6)").fetch_one(&mut **tx).await.ctx("reading the database clock")?;
    Ok(from_db_clock(t))
}

/// A `NOW(6)` read from the server, as [`db_now`] returns it.
pub(crate) fn from_db_clock(t: chrono::NaiveDateTime) -> DateTime<Utc> {
    t.and_utc().trunc_subsecs(6)
}

/// Database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: MySqlPool,
    /// How a group of new orders gets its auto-increment ids (read from the
    /// server at connect).
    pub order_ids: OrderIds,
}

/// How a multi-row `INSERT INTO orders` may be used for a group of new orders.
///
/// The ids come back as one number (`LAST_INSERT_ID()`, the first id of the
/// statement); the others are only derivable when the server promises that
/// one statement's ids are consecutive: `innodb_autoinc_lock_mode` 0 or 1
/// ("traditional", "consecutive": MariaDB's and MySQL 5.7's default) and an
/// `auto_increment_increment` of 1. MySQL 8's default mode 2 ("interleaved",
/// also required by Galera) may interleave two statements' ids, so there each
/// order is inserted by its own statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderIds {
    /// One statement for a whole group; ids are `first..first + n`.
    Consecutive,
    /// One statement per order.
    PerRow,
}

impl OrderIds {
    /// What the server's settings allow (see the type).
    pub fn from_server(autoinc_lock_mode: i64, auto_increment_increment: i64) -> OrderIds {
        if (0..=1).contains(&autoinc_lock_mode) && auto_increment_increment == 1 {
            OrderIds::Consecutive
        } else {
            OrderIds::PerRow
        }
    }
}

pub type Tx = Transaction<'static, MySql>;

/// How long the server keeps a session whose client stopped talking.
///
/// The deadline ([`deadline`]) frees this process from a connection that went
/// silent, but not the server: a session left waiting for its client's next
/// command inside a transaction keeps that transaction's row locks until the
/// server's `wait_timeout` (8 hours by default) or its TCP keepalive (2 hours)
/// ends it. Every later transaction that needs one of those rows — the retry
/// of the same `POST /orders` on its idempotency key, the next event of the
/// same saga — then waits for the lock and fails, again and again: the chaos
/// scenario "database connections silent mid-query" caught an order whose
/// retries failed for 90 s. So each session tells the server to give up on a
/// silent client after twice the deadline (`wait_timeout`, and the
/// `net_read_timeout` / `net_write_timeout` of a packet half sent), which
/// rolls its transaction back; MySQL and MariaDB both honour the three. A
/// healthy client never waits that long: every transaction ends within the
/// deadline, and the pool closes a connection idle for one deadline before
/// the server would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Seconds the server waits for a silent client (the three variables).
    pub server_wait_secs: u64,
    /// How long the pool keeps an idle connection.
    pub pool_idle: Duration,
}

impl SessionLimits {
    /// The least the server waits, whatever the deadline.
    const FLOOR_SECS: u64 = 2;

    pub fn for_deadline(deadline: Duration) -> SessionLimits {
        let deadline_secs = deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0);
        let server_wait_secs = (2 * deadline_secs).max(Self::FLOOR_SECS);
        SessionLimits { server_wait_secs, pool_idle: Duration::from_secs(server_wait_secs / 2) }
    }

    /// The statement each new session runs.
    pub fn statement(self) -> String {
        let n = self.server_wait_secs;
        format!("SET SESSION wait_timeout = {n}, net_read_timeout = {n}, net_write_timeout = {n}")
    }
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Db {
    /// Connects lazily-validated: the pool is created and one connection is
    /// opened to fail fast on a wrong URL or password.
    pub async fn connect(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<Db, StoreError> {
        Db::connect_with_deadline(url, max_connections, acquire_timeout, deadline_duration()).await
    }

    /// [`Db::connect`] for a given deadline: the server's session limits
    /// follow it ([`SessionLimits`]).
    pub async fn connect_with_deadline(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
        deadline: Duration,
    ) -> Result<Db, StoreError> {
        let limits = SessionLimits::for_deadline(deadline);
        let options: MySqlConnectOptions = url.parse().ctx("parsing ORDER_SAGA_DATABASE_URL")?;
        // Write scripts carry their values in their text (`script`): the
        // driver must not log statements; a slow script is logged by its
        // steps' names instead.
        let options = options.disable_statement_logging();
        let pool = MySqlPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(acquire_timeout)
            .idle_timeout(limits.pool_idle)
            // A connection is pinged when it is handed out only if it sat idle
            // for `PING_AFTER_IDLE`; on release only if an exchange was left
            // unfinished (vendor/sqlx-core). sqlx pinged on both, two round
            // trips per transaction (BENCHMARKS.md, "A ping only when in doubt").
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(limits.statement())).execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .ctx("connecting to the database")?;
        let (mode, increment): (i64, i64) = sqlx::query_as(
            "SELECT CAST(@@innodb_autoinc_lock_mode AS SIGNED), CAST(@@auto_increment_increment AS SIGNED)",
        )
        .fetch_one(&pool)
        .await
        .ctx("reading the server's auto-increment settings")?;
        let order_ids = OrderIds::from_server(mode, increment);
        tracing::debug!(
            innodb_autoinc_lock_mode = mode,
            auto_increment_increment = increment,
            ?order_ids,
            "order id allocation"
        );
        Ok(Db { pool, order_ids })
    }

    /// Applies pending migrations (serialised across replicas by sqlx's
    /// `GET_LOCK`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        self.pool.begin().await.ctx("starting a transaction")
    }

    /// `SELECT 1` — for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.ctx("pinging the database")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{OrderIds, SessionLimits};

    #[test]
    fn the_server_gives_up_on_a_silent_client_at_twice_the_deadline_and_the_pool_first() {
        let l = SessionLimits::for_deadline(Duration::from_secs(30));
        assert_eq!((l.server_wait_secs, l.pool_idle), (60, Duration::from_secs(30)));
        assert_eq!(l.statement(), "SET SESSION wait_timeout = 60, net_read_timeout = 60, net_write_timeout = 60");
        // A part of a second counts as a whole one; never below the floor.
        assert_eq!(SessionLimits::for_deadline(Duration::from_millis(2_500)).server_wait_secs, 6);
        assert_eq!(SessionLimits::for_deadline(Duration::from_millis(300)).server_wait_secs, 2);
        assert_eq!(SessionLimits::for_deadline(Duration::ZERO).pool_idle, Duration::from_secs(1));
    }

    #[test]
    fn a_group_of_orders_shares_one_insert_only_where_its_ids_are_consecutive() {
        // MariaDB and MySQL 5.7 defaults ("consecutive"), and "traditional".
        assert_eq!(OrderIds::from_server(1, 1), OrderIds::Consecutive);
        assert_eq!(OrderIds::from_server(0, 1), OrderIds::Consecutive);
        // MySQL 8's default ("interleaved"), Galera's requirement.
        assert_eq!(OrderIds::from_server(2, 1), OrderIds::PerRow);
        // Ids that step by more than one (multi-primary setups).
        assert_eq!(OrderIds::from_server(1, 2), OrderIds::PerRow);
    }
}
