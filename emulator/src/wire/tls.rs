//! TLS for the `amqps://` path: a certificate authority made at start, and a server
//! certificate for `localhost` and `127.0.0.1` signed by it. Clients trust the CA's PEM.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::EmulatorError;

/// A TLS acceptor and the PEM of the CA that signed its certificate.
pub(crate) struct TlsMaterial {
    pub acceptor: TlsAcceptor,
    pub ca_pem: String,
}

fn tls_error(e: impl std::fmt::Display) -> EmulatorError {
    EmulatorError::Tls(e.to_string())
}

/// Makes a fresh CA and server certificate; nothing is written to disk.
pub(crate) fn generate(host_names: &[String]) -> Result<TlsMaterial, EmulatorError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "eventhubs-emulator local CA");
    let ca_key = KeyPair::generate().map_err(tls_error)?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_error)?;

    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(host_names.iter().cloned());
    let mut server_params = CertificateParams::new(names).map_err(tls_error)?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "eventhubs-emulator");
    let server_key = KeyPair::generate().map_err(tls_error)?;
    let server_cert = server_params
        .signed_by(&server_key, &ca)
        .map_err(tls_error)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone()], key)
        .map_err(tls_error)?;
    Ok(TlsMaterial {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_pem: ca.pem(),
    })
}
