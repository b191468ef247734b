//! `delay_dispositions`: deliveries stored at once and answered late.

use super::*;

#[tokio::test]
async fn delay_dispositions_stores_at_once_and_answers_no_earlier_than_the_delay() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let delay = Duration::from_millis(400);
    emulator.faults().delay_dispositions(delay);

    let start = Instant::now();
    let mut pending = Box::pin(sender.send(event("slow", 0, None)));
    // The event is stored while its outcome is still on the way.
    wait_while_pending(&mut pending, "the delayed event is stored", || {
        emulator.event_count("hub", "0").unwrap() == 1
    })
    .await;
    let outcome = timeout(delay + STEP, pending)
        .await
        .expect("outcome after the delay")
        .expect("send succeeds");
    let elapsed = start.elapsed();
    assert_eq!(rejected_with(&outcome), None);
    assert!(
        elapsed >= delay,
        "outcome after {elapsed:?}, before the {delay:?} delay"
    );
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn delay_dispositions_zero_ends_the_delay() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let faults = emulator.faults();
    faults.delay_dispositions(Duration::from_secs(3600));
    faults.delay_dispositions(Duration::ZERO);

    // With the hour-long delay still in force this would time out.
    let outcome = send(&mut sender, event("prompt", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn delay_dispositions_does_not_hold_up_rejections() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let faults = emulator.faults();
    faults.delay_dispositions(Duration::from_secs(3600));
    faults.reject_next(1, FaultCondition::ServerBusy, FaultScope::Any);

    let outcome = send(&mut sender, event("refused", 0, None)).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("com.microsoft:server-busy")
    );
    assert_eq!(counters(&emulator), (1, 0, 1, 0));
}
