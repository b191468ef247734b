//! `set_max_message_size`: the size limit lowered at runtime.

use super::*;

#[tokio::test]
async fn set_max_message_size_rejects_larger_deliveries_on_links_attached_before() {
    let (emulator, mut client) = setup().await;
    let mut before = client.sender("hub/Partitions/0").await;
    assert_eq!(
        before.max_message_size(),
        Some(eventhubs_emulator::DEFAULT_MAX_MESSAGE_SIZE)
    );

    emulator.faults().set_max_message_size(1000);
    // The link keeps what it announced at attach...
    assert_eq!(
        before.max_message_size(),
        Some(eventhubs_emulator::DEFAULT_MAX_MESSAGE_SIZE)
    );
    // ...so the client sends 2000 bytes, and the emulator refuses them.
    let outcome = send(&mut before, large_event(2000)).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("amqp:link:message-size-exceeded")
    );
    let outcome = send(&mut before, large_event(500)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 1);
    assert_eq!(counters(&emulator), (2, 1, 1, 0));
}

#[tokio::test]
async fn set_max_message_size_is_announced_on_links_attached_after() {
    let (emulator, mut client) = setup().await;
    emulator.faults().set_max_message_size(1000);
    let after = client.sender("hub/Partitions/0").await;
    assert_eq!(after.max_message_size(), Some(1000));
}

#[tokio::test]
async fn set_max_message_size_measures_a_batch_as_a_whole() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator.faults().set_max_message_size(1000);

    // Each event is small; together they are above the limit.
    let events = (0..5)
        .map(|_| large_event(300))
        .collect::<Vec<Message<Data>>>();
    let outcome = send(&mut sender, batch(events, None)).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("amqp:link:message-size-exceeded")
    );
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 0);
    assert_eq!(counters(&emulator), (1, 0, 1, 0));
}
