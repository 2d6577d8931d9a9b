//! A TCP proxy the test owns, in front of MariaDB or the broker (in the spirit
//! of Toxiproxy): `cut()` drops every established connection and refuses new
//! ones until `restore()`, without touching the server itself; `silence()`
//! makes every established connection stop forwarding without closing (a
//! stuck server or middlebox), while new connections go through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    counter: Arc<AtomicU64>,
    silenced: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let gen_tx = generation.clone();
        let (silenced, _) = watch::channel(0u64);
        let silence_tx = silenced.clone();
        let up2 = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = gen_tx.subscribe();
                let mut silence = silence_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (mut c, mut s) = (client, server);
                    let silenced = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut c, &mut s) => false,
                        _ = cut.changed() => false, // dropping both ends cuts the connection
                        _ = silence.changed() => true,
                    };
                    if silenced {
                        // Both ends stay open, nothing is forwarded, until a cut.
                        let _ = cut.changed().await;
                        drop((c, s));
                    }
                });
            }
        });
        Proxy { port, up, generation, counter: Arc::new(AtomicU64::new(0)), silenced }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.generation.send_replace(n);
    }

    /// Every established connection stops forwarding, without closing; new
    /// connections go through.
    pub fn silence(&self) {
        self.silenced.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A proxy in front of the server of `url` (a MariaDB URL with a database),
/// and the same URL through it.
#[allow(dead_code, reason = "examples/chaos includes this file and builds its own URLs")]
pub async fn in_front_of_database(url: &str) -> (Proxy, String) {
    let (user, rest) = url.split_once('@').unwrap();
    let (server, db) = rest.split_once('/').unwrap();
    let proxy = Proxy::start(server.to_owned()).await;
    let proxied = format!("{user}@127.0.0.1:{}/{db}", proxy.port);
    (proxy, proxied)
}
