//! The database client's TCP sockets: `TCP_NODELAY` must be on, and keepalive
//! with a user timeout, so that a peer that vanished cannot hold a statement for ever.
//!
//! sqlx 0.9.0 stopped setting it (transact-rs/sqlx#4335). Without it a packet
//! that gets no reply — `COM_STMT_CLOSE`, sent whenever the statement cache
//! evicts a statement — holds the next command back until the server's delayed
//! ACK fires, ~40 ms per eviction (BENCHMARKS.md, "Third session"). The fix is
//! patched in through `vendor/sqlx-core` until a sqlx release carries it; this
//! test fails if the patch is dropped while the released sqlx still lacks it.

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
