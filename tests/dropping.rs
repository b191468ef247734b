//! Dropping the last handle without `close`, and the runtime ending after it: what is
//! published and what is reported agree with what the docs promise.
//!
//! - On a multi-thread runtime the drop closes the producer before it returns: every event is
//!   published and reported by then, and the runtime can end at once.
//! - On a current-thread runtime the drop cannot block: the events go in the background while
//!   the runtime runs. When the runtime ends first, what it cut off is logged at error level
//!   with its count, and every event is either reported or counted there; nothing reported
//!   published is missing from the service.
//!
//! The emulator runs on a runtime of its own, so it outlives the producer's.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use eventhubs_buffered::{BufferedProducerClient, BufferedProducerOptions};
use eventhubs_emulator::Emulator;

const EVENTS: usize = 2_000;

/// An emulator on a runtime (and thread) of its own.
fn emulator_apart() -> (tokio::runtime::Runtime, Emulator) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let emulator = runtime.block_on(emulator());
    (runtime, emulator)
}

/// Options that keep every event buffered until the producer is closed or dropped.
fn holding() -> BufferedProducerOptions {
    fast_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false)
}

async fn enqueue_all(producer: &BufferedProducerClient) -> Vec<String> {
    let mut bodies = Vec::new();
    for i in 0..EVENTS {
        let body = format!("d{i}");
        let options = if i % 2 == 0 { auto() } else { keyed("k") };
        producer
            .enqueue_event(event(body.clone()), options)
            .await
            .expect("enqueued");
        bodies.push(body);
    }
    bodies
}

#[test]
fn on_a_multi_thread_runtime_dropping_the_last_handle_closes_before_it_returns() {
    let (_emulator_runtime, emulator) = emulator_apart();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (producer, recorder) = producer_with(&emulator, holding());
    let bodies = runtime.block_on(async {
        let bodies = enqueue_all(&producer).await;
        assert_eq!(recorder.handled(), 0, "nothing sent yet");
        drop(producer);
        // The drop returned: everything is published and reported.
        assert_eq!(recorder.handled(), EVENTS);
        bodies
    });
    drop(runtime);
    recorder.assert_exactly_once(&bodies);
    assert_eq!(recorder.succeeded().len(), EVENTS);
    assert_eq!(stored_all(&emulator).len(), EVENTS);
}

/// What the producer logged as cut off by the runtime's end: events the actors held unsent,
/// events in flight (may have been published), and events whose outcome never reached the
/// handler.
fn lost_counts(log: &str) -> (usize, usize, usize) {
    let field = |line: &str, name: &str| -> usize {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{name}=")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    log.lines()
        .filter(|l| l.starts_with("ERROR") && l.contains("runtime stopped the buffered producer"))
        .fold((0, 0, 0), |(unsent, in_flight, unreported), line| {
            (
                unsent + field(line, "unsent"),
                in_flight + field(line, "in_flight_may_have_been_published"),
                unreported + field(line, "events"),
            )
        })
}

#[test]
fn on_a_current_thread_runtime_what_its_end_cuts_off_is_counted_in_the_log() {
    let (_emulator_runtime, emulator) = emulator_apart();
    let log = Arc::new(Mutex::new(String::new()));
    let (producer, recorder) = producer_with(&emulator, holding());
    let bodies = tracing::subscriber::with_default(Capture::new(log.clone()), || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let bodies = runtime.block_on(async {
            let bodies = enqueue_all(&producer).await;
            drop(producer);
            bodies
        });
        // The runtime ends right after the drop, before the background close could finish.
        drop(runtime);
        bodies
    });
    let log = log.lock().unwrap().clone();
    let (unsent, in_flight, unreported) = lost_counts(&log);
    assert!(
        log.contains("dropped without close() on a current-thread runtime"),
        "the drop says what happens: {log}"
    );
    assert!(
        unsent + in_flight + unreported > 0,
        "the runtime's end cut something off"
    );
    // Every event is either reported or counted as cut off, never both, never neither.
    assert_eq!(
        recorder.handled() + unsent + in_flight + unreported,
        EVENTS,
        "reported {} + unsent {unsent} + in flight {in_flight} + unreported {unreported}",
        recorder.handled()
    );
    recorder.assert_each_reported_once();
    // Reported successes are stored; the only stored events not reported are those counted
    // as in flight (their acknowledgement never came back).
    let stored: std::collections::HashSet<String> = stored_all(&emulator).into_iter().collect();
    for body in recorder.succeeded() {
        assert!(
            stored.contains(&body),
            "{body} reported published but not stored"
        );
    }
    let reported: std::collections::HashSet<String> =
        recorder.outcomes().into_iter().map(|o| o.0).collect();
    let stored_unreported = stored.iter().filter(|b| !reported.contains(*b)).count();
    assert!(
        stored_unreported <= in_flight + unreported,
        "{stored_unreported} stored without a report; {in_flight} counted in flight, {unreported} unreported"
    );
    assert!(bodies.len() == EVENTS);
}
