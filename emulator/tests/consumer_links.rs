//! Consumer links over real AMQP: addresses, start-position filters, delivered annotations,
//! credit, and epochs.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use eventhubs_emulator::Emulator;
use fe2o3_amqp::link::{CreditMode, Receiver};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Symbol, Value};

const PARTITION_0: &str = "hub/ConsumerGroups/$Default/Partitions/0";
const EARLIEST: &str = "amqp.annotation.x-opt-offset > '-1'";

/// An emulator, a client authorized for `hub`, and `count` events ("e0".."e{count-1}") stored
/// in partition 0.
async fn with_events(count: usize) -> (Emulator, TestClient) {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    client.authorize(&emulator, "hub").await;
    let mut sender = client.sender("hub/Partitions/0").await;
    send_events(&mut sender, "e", count).await;
    (emulator, client)
}

/// Attaches a receiver named `name` on partition 0 with a selector filter.
async fn receiver(client: &mut TestClient, name: &str, filter: &str) -> Receiver {
    tokio::time::timeout(
        STEP,
        receiver_builder(PARTITION_0, Some(filter))
            .name(name)
            .attach(&mut client.session),
    )
    .await
    .expect("attach in time")
    .expect("receiver attaches")
}

/// Receives `count` events and returns their bodies.
async fn bodies(receiver: &mut Receiver, count: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let message = recv_one(receiver).await;
        out.push(String::from_utf8(data_body(&message)).expect("utf-8 body"));
    }
    out
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("e{i}")).collect()
}

fn epoch_properties(epoch: i64) -> OrderedMap<Symbol, Value> {
    let mut properties = OrderedMap::new();
    properties.insert(Symbol::from("com.microsoft:epoch"), Value::Long(epoch));
    properties
}

async fn attach_with_epoch(
    client: &mut TestClient,
    name: &str,
    epoch: Option<i64>,
) -> Result<Receiver, fe2o3_amqp::link::ReceiverAttachError> {
    let mut builder = receiver_builder(PARTITION_0, Some(EARLIEST)).name(name);
    if let Some(epoch) = epoch {
        builder = builder.properties(epoch_properties(epoch));
    }
    tokio::time::timeout(STEP, builder.attach(&mut client.session))
        .await
        .expect("attach answered in time")
}

fn unix_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

#[tokio::test]
async fn earliest_gives_every_stored_event_then_live_ones() {
    let (_emulator, mut client) = with_events(3).await;
    let mut consumer = receiver(&mut client, "earliest", EARLIEST).await;
    assert_eq!(bodies(&mut consumer, 3).await, names(0..3));

    let mut sender = client.sender("hub/Partitions/0").await;
    send_events(&mut sender, "live", 2).await;
    assert_eq!(bodies(&mut consumer, 2).await, ["live0", "live1"]);
}

#[tokio::test]
async fn consumer_group_and_address_forms_are_accepted() {
    let (emulator, mut client) = with_events(2).await;
    let port = emulator.local_addr().port();
    let addresses = [
        "hub/ConsumerGroups/$default/Partitions/0".to_string(),
        format!("amqp://127.0.0.1:{port}/hub/ConsumerGroups/$Default/Partitions/0"),
        "/hub/consumergroups/$Default/partitions/0".to_string(),
    ];
    for address in addresses {
        let mut consumer = client.receiver(&address, Some(EARLIEST)).await;
        assert_eq!(
            bodies(&mut consumer, 2).await,
            names(0..2),
            "from {address}"
        );
    }
}

#[tokio::test]
async fn latest_gives_only_events_sent_after_attach() {
    let (_emulator, mut client) = with_events(3).await;
    let mut consumer = receiver(
        &mut client,
        "latest",
        "amqp.annotation.x-opt-offset > '@latest'",
    )
    .await;
    let mut sender = client.sender("hub/Partitions/0").await;
    send_events(&mut sender, "after", 2).await;
    assert_eq!(bodies(&mut consumer, 2).await, ["after0", "after1"]);
}

#[tokio::test]
async fn sequence_number_filters_start_after_or_at_the_number() {
    let (_emulator, mut client) = with_events(5).await;
    let cases = [
        ("amqp.annotation.x-opt-sequence-number > 2", 3),
        ("amqp.annotation.x-opt-sequence-number >'2'", 3),
        ("amqp.annotation.x-opt-sequence-number > '2'", 3),
        ("amqp.annotation.x-opt-sequence-number >= 2", 2),
        ("amqp.annotation.x-opt-sequence-number>='2'", 2),
        ("amqp.annotation.x-opt-sequence-number >= '0'", 0),
    ];
    for (i, (filter, first)) in cases.into_iter().enumerate() {
        let mut consumer = receiver(&mut client, &format!("seq-{i}"), filter).await;
        assert_eq!(
            bodies(&mut consumer, 5 - first).await,
            names(first..5),
            "{filter}"
        );
    }
}

#[tokio::test]
async fn offset_filter_on_the_third_event_excludes_or_includes_it() {
    let (emulator, mut client) = with_events(5).await;
    let third = emulator.events("hub", "0").unwrap()[2].offset;

    let filter = format!("amqp.annotation.x-opt-offset > '{third}'");
    let mut after = receiver(&mut client, "after-third", &filter).await;
    assert_eq!(bodies(&mut after, 2).await, names(3..5));

    let filter = format!("amqp.annotation.x-opt-offset >= {third}");
    let mut from = receiver(&mut client, "from-third", &filter).await;
    assert_eq!(bodies(&mut from, 3).await, names(2..5));
}

#[tokio::test]
async fn enqueued_time_filters_compare_with_the_enqueued_time() {
    let (emulator, mut client) = with_events(3).await;
    let stored = emulator.events("hub", "0").unwrap();
    let millis = |e: &eventhubs_emulator::ReceivedEvent| {
        e.enqueued_time
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let last = millis(&stored[2]);

    // At or after the last event's time: it is included (with any event of the same millisecond).
    let first_at = stored.iter().position(|e| millis(e) >= last).unwrap();
    let filter = format!("amqp.annotation.x-opt-enqueued-time >= {last}");
    let mut at = receiver(&mut client, "at-last", &filter).await;
    assert_eq!(bodies(&mut at, 3 - first_at).await, names(first_at..3));

    // Strictly after it: nothing stored qualifies, so the first delivery is a live event sent in
    // a later millisecond.
    let filter = format!("amqp.annotation.x-opt-enqueued-time > '{last}'");
    let mut after = receiver(&mut client, "after-last", &filter).await;
    while unix_millis_now() <= last {
        tokio::task::yield_now().await;
    }
    let mut sender = client.sender("hub/Partitions/0").await;
    send_events(&mut sender, "later", 1).await;
    assert_eq!(bodies(&mut after, 1).await, ["later0"]);

    let mut from_epoch = receiver(
        &mut client,
        "from-zero",
        "amqp.annotation.x-opt-enqueued-time > 0",
    )
    .await;
    assert_eq!(bodies(&mut from_epoch, 1).await, ["e0"]);
}

#[tokio::test]
async fn delivered_events_carry_the_service_annotations_and_the_original_content() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    client.authorize(&emulator, "hub").await;
    let mut sender = client.sender("hub/Partitions/0").await;
    for i in 0..2 {
        let outcome = sender
            .send(event(&format!("keyed{i}"), 40 + i, Some("the-key")))
            .await
            .unwrap();
        assert_eq!(rejected_with(&outcome), None);
    }
    let stored = emulator.events("hub", "0").unwrap();
    let mut consumer = receiver(&mut client, "annotated", EARLIEST).await;
    for (i, expected) in stored.iter().enumerate() {
        let message = recv_one(&mut consumer).await;
        assert_eq!(
            annotation(&message, "x-opt-sequence-number"),
            Some(Value::Long(i as i64))
        );
        assert_eq!(
            annotation(&message, "x-opt-offset"),
            Some(Value::String(expected.offset.to_string()))
        );
        match annotation(&message, "x-opt-enqueued-time") {
            Some(Value::Timestamp(t)) => assert_eq!(
                t.milliseconds(),
                expected
                    .enqueued_time
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64
            ),
            other => panic!("x-opt-enqueued-time must be a timestamp, got {other:?}"),
        }
        assert_eq!(
            annotation(&message, "x-opt-partition-key"),
            Some(Value::String("the-key".into()))
        );
        assert_eq!(data_body(&message), format!("keyed{i}").as_bytes());
        assert_eq!(
            app_property(&message, "index"),
            Some(SimpleValue::Long(40 + i as i64))
        );
    }
}

#[tokio::test]
async fn credit_is_honoured() {
    let (_emulator, mut client) = with_events(5).await;
    let mut consumer = tokio::time::timeout(
        STEP,
        receiver_builder(PARTITION_0, Some(EARLIEST))
            .name("manual-credit")
            .credit_mode(CreditMode::Manual)
            .attach(&mut client.session),
    )
    .await
    .expect("attach in time")
    .expect("receiver attaches");
    consumer.set_credit(2).await.expect("credit 2");
    assert_eq!(bodies(&mut consumer, 2).await, names(0..2));

    // Without credit nothing more may arrive; absence can only be observed over some time.
    let more = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        consumer.recv::<fe2o3_amqp::types::messaging::Body<Value>>(),
    )
    .await;
    assert!(more.is_err(), "a delivery beyond the credit: {more:?}");

    consumer.set_credit(3).await.expect("credit 3");
    assert_eq!(bodies(&mut consumer, 3).await, names(2..5));
}

#[tokio::test]
async fn unknown_consumer_group_is_refused_not_found() {
    let (_emulator, mut client) = with_events(0).await;
    let attach = tokio::time::timeout(
        STEP,
        receiver_builder("hub/ConsumerGroups/nobody/Partitions/0", Some(EARLIEST))
            .attach(&mut client.session),
    )
    .await
    .expect("attach answered in time");
    assert_eq!(receiver_refused(attach).await, "amqp:not-found");
}

#[tokio::test]
async fn bad_partition_is_refused_out_of_range() {
    let (_emulator, mut client) = with_events(0).await;
    let attach = tokio::time::timeout(
        STEP,
        receiver_builder("hub/ConsumerGroups/$Default/Partitions/4", Some(EARLIEST))
            .attach(&mut client.session),
    )
    .await
    .expect("attach answered in time");
    assert_eq!(
        receiver_refused(attach).await,
        "com.microsoft:argument-out-of-range"
    );
}

#[tokio::test]
async fn consumer_without_authorization_is_refused() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let attach = tokio::time::timeout(
        STEP,
        receiver_builder(PARTITION_0, Some(EARLIEST)).attach(&mut client.session),
    )
    .await
    .expect("attach answered in time");
    assert_eq!(receiver_refused(attach).await, "amqp:unauthorized-access");
}

#[tokio::test]
async fn bad_filter_expression_is_refused() {
    let (_emulator, mut client) = with_events(1).await;
    let filters = [
        "amqp.annotation.x-opt-colour > 'red'",
        "amqp.annotation.x-opt-offset < 5",
        "amqp.annotation.x-opt-sequence-number > 'five'",
    ];
    for (i, filter) in filters.into_iter().enumerate() {
        let attach = tokio::time::timeout(
            STEP,
            receiver_builder(PARTITION_0, Some(filter))
                .name(format!("bad-filter-{i}"))
                .attach(&mut client.session),
        )
        .await
        .expect("attach answered in time");
        assert_eq!(
            receiver_refused(attach).await,
            "com.microsoft:argument-error",
            "{filter}"
        );
    }
}

#[tokio::test]
async fn epoch_link_steals_the_partition_from_a_link_without_epoch() {
    let (_emulator, mut client) = with_events(1).await;
    let mut plain = attach_with_epoch(&mut client, "plain", None)
        .await
        .expect("attaches");
    assert_eq!(bodies(&mut plain, 1).await, ["e0"]);

    let mut owner = attach_with_epoch(&mut client, "epoch-5", Some(5))
        .await
        .expect("attaches");
    assert_eq!(receiver_ended_with(&mut plain).await, "amqp:link:stolen");
    assert_eq!(bodies(&mut owner, 1).await, ["e0"]);
}

#[tokio::test]
async fn lower_epoch_is_refused() {
    let (_emulator, mut client) = with_events(1).await;
    let mut owner = attach_with_epoch(&mut client, "epoch-5", Some(5))
        .await
        .expect("attaches");
    assert_eq!(bodies(&mut owner, 1).await, ["e0"]);

    let attach = attach_with_epoch(&mut client, "epoch-4", Some(4)).await;
    assert_eq!(receiver_refused(attach).await, "amqp:link:stolen");

    // The owner keeps the partition.
    let mut sender = client.sender("hub/Partitions/0").await;
    send_events(&mut sender, "still-mine", 1).await;
    assert_eq!(bodies(&mut owner, 1).await, ["still-mine0"]);
}

#[tokio::test]
async fn link_without_epoch_is_refused_while_an_epoch_link_holds_the_partition() {
    let (_emulator, mut client) = with_events(1).await;
    let mut owner = attach_with_epoch(&mut client, "epoch-5", Some(5))
        .await
        .expect("attaches");
    assert_eq!(bodies(&mut owner, 1).await, ["e0"]);

    let attach = attach_with_epoch(&mut client, "no-epoch", None).await;
    assert_eq!(receiver_refused(attach).await, "amqp:link:stolen");
}

#[tokio::test]
async fn links_without_epoch_share_a_partition() {
    let (_emulator, mut client) = with_events(2).await;
    let mut first = attach_with_epoch(&mut client, "first", None)
        .await
        .expect("attaches");
    let mut second = attach_with_epoch(&mut client, "second", None)
        .await
        .expect("attaches");
    assert_eq!(bodies(&mut first, 2).await, names(0..2));
    assert_eq!(bodies(&mut second, 2).await, names(0..2));
}
