//! Close, close_abandoning and dropping the last handle.

use crate::prelude::*;

#[tokio::test]
async fn close_delivers_everything_then_refuses() {
    let emulator = emulator().await;
    let options = fast_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false);
    let (producer, recorder) = producer_with(&emulator, options);
    for i in 0..30 {
        let options = match i % 3 {
            0 => auto(),
            1 => keyed("closing"),
            _ => to("3"),
        };
        producer
            .enqueue_event(event(format!("c{i}")), options)
            .await
            .unwrap();
    }
    assert_eq!(emulator.counters().deliveries, 0);
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert!(producer.is_closed());
    assert_eq!(
        recorder.succeeded_in().len(),
        30,
        "handled before close returned"
    );
    assert_eq!(stored_once(&emulator).len(), 30);
    assert_eq!(producer.total_buffered_event_count(), 0);
    let err = producer
        .enqueue_event(event("late"), to("0"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    let err = producer
        .try_enqueue_event(event("late"), auto())
        .await
        .unwrap_err();
    assert_eq!(Some(err.kind()), Some(ErrorKind::Closed));
    assert_eq!(
        producer.flush().await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    // Closing again (or abandoning after close) is harmless.
    bounded("second close", BOUND, producer.close())
        .await
        .unwrap();
    bounded("abandon after close", BOUND, producer.close_abandoning())
        .await
        .unwrap();
    assert_eq!(recorder.handled(), 30);
    wait_until("the connection closes", BOUND, || {
        emulator.connection_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_abandoning_reports_every_unconfirmed_event_once_and_promptly() {
    let emulator = emulator().await;
    // try_timeout above the bound below: the abandon, not a timeout, must end the sends.
    // Batches form by max_wait_time here (not at once on an idle partition).
    let options = fast_options()
        .with_retry_options(fast_retries().with_try_timeout(Duration::from_secs(20)))
        .with_send_when_idle(false);
    let (producer, recorder) = producer_with(&emulator, options);
    for i in 0..4 {
        producer
            .enqueue_event(event(format!("ok-{i}")), to(&i.to_string()))
            .await
            .unwrap();
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(recorder.succeeded_in().len(), 4);

    emulator.faults().withhold_next(1000, FaultScope::Any);
    // Partition 0: a batch in flight (stored, never answered) and a sealed batch behind it.
    producer
        .enqueue_events((0..5).map(|i| event(format!("p0-a{i}"))).collect(), to("0"))
        .await
        .unwrap();
    wait_until("partition 0's batch is in flight", BOUND, || {
        emulator.event_count(HUB, "0").unwrap() == 6
    })
    .await;
    producer
        .enqueue_events((0..5).map(|i| event(format!("p0-b{i}"))).collect(), to("0"))
        .await
        .unwrap();
    // Partition 2: in flight too; partition 1: still buffered when closing.
    producer
        .enqueue_events((0..3).map(|i| event(format!("p2-{i}"))).collect(), to("2"))
        .await
        .unwrap();
    wait_until("partition 2's batch is in flight", BOUND, || {
        emulator.event_count(HUB, "2").unwrap() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(60)).await; // partition 0's second batch is sealed
    producer
        .enqueue_events((0..2).map(|i| event(format!("p1-{i}"))).collect(), to("1"))
        .await
        .unwrap();
    assert_eq!(producer.total_buffered_event_count(), 15);

    bounded(
        "close_abandoning",
        Duration::from_secs(3),
        producer.close_abandoning(),
    )
    .await
    .unwrap();
    let failed = recorder.failed_in();
    assert!(
        failed
            .iter()
            .all(|(_, _, kind)| *kind == ErrorKind::Abandoned),
        "{failed:?}"
    );
    let mut abandoned: Vec<String> = failed.iter().map(|f| f.0.clone()).collect();
    abandoned.sort();
    let mut expected: Vec<String> = (0..5)
        .map(|i| format!("p0-a{i}"))
        .chain((0..5).map(|i| format!("p0-b{i}")))
        .chain((0..3).map(|i| format!("p2-{i}")))
        .chain((0..2).map(|i| format!("p1-{i}")))
        .collect();
    expected.sort();
    assert_eq!(abandoned, expected);
    let maybe_published = recorder.maybe_published();
    for (body, partition, _) in &failed {
        assert_eq!(body[1..2], *partition);
        // Batches cut off mid-send may have been published (a typed fact); the others were
        // not sent.
        let in_flight = body.starts_with("p0-a") || body.starts_with("p2-");
        assert_eq!(maybe_published.contains(body), in_flight, "{body}");
    }
    recorder.assert_each_reported_once();
    assert_eq!(recorder.succeeded_in().len() + failed.len(), 4 + 15);
    assert_eq!(producer.total_buffered_event_count(), 0);
    assert_eq!(
        producer
            .enqueue_event(event("late"), auto())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );
    // Nothing more is reported later.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(recorder.handled(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_still_delivers_in_the_background() {
    let emulator = emulator().await;
    let options = fast_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false);
    let (producer, recorder) = producer_with(&emulator, options);
    let clone = producer.clone();
    for i in 0..20 {
        let options = if i % 2 == 0 { auto() } else { keyed("dropped") };
        producer
            .enqueue_event(event(format!("d{i}")), options)
            .await
            .unwrap();
    }
    drop(producer);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(emulator.counters().deliveries, 0, "a clone is still alive");
    drop(clone);
    wait_until("the events are stored", BOUND, || {
        emulator.total_event_count(HUB).unwrap() == 20
    })
    .await;
    wait_until("the handler saw them", BOUND, || recorder.handled() == 20).await;
    assert_eq!(stored_once(&emulator).len(), 20);
    assert_eq!(recorder.succeeded_in().len(), 20);
    recorder.assert_each_reported_once();
}
