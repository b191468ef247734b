//! What handlers are told and when: failures, oversize events, send order, re-enqueueing from a handler, panics.

use std::sync::atomic::Ordering;

use super::*;
use crate::buffered::handler::{boxed_failed, boxed_succeeded, ClosureHandler};

#[tokio::test(start_paused = true)]
async fn a_failed_batch_goes_to_the_failure_handler_with_its_error() {
    let sender = MockSender::new(1 << 20, Duration::ZERO);
    sender.fail_next(ErrorKind::QuotaExceeded);
    let (client, outcomes) = producer(sender.clone(), BufferedProducerOptions::default());
    client
        .enqueue_events(vec![event("a"), event("b")], to("0"))
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
    let options = BufferedProducerOptions::default().with_send_when_idle(false);
    let (client, outcomes) = producer(sender.clone(), options);
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
                keys_seen.lock().unwrap().extend(
                    context
                        .events
                        .iter()
                        .map(|e| e.partition_key().map(str::to_string)),
                );
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
