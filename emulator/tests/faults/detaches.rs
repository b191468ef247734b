//! `detach_senders`: producer links detached by the service.

use super::*;

#[tokio::test]
async fn detach_senders_of_a_partition_detaches_its_links_with_the_condition() {
    let (emulator, mut client) = setup().await;
    let mut to_0 = client.sender("hub/Partitions/0").await;
    let _to_1 = client.sender("hub/Partitions/1").await;

    let heard = emulator
        .faults()
        .detach_senders("hub", Some("0"), FaultCondition::DetachForced);
    assert_eq!(heard, 2, "both live producer links hear the order");
    let error = timeout(STEP, to_0.on_detach())
        .await
        .expect("partition 0's link is detached in time");
    assert_eq!(detach_condition(&error), "amqp:link:detach-forced");
}

#[tokio::test]
async fn detach_senders_of_a_partition_makes_the_next_send_fail_with_the_condition() {
    let (emulator, mut client) = setup().await;
    let mut to_0 = client.sender("hub/Partitions/0").await;
    emulator
        .faults()
        .detach_senders("hub", Some("0"), FaultCondition::DetachForced);
    // Wait until the emulator has ended the link, so the send meets a detached link: an order
    // for a hub no link serves reaches every live link task, and none is left.
    eventually("the detached link task is gone", || {
        emulator
            .faults()
            .detach_senders("nothing", None, FaultCondition::DetachForced)
            == 0
    })
    .await;

    let result = timeout(STEP, to_0.send(event("late", 0, None)))
        .await
        .expect("send ends in time");
    let error = result.expect_err("a send on a detached link fails");
    let condition = match &error {
        SendError::Detached(e) => detach_condition(e),
        SendError::LinkStateError(
            LinkStateError::RemoteClosedWithError(e) | LinkStateError::RemoteDetachedWithError(e),
        ) => condition_symbol(&e.condition),
        other => panic!("unexpected send error {other:?}"),
    };
    assert_eq!(condition, "amqp:link:detach-forced");
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 0);
}

#[tokio::test]
async fn detach_senders_of_a_partition_keeps_other_partitions_links_working() {
    let (emulator, mut client) = setup().await;
    let mut to_0 = client.sender("hub/Partitions/0").await;
    let mut to_1 = client.sender("hub/Partitions/1").await;

    emulator
        .faults()
        .detach_senders("hub", Some("0"), FaultCondition::DetachForced);
    timeout(STEP, to_0.on_detach())
        .await
        .expect("partition 0's link is detached in time");

    let outcome = send(&mut to_1, event("still here", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    drop(assert_pending(Box::pin(to_1.on_detach()), "a detach of partition 1's link").await);
    assert_eq!(emulator.event_count("hub", "1").unwrap(), 1);
}

#[tokio::test]
async fn detach_senders_without_a_partition_detaches_every_producer_link_of_the_hub() {
    let (emulator, mut client) = setup().await;
    let mut to_0 = client.sender("hub/Partitions/0").await;
    let mut to_1 = client.sender("hub/Partitions/1").await;
    let mut to_hub = client.sender("hub").await;
    let mut to_other = client.sender("other/Partitions/0").await;

    let heard =
        emulator
            .faults()
            .detach_senders("hub", None, FaultCondition::Other("x:gone".into()));
    assert_eq!(heard, 4, "every live producer link hears the order");
    for (name, sender) in [
        ("hub/0", &mut to_0),
        ("hub/1", &mut to_1),
        ("hub", &mut to_hub),
    ] {
        let error = timeout(STEP, sender.on_detach())
            .await
            .unwrap_or_else(|_| panic!("{name} is detached in time"));
        assert_eq!(detach_condition(&error), "x:gone", "{name}");
    }
    // Another hub's link is not a target.
    let outcome = send(&mut to_other, event("other", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("other", "0").unwrap(), 1);
}

#[tokio::test]
async fn detach_senders_counts_only_live_links() {
    let (emulator, mut client) = setup().await;
    let faults = emulator.faults();
    assert_eq!(
        faults.detach_senders("hub", None, FaultCondition::DetachForced),
        0
    );
    let mut to_0 = client.sender("hub/Partitions/0").await;
    assert_eq!(
        faults.detach_senders("hub", Some("0"), FaultCondition::DetachForced),
        1
    );
    timeout(STEP, to_0.on_detach())
        .await
        .expect("detached in time");
    eventually("the detached link task ends", || {
        faults.detach_senders("hub", Some("0"), FaultCondition::DetachForced) == 0
    })
    .await;
}

#[tokio::test]
async fn detach_senders_leaves_a_new_link_to_the_partition_working() {
    let (emulator, mut client) = setup().await;
    let mut first = client.sender("hub/Partitions/0").await;
    emulator
        .faults()
        .detach_senders("hub", Some("0"), FaultCondition::DetachForced);
    timeout(STEP, first.on_detach())
        .await
        .expect("detached in time");

    let mut second = timeout(
        STEP,
        Sender::attach(&mut client.session, "second-sender", "hub/Partitions/0"),
    )
    .await
    .expect("attach in time")
    .expect("a new link attaches");
    let outcome = send(&mut second, event("again", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 1);
}
