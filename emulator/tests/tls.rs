//! TLS (`amqps://`): a client trusting the emulator's CA talks AMQP over rustls; others fail.

mod common;

use common::*;
use eventhubs_emulator::Emulator;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::Connection;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

async fn tls_emulator() -> Emulator {
    Emulator::builder()
        .hub("hub", 4)
        .tls(true)
        .start()
        .await
        .expect("TLS emulator starts")
}

async fn handshake(
    emulator: &Emulator,
    connector: &TlsConnector,
    server_name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(emulator.local_addr())
        .await
        .expect("TCP connects");
    let name = ServerName::try_from(server_name.to_string()).expect("a server name");
    tokio::time::timeout(STEP, connector.connect(name, tcp))
        .await
        .expect("handshake ends in time")
}

/// Opens AMQP over a finished TLS handshake and begins a session.
async fn tls_client(emulator: &Emulator, server_name: &str) -> TestClient {
    let ca = emulator.ca_certificate_pem().expect("a CA with TLS");
    let stream = handshake(emulator, &tls_connector(ca), server_name)
        .await
        .expect("TLS handshake");
    let connection = tokio::time::timeout(
        STEP,
        Connection::builder()
            .container_id("tls-test")
            .hostname(server_name)
            .sasl_profile(SaslProfile::Anonymous)
            .open_with_stream(stream),
    )
    .await
    .expect("open in time")
    .expect("AMQP opens over TLS");
    let host = format!("{server_name}:{}", emulator.local_addr().port());
    TestClient::over(connection, &host).await
}

#[tokio::test]
async fn client_trusting_the_ca_publishes_and_reads_back_over_tls() {
    let emulator = tls_emulator().await;
    let mut client = tls_client(&emulator, "localhost").await;
    client.authorize(&emulator, "hub").await;
    let mut sender = client.sender("hub/Partitions/1").await;
    send_events(&mut sender, "secure", 2).await;

    let mut receiver = client
        .receiver(
            "hub/ConsumerGroups/$Default/Partitions/1",
            Some("amqp.annotation.x-opt-offset > '-1'"),
        )
        .await;
    for expected in ["secure0", "secure1"] {
        assert_eq!(
            data_body(&recv_one(&mut receiver).await),
            expected.as_bytes()
        );
    }
    let read = client.read("com.microsoft:eventhub", "hub", None).await;
    assert_eq!(read.status, 200);
    assert_eq!(emulator.event_count("hub", "1").unwrap(), 2);
}

#[tokio::test]
async fn certificate_also_names_the_loopback_address() {
    let emulator = tls_emulator().await;
    let mut client = tls_client(&emulator, "127.0.0.1").await;
    client.authorize(&emulator, "hub").await;
    let mut sender = client.sender("hub").await;
    send_events(&mut sender, "by-ip", 1).await;
    assert_eq!(emulator.total_event_count("hub").unwrap(), 1);
}

#[tokio::test]
async fn client_not_trusting_the_ca_fails_the_handshake() {
    let emulator = tls_emulator().await;
    // Trust another emulator's CA: a well-formed root that did not sign this server.
    let stranger = tls_emulator().await;
    let untrusting = tls_connector(stranger.ca_certificate_pem().expect("a CA"));
    let result = handshake(&emulator, &untrusting, "localhost").await;
    let error = result.expect_err("the handshake must fail");
    let text = error.to_string().to_lowercase();
    assert!(
        text.contains("certificate"),
        "a certificate error, got {error}"
    );

    // The emulator still serves clients that trust it.
    let mut client = tls_client(&emulator, "localhost").await;
    client.authorize(&emulator, "hub").await;
}

#[tokio::test]
async fn plain_amqp_client_is_not_served_on_a_tls_port() {
    let emulator = tls_emulator().await;
    let addr = emulator.local_addr();
    let attempt = tokio::time::timeout(
        STEP,
        Connection::builder()
            .container_id("plain-on-tls")
            .sasl_profile(SaslProfile::Anonymous)
            .open(format!("amqp://{}:{}", addr.ip(), addr.port()).as_str()),
    )
    .await
    .expect("the attempt ends in time");
    assert!(attempt.is_err(), "plain AMQP must not open on the TLS port");
}

#[tokio::test]
async fn tls_connection_string_names_localhost_without_the_emulator_flag() {
    let emulator = tls_emulator().await;
    let port = emulator.local_addr().port();
    let connection_string = emulator.connection_string();
    assert!(
        connection_string.starts_with(&format!("Endpoint=sb://localhost:{port};")),
        "{connection_string}"
    );
    assert!(
        !connection_string.contains("UseDevelopmentEmulator"),
        "{connection_string}"
    );
    assert!(
        connection_string.ends_with("EntityPath=hub"),
        "{connection_string}"
    );

    let plain = emulator_plain_connection_string().await;
    assert!(plain.contains("UseDevelopmentEmulator=true"), "{plain}");
}

async fn emulator_plain_connection_string() -> String {
    emulator().await.connection_string()
}
