//! The metrics snapshot over the real protocol: counters that add up to the handler calls
//! under injected faults, gauges that return to zero, retries and reconnects counted.

use crate::prelude::*;

/// Every counter of `m` agrees with the recorder's handler calls, and the total is the sum of
/// the partitions.
fn assert_counts_match_handler_calls(
    metrics: &eventhubs_buffered::ProducerMetrics,
    recorder: &Recorder,
    enqueued: u64,
) {
    let total = &metrics.total;
    let failed = recorder.failed();
    let abandoned = failed
        .iter()
        .filter(|(_, kind)| *kind == ErrorKind::Abandoned)
        .count() as u64;
    assert_eq!(total.enqueued, enqueued, "enqueued");
    assert_eq!(
        total.published,
        recorder.succeeded().len() as u64,
        "published"
    );
    assert_eq!(total.failed, failed.len() as u64 - abandoned, "failed");
    assert_eq!(total.abandoned, abandoned, "abandoned");
    assert_eq!(
        total.published + total.failed + total.abandoned,
        total.enqueued,
        "every enqueued event has exactly one outcome"
    );
    for kind in [
        ErrorKind::QuotaExceeded,
        ErrorKind::PartitionPaused,
        ErrorKind::Unauthorized,
    ] {
        let calls = failed.iter().filter(|(_, k)| *k == kind).count() as u64;
        assert_eq!(total.failed_with(kind), calls, "failed with {kind:?}");
    }
    let sum = |f: fn(&eventhubs_buffered::PartitionMetrics) -> u64| -> u64 {
        metrics.partitions.iter().map(f).sum()
    };
    assert_eq!(sum(|p| p.enqueued), total.enqueued);
    assert_eq!(sum(|p| p.published), total.published);
    assert_eq!(sum(|p| p.failed), total.failed);
    assert_eq!(sum(|p| p.retries), total.retries);
    assert_eq!(sum(|p| p.batch_events.count), total.batch_events.count);
    assert_eq!(total.publish_latency.count, total.published);
}

fn assert_nothing_buffered(metrics: &eventhubs_buffered::ProducerMetrics) {
    for partition in metrics.partitions.iter().chain([&metrics.total]) {
        assert_eq!(
            (
                partition.buffered_events,
                partition.buffered_bytes,
                partition.sends_in_flight
            ),
            (0, 0, 0),
            "buffered events, bytes and sends in flight of {:?}",
            partition.partition_id
        );
    }
}

#[tokio::test]
async fn counters_add_up_to_the_handler_calls_under_injected_faults() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    let faults = emulator.faults();
    // Partition 1 refuses its first batch for good (the ordering guard then pauses it);
    // partition 2 is busy twice (two retries).
    faults.reject_next(
        1,
        FaultCondition::ResourceLimitExceeded,
        FaultScope::partition(HUB, "1"),
    );
    faults.reject_next(
        2,
        FaultCondition::ServerBusy,
        FaultScope::partition(HUB, "2"),
    );
    let mut enqueued = 0;
    for round in 0..4 {
        for i in 0..50 {
            let partition = (i % 4).to_string();
            producer
                .enqueue_event(event(format!("r{round}-{i}")), to(&partition))
                .await
                .expect("enqueue");
            enqueued += 1;
        }
        bounded("flush", BOUND, producer.flush()).await.unwrap();
    }
    let metrics = producer.metrics();
    assert_counts_match_handler_calls(&metrics, &recorder, enqueued);
    assert_nothing_buffered(&metrics);
    let p1 = metrics.partition("1").expect("partition 1");
    assert!(p1.failed_with(ErrorKind::QuotaExceeded) > 0, "{p1:?}");
    assert_eq!(
        p1.failed_with(ErrorKind::QuotaExceeded) + p1.failed_with(ErrorKind::PartitionPaused),
        p1.failed
    );
    assert_eq!(metrics.partition("2").expect("partition 2").retries, 2);
    assert_eq!(metrics.total.retries, 2);
    assert_eq!(metrics.partition("0").expect("partition 0").published, 52);
    // Every try reached the emulator: a batch once, plus its retries.
    assert_eq!(
        emulator.counters().deliveries,
        metrics.total.batch_events.count + metrics.total.retries
    );
    assert_eq!(metrics.reconnects, 0);
    // Whatever is still buffered when the producer is abandoned counts as abandoned.
    producer
        .enqueue_event(event("late-0"), to("0"))
        .await
        .unwrap();
    producer
        .enqueue_event(event("late-3"), to("3"))
        .await
        .unwrap();
    enqueued += 2;
    bounded("close", BOUND, producer.close_abandoning())
        .await
        .unwrap();
    let metrics = producer.metrics();
    assert_counts_match_handler_calls(&metrics, &recorder, enqueued);
    assert_nothing_buffered(&metrics);
}

#[tokio::test]
async fn gauges_show_what_is_held_while_a_send_hangs_and_return_to_zero_after_flush() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    // Prime the link (its size limit is learned on the first event), then hold acknowledgements.
    producer
        .enqueue_event(event("first"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    emulator
        .faults()
        .delay_dispositions(Duration::from_millis(600));
    for i in 0..10 {
        producer
            .enqueue_event(event(format!("e{i}")), to("0"))
            .await
            .unwrap();
    }
    wait_until("a send in flight", BOUND, || {
        producer.metrics().total.sends_in_flight == 1
    })
    .await;
    let metrics = producer.metrics();
    let p0 = metrics.partition("0").expect("partition 0");
    assert_eq!(p0.buffered_events, 10);
    assert!(
        p0.buffered_bytes >= 10 * 128,
        "each event holds its size and bookkeeping: {p0:?}"
    );
    assert_eq!(metrics.total.buffered_bytes, p0.buffered_bytes);
    assert_eq!(p0.enqueued, 11);
    assert_eq!(p0.published, 1);
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let metrics = producer.metrics();
    assert_nothing_buffered(&metrics);
    assert_counts_match_handler_calls(&metrics, &recorder, 11);
    let p0 = metrics.partition("0").expect("partition 0");
    // The held acknowledgements show in the send durations and in the latency.
    assert!(p0.send_duration.max >= Duration::from_millis(500), "{p0:?}");
    assert!(
        p0.publish_latency.max >= Duration::from_millis(500),
        "{p0:?}"
    );
    assert!(
        p0.batch_events.count >= 2 && p0.batch_events.max <= 10,
        "{p0:?}"
    );
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn a_lost_connection_counts_as_a_reconnect() {
    let emulator = emulator().await;
    let (producer, recorder) = producer_with(&emulator, reconnecting_options());
    producer
        .enqueue_event(event("before"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(producer.metrics().reconnects, 0);
    lose_connections(&emulator, Faults::drop_connections).await;
    producer
        .enqueue_event(event("after"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let metrics = producer.metrics();
    assert_eq!(metrics.reconnects, 1);
    assert_counts_match_handler_calls(&metrics, &recorder, 2);
    assert_eq!(metrics.total.published, 2);
    bounded("close", BOUND, producer.close()).await.unwrap();
}
