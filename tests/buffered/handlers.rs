//! Handlers that panic, and the producer's accessors.

use crate::prelude::*;

#[tokio::test]
async fn a_panicking_success_handler_does_not_stop_the_producer() {
    let emulator = emulator().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(fast_options())
            .on_send_succeeded({
                let calls = calls.clone();
                let seen = seen.clone();
                move |context: SendSucceededContext| {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    seen.lock()
                        .unwrap()
                        .extend(context.event_data().map(body_text));
                    async move {
                        if n == 0 {
                            panic!("a handler bug (expected by this test)");
                        }
                    }
                }
            })
            .on_send_failed(|context| async move {
                panic!("no failure expected: {}", context.error);
            })
            .build()
            .unwrap();
    producer
        .enqueue_event(event("first"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for i in 0..3 {
        producer
            .enqueue_event(event(format!("later-{i}")), to("0"))
            .await
            .unwrap();
        producer
            .enqueue_event(event(format!("elsewhere-{i}")), auto())
            .await
            .unwrap();
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let mut expected: Vec<String> = std::iter::once("first".to_string())
        .chain((0..3).map(|i| format!("later-{i}")))
        .chain((0..3).map(|i| format!("elsewhere-{i}")))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(emulator.total_event_count(HUB).unwrap(), 7);
    assert!(calls.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn accessors_report_the_hub_and_partitions() {
    let emulator = emulator().await;
    let options = fast_options().with_identifier("buffered-test-producer");
    let (producer, _recorder) = producer_with(&emulator, options);
    assert_eq!(producer.eventhub_name(), "hub");
    assert_eq!(producer.fully_qualified_namespace(), "127.0.0.1");
    assert_eq!(producer.identifier(), "buffered-test-producer");
    assert_eq!(
        producer.options().max_wait_time,
        Some(Duration::from_millis(20))
    );
    let props = bounded("properties", BOUND, producer.eventhub_properties())
        .await
        .unwrap();
    assert_eq!(props.name, "hub");
    assert_eq!(props.partition_ids, vec!["0", "1", "2", "3"]);
    assert_eq!(producer.partition_ids().await.unwrap(), props.partition_ids);
    let p = producer.partition_properties("1").await.unwrap();
    assert_eq!((p.id.as_str(), p.eventhub_name.as_str()), ("1", "hub"));
    assert!(p.is_empty);
    assert_eq!(p.last_enqueued_sequence_number, -1);
    producer.enqueue_event(event("one"), to("1")).await.unwrap();
    producer.enqueue_event(event("two"), to("1")).await.unwrap();
    assert_eq!(producer.buffered_event_count("1"), 2);
    assert_eq!(producer.buffered_event_count("9"), 0);
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let p = producer.partition_properties("1").await.unwrap();
    assert!(!p.is_empty);
    assert_eq!(p.last_enqueued_sequence_number, 1);
    let err = producer.partition_properties("9").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let debug = format!("{producer:?}");
    assert!(
        debug.contains("hub") && !debug.contains(emulator.shared_access_key().1),
        "{debug}"
    );

    // A producer with a default identifier gets a distinct one.
    let (other, _) = producer_with(&emulator, fast_options());
    assert!(
        other.identifier().starts_with("producer-"),
        "{}",
        other.identifier()
    );
    assert_ne!(other.identifier(), producer.identifier());
    bounded("close", BOUND, producer.close()).await.unwrap();
    bounded("close", BOUND, other.close()).await.unwrap();
}
