//! The HTTP listener: accepts connections and serves the router over HTTP/1.1
//! with hyper directly (not `axum::serve`, which installs no timer and so no
//! header-read timeout), optionally over TLS (rustls, optional client
//! certificates), with a cap on open connections and a graceful shutdown.
//!
//! * **Slow clients**: a connection that has not sent a whole request header
//!   (or finished its TLS handshake) within the header-read timeout is
//!   closed; so is a keep-alive connection idle that long.
//! * **Too many connections**: beyond the cap, new ones are closed at once
//!   (`http_connections_refused_total`); the ones open keep being served.
//! * **Certificate rotation**: the certificate and key files are checked
//!   every few seconds and read again when they change; a broken new pair is
//!   logged and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are checked for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Why the listener cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the key in {path} cannot sign: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// TLS of the listener: where the certificate and key live, and optionally
/// the CA that signs client certificates (mTLS).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// How the listener serves.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub tls: Option<TlsFiles>,
    /// How long a shutdown waits for requests in flight.
    pub grace: Duration,
}

/// Checks the TLS files now (a bad certificate fails the start), then
/// serves until `shutdown`; then waits up to `grace` for open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    metrics: crate::telemetry::metrics::OrderMetrics,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let tls = match &settings.tls {
        None => None,
        Some(files) => {
            let resolver = Arc::new(ReloadingCert::load(files)?);
            tokio::spawn(resolver.clone().watch(shutdown.clone()));
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(files, resolver)?)))
        }
    };
    Ok(tokio::spawn(accept_loop(listener, router, settings, metrics, tls, shutdown)))
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    metrics: crate::telemetry::metrics::OrderMetrics,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout).keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.http_connections_refused_total.inc();
            tracing::debug!(%peer, "too many HTTP connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(super::Peer(peer));
                req
            },
        ));
        let http = http.clone();
        let watcher = graceful.watcher();
        let (tls, timeout, tls_failures) =
            (tls.clone(), settings.header_read_timeout, metrics.http_tls_handshake_failures_total.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let conn = http.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(conn).await;
                    }
                    Ok(Err(e)) => {
                        tls_failures.inc();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        tls_failures.inc();
                        tracing::debug!(%peer, "TLS handshake not finished within the header-read timeout");
                    }
                },
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(settings.grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP requests still open after the grace period; closing them");
    }
}

fn tls_config(files: &TlsFiles, resolver: Arc<ReloadingCert>) -> Result<rustls::ServerConfig, ServerError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| ServerError::Tls(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ServerError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let pem = |e: rustls_pki_types::pem::Error| ServerError::Pem { path: path.to_owned(), message: e.to_string() };
    let certs = CertificateDer::pem_file_iter(path).map_err(pem)?.collect::<Result<Vec<_>, _>>().map_err(pem)?;
    if certs.is_empty() {
        return Err(ServerError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, ServerError> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ServerError::Pem { path: files.key.clone(), message: e.to_string() })?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| ServerError::Key { path: files.key.clone(), message: e.to_string() })?;
    let ck = CertifiedKey::new(certs, signing);
    // The key must belong to the certificate.
    ck.keys_match().map_err(|e| ServerError::Key { path: files.key.clone(), message: e.to_string() })?;
    Ok(ck)
}

/// When the certificate and the key file were last modified.
type Stamp = Option<(SystemTime, SystemTime)>;

fn modified(files: &TlsFiles) -> Stamp {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

/// The listener's certificate, read again when its files change.
#[derive(Debug)]
struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<(Arc<CertifiedKey>, Stamp)>,
}

impl ReloadingCert {
    fn load(files: &TlsFiles) -> Result<ReloadingCert, ServerError> {
        let stamp = modified(files);
        let ck = certified_key(files)?;
        Ok(ReloadingCert { files: files.clone(), current: RwLock::new((Arc::new(ck), stamp)) })
    }

    async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            self.reload_if_changed();
        }
    }

    /// Reads the files again if their modification times changed.
    fn reload_if_changed(&self) {
        let stamp = modified(&self.files);
        let seen = self.current.read().map(|c| c.1).unwrap_or(None);
        if stamp.is_none() || stamp == seen {
            return;
        }
        match certified_key(&self.files) {
            Ok(ck) => {
                if let Ok(mut c) = self.current.write() {
                    *c = (Arc::new(ck), stamp);
                }
                tracing::info!(cert = %self.files.cert.display(), "HTTP listener certificate reloaded");
            }
            // Half-written during a rotation, say: keep serving the old one,
            // try again at the next check (the stamp is not recorded).
            Err(e) => tracing::warn!(error = %e, "new HTTP listener certificate not usable; keeping the old one"),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}
