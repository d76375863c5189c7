//! HTTPS for /metrics: the serving certificate (from a directory such as a
//! mounted cert-manager Secret, re-read when it changes, or self-signed in
//! memory at start) and a listener that completes TLS handshakes off the
//! accept loop. rustls with the ring provider, the one kube already uses.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::{StreamExt, stream::FuturesUnordered};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tracing::{debug, info, warn};

/// File names in `--metrics-cert-dir`, as in a `kubernetes.io/tls` Secret.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
/// How often the certificate directory is read for a renewed certificate.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM {what}: {detail}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("the key in {dir} does not fit its certificate: {source}")]
    Key {
        dir: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS settings: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate /metrics presents: the current one, swapped in place when
/// the directory it came from holds a new one.
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
    /// The directory and the bytes last read from it; `None` when self-signed.
    source: Option<(PathBuf, tokio::sync::Mutex<Pem>)>,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some((dir, _)) => write!(f, "ServingCert({})", dir.display()),
            None => f.write_str("ServingCert(self-signed)"),
        }
    }
}

impl ServingCert {
    /// A certificate for `localhost` generated now, valid as long as the
    /// process runs and never written anywhere. A scraper cannot verify it
    /// (it must skip verification); `--metrics-cert-dir` gives one it can.
    pub fn self_signed() -> Result<Self, CertError> {
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let mut params = rcgen::CertificateParams::new(names)?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "tenant-capacity-operator metrics",
        );
        let signing_key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&signing_key)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
        let certified = CertifiedKey::from_der(vec![cert.der().clone()], key, &provider())?;
        Ok(Self {
            current: RwLock::new(Arc::new(certified)),
            source: None,
        })
    }

    /// The certificate chain and key in `dir`/tls.crt and `dir`/tls.key.
    pub fn from_dir(dir: &Path) -> Result<Self, CertError> {
        let (pem, certified) = read_dir_cert(dir)?;
        Ok(Self {
            current: RwLock::new(Arc::new(certified)),
            source: Some((dir.to_path_buf(), tokio::sync::Mutex::new(pem))),
        })
    }

    /// Read the directory again and use what it holds if it changed.
    /// `Ok(true)` when a new certificate is now served; on an error the one
    /// served so far stays.
    pub async fn reload(&self) -> Result<bool, CertError> {
        let Some((dir, last)) = &self.source else {
            return Ok(false);
        };
        let mut last = last.lock().await;
        let dir = dir.clone();
        let pem = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || read_files(&dir)
        })
        .await
        .expect("reading the certificate files does not panic")?;
        if pem == *last {
            return Ok(false);
        }
        // Remembered even when unusable: one warning per change, not one a tick.
        let certified = certified_key(&dir, &pem);
        *last = pem;
        *self.current.write().unwrap() = Arc::new(certified?);
        Ok(true)
    }

    /// Re-read the directory every [`RELOAD_EVERY`], forever (a self-signed
    /// certificate is never renewed: this then waits forever).
    pub async fn keep_current(self: Arc<Self>) {
        if self.source.is_none() {
            return std::future::pending().await;
        }
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload().await {
                Ok(true) => info!(certificate = ?self, "serving a renewed metrics certificate"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "keeping the metrics certificate served so far"),
            }
        }
    }

    /// TLS settings presenting this certificate: TLS 1.2 and 1.3, HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, CertError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap().clone())
    }
}

/// The PEM of the certificate chain and of the key, as read.
#[derive(PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read_files(dir: &Path) -> Result<Pem, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| CertError::Read { path, source })
    };
    Ok(Pem {
        cert: read(CERT_FILE)?,
        key: read(KEY_FILE)?,
    })
}

fn read_dir_cert(dir: &Path) -> Result<(Pem, CertifiedKey), CertError> {
    let pem = read_files(dir)?;
    let certified = certified_key(dir, &pem)?;
    Ok((pem, certified))
}

fn certified_key(dir: &Path, pem: &Pem) -> Result<CertifiedKey, CertError> {
    let pem_error = |name: &str, what, detail: String| CertError::Pem {
        path: dir.join(name),
        what,
        detail,
    };
    let chain = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(CERT_FILE, "certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(CERT_FILE, "certificate", "none found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key)
        .map_err(|e| pem_error(KEY_FILE, "private key", e.to_string()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| CertError::Key {
        dir: dir.to_path_buf(),
        source,
    })
}

type Handshake = Pin<Box<dyn Future<Output = Option<(TlsStream<TcpStream>, SocketAddr)>> + Send>>;

/// A TCP listener whose connections come out with their TLS handshake done.
/// Handshakes run side by side: a client that connects and says nothing
/// holds up no one, and is dropped after a timeout.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: FuturesUnordered<Handshake>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: FuturesUnordered::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let handshake = self.acceptor.accept(stream);
                        self.handshakes.push(Box::pin(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                                Ok(Ok(tls)) => Some((tls, peer)),
                                Ok(Err(e)) => {
                                    debug!(%peer, error = %e, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    debug!(%peer, "TLS handshake timed out");
                                    None
                                }
                            }
                        }));
                    }
                    // Out of file descriptors, say: wait a moment, as axum does.
                    Err(e) => {
                        warn!(error = %e, "accepting a metrics connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                    if let Some(connection) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for localhost and its key, as PEM.
    fn pem_pair() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn write(dir: &Path, cert: &str, key: &str) {
        std::fs::write(dir.join(CERT_FILE), cert).unwrap();
        std::fs::write(dir.join(KEY_FILE), key).unwrap();
    }

    fn served(c: &ServingCert) -> CertificateDer<'static> {
        c.current.read().unwrap().cert[0].clone()
    }

    #[test]
    fn a_cert_dir_is_read_and_what_is_wrong_with_it_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = ServingCert::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("tls.crt") && e.starts_with("reading"), "{e}");

        let (cert, key) = pem_pair();
        write(dir.path(), &cert, &key);
        ServingCert::from_dir(dir.path()).unwrap();

        let (_, other_key) = pem_pair();
        write(dir.path(), &cert, &other_key);
        let e = ServingCert::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not fit its certificate"), "{e}");

        write(dir.path(), &cert, "not a key");
        let e = ServingCert::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("tls.key") && e.contains("private key"), "{e}");

        write(dir.path(), "", &key);
        let e = ServingCert::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("tls.crt") && e.contains("none found"), "{e}");
    }

    #[tokio::test]
    async fn a_renewal_is_served_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_pair();
        write(dir.path(), &cert, &key);
        let c = ServingCert::from_dir(dir.path()).unwrap();
        let first = served(&c);
        assert!(
            !c.reload().await.unwrap(),
            "unchanged files are not reloaded"
        );

        let (cert2, key2) = pem_pair();
        write(dir.path(), &cert2, &key2);
        assert!(c.reload().await.unwrap());
        let second = served(&c);
        assert_ne!(first, second);

        write(dir.path(), &cert2, "not a key");
        assert!(c.reload().await.is_err());
        assert_eq!(served(&c), second);
        // Told once: the same broken files are not an error again.
        assert!(!c.reload().await.unwrap());
    }

    #[test]
    fn a_self_signed_certificate_is_made_in_memory_and_fits_its_key() {
        let c = ServingCert::self_signed().unwrap();
        assert!(c.source.is_none());
        c.current.read().unwrap().keys_match().unwrap();
    }
}
