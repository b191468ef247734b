//! `clear`: stored events and fault rules cleared.

use super::*;

#[tokio::test]
async fn clear_ends_rejections() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let faults = emulator.faults();
    faults.reject_next(5, FaultCondition::ServerBusy, FaultScope::Any);
    faults.reject_next(
        5,
        FaultCondition::Timeout,
        FaultScope::partition("hub", "0"),
    );
    faults.clear();

    let outcome = send(&mut sender, event("e", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn clear_ends_withholding() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator.faults().withhold_next(5, FaultScope::Any);
    emulator.faults().clear();

    let outcome = send(&mut sender, event("e", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn clear_ends_delays() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator
        .faults()
        .delay_dispositions(Duration::from_secs(3600));
    emulator.faults().clear();

    let outcome = send(&mut sender, event("e", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn clear_ends_token_rejection() {
    let emulator = emulator().await;
    let mut client = TestClient::connect_addr(emulator.local_addr()).await;
    emulator
        .faults()
        .reject_tokens_for(Duration::from_secs(3600));
    emulator.faults().clear();
    assert_eq!(put_valid_token(&mut client, &emulator).await.status, 202);
}

#[tokio::test]
async fn clear_keeps_the_max_message_size_and_grown_partitions() {
    let (emulator, mut client) = setup().await;
    let faults = emulator.faults();
    faults.set_max_message_size(1000);
    faults.grow_partitions("hub", 6).unwrap();
    faults.clear();

    let sender = client.sender("hub/Partitions/5").await;
    assert_eq!(sender.max_message_size(), Some(1000));
}
