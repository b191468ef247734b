//! Fixtures shared by the integration tests: an emulator, producers with fast retries, a
//! recorder of every handler call (`recorder.rs`), bounded waits on the real clock, what the
//! emulator stored, a TCP proxy that can black-hole its connections (`proxy.rs`), and a real
//! HTTP proxy, Debian's tinyproxy (`tinyproxy.rs`).
//!
//! Real IO does not work with tokio's paused clock, so every wait here is bounded on the real
//! clock and a timeout is a test failure naming what did not happen.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, EnqueueOptions, EventData, RetryOptions,
};
use eventhubs_emulator::{Emulator, Faults};

mod capture;
pub mod proxy;
mod recorder;
pub mod tinyproxy;

pub use self::capture::{Capture, LogCapture};
pub use self::proxy::Proxy;
pub use self::recorder::{body_text, Call, Failure, Recorder};
pub use self::tinyproxy::Tinyproxy;

pub const HUB: &str = "hub";

/// A generous bound for things that take milliseconds when all is well.
pub const BOUND: Duration = Duration::from_secs(5);

pub async fn emulator() -> Emulator {
    Emulator::builder()
        .hub(HUB, 4)
        .start()
        .await
        .expect("emulator starts")
}

pub fn fast_retries() -> RetryOptions {
    RetryOptions::default()
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_try_timeout(Duration::from_secs(3))
}

/// Short max_wait_time and fast retries.
pub fn fast_options() -> BufferedProducerOptions {
    BufferedProducerOptions::default()
        .with_max_wait_time(Some(Duration::from_millis(20)))
        .with_retry_options(fast_retries())
}

/// The longest a send may take under `retry` before it is reported: every try times out and
/// every pause is the longest.
pub fn retry_bound(retry: &RetryOptions) -> Duration {
    retry.bound()
}

pub fn producer_for(
    connection_string: &str,
    options: BufferedProducerOptions,
) -> (BufferedProducerClient, Recorder) {
    let recorder = Recorder::default();
    let producer = BufferedProducerClient::from_connection_string(connection_string, None)
        .options(options)
        .handler(recorder.clone())
        .build()
        .expect("producer builds");
    (producer, recorder)
}

/// A producer with [`fast_options`] and a recorder of its handler calls.
pub fn producer(emulator: &Emulator) -> (BufferedProducerClient, Recorder) {
    producer_with(emulator, fast_options())
}

pub fn producer_with(
    emulator: &Emulator,
    options: BufferedProducerOptions,
) -> (BufferedProducerClient, Recorder) {
    producer_for(&emulator.connection_string(), options)
}

/// Enqueues `count` events `<prefix>-<i>`, spread over partitions 0-3 in turn; returns their
/// bodies.
pub async fn enqueue_spread(
    producer: &BufferedProducerClient,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let mut bodies = Vec::with_capacity(count);
    for i in 0..count {
        let body = format!("{prefix}-{i}");
        producer
            .enqueue_event(event(body.clone()), to(&(i % 4).to_string()))
            .await
            .expect("enqueue");
        bodies.push(body);
    }
    bodies
}

pub fn to(partition: &str) -> EnqueueOptions {
    EnqueueOptions::default().with_partition_id(partition)
}

pub fn keyed(key: &str) -> EnqueueOptions {
    EnqueueOptions::default().with_partition_key(key)
}

pub fn auto() -> EnqueueOptions {
    EnqueueOptions::default()
}

pub fn event(body: impl Into<String>) -> EventData {
    EventData::from(body.into())
}

/// An event whose body is also in its property `id`.
pub fn tagged_event(body: impl Into<String>) -> EventData {
    let body = body.into();
    EventData::from(body.clone()).with_property("id", body)
}

/// For tests that lose the connection: a short try timeout, because a send in flight when the
/// connection is lost waits it out before the retry reconnects.
pub fn reconnecting_options() -> BufferedProducerOptions {
    fast_options().with_retry_options(fast_retries().with_try_timeout(Duration::from_secs(1)))
}

/// A future bounded on the real clock; a timeout is a test failure naming `what`.
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not complete within {limit:?}"),
    }
}

/// Enqueues one event to partition 0 and returns why it was refused (a test of a producer
/// that cannot connect, or is refused).
pub async fn refused_enqueue(
    producer: &BufferedProducerClient,
) -> eventhubs_buffered::EnqueueError {
    bounded(
        "enqueue",
        BOUND,
        producer.enqueue_event(EventData::from("refused"), to("0")),
    )
    .await
    .expect_err("the enqueue is refused")
}

/// Polls `condition` every few milliseconds until it holds; fails the test after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The stored bodies of a partition, in sequence order.
pub fn stored(emulator: &Emulator, partition: &str) -> Vec<String> {
    emulator
        .events(HUB, partition)
        .expect("events")
        .iter()
        .map(|e| String::from_utf8(e.body().expect("body").to_vec()).expect("utf8"))
        .collect()
}

/// Every stored body of the hub.
pub fn stored_all(emulator: &Emulator) -> Vec<String> {
    emulator
        .partition_ids(HUB)
        .expect("ids")
        .into_iter()
        .flat_map(|p| stored(emulator, &p))
        .collect()
}

/// Every stored body of the hub with the partition it is in.
pub fn stored_placed(emulator: &Emulator) -> Vec<(String, String)> {
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
pub fn stored_once(emulator: &Emulator) -> HashMap<String, String> {
    let mut placed = HashMap::new();
    for (body, partition) in stored_placed(emulator) {
        if let Some(other) = placed.insert(body.clone(), partition.clone()) {
            panic!("{body} is stored twice (partitions {other} and {partition})");
        }
    }
    placed
}

/// Loses every client connection (`drop_connections` or `close_connections`) and waits until
/// the emulator has really ended them: the order is carried out asynchronously, and a send
/// made before it is would not meet the fault.
pub async fn lose_connections(emulator: &Emulator, lose: fn(&Faults) -> usize) {
    assert!(lose(&emulator.faults()) >= 1, "no connection to lose");
    wait_until("the connections end", BOUND, || {
        emulator.connection_count() == 0
    })
    .await;
}
