//! `grow_partitions`: a hub gains partitions while clients are connected.

use super::*;

#[tokio::test]
async fn grow_partitions_shows_in_management_reads() {
    let (emulator, mut client) = setup().await;
    assert_eq!(
        management_partitions(&client.read("com.microsoft:eventhub", "hub", None).await).0,
        4
    );

    assert_eq!(emulator.faults().grow_partitions("hub", 6).unwrap(), 6);
    let (count, ids) =
        management_partitions(&client.read("com.microsoft:eventhub", "hub", None).await);
    assert_eq!(count, 6);
    assert_eq!(ids, vec!["0", "1", "2", "3", "4", "5"]);
    assert_eq!(
        emulator.partition_ids("hub").unwrap(),
        vec!["0", "1", "2", "3", "4", "5"]
    );
    let reply = client
        .read("com.microsoft:partition", "hub", Some("5"))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.description);
}

#[tokio::test]
async fn grow_partitions_lets_links_to_new_partitions_attach_and_store() {
    let (emulator, mut client) = setup().await;
    emulator.faults().grow_partitions("hub", 6).unwrap();
    let mut to_5 = client.sender("hub/Partitions/5").await;
    let outcome = send(&mut to_5, event("new partition", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", "5").unwrap(), 1);
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn grow_partitions_never_shrinks() {
    let (emulator, mut client) = setup().await;
    let faults = emulator.faults();
    assert_eq!(faults.grow_partitions("hub", 6).unwrap(), 6);
    assert_eq!(faults.grow_partitions("hub", 3).unwrap(), 6);
    assert_eq!(faults.grow_partitions("hub", 6).unwrap(), 6);
    let (count, ids) =
        management_partitions(&client.read("com.microsoft:eventhub", "hub", None).await);
    assert_eq!(count, 6);
    assert_eq!(ids.len(), 6);
}

#[tokio::test]
async fn grow_partitions_of_an_unknown_hub_fails() {
    let emulator = emulator().await;
    match emulator.faults().grow_partitions("nohub", 6) {
        Err(EmulatorError::UnknownHub(name)) => assert_eq!(name, "nohub"),
        other => panic!("expected UnknownHub, got {other:?}"),
    }
    assert_eq!(emulator.partition_ids("hub").unwrap().len(), 4);
}

#[tokio::test]
async fn grow_partitions_above_the_service_maximum_fails() {
    let emulator = emulator().await;
    assert!(matches!(
        emulator.faults().grow_partitions("hub", 2049),
        Err(EmulatorError::InvalidConfig(_))
    ));
    assert_eq!(emulator.partition_ids("hub").unwrap().len(), 4);
}

#[tokio::test]
async fn grow_partitions_changes_keyed_routing_to_the_new_count() {
    let (emulator, mut client) = setup().await;
    // A key that lands on a partition only the grown hub has.
    let key = (0..1000)
        .map(|i| format!("key-{i}"))
        .find(|k| partition_index_for_key(k, 6) >= 4)
        .expect("some key maps to partition 4 or 5 of 6");
    let target = partition_index_for_key(&key, 6).to_string();

    emulator.faults().grow_partitions("hub", 6).unwrap();
    let mut to_hub = client.sender("hub").await;
    for i in 0..3 {
        let outcome = send(&mut to_hub, event("keyed", i, Some(&key))).await;
        assert_eq!(rejected_with(&outcome), None);
    }
    assert_eq!(emulator.event_count("hub", &target).unwrap(), 3);
    assert_eq!(emulator.total_event_count("hub").unwrap(), 3);
}

#[tokio::test]
async fn grow_partitions_reroutes_keys_on_a_hub_link_attached_before() {
    let (emulator, mut client) = setup().await;
    let key = (0..1000)
        .map(|i| format!("key-{i}"))
        .find(|k| partition_index_for_key(k, 6) >= 4)
        .expect("some key maps to partition 4 or 5 of 6");
    let before = partition_index_for_key(&key, 4).to_string();
    let after = partition_index_for_key(&key, 6).to_string();
    let mut to_hub = client.sender("hub").await;

    let outcome = send(&mut to_hub, event("keyed", 0, Some(&key))).await;
    assert_eq!(rejected_with(&outcome), None);
    emulator.faults().grow_partitions("hub", 6).unwrap();
    let outcome = send(&mut to_hub, event("keyed", 1, Some(&key))).await;
    assert_eq!(rejected_with(&outcome), None);

    assert_eq!(emulator.event_count("hub", &before).unwrap(), 1);
    assert_eq!(emulator.event_count("hub", &after).unwrap(), 1);
}
