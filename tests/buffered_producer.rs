//! BufferedProducerClient against the emulator over TCP loopback.
//!
//! The unit tests in src/buffered/tests.rs check the logic over a mock sender on a paused
//! clock; these check that the same behaviours hold over the real protocol, plus what only a
//! real service shows (rejections, lost connections, partition growth, link limits).
//! Real IO does not work with a paused clock, so waits are bounded with timeouts on the real
//! clock and the tests assert outcomes and orderings, not durations.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerHandler, BufferedProducerOptions, EnqueueOptions,
    ErrorKind, EventData, RetryOptions, SendFailedContext, SendSucceededContext,
};
use eventhubs_emulator::{
    partition_index_for_key, Emulator, FaultCondition, FaultScope, Faults, Value,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One handler call: the partition, the bodies in order, and the error kind of a failure.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    partition: String,
    bodies: Vec<String>,
    error: Option<ErrorKind>,
}

/// Records every handler call, in the order the calls happened.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    /// The error message each failed event was reported with.
    failure_messages: Arc<Mutex<HashMap<String, String>>>,
}

fn body_text(event: &EventData) -> String {
    String::from_utf8(event.body().to_vec()).expect("utf8 body")
}

#[async_trait::async_trait]
impl BufferedProducerHandler for Recorder {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        self.calls.lock().unwrap().push(Call {
            partition: context.partition_id,
            bodies: context.events.iter().map(body_text).collect(),
            error: None,
        });
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        let mut messages = self.failure_messages.lock().unwrap();
        for event in &context.events {
            messages.insert(body_text(event), context.error.message().to_string());
        }
        drop(messages);
        self.calls.lock().unwrap().push(Call {
            partition: context.partition_id,
            bodies: context.events.iter().map(body_text).collect(),
            error: Some(context.error.kind()),
        });
    }
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Events handled so far (successes and failures).
    fn handled(&self) -> usize {
        self.calls().iter().map(|c| c.bodies.len()).sum()
    }

    /// Every reported body with its partition and error, one entry per event.
    fn outcomes(&self) -> Vec<(String, String, Option<ErrorKind>)> {
        self.calls()
            .into_iter()
            .flat_map(|c| {
                let partition = c.partition.clone();
                let error = c.error;
                c.bodies
                    .into_iter()
                    .map(move |b| (b, partition.clone(), error))
            })
            .collect()
    }

    fn succeeded(&self) -> Vec<(String, String)> {
        self.outcomes()
            .into_iter()
            .filter(|(_, _, e)| e.is_none())
            .map(|(b, p, _)| (b, p))
            .collect()
    }

    fn failed(&self) -> Vec<(String, String, ErrorKind)> {
        self.outcomes()
            .into_iter()
            .filter_map(|(b, p, e)| e.map(|e| (b, p, e)))
            .collect()
    }

    /// Panics unless no event was reported twice.
    fn assert_each_reported_once(&self) {
        let mut seen = HashSet::new();
        for (body, _, _) in self.outcomes() {
            assert!(seen.insert(body.clone()), "{body} was reported twice");
        }
    }
}

const HUB: &str = "hub";

async fn emulator() -> Emulator {
    Emulator::builder()
        .hub(HUB, 4)
        .start()
        .await
        .expect("emulator starts")
}

fn fast_retries() -> RetryOptions {
    RetryOptions::default()
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_try_timeout(Duration::from_secs(3))
}

/// Short max_wait_time and fast retries.
fn fast_options() -> BufferedProducerOptions {
    BufferedProducerOptions::default()
        .with_max_wait_time(Some(Duration::from_millis(20)))
        .with_retry_options(fast_retries())
}

/// For tests that lose the connection: a short try timeout, because a send in flight when the
/// connection is lost waits it out before the retry reconnects (see the ignored test
/// `a_send_in_flight_when_the_connection_is_lost_fails_over_promptly`).
fn reconnecting_options() -> BufferedProducerOptions {
    fast_options().with_retry_options(fast_retries().with_try_timeout(Duration::from_secs(1)))
}

fn producer_with(
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

fn producer(emulator: &Emulator) -> (BufferedProducerClient, Recorder) {
    producer_with(emulator, fast_options())
}

fn to(partition: &str) -> EnqueueOptions {
    EnqueueOptions::default().with_partition_id(partition)
}

fn keyed(key: &str) -> EnqueueOptions {
    EnqueueOptions::default().with_partition_key(key)
}

fn auto() -> EnqueueOptions {
    EnqueueOptions::default()
}

fn event(body: impl Into<String>) -> EventData {
    let body = body.into();
    EventData::from(body.clone()).with_property("id", body)
}

/// A future bounded on the real clock; a timeout is a test failure naming `what`.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not complete within {limit:?}"),
    }
}

/// Polls `condition` every few milliseconds until it holds; fails the test after `limit`.
async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The stored bodies of a partition, in sequence order.
fn stored(emulator: &Emulator, partition: &str) -> Vec<String> {
    emulator
        .events(HUB, partition)
        .expect("events")
        .iter()
        .map(|e| String::from_utf8(e.body().expect("body").to_vec()).expect("utf8"))
        .collect()
}

/// Every stored body of the hub with the partition it is in.
fn stored_all(emulator: &Emulator) -> Vec<(String, String)> {
    emulator
        .partition_ids(HUB)
        .expect("ids")
        .into_iter()
        .flat_map(|p| {
            stored(emulator, &p)
                .into_iter()
                .map(move |b| (b, p.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Panics unless each body is stored exactly once; returns where each is.
fn stored_once(emulator: &Emulator) -> HashMap<String, String> {
    let mut placed = HashMap::new();
    for (body, partition) in stored_all(emulator) {
        if let Some(other) = placed.insert(body.clone(), partition.clone()) {
            panic!("{body} is stored twice (partitions {other} and {partition})");
        }
    }
    placed
}

const BOUND: Duration = Duration::from_secs(5);

/// Loses every client connection (`drop_connections` or `close_connections`) and waits until
/// the emulator has really ended them: the order is carried out asynchronously, and a send
/// made before it is would not meet the fault.
async fn lose_connections(emulator: &Emulator, lose: fn(&Faults) -> usize) {
    assert!(lose(&emulator.faults()) >= 1, "no connection to lose");
    wait_until("the connections end", BOUND, || {
        emulator.connection_count() == 0
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

const OFFLINE: &str = "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true;EntityPath=hub";

fn build_error(options: BufferedProducerOptions) -> eventhubs_buffered::Error {
    BufferedProducerClient::from_connection_string(OFFLINE, None)
        .options(options)
        .handler(Recorder::default())
        .build()
        .expect_err("the options are refused")
}

#[test]
fn build_requires_a_failure_handler() {
    let err = BufferedProducerClient::from_connection_string(OFFLINE, None)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("failure handler"), "{err}");
    assert!(err.to_string().contains("on_send_failed"), "{err}");

    // A success closure alone is not enough.
    let err = BufferedProducerClient::from_connection_string(OFFLINE, None)
        .on_send_succeeded(|_| async {})
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("failure handler"), "{err}");

    // A handler and closures together are refused, whichever closure it is.
    for err in [
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .handler(Recorder::default())
            .on_send_failed(|_| async {})
            .build()
            .unwrap_err(),
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .on_send_succeeded(|_| async {})
            .handler(Recorder::default())
            .build()
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("not both"), "{err}");
    }

    // Each valid way builds.
    assert!(
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .on_send_failed(|_| async {})
            .build()
            .is_ok()
    );
    assert!(
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .on_send_succeeded(|_| async {})
            .on_send_failed(|_| async {})
            .build()
            .is_ok()
    );
    assert!(
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .handler(Recorder::default())
            .build()
            .is_ok()
    );
}

#[test]
fn build_names_every_option_out_of_range() {
    let d = BufferedProducerOptions::default;
    let cases: Vec<(BufferedProducerOptions, &str)> = vec![
        (
            d().with_max_wait_time(Some(Duration::ZERO)),
            "max_wait_time",
        ),
        (
            d().with_max_wait_time(Some(Duration::from_secs(3601))),
            "max_wait_time",
        ),
        (
            d().with_max_buffered_events_per_partition(0),
            "max_buffered_events_per_partition",
        ),
        (
            d().with_max_buffered_events_per_partition(1_000_001),
            "max_buffered_events_per_partition",
        ),
        (
            d().with_max_concurrent_sends_per_partition(0),
            "max_concurrent_sends_per_partition",
        ),
        (
            d().with_max_concurrent_sends_per_partition(101),
            "max_concurrent_sends_per_partition",
        ),
        (d().with_max_concurrent_sends(0), "max_concurrent_sends"),
        (d().with_max_buffered_bytes(65535), "max_buffered_bytes"),
        (d().with_max_buffered_bytes(0), "max_buffered_bytes"),
        (
            d().with_partition_refresh_interval(Duration::from_millis(999)),
            "partition_refresh_interval",
        ),
        (
            d().with_retry_options(RetryOptions::default().with_max_retries(101)),
            "max_retries",
        ),
        (
            d().with_retry_options(RetryOptions::default().with_delay(Duration::ZERO)),
            "delay",
        ),
        (
            d().with_retry_options(RetryOptions::default().with_try_timeout(Duration::ZERO)),
            "try_timeout",
        ),
        (
            d().with_retry_options(
                RetryOptions::default()
                    .with_delay(Duration::from_secs(2))
                    .with_max_delay(Duration::from_secs(1)),
            ),
            "max_delay",
        ),
    ];
    for (options, field) in cases {
        let err = build_error(options.clone());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{options:?}");
        assert!(
            err.to_string().contains(field),
            "'{err}' should name {field}"
        );
    }

    // The bounds themselves are accepted.
    for options in [
        d().with_max_concurrent_sends_per_partition(1),
        d().with_max_concurrent_sends_per_partition(100),
        d().with_max_buffered_events_per_partition(1),
        d().with_max_buffered_bytes(65536),
        d().with_max_wait_time(None),
        d().with_max_wait_time(Some(Duration::from_secs(3600))),
        d().with_partition_refresh_interval(Duration::from_secs(1)),
    ] {
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .options(options.clone())
            .handler(Recorder::default())
            .build()
            .unwrap_or_else(|e| panic!("{options:?} refused: {e}"));
    }
}

#[test]
fn build_checks_the_event_hub_name() {
    let err = BufferedProducerClient::from_connection_string(OFFLINE, Some("other"))
        .handler(Recorder::default())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("other"), "{err}");

    // The same name (in any case) is fine; a name without EntityPath is used.
    let same = BufferedProducerClient::from_connection_string(OFFLINE, Some("HUB"))
        .handler(Recorder::default())
        .build()
        .expect("same hub");
    assert_eq!(same.eventhub_name(), "hub");
    let namespace_only = OFFLINE.trim_end_matches("EntityPath=hub");
    let named = BufferedProducerClient::from_connection_string(namespace_only, Some("orders"))
        .handler(Recorder::default())
        .build()
        .expect("named hub");
    assert_eq!(named.eventhub_name(), "orders");
    let err = BufferedProducerClient::from_connection_string(namespace_only, None)
        .handler(Recorder::default())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Routing and delivery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_lone_event_is_stored_and_reported_with_its_partition() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    let total = bounded(
        "enqueue",
        BOUND,
        producer.enqueue_event(event("lonely"), auto()),
    )
    .await
    .expect("enqueued");
    assert_eq!(total, 1);
    // No flush: max_wait_time (20 ms) sends it.
    wait_until("the lone event is reported", BOUND, || {
        recorder.handled() == 1
    })
    .await;
    let calls = recorder.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].error, None);
    assert_eq!(calls[0].bodies, vec!["lonely"]);
    let placed = stored_once(&emulator);
    assert_eq!(placed.len(), 1);
    assert_eq!(
        placed["lonely"], calls[0].partition,
        "reported where stored"
    );
    let stored_event = &emulator.events(HUB, &calls[0].partition).unwrap()[0];
    assert_eq!(
        stored_event.property("id").unwrap(),
        Some(Value::String("lonely".into()))
    );
    assert_eq!(stored_event.partition_key().unwrap(), None);
    assert_eq!(producer.total_buffered_event_count(), 0);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn explicit_partition_ids_land_there_in_order() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    for i in 0..5 {
        for p in ["3", "1", "0", "2"] {
            producer
                .enqueue_event(event(format!("p{p}-{i}")), to(p))
                .await
                .expect("enqueued");
        }
    }
    bounded("close", BOUND, producer.close()).await.unwrap();
    for p in ["0", "1", "2", "3"] {
        let expected: Vec<String> = (0..5).map(|i| format!("p{p}-{i}")).collect();
        assert_eq!(stored(&emulator, p), expected, "partition {p}");
    }
    let succeeded = recorder.succeeded();
    assert_eq!(succeeded.len(), 20);
    for (body, partition) in succeeded {
        assert_eq!(body[1..2], partition, "{body} reported on {partition}");
    }
    assert!(recorder.failed().is_empty());
    recorder.assert_each_reported_once();
}

#[tokio::test]
async fn keyed_events_land_on_the_hash_partition_with_the_key_stamped_in_order() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    let keys = [
        "alphabet",
        "TheBestParitionEver",
        "device-42",
        "k",
        "sensor/7",
    ];
    // Interleaved, so that keys sharing a partition mix in one batch.
    for i in 0..6 {
        for key in keys {
            producer
                .enqueue_event(event(format!("{key}#{i}")), keyed(key))
                .await
                .expect("enqueued");
        }
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(recorder.handled(), 30);
    for key in keys {
        let partition = partition_index_for_key(key, 4).to_string();
        let events = emulator.events(HUB, &partition).unwrap();
        let mine: Vec<String> = events
            .iter()
            .filter(|e| e.partition_key().unwrap().as_deref() == Some(key))
            .map(|e| String::from_utf8(e.body().unwrap().to_vec()).unwrap())
            .collect();
        let expected: Vec<String> = (0..6).map(|i| format!("{key}#{i}")).collect();
        assert_eq!(mine, expected, "key {key} on partition {partition}");
    }
    // Every stored event carries the key it was enqueued with, and is where that key hashes.
    let placed = stored_once(&emulator);
    assert_eq!(placed.len(), 30);
    for (body, partition) in &placed {
        let key = body.split('#').next().unwrap();
        assert_eq!(*partition, partition_index_for_key(key, 4).to_string());
    }
    for (body, partition) in recorder.succeeded() {
        assert_eq!(placed[&body], partition, "{body} reported where stored");
    }
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn automatic_events_spread_over_every_partition_without_a_key() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    for i in 0..40 {
        producer
            .enqueue_event(event(format!("a{i}")), auto())
            .await
            .expect("enqueued");
    }
    bounded("close", BOUND, producer.close()).await.unwrap();
    let placed = stored_once(&emulator);
    assert_eq!(placed.len(), 40);
    for p in ["0", "1", "2", "3"] {
        let count = placed.values().filter(|q| q.as_str() == p).count();
        // Round-robin over healthy partitions with room: an even spread.
        assert_eq!(count, 10, "partition {p}");
        for e in emulator.events(HUB, p).unwrap() {
            assert_eq!(e.partition_key().unwrap(), None);
        }
    }
    for (body, partition) in recorder.succeeded() {
        assert_eq!(placed[&body], partition);
    }
    assert_eq!(recorder.handled(), 40);
}

#[tokio::test]
async fn enqueue_options_are_checked_before_anything_is_buffered() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    let both = EnqueueOptions::default()
        .with_partition_id("0")
        .with_partition_key("k");
    for options in [to("4"), both, keyed(&"k".repeat(129))] {
        let err = producer
            .enqueue_event(event("x"), options.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{options:?}");
    }
    // The partition list came from the service: "4" does not exist in a 4-partition hub.
    let err = producer
        .enqueue_event(event("x"), to("4"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("'4' does not exist"), "{err}");
    assert_eq!(producer.total_buffered_event_count(), 0);
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.handled(), 0);
    assert_eq!(emulator.counters().deliveries, 0);
}

// ---------------------------------------------------------------------------------------------
// Flush and back pressure
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn flush_returns_once_everything_before_it_is_handled_without_waiting_out_max_wait_time() {
    let emulator = emulator().await;
    let options = fast_options().with_max_wait_time(Some(Duration::from_secs(30)));
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
    assert_eq!(recorder.succeeded().len(), 40);
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
    let options = fast_options().with_max_buffered_events_per_partition(5);
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
    let total = bounded(
        "enqueue after the delay",
        BOUND,
        producer.enqueue_event(event("after"), to("0")),
    )
    .await
    .unwrap();
    assert!(total >= 1);
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
    assert!(recorder.failed().is_empty());
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
    assert_eq!(recorder.succeeded().len(), 10);
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
    assert!(recorder.failed().is_empty());
    recorder.assert_each_reported_once();
    for (body, partition) in recorder.succeeded() {
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

// ---------------------------------------------------------------------------------------------
// Failures the service reports
// ---------------------------------------------------------------------------------------------

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
        .enqueue_events((0..3).map(|i| event(format!("q{i}"))), to("1"))
        .await
        .unwrap();
    producer
        .enqueue_event(event("fine"), to("2"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let failed = recorder.failed();
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
        recorder.succeeded(),
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
        .enqueue_events((0..4).map(|i| event(format!("t{i}"))), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert!(recorder.failed().is_empty(), "{:?}", recorder.failed());
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
        .enqueue_events((0..2).map(|i| event(format!("x{i}"))), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(
        recorder.failed(),
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
            .options(fast_options().with_max_wait_time(Some(Duration::from_secs(30))))
            .on_send_succeeded({
                let delivered = delivered.clone();
                move |context: SendSucceededContext| {
                    delivered
                        .lock()
                        .unwrap()
                        .extend(context.events.iter().map(body_text));
                    async {}
                }
            })
            .on_send_failed({
                let failures = failures.clone();
                move |context: SendFailedContext| {
                    failures.lock().unwrap().push((
                        context.events.iter().map(body_text).collect(),
                        context.partition_keys.clone(),
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
    assert_eq!(recorder.failed().len(), 1);
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
    assert_eq!(recorder.succeeded().len(), 12);
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
    let options = fast_options().with_max_wait_time(Some(Duration::from_secs(30)));
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
        .enqueue_events((0..5).map(|i| event(format!("{i}{body}"))), to("3"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    // Refused once as too large, then sent again in batches within the new limit (each
    // event, with its `id` property, takes more than half of it).
    assert_eq!(recorder.failed(), vec![]);
    assert_eq!(recorder.succeeded().len(), 6);
    let counters = emulator.counters();
    assert_eq!(counters.rejected, 1, "refused once, not retried as it was");
    assert_eq!(counters.deliveries, 1 + 1 + 5);
    let expected: Vec<String> = std::iter::once("warm-up".to_string())
        .chain((0..5).map(|i| format!("{i}{body}")))
        .collect();
    assert_eq!(stored(&emulator, "3"), expected);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Start-up errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_key_makes_enqueue_fail_unauthorized_at_once() {
    let emulator = emulator().await;
    let wrong = emulator
        .connection_string()
        .replace(emulator.shared_access_key().1, "not-the-key");
    // Retries would wait 30 s: an answer well before shows there were none.
    let options = fast_options().with_retry_options(
        RetryOptions::default()
            .with_delay(Duration::from_secs(30))
            .with_max_delay(Duration::from_secs(60))
            .with_try_timeout(Duration::from_secs(5)),
    );
    let recorder = Recorder::default();
    let producer = BufferedProducerClient::from_connection_string(&wrong, None)
        .options(options)
        .handler(recorder.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = bounded(
        "enqueue with a wrong key",
        Duration::from_secs(20),
        producer.enqueue_event(event("x"), auto()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!err.to_string().contains("not-the-key"));
    // Nothing is buffered; a later enqueue tries again and fails the same way.
    assert_eq!(producer.total_buffered_event_count(), 0);
    let err = bounded(
        "second enqueue",
        Duration::from_secs(20),
        producer.enqueue_event(event("y"), to("0")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    let err = bounded(
        "try_enqueue",
        Duration::from_secs(20),
        producer.try_enqueue_event(event("z"), auto()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.error().map(|e| e.kind()), Some(ErrorKind::Unauthorized));
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.handled(), 0);
    assert_eq!(emulator.counters().deliveries, 0);
}

#[tokio::test]
async fn an_endpoint_where_nothing_listens_fails_within_the_retry_bound() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cs = format!(
        "Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true;EntityPath=hub"
    );
    let retry = RetryOptions::default()
        .with_max_retries(3)
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_try_timeout(Duration::from_secs(1));
    // Four tries of at most 1 s each, and three pauses of at most 50 ms.
    let bound = Duration::from_secs(4) + Duration::from_millis(150);
    let producer = BufferedProducerClient::from_connection_string(&cs, None)
        .options(fast_options().with_retry_options(retry))
        .on_send_failed(|_| async {})
        .build()
        .unwrap();
    let started = Instant::now();
    let err = bounded(
        "enqueue to nowhere",
        bound + Duration::from_secs(5),
        producer.enqueue_event(event("x"), auto()),
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    assert!(
        elapsed < bound,
        "{elapsed:?} is beyond the retry bound {bound:?}"
    );
    assert_eq!(producer.total_buffered_event_count(), 0);
    let err = bounded(
        "partition_ids",
        bound + Duration::from_secs(5),
        producer.partition_ids(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Connection faults
// ---------------------------------------------------------------------------------------------

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
    let options = reconnecting_options().with_max_wait_time(Some(Duration::from_secs(30)));
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
    assert_eq!(slow_recorder.succeeded().len(), 3);
    bounded("close", BOUND, producer.close()).await.unwrap();

    let placed = stored_once(&emulator);
    assert_eq!(placed.len(), enqueued + 3, "stored == enqueued");
    assert_eq!(recorder.succeeded().len(), enqueued, "all successes");
    assert!(recorder.failed().is_empty(), "{:?}", recorder.failed());
    recorder.assert_each_reported_once();
    for (body, partition) in recorder.succeeded() {
        assert_eq!(placed[&body], partition);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_flight_when_the_connection_drops_is_sent_again_and_reported_once() {
    let emulator = emulator().await;
    let (producer, recorder) = producer_with(&emulator, reconnecting_options());
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
        .enqueue_events((0..3).map(|i| event(format!("f{i}"))), to("0"))
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
    assert_eq!(recorder.succeeded().len(), 3);
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
        .succeeded()
        .contains(&("to-five".to_string(), "5".to_string())));
    assert!(recorder.failed().is_empty());
    assert_eq!(recorder.handled(), n + 2);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn close_delivers_everything_then_refuses() {
    let emulator = emulator().await;
    let options = fast_options().with_max_wait_time(Some(Duration::from_secs(30)));
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
        recorder.succeeded().len(),
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
    assert_eq!(err.error().map(|e| e.kind()), Some(ErrorKind::Closed));
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
    let options =
        fast_options().with_retry_options(fast_retries().with_try_timeout(Duration::from_secs(20)));
    let (producer, recorder) = producer_with(&emulator, options);
    for i in 0..4 {
        producer
            .enqueue_event(event(format!("ok-{i}")), to(&i.to_string()))
            .await
            .unwrap();
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(recorder.succeeded().len(), 4);

    emulator.faults().withhold_next(1000, FaultScope::Any);
    // Partition 0: a batch in flight (stored, never answered) and a sealed batch behind it.
    producer
        .enqueue_events((0..5).map(|i| event(format!("p0-a{i}"))), to("0"))
        .await
        .unwrap();
    wait_until("partition 0's batch is in flight", BOUND, || {
        emulator.event_count(HUB, "0").unwrap() == 6
    })
    .await;
    producer
        .enqueue_events((0..5).map(|i| event(format!("p0-b{i}"))), to("0"))
        .await
        .unwrap();
    // Partition 2: in flight too; partition 1: still buffered when closing.
    producer
        .enqueue_events((0..3).map(|i| event(format!("p2-{i}"))), to("2"))
        .await
        .unwrap();
    wait_until("partition 2's batch is in flight", BOUND, || {
        emulator.event_count(HUB, "2").unwrap() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(60)).await; // partition 0's second batch is sealed
    producer
        .enqueue_events((0..2).map(|i| event(format!("p1-{i}"))), to("1"))
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
    let failed = recorder.failed();
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
    let messages = recorder.failure_messages.lock().unwrap().clone();
    for (body, partition, _) in &failed {
        assert_eq!(body[1..2], *partition);
        // Batches cut off mid-send may have been published; the others were not sent.
        let in_flight = body.starts_with("p0-a") || body.starts_with("p2-");
        let says = &messages[body];
        if in_flight {
            assert!(
                says.contains("may or may not have been published"),
                "{body}: {says}"
            );
        } else {
            assert!(says.contains("were not sent"), "{body}: {says}");
        }
    }
    recorder.assert_each_reported_once();
    assert_eq!(recorder.succeeded().len() + failed.len(), 4 + 15);
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
    let options = fast_options().with_max_wait_time(Some(Duration::from_secs(30)));
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
    assert_eq!(recorder.succeeded().len(), 20);
    recorder.assert_each_reported_once();
}

// ---------------------------------------------------------------------------------------------
// Handlers and accessors
// ---------------------------------------------------------------------------------------------

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
                        .extend(context.events.iter().map(body_text));
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
