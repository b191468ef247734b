//! Lost connections and partition growth: nothing lost, nothing duplicated, prompt fail-over.

use crate::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_between_enqueues_lose_and_duplicate_nothing() {
    let emulator = emulator().await;
    let (producer, recorder) = producer_with(&emulator, reconnecting_options());
    let mut enqueued = 0;
    let mut round = |producer: BufferedProducerClient, name: &'static str| {
        let start = enqueued;
        enqueued += 12;
        async move {
            for i in start..start + 12 {
                let options = match i % 3 {
                    0 => auto(),
                    1 => keyed(&format!("k{}", i % 4)),
                    _ => to(&(i % 4).to_string()),
                };
                producer
                    .enqueue_event(event(format!("{name}-{i}")), options)
                    .await
                    .expect("enqueued");
            }
            bounded("flush", BOUND, producer.flush()).await.unwrap();
        }
    };
    round(producer.clone(), "before").await;
    assert_eq!(emulator.connection_count(), 1);
    lose_connections(&emulator, Faults::drop_connections).await;
    round(producer.clone(), "after-drop").await;
    assert_eq!(emulator.connection_count(), 1, "one new connection");
    lose_connections(&emulator, Faults::close_connections).await;
    round(producer.clone(), "after-close").await;
    assert_eq!(emulator.connection_count(), 1, "one new connection");
    assert!(
        emulator
            .faults()
            .detach_senders(HUB, None, FaultCondition::DetachForced)
            >= 4,
        "a link per partition"
    );
    // Let the link tasks carry the detach out before the next sends.
    tokio::time::sleep(Duration::from_millis(50)).await;
    round(producer.clone(), "after-detach").await;
    // A drop while events wait in the buffer (not in flight): they go on a new connection.
    let options = reconnecting_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false);
    let (slow, slow_recorder) = producer_with(&emulator, options);
    slow.enqueue_event(event("slow-0"), to("1")).await.unwrap();
    bounded("flush", BOUND, slow.flush()).await.unwrap();
    // To the partition already attached: an attach for a new one could reopen the connection
    // before the drop is seen to be done.
    slow.enqueue_event(event("slow-1"), to("1")).await.unwrap();
    slow.enqueue_event(event("slow-2"), to("1")).await.unwrap();
    assert_eq!(emulator.connection_count(), 2);
    lose_connections(&emulator, Faults::drop_connections).await;
    bounded("close", BOUND, slow.close()).await.unwrap();
    assert_eq!(slow_recorder.succeeded_in().len(), 3);
    bounded("close", BOUND, producer.close()).await.unwrap();

    let placed = stored_once(&emulator);
    assert_eq!(placed.len(), enqueued + 3, "stored == enqueued");
    assert_eq!(recorder.succeeded_in().len(), enqueued, "all successes");
    assert!(
        recorder.failed_in().is_empty(),
        "{:?}",
        recorder.failed_in()
    );
    recorder.assert_each_reported_once();
    for (body, partition) in recorder.succeeded_in() {
        assert_eq!(placed[&body], partition);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_flight_when_the_connection_drops_is_sent_again_and_reported_once() {
    let emulator = emulator().await;
    // One batch of three (not the first event alone at once).
    let options = reconnecting_options().with_send_when_idle(false);
    let (producer, recorder) = producer_with(&emulator, options);
    producer
        .enqueue_event(event("warm-up"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    // The service stores the batch but its answer is late; the connection drops meanwhile.
    emulator
        .faults()
        .delay_dispositions(Duration::from_millis(500));
    producer
        .enqueue_events((0..3).map(|i| event(format!("f{i}"))).collect(), to("0"))
        .await
        .unwrap();
    wait_until("the batch is stored", BOUND, || {
        emulator.event_count(HUB, "0").unwrap() == 4
    })
    .await;
    assert_eq!(recorder.handled(), 1, "not acknowledged yet");
    lose_connections(&emulator, Faults::drop_connections).await;
    emulator.faults().delay_dispositions(Duration::ZERO);
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    // At-least-once: the retry stores the batch again, but the handler hears of it once.
    assert_eq!(
        stored(&emulator, "0"),
        vec!["warm-up", "f0", "f1", "f2", "f0", "f1", "f2"]
    );
    assert_eq!(
        recorder.calls()[1],
        Call {
            partition: "0".into(),
            bodies: vec!["f0".into(), "f1".into(), "f2".into()],
            error: None,
            message: None,
            may_have_been_published: false,
        }
    );
    assert_eq!(recorder.calls().len(), 2);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

/// When the connection is lost (dropped, or closed by the service) while a batch awaits its
/// acknowledgement, the send fails over to a new connection at once instead of waiting out
/// the try timeout (20 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_flight_when_the_connection_is_lost_fails_over_promptly() {
    let emulator = emulator().await;
    let options =
        fast_options().with_retry_options(fast_retries().with_try_timeout(Duration::from_secs(20)));
    let (producer, recorder) = producer_with(&emulator, options);
    producer
        .enqueue_event(event("before"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let mut stored_so_far = 1;
    for (round, lose) in [
        Faults::drop_connections as fn(&Faults) -> usize,
        Faults::close_connections,
    ]
    .into_iter()
    .enumerate()
    {
        emulator
            .faults()
            .delay_dispositions(Duration::from_millis(500));
        producer
            .enqueue_event(event(format!("in-flight-{round}")), to("0"))
            .await
            .unwrap();
        stored_so_far += 1;
        wait_until("the batch is stored", BOUND, || {
            emulator.event_count(HUB, "0").unwrap() == stored_so_far
        })
        .await;
        lose_connections(&emulator, lose).await;
        emulator.faults().delay_dispositions(Duration::ZERO);
        // The try timeout is 20 s: a prompt failover finishes well within this bound.
        bounded("flush after a lost connection", BOUND, producer.flush())
            .await
            .unwrap();
        stored_so_far += 1; // sent again: at-least-once
    }
    assert_eq!(recorder.succeeded_in().len(), 3);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn new_partitions_are_found_after_the_refresh_interval() {
    let emulator = emulator().await;
    let options = fast_options().with_partition_refresh_interval(Duration::from_secs(1));
    let (producer, recorder) = producer_with(&emulator, options);
    assert_eq!(
        producer.partition_ids().await.unwrap(),
        vec!["0", "1", "2", "3"]
    );
    let err = producer
        .enqueue_event(event("early"), to("5"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(emulator.faults().grow_partitions(HUB, 6).unwrap(), 6);
    let started = Instant::now();
    let mut n = 0;
    while producer.partition_ids().await.unwrap().len() < 6 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the new partitions were not found"
        );
        producer
            .enqueue_event(event(format!("tick-{n}")), auto())
            .await
            .unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        producer.partition_ids().await.unwrap(),
        vec!["0", "1", "2", "3", "4", "5"]
    );
    producer
        .enqueue_event(event("to-five"), to("5"))
        .await
        .unwrap();
    // Keys now hash over six partitions, as the service does.
    let key = (0..100)
        .map(|i| format!("key-{i}"))
        .find(|k| partition_index_for_key(k, 6) >= 4)
        .expect("a key on a new partition");
    producer
        .enqueue_event(event("keyed-new"), keyed(&key))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(
        stored(&emulator, "5").first().map(String::as_str),
        Some("to-five")
    );
    let expected_partition = partition_index_for_key(&key, 6).to_string();
    assert!(stored(&emulator, &expected_partition).contains(&"keyed-new".to_string()));
    assert!(recorder
        .succeeded_in()
        .contains(&("to-five".to_string(), "5".to_string())));
    assert!(recorder.failed_in().is_empty());
    assert_eq!(recorder.handled(), n + 2);
    bounded("close", BOUND, producer.close()).await.unwrap();
}
