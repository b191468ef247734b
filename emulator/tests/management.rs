//! `$management` READ of event hub and partition properties over real AMQP.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use fe2o3_amqp::types::primitives::{Array, SimpleValue, Value};

const EVENTHUB: &str = "com.microsoft:eventhub";
const PARTITION: &str = "com.microsoft:partition";

fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn keys(map: &std::collections::BTreeMap<String, Value>) -> BTreeSet<&str> {
    map.keys().map(String::as_str).collect()
}

async fn authorized_client(emulator: &eventhubs_emulator::Emulator) -> TestClient {
    let mut client = TestClient::connect(emulator).await;
    client.authorize(emulator, "hub").await;
    client
}

#[tokio::test]
async fn hub_read_returns_the_hub_properties_with_their_amqp_types() {
    let before = unix_millis(SystemTime::now());
    let emulator = emulator().await;
    let after = unix_millis(SystemTime::now());
    let mut client = authorized_client(&emulator).await;

    let reply = client.read(EVENTHUB, "hub", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.condition, None);
    let map = reply_map(&reply);
    assert_eq!(
        keys(&map),
        BTreeSet::from([
            "name",
            "created_at",
            "georeplication_factor",
            "partition_count",
            "partition_ids",
            "type"
        ])
    );
    // As the service answers: one region, and no status-description on success.
    assert_eq!(map["georeplication_factor"], Value::Int(1));
    assert_eq!(reply.description, None);
    assert_eq!(map["name"], Value::String("hub".into()));
    assert_eq!(map["type"], Value::String(EVENTHUB.into()));
    assert_eq!(map["partition_count"], Value::Int(4));
    let ids = ["0", "1", "2", "3"].map(|id| Value::String(id.into()));
    assert_eq!(map["partition_ids"], Value::Array(Array(ids.to_vec())));
    match &map["created_at"] {
        Value::Timestamp(t) => assert!(
            (before..=after).contains(&t.milliseconds()),
            "created_at {} not within the start of the emulator",
            t.milliseconds()
        ),
        other => panic!("created_at must be a timestamp, got {other:?}"),
    }
}

#[tokio::test]
async fn partition_read_of_an_empty_partition_has_every_key_with_its_amqp_type() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;

    let reply = client.read(PARTITION, "hub", Some("1")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.description);
    let map = reply_map(&reply);
    assert_eq!(
        keys(&map),
        BTreeSet::from([
            "name",
            "partition",
            "type",
            "begin_sequence_number",
            "last_enqueued_sequence_number",
            "last_enqueued_offset",
            "last_enqueued_time_utc",
            "is_partition_empty",
            "last_enqueued_sequence_number_epoch",
        ])
    );
    assert_eq!(map["name"], Value::String("hub".into()));
    assert_eq!(map["partition"], Value::String("1".into()));
    assert_eq!(map["type"], Value::String(PARTITION.into()));
    assert_eq!(map["begin_sequence_number"], Value::Long(0));
    assert_eq!(map["last_enqueued_sequence_number"], Value::Long(-1));
    assert_eq!(map["last_enqueued_offset"], Value::String("-1".into()));
    assert!(
        matches!(map["last_enqueued_time_utc"], Value::Timestamp(_)),
        "last_enqueued_time_utc must be a timestamp, got {:?}",
        map["last_enqueued_time_utc"]
    );
    assert_eq!(map["is_partition_empty"], Value::Bool(true));
    assert_eq!(map["last_enqueued_sequence_number_epoch"], Value::Long(0));
}

#[tokio::test]
async fn partition_read_reports_the_last_enqueued_event() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let mut sender = client.sender("hub/Partitions/1").await;
    send_events(&mut sender, "event", 3).await;
    let stored = emulator.events("hub", "1").unwrap();
    let last = stored.last().expect("stored events");

    let reply = client.read(PARTITION, "hub", Some("1")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.description);
    let map = reply_map(&reply);
    assert_eq!(map["begin_sequence_number"], Value::Long(0));
    assert_eq!(map["last_enqueued_sequence_number"], Value::Long(2));
    assert_eq!(
        map["last_enqueued_offset"],
        Value::String(last.offset.to_string())
    );
    match &map["last_enqueued_time_utc"] {
        Value::Timestamp(t) => assert_eq!(t.milliseconds(), unix_millis(last.enqueued_time)),
        other => panic!("last_enqueued_time_utc must be a timestamp, got {other:?}"),
    }
    assert_eq!(map["is_partition_empty"], Value::Bool(false));
    assert_eq!(map["last_enqueued_sequence_number_epoch"], Value::Long(0));

    // The other partitions are untouched.
    let reply = client.read(PARTITION, "hub", Some("0")).await;
    assert_eq!(reply_map(&reply)["is_partition_empty"], Value::Bool(true));
}

#[tokio::test]
async fn unknown_partition_is_argument_out_of_range() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let reply = client.read(PARTITION, "hub", Some("4")).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.condition.as_deref(),
        Some("com.microsoft:argument-out-of-range")
    );
}

#[tokio::test]
async fn unknown_hub_is_not_found() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let reply = client.read(EVENTHUB, "nohub", None).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.condition.as_deref(), Some("amqp:not-found"));
}

#[tokio::test]
async fn read_without_authorization_is_unauthorized() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let reply = client.read(EVENTHUB, "hub", None).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.condition.as_deref(), Some("amqp:unauthorized-access"));
    let reply = client.read(PARTITION, "hub", Some("0")).await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn security_token_in_the_request_authorizes_a_read() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let token = emulator.sas_token(&client.audience("hub"), Duration::from_secs(3600));
    let props = [
        ("operation", SimpleValue::String("READ".into())),
        ("type", SimpleValue::String(EVENTHUB.into())),
        ("name", SimpleValue::String("hub".into())),
        ("security_token", SimpleValue::String(token)),
    ];
    let reply = client
        .request(
            "$management",
            &props,
            fe2o3_amqp::types::messaging::Body::Empty,
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.description);
    assert_eq!(reply_map(&reply)["partition_count"], Value::Int(4));
}

#[tokio::test]
async fn hub_names_are_case_insensitive() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    client.authorize(&emulator, "HUB").await;

    let reply = client.read(EVENTHUB, "HUB", None).await;
    assert_eq!(reply.status, 200, "{:?}", reply.description);
    assert_eq!(reply_map(&reply)["name"], Value::String("hub".into()));

    let reply = client.read(PARTITION, "Hub", Some("2")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.description);
    assert_eq!(reply_map(&reply)["partition"], Value::String("2".into()));
}
