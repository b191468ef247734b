//! Idempotent retries against the emulator over TCP loopback: the producer's links attach as
//! idempotent producers, every event carries its sequence number, and lost acknowledgements,
//! timeouts, detaches and reconnects never store an event twice.
//!
//! The lost-acknowledgement test has a control run without idempotence under the same faults,
//! which must store duplicates: that shows the faults really make the client send batches
//! twice, so the idempotent run's "no duplicate" is earned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerHandler, BufferedProducerOptions, EnqueueOptions,
    ErrorKind, EventData, PublishedSequenceNumbers, RetryOptions, SendFailedContext,
    SendSucceededContext,
};
use eventhubs_emulator::{Emulator, FaultCondition, FaultScope, Value};

const HUB: &str = "hub";
const SEQUENCE: &str = "com.microsoft:producer-sequence-number";
const PRODUCER_ID: &str = "com.microsoft:producer-id";
const EPOCH: &str = "com.microsoft:producer-epoch";

/// One handler call.
#[derive(Debug, Clone)]
struct Call {
    partition: String,
    bodies: Vec<String>,
    published: Option<PublishedSequenceNumbers>,
    error: Option<(ErrorKind, String)>,
    /// For a failure: whether the service confirmed the events were not stored.
    confirmed_not_published: bool,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Call>>>);

fn body_text(event: &EventData) -> String {
    String::from_utf8(event.body().to_vec()).expect("utf8 body")
}

impl BufferedProducerHandler for Recorder {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        self.0.lock().unwrap().push(Call {
            bodies: context.event_data().map(body_text).collect(),
            partition: context.partition_id,
            published: context.published_sequence_numbers,
            error: None,
            confirmed_not_published: false,
        });
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        self.0.lock().unwrap().push(Call {
            bodies: context.event_data().map(body_text).collect(),
            partition: context.partition_id,
            published: None,
            error: Some((context.error.kind(), context.error.to_string())),
            confirmed_not_published: context.error.confirmed_not_published(),
        });
    }
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }

    fn succeeded_bodies(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.error.is_none())
            .flat_map(|c| c.bodies)
            .collect()
    }

    fn failures(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.error.is_some())
            .collect()
    }
}

async fn emulator(partitions: usize) -> Emulator {
    Emulator::builder()
        .hub(HUB, partitions)
        .start()
        .await
        .expect("emulator starts")
}

/// Fast retries with a short try timeout: a withheld acknowledgement costs one second.
fn retries() -> RetryOptions {
    RetryOptions::default()
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_try_timeout(Duration::from_secs(1))
}

fn options(idempotent: bool) -> BufferedProducerOptions {
    BufferedProducerOptions::default()
        .with_max_wait_time(Some(Duration::from_millis(20)))
        .with_retry_options(retries())
        .with_idempotent_retries(idempotent)
}

fn producer(
    emulator: &Emulator,
    options: BufferedProducerOptions,
) -> (BufferedProducerClient, Recorder) {
    let recorder = Recorder::default();
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(options)
            .handler(recorder.clone())
            .build()
            .expect("producer builds");
    (producer, recorder)
}

fn to(partition: &str) -> EnqueueOptions {
    EnqueueOptions::default().with_partition_id(partition)
}

/// Every stored body of the hub with how often it is stored.
fn stored_counts(emulator: &Emulator) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for partition in emulator.partition_ids(HUB).expect("hub") {
        for event in emulator.events(HUB, &partition).expect("events") {
            let body = String::from_utf8(event.body().expect("body").to_vec()).expect("utf8");
            *counts.entry(body).or_insert(0) += 1;
        }
    }
    counts
}

fn duplicates(counts: &HashMap<String, usize>) -> usize {
    counts.values().map(|n| n.saturating_sub(1)).sum()
}

/// Stored events of a partition as (body, sequence-number annotation, producer id, epoch).
fn stored_publishing(emulator: &Emulator, partition: &str) -> Vec<(String, i32, i64, i16)> {
    emulator
        .events(HUB, partition)
        .expect("events")
        .iter()
        .map(|event| {
            let body = String::from_utf8(event.body().unwrap().to_vec()).unwrap();
            let sequence = match event.annotation(SEQUENCE).unwrap() {
                Some(Value::Int(n)) => n,
                other => panic!("{body}: sequence annotation {other:?}"),
            };
            let id = match event.annotation(PRODUCER_ID).unwrap() {
                Some(Value::Long(n)) => n,
                other => panic!("{body}: producer id annotation {other:?}"),
            };
            let epoch = match event.annotation(EPOCH).unwrap() {
                Some(Value::Short(n)) => n,
                other => panic!("{body}: epoch annotation {other:?}"),
            };
            (body, sequence, id, epoch)
        })
        .collect()
}

async fn enqueue_range(
    producer: &BufferedProducerClient,
    prefix: &str,
    range: std::ops::Range<usize>,
    partition: &str,
) {
    for i in range {
        producer
            .enqueue_event(EventData::from(format!("{prefix}-{i}")), to(partition))
            .await
            .expect("enqueued");
    }
}

async fn close(producer: &BufferedProducerClient) {
    tokio::time::timeout(Duration::from_secs(60), producer.close())
        .await
        .expect("close completes")
        .expect("close succeeds");
}

#[test]
fn idempotence_needs_one_send_per_partition() {
    let error = BufferedProducerClient::from_connection_string(
        "Endpoint=sb://localhost/;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=hub;UseDevelopmentEmulator=true",
        None,
    )
    .options(options(true).with_max_concurrent_sends_per_partition(2))
    .on_send_failed(|_| async {})
    .build()
    .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    assert!(
        error
            .to_string()
            .contains("max_concurrent_sends_per_partition")
            && error.to_string().contains("enable_idempotent_retries"),
        "{error}"
    );
}

#[tokio::test]
async fn events_carry_the_granted_producer_and_consecutive_sequence_numbers() {
    let emulator = emulator(2).await;
    let (producer, recorder) = producer(&emulator, options(true));
    for round in 0..3 {
        enqueue_range(&producer, &format!("p0-r{round}"), 0..50, "0").await;
        producer.flush().await.expect("flush");
    }
    for i in 0..40 {
        let key = format!("key-{}", i % 4);
        producer
            .enqueue_event(
                EventData::from(format!("keyed-{i}")),
                EnqueueOptions::default().with_partition_key(key),
            )
            .await
            .expect("enqueued");
    }
    close(&producer).await;
    assert!(recorder.failures().is_empty(), "{:?}", recorder.failures());

    // What the handler was told matches what the service stored, event by event.
    let mut told: HashMap<String, (i32, i64, i16)> = HashMap::new();
    for call in recorder.calls() {
        let published = call
            .published
            .expect("idempotent batches say where they went");
        assert_eq!(published.len(), call.bodies.len());
        for (i, body) in call.bodies.iter().enumerate() {
            let sequence = published.sequence_number(i).expect("in range");
            told.insert(
                body.clone(),
                (
                    sequence,
                    published.producer_id(),
                    published.producer_epoch(),
                ),
            );
        }
        assert!(call.partition == "0" || call.partition == "1");
    }
    let mut producer_ids = Vec::new();
    for partition in ["0", "1"] {
        let stored = stored_publishing(&emulator, partition);
        for (i, (body, sequence, id, epoch)) in stored.iter().enumerate() {
            assert_eq!(
                *sequence, i as i32,
                "{body}: sequence numbers start at 0 and go up by one"
            );
            assert_eq!(*epoch, 0);
            assert_eq!(told.get(body), Some(&(*sequence, *id, *epoch)), "{body}");
        }
        if let Some((_, _, id, _)) = stored.first() {
            assert!(
                stored.iter().all(|e| e.2 == *id),
                "one producer id per partition link"
            );
            producer_ids.push(*id);
        }
    }
    assert_eq!(told.len(), 190);
    assert_eq!(stored_counts(&emulator).len(), 190);
    producer_ids.dedup();
    assert_eq!(
        producer_ids.len(),
        2,
        "each partition has its own producer id"
    );
}

/// Sends 5 batches to partition 0 while the emulator stores but does not acknowledge three
/// deliveries: each times out and is sent again.
async fn run_with_lost_acknowledgements(idempotent: bool) -> (Emulator, Recorder) {
    let emulator = emulator(1).await;
    let (producer, recorder) = producer(&emulator, options(idempotent));
    // Attach first, so the withheld deliveries are batches of events.
    enqueue_range(&producer, "warmup", 0..1, "0").await;
    producer.flush().await.expect("flush");
    emulator
        .faults()
        .withhold_next(3, FaultScope::partition(HUB, "0"));
    for round in 0..5 {
        enqueue_range(&producer, &format!("r{round}"), 0..20, "0").await;
        producer.flush().await.expect("flush");
    }
    close(&producer).await;
    (emulator, recorder)
}

#[tokio::test]
async fn lost_acknowledgements_are_sent_again_and_stored_once() {
    let (emulator, recorder) = run_with_lost_acknowledgements(true).await;
    assert!(recorder.failures().is_empty(), "{:?}", recorder.failures());
    let counts = stored_counts(&emulator);
    assert_eq!(counts.len(), 101);
    assert_eq!(duplicates(&counts), 0, "nothing stored twice");
    assert_eq!(recorder.succeeded_bodies().len(), 101);
    assert!(
        emulator.counters().duplicates_dropped >= 20,
        "the resent batches reached the service: {:?}",
        emulator.counters()
    );
    let sequences: Vec<i32> = stored_publishing(&emulator, "0")
        .iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(sequences, (0..101).collect::<Vec<_>>());

    // Control: the same faults without idempotence store the resent batches twice.
    let (emulator, recorder) = run_with_lost_acknowledgements(false).await;
    assert!(recorder.failures().is_empty());
    assert!(duplicates(&stored_counts(&emulator)) >= 20);
}

#[tokio::test]
async fn a_batch_whose_every_acknowledgement_was_lost_is_settled_as_published() {
    let emulator = emulator(1).await;
    let (producer, recorder) = producer(
        &emulator,
        options(true).with_retry_options(retries().with_max_retries(1)),
    );
    enqueue_range(&producer, "warmup", 0..1, "0").await;
    producer.flush().await.expect("flush");
    // Both tries of the next batch are stored but never acknowledged: the retries end in a
    // timeout, and only the service knows the batch is stored.
    emulator
        .faults()
        .withhold_next(2, FaultScope::partition(HUB, "0"));
    enqueue_range(&producer, "lost", 0..10, "0").await;
    producer.flush().await.expect("flush");
    enqueue_range(&producer, "after", 0..10, "0").await;
    close(&producer).await;

    assert!(recorder.failures().is_empty(), "{:?}", recorder.failures());
    let calls = recorder.calls();
    let lost = calls
        .iter()
        .find(|c| c.bodies.first().is_some_and(|b| b == "lost-0"))
        .expect("the lost batch was reported");
    let published = lost.published.expect("sequence numbers");
    assert_eq!(published.first_sequence_number(), 1);
    assert_eq!(published.last_sequence_number(), 10);
    let counts = stored_counts(&emulator);
    assert_eq!(counts.len(), 21);
    assert_eq!(duplicates(&counts), 0);
    // The batch after it continues the sequence under the fencing epoch.
    let stored = stored_publishing(&emulator, "0");
    let sequences: Vec<i32> = stored.iter().map(|e| e.1).collect();
    assert_eq!(sequences, (0..21).collect::<Vec<_>>());
    assert_eq!(
        stored.last().map(|e| e.3),
        Some(1),
        "the settle attach fenced with epoch 1"
    );
}

#[tokio::test]
async fn a_rejected_batch_gives_its_numbers_to_the_next() {
    let emulator = emulator(1).await;
    // The five rejected events form one batch (not the first alone at once).
    let (producer, recorder) = producer(&emulator, options(true).with_send_when_idle(false));
    enqueue_range(&producer, "warmup", 0..1, "0").await;
    producer.flush().await.expect("flush");
    emulator.faults().reject_next(
        1,
        FaultCondition::ArgumentError,
        FaultScope::partition(HUB, "0"),
    );
    enqueue_range(&producer, "rejected", 0..5, "0").await;
    producer.flush().await.expect("flush");
    enqueue_range(&producer, "next", 0..5, "0").await;
    close(&producer).await;

    let failures = recorder.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (kind, message) = failures[0].error.clone().expect("error");
    assert_eq!(kind, ErrorKind::InvalidArgument, "{message}");
    assert!(failures[0].confirmed_not_published, "{message}");
    let next = recorder
        .calls()
        .into_iter()
        .find(|c| c.bodies.first().is_some_and(|b| b == "next-0"))
        .expect("next batch reported");
    assert_eq!(
        next.published.map(|p| p.first_sequence_number()),
        Some(1),
        "the rejected batch's numbers were given back"
    );
    let stored: Vec<(String, i32)> = stored_publishing(&emulator, "0")
        .into_iter()
        .map(|e| (e.0, e.1))
        .collect();
    let expected: Vec<(String, i32)> = std::iter::once("warmup-0".to_string())
        .chain((0..5).map(|i| format!("next-{i}")))
        .zip(0..)
        .collect();
    assert_eq!(stored, expected);
}

/// Keeps sending to 4 partitions while the emulator detaches links and cuts connections with
/// batches in flight (acknowledgements are slowed so that cuts find deliveries in flight).
async fn run_with_cuts(idempotent: bool) -> (Emulator, Recorder, usize) {
    let emulator = emulator(4).await;
    let options = options(idempotent).with_retry_options(retries().with_max_retries(10));
    let (producer, recorder) = producer(&emulator, options);
    enqueue_range(&producer, "warmup", 0..1, "0").await;
    producer.flush().await.expect("flush");
    let faults = emulator.faults();
    faults.delay_dispositions(Duration::from_millis(150));
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for i in 0..4000 {
                let partition = (i % 4).to_string();
                producer
                    .enqueue_event(EventData::from(format!("e-{i}")), to(&partition))
                    .await
                    .expect("enqueued");
                if i % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        if round % 2 == 0 {
            faults.drop_connections();
        } else {
            faults.detach_senders(HUB, None, FaultCondition::DetachForced);
        }
    }
    sender.await.expect("sender task");
    faults.delay_dispositions(Duration::ZERO);
    close(&producer).await;
    (emulator, recorder, 4001)
}

#[tokio::test]
async fn cut_connections_and_detached_links_store_nothing_twice() {
    let (emulator, recorder, enqueued) = run_with_cuts(true).await;
    let counts = stored_counts(&emulator);
    eprintln!(
        "cuts: enqueued {enqueued}, succeeded {}, failed {}, stored {}, {:?}",
        recorder.succeeded_bodies().len(),
        recorder.failures().len(),
        counts.len(),
        emulator.counters()
    );
    let succeeded = recorder.succeeded_bodies();
    let failed: usize = recorder.failures().iter().map(|c| c.bodies.len()).sum();
    assert_eq!(
        succeeded.len() + failed,
        enqueued,
        "one handler call per event"
    );
    assert_eq!(duplicates(&counts), 0, "no event stored twice");
    assert_eq!(counts.len(), succeeded.len(), "stored == succeeded exactly");
    for body in &succeeded {
        assert!(counts.contains_key(body), "{body} reported but not stored");
    }
    for partition in ["0", "1", "2", "3"] {
        let sequences: Vec<i32> = stored_publishing(&emulator, partition)
            .iter()
            .map(|e| e.1)
            .collect();
        let expected: Vec<i32> = (0..sequences.len() as i32).collect();
        assert_eq!(
            sequences, expected,
            "partition {partition}: no gap, no repeat"
        );
    }
}

#[tokio::test]
async fn a_batch_split_for_a_lowered_size_limit_keeps_the_sequence_without_gaps() {
    let emulator = emulator(1).await;
    let options = options(true)
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false);
    let (producer, recorder) = producer(&emulator, options);
    enqueue_range(&producer, "warmup", 0..1, "0").await;
    producer.flush().await.expect("flush");
    // The service now takes at most 4 KiB; the batch below is built for the 1 MiB the link
    // announced, refused whole, and sent again in pieces with fresh sequence numbers.
    emulator.faults().set_max_message_size(4096);
    let mut bodies = vec!["warmup-0".to_string()];
    for i in 0..30 {
        let body = format!("e{i:02}-{}", "x".repeat(500));
        producer
            .enqueue_event(EventData::from(body.clone()), to("0"))
            .await
            .expect("enqueued");
        bodies.push(body);
    }
    close(&producer).await;
    assert!(recorder.failures().is_empty(), "{:?}", recorder.failures());
    let stored = stored_publishing(&emulator, "0");
    let stored_bodies: Vec<String> = stored.iter().map(|e| e.0.clone()).collect();
    assert_eq!(stored_bodies, bodies, "everything stored once, in order");
    let sequences: Vec<i32> = stored.iter().map(|e| e.1).collect();
    assert_eq!(sequences, (0..31).collect::<Vec<_>>(), "no gap, no repeat");
    assert!(recorder.calls().len() >= 3, "the batch went in pieces");
}
