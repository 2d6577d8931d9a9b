//! The database client's TCP sockets: `TCP_NODELAY` must be on, and keepalive
//! with a user timeout, so that a peer that vanished cannot hold a statement for ever.
//!
//! sqlx 0.9.0 stopped setting it (transact-rs/sqlx#4335). Without it a packet
//! that gets no reply — `COM_STMT_CLOSE`, sent whenever the statement cache
//! evicts a statement — holds the next command back until the server's delayed
//! ACK fires, ~40 ms per eviction (BENCHMARKS.md, "Third session"). The fix is
//! patched in through `vendor/sqlx-core` until a sqlx release carries it; this
//! test fails if the patch is dropped while the released sqlx still lacks it.
//!
//! And its statement cache: a lookup of any number of keys must reuse the
//! statement prepared for it (one text per lookup, `store::rowset`).
//!
//! And its pool: a connection is pinged only when in doubt (idle for
//! `PING_AFTER_IDLE`, or released with an exchange unfinished), and one left
//! mid-query is never handed out unchecked (`vendor/sqlx-core`, `vendor/sqlx-mysql`).

use std::future::Future;

use sqlx_core::net::{Socket, WithSocket, connect_tcp};

use crate::helpers::*;
use crate::proxy::in_front_of_database;

/// What sqlx-mysql hands its connection to: here, the socket's options.
struct OptionsOf;

#[derive(Debug, PartialEq)]
struct SocketOptions {
    nodelay: bool,
    keepalive: bool,
    keepalive_idle: std::time::Duration,
    user_timeout: Option<std::time::Duration>,
}

impl WithSocket for OptionsOf {
    type Output = Option<SocketOptions>;

    fn with_socket<S: Socket>(self, socket: S) -> impl Future<Output = Option<SocketOptions>> + Send {
        let options = (&socket as &dyn std::any::Any).downcast_ref::<tokio::net::TcpStream>().map(|s| {
            let sock = socket2::SockRef::from(s);
            SocketOptions {
                nodelay: s.nodelay().expect("read TCP_NODELAY"),
                keepalive: sock.keepalive().expect("read SO_KEEPALIVE"),
                keepalive_idle: sock.tcp_keepalive_time().expect("read TCP_KEEPIDLE"),
                user_timeout: sock.tcp_user_timeout().expect("read TCP_USER_TIMEOUT"),
            }
        });
        async move { options }
    }
}

#[tokio::test]
async fn database_connections_are_opened_with_tcp_nodelay_and_keepalive() {
    // The host and port of the test server, from mysql://user:pass@host:port.
    let base = env().db_base.as_str();
    let authority = base.rsplit('@').next().unwrap_or(base).trim_start_matches("mysql://");
    let authority = authority.split('/').next().unwrap_or(authority);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().expect("the database URL's port is a number")),
        None => (authority.to_owned(), 3306),
    };
    // The very function sqlx-mysql connects through.
    let options = connect_tcp(&host, port, OptionsOf).await.expect("connect to the test database server");
    let options = options.expect("a TCP socket");
    assert!(options.nodelay, "sqlx opened the database socket without TCP_NODELAY");
    assert!(options.keepalive, "without keepalive a vanished peer holds a statement for ever");
    assert_eq!(options.keepalive_idle, std::time::Duration::from_secs(15));
    assert_eq!(options.user_timeout, Some(std::time::Duration::from_secs(30)));
}

/// A counter of this session (the pool's only connection).
async fn session_counter(db: &order_saga::store::Db, name: &str) -> i64 {
    let (_, n): (String, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SHOW SESSION STATUS LIKE '{name}'")))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    n.parse().unwrap()
}

/// Lookups by a list of keys have one statement text for any number of keys
/// (`store::rowset`): with an `IN (…)` list each length was its own text, so
/// the saga shell's statements came in ~130 texts, more than a connection's
/// cache of 100 holds, and a third of all executions paid a prepare
/// (BENCHMARKS.md, "Prepared statements"). On one connection, the inbox check
/// and the relay's read and mark of 1, 2, … 16 keys prepare one statement each.
#[tokio::test]
async fn lookups_of_any_number_of_keys_share_one_prepared_statement() {
    const MOST: usize = 16;
    let app = TestApp::new().await;
    for _ in 0..MOST {
        order(&app).await;
    }
    let outbox_ids: Vec<u64> =
        sqlx::query_scalar("SELECT id FROM outbox ORDER BY id LIMIT 16").fetch_all(&app.db.pool).await.unwrap();
    assert_eq!(outbox_ids.len(), MOST);
    let event_ids: Vec<String> = (0..MOST).map(|i| format!("lookup-{i}")).collect();
    let name: String = sqlx::query_scalar("SELECT DATABASE()").fetch_one(&app.db.pool).await.unwrap();
    let one =
        order_saga::store::Db::connect(&format!("{}/{name}", env().db_base), 1, std::time::Duration::from_secs(10))
            .await
            .unwrap();

    let before = session_counter(&one, "Com_stmt_prepare").await;
    for n in 1..=MOST {
        let mut tx = one.begin().await.unwrap();
        let ids: Vec<&str> = event_ids[..n].iter().map(String::as_str).collect();
        let (_, seen) = order_saga::store::inbox::db_now_and_existing(&mut tx, &ids).await.unwrap();
        assert!(seen.is_empty());
        tx.rollback().await.unwrap();
    }
    let inbox = session_counter(&one, "Com_stmt_prepare").await - before;

    let before = session_counter(&one, "Com_stmt_prepare").await;
    for n in 1..=MOST {
        let rows = order_saga::store::outbox::rows(&one.pool, &outbox_ids[..n]).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), outbox_ids[..n], "every row, in id order");
    }
    let read = session_counter(&one, "Com_stmt_prepare").await - before;

    let before = session_counter(&one, "Com_stmt_prepare").await;
    for n in 1..=MOST {
        order_saga::store::outbox::mark_published(&one.pool, &outbox_ids[..n]).await.unwrap();
    }
    let mark = session_counter(&one, "Com_stmt_prepare").await - before;

    assert_eq!((inbox, read, mark), (1, 1, 1), "one prepare per lookup, whatever the number of keys");
    let last = outbox_ids[MOST - 1];
    let published: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL AND id <= ?")
        .bind(last)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(published, MOST as i64, "every listed row is marked published");
}

/// sqlx pinged a connection when the pool handed it out and again when it came
/// back: two round trips per transaction, half of all the commands the daemon
/// sent at 200 sagas/s (BENCHMARKS.md, "A ping only when in doubt"). A
/// connection in steady use, whose every exchange completed, is not pinged.
#[tokio::test]
async fn a_connection_in_steady_use_is_not_pinged() {
    const OPERATIONS: i64 = 40;
    let (_db, url) = fresh_db().await;
    let one = order_saga::store::Db::connect(&url, 1, std::time::Duration::from_secs(10)).await.unwrap();
    let before = session_counter(&one, "Com_admin_commands").await;
    for _ in 0..OPERATIONS / 2 {
        let mut tx = one.begin().await.unwrap();
        let _: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        // `fetch_all` reads the reply to its end; `fetch_one` stops after the
        // first row and leaves the rest to be drained (and the connection
        // pinged) on release.
        let _: Vec<i32> = sqlx::query_scalar("SELECT 2").fetch_all(&one.pool).await.unwrap();
    }
    let pings = session_counter(&one, "Com_admin_commands").await - before;
    // Two per operation before; none now, unless the box stalled for a whole
    // `PING_AFTER_IDLE` between two of them (then one each time).
    assert!(pings < OPERATIONS / 2, "{pings} pings for {OPERATIONS} operations");
}

/// A transaction dropped without a commit leaves a ROLLBACK queued on its
/// connection. It is flushed when the connection is released, so the
/// transaction's locks go at once, not when the connection is next used.
#[tokio::test]
async fn a_dropped_transaction_gives_its_locks_back_on_release() {
    let (db, url) = fresh_db().await;
    sqlx::raw_sql("CREATE TABLE t (id INT PRIMARY KEY)").execute(&db.pool).await.unwrap();
    let one = order_saga::store::Db::connect(&url, 1, std::time::Duration::from_secs(10)).await.unwrap();
    let mut tx = one.begin().await.unwrap();
    sqlx::query("INSERT INTO t VALUES (1)").execute(&mut *tx).await.unwrap();
    drop(tx);
    // `one`'s connection is not used again: only its release can roll back.
    let mut other = db.begin().await.unwrap();
    sqlx::query("SET SESSION innodb_lock_wait_timeout = 10").execute(&mut *other).await.unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut *other)
        .await
        .expect("the dropped transaction was rolled back and its lock released");
    other.commit().await.unwrap();
    // Kept open until here: closing the pool would end the session and free
    // the lock whether or not the release rolled back.
    drop(one);
}

/// A query whose future was dropped (a deadline, a client that went away)
/// leaves its reply unread. Such a connection is pinged on release; on one
/// that went silent the ping fails and the connection is closed. Without the
/// check (sqlx-mysql counted only unsent bytes as "needing a flush") the pool
/// handed the silent connection to the next caller, who waited on it.
#[tokio::test]
async fn a_connection_left_mid_query_is_checked_before_it_is_reused() {
    let (db, url) = fresh_db().await;
    let (proxy, proxied) = in_front_of_database(&url).await;
    let one = order_saga::store::Db::connect(&proxied, 1, std::time::Duration::from_secs(30)).await.unwrap();
    let pool = one.pool.clone();
    let query = tokio::spawn(async move { sqlx::query("SELECT SLEEP(10) AS abandoned").execute(&pool).await });
    // Abandoned once the server runs it: its reply is then outstanding.
    eventually(std::time::Duration::from_secs(10), "the server runs the query", || {
        let pool = db.pool.clone();
        async move {
            let running: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE DB = DATABASE() AND INFO LIKE 'SELECT SLEEP(10)%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            running == 1
        }
    })
    .await;
    query.abort();
    assert!(query.await.unwrap_err().is_cancelled(), "the query is abandoned mid-way");
    proxy.silence();
    let next = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        sqlx::query_scalar::<_, i32>("SELECT 3").fetch_one(&one.pool),
    )
    .await
    .expect("the next caller is not handed the silent connection")
    .unwrap();
    assert_eq!(next, 3);
    proxy.cut();
}
