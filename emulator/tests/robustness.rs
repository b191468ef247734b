//! Bad peers end only their own connection: garbage, malformed frames, half-finished handshakes
//! and vanished clients. Other clients keep working and nothing in the emulator panics.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use common::raw::{self, RawConnection};
use common::*;
use eventhubs_emulator::Emulator;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::Handle;
use fe2o3_amqp::types::performatives::{Close, Flow, Performative};
use tokio::io::AsyncWriteExt;

/// Panics anywhere in this test binary, emulator tasks included (tokio catches those, so they
/// would not fail a test by themselves).
static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

fn count_panics() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn assert_no_panics() {
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
}

/// An emulator without authorization (raw peers skip `$cbs`).
async fn open_emulator() -> Emulator {
    count_panics();
    Emulator::builder()
        .hub("hub", 4)
        .require_authorization(false)
        .start()
        .await
        .expect("emulator starts")
}

/// Sends one event tagged `tag` to partition 0 and reads it back on a new consumer link.
async fn round_trip(client: &mut TestClient, emulator: &Emulator, tag: &str) {
    let next = emulator.event_count("hub", "0").unwrap();
    let mut sender = Sender::attach(
        &mut client.session,
        format!("send-{tag}"),
        "hub/Partitions/0",
    )
    .await
    .expect("sender attaches");
    let outcome = tokio::time::timeout(STEP, sender.send(event(tag, 0, None)))
        .await
        .expect("send in time")
        .expect("send");
    assert_eq!(rejected_with(&outcome), None);
    let filter = format!("amqp.annotation.x-opt-sequence-number >= {next}");
    let mut receiver = receiver_builder("hub/ConsumerGroups/$Default/Partitions/0", Some(&filter))
        .name(format!("recv-{tag}"))
        .attach(&mut client.session)
        .await
        .expect("receiver attaches");
    assert_eq!(data_body(&recv_one(&mut receiver).await), tag.as_bytes());
}

/// Checks that a client connected before the trouble and one connected after both work.
async fn others_still_work(emulator: &Emulator, before: &mut TestClient) {
    round_trip(before, emulator, "before").await;
    let mut after = TestClient::connect(emulator).await;
    round_trip(&mut after, emulator, "after").await;
    assert_no_panics();
}

#[tokio::test]
async fn garbage_instead_of_a_protocol_header_ends_only_that_connection() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let mut raw = RawConnection::tcp(&emulator).await;
    raw.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert!(raw.closed_by_peer().await, "the emulator closes the socket");
    others_still_work(&emulator, &mut before).await;
}

#[tokio::test]
async fn malformed_sasl_frame_after_a_valid_header_ends_only_that_connection() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let mut raw = RawConnection::tcp(&emulator).await;
    raw.write(raw::SASL_HEADER).await;
    raw.write(&raw::frame(1, 0, &[0xff, 0x13, 0x37, 0x00, 0x42]))
        .await;
    assert!(raw.closed_by_peer().await, "the emulator closes the socket");
    others_still_work(&emulator, &mut before).await;
}

#[tokio::test]
async fn malformed_frame_instead_of_open_ends_only_that_connection() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let mut raw = RawConnection::tcp(&emulator).await;
    raw.sasl_anonymous().await;
    raw.write(raw::AMQP_HEADER).await;
    // A described list with a descriptor no performative has, then bytes that decode to nothing.
    raw.write(&raw::frame(
        0,
        0,
        &[0x00, 0x53, 0x7f, 0xc0, 0x03, 0x01, 0xee, 0xee],
    ))
    .await;
    raw.expect_header(raw::AMQP_HEADER).await;
    // The emulator answers with its open and a close, and ends the socket once the close is
    // answered (a peer that never answers is dropped at the 30 s handshake deadline).
    raw.wait_for(|p| matches!(p, Performative::Close(_)).then_some(()))
        .await;
    raw.send(Performative::Close(Close { error: None }), &[])
        .await;
    assert!(raw.closed_by_peer().await, "the emulator closes the socket");
    others_still_work(&emulator, &mut before).await;
}

#[tokio::test]
async fn frame_shorter_than_its_header_ends_only_that_connection() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let mut raw = RawConnection::handshake(&emulator).await;
    raw.write(&[0, 0, 0, 4, 2, 0, 0, 0]).await;
    assert!(raw.closed_by_peer().await, "the emulator closes the socket");
    others_still_work(&emulator, &mut before).await;
}

#[tokio::test]
async fn sasl_frame_shorter_than_its_header_ends_only_that_connection() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let mut raw = RawConnection::tcp(&emulator).await;
    raw.write(raw::SASL_HEADER).await;
    raw.write(&[0, 0, 0, 6, 2, 1]).await;
    assert!(raw.closed_by_peer().await, "the emulator closes the socket");
    others_still_work(&emulator, &mut before).await;
}

#[tokio::test]
async fn frame_above_the_max_frame_size_ends_only_that_connection() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let mut raw = RawConnection::handshake(&emulator).await;
    // Announces 16 MiB; the emulator allows 64 KiB frames.
    raw.write(&[0x01, 0x00, 0x00, 0x00, 2, 0, 0, 0, 0x00, 0x53, 0x14])
        .await;
    assert!(raw.closed_by_peer().await, "the emulator closes the socket");
    others_still_work(&emulator, &mut before).await;
}

#[tokio::test]
async fn garbage_frame_on_an_open_session_ends_only_that_connection() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let mut raw = RawConnection::handshake(&emulator).await;
    raw.write(&raw::frame(0, 0, &[0xde, 0xad, 0xbe, 0xef, 0x00, 0x01]))
        .await;
    assert!(raw.closed_by_peer().await, "the emulator closes the socket");
    others_still_work(&emulator, &mut before).await;
}

#[tokio::test]
async fn transfer_on_an_unattached_handle_stores_nothing_and_harms_no_one() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let mut raw = RawConnection::handshake(&emulator).await;
    raw.send(
        Performative::Transfer(raw::transfer(7, 0)),
        &encode(event("orphan", 0, None)),
    )
    .await;
    // fe2o3 drops such a transfer without ending the session (AMQP asks for an end with
    // amqp:session:unattached-handle); what matters here is that nothing is stored and that
    // everyone else is unaffected.
    others_still_work(&emulator, &mut before).await;
    let stored = emulator.events("hub", "0").unwrap();
    assert_eq!(stored.len(), 2, "only the two round trips are stored");
    assert!(stored.iter().all(|e| &e.body().unwrap()[..] != b"orphan"));
}

#[tokio::test]
async fn connection_half_closed_mid_handshake_is_closed_by_the_emulator() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let mut raw = RawConnection::tcp(&emulator).await;
    raw.write(raw::SASL_HEADER).await;
    // Half of a sasl-init frame, then end of stream from the client.
    let init = raw::frame(1, 0, &[0x00, 0x53, 0x41, 0xc0, 0x0c, 0x01, 0xa3, 0x09]);
    raw.write(&init[..init.len() - 3]).await;
    raw.stream.shutdown().await.expect("half-close");
    assert!(raw.closed_by_peer().await, "the emulator closes its side");
    others_still_work(&emulator, &mut before).await;
}

#[tokio::test]
async fn connection_dropped_mid_handshake_leaves_no_connection_behind() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let baseline = emulator.connection_count();
    {
        let mut raw = RawConnection::tcp(&emulator).await;
        raw.sasl_anonymous().await;
        raw.write(raw::AMQP_HEADER).await;
        // Dropped before its open.
    }
    {
        let mut raw = RawConnection::tcp(&emulator).await;
        raw.write(&raw::SASL_HEADER[..5]).await;
    }
    others_still_work(&emulator, &mut before).await;
    eventually("only the working clients stay connected", || {
        emulator.connection_count() == baseline + 1
    })
    .await;
}

#[tokio::test]
async fn client_vanishing_with_links_open_ends_only_its_connection() {
    let emulator = open_emulator().await;
    let mut before = TestClient::connect(&emulator).await;
    let baseline = emulator.connection_count();

    let mut raw = RawConnection::handshake(&emulator).await;
    raw.send(
        Performative::Attach(raw::sender_attach("doomed-sender", 0, "hub/Partitions/0")),
        &[],
    )
    .await;
    raw.send(
        Performative::Attach(raw::receiver_attach(
            "doomed-receiver",
            1,
            "hub/ConsumerGroups/$Default/Partitions/0",
        )),
        &[],
    )
    .await;
    for handle in [0, 1] {
        raw.wait_for(|p| match p {
            Performative::Attach(a) if a.handle == Handle(handle) => Some(()),
            _ => None,
        })
        .await;
    }
    // Credit for the receiving link, so the emulator has deliveries in flight to a dead peer.
    let flow = Flow {
        next_incoming_id: Some(0),
        incoming_window: 65536,
        next_outgoing_id: 0,
        outgoing_window: 65536,
        handle: Some(Handle(1)),
        delivery_count: Some(0),
        link_credit: Some(100),
        available: None,
        drain: false,
        echo: false,
        properties: None,
    };
    raw.send(Performative::Flow(flow), &[]).await;
    eventually("the raw client is connected", || {
        emulator.connection_count() == baseline + 1
    })
    .await;

    drop(raw);
    let mut producer = Sender::attach(&mut before.session, "live-producer", "hub/Partitions/0")
        .await
        .expect("sender attaches");
    send_events(&mut producer, "while-gone", 3).await;
    eventually("the vanished connection is gone", || {
        emulator.connection_count() == baseline
    })
    .await;
    others_still_work(&emulator, &mut before).await;
}

#[tokio::test]
async fn unknown_address_is_refused_not_found_and_the_session_stays_usable() {
    let emulator = open_emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let attach = try_sender(&mut client, "nowhere-sender", "nowhere/at/all").await;
    assert_eq!(sender_refused(attach).await, "amqp:not-found");
    let attach = tokio::time::timeout(
        STEP,
        Receiver::builder()
            .name("nowhere-receiver")
            .source("nowhere/at/all")
            .target("here")
            .attach(&mut client.session),
    )
    .await
    .expect("attach answered in time");
    assert_eq!(receiver_refused(attach).await, "amqp:not-found");

    round_trip(&mut client, &emulator, "same-session").await;
    assert_no_panics();
}
