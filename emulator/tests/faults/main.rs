//! The fault controls of a running emulator, observed by a real AMQP client over TCP loopback.
//!
//! Timing: these tests run on tokio's real clock. The paused clock (`start_paused = true`) does
//! not work with real loopback IO when the emulator runs in the test's runtime: each time the
//! runtime parks to wait for a socket, auto-advance polls IO without blocking and then moves the
//! clock to the next timer, even when that poll delivered socket readiness. Tried here: the
//! first such jump lands on the connection's 240 s idle timeout, and `Session::begin` fails with
//! `ConnectionStopped(Closed)` at virtual 240 s. So delays are checked as orderings on the real
//! clock (the event is stored before its outcome, and the outcome comes no earlier than the
//! delay), every wait bounded by `tokio::time::timeout` with generous limits, and "does not
//! happen" means "not within [`QUIET`]".

#[path = "../common/mod.rs"]
mod common;

mod clear;
mod connections;
mod delayed;
mod detaches;
mod partitions;
mod rejections;
mod shutdown;
mod size_limits;
mod tokens;
mod withheld;

use std::future::Future;
use std::time::Duration;

use common::*;
use eventhubs_emulator::{
    partition_index_for_key, Emulator, EmulatorError, FaultCondition, FaultScope,
};
use fe2o3_amqp::connection::ConnectionStopReason;
use fe2o3_amqp::link::{DetachError, LinkStateError, SendError, Sender, SessionStopReason};
use fe2o3_amqp::types::messaging::{Data, Message, Outcome, SerializableBody};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::Sendable;
use tokio::time::{timeout, Instant};

/// How long a test waits to conclude that something does not happen. Loopback round trips
/// take well under a millisecond, so this is generous without slowing the suite much.
const QUIET: Duration = Duration::from_millis(300);

/// A running emulator with hubs `hub` (4 partitions) and `other` (2 partitions), and a client
/// authorized for both.
async fn setup() -> (Emulator, TestClient) {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .hub("other", 2)
        .start()
        .await
        .expect("emulator starts");
    let mut client = TestClient::connect_addr(emulator.local_addr()).await;
    client.authorize(&emulator, "hub").await;
    client.authorize(&emulator, "other").await;
    (emulator, client)
}

/// Sends one message and returns its outcome; the outcome must arrive within [`STEP`].
async fn send<T: SerializableBody>(
    sender: &mut Sender,
    message: impl Into<Sendable<T>>,
) -> Outcome {
    timeout(STEP, sender.send(message))
        .await
        .expect("outcome in time")
        .expect("send succeeds")
}

/// (deliveries, events_stored, rejected, duplicates_dropped)
fn counters(emulator: &Emulator) -> (u64, u64, u64, u64) {
    let c = emulator.counters();
    (
        c.deliveries,
        c.events_stored,
        c.rejected,
        c.duplicates_dropped,
    )
}

/// Asserts that `future` does not complete within [`QUIET`] and hands it back.
async fn assert_pending<F: Future + Unpin>(mut future: F, what: &str) -> F {
    let early = timeout(QUIET, &mut future).await;
    assert!(early.is_err(), "{what} completed but should not have");
    future
}

/// Waits until `condition` holds (e.g. the event is stored) while `pending` (a send) must not
/// complete.
async fn wait_while_pending<F>(pending: &mut F, what: &str, condition: impl FnMut() -> bool)
where
    F: Future + Unpin,
    F::Output: std::fmt::Debug,
{
    tokio::select! {
        biased;
        early = pending => panic!("the send completed before {what}: {early:?}"),
        _ = eventually(what, condition) => {}
    }
}

fn large_event(bytes: usize) -> Message<Data> {
    Message::builder()
        .data(Binary::from(vec![b'x'; bytes]))
        .build()
}

fn management_partitions(reply: &Reply) -> (i32, Vec<String>) {
    assert_eq!(reply.status, 200, "READ failed: {:?}", reply.description);
    let map = reply_map(reply);
    let count = match map.get("partition_count") {
        Some(Value::Int(n)) => *n,
        other => panic!("partition_count must be an int, got {other:?}"),
    };
    let ids = match map.get("partition_ids") {
        Some(Value::Array(ids)) => ids
            .0
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => panic!("partition ids are strings, not {other:?}"),
            })
            .collect(),
        other => panic!("partition_ids must be an array, got {other:?}"),
    };
    (count, ids)
}

async fn put_valid_token(client: &mut TestClient, emulator: &Emulator) -> Reply {
    let audience = client.audience("hub");
    let token = emulator.sas_token(&audience, Duration::from_secs(3600));
    client
        .put_token(
            &audience,
            &token,
            fe2o3_amqp::types::primitives::SimpleValue::String(
                "servicebus.windows.net:sastoken".into(),
            ),
        )
        .await
}

fn close_condition(error: fe2o3_amqp::connection::Error) -> String {
    match error {
        fe2o3_amqp::connection::Error::RemoteClosedWithError(e) => condition_symbol(&e.condition),
        other => panic!("expected a close with an error, got {other:?}"),
    }
}

fn detach_condition(error: &DetachError) -> String {
    match error {
        DetachError::RemoteClosedWithError(e) | DetachError::RemoteDetachedWithError(e) => {
            condition_symbol(&e.condition)
        }
        other => panic!("expected a detach with an error, got {other:?}"),
    }
}
