//! Where events go: keys hashed as the service does, automatic routing around a stuck partition.

use super::*;

#[tokio::test(start_paused = true)]
async fn keyed_events_go_to_the_hash_partition_in_order_and_empty_keys_are_automatic() {
    let sender = MockSender::new(1 << 20, Duration::ZERO);
    let (client, _) = producer(sender.clone(), BufferedProducerOptions::default());
    for i in 0..10 {
        let options = EnqueueOptions::default().with_partition_key("TheBestParitionEver");
        client
            .enqueue_event(event(&format!("k{i}")), options)
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let sent = sender.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].partition, "2",
        "the published vector: 4 partitions -> index 2"
    );
    let expected: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    assert_eq!(sent[0].bodies, expected);
    for i in 0..8 {
        client
            .enqueue_event(
                event(&format!("e{i}")),
                EnqueueOptions::default().with_partition_key(""),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let partitions: HashSet<_> = sender.sent()[1..]
        .iter()
        .map(|s| s.partition.clone())
        .collect();
    assert_eq!(partitions.len(), 4, "an empty key is spread like no key");
}

#[tokio::test(start_paused = true)]
async fn automatic_routing_never_waits_on_a_stuck_partition_while_others_have_room() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(5));
    sender.hang("1");
    let options = BufferedProducerOptions::default()
        .with_max_buffered_events_per_partition(4)
        .with_max_wait_time(Some(Duration::from_millis(1)));
    let (client, _) = producer(sender.clone(), options);
    let start = Instant::now();
    // Far more events than partition 1 can hold: none of them may wait on it.
    for i in 0..200 {
        client
            .enqueue_event(event(&format!("e{i}")), EnqueueOptions::default())
            .await
            .unwrap();
    }
    assert!(client.buffered_event_count("1") <= 4);
    assert!(
        Instant::now() - start < Duration::from_secs(2),
        "{:?}",
        Instant::now() - start
    );
    // Partition 1's send never ends, so a flush would wait for ever: abandon instead.
    client.close_abandoning().await.unwrap();
    assert_eq!(client.total_buffered_event_count(), 0);
}
