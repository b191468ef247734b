//! Idempotent producers over real AMQP: the attach handshake, sequence checks, duplicates and
//! epochs.

mod common;

use common::raw::{self, RawConnection};
use common::*;
use eventhubs_emulator::Emulator;
use fe2o3_amqp::link::{Sender, SenderAttachError};
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{Data, Message, MessageAnnotations};
use fe2o3_amqp::types::performatives::{Attach, Performative};
use fe2o3_amqp::types::primitives::{Array, Binary, OrderedMap, Symbol, Value};

const CAPABILITY: &str = "com.microsoft:idempotent-producer";
const PRODUCER_ID: &str = "com.microsoft:producer-id";
const PRODUCER_EPOCH: &str = "com.microsoft:producer-epoch";
const PRODUCER_SEQUENCE: &str = "com.microsoft:producer-sequence-number";

/// What the emulator granted an idempotent link at attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grant {
    producer_id: i64,
    epoch: i16,
    last_sequence: i32,
}

/// The three link properties, each given or null (asking the emulator to assign it).
fn requested(producer_id: Option<i64>, epoch: Option<i16>) -> OrderedMap<Symbol, Value> {
    let mut properties = OrderedMap::new();
    properties.insert(
        Symbol::from(PRODUCER_ID),
        producer_id.map_or(Value::Null, Value::Long),
    );
    properties.insert(
        Symbol::from(PRODUCER_EPOCH),
        epoch.map_or(Value::Null, Value::Short),
    );
    properties.insert(Symbol::from(PRODUCER_SEQUENCE), Value::Null);
    properties
}

/// Reads the grant from the attach properties; panics unless each has its AMQP type.
fn grant_of(properties: &OrderedMap<Symbol, Value>) -> Grant {
    let get = |name: &str| {
        properties
            .get(&Symbol::from(name))
            .unwrap_or_else(|| panic!("attach property {name} missing"))
    };
    match (
        get(PRODUCER_ID),
        get(PRODUCER_EPOCH),
        get(PRODUCER_SEQUENCE),
    ) {
        (Value::Long(producer_id), Value::Short(epoch), Value::Int(last_sequence)) => Grant {
            producer_id: *producer_id,
            epoch: *epoch,
            last_sequence: *last_sequence,
        },
        other => panic!("expected (long, short, int) properties, got {other:?}"),
    }
}

async fn attach_idempotent(
    client: &mut TestClient,
    name: &str,
    address: &str,
    producer_id: Option<i64>,
    epoch: Option<i16>,
) -> Result<Sender, SenderAttachError> {
    let attach = Sender::builder()
        .name(name)
        .target(address)
        .add_desired_capabilities(Symbol::from(CAPABILITY))
        .properties(requested(producer_id, epoch))
        .attach(&mut client.session);
    tokio::time::timeout(STEP, attach)
        .await
        .expect("attach answered in time")
}

/// An idempotent sender on partition 0 and its grant (fe2o3 merges the remote attach's
/// properties into the link's properties, the remote values winning).
async fn idempotent_sender(
    client: &mut TestClient,
    name: &str,
    producer_id: Option<i64>,
    epoch: Option<i16>,
) -> (Sender, Grant) {
    let sender = attach_idempotent(client, name, "hub/Partitions/0", producer_id, epoch)
        .await
        .expect("idempotent sender attaches");
    let grant = sender.properties(|p| grant_of(p.as_ref().expect("attach properties")));
    (sender, grant)
}

/// An event stamped as the producer's `sequence`-th.
fn stamped(body: &str, grant: Grant, sequence: i32) -> Message<Data> {
    let annotations = MessageAnnotations::builder()
        .insert(
            OwnedKey::Symbol(Symbol::from(PRODUCER_ID)),
            Value::Long(grant.producer_id),
        )
        .insert(
            OwnedKey::Symbol(Symbol::from(PRODUCER_EPOCH)),
            Value::Short(grant.epoch),
        )
        .insert(
            OwnedKey::Symbol(Symbol::from(PRODUCER_SEQUENCE)),
            Value::Int(sequence),
        )
        .build();
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: Some(annotations),
        properties: None,
        application_properties: None,
        body: Data(Binary::from(body.as_bytes().to_vec())),
        footer: None,
    }
}

fn stamped_batch(grant: Grant, sequences: std::ops::Range<i32>) -> Vec<Message<Data>> {
    sequences
        .map(|s| stamped(&format!("s{s}"), grant, s))
        .collect()
}

async fn authorized_client(emulator: &Emulator) -> TestClient {
    let mut client = TestClient::connect(emulator).await;
    client.authorize(emulator, "hub").await;
    client
}

fn stored_bodies(emulator: &Emulator) -> Vec<String> {
    emulator
        .events("hub", "0")
        .unwrap()
        .iter()
        .map(|e| String::from_utf8(e.body().unwrap().to_vec()).unwrap())
        .collect()
}

/// Sends a raw attach asking for idempotence and returns the emulator's attach.
async fn raw_idempotent_attach(
    raw: &mut RawConnection,
    handle: u32,
    properties: Option<OrderedMap<Symbol, Value>>,
) -> Attach {
    let mut attach =
        raw::sender_attach(&format!("idempotent-{handle}"), handle, "hub/Partitions/0");
    attach.desired_capabilities = Some(Array(vec![Symbol::from(CAPABILITY)]));
    attach.properties = properties;
    raw.send(Performative::Attach(attach), &[]).await;
    raw.wait_for(|p| match p {
        Performative::Attach(a) if a.handle.0 == handle => Some(a),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn attach_answer_offers_the_capability_and_grants_a_new_producer() {
    // fe2o3 does not expose the remote attach's offered capabilities, so this reads the attach
    // off the wire.
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .require_authorization(false)
        .start()
        .await
        .expect("emulator starts");
    let mut raw = RawConnection::handshake(&emulator).await;

    let with_nulls = raw_idempotent_attach(&mut raw, 0, Some(requested(None, None))).await;
    assert!(
        raw::has_capability(&with_nulls.offered_capabilities, CAPABILITY),
        "offered: {:?}",
        with_nulls.offered_capabilities
    );
    let first = grant_of(with_nulls.properties.as_ref().expect("properties"));
    assert_eq!(first.last_sequence, -1);
    assert_eq!(first.epoch, 0);

    let without = raw_idempotent_attach(&mut raw, 1, None).await;
    assert!(raw::has_capability(
        &without.offered_capabilities,
        CAPABILITY
    ));
    let second = grant_of(without.properties.as_ref().expect("properties"));
    assert_eq!(second.last_sequence, -1);
    assert_ne!(
        second.producer_id, first.producer_id,
        "each new producer gets its own id"
    );
}

#[tokio::test]
async fn plain_link_is_not_offered_idempotence() {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .require_authorization(false)
        .start()
        .await
        .expect("emulator starts");
    let mut raw = RawConnection::handshake(&emulator).await;
    raw.send(
        Performative::Attach(raw::sender_attach("plain", 0, "hub/Partitions/0")),
        &[],
    )
    .await;
    let attach = raw
        .wait_for(|p| match p {
            Performative::Attach(a) => Some(a),
            _ => None,
        })
        .await;
    assert!(!raw::has_capability(
        &attach.offered_capabilities,
        CAPABILITY
    ));
}

#[tokio::test]
async fn stamped_events_are_stored() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let (mut sender, grant) = idempotent_sender(&mut client, "idem", None, None).await;
    assert_eq!(grant.last_sequence, -1);

    let outcome = sender
        .send(batch(stamped_batch(grant, 0..3), None))
        .await
        .unwrap();
    assert_eq!(rejected_with(&outcome), None);
    // A plain (unbatched) message continues the sequence.
    let outcome = sender.send(stamped("s3", grant, 3)).await.unwrap();
    assert_eq!(rejected_with(&outcome), None);

    assert_eq!(stored_bodies(&emulator), ["s0", "s1", "s2", "s3"]);
    let stored = emulator.events("hub", "0").unwrap();
    let message = stored[1].message().unwrap();
    assert_eq!(annotation(&message, PRODUCER_SEQUENCE), Some(Value::Int(1)));
    assert_eq!(
        annotation(&message, PRODUCER_ID),
        Some(Value::Long(grant.producer_id))
    );
}

#[tokio::test]
async fn repeated_batch_is_accepted_but_not_stored_twice() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let (mut sender, grant) = idempotent_sender(&mut client, "idem", None, None).await;
    for _ in 0..2 {
        let outcome = sender
            .send(batch(stamped_batch(grant, 0..3), None))
            .await
            .unwrap();
        assert_eq!(rejected_with(&outcome), None);
    }
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 3);
    let counters = emulator.counters();
    assert_eq!(counters.duplicates_dropped, 3);
    assert_eq!(counters.events_stored, 3);
    assert_eq!(counters.deliveries, 2);

    // A batch overlapping the committed ones stores only its new events.
    let outcome = sender
        .send(batch(stamped_batch(grant, 2..5), None))
        .await
        .unwrap();
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(stored_bodies(&emulator), ["s0", "s1", "s2", "s3", "s4"]);
    assert_eq!(emulator.counters().duplicates_dropped, 4);
}

#[tokio::test]
async fn sequence_gap_is_rejected_out_of_order() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let (mut sender, grant) = idempotent_sender(&mut client, "idem", None, None).await;
    let outcome = sender
        .send(batch(stamped_batch(grant, 0..3), None))
        .await
        .unwrap();
    assert_eq!(rejected_with(&outcome), None);

    let outcome = sender
        .send(batch(stamped_batch(grant, 5..7), None))
        .await
        .unwrap();
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("com.microsoft:out-of-order-sequence")
    );
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 3);
    assert_eq!(emulator.counters().rejected, 1);

    // The link stays usable: the expected next number is still accepted.
    let outcome = sender.send(stamped("s3", grant, 3)).await.unwrap();
    assert_eq!(rejected_with(&outcome), None);
}

#[tokio::test]
async fn event_without_a_sequence_number_is_rejected_on_an_idempotent_link() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let (mut sender, _) = idempotent_sender(&mut client, "idem", None, None).await;
    let outcome = sender.send(event("unstamped", 0, None)).await.unwrap();
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("com.microsoft:argument-error")
    );
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 0);
}

#[tokio::test]
async fn reattach_with_the_same_epoch_reports_the_last_committed_sequence_number() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let (mut sender, grant) = idempotent_sender(&mut client, "idem", None, Some(3)).await;
    assert_eq!(grant.epoch, 3);
    let outcome = sender
        .send(batch(stamped_batch(grant, 0..3), None))
        .await
        .unwrap();
    assert_eq!(rejected_with(&outcome), None);
    sender.close().await.expect("link closes");

    let (_again, regrant) =
        idempotent_sender(&mut client, "idem-again", Some(grant.producer_id), Some(3)).await;
    assert_eq!(
        regrant,
        Grant {
            producer_id: grant.producer_id,
            epoch: 3,
            last_sequence: 2
        }
    );
}

#[tokio::test]
async fn higher_epoch_makes_the_old_links_next_send_fail_epoch_stolen() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let (mut old, grant) = idempotent_sender(&mut client, "old", None, Some(1)).await;
    let outcome = old
        .send(batch(stamped_batch(grant, 0..2), None))
        .await
        .unwrap();
    assert_eq!(rejected_with(&outcome), None);

    let (mut new, newer) =
        idempotent_sender(&mut client, "new", Some(grant.producer_id), Some(2)).await;
    assert_eq!(newer.epoch, 2);
    assert_eq!(newer.last_sequence, 1);

    let outcome = old.send(stamped("s2-old", grant, 2)).await.unwrap();
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("com.microsoft:producer-epoch-stolen")
    );
    let outcome = new.send(stamped("s2-new", newer, 2)).await.unwrap();
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(stored_bodies(&emulator), ["s0", "s1", "s2-new"]);
}

#[tokio::test]
async fn lower_epoch_attach_is_refused_epoch_stolen() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let (_current, grant) = idempotent_sender(&mut client, "current", None, Some(5)).await;
    let attach = attach_idempotent(
        &mut client,
        "stale",
        "hub/Partitions/0",
        Some(grant.producer_id),
        Some(4),
    )
    .await;
    assert_eq!(
        sender_refused(attach).await,
        "com.microsoft:producer-epoch-stolen"
    );
}

#[tokio::test]
async fn idempotence_on_the_hub_address_is_refused() {
    let emulator = emulator().await;
    let mut client = authorized_client(&emulator).await;
    let attach = attach_idempotent(&mut client, "hub-wide", "hub", None, None).await;
    assert_eq!(sender_refused(attach).await, "com.microsoft:argument-error");
}
