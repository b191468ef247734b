//! TLS for `amqps://`: rustls with the web PKI roots, plus any extra roots the user trusts.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::{Error, ErrorKind, Result};

/// A TLS client configuration, ready to connect.
#[derive(Clone)]
pub(crate) struct TlsSettings {
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSettings")
    }
}

impl TlsSettings {
    /// Web PKI roots and `extra_roots` (DER certificates). Certificates are always verified.
    pub(crate) fn new(extra_roots: &[CertificateDer<'static>]) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for root in extra_roots {
            roots.add(root.clone()).map_err(|e| {
                Error::new(
                    ErrorKind::Tls,
                    format!("an extra root certificate is not usable: {e}"),
                )
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Tls, format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Runs the TLS handshake over `tcp`, checking the certificate against `host`.
    pub(crate) async fn connect(&self, host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            Error::new(
                ErrorKind::Tls,
                format!("'{host}' is not a valid TLS server name"),
            )
        })?;
        self.connector.connect(name, tcp).await.map_err(|e| {
            if speaks_no_tls(&e) {
                return Error::new(
                    ErrorKind::Tls,
                    format!("the TLS handshake with {host} failed: the server answered without TLS; if it is a local emulator, add UseDevelopmentEmulator=true to the connection string"),
                )
                .with_source(e);
            }
            let kind = if e.kind() == std::io::ErrorKind::InvalidData {
                ErrorKind::Tls
            } else {
                ErrorKind::ConnectionFailed
            };
            Error::new(kind, format!("the TLS handshake with {host} failed")).with_source(e)
        })
    }
}

/// Whether a handshake failed because the peer's first bytes were not a TLS record, as when a
/// plain AMQP listener answers a TLS client with its protocol header.
fn speaks_no_tls(error: &std::io::Error) -> bool {
    use rustls::InvalidMessage;
    matches!(
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidMessage(
            InvalidMessage::InvalidContentType | InvalidMessage::UnknownProtocolVersion
        ))
    )
}

/// Parses PEM text into DER certificates (for trusting an extra root).
pub(crate) fn certificates_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("the PEM certificate does not parse: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "the PEM text holds no certificate",
        ));
    }
    Ok(certs)
}
