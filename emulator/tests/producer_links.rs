//! Producer links over real AMQP: addresses, max-message-size, storage of plain and batched
//! messages, partition-key routing, and counters.

mod common;

use std::time::{Duration, SystemTime};

use common::raw::{self, RawConnection};
use common::*;
use eventhubs_emulator::{partition_index_for_key, Emulator, DEFAULT_MAX_MESSAGE_SIZE};
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::types::definitions::Handle;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Batch, Body, Data, Header, Message, MessageAnnotations, MessageId,
    Properties,
};
use fe2o3_amqp::types::performatives::Performative;
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};

async fn authorized(emulator: &Emulator) -> TestClient {
    let mut client = TestClient::connect(emulator).await;
    client.authorize(emulator, "hub").await;
    client
}

fn bodies(emulator: &Emulator, hub: &str, partition: &str) -> Vec<String> {
    emulator
        .events(hub, partition)
        .unwrap()
        .iter()
        .map(|e| String::from_utf8(e.body().unwrap().to_vec()).unwrap())
        .collect()
}

/// An event with a body of `len` bytes.
fn sized_event(len: usize) -> Message<Data> {
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: None,
        application_properties: None,
        body: Data(Binary::from(vec![b'x'; len])),
        footer: None,
    }
}

/// The encoded size of the envelope `common::batch` builds for these events (no key).
fn batch_size(events: &[Message<Data>]) -> usize {
    let sections: Batch<Data> = events
        .iter()
        .map(|e| Data(Binary::from(encode(e.clone()))))
        .collect();
    let envelope = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: None,
        application_properties: None,
        body: Body::<Value>::Data(sections),
        footer: None,
    };
    serde_amqp::to_vec(&Serializable(envelope))
        .expect("encode")
        .len()
}

/// Events (ten of 300 bytes, then one padded) whose batch encodes to exactly `size` bytes.
fn batch_of_exactly(size: usize) -> Vec<Message<Data>> {
    let mut events: Vec<_> = (0..10).map(|_| sized_event(300)).collect();
    let base = batch_size(&events);
    for pad in 0..size {
        let mut candidate = events.clone();
        candidate.push(sized_event(pad));
        let len = batch_size(&candidate);
        if len == size {
            events.push(sized_event(pad));
            return events;
        }
        assert!(
            len < size + 16,
            "no padding gives {size} bytes (from {base})"
        );
    }
    panic!("no padding gives {size} bytes");
}

#[tokio::test]
async fn senders_attach_to_every_address_form() {
    let emulator = emulator().await;
    let mut client = authorized(&emulator).await;
    let port = emulator.local_addr().port();
    let addresses = [
        "hub".to_string(),
        "hub/Partitions/2".to_string(),
        "/hub/Partitions/2".to_string(),
        format!("amqp://127.0.0.1:{port}/hub/Partitions/2"),
        "amqps://other-host/hub".to_string(),
    ];
    for (i, address) in addresses.iter().enumerate() {
        let mut sender = client.sender(address).await;
        send_events(&mut sender, &format!("via-{i}-"), 1).await;
    }
    assert_eq!(emulator.total_event_count("hub").unwrap(), 5);
    assert_eq!(
        bodies(&emulator, "hub", "2")
            .iter()
            .filter(|b| ["via-1-0", "via-2-0", "via-3-0"].contains(&b.as_str()))
            .count(),
        3,
        "the three partition addresses deliver to partition 2"
    );
}

#[tokio::test]
async fn attach_announces_a_max_message_size_of_1_mib_by_default() {
    let emulator = emulator().await;
    let mut client = authorized(&emulator).await;
    let hub = client.sender("hub").await;
    let partition = client.sender("hub/Partitions/0").await;
    assert_eq!(DEFAULT_MAX_MESSAGE_SIZE, 1024 * 1024);
    assert_eq!(hub.max_message_size(), Some(DEFAULT_MAX_MESSAGE_SIZE));
    assert_eq!(partition.max_message_size(), Some(DEFAULT_MAX_MESSAGE_SIZE));
}

#[tokio::test]
async fn attach_announces_the_configured_max_message_size() {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .max_message_size(256 * 1024)
        .start()
        .await
        .expect("emulator starts");
    let mut client = authorized(&emulator).await;
    let sender = client.sender("hub/Partitions/1").await;
    assert_eq!(sender.max_message_size(), Some(256 * 1024));
}

#[tokio::test]
async fn sender_to_an_unknown_hub_is_refused_not_found() {
    let emulator = emulator().await;
    let mut client = authorized(&emulator).await;
    let attach = try_sender(&mut client, "nohub", "nohub").await;
    assert_eq!(sender_refused(attach).await, "amqp:not-found");
    let attach = try_sender(&mut client, "nohub-partition", "nohub/Partitions/0").await;
    assert_eq!(sender_refused(attach).await, "amqp:not-found");
}

#[tokio::test]
async fn sender_to_a_bad_partition_is_refused_out_of_range() {
    let emulator = emulator().await;
    let mut client = authorized(&emulator).await;
    let attach = try_sender(&mut client, "partition-9", "hub/Partitions/9").await;
    assert_eq!(
        sender_refused(attach).await,
        "com.microsoft:argument-out-of-range"
    );
}

#[tokio::test]
async fn plain_messages_get_sequence_numbers_offsets_and_enqueued_times() {
    let emulator = emulator().await;
    let mut client = authorized(&emulator).await;
    let mut sender = client.sender("hub/Partitions/1").await;
    let before = SystemTime::now() - Duration::from_millis(1);
    send_events(&mut sender, "plain", 3).await;
    let after = SystemTime::now();

    let stored = emulator.events("hub", "1").unwrap();
    let sequence_numbers: Vec<_> = stored.iter().map(|e| e.sequence_number).collect();
    assert_eq!(sequence_numbers, vec![0, 1, 2]);
    assert_eq!(stored[0].offset, 0);
    assert!(
        stored.windows(2).all(|w| w[0].offset < w[1].offset),
        "offsets increase"
    );
    for event in &stored {
        assert!(
            (before..=after).contains(&event.enqueued_time),
            "enqueued time set at send"
        );
    }
    assert_eq!(
        bodies(&emulator, "hub", "1"),
        ["plain0", "plain1", "plain2"]
    );
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 0);
}

#[tokio::test]
async fn batches_are_stored_event_by_event_and_counted() {
    let emulator = emulator().await;
    let mut client = authorized(&emulator).await;
    let mut sender = client.sender("hub/Partitions/3").await;
    let first = (0..3).map(|i| event(&format!("a{i}"), i, None)).collect();
    let second = (0..2).map(|i| event(&format!("b{i}"), i, None)).collect();
    for batch_events in [first, second] {
        let outcome = sender.send(batch(batch_events, None)).await.unwrap();
        assert_eq!(rejected_with(&outcome), None);
    }

    let stored = emulator.events("hub", "3").unwrap();
    let sequence_numbers: Vec<_> = stored.iter().map(|e| e.sequence_number).collect();
    assert_eq!(sequence_numbers, vec![0, 1, 2, 3, 4]);
    assert!(stored.windows(2).all(|w| w[0].offset < w[1].offset));
    assert_eq!(
        bodies(&emulator, "hub", "3"),
        ["a0", "a1", "a2", "b0", "b1"]
    );
    let counters = emulator.counters();
    assert_eq!(counters.deliveries, 2);
    assert_eq!(counters.events_stored, 5);
    assert_eq!(counters.rejected, 0);
}

/// An event with every section a client may set.
fn rich_event(key: &str) -> Message<Data> {
    Message {
        header: Some(Header {
            durable: true,
            ..Default::default()
        }),
        delivery_annotations: None,
        message_annotations: Some(
            MessageAnnotations::builder()
                .insert(
                    OwnedKey::Symbol(Symbol::from("x-opt-partition-key")),
                    Value::String(key.into()),
                )
                .insert(
                    OwnedKey::Symbol(Symbol::from("x-custom")),
                    Value::Timestamp(Timestamp::from_milliseconds(1_700_000_000_123)),
                )
                .build(),
        ),
        properties: Some(Properties {
            message_id: Some(MessageId::String("m-1".into())),
            content_type: Some(Symbol::from("application/json")),
            ..Default::default()
        }),
        application_properties: Some(
            ApplicationProperties::builder()
                .insert("text", SimpleValue::String("héllo".into()))
                .insert("count", SimpleValue::Int(-7))
                .insert("big", SimpleValue::Long(i64::MAX))
                .insert("flag", SimpleValue::Bool(true))
                .insert("raw", SimpleValue::Binary(Binary::from(vec![0, 255, 1])))
                .build(),
        ),
        body: Data(Binary::from(br#"{"temperature":21.5}"#.to_vec())),
        footer: None,
    }
}

#[tokio::test]
async fn batched_events_are_stored_byte_for_byte() {
    let emulator = emulator().await;
    let mut client = authorized(&emulator).await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let events = vec![rich_event("k1"), rich_event("k2")];
    let expected: Vec<Vec<u8>> = events.iter().map(|e| encode(e.clone())).collect();
    let outcome = sender.send(batch(events, None)).await.unwrap();
    assert_eq!(rejected_with(&outcome), None);

    let stored = emulator.events("hub", "0").unwrap();
    let raws: Vec<Vec<u8>> = stored.iter().map(|e| e.raw.to_vec()).collect();
    assert_eq!(raws, expected);
    assert_eq!(stored[1].partition_key().unwrap().as_deref(), Some("k2"));
    assert_eq!(stored[0].property("count").unwrap(), Some(Value::Int(-7)));
}

#[tokio::test]
async fn plain_message_is_stored_byte_for_byte() {
    let emulator = emulator().await;
    let mut client = authorized(&emulator).await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let message = rich_event("plain-key");
    let expected = encode(message.clone());
    let outcome = sender.send(message).await.unwrap();
    assert_eq!(rejected_with(&outcome), None);

    let stored = emulator.events("hub", "0").unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].raw.to_vec(), expected);
    assert_eq!(&stored[0].body().unwrap()[..], br#"{"temperature":21.5}"#);
}

#[tokio::test]
async fn keyed_batches_land_whole_on_the_partition_of_the_key() {
    // (key, partition count, partition) from the service's published vectors.
    let anchors = [
        ("alphabet", 3, 0),
        ("alphabet", 11, 4),
        ("TheBestParitionEver", 4, 2),
        ("TheWorstParitionEver", 15, 1),
    ];
    let emulator = Emulator::builder()
        .hub("p3", 3)
        .hub("p4", 4)
        .hub("p11", 11)
        .hub("p15", 15)
        .start()
        .await
        .expect("emulator starts");
    let mut client = TestClient::connect(&emulator).await;
    for (key, count, expected) in anchors {
        assert_eq!(
            partition_index_for_key(key, count),
            expected,
            "{key} / {count}"
        );
        let hub = format!("p{count}");
        client.authorize(&emulator, &hub).await;
        let mut sender = client.sender(&hub).await;
        let events = (0..3)
            .map(|i| event(&format!("{key}-{i}"), i, Some(key)))
            .collect();
        let outcome = sender.send(batch(events, Some(key))).await.unwrap();
        assert_eq!(rejected_with(&outcome), None);

        let partition = expected.to_string();
        assert_eq!(
            bodies(&emulator, &hub, &partition),
            [0, 1, 2].map(|i| format!("{key}-{i}")),
            "{key} lands whole on partition {partition} of {hub}"
        );
        assert_eq!(emulator.total_event_count(&hub).unwrap(), 3);
    }
}

#[tokio::test]
async fn keyed_plain_message_to_the_hub_is_routed_by_its_key() {
    let emulator = emulator().await;
    let mut client = authorized(&emulator).await;
    let mut sender = client.sender("hub").await;
    let key = "TheBestParitionEver";
    let outcome = sender.send(event("keyed", 0, Some(key))).await.unwrap();
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(bodies(&emulator, "hub", "2"), ["keyed"]);
}

#[tokio::test]
async fn keyless_batches_spread_round_robin_over_all_partitions() {
    let emulator = emulator().await;
    let mut client = authorized(&emulator).await;
    let mut sender = client.sender("hub").await;
    for b in 0..8 {
        let events = (0..2)
            .map(|i| event(&format!("b{b}e{i}"), i, None))
            .collect();
        let outcome = sender.send(batch(events, None)).await.unwrap();
        assert_eq!(rejected_with(&outcome), None);
    }
    let mut seen = Vec::new();
    for partition in ["0", "1", "2", "3"] {
        let stored = bodies(&emulator, "hub", partition);
        assert_eq!(
            stored.len(),
            4,
            "partition {partition} holds two whole batches"
        );
        // Each batch stays together and in order.
        assert_eq!(stored[0].replace("e0", "e1"), stored[1]);
        assert_eq!(stored[2].replace("e0", "e1"), stored[3]);
        seen.extend(stored);
    }
    seen.sort();
    let mut all: Vec<_> = (0..8)
        .flat_map(|b| (0..2).map(move |i| format!("b{b}e{i}")))
        .collect();
    all.sort();
    assert_eq!(seen, all);
}

#[tokio::test]
async fn client_refuses_a_delivery_above_the_announced_size_and_the_link_stays_usable() {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .max_message_size(1024)
        .start()
        .await
        .expect("emulator starts");
    let mut client = authorized(&emulator).await;
    let mut sender = client.sender("hub/Partitions/0").await;
    // fe2o3 checks the link's max-message-size itself and sends nothing.
    let error = sender
        .send(sized_event(2000))
        .await
        .expect_err("too large to send");
    match error {
        SendError::MessageSizeExceeded(e) => {
            assert_eq!(e.max_size, 1024);
            assert!(e.size > 1024);
        }
        other => panic!("expected MessageSizeExceeded, got {other:?}"),
    }
    assert_eq!(emulator.counters().deliveries, 0);
    send_events(&mut sender, "small", 1).await;
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 1);
}

#[tokio::test]
async fn transfer_above_the_announced_size_detaches_with_message_size_exceeded() {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .max_message_size(1024)
        .require_authorization(false)
        .start()
        .await
        .expect("emulator starts");
    let mut raw = RawConnection::handshake(&emulator).await;
    raw.send(
        Performative::Attach(raw::sender_attach("big", 0, "hub/Partitions/0")),
        &[],
    )
    .await;
    let attach = raw
        .wait_for(|p| match p {
            Performative::Attach(a) => Some(a),
            _ => None,
        })
        .await;
    assert_eq!(attach.max_message_size, Some(1024));
    raw.wait_for(|p| match p {
        Performative::Flow(f) if f.handle == Some(Handle(0)) && f.link_credit > Some(0) => Some(()),
        _ => None,
    })
    .await;

    let payload = encode(sized_event(2000));
    raw.send(Performative::Transfer(raw::transfer(0, 0)), &payload)
        .await;
    let detach = raw
        .wait_for(|p| match p {
            Performative::Detach(d) => Some(d),
            _ => None,
        })
        .await;
    let error = detach.error.expect("the detach carries an error");
    assert_eq!(
        condition_symbol(&error.condition),
        "amqp:link:message-size-exceeded"
    );
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 0);
}

#[tokio::test]
async fn batch_of_exactly_max_message_size_is_accepted() {
    let limit = 8192;
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .max_message_size(limit)
        .start()
        .await
        .expect("emulator starts");
    let mut client = authorized(&emulator).await;
    let mut sender = client.sender("hub/Partitions/1").await;
    let events = batch_of_exactly(limit as usize);
    let count = events.len();
    let outcome = sender.send(batch(events, None)).await.unwrap();
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", "1").unwrap(), count);
    let counters = emulator.counters();
    assert_eq!(
        (counters.deliveries, counters.events_stored),
        (1, count as u64)
    );

    // One byte more and fe2o3 refuses it before sending.
    let error = sender
        .send(batch(batch_of_exactly(limit as usize + 1), None))
        .await
        .expect_err("one byte above the limit");
    assert!(
        matches!(error, SendError::MessageSizeExceeded(ref e) if e.size == limit + 1),
        "expected MessageSizeExceeded of {} bytes, got {error:?}",
        limit + 1
    );
    assert_eq!(emulator.counters().deliveries, 1);
}

#[tokio::test]
async fn emulator_measures_batches_as_encoded() {
    // The emulator measures a batch from its sections. With its limit one byte below a batch's
    // encoded size (the link still announces more, so the client sends it), the batch must be
    // rejected; at the encoded size it must pass.
    let size = 8192;
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .max_message_size(size + 1)
        .start()
        .await
        .expect("emulator starts");
    let mut client = authorized(&emulator).await;
    let mut sender = client.sender("hub/Partitions/2").await;

    emulator.faults().set_max_message_size(size - 1);
    let outcome = sender
        .send(batch(batch_of_exactly(size as usize), None))
        .await
        .unwrap();
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("amqp:link:message-size-exceeded")
    );
    assert_eq!(emulator.event_count("hub", "2").unwrap(), 0);

    emulator.faults().set_max_message_size(size);
    let outcome = sender
        .send(batch(batch_of_exactly(size as usize), None))
        .await
        .unwrap();
    assert_eq!(rejected_with(&outcome), None);
    let counters = emulator.counters();
    assert_eq!(counters.deliveries, 2);
    assert_eq!(counters.rejected, 1);
    assert_eq!(counters.events_stored, 11);
}
