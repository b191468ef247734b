//! When batches go: at once on an idle partition; accumulating while a send is in flight; a
//! batch whose time came keeps filling while the slot is busy; at max_wait_time (without
//! idle sending); when full; on flush; and without max_wait_time.

use super::*;

fn waiting_options() -> BufferedProducerOptions {
    BufferedProducerOptions::default().with_send_when_idle(false)
}

/// The bodies of each send, in order, with when it started (from `start`).
fn sends(sender: &MockSender, start: Instant) -> Vec<(Duration, Vec<String>)> {
    sender
        .sent()
        .into_iter()
        .map(|s| (s.at - start, s.bodies))
        .collect()
}

fn strings(bodies: &[&str]) -> Vec<String> {
    bodies.iter().map(|b| b.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_lone_event_on_an_idle_partition_goes_at_once() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(3));
    let (client, outcomes) = producer(sender.clone(), BufferedProducerOptions::default());
    let start = Instant::now();
    let outcome = client
        .enqueue_event_with_outcome(event("a"), to("0"))
        .await
        .unwrap();
    let published = outcome.await.expect("published");
    assert_eq!(published.partition_id(), "0");
    assert_eq!(
        Instant::now() - start,
        Duration::from_millis(3),
        "no waiting before the send"
    );
    assert_eq!(
        sends(&sender, start),
        vec![(Duration::ZERO, strings(&["a"]))]
    );
    settle().await;
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![Outcome::Ok("0".into(), vec!["a".into()])]
    );
}

#[tokio::test(start_paused = true)]
async fn events_enqueued_during_a_send_join_one_batch_sent_when_it_completes() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(100));
    let (client, _) = producer(sender.clone(), BufferedProducerOptions::default());
    let start = Instant::now();
    client.enqueue_event(event("a"), to("0")).await.unwrap();
    settle().await;
    for (at, body) in [(10, "b"), (40, "c"), (90, "d")] {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        client.enqueue_event(event(body), to("0")).await.unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(
        sends(&sender, start),
        vec![
            (Duration::ZERO, strings(&["a"])),
            (Duration::from_millis(100), strings(&["b", "c", "d"])),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_whose_time_came_keeps_filling_while_the_slot_is_busy() {
    // max_wait_time 5 ms against a 100 ms send: the old rule sealed [b] at 6 ms and queued
    // [c, d] behind it; now one batch takes all three and goes when the slot frees.
    let sender = MockSender::new(1 << 20, Duration::from_millis(100));
    let options =
        BufferedProducerOptions::default().with_max_wait_time(Some(Duration::from_millis(5)));
    let (client, _) = producer(sender.clone(), options);
    let start = Instant::now();
    client.enqueue_event(event("a"), to("0")).await.unwrap();
    for (at, body) in [(1, "b"), (20, "c"), (50, "d")] {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        client.enqueue_event(event(body), to("0")).await.unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(
        sends(&sender, start),
        vec![
            (Duration::ZERO, strings(&["a"])),
            (Duration::from_millis(100), strings(&["b", "c", "d"])),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn without_idle_sending_a_lone_event_waits_exactly_max_wait_time() {
    let sender = MockSender::new(1 << 20, Duration::ZERO);
    let (client, outcomes) = producer(sender.clone(), waiting_options());
    let start = Instant::now();
    client.enqueue_event(event("a"), to("0")).await.unwrap();
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
async fn max_wait_time_bounds_the_wait_of_a_batch_behind_a_free_slot() {
    // Idle sending on, one event per 100 ms on a slow send: every batch still goes when its
    // slot frees, and the one whose slot is free at once goes at once.
    let sender = MockSender::new(1 << 20, Duration::from_millis(30));
    let options =
        BufferedProducerOptions::default().with_max_wait_time(Some(Duration::from_millis(50)));
    let (client, _) = producer(sender.clone(), options);
    let start = Instant::now();
    for (at, body) in [(0, "a"), (100, "b"), (200, "c")] {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        client.enqueue_event(event(body), to("2")).await.unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(
        sends(&sender, start),
        vec![
            (Duration::ZERO, strings(&["a"])),
            (Duration::from_millis(100), strings(&["b"])),
            (Duration::from_millis(200), strings(&["c"])),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_before_max_wait_time() {
    // Each "event-000" is 14 bytes encoded, 19 with its data section: 5 fit in 100.
    let sender = MockSender::new(100, Duration::ZERO);
    let (client, _) = producer(sender.clone(), waiting_options());
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
    let (client, outcomes) = producer(sender.clone(), waiting_options());
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
async fn flushing_one_partition_leaves_the_others_waiting() {
    let sender = MockSender::new(1 << 20, Duration::from_millis(10));
    let (client, outcomes) = producer(sender.clone(), waiting_options());
    let start = Instant::now();
    client.enqueue_event(event("p0"), to("0")).await.unwrap();
    client.enqueue_event(event("p1"), to("1")).await.unwrap();
    client.flush_partition("1").await.unwrap();
    assert_eq!(Instant::now() - start, Duration::from_millis(10));
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![Outcome::Ok("1".into(), vec!["p1".into()])]
    );
    assert_eq!(
        client.buffered_event_count("0"),
        1,
        "partition 0 still waits"
    );
    let err = client.flush_partition("9").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(err.partition_id(), Some("9"));
    // By key: the partition the key maps to, and only that one.
    let key_partition = client.partition_for_key("device-7").await.unwrap();
    client
        .enqueue_event(
            event("keyed"),
            EnqueueOptions::default().with_partition_key("device-7"),
        )
        .await
        .unwrap();
    client.flush_key("device-7").await.unwrap();
    assert!(outcomes
        .lock()
        .unwrap()
        .contains(&Outcome::Ok(key_partition, vec!["keyed".into()])));
}

#[tokio::test(start_paused = true)]
async fn no_max_wait_time_sends_only_full_batches_or_on_flush() {
    let sender = MockSender::new(1 << 20, Duration::ZERO);
    let options = waiting_options().with_max_wait_time(None);
    let (client, outcomes) = producer(sender.clone(), options);
    client.enqueue_event(event("a"), to("0")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(sender.sent().is_empty());
    client.flush().await.unwrap();
    assert_eq!(handled(&outcomes), 1);
}
