//! TLS on the tenant listener (`--tls-cert`, `--tls-key`): rustls with the ring provider,
//! HTTP/2 when the client offers ALPN `h2`, else HTTP/1.1.
//!
//! The certificate is reloaded when its files change. A Kubernetes Secret mount changes by
//! swapping a symlink, so neither a file's path nor its inode tells: a background task reads
//! both files every [`RELOAD_EVERY`] and compares their content with the last pair seen. A
//! handshake only clones the current key's `Arc`. A pair that does not load (unreadable, not
//! PEM, a key that does not match the certificate) is logged once and the certificate in use
//! is kept.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tenantscale_tls::TlsError;

/// How often the files are compared with the certificate in use.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The PEM files of the listener's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The listener's TLS: an acceptor whose certificate follows the files.
pub(crate) struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    certificate: Arc<Reloading>,
}

impl Tls {
    /// Loads the files; fails if they do not hold a matching certificate and key.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let (contents, key) = read(&files)?;
        let certificate = Arc::new(Reloading {
            files,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(contents),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(tenantscale_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }

    /// Reloads the certificate whenever its files change, until dropped (aborted).
    pub fn follow_files(&self) -> tokio::task::JoinHandle<()> {
        let certificate = Arc::clone(&self.certificate);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RELOAD_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let certificate = Arc::clone(&certificate);
                // File reads block: off the serving threads.
                let _ = tokio::task::spawn_blocking(move || certificate.reload_if_changed()).await;
            }
        })
    }
}

/// Both files' bytes, as last read.
type Contents = (Vec<u8>, Vec<u8>);

/// The certificate in use, and the files it follows.
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Contents>,
}

impl Reloading {
    fn reload_if_changed(&self) {
        let contents = match (
            std::fs::read(&self.files.cert),
            std::fs::read(&self.files.key),
        ) {
            (Ok(cert), Ok(key)) => (cert, key),
            // Mid-swap, or removed: the next round looks again; nothing is logged until a
            // readable pair fails to load.
            _ => return,
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == contents {
            return;
        }
        match certified_key(&self.files, &contents) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::warn!(
                error = %e,
                "TLS certificate files changed but do not load: keeping the certificate in use"
            ),
        }
        *seen = contents;
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn read(files: &TlsFiles) -> Result<(Contents, CertifiedKey), TlsError> {
    let file =
        |path: &PathBuf| std::fs::read(path).map_err(|e| tenantscale_tls::file_error(path, e));
    let contents = (file(&files.cert)?, file(&files.key)?);
    let key = certified_key(files, &contents)?;
    Ok((contents, key))
}

/// The certificate chain and key in `contents` (the bytes of `files`), checked to match.
fn certified_key(files: &TlsFiles, (cert, key): &Contents) -> Result<CertifiedKey, TlsError> {
    let certs = tenantscale_tls::parse_certificates(&files.cert, cert)?;
    let key = tenantscale_tls::parse_private_key(&files.key, key)?;
    CertifiedKey::from_der(certs, key, &tenantscale_tls::provider()).map_err(|e| {
        tenantscale_tls::file_error(
            &files.key,
            format!("not the key of {}: {e}", files.cert.display()),
        )
    })
}
