//! The emulator's frames carry the values the service sends, as recorded between the service and
//! Microsoft's Python client (azure-sdk-for-python, `tests/amqpproxy_recordings`): the open's
//! idle timeout, the begin's handle-max, the attach answers of `$cbs` and of entity links, and
//! (the `$management` READ answer is checked in `management.rs`). And a client that stays silent past the idle timeout is
//! dropped, as the service drops it.

mod common;

use std::time::Duration;

use common::raw::{receiver_attach, sender_attach, RawConnection, SASL_HEADER};
use common::*;
use eventhubs_emulator::Emulator;
use fe2o3_amqp::types::definitions::Handle;
use fe2o3_amqp::types::performatives::{Attach, Open, Performative};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome};
use tokio::time::Instant;

const TRACKING_ID: &str = "com.microsoft:tracking-id";

async fn emulator_without_auth() -> Emulator {
    Emulator::builder()
        .hub("hub", 2)
        .require_authorization(false)
        .start()
        .await
        .expect("emulator starts")
}

async fn emulator_with_idle_timeout(idle: Duration) -> Emulator {
    Emulator::builder()
        .hub("hub", 1)
        .idle_timeout(idle)
        .start()
        .await
        .expect("emulator starts")
}

/// SASL ANONYMOUS, then an open without an idle timeout; returns the emulator's open.
async fn open(raw: &mut RawConnection) -> Open {
    raw.sasl_anonymous().await;
    raw.open().await
}

async fn attach_answer(raw: &mut RawConnection, attach: Attach) -> Attach {
    let name = attach.name.clone();
    raw.send(Performative::Attach(attach), &[]).await;
    raw.wait_for(|p| match p {
        Performative::Attach(answer) if answer.name == name => Some(answer),
        _ => None,
    })
    .await
}

fn tracking_id(attach: &Attach) -> Option<String> {
    match attach
        .properties
        .as_ref()?
        .get(&Symbol::from(TRACKING_ID))?
    {
        Value::String(id) => Some(id.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn sasl_offers_and_answers_as_the_service() {
    let emulator = emulator_without_auth().await;
    let mut raw = RawConnection::tcp(&emulator).await;
    raw.write(SASL_HEADER).await;
    raw.expect_header(SASL_HEADER).await;
    let (_, _, body) = raw.read_frame().await.expect("sasl-mechanisms");
    let mechanisms: SaslMechanisms = serde_amqp::from_slice(&body).expect("decode");
    let offered: Vec<&str> = mechanisms
        .sasl_server_mechanisms
        .0
        .iter()
        .map(Symbol::as_str)
        .collect();
    assert_eq!(offered, ["MSSBCBS", "PLAIN", "ANONYMOUS", "EXTERNAL"]);
    let init = SaslInit {
        mechanism: Symbol::from("ANONYMOUS"),
        initial_response: None,
        hostname: Some("localhost".into()),
    };
    let init = serde_amqp::to_vec(&init).expect("encode");
    raw.write(&common::raw::frame(1, 0, &init)).await;
    let (_, _, body) = raw.read_frame().await.expect("sasl-outcome");
    let outcome: SaslOutcome = serde_amqp::from_slice(&body).expect("decode");
    assert!(matches!(outcome.code, SaslCode::Ok));
    assert_eq!(
        outcome.additional_data.map(|d| d.to_vec()),
        Some(b"Welcome!".to_vec())
    );
}

#[tokio::test]
async fn open_and_begin_announce_what_the_service_announces() {
    let emulator = emulator_without_auth().await;
    let mut raw = RawConnection::tcp(&emulator).await;
    let open = open(&mut raw).await;
    assert_eq!(open.idle_time_out, Some(120_000));
    assert_eq!(open.max_frame_size.0, 65536);
    assert_eq!(open.channel_max.0, 4999);
    let begin = raw.begin().await;
    assert_eq!(begin.handle_max, Handle(255));
}

#[tokio::test]
async fn request_links_announce_no_size_limit_and_entity_links_a_tracking_id() {
    let emulator = emulator_without_auth().await;
    let mut raw = RawConnection::tcp(&emulator).await;
    open(&mut raw).await;
    raw.begin().await;

    for (handle, node) in [(0, "$cbs"), (2, "$management")] {
        let answer = attach_answer(&mut raw, sender_attach(node, handle, node)).await;
        assert_eq!(answer.max_message_size, Some(u64::MAX), "{node}");
        let answer = attach_answer(
            &mut raw,
            receiver_attach(&format!("{node}-r"), handle + 1, node),
        )
        .await;
        assert_eq!(answer.max_message_size, Some(u64::MAX), "{node} replies");
    }

    let mut sender = sender_attach("producer", 4, "hub/Partitions/0");
    let mut timeout = fe2o3_amqp::types::primitives::OrderedMap::new();
    timeout.insert(Symbol::from("com.microsoft:timeout"), Value::Uint(60_000));
    sender.properties = Some(timeout);
    let producer = attach_answer(&mut raw, sender).await;
    assert_eq!(producer.max_message_size, Some(1024 * 1024));
    let producer_id = tracking_id(&producer).expect("a tracking id on the producer link");
    assert_eq!(
        producer
            .properties
            .as_ref()
            .and_then(|p| p.get(&Symbol::from("com.microsoft:timeout")))
            .cloned(),
        Some(Value::Uint(60_000)),
        "the client's timeout comes back, as the service echoes it"
    );

    let consumer = attach_answer(
        &mut raw,
        receiver_attach("consumer", 5, "hub/ConsumerGroups/$Default/Partitions/0"),
    )
    .await;
    let consumer_id = tracking_id(&consumer).expect("a tracking id on the consumer link");
    for id in [&producer_id, &consumer_id] {
        let (hex, gateway) = id.split_once('_').expect("<hex>_G<n>");
        assert_eq!(hex.len(), 32, "{id}");
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
            "{id}"
        );
        assert!(gateway.starts_with('G'), "{id}");
    }
    assert_ne!(producer_id, consumer_id, "each link has its own");
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_idle_timeout() {
    let idle = Duration::from_millis(200);
    let emulator = emulator_with_idle_timeout(idle).await;
    let mut raw = RawConnection::tcp(&emulator).await;
    let opened_at = Instant::now();
    let open = open(&mut raw).await;
    assert_eq!(open.idle_time_out, Some(200));
    eventually("the connection is registered", || {
        emulator.connection_count() == 1
    })
    .await;
    // The client sends nothing more, not even an empty frame.
    assert!(raw.closed_by_peer().await, "the emulator drops the client");
    assert!(
        opened_at.elapsed() >= idle,
        "dropped after {:?}, before the idle timeout",
        opened_at.elapsed()
    );
    eventually("the connection is gone", || {
        emulator.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn a_client_that_sends_empty_frames_is_kept() {
    let idle = Duration::from_millis(300);
    let emulator = emulator_with_idle_timeout(idle).await;
    let mut raw = RawConnection::tcp(&emulator).await;
    open(&mut raw).await;
    // Empty frames at a third of the timeout, for three timeouts.
    for _ in 0..9 {
        tokio::time::sleep(idle / 3).await;
        raw.write(&common::raw::frame(0, 0, &[])).await;
    }
    assert_eq!(
        emulator.connection_count(),
        1,
        "heartbeats keep the connection"
    );
}

#[tokio::test]
async fn the_idle_timeout_can_be_turned_off() {
    let emulator = emulator_with_idle_timeout(Duration::ZERO).await;
    let mut raw = RawConnection::tcp(&emulator).await;
    assert_eq!(open(&mut raw).await.idle_time_out, None);
}
