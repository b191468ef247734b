//! Shutting the emulator down, and dropping it.

use super::*;

#[tokio::test]
async fn shutdown_closes_connected_clients_with_connection_forced() {
    let (emulator, mut client) = setup().await;
    let _sender = client.sender("hub/Partitions/0").await;

    timeout(STEP, emulator.shutdown())
        .await
        .expect("shutdown returns in time");
    let result = timeout(STEP, client.connection.on_close())
        .await
        .expect("the client sees the close in time");
    assert_eq!(
        close_condition(result.expect_err("closed with an error")),
        "amqp:connection:forced"
    );
}

#[tokio::test]
async fn shutdown_without_clients_returns_and_a_new_emulator_starts() {
    let emulator = emulator().await;
    let first = emulator.local_addr();
    timeout(STEP, emulator.shutdown())
        .await
        .expect("shutdown returns in time");

    let second = Emulator::builder()
        .hub("hub", 2)
        .start()
        .await
        .expect("a second emulator starts");
    assert_ne!(second.local_addr(), first);
    let mut client = TestClient::connect_addr(second.local_addr()).await;
    client.authorize(&second, "hub").await;
    let mut sender = client.sender("hub/Partitions/1").await;
    let outcome = send(&mut sender, event("second", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(second.event_count("hub", "1").unwrap(), 1);
    client.close().await;
    timeout(STEP, second.shutdown())
        .await
        .expect("shutdown returns in time");
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let emulator = emulator().await;
    let addr = emulator.local_addr();
    timeout(STEP, emulator.shutdown())
        .await
        .expect("shutdown returns in time");
    let connected = timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect ends in time");
    assert!(connected.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn dropping_the_emulator_stops_its_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let emulator = emulator().await;
    let addr = emulator.local_addr();
    drop(emulator);

    // The listener goes away when the accept loop next runs: a connect is refused, or a
    // connection the kernel took just before is reset or closed without a byte.
    let ended = timeout(STEP, async {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => "refused",
            Ok(mut stream) => {
                // The peer may be gone already: only the read's answer matters.
                let _ = stream.write_all(b"AMQP\x03\x01\x00\x00").await;
                let mut buf = [0u8; 8];
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => "closed",
                    Ok(_) => "answered",
                }
            }
        }
    })
    .await
    .expect("connect and read end in time");
    assert_ne!(ended, "answered", "a dropped emulator still serves");
}

#[tokio::test]
async fn dropping_the_emulator_closes_connected_clients() {
    let (emulator, mut client) = setup().await;
    drop(emulator);
    let result = timeout(STEP, client.connection.on_close())
        .await
        .expect("the client sees the connection end in time");
    assert_eq!(
        close_condition(result.expect_err("closed with an error")),
        "amqp:connection:forced"
    );
}
