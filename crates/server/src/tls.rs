//! TLS termination (rustls, aws-lc-rs provider) and client certificates (mTLS).
//!
//! With `tls.cert_file` and `tls.key_file` set, [`serve`] replaces `axum::serve`: an
//! accept loop that completes each handshake in its own task under a time bound (a
//! failing or stalled handshake only ends its own connection), then serves HTTP/1.1 or
//! HTTP/2 (ALPN) with hyper. Draining works as with plain HTTP: on shutdown the listener
//! closes, new requests on open connections are refused (503, `AppState::is_draining`),
//! in-flight ones finish, and the caller's grace period bounds the wait.
//!
//! With `tls.client_ca_file` set, client certificates are requested and verified against
//! that bundle (`client_auth: required` refuses a handshake without a valid one;
//! `optional` accepts a connection without one). A verified certificate's SHA-256
//! fingerprint is stamped into the request as [`CLIENT_CERT_HEADER`] (any client-sent
//! value is removed first), and `auth.rs` maps it to an API key registered with
//! `client_cert_sha256` — so roles, scopes, expiry and revocation apply unchanged.
//!
//! Certificate files are re-read when their modification time changes (checked every
//! `tls.reload_interval_ms`); a reload that fails keeps the previous configuration.

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Internal header carrying the verified client certificate's SHA-256 (lower-case hex).
/// Set only by [`stamp_client_cert`] from the TLS layer; never trusted from a client.
pub const CLIENT_CERT_HEADER: &str = "x-palisade-internal-client-cert-sha256";

/// Largest PEM file read (certificate chain, key or CA bundle).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// `tls` section of the configuration (`PALISADE_TLS_*` in the environment).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Server certificate chain (PEM, leaf first). TLS is on when this is set.
    pub cert_file: Option<String>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<String>,
    /// CA bundle (PEM) client certificates are verified against; when set, client
    /// certificates are requested.
    pub client_ca_file: Option<String>,
    /// `optional` (connections without a client certificate are accepted) or
    /// `required` (refused at the handshake). Only meaningful with `client_ca_file`.
    pub client_auth: String,
    /// Longest a TLS handshake may take before the connection is dropped.
    pub handshake_timeout_ms: u64,
    /// How often the certificate files' modification times are checked for a reload
    /// (0: never; restart to change certificates).
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: "optional".into(),
            handshake_timeout_ms: 10_000,
            reload_interval_ms: 30_000,
        }
    }
}

fn set(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.trim().is_empty())
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        set(&self.cert_file)
    }

    pub fn validate(&self) -> Result<(), String> {
        if set(&self.cert_file) != set(&self.key_file) {
            return Err("tls.cert_file and tls.key_file must be set together".into());
        }
        if !matches!(self.client_auth.as_str(), "optional" | "required") {
            return Err("tls.client_auth must be optional or required".into());
        }
        if self.client_auth == "required" && !set(&self.client_ca_file) {
            return Err("tls.client_auth: required needs tls.client_ca_file".into());
        }
        if set(&self.client_ca_file) && !self.enabled() {
            return Err("tls.client_ca_file needs tls.cert_file and tls.key_file".into());
        }
        if self.handshake_timeout_ms == 0 || self.handshake_timeout_ms > 300_000 {
            return Err("tls.handshake_timeout_ms must be between 1 and 300000".into());
        }
        Ok(())
    }

    fn files(&self) -> impl Iterator<Item = &str> {
        [&self.cert_file, &self.key_file, &self.client_ca_file]
            .into_iter()
            .filter_map(|f| f.as_deref())
    }
}

fn read_pem(path: &str, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{what} {path}: {e}"))?;
    let mut buf = Vec::new();
    f.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{what} {path}: {e}"))?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{what} {path}: larger than 1 MiB"));
    }
    Ok(buf)
}

fn certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {path}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} {path}: no certificate found"));
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the rustls server configuration from the files named in `cfg`.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let (Some(cert_file), Some(key_file)) = (cfg.cert_file.as_deref(), cfg.key_file.as_deref())
    else {
        return Err("tls.cert_file and tls.key_file must be set".into());
    };
    let chain = certs(cert_file, "tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_slice(&read_pem(key_file, "tls.key_file")?)
        .map_err(|e| format!("tls.key_file {key_file}: no usable private key: {e}"))?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match cfg
        .client_ca_file
        .as_deref()
        .filter(|f| !f.trim().is_empty())
    {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca_file, "tls.client_ca_file")? {
                roots
                    .add(c)
                    .map_err(|e| format!("tls.client_ca_file {ca_file}: {e}"))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if cfg.client_auth == "required" {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| format!("tls.client_ca_file {ca_file}: {e}"))?,
            )
        }
    };
    let mut sc = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls: certificate and key do not form a usable pair: {e}"))?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}

/// The TLS configuration in force, replaced when its files change.
pub struct TlsState {
    cfg: TlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
    stamps: RwLock<Vec<Option<SystemTime>>>,
}

fn mtimes(cfg: &TlsConfig) -> Vec<Option<SystemTime>> {
    cfg.files()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

impl TlsState {
    pub fn load(cfg: &TlsConfig) -> Result<Arc<Self>, String> {
        let stamps = mtimes(cfg);
        let sc = server_config(cfg)?;
        Ok(Arc::new(Self {
            cfg: cfg.clone(),
            current: RwLock::new(sc),
            stamps: RwLock::new(stamps),
        }))
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let sc = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        tokio_rustls::TlsAcceptor::from(sc)
    }

    /// Re-reads the files if any modification time changed. Returns whether the
    /// configuration was replaced; a broken new file keeps the old configuration.
    pub fn reload_if_changed(&self) -> bool {
        let now = mtimes(&self.cfg);
        {
            let seen = self
                .stamps
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *seen == now {
                return false;
            }
        }
        *self
            .stamps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
        match server_config(&self.cfg) {
            Ok(sc) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = sc;
                tracing::info!("TLS certificates reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the previous certificates");
                false
            }
        }
    }
}

/// A verified client certificate, as a request extension set by the TLS layer.
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    /// SHA-256 of the leaf certificate's DER, lower-case hex.
    pub sha256: String,
}

impl PeerCertificate {
    pub fn from_der(der: &[u8]) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        Self {
            sha256: hex::encode(d.as_ref()),
        }
    }
}

/// Router middleware: replaces any client-sent [`CLIENT_CERT_HEADER`] with the verified
/// certificate of the connection, if there is one.
pub async fn stamp_client_cert(mut req: axum::extract::Request) -> axum::extract::Request {
    req.headers_mut().remove(CLIENT_CERT_HEADER);
    let v = req
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|c| HeaderValue::from_str(&c.sha256).ok());
    if let Some(v) = v {
        req.headers_mut().insert(CLIENT_CERT_HEADER, v);
    }
    req
}

/// The verified client certificate fingerprint stamped on this request.
pub fn client_cert(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(CLIENT_CERT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 64)
}

/// Normalises a fingerprint as written by people and tools (`AB:CD:…` or hex) to
/// lower-case hex; `None` unless it is 32 bytes.
pub fn parse_fingerprint(s: &str) -> Option<String> {
    let hex: String = s
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then drains: the
/// listener closes and open connections finish their in-flight requests. Dropping the
/// returned future (the caller's grace period ran out) closes every connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Arc<TlsState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let handshake_timeout = Duration::from_millis(tls.cfg.handshake_timeout_ms);
    let reload_every = tls.cfg.reload_interval_ms;
    let mut reload = tokio::time::interval(Duration::from_millis(reload_every.max(1000)));
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut conns: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = reload.tick(), if reload_every > 0 => {
                let t = tls.clone();
                // File reads and parsing are blocking work.
                let _ = tokio::task::spawn_blocking(move || t.reload_if_changed()).await;
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tls.acceptor();
                let watcher = graceful.watcher();
                let app = app.clone();
                let builder = builder.clone();
                conns.spawn(async move {
                    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| PeerCertificate::from_der(c.as_ref()));
                    let svc = tower::ServiceExt::map_request(
                        app,
                        move |mut req: axum::http::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(ConnectInfo(peer));
                            if let Some(c) = &cert {
                                req.extensions_mut().insert(c.clone());
                            }
                            req
                        },
                    );
                    let conn = builder.serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(svc),
                    );
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    // Connections finish their in-flight requests (new ones answer 503: draining), then
    // close; the caller bounds this with its grace period.
    graceful.shutdown().await;
    while conns.join_next().await.is_some() {}
}

/// Local address of a listener, for a TLS server's `https://` base URL.
pub fn base_url(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_fingerprints() {
        let mut c = TlsConfig::default();
        assert!(c.validate().is_ok() && !c.enabled());
        c.cert_file = Some("c.pem".into());
        assert!(c.validate().is_err());
        c.key_file = Some("k.pem".into());
        assert!(c.validate().is_ok() && c.enabled());
        c.client_auth = "required".into();
        assert!(c.validate().is_err());
        c.client_ca_file = Some("ca.pem".into());
        assert!(c.validate().is_ok());
        c.client_auth = "sometimes".into();
        assert!(c.validate().is_err());
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).as_deref(), Some(hex.as_str()));
        assert_eq!(parse_fingerprint("abcd"), None);
        assert!(server_config(&c).is_err());
    }

    #[test]
    fn environment_overlay_reaches_the_tls_section() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cfg = crate::config::Config::default()
            .with_env(env(&[
                ("PALISADE_TLS_CERT_FILE", "/etc/p/server.pem"),
                ("PALISADE_TLS_KEY_FILE", "/etc/p/server.key"),
                ("PALISADE_TLS_CLIENT_CA_FILE", "/etc/p/ca.pem"),
                ("PALISADE_TLS_CLIENT_AUTH", "required"),
                ("PALISADE_TLS_HANDSHAKE_TIMEOUT_MS", "2500"),
                ("PALISADE_TLS_RELOAD_INTERVAL_MS", "0"),
            ]))
            .unwrap();
        assert!(cfg.tls.enabled());
        assert_eq!(cfg.tls.key_file.as_deref(), Some("/etc/p/server.key"));
        assert_eq!(cfg.tls.client_ca_file.as_deref(), Some("/etc/p/ca.pem"));
        assert_eq!(cfg.tls.client_auth, "required");
        assert_eq!(
            (cfg.tls.handshake_timeout_ms, cfg.tls.reload_interval_ms),
            (2500, 0)
        );
        // Invalid combinations are configuration errors, not runtime surprises.
        let e = crate::config::Config::default()
            .with_env(env(&[("PALISADE_TLS_CLIENT_AUTH", "required")]))
            .unwrap_err();
        assert!(e.to_string().contains("client_ca_file"), "{e}");
        assert!(
            crate::config::Config::default()
                .with_env(env(&[("PALISADE_TLS_CERT_FILE", "/c.pem")]))
                .is_err()
        );
    }
}
