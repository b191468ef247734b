//! Fixtures of the emulator's tests: a small Event Hubs client built directly on fe2o3-amqp
//! (`client.rs`), messages and replies (`messages.rs`), how links end (`links.rs`), and a bare
//! AMQP peer that frames everything itself (`raw.rs`), for talking to the emulator over
//! loopback: connect, put-token, management reads, plain and batched sends, receives.
#![allow(dead_code)]

use std::time::Duration;

use eventhubs_emulator::Emulator;

mod client;
mod links;
mod messages;
pub mod raw;

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use self::{client::*, links::*, messages::*};

/// A rustls client that trusts only the given CA certificates (PEM), such as the emulator's.
pub fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Generous bound for any single protocol step in tests.
pub const STEP: Duration = Duration::from_secs(10);

pub async fn emulator() -> Emulator {
    Emulator::builder()
        .hub("hub", 4)
        .start()
        .await
        .expect("emulator starts")
}

/// Waits (polling, up to [`STEP`]) until `condition` holds; panics naming `what` otherwise.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let polled = tokio::time::timeout(STEP, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting until {what}");
}
