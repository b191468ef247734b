//! Failures the service reports: rejections, retries, re-enqueueing from the failure handler, oversize events and lowered size limits.

use crate::prelude::*;

#[tokio::test]
async fn a_non_transient_rejection_goes_to_the_failure_handler_with_its_events() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    emulator.faults().reject_next(
        1,
        FaultCondition::ResourceLimitExceeded,
        FaultScope::partition(HUB, "1"),
    );
    producer
        .enqueue_events((0..3).map(|i| event(format!("q{i}"))).collect(), to("1"))
        .await
        .unwrap();
    producer
        .enqueue_event(event("fine"), to("2"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let failed = recorder.failed_in();
    assert_eq!(
        failed,
        vec![
            ("q0".to_string(), "1".to_string(), ErrorKind::QuotaExceeded),
            ("q1".to_string(), "1".to_string(), ErrorKind::QuotaExceeded),
            ("q2".to_string(), "1".to_string(), ErrorKind::QuotaExceeded),
        ]
    );
    // One failure call for the batch, tried once.
    assert_eq!(
        recorder
            .calls()
            .iter()
            .filter(|c| c.error.is_some())
            .count(),
        1
    );
    assert_eq!(
        recorder.succeeded_in(),
        vec![("fine".to_string(), "2".to_string())]
    );
    assert!(stored(&emulator, "1").is_empty());
    assert_eq!(emulator.counters().rejected, 1);
    assert_eq!(emulator.counters().deliveries, 2);
    // The partition goes on: the next batch is published.
    producer
        .enqueue_event(event("later"), to("1"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(stored(&emulator, "1"), vec!["later"]);
    assert_eq!(producer.total_buffered_event_count(), 0);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn transient_rejections_within_max_retries_are_published_once() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    producer
        .enqueue_event(event("warm-up"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let before = emulator.counters();
    // Two internal errors and then a timeout condition: three rejections, max_retries is 3.
    emulator.faults().reject_next(
        2,
        FaultCondition::InternalError,
        FaultScope::partition(HUB, "0"),
    );
    emulator
        .faults()
        .reject_next(1, FaultCondition::Timeout, FaultScope::partition(HUB, "0"));
    producer
        .enqueue_events((0..4).map(|i| event(format!("t{i}"))).collect(), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert!(
        recorder.failed_in().is_empty(),
        "{:?}",
        recorder.failed_in()
    );
    assert_eq!(
        stored(&emulator, "0"),
        vec!["warm-up", "t0", "t1", "t2", "t3"],
        "stored once, in order"
    );
    let after = emulator.counters();
    assert_eq!(
        after.deliveries - before.deliveries,
        4,
        "three rejected tries and one accepted"
    );
    assert_eq!(after.rejected - before.rejected, 3);
    recorder.assert_each_reported_once();

    // One rejection more than max_retries: the batch fails, with the last try's error.
    emulator.faults().reject_next(
        4,
        FaultCondition::InternalError,
        FaultScope::partition(HUB, "0"),
    );
    producer
        .enqueue_events((0..2).map(|i| event(format!("x{i}"))).collect(), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(
        recorder.failed_in(),
        vec![
            ("x0".to_string(), "0".to_string(), ErrorKind::ServiceError),
            ("x1".to_string(), "0".to_string(), ErrorKind::ServiceError),
        ]
    );
    assert_eq!(emulator.event_count(HUB, "0").unwrap(), 5);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn rejected_events_requeued_by_the_failure_handler_keep_their_keys() {
    let emulator = emulator().await;
    let key = "requeued-key";
    let partition = partition_index_for_key(key, 4).to_string();
    let failures = Arc::new(Mutex::new(Vec::<(Vec<String>, Vec<Option<String>>)>::new()));
    let delivered = Arc::new(Mutex::new(Vec::<String>::new()));
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(
                fast_options()
                    .with_max_wait_time(Some(Duration::from_secs(30)))
                    .with_send_when_idle(false),
            )
            .on_send_succeeded({
                let delivered = delivered.clone();
                move |context: SendSucceededContext| {
                    delivered
                        .lock()
                        .unwrap()
                        .extend(context.event_data().map(body_text));
                    async {}
                }
            })
            .on_send_failed({
                let failures = failures.clone();
                move |context: SendFailedContext| {
                    failures.lock().unwrap().push((
                        context.event_data().map(body_text).collect(),
                        context
                            .events
                            .iter()
                            .map(|e| e.partition_key().map(str::to_string))
                            .collect::<Vec<_>>(),
                    ));
                    async move {
                        context.requeue().await.expect("requeued");
                    }
                }
            })
            .build()
            .unwrap();
    emulator.faults().reject_next(
        1,
        FaultCondition::ResourceLimitExceeded,
        FaultScope::partition(HUB, partition.as_str()),
    );
    for i in 0..3 {
        producer
            .enqueue_event(event(format!("k{i}")), keyed(key))
            .await
            .unwrap();
        producer
            .enqueue_event(event(format!("p{i}")), to(&partition))
            .await
            .unwrap();
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let expected = vec!["k0", "p0", "k1", "p1", "k2", "p2"];
    let failures = failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, expected);
    let keys: Vec<Option<&str>> = failures[0].1.iter().map(|k| k.as_deref()).collect();
    assert_eq!(
        keys,
        vec![Some(key), None, Some(key), None, Some(key), None]
    );
    // The handler's requeue took them back in; the next flush publishes them.
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(*delivered.lock().unwrap(), expected);
    let stored_events = emulator.events(HUB, &partition).unwrap();
    let bodies: Vec<String> = stored_events
        .iter()
        .map(|e| String::from_utf8(e.body().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(bodies, expected);
    for e in &stored_events {
        let body = String::from_utf8(e.body().unwrap().to_vec()).unwrap();
        let expected_key = body.starts_with('k').then(|| key.to_string());
        assert_eq!(e.partition_key().unwrap(), expected_key, "{body}");
    }
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn automatic_routing_avoids_a_partition_whose_last_send_failed() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    emulator.faults().reject_next(
        1,
        FaultCondition::ResourceLimitExceeded,
        FaultScope::partition(HUB, "2"),
    );
    producer
        .enqueue_event(event("doomed"), to("2"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(recorder.failed_in().len(), 1);
    for i in 0..12 {
        producer
            .enqueue_event(event(format!("a{i}")), auto())
            .await
            .unwrap();
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert!(stored(&emulator, "2").is_empty(), "partition 2 was avoided");
    let mut total = 0;
    for p in ["0", "1", "3"] {
        let count = stored(&emulator, p).len();
        assert!(count >= 1, "partition {p} got none");
        total += count;
    }
    assert_eq!(total, 12);
    assert_eq!(recorder.succeeded_in().len(), 12);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn an_event_larger_than_the_link_allows_fails_alone_at_once() {
    let emulator = Emulator::builder()
        .hub(HUB, 4)
        .max_message_size(4096)
        .start()
        .await
        .expect("emulator");
    // A long max_wait_time: only the failure may be reported before the flush.
    let options = fast_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false);
    let (producer, recorder) = producer_with(&emulator, options);
    producer
        .enqueue_event(event("small-1"), to("0"))
        .await
        .unwrap();
    let huge = EventData::from(vec![b'h'; 10 * 1024]).with_property("id", "huge");
    producer.enqueue_event(huge, to("0")).await.unwrap();
    producer
        .enqueue_event(event("small-2"), to("0"))
        .await
        .unwrap();
    wait_until("the huge event is reported", BOUND, || {
        recorder.handled() == 1
    })
    .await;
    let calls = recorder.calls();
    assert_eq!(calls[0].partition, "0");
    assert_eq!(calls[0].error, Some(ErrorKind::MessageTooLarge));
    assert_eq!(calls[0].bodies.len(), 1);
    assert_eq!(calls[0].bodies[0].len(), 10 * 1024);
    assert_eq!(producer.buffered_event_count("0"), 2, "the small ones wait");
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(
        recorder.calls()[1],
        Call {
            partition: "0".into(),
            bodies: vec!["small-1".into(), "small-2".into()],
            error: None,
            message: None,
            may_have_been_published: false,
        }
    );
    assert_eq!(stored(&emulator, "0"), vec!["small-1", "small-2"]);
    assert_eq!(
        emulator.counters().deliveries,
        1,
        "the huge event never went out"
    );
    assert_eq!(emulator.counters().rejected, 0);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn a_batch_the_service_finds_too_large_is_sent_again_within_its_new_limit() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    producer
        .enqueue_event(event("warm-up"), to("3"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    // The link announced 1 MiB when it attached; the service now takes less.
    emulator.faults().set_max_message_size(1000);
    let body = "b".repeat(300);
    producer
        .enqueue_events(
            (0..5).map(|i| event(format!("{i}{body}"))).collect(),
            to("3"),
        )
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    // Refused once as too large, then sent again in batches within the new limit (each
    // event, with its `id` property, takes more than half of it).
    assert_eq!(recorder.failed_in(), vec![]);
    assert_eq!(recorder.succeeded_in().len(), 6);
    let counters = emulator.counters();
    assert_eq!(counters.rejected, 1, "refused once, not retried as it was");
    assert_eq!(counters.deliveries, 1 + 1 + 5);
    let expected: Vec<String> = std::iter::once("warm-up".to_string())
        .chain((0..5).map(|i| format!("{i}{body}")))
        .collect();
    assert_eq!(stored(&emulator, "3"), expected);
    bounded("close", BOUND, producer.close()).await.unwrap();
}
