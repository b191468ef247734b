//! Back pressure and counts: waiting for room, cancel safety, try_enqueue, many tasks at once.

use super::*;

#[tokio::test(start_paused = true)]
async fn back_pressure_blocks_and_resumes_when_a_send_completes() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(100));
    let options = BufferedProducerOptions::default()
        .with_max_buffered_events_per_partition(2)
        .with_max_wait_time(Some(Duration::from_secs(10)));
    let (client, _) = producer(sender.clone(), options);
    let start = Instant::now();
    client.enqueue_event(event("1"), to("0")).await.unwrap();
    client.enqueue_event(event("2"), to("0")).await.unwrap();
    assert_eq!(client.buffered_event_count("0"), 2);
    // Full: the batch goes at once (waiting out max_wait_time could only stall the enqueuer),
    // and the third enqueue resumes when its 100 ms send completes.
    client.enqueue_event(event("3"), to("0")).await.unwrap();
    assert_eq!(Instant::now() - start, Duration::from_millis(100));
    assert_eq!(client.buffered_event_count("0"), 1);
}

#[tokio::test(start_paused = true)]
async fn enqueue_under_timeout_is_cancel_safe() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(100));
    let options = BufferedProducerOptions::default().with_max_buffered_events_per_partition(1);
    let (client, outcomes) = producer(sender.clone(), options);
    client.enqueue_event(event("kept"), to("2")).await.unwrap();
    let timed_out = tokio::time::timeout(
        Duration::from_millis(50),
        client.enqueue_event(event("dropped"), to("2")),
    )
    .await;
    assert!(timed_out.is_err(), "the enqueue waited for room");
    assert_eq!(client.total_buffered_event_count(), 1);
    assert_eq!(client.buffered_event_count("2"), 1);
    client.flush().await.unwrap();
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![Outcome::Ok("2".into(), vec!["kept".into()])]
    );
    // The capacity the cancelled enqueue waited for was not leaked.
    client.enqueue_event(event("after"), to("2")).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(handled(&outcomes), 2);
}

#[tokio::test(start_paused = true)]
async fn try_enqueue_hands_the_event_back_when_full() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(100));
    let options = BufferedProducerOptions::default().with_max_buffered_events_per_partition(1);
    let (client, _) = producer(sender.clone(), options);
    client.try_enqueue_event(event("a"), to("3")).await.unwrap();
    assert_eq!(client.total_buffered_event_count(), 1);
    let refused = client
        .try_enqueue_event(event("b"), to("3"))
        .await
        .unwrap_err();
    assert!(refused.is_full());
    assert_eq!(refused.into_event().body().as_ref(), b"b");
    let refused = client
        .try_enqueue_event(event("c"), to("9"))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(start_paused = true)]
async fn option_errors_buffer_nothing() {
    let sender = MockSender::new(1 << 20, Duration::ZERO);
    let (client, _) = producer(sender, BufferedProducerOptions::default());
    let both = EnqueueOptions::default()
        .with_partition_id("0")
        .with_partition_key("k");
    let long_key = EnqueueOptions::default().with_partition_key("k".repeat(129));
    for (options, words) in [
        (both, "not both"),
        (to("7"), "'7' does not exist"),
        (long_key, "129 characters"),
    ] {
        let err = client.enqueue_event(event("x"), options).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains(words), "{err}");
    }
    assert_eq!(client.total_buffered_event_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn counts_are_right_at_each_step() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(10));
    let options = BufferedProducerOptions::default().with_send_when_idle(false);
    let (client, _) = producer(sender.clone(), options);
    assert_eq!(client.total_buffered_event_count(), 0);
    client.enqueue_event(event("a"), to("0")).await.unwrap();
    client.enqueue_event(event("b"), to("1")).await.unwrap();
    client
        .enqueue_events(vec![event("c"), event("d")], to("1"))
        .await
        .unwrap();
    assert_eq!(client.total_buffered_event_count(), 4);
    assert_eq!(client.buffered_event_count("0"), 1);
    assert_eq!(client.buffered_event_count("1"), 3);
    assert_eq!(client.buffered_event_count("nope"), 0);
    tokio::time::sleep(Duration::from_millis(255)).await;
    assert_eq!(client.total_buffered_event_count(), 4, "still in flight");
    tokio::time::sleep(Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(client.total_buffered_event_count(), 0);
    assert_eq!(
        client.partition_ids().await.unwrap(),
        vec!["0", "1", "2", "3"]
    );
}

#[tokio::test(start_paused = true)]
async fn sixteen_tasks_enqueueing_at_once_all_get_reported() {
    let sender = MockSender::new(2000, Duration::from_millis(2));
    let options = BufferedProducerOptions::default().with_max_buffered_events_per_partition(50);
    let (client, outcomes) = producer(sender.clone(), options);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    let options = if i % 2 == 0 {
                        EnqueueOptions::default()
                    } else {
                        EnqueueOptions::default().with_partition_key(format!("task-{t}"))
                    };
                    client
                        .enqueue_event(event(&format!("{t}-{i}")), options)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    client.close().await.unwrap();
    assert_eq!(handled(&outcomes), 16 * 250);
    // Keyed events of one task kept their order.
    let all: Vec<String> = sender
        .sent()
        .iter()
        .flat_map(|s| s.bodies.clone())
        .collect();
    for t in 0..16 {
        let mine: Vec<usize> = all
            .iter()
            .filter_map(|b| {
                b.strip_prefix(&format!("{t}-"))
                    .and_then(|i| i.parse().ok())
            })
            .filter(|i: &usize| i % 2 == 1)
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "task {t} keyed order");
    }
}

/// A 10 KiB event: it holds 2 * 10 KiB + 128 bytes of the byte bound, so three fit in 64 KiB.
fn ten_kib(name: &str) -> EventData {
    EventData::from(format!("{name}{}", "x".repeat(10 * 1024 - 1)))
}

/// `options` with a byte bound of 64 KiB.
fn in_64_kib(options: BufferedProducerOptions) -> BufferedProducerOptions {
    options.with_max_buffered_bytes(64 * 1024)
}

/// Enqueues `event` with `try_enqueue_event`, which must take it.
async fn accepted(client: &BufferedProducerClient, event: EventData, partition: &str) {
    client
        .try_enqueue_event(event, to(partition))
        .await
        .unwrap();
}

/// A producer with a 64 KiB bound over a mock whose sends take 1 s.
fn in_64_kib_with_sends_of_1_s() -> (Arc<MockSender>, BufferedProducerClient, Outcomes) {
    let sender = MockSender::new(1 << 20, Duration::from_secs(1));
    let (client, outcomes) = producer(sender.clone(), in_64_kib(Default::default()));
    (sender, client, outcomes)
}

/// Enqueues `event` with `try_enqueue_event`, which must refuse it as full; returns it.
async fn refused_as_full(
    client: &BufferedProducerClient,
    event: EventData,
    partition: &str,
) -> EventData {
    let refused = client
        .try_enqueue_event(event, to(partition))
        .await
        .unwrap_err();
    assert!(refused.is_full(), "{refused:?}");
    refused.into_event()
}

#[tokio::test(start_paused = true)]
async fn a_send_in_flight_holds_its_serialized_copy_in_the_byte_bound() {
    // Three events fit, unless a send in flight holds its serialized copy too (its batch's
    // size rounded up: 16 KiB).
    let (sender, client, outcomes) = in_64_kib_with_sends_of_1_s();
    accepted(&client, ten_kib("a"), "0").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(sender.sent().len(), 1, "a is being sent");
    accepted(&client, ten_kib("b"), "0").await;
    let refused = refused_as_full(&client, ten_kib("c"), "0").await;
    client.flush().await.unwrap();
    accepted(&client, refused, "0").await;
    client.flush().await.unwrap();
    assert_eq!(handled(&outcomes), 3);
}

#[tokio::test(start_paused = true)]
async fn encode_buffers_kept_for_a_busy_partition_hold_bytes_of_the_bound() {
    // While b is sent, a's encode buffer (about 10 KiB) is kept for the partition's next
    // events and counts: c does not fit next to b and its send's 16 KiB until b's send ends
    // and the idle partition lets the buffer go.
    let (sender, client, outcomes) = in_64_kib_with_sends_of_1_s();
    accepted(&client, ten_kib("a"), "0").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    accepted(&client, ten_kib("b"), "0").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sender.sent().len(), 2, "a was sent, b is being sent");
    assert_eq!(handled(&outcomes), 1);
    let refused = refused_as_full(&client, ten_kib("c"), "0").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(handled(&outcomes), 2);
    accepted(&client, refused, "0").await;
    client.flush().await.unwrap();
    assert_eq!(handled(&outcomes), 3);
}

/// Holds the first handler call until `gate` gets a permit; counts the events handled.
struct GatedFirstCall {
    gate: Arc<tokio::sync::Semaphore>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    events: Arc<std::sync::atomic::AtomicUsize>,
}

impl GatedFirstCall {
    async fn call(&self, events: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.calls.fetch_add(1, SeqCst) == 0 {
            let _ = self.gate.acquire().await;
        }
        self.events.fetch_add(events, SeqCst);
    }
}

impl BufferedProducerHandler for GatedFirstCall {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        self.call(context.event_data().count()).await;
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        self.call(context.event_data().count()).await;
    }
}

#[tokio::test(start_paused = true)]
async fn events_hold_their_bytes_until_their_handler_call() {
    // a's handler call hangs, so b's report waits
    // behind it, and b's bytes stay taken: only two more events fit until b's call starts.
    let sender = MockSender::new(1 << 20, Duration::from_millis(1));
    let options = in_64_kib(BufferedProducerOptions::default())
        .with_send_when_idle(false)
        .with_max_wait_time(Some(Duration::from_millis(10)));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = BufferedProducerClient::from_parts(
        options,
        None,
        sender.clone(),
        Arc::new(GatedFirstCall {
            gate: gate.clone(),
            calls: Default::default(),
            events: handled.clone(),
        }),
    );
    accepted(&client, ten_kib("a"), "0").await;
    tokio::time::sleep(Duration::from_millis(15)).await;
    accepted(&client, ten_kib("b"), "0").await;
    tokio::time::sleep(Duration::from_millis(15)).await;
    assert_eq!(sender.sent().len(), 2, "a and b were sent");
    assert_eq!(client.total_buffered_event_count(), 0);
    accepted(&client, ten_kib("c"), "1").await;
    accepted(&client, ten_kib("d"), "1").await;
    let refused = refused_as_full(&client, ten_kib("e"), "1").await;
    gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 2);
    accepted(&client, refused, "1").await;
    client.flush().await.unwrap();
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 5);
}
