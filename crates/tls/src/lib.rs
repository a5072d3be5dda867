//! Outgoing TLS for every tenantscale client (the pod's LLM, store and warm-up flag, the
//! gateway's shared limits, the autoscaler's state and Prometheus), built one way: rustls
//! with the ring provider, trusting either the system's root certificates or, when a CA file
//! is given, the certificates in that file and nothing else (as libpq's `sslrootcert`).
//! Server certificates are always verified, host name included: no mode skips it.

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "testing")]
pub mod testing;

/// Why no TLS configuration could be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {why}", path.display())]
    File { path: PathBuf, why: String },
    #[error(
        "no system root certificates to trust ({0}): install ca-certificates or give a CA file"
    )]
    NoSystemRoots(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// The cryptography of every TLS connection: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A file that could not be used, and why.
pub fn file_error(path: &Path, why: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The PEM certificates in `pem` (at least one), read from `path`.
pub fn parse_certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The PEM private key (PKCS#8, PKCS#1 or SEC1) in `pem`, read from `path`.
pub fn parse_private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| file_error(path, format!("no PEM private key in it ({e})")))
}

/// The roots to trust: every certificate in the PEM file `ca`, or the system's.
pub fn roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| file_error(path, e))?;
            for cert in parse_certificates(path, &pem)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error(path, format!("not a CA certificate ({e})")))?;
            }
        }
        None => {
            // Honours SSL_CERT_FILE and SSL_CERT_DIR. A bad file among many is skipped.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or("none found".to_string(), ToString::to_string);
                return Err(TlsError::NoSystemRoots(why));
            }
        }
    }
    Ok(roots)
}

/// A client configuration trusting [`roots`]`(ca)`.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    config_trusting(roots(ca)?)
}

fn config_trusting(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTP/1.1 connector for hyper's client.
pub type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A connector for requests to `url`'s scheme: `https://` through TLS trusting `ca` (or the
/// system's roots), `http://` in plain text. A CA file with a plain URL is refused, so that a
/// forgotten `s` does not silently send in the clear.
pub fn http_connector(url: &hyper::Uri, ca: Option<&Path>) -> Result<HttpsConnector, TlsError> {
    let https = url.scheme_str() == Some("https");
    let config = match (https, ca) {
        (true, ca) => client_config(ca)?,
        (false, Some(_)) => {
            return Err(TlsError::Config(format!(
                "a CA file is given for {url}, which is not https://"
            )));
        }
        // Only http:// URLs are asked for: no certificate needs to be trusted.
        (false, None) => config_trusting(RootCertStore::empty())?,
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(config))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// `e` and its causes, `: `-separated: hyper's client errors name only their kind ("client
/// error (Connect)"), and the cause says which certificate was refused and why.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A Redis client for `redis://` or `rediss://` URLs; TLS trusts the certificates in `ca`,
/// or the system's roots (redis-rs loads those itself, with rustls and ring).
pub fn redis_client(url: &str, ca: Option<&Path>) -> Result<redis::Client, TlsError> {
    let Some(path) = ca else {
        return Ok(redis::Client::open(url)?);
    };
    if !url.starts_with("rediss://") {
        return Err(TlsError::Config(format!(
            "a CA file is given for {url:?}, which is not rediss://"
        )));
    }
    let pem = std::fs::read(path).map_err(|e| file_error(path, e))?;
    // Checked here, so a bad file is named at start rather than at each connection.
    parse_certificates(path, &pem)?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Ok(redis::Client::build_with_tls(url, certificates)?)
}
