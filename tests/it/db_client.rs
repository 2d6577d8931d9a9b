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
//! And its statement cache: a batch of any size must reuse the statements
//! prepared for it (one text per statement, `store::rowset`).

use std::future::Future;

use sqlx_core::net::{Socket, WithSocket, connect_tcp};

use crate::helpers::*;

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

/// A batch's statements have one text whatever its size (`store::rowset`):
/// replies in batches of 1 to 16 events, twice over on one connection, must
/// find every statement of the second round prepared already. With a text per
/// row count (`VALUES` and `IN` lists) the saga shell's statements came in
/// ~130 texts, more than the connection's cache of 100 holds, and the second
/// round prepared them again (the thrash measured in BENCHMARKS.md, "Prepared
/// statements").
#[tokio::test]
async fn batches_of_every_size_reuse_the_statements_prepared_for_them() {
    const SIZES: std::ops::RangeInclusive<usize> = 1..=16;
    let app = TestApp::new().await;
    let per_round: usize = SIZES.sum();
    let mut ids = Vec::new();
    for _ in 0..2 * per_round {
        ids.push(order(&app).await);
    }
    let name: String = sqlx::query_scalar("SELECT DATABASE()").fetch_one(&app.db.pool).await.unwrap();
    let one =
        order_saga::store::Db::connect(&format!("{}/{name}", env().db_base), 1, std::time::Duration::from_secs(10))
            .await
            .unwrap();
    let mut ids = ids.into_iter();
    let mut prepared = Vec::new();
    for _round in 0..2 {
        let before = session_counter(&one, "Com_stmt_prepare").await;
        for size in SIZES {
            let batch: Vec<_> = ids.by_ref().take(size).map(|id| inbound_of(&reserved(id))).collect();
            let outcomes = app.sagas.apply_batch(&one, &batch, order_saga::orchestrator::LockMode::Wait).await.unwrap();
            assert_eq!(outcomes.outcomes.len(), size);
        }
        prepared.push(session_counter(&one, "Com_stmt_prepare").await - before);
    }
    assert!(prepared[0] > 0, "the first round prepares its statements: {prepared:?}");
    assert_eq!(prepared[1], 0, "the second round prepares nothing: {prepared:?}");
    let waiting = app.count("SELECT COUNT(*) FROM saga_instances WHERE state = 'AWAITING_PAYMENT'").await;
    assert_eq!(waiting, 2 * per_round as i64, "every reply moved its saga");
}
