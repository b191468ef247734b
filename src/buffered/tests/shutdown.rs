//! Close, abandon, and start-up failures.

use super::*;

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
