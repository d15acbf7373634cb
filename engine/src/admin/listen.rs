//! How the admin server takes connections: plain HTTP/1.1, or HTTPS (rustls, TLS 1.2 and 1.3)
//! when `--tls-cert` and `--tls-key` are given; deadlines on every connection's TLS handshake
//! and on every request head (also between requests on a kept-alive connection), and a cap on
//! open connections, so a client that connects and sends nothing, or slowly, holds nothing for
//! long. Owns the certificate files, their loading and their errors; never touches routes,
//! tokens or handlers (`mod.rs`, `api.rs`, `page.rs`), whose request deadlines are set there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's head (line and headers), from the connection's
/// start or the previous response's end.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once; one more is closed as soon as it is accepted.
const MAX_CONNECTIONS: usize = 256;

/// The certificate (chain) and private key the admin API serves HTTPS with: PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// `--tls-cert`: the server's certificate, then any intermediates.
    pub cert: PathBuf,
    /// `--tls-key`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate files cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("{flag} {}: cannot read it: {source}", path.display())]
    Read {
        /// `--tls-cert` or `--tls-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind expected.
    #[error("{flag} {}: expected {expected}, found none ({why})", path.display())]
    Pem {
        /// `--tls-cert` or `--tls-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What it should hold.
        expected: &'static str,
        /// What the PEM reader said.
        why: String,
    },
    /// The key does not go with the certificate, or rustls refuses them.
    #[error("--tls-cert {} and --tls-key {} do not make a server certificate: {why}", cert.display(), key.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        why: rustls::Error,
    },
}

impl TlsFiles {
    /// Reads both files and checks that they make a server configuration.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let pem = |flag, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read { flag, path: path.into(), source })
        };
        let bad = |flag, path: &Path, expected, why: String| TlsError::Pem { flag, path: path.into(), expected, why };
        const CERT: &str = "PEM certificates (-----BEGIN CERTIFICATE-----)";
        const KEY: &str = "a PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC)";
        let certs = CertificateDer::pem_slice_iter(&pem("--tls-cert", &self.cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| bad("--tls-cert", &self.cert, CERT, err.to_string()))?;
        if certs.is_empty() {
            return Err(bad("--tls-cert", &self.cert, CERT, "the file has no such section".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&pem("--tls-key", &self.key)?)
            .map_err(|err| bad("--tls-key", &self.key, KEY, err.to_string()))?;
        // ring explicitly: the build links more than one provider, so none is the default.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|why| TlsError::Config { cert: self.cert.clone(), key: self.key.clone(), why })?;
        Ok(Arc::new(config))
    }
}

/// Serves `router` on `listener` until the process exits: each connection on a task of its
/// own, TLS first if `tls` is given, the peer's address in every request (`ConnectInfo`).
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: wait instead of spinning.
            Err(err) => {
                tracing::warn!("admin server cannot accept a connection: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "admin server has {MAX_CONNECTIONS} connections open: closed a new one");
            continue;
        };
        let (router, acceptor) = (router.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => connection(stream, peer, router).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => connection(stream, peer, router).await,
                    Ok(Err(err)) => tracing::debug!(%peer, "admin TLS handshake failed: {err}"),
                    Err(_) => tracing::debug!(%peer, "admin TLS handshake took over {HANDSHAKE_TIMEOUT:?}: closed"),
                },
            }
        });
    }
}

/// One HTTP/1.1 connection, requests in turn until the client closes it or is too slow.
async fn connection<S>(stream: S, peer: SocketAddr, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = served {
        tracing::debug!(%peer, "admin connection ended: {err}");
    }
}
