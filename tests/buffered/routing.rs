//! Where events land: explicit partitions, keys hashed as the service does (and stamped), automatic routing; options checked before anything is buffered.

use crate::prelude::*;

#[tokio::test]
async fn a_lone_event_is_stored_and_reported_with_its_partition() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    bounded(
        "enqueue",
        BOUND,
        producer.enqueue_event(event("lonely"), auto()),
    )
    .await
    .expect("enqueued");
    assert_eq!(producer.total_buffered_event_count(), 1);
    // No flush: the idle partition sends it at once.
    wait_until("the lone event is reported", BOUND, || {
        recorder.handled() == 1
    })
    .await;
    let calls = recorder.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].error, None);
    assert_eq!(calls[0].bodies, vec!["lonely"]);
    let placed = stored_once(&emulator);
    assert_eq!(placed.len(), 1);
    assert_eq!(
        placed["lonely"], calls[0].partition,
        "reported where stored"
    );
    let stored_event = &emulator.events(HUB, &calls[0].partition).unwrap()[0];
    assert_eq!(
        stored_event.property("id").unwrap(),
        Some(Value::String("lonely".into()))
    );
    assert_eq!(stored_event.partition_key().unwrap(), None);
    assert_eq!(producer.total_buffered_event_count(), 0);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn explicit_partition_ids_land_there_in_order() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    for i in 0..5 {
        for p in ["3", "1", "0", "2"] {
            producer
                .enqueue_event(event(format!("p{p}-{i}")), to(p))
                .await
                .expect("enqueued");
        }
    }
    bounded("close", BOUND, producer.close()).await.unwrap();
    for p in ["0", "1", "2", "3"] {
        let expected: Vec<String> = (0..5).map(|i| format!("p{p}-{i}")).collect();
        assert_eq!(stored(&emulator, p), expected, "partition {p}");
    }
    let succeeded = recorder.succeeded_in();
    assert_eq!(succeeded.len(), 20);
    for (body, partition) in succeeded {
        assert_eq!(body[1..2], partition, "{body} reported on {partition}");
    }
    assert!(recorder.failed_in().is_empty());
    recorder.assert_each_reported_once();
}

#[tokio::test]
async fn keyed_events_land_on_the_hash_partition_with_the_key_stamped_in_order() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    let keys = [
        "alphabet",
        "TheBestParitionEver",
        "device-42",
        "k",
        "sensor/7",
    ];
    // Interleaved, so that keys sharing a partition mix in one batch.
    for i in 0..6 {
        for key in keys {
            producer
                .enqueue_event(event(format!("{key}#{i}")), keyed(key))
                .await
                .expect("enqueued");
        }
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(recorder.handled(), 30);
    for key in keys {
        let partition = partition_index_for_key(key, 4).to_string();
        let events = emulator.events(HUB, &partition).unwrap();
        let mine: Vec<String> = events
            .iter()
            .filter(|e| e.partition_key().unwrap().as_deref() == Some(key))
            .map(|e| String::from_utf8(e.body().unwrap().to_vec()).unwrap())
            .collect();
        let expected: Vec<String> = (0..6).map(|i| format!("{key}#{i}")).collect();
        assert_eq!(mine, expected, "key {key} on partition {partition}");
    }
    // Every stored event carries the key it was enqueued with, and is where that key hashes.
    let placed = stored_once(&emulator);
    assert_eq!(placed.len(), 30);
    for (body, partition) in &placed {
        let key = body.split('#').next().unwrap();
        assert_eq!(*partition, partition_index_for_key(key, 4).to_string());
    }
    for (body, partition) in recorder.succeeded_in() {
        assert_eq!(placed[&body], partition, "{body} reported where stored");
    }
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn automatic_events_spread_over_every_partition_without_a_key() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    for i in 0..40 {
        producer
            .enqueue_event(event(format!("a{i}")), auto())
            .await
            .expect("enqueued");
    }
    bounded("close", BOUND, producer.close()).await.unwrap();
    let placed = stored_once(&emulator);
    assert_eq!(placed.len(), 40);
    for p in ["0", "1", "2", "3"] {
        let count = placed.values().filter(|q| q.as_str() == p).count();
        // Round-robin over healthy partitions with room: an even spread.
        assert_eq!(count, 10, "partition {p}");
        for e in emulator.events(HUB, p).unwrap() {
            assert_eq!(e.partition_key().unwrap(), None);
        }
    }
    for (body, partition) in recorder.succeeded_in() {
        assert_eq!(placed[&body], partition);
    }
    assert_eq!(recorder.handled(), 40);
}

#[tokio::test]
async fn enqueue_options_are_checked_before_anything_is_buffered() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    let both = EnqueueOptions::default()
        .with_partition_id("0")
        .with_partition_key("k");
    for options in [to("4"), both, keyed(&"k".repeat(129))] {
        let err = producer
            .enqueue_event(event("x"), options.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{options:?}");
    }
    // The partition list came from the service: "4" does not exist in a 4-partition hub.
    let err = producer
        .enqueue_event(event("x"), to("4"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("'4' does not exist"), "{err}");
    assert_eq!(producer.total_buffered_event_count(), 0);
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.handled(), 0);
    assert_eq!(emulator.counters().deliveries, 0);
}
