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

mod common;

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

// ---------------------------------------------------------------------------------------------
// reject_next

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

// ---------------------------------------------------------------------------------------------
// withhold_next

#[tokio::test]
async fn withhold_next_stores_the_event_but_never_answers_the_sender() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/3").await;
    emulator.faults().withhold_next(1, FaultScope::Any);

    let mut withheld = Box::pin(sender.send(event("withheld", 0, None)));
    wait_while_pending(&mut withheld, "the withheld event is stored", || {
        emulator.event_count("hub", "3").unwrap() == 1
    })
    .await;
    let _withheld = assert_pending(withheld, "the withheld send").await;
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn withhold_next_answers_later_sends_but_still_not_the_withheld_one() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/3").await;
    emulator.faults().withhold_next(1, FaultScope::Any);

    let withheld = timeout(STEP, sender.send_batchable(event("withheld", 0, None)))
        .await
        .expect("transfer in time")
        .expect("transfer sent");
    for i in 1..3 {
        let outcome = send(&mut sender, event("answered", i, None)).await;
        assert_eq!(rejected_with(&outcome), None, "send {i}");
    }
    // Dispositions of a link come in order: the later ones arrived, so the withheld one will not.
    let _withheld = assert_pending(Box::pin(withheld), "the withheld delivery's outcome").await;
    assert_eq!(emulator.event_count("hub", "3").unwrap(), 3);
    assert_eq!(counters(&emulator), (3, 3, 0, 0));
}

#[tokio::test]
async fn withhold_next_scoped_to_a_partition_answers_other_partitions() {
    let (emulator, mut client) = setup().await;
    let mut to_0 = client.sender("hub/Partitions/0").await;
    let mut to_1 = client.sender("hub/Partitions/1").await;
    emulator
        .faults()
        .withhold_next(1, FaultScope::partition("hub", "1"));

    let outcome = send(&mut to_0, event("p0", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    let mut withheld = Box::pin(to_1.send(event("p1", 0, None)));
    wait_while_pending(&mut withheld, "the withheld event is stored", || {
        emulator.event_count("hub", "1").unwrap() == 1
    })
    .await;
    let _withheld = assert_pending(withheld, "the withheld send to partition 1").await;
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 1);
    assert_eq!(counters(&emulator), (2, 2, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// delay_dispositions

#[tokio::test]
async fn delay_dispositions_stores_at_once_and_answers_no_earlier_than_the_delay() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let delay = Duration::from_millis(400);
    emulator.faults().delay_dispositions(delay);

    let start = Instant::now();
    let mut pending = Box::pin(sender.send(event("slow", 0, None)));
    // The event is stored while its outcome is still on the way.
    wait_while_pending(&mut pending, "the delayed event is stored", || {
        emulator.event_count("hub", "0").unwrap() == 1
    })
    .await;
    let outcome = timeout(delay + STEP, pending)
        .await
        .expect("outcome after the delay")
        .expect("send succeeds");
    let elapsed = start.elapsed();
    assert_eq!(rejected_with(&outcome), None);
    assert!(
        elapsed >= delay,
        "outcome after {elapsed:?}, before the {delay:?} delay"
    );
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn delay_dispositions_zero_ends_the_delay() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let faults = emulator.faults();
    faults.delay_dispositions(Duration::from_secs(3600));
    faults.delay_dispositions(Duration::ZERO);

    // With the hour-long delay still in force this would time out.
    let outcome = send(&mut sender, event("prompt", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn delay_dispositions_does_not_hold_up_rejections() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let faults = emulator.faults();
    faults.delay_dispositions(Duration::from_secs(3600));
    faults.reject_next(1, FaultCondition::ServerBusy, FaultScope::Any);

    let outcome = send(&mut sender, event("refused", 0, None)).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("com.microsoft:server-busy")
    );
    assert_eq!(counters(&emulator), (1, 0, 1, 0));
}

// ---------------------------------------------------------------------------------------------
// detach_senders

fn detach_condition(error: &DetachError) -> String {
    match error {
        DetachError::RemoteClosedWithError(e) | DetachError::RemoteDetachedWithError(e) => {
            condition_symbol(&e.condition)
        }
        other => panic!("expected a detach with an error, got {other:?}"),
    }
}

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

// ---------------------------------------------------------------------------------------------
// close_connections / drop_connections

fn close_condition(error: fe2o3_amqp::connection::Error) -> String {
    match error {
        fe2o3_amqp::connection::Error::RemoteClosedWithError(e) => condition_symbol(&e.condition),
        other => panic!("expected a close with an error, got {other:?}"),
    }
}

#[tokio::test]
async fn close_connections_closes_clients_with_connection_forced() {
    let (emulator, mut client) = setup().await;
    let _sender = client.sender("hub/Partitions/0").await;

    assert_eq!(emulator.faults().close_connections(), 1);
    let result = timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection closes in time");
    assert_eq!(
        close_condition(result.expect_err("closed with an error")),
        "amqp:connection:forced"
    );
    eventually("the emulator forgets the connection", || {
        emulator.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn close_connections_fails_the_next_send() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator.faults().close_connections();
    timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection closes in time")
        .expect_err("closed with an error");

    let result = timeout(STEP, sender.send(event("late", 0, None)))
        .await
        .expect("send ends in time");
    match result.expect_err("a send on a closed connection fails") {
        SendError::LinkStateError(LinkStateError::SessionStopped(
            SessionStopReason::ConnectionStopped(ConnectionStopReason::RemoteClosedWithError(e)),
        )) => assert_eq!(condition_symbol(&e.condition), "amqp:connection:forced"),
        other => panic!("expected the connection's close to stop the link, got {other:?}"),
    }
    assert_eq!(counters(&emulator), (0, 0, 0, 0));
}

#[tokio::test]
async fn close_connections_with_uses_the_given_condition() {
    let (emulator, mut client) = setup().await;
    assert_eq!(
        emulator
            .faults()
            .close_connections_with(FaultCondition::Other("x:custom-close".into())),
        1
    );
    let result = timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection closes in time");
    assert_eq!(
        close_condition(result.expect_err("closed with an error")),
        "x:custom-close"
    );
}

#[tokio::test]
async fn close_connections_lets_new_connections_work() {
    let (emulator, mut client) = setup().await;
    emulator.faults().close_connections();
    timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection closes in time")
        .expect_err("closed with an error");

    let mut fresh = TestClient::connect_addr(emulator.local_addr()).await;
    fresh.authorize(&emulator, "hub").await;
    let mut sender = fresh.sender("hub/Partitions/2").await;
    let outcome = send(&mut sender, event("after", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", "2").unwrap(), 1);
    assert_eq!(emulator.connection_count(), 1);
    fresh.close().await;
}

#[tokio::test]
async fn close_connections_with_no_clients_closes_none() {
    let emulator = emulator().await;
    assert_eq!(emulator.faults().close_connections(), 0);
    assert_eq!(emulator.faults().drop_connections(), 0);
}

#[tokio::test]
async fn drop_connections_ends_the_transport_without_an_amqp_close() {
    let (emulator, mut client) = setup().await;
    assert_eq!(emulator.faults().drop_connections(), 1);
    let result = timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection ends in time");
    match result {
        Err(fe2o3_amqp::connection::Error::TransportError(fe2o3_amqp::transport::Error::Io(_))) => {
        }
        other => panic!("expected an I/O error and no close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn drop_connections_fails_the_next_send() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator.faults().drop_connections();
    let _ = timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection ends in time");

    let result = timeout(STEP, sender.send(event("late", 0, None)))
        .await
        .expect("send ends in time");
    // fe2o3 reports a connection whose transport failed as stopped `Closed`, not as closed by the
    // remote (which it would be with a close frame).
    match result {
        Err(SendError::LinkStateError(LinkStateError::SessionStopped(
            SessionStopReason::ConnectionStopped(ConnectionStopReason::Closed),
        ))) => {}
        other => panic!("expected the link to stop with its connection, got {other:?}"),
    }
    assert_eq!(counters(&emulator), (0, 0, 0, 0));
}

#[tokio::test]
async fn drop_connections_unregisters_them_and_keeps_serving_new_ones() {
    let (emulator, mut client) = setup().await;
    assert_eq!(emulator.connection_count(), 1);
    emulator.faults().drop_connections();
    let _ = timeout(STEP, client.connection.on_close())
        .await
        .expect("the connection ends in time");
    eventually("the emulator forgets the dropped connection", || {
        emulator.connection_count() == 0
    })
    .await;

    let mut fresh = TestClient::connect_addr(emulator.local_addr()).await;
    fresh.authorize(&emulator, "hub").await;
    let mut sender = fresh.sender("hub/Partitions/1").await;
    let outcome = send(&mut sender, event("after", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", "1").unwrap(), 1);
    assert_eq!(emulator.connection_count(), 1);
    fresh.close().await;
}

// ---------------------------------------------------------------------------------------------
// reject_tokens_for

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

#[tokio::test]
async fn reject_tokens_for_answers_401_during_the_period_and_202_after() {
    let emulator = emulator().await;
    let mut client = TestClient::connect_addr(emulator.local_addr()).await;
    let period = Duration::from_millis(800);
    let start = Instant::now();
    emulator.faults().reject_tokens_for(period);

    let reply = put_valid_token(&mut client, &emulator).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.condition.as_deref(), Some("amqp:unauthorized-access"));

    // Ask again until accepted; the first acceptance must not come before the period ends.
    let accepted_after = timeout(period + STEP, async {
        loop {
            let reply = put_valid_token(&mut client, &emulator).await;
            if reply.status == 202 {
                return start.elapsed();
            }
            assert_eq!(reply.status, 401, "{:?}", reply.description);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("tokens are accepted again after the period");
    assert!(
        accepted_after >= period,
        "accepted after {accepted_after:?}, inside the {period:?} period"
    );
}

#[tokio::test]
async fn reject_tokens_for_zero_ends_the_rejection_at_once() {
    let emulator = emulator().await;
    let mut client = TestClient::connect_addr(emulator.local_addr()).await;
    let faults = emulator.faults();
    faults.reject_tokens_for(Duration::from_secs(3600));
    assert_eq!(put_valid_token(&mut client, &emulator).await.status, 401);

    faults.reject_tokens_for(Duration::ZERO);
    assert_eq!(put_valid_token(&mut client, &emulator).await.status, 202);
}

#[tokio::test]
async fn reject_tokens_for_leaves_links_unauthorized() {
    let emulator = emulator().await;
    let mut client = TestClient::connect_addr(emulator.local_addr()).await;
    emulator
        .faults()
        .reject_tokens_for(Duration::from_secs(3600));
    assert_eq!(put_valid_token(&mut client, &emulator).await.status, 401);

    // The emulator refuses the link by completing the attach and detaching at once with the
    // error; fe2o3 reports that either as a failed attach or as a detach right after it.
    let attached = timeout(
        STEP,
        Sender::attach(&mut client.session, "unauthorized", "hub/Partitions/0"),
    )
    .await
    .expect("attach ends in time");
    let condition = match attached {
        Err(fe2o3_amqp::link::SenderAttachError::RemoteClosedWithError(e)) => {
            condition_symbol(&e.condition)
        }
        Err(other) => panic!("unexpected attach error {other:?}"),
        Ok(mut sender) => {
            let error = timeout(STEP, sender.on_detach())
                .await
                .expect("the refused link is detached in time");
            detach_condition(&error)
        }
    };
    assert_eq!(condition, "amqp:unauthorized-access");
}

// ---------------------------------------------------------------------------------------------
// set_max_message_size

#[tokio::test]
async fn set_max_message_size_rejects_larger_deliveries_on_links_attached_before() {
    let (emulator, mut client) = setup().await;
    let mut before = client.sender("hub/Partitions/0").await;
    assert_eq!(
        before.max_message_size(),
        Some(eventhubs_emulator::DEFAULT_MAX_MESSAGE_SIZE)
    );

    emulator.faults().set_max_message_size(1000);
    // The link keeps what it announced at attach...
    assert_eq!(
        before.max_message_size(),
        Some(eventhubs_emulator::DEFAULT_MAX_MESSAGE_SIZE)
    );
    // ...so the client sends 2000 bytes, and the emulator refuses them.
    let outcome = send(&mut before, large_event(2000)).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("amqp:link:message-size-exceeded")
    );
    let outcome = send(&mut before, large_event(500)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 1);
    assert_eq!(counters(&emulator), (2, 1, 1, 0));
}

#[tokio::test]
async fn set_max_message_size_is_announced_on_links_attached_after() {
    let (emulator, mut client) = setup().await;
    emulator.faults().set_max_message_size(1000);
    let after = client.sender("hub/Partitions/0").await;
    assert_eq!(after.max_message_size(), Some(1000));
}

#[tokio::test]
async fn set_max_message_size_measures_a_batch_as_a_whole() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator.faults().set_max_message_size(1000);

    // Each event is small; together they are above the limit.
    let events = (0..5)
        .map(|_| large_event(300))
        .collect::<Vec<Message<Data>>>();
    let outcome = send(&mut sender, batch(events, None)).await;
    assert_eq!(
        rejected_with(&outcome).as_deref(),
        Some("amqp:link:message-size-exceeded")
    );
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 0);
    assert_eq!(counters(&emulator), (1, 0, 1, 0));
}

// ---------------------------------------------------------------------------------------------
// grow_partitions

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

// ---------------------------------------------------------------------------------------------
// clear

#[tokio::test]
async fn clear_ends_rejections() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    let faults = emulator.faults();
    faults.reject_next(5, FaultCondition::ServerBusy, FaultScope::Any);
    faults.reject_next(
        5,
        FaultCondition::Timeout,
        FaultScope::partition("hub", "0"),
    );
    faults.clear();

    let outcome = send(&mut sender, event("e", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn clear_ends_withholding() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator.faults().withhold_next(5, FaultScope::Any);
    emulator.faults().clear();

    let outcome = send(&mut sender, event("e", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn clear_ends_delays() {
    let (emulator, mut client) = setup().await;
    let mut sender = client.sender("hub/Partitions/0").await;
    emulator
        .faults()
        .delay_dispositions(Duration::from_secs(3600));
    emulator.faults().clear();

    let outcome = send(&mut sender, event("e", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(counters(&emulator), (1, 1, 0, 0));
}

#[tokio::test]
async fn clear_ends_token_rejection() {
    let emulator = emulator().await;
    let mut client = TestClient::connect_addr(emulator.local_addr()).await;
    emulator
        .faults()
        .reject_tokens_for(Duration::from_secs(3600));
    emulator.faults().clear();
    assert_eq!(put_valid_token(&mut client, &emulator).await.status, 202);
}

#[tokio::test]
async fn clear_keeps_the_max_message_size_and_grown_partitions() {
    let (emulator, mut client) = setup().await;
    let faults = emulator.faults();
    faults.set_max_message_size(1000);
    faults.grow_partitions("hub", 6).unwrap();
    faults.clear();

    let sender = client.sender("hub/Partitions/5").await;
    assert_eq!(sender.max_message_size(), Some(1000));
}

// ---------------------------------------------------------------------------------------------
// shutdown and drop

#[tokio::test]
async fn shutdown_closes_connected_clients_with_connection_forced() {
    let (emulator, mut client) = setup().await;
    let _sender = client.sender("hub/Partitions/0").await;

    timeout(STEP, emulator.shutdown())
        .await
        .expect("shutdown returns in time");
    let result = timeout(STEP, client.connection.on_close())
        .await
        .expect("the client sees the close in time");
    assert_eq!(
        close_condition(result.expect_err("closed with an error")),
        "amqp:connection:forced"
    );
}

#[tokio::test]
async fn shutdown_without_clients_returns_and_a_new_emulator_starts() {
    let emulator = emulator().await;
    let first = emulator.local_addr();
    timeout(STEP, emulator.shutdown())
        .await
        .expect("shutdown returns in time");

    let second = Emulator::builder()
        .hub("hub", 2)
        .start()
        .await
        .expect("a second emulator starts");
    assert_ne!(second.local_addr(), first);
    let mut client = TestClient::connect_addr(second.local_addr()).await;
    client.authorize(&second, "hub").await;
    let mut sender = client.sender("hub/Partitions/1").await;
    let outcome = send(&mut sender, event("second", 0, None)).await;
    assert_eq!(rejected_with(&outcome), None);
    assert_eq!(second.event_count("hub", "1").unwrap(), 1);
    client.close().await;
    timeout(STEP, second.shutdown())
        .await
        .expect("shutdown returns in time");
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let emulator = emulator().await;
    let addr = emulator.local_addr();
    timeout(STEP, emulator.shutdown())
        .await
        .expect("shutdown returns in time");
    let connected = timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect ends in time");
    assert!(connected.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn dropping_the_emulator_stops_its_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let emulator = emulator().await;
    let addr = emulator.local_addr();
    drop(emulator);

    // The listener goes away when the accept loop next runs: a connect is refused, or a
    // connection the kernel took just before is reset or closed without a byte.
    let ended = timeout(STEP, async {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => "refused",
            Ok(mut stream) => {
                // The peer may be gone already: only the read's answer matters.
                let _ = stream.write_all(b"AMQP\x03\x01\x00\x00").await;
                let mut buf = [0u8; 8];
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => "closed",
                    Ok(_) => "answered",
                }
            }
        }
    })
    .await
    .expect("connect and read end in time");
    assert_ne!(ended, "answered", "a dropped emulator still serves");
}

#[tokio::test]
async fn dropping_the_emulator_closes_connected_clients() {
    let (emulator, mut client) = setup().await;
    drop(emulator);
    let result = timeout(STEP, client.connection.on_close())
        .await
        .expect("the client sees the connection end in time");
    assert_eq!(
        close_condition(result.expect_err("closed with an error")),
        "amqp:connection:forced"
    );
}
