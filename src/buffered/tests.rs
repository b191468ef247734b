//! Unit tests of the buffered producer's logic over a mock sender, on tokio's paused clock so
//! that delays are asserted exactly. Protocol behaviour is tested against the emulator in
//! tests/buffered_producer.rs.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::*;
use crate::idempotence::PublishedSequenceNumbers;

#[derive(Debug, Clone)]
struct Sent {
    partition: String,
    bodies: Vec<String>,
    at: Instant,
}

#[derive(Default)]
struct MockState {
    sent: Vec<Sent>,
    failures: VecDeque<ErrorKind>,
    hanging: HashSet<String>,
}

/// Four partitions; sends take `delay`, may fail from a queue of kinds, and may hang per
/// partition. Records what was sent and when.
struct MockSender {
    partitions: Vec<String>,
    max_size: usize,
    delay: Duration,
    state: Mutex<MockState>,
    init_error: Option<ErrorKind>,
}

impl MockSender {
    fn new(max_size: usize, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            partitions: (0..4).map(|i| i.to_string()).collect(),
            max_size,
            delay,
            state: Mutex::new(MockState::default()),
            init_error: None,
        })
    }

    fn sent(&self) -> Vec<Sent> {
        self.state.lock().unwrap().sent.clone()
    }

    fn fail_next(&self, kind: ErrorKind) {
        self.state.lock().unwrap().failures.push_back(kind);
    }

    fn hang(&self, partition: &str) {
        self.state
            .lock()
            .unwrap()
            .hanging
            .insert(partition.to_string());
    }
}

fn body_of(encoded: &[u8]) -> String {
    let message = serde_amqp::from_slice::<
        fe2o3_amqp_types::messaging::message::__private::Deserializable<
            fe2o3_amqp_types::messaging::Message<
                fe2o3_amqp_types::messaging::Body<serde_amqp::Value>,
            >,
        >,
    >(encoded)
    .expect("decodes")
    .0;
    match message.body {
        fe2o3_amqp_types::messaging::Body::Data(batch) => {
            String::from_utf8(batch.iter().flat_map(|d| d.0.to_vec()).collect()).expect("utf8")
        }
        other => panic!("unexpected body {other:?}"),
    }
}

#[async_trait]
impl BatchSender for MockSender {
    async fn partition_ids(&self) -> Result<Vec<String>> {
        match self.init_error {
            Some(kind) => Err(Error::new(kind, "mock refuses")),
            None => Ok(self.partitions.clone()),
        }
    }

    async fn max_batch_size(&self, _partition_id: &str) -> Result<usize> {
        Ok(self.max_size)
    }

    async fn send(
        &self,
        partition_id: &str,
        encoded: Vec<Vec<u8>>,
    ) -> Result<Option<PublishedSequenceNumbers>> {
        let hang = {
            let mut state = self.state.lock().unwrap();
            state.sent.push(Sent {
                partition: partition_id.to_string(),
                bodies: encoded.iter().map(|e| body_of(e)).collect(),
                at: Instant::now(),
            });
            state.hanging.contains(partition_id)
        };
        if hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.delay).await;
        match self.state.lock().unwrap().failures.pop_front() {
            Some(kind) => Err(Error::new(kind, "mock failure")),
            None => Ok(None),
        }
    }

    async fn close(&self) {}
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(String, Vec<String>),
    Failed(String, Vec<String>, ErrorKind),
}

type Outcomes = Arc<Mutex<Vec<Outcome>>>;

fn bodies(events: &[EventData]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.body().to_vec()).unwrap_or_default())
        .collect()
}

struct Recorder(Outcomes);

#[async_trait]
impl BufferedProducerHandler for Recorder {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        self.0
            .lock()
            .unwrap()
            .push(Outcome::Ok(context.partition_id, bodies(&context.events)));
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        self.0.lock().unwrap().push(Outcome::Failed(
            context.partition_id,
            bodies(&context.events),
            context.error.kind(),
        ));
    }
}

fn producer(
    sender: Arc<MockSender>,
    options: BufferedProducerOptions,
) -> (BufferedProducerClient, Outcomes) {
    let outcomes = Outcomes::default();
    let client = BufferedProducerClient::from_parts(
        options,
        None,
        sender,
        Arc::new(Recorder(outcomes.clone())),
    );
    (client, outcomes)
}

fn to(partition: &str) -> EnqueueOptions {
    EnqueueOptions::default().with_partition_id(partition)
}

fn event(body: &str) -> EventData {
    EventData::from(body)
}

fn handled(outcomes: &Outcomes) -> usize {
    outcomes
        .lock()
        .unwrap()
        .iter()
        .map(|o| match o {
            Outcome::Ok(_, b) | Outcome::Failed(_, b, _) => b.len(),
        })
        .sum()
}

async fn settle() {
    // Let spawned tasks run without moving the paused clock.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_lone_event_is_sent_exactly_at_max_wait_time() {
    let sender = MockSender::new(1 << 20, Duration::ZERO);
    let (client, outcomes) = producer(sender.clone(), BufferedProducerOptions::default());
    let start = Instant::now();
    assert_eq!(client.enqueue_event(event("a"), to("0")).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(249)).await;
    settle().await;
    assert!(sender.sent().is_empty(), "sent before max_wait_time");
    tokio::time::sleep(Duration::from_millis(1)).await;
    settle().await;
    let sent = sender.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].at - start, Duration::from_millis(250));
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![Outcome::Ok("0".into(), vec!["a".into()])]
    );
    assert_eq!(client.total_buffered_event_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_before_max_wait_time() {
    // Each "xxxxxxxxxx" event is 15 bytes encoded, 20 with its data section: 5 fit in 100.
    let sender = MockSender::new(100, Duration::ZERO);
    let (client, _) = producer(sender.clone(), BufferedProducerOptions::default());
    let start = Instant::now();
    for i in 0..6 {
        client
            .enqueue_event(event(&format!("event-{i:03}")), to("1"))
            .await
            .unwrap();
    }
    settle().await;
    let sent = sender.sent();
    assert_eq!(sent.len(), 1, "the full batch went at once");
    assert_eq!(sent[0].at, start);
    assert!(sent[0].bodies.len() >= 2);
    tokio::time::sleep(Duration::from_millis(250)).await;
    settle().await;
    assert_eq!(sender.sent().len(), 2, "the rest went at max_wait_time");
}

#[tokio::test(start_paused = true)]
async fn flush_sends_now_and_returns_after_the_handlers() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(10));
    let (client, outcomes) = producer(sender.clone(), BufferedProducerOptions::default());
    let start = Instant::now();
    for p in 0..4 {
        client
            .enqueue_event(event(&format!("p{p}")), to(&p.to_string()))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    // The sends started at once and took 10 ms; max_wait_time (250 ms) was not waited out.
    assert_eq!(Instant::now() - start, Duration::from_millis(10));
    assert_eq!(handled(&outcomes), 4);
    assert_eq!(client.total_buffered_event_count(), 0);
    // A flush with nothing buffered returns at once.
    client.flush().await.unwrap();
    assert_eq!(Instant::now() - start, Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn no_max_wait_time_sends_only_full_batches_or_on_flush() {
    let sender = MockSender::new(1 << 20, Duration::ZERO);
    let options = BufferedProducerOptions::default().with_max_wait_time(None);
    let (client, outcomes) = producer(sender.clone(), options);
    client.enqueue_event(event("a"), to("0")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(sender.sent().is_empty());
    client.flush().await.unwrap();
    assert_eq!(handled(&outcomes), 1);
}

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
    assert_eq!(
        client.try_enqueue_event(event("a"), to("3")).await.unwrap(),
        1
    );
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
    assert_eq!(
        refused.error().map(Error::kind),
        Some(ErrorKind::InvalidArgument)
    );
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

#[tokio::test(start_paused = true)]
async fn a_failed_batch_goes_to_the_failure_handler_with_its_error() {
    let sender = MockSender::new(1 << 20, Duration::ZERO);
    sender.fail_next(ErrorKind::QuotaExceeded);
    let (client, outcomes) = producer(sender.clone(), BufferedProducerOptions::default());
    client
        .enqueue_events([event("a"), event("b")], to("0"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![Outcome::Failed(
            "0".into(),
            vec!["a".into(), "b".into()],
            ErrorKind::QuotaExceeded
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_too_large_for_any_batch_fails_alone_at_once() {
    let sender = MockSender::new(100, Duration::ZERO);
    let (client, outcomes) = producer(sender.clone(), BufferedProducerOptions::default());
    client.enqueue_event(event("small"), to("0")).await.unwrap();
    client
        .enqueue_event(EventData::from(vec![b'x'; 500]), to("0"))
        .await
        .unwrap();
    client
        .enqueue_event(event("small2"), to("0"))
        .await
        .unwrap();
    settle().await;
    // Reported before max_wait_time, on its own.
    assert_eq!(outcomes.lock().unwrap().len(), 1);
    assert!(
        matches!(&outcomes.lock().unwrap()[0], Outcome::Failed(_, b, ErrorKind::MessageTooLarge) if b.len() == 1)
    );
    client.flush().await.unwrap();
    assert_eq!(
        outcomes.lock().unwrap()[1],
        Outcome::Ok("0".into(), vec!["small".into(), "small2".into()])
    );
}

#[tokio::test(start_paused = true)]
async fn handlers_of_a_partition_run_in_send_order_even_with_concurrent_sends() {
    let sender = MockSender::new(40, Duration::from_millis(10));
    let options = BufferedProducerOptions::default().with_max_concurrent_sends_per_partition(4);
    let (client, outcomes) = producer(sender.clone(), options);
    for i in 0..20 {
        client
            .enqueue_event(event(&format!("{i:02}")), to("0"))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let order: Vec<String> = outcomes
        .lock()
        .unwrap()
        .iter()
        .flat_map(|o| match o {
            Outcome::Ok(_, b) => b.clone(),
            Outcome::Failed(..) => vec![],
        })
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("{i:02}")).collect();
    assert_eq!(order, expected);
    assert!(sender.sent().len() > 4, "several batches");
}

#[tokio::test(start_paused = true)]
async fn a_failure_handler_that_re_enqueues_with_full_buffers_completes() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(1));
    for _ in 0..3 {
        sender.fail_next(ErrorKind::ServerBusy);
    }
    let delivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let keys_seen = Arc::new(Mutex::new(Vec::new()));
    let options = BufferedProducerOptions::default().with_max_buffered_events_per_partition(2);
    let handler = ClosureHandler {
        succeeded: Some(boxed_succeeded({
            let delivered = delivered.clone();
            move |context: SendSucceededContext| {
                delivered.fetch_add(context.events.len(), Ordering::SeqCst);
                async {}
            }
        })),
        failed: boxed_failed({
            let keys_seen = keys_seen.clone();
            move |context: SendFailedContext| {
                keys_seen
                    .lock()
                    .unwrap()
                    .extend(context.partition_keys.clone());
                async move {
                    context
                        .requeue()
                        .await
                        .expect("re-enqueued without waiting");
                }
            }
        }),
    };
    let client =
        BufferedProducerClient::from_parts(options, None, sender.clone(), Arc::new(handler));
    // Keep every buffer full while the failures come back.
    for i in 0..20 {
        let options = EnqueueOptions::default().with_partition_key("TheBestParitionEver");
        client
            .enqueue_event(event(&format!("e{i}")), options)
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while delivered.load(Ordering::SeqCst) < 20 {
            client.flush().await.unwrap();
        }
    })
    .await
    .expect("every event is delivered; no deadlock");
    let keys = keys_seen.lock().unwrap().clone();
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| k.as_deref() == Some("TheBestParitionEver")),
        "{keys:?}"
    );
    // Re-enqueued with their key, they stayed on the key's partition.
    assert!(sender.sent().iter().all(|s| s.partition == "2"));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_contained() {
    let sender = MockSender::new(1 << 20, Duration::ZERO);
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = ClosureHandler {
        succeeded: Some(boxed_succeeded({
            let calls = calls.clone();
            move |_context: SendSucceededContext| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        panic!("handler bug");
                    }
                }
            }
        })),
        failed: boxed_failed(|_context: SendFailedContext| async {}),
    };
    let client = BufferedProducerClient::from_parts(
        BufferedProducerOptions::default(),
        None,
        sender,
        Arc::new(handler),
    );
    client.enqueue_event(event("a"), to("0")).await.unwrap();
    client.flush().await.unwrap();
    client.enqueue_event(event("b"), to("0")).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the producer went on after the panic"
    );
}

#[tokio::test(start_paused = true)]
async fn close_delivers_everything_and_refuses_later_enqueues() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(3));
    let (client, outcomes) = producer(sender.clone(), BufferedProducerOptions::default());
    for i in 0..100 {
        client
            .enqueue_event(event(&format!("e{i}")), EnqueueOptions::default())
            .await
            .unwrap();
    }
    client.close().await.unwrap();
    assert_eq!(handled(&outcomes), 100);
    assert!(outcomes
        .lock()
        .unwrap()
        .iter()
        .all(|o| matches!(o, Outcome::Ok(..))));
    assert!(client.is_closed());
    let err = client
        .enqueue_event(event("late"), to("0"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(client.flush().await.unwrap_err().kind(), ErrorKind::Closed);
    client.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn abandoning_reports_every_unsent_event_as_abandoned() {
    let sender = MockSender::new(1 << 20, Duration::ZERO);
    sender.hang("0");
    let (client, outcomes) = producer(sender.clone(), BufferedProducerOptions::default());
    for i in 0..10 {
        client
            .enqueue_event(event(&format!("p0-{i}")), to("0"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // partition 0's batch is now stuck in flight
    for i in 0..5 {
        client
            .enqueue_event(event(&format!("p1-{i}")), to("1"))
            .await
            .unwrap();
    }
    client.close_abandoning().await.unwrap();
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Failed(_, b, ErrorKind::Abandoned) => b.len(),
                _ => 0,
            })
            .sum::<usize>(),
        15
    );
    assert_eq!(client.total_buffered_event_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn counts_are_right_at_each_step() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(10));
    let (client, _) = producer(sender.clone(), BufferedProducerOptions::default());
    assert_eq!(client.total_buffered_event_count(), 0);
    assert_eq!(client.enqueue_event(event("a"), to("0")).await.unwrap(), 1);
    assert_eq!(client.enqueue_event(event("b"), to("1")).await.unwrap(), 2);
    assert_eq!(
        client
            .enqueue_events([event("c"), event("d")], to("1"))
            .await
            .unwrap(),
        4
    );
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
async fn a_start_up_failure_is_an_error_from_enqueue() {
    let sender = Arc::new(MockSender {
        init_error: Some(ErrorKind::Unauthorized),
        ..Arc::try_unwrap(MockSender::new(1 << 20, Duration::ZERO))
            .ok()
            .expect("unique")
    });
    let (client, _) = producer(sender, BufferedProducerOptions::default());
    let err = client
        .enqueue_event(event("a"), EnqueueOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(client.total_buffered_event_count(), 0);
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
