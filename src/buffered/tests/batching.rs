//! When batches go: at max_wait_time, when full, on flush, and without max_wait_time.

use super::*;

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
