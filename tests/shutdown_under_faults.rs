//! Closing the buffered producer when the service stops answering: `close()` ends within the
//! retry policy's bound and reports what it could not send as failures; `close_abandoning()`
//! ends promptly however stuck the sends are; a connection that goes silent (black-holed, not
//! closed) is noticed and replaced.
//!
//! Bounds are on the real clock (loopback IO does not run on tokio's paused clock) and derived
//! from short retry options, so each test takes a few seconds at most.

mod common;

use std::time::{Duration, Instant};

use common::*;
use eventhubs_buffered::{ErrorKind, RetryOptions};
use eventhubs_emulator::{Emulator, FaultScope};

/// What closing the links and the connection may add on top of the sends: it waits for the
/// service at most one try timeout (and never more than 5 s), plus scheduling slack.
fn close_slack(retry: &RetryOptions) -> Duration {
    retry.try_timeout.min(Duration::from_secs(5)) + Duration::from_millis(1500)
}

/// Two tries of 400 ms each at most, pauses of 10-50 ms.
fn short_retries() -> RetryOptions {
    RetryOptions::default()
        .with_max_retries(1)
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_try_timeout(Duration::from_millis(400))
}

/// Warms every partition's link up, so that later sends go straight to the wire.
async fn warm_up(producer: &eventhubs_buffered::BufferedProducerClient) -> Vec<String> {
    let bodies: Vec<String> = (0..4).map(|p| format!("warm-{p}")).collect();
    for (p, body) in bodies.iter().enumerate() {
        producer
            .enqueue_event(event(body.clone()), to(&p.to_string()))
            .await
            .expect("warm-up enqueue");
    }
    bounded("warm-up flush", BOUND, producer.flush())
        .await
        .expect("flush");
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_every_acknowledgement_withheld_reports_failures_within_the_retry_bound() {
    let emulator = emulator().await;
    let retry = short_retries();
    let options = fast_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false)
        .with_retry_options(retry.clone());
    let (producer, recorder) = producer_with(&emulator, options);
    let mut expected = warm_up(&producer).await;

    emulator.faults().withhold_next(1_000_000, FaultScope::Any);
    for i in 0..20 {
        let options = match i % 3 {
            0 => to(&(i % 4).to_string()),
            1 => keyed(&format!("k{i}")),
            _ => auto(),
        };
        let body = format!("stuck-{i}");
        producer
            .enqueue_event(event(body.clone()), options)
            .await
            .unwrap();
        expected.push(body);
    }
    let bound = retry_bound(&retry) + close_slack(&retry);
    let started = Instant::now();
    bounded("close", bound + BOUND, producer.close())
        .await
        .expect("close returns Ok: every event was reported");
    let elapsed = started.elapsed();
    assert!(
        elapsed < bound,
        "close took {elapsed:?}, beyond the retry bound {bound:?}"
    );

    // Every event had exactly one handler call before close returned: the warm-up ones
    // succeeded, the others failed with the timeout that ended their retries.
    recorder.assert_exactly_once(&expected);
    assert_eq!(recorder.succeeded().len(), 4);
    let failed = recorder.failed();
    assert_eq!(failed.len(), 20, "{failed:?}");
    assert!(
        failed.iter().all(|(_, kind)| *kind == ErrorKind::Timeout),
        "{failed:?}"
    );
    assert_eq!(producer.total_buffered_event_count(), 0);
    let err = producer
        .enqueue_event(event("late"), auto())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    // The service did get the deliveries (it only withheld the answers): each try sent them.
    assert!(emulator.counters().deliveries >= 4 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_over_a_black_holed_connection_ends_within_the_retry_bound() {
    let emulator = emulator().await;
    let proxy = Proxy::start(emulator.local_addr()).await;
    let retry = short_retries();
    let options = fast_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false)
        .with_retry_options(retry.clone());
    let (producer, recorder) = producer_for(&proxy.connection_string(&emulator), options);
    let mut expected = warm_up(&producer).await;

    // The service goes silent: nothing the client sends arrives, nothing comes back, and the
    // TCP connection stays open. New connections go nowhere either.
    proxy.black_hole();
    proxy.black_hole_new();
    expected.extend(enqueue_spread(&producer, "lost", 12).await);
    let bound = retry_bound(&retry) + close_slack(&retry);
    let started = Instant::now();
    bounded("close", bound + BOUND, producer.close())
        .await
        .expect("close");
    let elapsed = started.elapsed();
    assert!(
        elapsed < bound,
        "close took {elapsed:?}, beyond the retry bound {bound:?}"
    );
    recorder.assert_exactly_once(&expected);
    let failed = recorder.failed();
    assert_eq!(failed.len(), 12, "{failed:?}");
    for (body, kind) in &failed {
        assert!(
            kind.is_transient(),
            "{body} failed with {kind:?}, expected the transient error that ended the retries"
        );
    }
    assert_eq!(emulator.total_event_count(HUB).unwrap(), 4);
}

/// A producer whose 4 partitions each have a batch in flight into a black hole (8 events,
/// after a warm-up that is published); returns everything with the bodies enqueued so far.
async fn in_flight_into_a_black_hole(
    retry: RetryOptions,
) -> (
    Emulator,
    Proxy,
    eventhubs_buffered::BufferedProducerClient,
    Recorder,
    Vec<String>,
) {
    let emulator = emulator().await;
    let proxy = Proxy::start(emulator.local_addr()).await;
    // One batch per partition, formed by max_wait_time (not the first event alone at once).
    let options = fast_options()
        .with_retry_options(retry)
        .with_send_when_idle(false);
    let (producer, recorder) = producer_for(&proxy.connection_string(&emulator), options);
    let mut expected = warm_up(&producer).await;
    proxy.black_hole();
    proxy.black_hole_new();
    expected.extend(enqueue_spread(&producer, "in-flight", 8).await);
    // max_wait_time is 20 ms: the batches are sent, into the void.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (emulator, proxy, producer, recorder, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_within_a_grace_period_reports_everything_in_time_over_a_black_hole() {
    // The default try timeout (60 s) and retries: a plain close would take minutes.
    let (_emulator, _proxy, producer, recorder, mut expected) =
        in_flight_into_a_black_hole(RetryOptions::default()).await;
    // The next batches stay buffered behind the ones in flight.
    expected.extend(enqueue_spread(&producer, "buffered", 8).await);
    let grace = Duration::from_millis(500);
    let started = Instant::now();
    let closed = bounded(
        "close_within",
        Duration::from_secs(10),
        producer.close_within(grace),
    )
    .await;
    let elapsed = started.elapsed();
    let err = closed.expect_err("the grace period cut the close short");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(elapsed >= grace, "close_within returned after {elapsed:?}");
    assert!(
        elapsed < grace + Duration::from_secs(2),
        "close_within took {elapsed:?}"
    );
    recorder.assert_exactly_once(&expected);
    let failed = recorder.failed();
    assert_eq!(failed.len(), 16, "{failed:?}");
    let maybe_published = recorder.maybe_published();
    for (body, kind) in &failed {
        assert_eq!(*kind, ErrorKind::Abandoned, "{body}");
        assert_eq!(
            maybe_published.contains(body),
            body.starts_with("in-flight"),
            "{body}: only the batches cut off mid-send may have been published"
        );
    }
    let err = producer
        .enqueue_event(event("late"), auto())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_abandoning_over_a_black_holed_connection_is_prompt() {
    // Tries that would last 30 s: only the abandon can end them in time.
    let retry = short_retries().with_try_timeout(Duration::from_secs(30));
    let (_emulator, _proxy, producer, recorder, expected) =
        in_flight_into_a_black_hole(retry).await;
    assert_eq!(recorder.handled(), 4, "nothing can be answered");
    let started = Instant::now();
    bounded(
        "close_abandoning",
        Duration::from_secs(10),
        producer.close_abandoning(),
    )
    .await
    .expect("close_abandoning");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "close_abandoning took {elapsed:?}"
    );
    recorder.assert_exactly_once(&expected);
    let failed = recorder.failed();
    assert_eq!(failed.len(), 8);
    let maybe_published = recorder.maybe_published();
    for (body, kind) in &failed {
        assert_eq!(*kind, ErrorKind::Abandoned, "{body}");
        assert!(
            maybe_published.contains(body),
            "{body} was cut off in flight"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_goes_silent_is_replaced_and_the_events_delivered() {
    let emulator = emulator().await;
    let proxy = Proxy::start(emulator.local_addr()).await;
    let retry = RetryOptions::default()
        .with_max_retries(3)
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_try_timeout(Duration::from_secs(1));
    let options = fast_options().with_retry_options(retry.clone());
    let (producer, recorder) = producer_for(&proxy.connection_string(&emulator), options);
    let mut expected = warm_up(&producer).await;

    // The open connection goes silent (say, a NAT entry expired); new ones work.
    proxy.black_hole();
    expected.extend(enqueue_spread(&producer, "after", 8).await);
    bounded("flush", retry_bound(&retry) + BOUND, producer.flush())
        .await
        .unwrap();
    recorder.assert_exactly_once(&expected);
    assert_eq!(recorder.failed(), vec![], "every event is delivered");
    let mut stored = stored_all(&emulator);
    stored.sort();
    stored.dedup();
    assert_eq!(stored.len(), 12);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Handlers that hang
// ---------------------------------------------------------------------------------------------

/// A handler whose calls for one partition wait at a gate until the test opens it; every
/// call is recorded once it gets past the gate.
#[derive(Clone)]
struct Gated {
    recorder: Recorder,
    partition: &'static str,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
    entered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Gated {
    fn new(partition: &'static str) -> Self {
        Self {
            recorder: Recorder::default(),
            partition,
            gate: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
            entered: Default::default(),
        }
    }

    async fn pass(&self, partition: &str) {
        if partition == self.partition {
            self.entered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = self.gate.acquire().await.map(|p| p.forget());
        }
    }

    fn open(&self) {
        self.gate.add_permits(1_000_000);
    }
}

impl eventhubs_buffered::BufferedProducerHandler for Gated {
    async fn on_send_succeeded(&self, context: eventhubs_buffered::SendSucceededContext) {
        self.pass(&context.partition_id).await;
        self.recorder
            .record(&context.partition_id, context.event_data(), None);
    }

    async fn on_send_failed(&self, context: eventhubs_buffered::SendFailedContext) {
        self.pass(&context.partition_id).await;
        let failure = Failure {
            kind: context.error.kind(),
            message: context.error.to_string(),
            may_have_been_published: context.error.may_have_been_published(),
        };
        self.recorder
            .record(&context.partition_id, context.event_data(), Some(failure));
    }
}

fn gated_producer(
    emulator: &Emulator,
    handler: &Gated,
    handler_timeout: Duration,
) -> eventhubs_buffered::BufferedProducerClient {
    eventhubs_buffered::BufferedProducerClient::from_connection_string(
        &emulator.connection_string(),
        None,
    )
    .options(
        fast_options()
            .with_max_buffered_events_per_partition(8)
            .with_handler_shutdown_timeout(handler_timeout),
    )
    .handler(handler.clone())
    .build()
    .expect("producer builds")
}

/// Fills partition 1, whose handler is stuck, until an enqueue to it has to wait; returns the
/// bodies it took.
async fn fill_the_stuck_partition(
    producer: &eventhubs_buffered::BufferedProducerClient,
) -> Vec<String> {
    let mut taken = Vec::new();
    for i in 0..200 {
        let body = format!("p1-{i}");
        let enqueue = producer.enqueue_event(event(body.clone()), to("1"));
        match tokio::time::timeout(Duration::from_millis(300), enqueue).await {
            Ok(result) => {
                result.expect("enqueue to partition 1");
                taken.push(body);
            }
            Err(_) => return taken,
        }
    }
    panic!("partition 1 took 200 events although its handler is stuck: no back pressure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_handler_holds_up_only_its_partition_and_close_gives_up_on_it_in_time() {
    let emulator = emulator().await;
    let handler = Gated::new("1");
    let timeout = Duration::from_millis(300);
    let producer = gated_producer(&emulator, &handler, timeout);
    let mut expected = Vec::new();

    // The first report of partition 1 gets stuck in its handler.
    producer
        .enqueue_event(event("p1-first"), to("1"))
        .await
        .unwrap();
    expected.push("p1-first".to_string());
    wait_until("partition 1's handler is entered", BOUND, || {
        handler.entered.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;

    // Partition 1 takes a bounded number of events, then its enqueues wait (back pressure).
    let taken = fill_the_stuck_partition(&producer).await;
    assert!(
        taken.len() <= 8 * 6,
        "partition 1 took {} events with its handler stuck",
        taken.len()
    );
    expected.extend(taken.iter().cloned());

    // Every other partition keeps delivering, and automatic routing never waits for the
    // stuck one.
    let mut others = Vec::new();
    for i in 0..60 {
        let body = format!("other-{i}");
        let options = match i % 4 {
            0 => to("0"),
            1 => to("2"),
            2 => to("3"),
            _ => auto(),
        };
        bounded(
            "an enqueue beside the stuck partition",
            Duration::from_secs(2),
            producer.enqueue_event(event(body.clone()), options),
        )
        .await
        .unwrap();
        others.push(body);
    }
    expected.extend(others.iter().cloned());
    wait_until("the other partitions' events are reported", BOUND, || {
        others
            .iter()
            .all(|b| handler.recorder.succeeded().contains(b))
    })
    .await;
    assert!(
        handler.recorder.calls().iter().all(|c| c.partition != "1"),
        "nothing of partition 1 gets past its stuck handler"
    );

    // close gives up on partition 1 after handler_shutdown_timeout, with a typed error.
    let started = Instant::now();
    let err = bounded("close", BOUND, producer.close())
        .await
        .expect_err("close reports the stuck handler");
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("\"1\""), "{err}");
    assert!(
        err.to_string().contains("handler_shutdown_timeout"),
        "{err}"
    );
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_millis(1500),
        "close took {elapsed:?} with handler_shutdown_timeout {timeout:?}"
    );
    assert!(producer.is_closed());
    assert_eq!(
        producer
            .enqueue_event(event("late"), auto())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );

    // Once the stuck call returns, every event of partition 1 gets its one handler call:
    // published ones as successes, the rest as abandoned.
    handler.open();
    wait_until("partition 1's reports are handled", BOUND, || {
        handler.recorder.handled() == expected.len()
    })
    .await;
    handler.recorder.assert_exactly_once(&expected);
    let stored: std::collections::HashSet<String> = stored(&emulator, "1").into_iter().collect();
    let messages = handler.recorder.failure_messages();
    for (body, partition, error) in handler.recorder.outcomes() {
        match error {
            None => assert!(
                partition != "1" || stored.contains(&body),
                "{body} was reported published but is not stored"
            ),
            Some(kind) => {
                assert_eq!(partition, "1", "{body} failed: {kind:?}");
                assert_eq!(kind, ErrorKind::Abandoned, "{body}");
                if messages[&body].contains("were not sent") {
                    assert!(!stored.contains(&body), "{body} was said not sent");
                }
            }
        }
    }
    assert!(
        !handler.recorder.failed().is_empty(),
        "partition 1 had unsent events when close gave up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_abandoning_also_gives_up_on_a_stuck_handler_in_time() {
    let emulator = emulator().await;
    let handler = Gated::new("2");
    let timeout = Duration::from_millis(200);
    let producer = gated_producer(&emulator, &handler, timeout);
    let bodies: Vec<String> = (0..6).map(|i| format!("e{i}")).collect();
    for (i, body) in bodies.iter().enumerate() {
        producer
            .enqueue_event(event(body.clone()), to(&(i % 4).to_string()))
            .await
            .unwrap();
    }
    wait_until("partition 2's handler is entered", BOUND, || {
        handler.entered.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let started = Instant::now();
    let err = bounded("close_abandoning", BOUND, producer.close_abandoning())
        .await
        .expect_err("the stuck handler is reported");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(started.elapsed() < timeout + Duration::from_millis(1500));
    handler.open();
    wait_until("every event is handled", BOUND, || {
        handler.recorder.handled() == bodies.len()
    })
    .await;
    handler.recorder.assert_exactly_once(&bodies);
}

#[tokio::test]
async fn an_idle_but_live_connection_is_kept() {
    let emulator = emulator().await;
    let proxy = Proxy::start(emulator.local_addr()).await;
    // try_timeout 1 s: a connection silent for 1 s is taken as dead. The service's heartbeats
    // keep a live one from ever being that silent.
    let retry = fast_retries().with_try_timeout(Duration::from_secs(1));
    let (producer, recorder) = producer_for(
        &proxy.connection_string(&emulator),
        fast_options().with_retry_options(retry),
    );
    producer.enqueue_event(event("a"), to("0")).await.unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    producer.enqueue_event(event("b"), to("0")).await.unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(recorder.succeeded(), vec!["a", "b"]);
    assert_eq!(proxy.accepted(), 1, "the idle connection was kept");
    bounded("close", BOUND, producer.close()).await.unwrap();
}
