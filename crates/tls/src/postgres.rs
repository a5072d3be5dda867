//! `postgres://…?sslmode=…` over rustls, for the `postgres` crate.
//!
//! `sslmode`: absent, `disable` or `prefer` connect in plain text (`prefer` does not try TLS:
//! an unverified attempt would protect from nothing an attacker in the path cares about);
//! `require` and `verify-full` use TLS and verify the server's certificate and host name
//! (libpq's `require` alone does not verify; here nothing skips it). `sslrootcert=FILE`
//! (PEM) is the CA to trust instead of the system's roots. Other modes are refused.

use crate::TlsError;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `url` as the `postgres` crate reads it (our parameters taken out, `sslmode` one it knows),
/// and the TLS to connect with, if any.
pub fn tls_for(url: &str) -> Result<(String, Option<Rustls>), TlsError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut rootcert, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => mode = Some(value),
            Some(("sslrootcert", value)) => {
                rootcert = Some(percent_encoding::percent_decode_str(value).decode_utf8_lossy())
            }
            _ => kept.push(pair),
        }
    }
    let tls = match mode {
        None | Some("disable" | "prefer") => {
            if rootcert.is_some() {
                return Err(TlsError::Config(
                    "sslrootcert is given without sslmode=require or verify-full".into(),
                ));
            }
            None
        }
        Some("require" | "verify-full") => {
            kept.push("sslmode=require");
            Some(Rustls(crate::client_config(
                rootcert.as_deref().map(Path::new),
            )?))
        }
        Some(other) => {
            return Err(TlsError::Config(format!(
                "sslmode={other}: expected disable, prefer (plain text), require or verify-full \
                 (TLS, certificate and host name verified)"
            )));
        }
    };
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, tls))
}

/// TLS for the `postgres` crate's connections.
#[derive(Clone)]
pub struct Rustls(Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, TlsError> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| TlsError::Config(format!("host {domain:?}: {e}")))?;
        Ok(Connect {
            config: Arc::clone(&self.0),
            name,
        })
    }
}

/// One connection's handshake.
pub struct Connect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move { Ok(Stream(connector.connect(self.name, stream).await?)) })
    }
}

/// An encrypted connection to Postgres.
pub struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    /// No channel binding: SCRAM runs without `-PLUS`, the certificate check authenticates
    /// the server.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_pass_through_and_tls_modes_become_require() {
        let (url, tls) = tls_for("postgres://u@h/db").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert!(tls.is_none());
        let (url, tls) = tls_for("postgres://u@h/db?sslmode=prefer&connect_timeout=3").unwrap();
        assert_eq!(url, "postgres://u@h/db?connect_timeout=3");
        assert!(tls.is_none());
        let ca = std::env::temp_dir().join(format!("tenantscale-tls-{}.pem", std::process::id()));
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let asked = format!(
            "postgres://u@h/db?connect_timeout=3&sslmode=verify-full&sslrootcert={}",
            ca.display()
        );
        let (url, tls) = tls_for(&asked).unwrap();
        assert_eq!(url, "postgres://u@h/db?connect_timeout=3&sslmode=require");
        assert!(tls.is_some());
        let _ = std::fs::remove_file(ca);
    }

    #[test]
    fn unknown_modes_and_a_ca_without_tls_are_refused() {
        for url in [
            "postgres://u@h/db?sslmode=verify-ca",
            "postgres://u@h/db?sslmode=allow",
            "postgres://u@h/db?sslrootcert=/ca.pem",
        ] {
            assert!(tls_for(url).is_err(), "{url}");
        }
        let e = tls_for("postgres://u@h/db?sslmode=require&sslrootcert=/nonexistent.pem")
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("/nonexistent.pem: "), "{e}");
    }
}
