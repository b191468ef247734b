//! Network faults between the producer and the emulator, made by the fault proxy in
//! `common/proxy.rs`: resets at each stage of a reconnect's handshake, acknowledgements lost one
//! way while every reconnect is cut. Each test checks what the issue of the handshake stall and
//! of unlabelled ambiguity asked: a lost connection is noticed whatever the stage, within a
//! bound that does not depend on the try timeout, and a batch the emulator stored is never
//! reported as a plain failure.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Proxy, Stage};
use common::*;
use eventhubs_buffered::{BufferedProducerOptions, RetryOptions};

/// Retries that pause briefly, with the default try timeout (60 s): a stall that waits for the
/// try timeout shows as a recovery of a minute.
fn default_try_timeout() -> BufferedProducerOptions {
    BufferedProducerOptions::default()
        .with_max_wait_time(Some(Duration::from_millis(20)))
        .with_retry_options(
            RetryOptions::default()
                .with_delay(Duration::from_millis(20))
                .with_max_delay(Duration::from_millis(100)),
        )
}

/// Three tries of 500 ms at most, short pauses: a send fails for good within 1.6 s.
fn three_half_second_tries() -> RetryOptions {
    RetryOptions::default()
        .with_max_retries(2)
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_try_timeout(Duration::from_millis(500))
}

/// Sends one event through a connection that is reset, and whose next connection is reset at
/// `stage`; returns how long the event took to be published.
async fn recovery_after_reset_at(stage: Stage) -> Duration {
    let emulator = emulator().await;
    let proxy = Proxy::start(emulator.local_addr()).await;
    let (producer, recorder) =
        producer_for(&proxy.connection_string(&emulator), default_try_timeout());
    producer
        .enqueue_event(event("before"), to("0"))
        .await
        .unwrap();
    wait_until("the first event is published", BOUND, || {
        recorder.succeeded().len() == 1
    })
    .await;

    proxy.reset_new_at(stage, 1);
    proxy.reset();
    let started = Instant::now();
    producer
        .enqueue_event(event("after"), to("0"))
        .await
        .unwrap();
    // Far below the 60 s try timeout; a stall would fail here.
    wait_until(
        "the event after the resets is published",
        Duration::from_secs(20),
        || recorder.handled() == 2,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(recorder.succeeded(), vec!["before", "after"], "{stage:?}");
    assert!(
        proxy.resets() >= 2,
        "the established and the {stage:?} connection were reset"
    );
    assert_eq!(stored(&emulator, "0"), vec!["before", "after"]);
    bounded("close", BOUND, producer.close()).await.unwrap();
    took
}

#[tokio::test]
async fn a_reset_during_a_reconnects_handshake_is_noticed_at_once() {
    let mut figures = Vec::new();
    for stage in [Stage::Open, Stage::PutToken, Stage::EntityAttach] {
        let took = recovery_after_reset_at(stage).await;
        figures.push(format!("{stage:?}: {took:?}"));
        assert!(
            took < Duration::from_secs(5),
            "recovering from a reset at {stage:?} took {took:?}"
        );
    }
    println!(
        "recovery after a reset at each stage: {}",
        figures.join(", ")
    );
}

/// Acknowledgements stop one way (the client's frames still arrive and the emulator stores
/// them), then the connection is reset and every reconnect is cut at its put-token: each batch
/// fails, and each one the emulator stored says it may have been published.
#[tokio::test]
async fn lost_acknowledgements_and_cut_reconnects_fail_only_as_may_have_been_published() {
    let emulator = emulator().await;
    let proxy = Proxy::start(emulator.local_addr()).await;
    let retry = three_half_second_tries();
    let options = BufferedProducerOptions::default()
        .with_max_wait_time(Some(Duration::from_millis(20)))
        .with_retry_options(retry.clone());
    let (producer, recorder) = producer_for(&proxy.connection_string(&emulator), options);
    producer
        .enqueue_event(event("warm"), to("0"))
        .await
        .unwrap();
    wait_until("warm-up", BOUND, || recorder.handled() == 1).await;

    proxy.drop_answers();
    proxy.reset_new_at(Stage::PutToken, u32::MAX);
    enqueue_spread(&producer, "lost-ack", 20).await;
    wait_until("the batches reach the emulator", BOUND, || {
        emulator.total_event_count(HUB).unwrap() > 1
    })
    .await;
    proxy.reset();
    wait_until(
        "every event is reported",
        retry_bound(&retry) * 3 + BOUND,
        || recorder.handled() == 21,
    )
    .await;

    let stored: std::collections::HashSet<String> = stored_all(&emulator).into_iter().collect();
    let failed = recorder.failed();
    let maybe_published = recorder.maybe_published();
    let mut stored_and_failed = 0;
    for (body, kind) in &failed {
        assert!(kind.is_transient(), "{body} failed with {kind:?}");
        if stored.contains(body) {
            stored_and_failed += 1;
            assert!(
                maybe_published.contains(body),
                "{body} was stored, and reported failed without saying it may have been published"
            );
        }
    }
    for body in recorder.succeeded() {
        assert!(
            stored.contains(&body),
            "{body} reported published but not stored"
        );
    }
    assert!(
        stored_and_failed > 0,
        "the test must make stored batches fail"
    );
    println!(
        "lost acknowledgements: {} failed, {stored_and_failed} of them stored, {} resets",
        failed.len(),
        proxy.resets()
    );
    recorder.assert_each_reported_once();
    proxy.heal();
    bounded("close", BOUND, producer.close()).await.unwrap();
}

/// With idempotent retries: acknowledgements lost one way, then every reconnect cut at its
/// put-token for longer than a send's retries last, then the network heals while the failed
/// batches are being settled. Settling keeps trying for the retry policy's whole bound, so
/// each batch ends settled: published exactly when the emulator stored it, else confirmed not
/// published; none is left "may have been published", and nothing is stored twice.
#[tokio::test]
async fn idempotent_settling_outlasts_cut_reconnects_and_settles_every_batch() {
    let emulator = emulator().await;
    let proxy = Proxy::start(emulator.local_addr()).await;
    // Sends give up after about 1.6 s (the bound); settling may take as long again.
    let retry = three_half_second_tries();
    let options = BufferedProducerOptions::default()
        .with_max_wait_time(Some(Duration::from_millis(20)))
        .with_idempotent_retries(true)
        .with_retry_options(retry.clone());
    let (producer, recorder) = producer_for(&proxy.connection_string(&emulator), options);
    for p in 0..4 {
        producer
            .enqueue_event(event(format!("warm-{p}")), to(&p.to_string()))
            .await
            .unwrap();
    }
    wait_until("warm-up", BOUND, || recorder.handled() == 4).await;

    proxy.drop_answers();
    proxy.reset_new_at(Stage::PutToken, u32::MAX);
    let bodies = enqueue_spread(&producer, "unacknowledged", 12).await;
    wait_until("batches reach the emulator", BOUND, || {
        emulator.total_event_count(HUB).unwrap() > 4
    })
    .await;
    proxy.reset();
    // Every reconnect is cut at once, so the sends can give up long before their bound: wait
    // until each partition's batch has used its two retries (settling starts right after),
    // then let settling meet cut reconnects for a while before the network heals. (A fixed
    // wait of one bound let settling, which lasts one bound, run out first.)
    wait_until("every partition's send gives up", retry.bound() * 2, || {
        producer.metrics().total.retries >= 8
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.heal();
    wait_until("every event is reported", retry.bound() * 4 + BOUND, || {
        recorder.handled() == 16
    })
    .await;

    recorder.assert_each_reported_once();
    let stored = stored_once(&emulator);
    assert_eq!(
        stored.len(),
        emulator.total_event_count(HUB).unwrap(),
        "nothing stored twice"
    );
    let succeeded: std::collections::HashSet<String> = recorder.succeeded().into_iter().collect();
    let maybe_published = recorder.maybe_published();
    let gave_up = bodies
        .iter()
        .filter(|b| maybe_published.contains(*b))
        .count();
    println!(
        "idempotent settling under cut reconnects: {} published, {} confirmed not published, {gave_up} left unknown",
        bodies.iter().filter(|b| succeeded.contains(*b)).count(),
        recorder.failed().len() - gave_up
    );
    assert_eq!(gave_up, 0, "settling gave up on batches");
    for body in &bodies {
        assert_eq!(
            succeeded.contains(body),
            stored.contains_key(body),
            "{body}: reported published exactly when stored"
        );
    }
    bounded("close", BOUND, producer.close()).await.unwrap();
}
