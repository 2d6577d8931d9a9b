//! The database client's TCP sockets: `TCP_NODELAY` must be on.
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

/// What sqlx-mysql hands its connection to: here, just the socket's `TCP_NODELAY`.
struct NoDelayOf;

impl WithSocket for NoDelayOf {
    type Output = Option<bool>;

    fn with_socket<S: Socket>(self, socket: S) -> impl Future<Output = Option<bool>> + Send {
        let nodelay = (&socket as &dyn std::any::Any)
            .downcast_ref::<tokio::net::TcpStream>()
            .map(|s| s.nodelay().expect("read TCP_NODELAY"));
        async move { nodelay }
    }
}

#[tokio::test]
async fn database_connections_are_opened_with_tcp_nodelay() {
    // The host and port of the test server, from mysql://user:pass@host:port.
    let base = env().db_base.as_str();
    let authority = base.rsplit('@').next().unwrap_or(base).trim_start_matches("mysql://");
    let authority = authority.split('/').next().unwrap_or(authority);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().expect("the database URL's port is a number")),
        None => (authority.to_owned(), 3306),
    };
    // The very function sqlx-mysql connects through.
    let nodelay = connect_tcp(&host, port, NoDelayOf).await.expect("connect to the test database server");
    assert_eq!(nodelay, Some(true), "sqlx opened the database socket without TCP_NODELAY");
}
