//! `reject_next`: deliveries rejected with a condition, by scope and in rule order.

use super::*;

async fn rejects_next_then_accepts(condition: FaultCondition, symbol: &str) {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator.faults().reject_next(2, condition, FaultScope::Any);

    for i in 0..2 {
        let outcome = send(&mut sender, event("refused", i, None)).await;
        assert_eq!(rejected_with(&outcome).as_deref(), Some(symbol), "send {i}");
    }
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 0);

    let outcome = send(&mut sender, event("stored", 2, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    let stored = emulator.events("hub", "0").unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].raw.windows(6).any(|w| w == b"stored"));
    assert_eq!(counters(&emulator), (3, 1, 2, 0));
}

#[tokio::test]
async fn reject_next_server_busy_rejects_n_sends_without_storing_then_accepts() {
    rejects_next_then_accepts(FaultCondition::ServerBusy, "com.microsoft:server-busy").await;
}

#[tokio::test]
async fn reject_next_resource_limit_exceeded_rejects_with_its_condition() {
    rejects_next_then_accepts(
        FaultCondition::ResourceLimitExceeded,
        "amqp:resource-limit-exceeded",
    )
    .await;
}

#[tokio::test]
async fn reject_next_timeout_rejects_with_its_condition() {
    rejects_next_then_accepts(FaultCondition::Timeout, "com.microsoft:timeout").await;
}

#[tokio::test]
async fn reject_next_internal_error_rejects_with_its_condition() {
    rejects_next_then_accepts(FaultCondition::InternalError, "amqp:internal-error").await;
}

#[tokio::test]
async fn reject_next_other_rejects_with_the_custom_symbol() {
    rejects_next_then_accepts(FaultCondition::Other("x:custom".into()), "x:custom").await;
}

#[tokio::test]
async fn reject_next_rejects_a_whole_batch_and_stores_none_of_it() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/2").await;
    emulator
        .faults()
        .reject_next(1, FaultCondition::ServerBusy, FaultScope::Any);

    let events = || (0..3).map(|i| event("e", i, None)).collect::<Vec<_>>();
    let outcome = send(&mut sender, batch(events(), None)).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("com.microsoft:server-busy")
    );
    assert_eq!(emulator.event_count("hub", "2").unwrap(), 0);

    let outcome = send(&mut sender, batch(events(), None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", "2").unwrap(), 3);
    assert_eq!(counters(&emulator), (2, 3, 1, 0));
}

#[tokio::test]
async fn reject_next_scoped_to_a_partition_leaves_other_partitions_alone() {
    let (emulator, mut client) = setup().await;
    let mut to_0 = client.sender("hub/Partitions/0").await;
    let mut to_1 = client.sender("hub/Partitions/1").await;
    emulator.faults().reject_next(
        2,
        FaultCondition::ServerBusy,
        FaultScope::partition("hub", "1"),
    );

    for i in 0..3 {
        let outcome = send(&mut to_0, event("p0", i, None)).await;
        assert_eq!(rejected_with(&outcome), None, "partition 0, send {i}");
    }
    for i in 0..2 {
        let outcome = send(&mut to_1, event("p1", i, None)).await;
        assert_eq!(
            rejected_with(&outcome).as_deref(),
            Some("com.microsoft:server-busy"),
            "partition 1, send {i}"
        );
    }
    let outcome = send(&mut to_1, event("p1", 2, None)).await;
    assert_eq!(rejected_with(&outcome), None);

    assert_eq!(emulator.event_count("hub", "0").unwrap(), 3);
    assert_eq!(emulator.event_count("hub", "1").unwrap(), 1);
    assert_eq!(counters(&emulator), (6, 4, 2, 0));
}

#[tokio::test]
async fn reject_next_scoped_to_a_partition_of_another_hub_does_not_touch_this_hub() {
    let (emulator, mut client) = setup().await;
    let mut to_hub = client.sender("hub/Partitions/1").await;
    let mut to_other = client.sender("other/Partitions/1").await;
    emulator.faults().reject_next(
        1,
        FaultCondition::ServerBusy,
        FaultScope::partition("other", "1"),
    );

    let outcome = send(&mut to_hub, event("hub", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    let outcome = send(&mut to_other, event("other", 0, None)).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("com.microsoft:server-busy")
    );
    assert_eq!(emulator.event_count("hub", "1").unwrap(), 1);
    assert_eq!(emulator.event_count("other", "1").unwrap(), 0);
    assert_eq!(counters(&emulator), (2, 1, 1, 0));
}

#[tokio::test]
async fn reject_next_scoped_to_a_partition_applies_to_keyed_sends_routed_there() {
    let (emulator, mut client) = setup().await;
    let mut to_hub = client.sender("hub").await;
    let key = "routing-key";
    let target = partition_index_for_key(key, 4).to_string();
    emulator.faults().reject_next(
        1,
        FaultCondition::Timeout,
        FaultScope::partition("hub", target.as_str()),
    );

    let outcome = send(&mut to_hub, event("keyed", 0, Some(key))).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("com.microsoft:timeout")
    );
    let outcome = send(&mut to_hub, event("keyed", 1, Some(key))).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", &target).unwrap(), 1);
    assert_eq!(emulator.total_event_count("hub").unwrap(), 1);
    assert_eq!(counters(&emulator), (2, 1, 1, 0));
}

#[tokio::test]
async fn reject_next_rules_apply_in_the_order_they_were_added() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let faults = emulator.faults();
    faults.reject_next(1, FaultCondition::ServerBusy, FaultScope::Any);
    faults.reject_next(2, FaultCondition::Timeout, FaultScope::Any);
    faults.reject_next(1, FaultCondition::Other("x:last".into()), FaultScope::Any);

    let mut seen = Vec::new();
    for i in 0..5 {
        let outcome = send(&mut sender, event("e", i, None)).await;
        seen.push(rejected_with(&outcome));
    }
    assert_eq!(
        seen,
        vec![
            Some("com.microsoft:server-busy".to_string()),
            Some("com.microsoft:timeout".to_string()),
            Some("com.microsoft:timeout".to_string()),
            Some("x:last".to_string()),
            None,
        ]
    );
    assert_eq!(counters(&emulator), (5, 1, 4, 0));
}

#[tokio::test]
async fn reject_next_uses_the_first_rule_whose_scope_matches() {
    let (emulator, mut client) = setup().await;
    let mut to_0 = client.sender("hub/Partitions/0").await;
    let mut to_1 = client.sender("hub/Partitions/1").await;
    let faults = emulator.faults();
    faults.reject_next(
        1,
        FaultCondition::ServerBusy,
        FaultScope::partition("hub", "1"),
    );
    faults.reject_next(1, FaultCondition::Timeout, FaultScope::Any);

    // Partition 0 skips the partition-1 rule and uses up the catch-all one.
    let outcome = send(&mut to_0, event("p0", 0, None)).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("com.microsoft:timeout")
    );
    let outcome = send(&mut to_1, event("p1", 0, None)).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("com.microsoft:server-busy")
    );
    let outcome = send(&mut to_1, event("p1", 1, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    let outcome = send(&mut to_0, event("p0", 1, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(counters(&emulator), (4, 2, 2, 0));
}
