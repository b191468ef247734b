//! Per-event outcomes over the real protocol: published (with partition and, for idempotent
//! producers, sequence number), failed for good (the batch's shared error), abandoned,
//! cleared, re-split, settled; their order against the handler calls; and enqueue errors
//! that hand the event back.

use crate::prelude::*;

/// A handler that records, for each call, the bodies and whether every outcome of those
/// events had already resolved when the call started.
/// A handler call as the probe saw it: the bodies, and whether all their outcomes had
/// resolved when it started.
type ProbedCall = (Vec<String>, bool);

#[derive(Clone, Default)]
struct OrderProbe {
    resolved: Arc<Mutex<HashSet<String>>>,
    calls: Arc<Mutex<Vec<ProbedCall>>>,
}

impl BufferedProducerHandler for OrderProbe {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        let bodies: Vec<String> = context.event_data().map(body_text).collect();
        let resolved = self.resolved.lock().unwrap();
        let all_resolved = bodies.iter().all(|b| resolved.contains(b));
        self.calls.lock().unwrap().push((bodies, all_resolved));
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        let bodies: Vec<String> = context.event_data().map(body_text).collect();
        self.calls.lock().unwrap().push((bodies, false));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_resolve_in_handler_order_before_each_handler_call() {
    let emulator = emulator().await;
    let probe = OrderProbe::default();
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(fast_options())
            .handler(probe.clone())
            .build()
            .unwrap();
    let mut pending = Vec::new();
    for i in 0..200 {
        let body = format!("o{i}");
        let outcome = producer
            .enqueue_event_with_outcome(event(body.clone()), to("1"))
            .await
            .unwrap();
        pending.push((body, outcome));
    }
    // Await them in enqueue order, recording each as it resolves.
    let mut order = Vec::new();
    for (body, outcome) in pending {
        let published = bounded("an outcome", BOUND, outcome)
            .await
            .expect("published");
        assert_eq!(published.partition_id(), "1");
        assert_eq!(published.idempotent_sequence_number(), None);
        probe.resolved.lock().unwrap().insert(body.clone());
        order.push(body);
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(stored(&emulator, "1"), order, "stored in outcome order");
    let calls = probe.calls.lock().unwrap().clone();
    let reported: Vec<String> = calls.iter().flat_map(|(b, _)| b.clone()).collect();
    assert_eq!(reported, order, "handler calls in the same order");
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn a_failed_batch_gives_each_event_the_error_its_handler_call_gets() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    emulator.faults().reject_next(
        1,
        FaultCondition::ResourceLimitExceeded,
        FaultScope::partition(HUB, "2"),
    );
    let outcome = producer
        .enqueue_event_with_outcome(event("quota"), to("2"))
        .await
        .unwrap();
    let error = bounded("the outcome", BOUND, outcome).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::QuotaExceeded);
    assert!(!error.may_have_been_published(), "a refusal is definite");
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(
        recorder.failed_in(),
        vec![(
            "quota".to_string(),
            "2".to_string(),
            ErrorKind::QuotaExceeded
        )]
    );
    // Dropping an outcome changes nothing: the event is still sent and reported.
    drop(
        producer
            .enqueue_event_with_outcome(event("unwatched"), to("2"))
            .await
            .unwrap(),
    );
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(stored(&emulator, "2"), vec!["unwatched"]);
    assert!(recorder.succeeded().contains(&"unwatched".to_string()));
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_and_cleared_events_resolve_as_abandoned() {
    let emulator = emulator().await;
    let options = fast_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false);
    let (producer, recorder) = producer_with(&emulator, options);
    producer.partition_ids().await.unwrap();
    let cleared = producer
        .enqueue_event_with_outcome(event("cleared"), to("0"))
        .await
        .unwrap();
    bounded("clear", BOUND, producer.clear()).await.unwrap();
    let error = bounded("cleared outcome", BOUND, cleared)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Abandoned);
    assert!(!error.may_have_been_published());
    assert_eq!(producer.total_buffered_event_count(), 0);
    // Still open after clear.
    let kept = producer
        .enqueue_event_with_outcome(event("kept"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    bounded("kept outcome", BOUND, kept)
        .await
        .expect("published");
    // A batch in flight when abandoning may have been published; one never sent was not.
    emulator.faults().withhold_next(1, FaultScope::Any);
    let in_flight = producer
        .enqueue_event_with_outcome(event("in-flight"), to("1"))
        .await
        .unwrap();
    let flush = producer.clone();
    let flushing = tokio::spawn(async move { flush.flush().await });
    wait_until("the batch is stored", BOUND, || {
        emulator.event_count(HUB, "1").unwrap() == 1
    })
    .await;
    let waiting = producer
        .enqueue_event_with_outcome(event("waiting"), to("3"))
        .await
        .unwrap();
    bounded("close_abandoning", BOUND, producer.close_abandoning())
        .await
        .unwrap();
    let error = bounded("in-flight outcome", BOUND, in_flight)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Abandoned);
    assert!(error.may_have_been_published());
    let error = bounded("waiting outcome", BOUND, waiting)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Abandoned);
    assert!(!error.may_have_been_published());
    let _ = bounded("the flush ends", BOUND, flushing).await;
    assert_eq!(recorder.handled(), 4, "each event had one handler call");
    recorder.assert_each_reported_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_re_split_batch_resolve_piece_by_piece() {
    let emulator = emulator().await;
    let options = fast_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false);
    let (producer, recorder) = producer_with(&emulator, options);
    producer
        .enqueue_event(event("warm-up"), to("3"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    // Five 300-byte events in one batch, then the service takes at most 1000 bytes, and one
    // event of 2000 bytes that no piece can carry.
    let mut pending = Vec::new();
    for i in 0..5 {
        let body = format!("{i}{}", "x".repeat(299));
        pending.push(
            producer
                .enqueue_event_with_outcome(event(body), to("3"))
                .await
                .unwrap(),
        );
    }
    let huge = producer
        .enqueue_event_with_outcome(event("h".repeat(2000)), to("3"))
        .await
        .unwrap();
    emulator.faults().set_max_message_size(1000);
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    for outcome in pending {
        let published = bounded("a piece's outcome", BOUND, outcome)
            .await
            .expect("published in a piece");
        assert_eq!(published.partition_id(), "3");
    }
    let error = bounded("the huge event's outcome", BOUND, huge)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::MessageTooLarge);
    assert_eq!(stored(&emulator, "3").len(), 6);
    assert!(recorder.calls().len() >= 3, "reported in pieces");
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_outcomes_carry_sequence_numbers_and_settled_failures_say_so() {
    let emulator = emulator().await;
    let options = fast_options().with_idempotent_retries(true);
    let (producer, _recorder) = producer_with(&emulator, options);
    let mut numbers = Vec::new();
    for i in 0..5 {
        let outcome = producer
            .enqueue_event_with_outcome(event(format!("i{i}")), to("0"))
            .await
            .unwrap();
        let published = bounded("outcome", BOUND, outcome).await.expect("published");
        numbers.push(published.idempotent_sequence_number().expect("a number"));
    }
    assert_eq!(numbers, vec![0, 1, 2, 3, 4], "consecutive from 0");
    // A refused batch is settled with the service: confirmed not published.
    emulator.faults().reject_next(
        1,
        FaultCondition::ArgumentError,
        FaultScope::partition(HUB, "0"),
    );
    let outcome = producer
        .enqueue_event_with_outcome(event("refused"), to("0"))
        .await
        .unwrap();
    let error = bounded("settled outcome", Duration::from_secs(15), outcome)
        .await
        .unwrap_err();
    assert!(error.confirmed_not_published(), "{error}");
    assert!(!error.may_have_been_published());
    // Its number goes to the next event.
    let outcome = producer
        .enqueue_event_with_outcome(event("next"), to("0"))
        .await
        .unwrap();
    let next = bounded("next outcome", BOUND, outcome).await.unwrap();
    assert_eq!(next.idempotent_sequence_number(), Some(5));
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn every_refused_enqueue_hands_the_same_event_back() {
    let emulator = emulator().await;
    let (producer, _recorder) = producer(&emulator);
    let original = EventData::from("precious")
        .with_property("n", 7i32)
        .with_message_id("m-1");
    // Bad options.
    let both = EnqueueOptions::default()
        .with_partition_id("0")
        .with_partition_key("k");
    let refused = producer
        .enqueue_event(original.clone(), both)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
    assert_eq!(refused.into_event(), original);
    // A partition that does not exist, named in the error.
    let refused = producer
        .enqueue_event_with_outcome(original.clone(), to("42"))
        .await
        .unwrap_err();
    assert_eq!(refused.error().partition_id(), Some("42"));
    assert_eq!(refused.into_event(), original);
    // Several at once: the refused one and those after it come back.
    producer.close().await.unwrap();
    let refused = producer
        .enqueue_events(vec![original.clone(), event("second")], auto())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Closed);
    let back = refused.into_events();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0], original);
    let refused = producer
        .try_enqueue_event(original.clone(), auto())
        .await
        .unwrap_err();
    assert_eq!(refused.into_event(), original);
}

#[tokio::test]
async fn an_event_larger_than_the_link_takes_is_refused_at_enqueue_naming_the_sizes() {
    let emulator = Emulator::builder()
        .hub(HUB, 4)
        .max_message_size(64 * 1024)
        .start()
        .await
        .unwrap();
    let (producer, recorder) = producer(&emulator);
    // The first event teaches the producer the link's limit.
    producer
        .enqueue_event(event("small"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let big = EventData::from(vec![b'b'; 100 * 1024]);
    for options in [to("1"), keyed("k"), auto()] {
        let refused = producer
            .enqueue_event(big.clone(), options)
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::MessageTooLarge, "{refused}");
        let message = refused.to_string();
        assert!(message.contains("102400 bytes of body"), "{message}");
        assert!(message.contains("65536 bytes"), "{message}");
        assert_eq!(refused.into_event(), big);
    }
    assert_eq!(recorder.handled(), 1, "nothing was taken");
    assert_eq!(producer.total_buffered_event_count(), 0);
    bounded("close", BOUND, producer.close()).await.unwrap();
}
