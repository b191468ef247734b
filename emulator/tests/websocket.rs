//! AMQP over WebSockets (`AMQPWSB10` on `/$servicebus/websocket`), plain and with TLS, on the
//! emulator's WebSocket port; other upgrades are refused.

mod common;

use common::*;
use eventhubs_emulator::Emulator;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::Connection;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn websocket_emulator(tls: bool) -> Emulator {
    Emulator::builder()
        .hub("hub", 2)
        .tls(tls)
        .websocket(true)
        .start()
        .await
        .expect("emulator starts")
}

/// Opens AMQP over a WebSocket to the emulator (over TLS when it serves TLS).
async fn websocket_client(emulator: &Emulator) -> TestClient {
    let addr = emulator.websocket_addr().expect("a WebSocket port");
    let tcp = TcpStream::connect(addr).await.expect("TCP connects");
    let builder = Connection::builder()
        .container_id("websocket-test")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Anonymous);
    let connection = match emulator.ca_certificate_pem() {
        Some(ca) => {
            let name = ServerName::try_from("localhost").expect("a name");
            let tls = tls_connector(ca).connect(name, tcp).await.expect("TLS");
            let url = eventhubs_websocket::url(true, "localhost", Some(addr.port()));
            let ws = eventhubs_websocket::connect(tls, &url)
                .await
                .expect("upgrade");
            builder.open_with_stream(ws).await
        }
        None => {
            let url = eventhubs_websocket::url(false, "127.0.0.1", Some(addr.port()));
            let ws = eventhubs_websocket::connect(tcp, &url)
                .await
                .expect("upgrade");
            builder.open_with_stream(ws).await
        }
    }
    .expect("AMQP opens over the WebSocket");
    TestClient::over(connection, &format!("localhost:{}", addr.port())).await
}

async fn publishes_and_reads_back(emulator: &Emulator) {
    let mut client = websocket_client(emulator).await;
    client.authorize(emulator, "hub").await;
    let mut sender = client.sender("hub/Partitions/1").await;
    send_events(&mut sender, "over-websocket", 3).await;
    // Larger than an AMQP frame (64 KiB): one transfer in several frames and messages.
    let large = "x".repeat(300_000);
    let outcome = tokio::time::timeout(STEP, sender.send(event(&large, 3, None)))
        .await
        .expect("sent in time")
        .expect("sent");
    assert_eq!(rejected_with(&outcome), None);
    let mut receiver = client
        .receiver(
            "hub/ConsumerGroups/$Default/Partitions/1",
            Some("amqp.annotation.x-opt-offset > '-1'"),
        )
        .await;
    for expected in [
        "over-websocket0",
        "over-websocket1",
        "over-websocket2",
        &large,
    ] {
        assert_eq!(
            data_body(&recv_one(&mut receiver).await),
            expected.as_bytes()
        );
    }
    assert_eq!(emulator.event_count("hub", "1").unwrap(), 4);
    client.close().await;
}

#[tokio::test]
async fn a_client_publishes_and_reads_back_over_ws() {
    let emulator = websocket_emulator(false).await;
    assert!(emulator
        .websocket_connection_string()
        .expect("a connection string")
        .contains("UseDevelopmentEmulator=true"));
    publishes_and_reads_back(&emulator).await;
    // The AMQP port still speaks AMQP.
    let mut plain = TestClient::connect(&emulator).await;
    plain.authorize(&emulator, "hub").await;
}

#[tokio::test]
async fn a_client_publishes_and_reads_back_over_wss() {
    let emulator = websocket_emulator(true).await;
    let connection_string = emulator
        .websocket_connection_string()
        .expect("a connection string");
    assert!(!connection_string.contains("UseDevelopmentEmulator"));
    publishes_and_reads_back(&emulator).await;
}

/// Sends a raw upgrade request and returns the status line of the answer.
async fn upgrade_answer(emulator: &Emulator, path: &str, protocol: &str) -> String {
    let addr = emulator.websocket_addr().expect("a WebSocket port");
    let mut tcp = TcpStream::connect(addr).await.expect("TCP connects");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("written");
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(STEP, tcp.read(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn upgrades_on_another_path_or_subprotocol_are_refused() {
    let emulator = websocket_emulator(false).await;
    assert!(
        upgrade_answer(&emulator, "/$servicebus/websocket", "AMQPWSB10")
            .await
            .starts_with("HTTP/1.1 101")
    );
    assert!(upgrade_answer(&emulator, "/", "AMQPWSB10")
        .await
        .starts_with("HTTP/1.1 404"));
    assert!(upgrade_answer(&emulator, "/$servicebus/websocket", "amqp")
        .await
        .starts_with("HTTP/1.1 400"));
    // Plain AMQP on the WebSocket port is not served: the protocol header is no HTTP request.
    let addr = emulator.websocket_addr().expect("a WebSocket port");
    let mut tcp = TcpStream::connect(addr).await.expect("TCP connects");
    tcp.write_all(b"AMQP\x03\x01\x00\x00").await.expect("sent");
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(STEP, tcp.read(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap_or(0);
    assert!(
        !answer[..n].starts_with(b"AMQP"),
        "the WebSocket port answered an AMQP header with {:?}",
        &answer[..n]
    );
}

#[tokio::test]
async fn faults_cut_websocket_connections_too() {
    let emulator = websocket_emulator(false).await;
    let mut client = websocket_client(&emulator).await;
    client.authorize(&emulator, "hub").await;
    let mut sender = client.sender("hub/Partitions/0").await;
    send_events(&mut sender, "before", 1).await;
    assert_eq!(emulator.faults().drop_connections(), 1);
    let ended = tokio::time::timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection ends in time");
    assert!(
        matches!(
            ended,
            Err(fe2o3_amqp::connection::Error::TransportError(
                fe2o3_amqp::transport::Error::Io(_)
            ))
        ),
        "an I/O error and no close frame, got {ended:?}"
    );
    let after = tokio::time::timeout(STEP, sender.send(event("after", 1, None)))
        .await
        .expect("the send ends in time");
    assert!(after.is_err(), "a send on a cut connection: {after:?}");
    eventually("the connection is gone", || {
        emulator.connection_count() == 0
    })
    .await;
}
