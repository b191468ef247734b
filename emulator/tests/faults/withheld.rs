//! `withhold_next`: deliveries stored but never answered.

use super::*;

#[tokio::test]
async fn withhold_next_stores_the_event_but_never_answers_the_sender() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/3").await;
    emulator.faults().withhold_next(1, FaultScope::Any);

    let mut withheld = Box::pin(sender.send(event("withheld", 0, None)));
    wait_while_pending(&mut withheld, "the withheld event is stored", || {
        emulator.event_count("hub", "3").unwrap() == 1
    })
    .await;
    let _withheld = assert_pending(withheld, "the withheld send").await;
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn withhold_next_answers_later_sends_but_still_not_the_withheld_one() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/3").await;
    emulator.faults().withhold_next(1, FaultScope::Any);

    let withheld = timeout(STEP, sender.send_batchable(event("withheld", 0, None)))
        .await
        .expect("transfer in time")
        .expect("transfer sent");
    for i in 1..3 {
        let outcome = send(&mut sender, event("answered", i, None)).await;
        assert_eq!(rejected_with(&outcome), None, "send {i}");
    }
    // Dispositions of a link come in order: the later ones arrived, so the withheld one will not.
    let _withheld = assert_pending(Box::pin(withheld), "the withheld delivery's outcome").await;
    assert_eq!(emulator.event_count("hub", "3").unwrap(), 3);
    assert_eq!(counters(&emulator), (3, 3, 0, 0));
}

#[tokio::test]
async fn withhold_next_scoped_to_a_partition_answers_other_partitions() {
    let (emulator, mut client) = setup().await;
    let mut to_0 = client.sender("hub/Partitions/0").await;
    let mut to_1 = client.sender("hub/Partitions/1").await;
    emulator
        .faults()
        .withhold_next(1, FaultScope::partition("hub", "1"));

    let outcome = send(&mut to_0, event("p0", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    let mut withheld = Box::pin(to_1.send(event("p1", 0, None)));
    wait_while_pending(&mut withheld, "the withheld event is stored", || {
        emulator.event_count("hub", "1").unwrap() == 1
    })
    .await;
    let _withheld = assert_pending(withheld, "the withheld send to partition 1").await;
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 1);
    assert_eq!(counters(&emulator), (2, 2, 0, 0));
}
