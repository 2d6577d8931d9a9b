//! The HTTP listener as the daemon runs it (`http::server::serve`): slow
//! clients, the connection cap, TLS, mTLS, certificate rotation and the
//! headers every answer carries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use order_saga::http::server::{ServeSettings, TlsFiles, serve};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// A deadline for things that must happen, not a measurement.
const DEADLINE: Duration = Duration::from_secs(30);

fn settings(tls: Option<TlsFiles>) -> ServeSettings {
    ServeSettings {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 64,
        tls,
        grace: Duration::from_secs(1),
    }
}

/// Serves `app`'s router on a free port until the token is cancelled.
async fn listen(app: &TestApp, s: ServeSettings) -> (u16, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    serve(listener, app.router.clone(), s, app.state.metrics.orders.clone(), stop.clone()).await.unwrap();
    (port, stop)
}

/// Reads until the server closes the connection; returns what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut got))
        .await
        .expect("the server never closed the connection")
        .ok();
    got
}

#[tokio::test]
async fn a_client_that_sends_half_a_header_is_disconnected() {
    let app = TestApp::new().await;
    let (port, _stop) = listen(&app, settings(None)).await;
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.unwrap();
    let answer = until_closed(&mut slow).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "{}", String::from_utf8_lossy(&answer));
    // An idle connection that never sends anything is closed the same way.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    until_closed(&mut idle).await;
    // A whole request is still served.
    let mut ok = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = until_closed(&mut ok).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK"));
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_counted_the_open_ones_are_served() {
    let app = TestApp::new().await;
    let (port, _stop) = listen(&app, ServeSettings { max_connections: 1, ..settings(None) }).await;
    let mut first = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The first is accepted: it gets an answer on a keep-alive connection.
    first.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(DEADLINE, first.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    let mut second = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = second.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(until_closed(&mut second).await, b"", "closed without an answer");
    assert_eq!(app.state.metrics.orders.http_connections_refused_total.get(), 1);
}

/// A CA, and certificates it signs.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("order-saga-tls-{}", key()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "order-saga test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki { dir, ca };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `{name}.pem` and `{name}.key` for a leaf certificate.
    fn issue(&self, name: &str, san: &str, usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (self.path(&format!("{name}.pem")), self.path(&format!("{name}.key")));
        // The key first: a watcher that sees the new certificate sees its key.
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::write(&c, cert.pem()).unwrap();
        (c, k)
    }

    fn identity(&self, name: &str) -> reqwest::Identity {
        let mut pem = std::fs::read(self.path(&format!("{name}.pem"))).unwrap();
        pem.extend(std::fs::read(self.path(&format!("{name}.key"))).unwrap());
        reqwest::Identity::from_pem(&pem).unwrap()
    }
}

fn client(roots: &[&Path], identity: Option<reqwest::Identity>) -> reqwest::Client {
    let certs = roots.iter().map(|r| reqwest::Certificate::from_pem(&std::fs::read(r).unwrap()).unwrap());
    let mut b = reqwest::Client::builder().tls_certs_only(certs);
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().unwrap()
}

#[tokio::test]
async fn the_listener_serves_tls_from_the_certificate_files_and_reloads_them() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let app = TestApp::new().await;
    let (port, _stop) = listen(&app, settings(Some(TlsFiles { cert, key, client_ca: None }))).await;
    let url = format!("https://localhost:{port}/orders/search");
    let r = client(&[&pki.path("ca.pem")], None).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    assert!(!String::from_utf8_lossy(&until_closed(&mut plain).await).contains("HTTP/1.1 200"));
    // Rotation: a certificate from another CA replaces the files; new
    // connections get it without a restart.
    let other = Pki::new();
    let (new_cert, new_key) = other.issue("server", "localhost", ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::copy(&new_key, pki.path("server.key")).unwrap();
    std::fs::copy(&new_cert, pki.path("server.pem")).unwrap();
    let trusts_new_only = client(&[&other.path("ca.pem")], None);
    eventually(DEADLINE, "the rotated certificate is served", || async {
        trusts_new_only.get(&url).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificates_are_served() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "localhost", ExtendedKeyUsagePurpose::ServerAuth);
    pki.issue("client", "checkout-service", ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = Pki::new();
    stranger.issue("client", "checkout-service", ExtendedKeyUsagePurpose::ClientAuth);
    let app = TestApp::new().await;
    let files = TlsFiles { cert, key, client_ca: Some(pki.path("ca.pem")) };
    let (port, _stop) = listen(&app, settings(Some(files))).await;
    let url = format!("https://localhost:{port}/healthz");
    let ca = pki.path("ca.pem");
    assert!(client(&[&ca], None).get(&url).send().await.is_err(), "no client certificate");
    assert!(
        client(&[&ca], Some(stranger.identity("client"))).get(&url).send().await.is_err(),
        "a certificate of another CA"
    );
    let r = client(&[&ca], Some(pki.identity("client"))).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(app.state.metrics.orders.http_tls_handshake_failures_total.get() >= 2);
}

#[tokio::test]
async fn answers_are_not_sniffed_and_order_data_is_not_cached() {
    let app = TestApp::new().await;
    let r = app.get("/orders/search").await;
    assert_eq!(r.headers.get("x-content-type-options").unwrap(), "nosniff");
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
    assert!(r.headers.get("strict-transport-security").is_none(), "no HSTS without TLS");
    let h = app.get("/healthz").await;
    assert_eq!(h.headers.get("x-content-type-options").unwrap(), "nosniff");
    assert!(h.headers.get("cache-control").is_none());
    let mut state = app.state.clone();
    state.hsts = true;
    let tls_router = order_saga::http::router(state);
    let resp = tower::ServiceExt::oneshot(
        tls_router,
        axum::http::Request::builder().uri("/healthz").body(axum::body::Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.headers().get("strict-transport-security").unwrap(), "max-age=31536000");
}

#[tokio::test]
async fn with_an_ops_address_the_admin_surface_leaves_the_public_port() {
    use order_saga::http::{Surface, router_for};
    let app = TestApp::new().await;
    let status = |surface: Surface, path: &'static str| {
        let router = router_for(app.state.clone(), surface);
        async move {
            let req = axum::http::Request::builder()
                .uri(path)
                .header("authorization", format!("Bearer {OPS_TOKEN}"))
                .body(axum::body::Body::empty())
                .unwrap();
            tower::ServiceExt::oneshot(router, req).await.unwrap().status().as_u16()
        }
    };
    let paths = ["/orders/search", "/openapi.json", "/ops/overview", "/ops/ui", "/metrics", "/healthz"];
    let mut seen = Vec::new();
    for surface in [Surface::All, Surface::Public, Surface::Admin] {
        let mut codes = Vec::new();
        for p in paths {
            codes.push(status(surface, p).await);
        }
        seen.push((surface, codes));
    }
    assert_eq!(
        seen,
        [
            (Surface::All, vec![200, 200, 200, 200, 200, 200]),
            (Surface::Public, vec![200, 200, 404, 404, 404, 200]),
            (Surface::Admin, vec![404, 404, 200, 200, 200, 200]),
        ]
    );
}

/// The daemon with ORDER_SAGA_OPS_ADDR: two listeners, the admin surface
/// only on the second; and it says at start that the orders API is open.
#[tokio::test]
async fn the_daemon_serves_ops_and_metrics_on_the_ops_address_only() {
    let env = crate::daemon::SagaEnv::new().await;
    let d = env.start_daemon(&[("ORDER_SAGA_OPS_ADDR", "127.0.0.1:0")]).await;
    let ops = d.ops_base.clone().expect("the daemon says where its ops listener is");
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).bearer_auth(OPS_TOKEN).send().await.map(|r| r.status().as_u16()).unwrap_or_default() }
    };
    assert_eq!(get(format!("{}/orders/search", d.base)).await, 200);
    assert_eq!(get(format!("{}/metrics", d.base)).await, 404);
    assert_eq!(get(format!("{}/ops/overview", d.base)).await, 404);
    assert_eq!(get(format!("{ops}/metrics")).await, 200);
    assert_eq!(get(format!("{ops}/ops/overview")).await, 200);
    assert_eq!(get(format!("{ops}/orders/search")).await, 404);
    assert!(d.logs().contains("the orders API accepts every caller"), "the startup warning: {}", d.logs());
}
