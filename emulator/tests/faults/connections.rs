//! `close_connections` and `drop_connections`: connections closed with a condition, or cut.

use super::*;

#[tokio::test]
async fn close_connections_closes_clients_with_connection_forced() {
    let (emulator, mut client) = setup().await;
    let _sender = client.sender("hub/Partitions/0").await;

    assert_eq!(emulator.faults().close_connections(), 1);
    let result = timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection closes in time");
    assert_eq!(
        close_condition(result.expect_err("closed with an error")),
        "amqp:connection:forced"
    );
    eventually("the emulator forgets the connection", || {
        emulator.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn close_connections_fails_the_next_send() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator.faults().close_connections();
    timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection closes in time")
        .expect_err("closed with an error");

    let result = timeout(STEP, sender.send(event("late", 0, None)))
        .await
        .expect("send ends in time");
    match result.expect_err("a send on a closed connection fails") {
        SendError::LinkStateError(LinkStateError::SessionStopped(
            SessionStopReason::ConnectionStopped(ConnectionStopReason::RemoteClosedWithError(e)),
        )) => assert_eq!(condition_symbol(&e.condition), "amqp:connection:forced"),
        other => panic!("expected the connection's close to stop the link, got {other:?}"),
    }
    assert_eq!(counters(&emulator), (0, 0, 0, 0));
}

#[tokio::test]
async fn close_connections_with_uses_the_given_condition() {
    let (emulator, mut client) = setup().await;
    assert_eq!(
        emulator
            .faults()
            .close_connections_with(FaultCondition::Other("x:custom-close".into())),
        1
    );
    let result = timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection closes in time");
    assert_eq!(
        close_condition(result.expect_err("closed with an error")),
        "x:custom-close"
    );
}

#[tokio::test]
async fn close_connections_lets_new_connections_work() {
    let (emulator, mut client) = setup().await;
    emulator.faults().close_connections();
    timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection closes in time")
        .expect_err("closed with an error");

    let mut fresh = TestClient::connect_addr(emulator.local_addr()).await;
    fresh.authorize(&emulator, "hub").await;
    let mut sender = fresh.sender("hub/Partitions/2").await;
    let outcome = send(&mut sender, event("after", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", "2").unwrap(), 1);
    assert_eq!(emulator.connection_count(), 1);
    fresh.close().await;
}

#[tokio::test]
async fn close_connections_with_no_clients_closes_none() {
    let emulator = emulator().await;
    assert_eq!(emulator.faults().close_connections(), 0);
    assert_eq!(emulator.faults().drop_connections(), 0);
}

#[tokio::test]
async fn drop_connections_ends_the_transport_without_an_amqp_close() {
    let (emulator, mut client) = setup().await;
    assert_eq!(emulator.faults().drop_connections(), 1);
    let result = timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection ends in time");
    match result {
        Err(fe2o3_amqp::connection::Error::TransportError(fe2o3_amqp::transport::Error::Io(_))) => {
        }
        other => panic!("expected an I/O error and no close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn drop_connections_fails_the_next_send() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator.faults().drop_connections();
    let _ = timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection ends in time");

    let result = timeout(STEP, sender.send(event("late", 0, None)))
        .await
        .expect("send ends in time");
    // fe2o3 reports a connection whose transport failed as stopped `Closed`, not as closed by the
    // remote (which it would be with a close frame).
    match result {
        Err(SendError::LinkStateError(LinkStateError::SessionStopped(
            SessionStopReason::ConnectionStopped(ConnectionStopReason::Closed),
        ))) => {}
        other => panic!("expected the link to stop with its connection, got {other:?}"),
    }
    assert_eq!(counters(&emulator), (0, 0, 0, 0));
}

#[tokio::test]
async fn drop_connections_unregisters_them_and_keeps_serving_new_ones() {
    let (emulator, mut client) = setup().await;
    assert_eq!(emulator.connection_count(), 1);
    emulator.faults().drop_connections();
    let _ = timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection ends in time");
    eventually("the emulator forgets the dropped connection", || {
        emulator.connection_count() == 0
    })
    .await;

    let mut fresh = TestClient::connect_addr(emulator.local_addr()).await;
    fresh.authorize(&emulator, "hub").await;
    let mut sender = fresh.sender("hub/Partitions/1").await;
    let outcome = send(&mut sender, event("after", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", "1").unwrap(), 1);
    assert_eq!(emulator.connection_count(), 1);
    fresh.close().await;
}
