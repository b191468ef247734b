//! Flush and back pressure over the real connection; many tasks enqueueing at once.

use crate::prelude::*;

#[tokio::test]
async fn flush_returns_once_everything_before_it_is_handled_without_waiting_out_max_wait_time() {
    let emulator = emulator().await;
    let options = fast_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false);
    let (producer, recorder) = producer_with(&emulator, options);
    // A flush before anything was enqueued (not even connected) returns at once.
    bounded("empty flush", BOUND, producer.flush())
        .await
        .unwrap();
    for i in 0..40 {
        let options = match i % 3 {
            0 => auto(),
            1 => keyed(&format!("key-{}", i % 5)),
            _ => to(&(i % 4).to_string()),
        };
        producer
            .enqueue_event(event(format!("e{i}")), options)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        emulator.counters().deliveries,
        0,
        "nothing is sent before max_wait_time (30 s) without a flush"
    );
    assert_eq!(producer.total_buffered_event_count(), 40);
    // 30 s max_wait_time: a flush that waited it out would hit this bound.
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(
        recorder.handled(),
        40,
        "every handler call was made before flush returned"
    );
    assert_eq!(recorder.succeeded_in().len(), 40);
    assert_eq!(producer.total_buffered_event_count(), 0);
    assert_eq!(emulator.total_event_count(HUB).unwrap(), 40);

    // A second round, flushed while other tasks keep enqueueing: flush covers what came before.
    for i in 40..50 {
        producer
            .enqueue_event(event(format!("e{i}")), auto())
            .await
            .unwrap();
    }
    let more = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for i in 50..60 {
                producer
                    .enqueue_event(event(format!("e{i}")), to("2"))
                    .await
                    .unwrap();
            }
        })
    };
    bounded("second flush", BOUND, producer.flush())
        .await
        .unwrap();
    let handled: HashSet<String> = recorder.outcomes().into_iter().map(|o| o.0).collect();
    for i in 0..50 {
        assert!(
            handled.contains(&format!("e{i}")),
            "e{i} handled before flush returned"
        );
    }
    bounded("enqueuer", BOUND, more).await.unwrap();
    bounded("last flush", BOUND, producer.flush())
        .await
        .unwrap();
    assert_eq!(recorder.handled(), 60);
    recorder.assert_each_reported_once();
    assert_eq!(stored_once(&emulator).len(), 60);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_over_the_real_connection() {
    let emulator = emulator().await;
    let options = fast_options()
        .with_max_buffered_events_per_partition(5)
        .with_send_when_idle(false);
    let (producer, recorder) = producer_with(&emulator, options);
    // Connect and attach first, so that the delay below is the only slow part.
    producer
        .enqueue_event(event("warm-up"), to("0"))
        .await
        .unwrap();
    bounded("warm-up flush", BOUND, producer.flush())
        .await
        .unwrap();

    emulator
        .faults()
        .delay_dispositions(Duration::from_millis(300));
    for i in 0..5 {
        producer
            .enqueue_event(event(format!("held-{i}")), to("0"))
            .await
            .unwrap();
    }
    assert_eq!(producer.buffered_event_count("0"), 5);
    // The partition is full: the enqueue waits, and cancelling it leaves nothing behind.
    let waited = tokio::time::timeout(
        Duration::from_millis(50),
        producer.enqueue_event(event("cancelled"), to("0")),
    )
    .await;
    assert!(waited.is_err(), "the enqueue to a full partition waited");
    assert_eq!(producer.buffered_event_count("0"), 5);
    assert_eq!(producer.total_buffered_event_count(), 5);
    // Nor does a try_enqueue wait: the event comes back.
    let refused = producer
        .try_enqueue_event(event("refused"), to("0"))
        .await
        .unwrap_err();
    assert!(refused.is_full());
    assert_eq!(refused.into_event().body().as_ref(), b"refused");
    // Other partitions have room.
    producer
        .enqueue_event(event("other"), to("1"))
        .await
        .unwrap();
    assert_eq!(producer.buffered_event_count("0"), 5);

    // Once the service answers (300 ms later), the same enqueue goes through.
    bounded(
        "enqueue after the delay",
        BOUND,
        producer.enqueue_event(event("after"), to("0")),
    )
    .await
    .unwrap();
    // The held batch was accepted before room was given back.
    assert_eq!(
        stored(&emulator, "0"),
        vec!["warm-up", "held-0", "held-1", "held-2", "held-3", "held-4"]
    );
    assert_eq!(
        producer.buffered_event_count("0"),
        1,
        "only 'after' is buffered"
    );
    emulator.faults().delay_dispositions(Duration::ZERO);
    bounded("close", BOUND, producer.close()).await.unwrap();
    let bodies: Vec<String> = recorder.outcomes().into_iter().map(|o| o.0).collect();
    assert!(!bodies.contains(&"cancelled".to_string()));
    assert!(!bodies.contains(&"refused".to_string()));
    assert_eq!(recorder.handled(), 8);
    assert_eq!(
        stored(&emulator, "0").last().map(String::as_str),
        Some("after")
    );
    assert!(recorder.failed_in().is_empty());
}

#[tokio::test]
async fn a_full_partition_is_sent_at_once_even_without_max_wait_time() {
    let emulator = emulator().await;
    // No max_wait_time and room for 3 events: only a send can free room, so a full partition
    // must be sent without waiting for a flush that the blocked enqueuer cannot make.
    let options = fast_options()
        .with_max_wait_time(None)
        .with_max_buffered_events_per_partition(3);
    let (producer, recorder) = producer_with(&emulator, options);
    for i in 0..10 {
        bounded(
            "enqueue to a full partition",
            BOUND,
            producer.enqueue_event(event(format!("f{i}")), to("0")),
        )
        .await
        .unwrap();
    }
    assert!(producer.buffered_event_count("0") <= 3);
    assert!(
        emulator.event_count(HUB, "0").unwrap() >= 7,
        "room for the last enqueues came from sends"
    );
    bounded("close", BOUND, producer.close()).await.unwrap();
    let expected: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    assert_eq!(stored(&emulator, "0"), expected);
    assert_eq!(recorder.succeeded_in().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_tasks_enqueueing_at_once_each_event_stored_and_reported_once() {
    let emulator = emulator().await;
    let options = fast_options().with_max_buffered_events_per_partition(20);
    let (producer, recorder) = producer_with(&emulator, options);
    const PER_TASK: usize = 60;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let producer = producer.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let options = match i % 3 {
                        0 => auto(),
                        1 => keyed(&format!("task-{t}")),
                        _ => to(&(t % 4).to_string()),
                    };
                    producer
                        .enqueue_event(event(format!("{t}-{i}")), options)
                        .await
                        .expect("enqueued");
                }
            })
        })
        .collect();
    for task in tasks {
        bounded("enqueueing task", Duration::from_secs(10), task)
            .await
            .unwrap();
    }
    bounded("close", BOUND, producer.close()).await.unwrap();

    let placed = stored_once(&emulator);
    assert_eq!(placed.len(), 16 * PER_TASK);
    assert_eq!(recorder.handled(), 16 * PER_TASK);
    assert!(recorder.failed_in().is_empty());
    recorder.assert_each_reported_once();
    for (body, partition) in recorder.succeeded_in() {
        assert_eq!(placed[&body], partition, "{body} reported where stored");
    }
    for t in 0..16 {
        // Keyed events: on the key's partition, stamped, in enqueue order.
        let key = format!("task-{t}");
        let partition = partition_index_for_key(&key, 4).to_string();
        let keyed: Vec<String> = emulator
            .events(HUB, &partition)
            .unwrap()
            .iter()
            .filter(|e| e.partition_key().unwrap().as_deref() == Some(key.as_str()))
            .map(|e| String::from_utf8(e.body().unwrap().to_vec()).unwrap())
            .collect();
        let expected: Vec<String> = (0..PER_TASK)
            .filter(|i| i % 3 == 1)
            .map(|i| format!("{t}-{i}"))
            .collect();
        assert_eq!(keyed, expected, "task {t}'s keyed events");
        // Explicit events: on their partition, in enqueue order.
        let explicit: Vec<String> = stored(&emulator, &(t % 4).to_string())
            .into_iter()
            .filter(|b| {
                b.strip_prefix(&format!("{t}-"))
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i % 3 == 2)
            })
            .collect();
        let expected: Vec<String> = (0..PER_TASK)
            .filter(|i| i % 3 == 2)
            .map(|i| format!("{t}-{i}"))
            .collect();
        assert_eq!(explicit, expected, "task {t}'s explicit events");
    }
}
