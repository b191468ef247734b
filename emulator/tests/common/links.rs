//! How links end: the error conditions of failed sends, receives, attaches and detaches.

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Delivery;

use super::*;

/// The condition of the error a link ended with, as a send reports it; None for other errors.
pub fn send_error_condition(error: &fe2o3_amqp::link::SendError) -> Option<String> {
    use fe2o3_amqp::link::{DetachError, LinkStateError, SendError};
    match error {
        SendError::Detached(
            DetachError::RemoteClosedWithError(e) | DetachError::RemoteDetachedWithError(e),
        )
        | SendError::LinkStateError(
            LinkStateError::RemoteClosedWithError(e) | LinkStateError::RemoteDetachedWithError(e),
        ) => Some(condition_symbol(&e.condition)),
        _ => None,
    }
}

/// The condition of the error a link ended with, as a receive reports it; None for other errors.
pub fn recv_error_condition(error: &fe2o3_amqp::link::RecvError) -> Option<String> {
    use fe2o3_amqp::link::{LinkStateError, RecvError};
    match error {
        RecvError::LinkStateError(
            LinkStateError::RemoteClosedWithError(e) | LinkStateError::RemoteDetachedWithError(e),
        ) => Some(condition_symbol(&e.condition)),
        _ => None,
    }
}

/// The condition of the error a remote detach carried; None for other detach outcomes.
pub fn detach_error_condition(error: &fe2o3_amqp::link::DetachError) -> Option<String> {
    use fe2o3_amqp::link::DetachError;
    match error {
        DetachError::RemoteClosedWithError(e) | DetachError::RemoteDetachedWithError(e) => {
            Some(condition_symbol(&e.condition))
        }
        _ => None,
    }
}

/// Waits for the emulator to end a sender link; returns the condition it gave.
pub async fn sender_ended_with(sender: &mut Sender) -> String {
    let error = tokio::time::timeout(STEP, sender.on_detach())
        .await
        .expect("the link ends in time");
    detach_error_condition(&error)
        .unwrap_or_else(|| panic!("the link ended without an error: {error:?}"))
}

/// Waits for the emulator to end a receiver link; returns the condition it gave.
pub async fn receiver_ended_with(receiver: &mut Receiver) -> String {
    let result = tokio::time::timeout(STEP, receiver.recv::<Body<Value>>())
        .await
        .expect("the link ends in time");
    match result {
        Ok(delivery) => panic!(
            "expected the link to end, got a delivery: {:?}",
            delivery.message()
        ),
        Err(e) => recv_error_condition(&e)
            .unwrap_or_else(|| panic!("the link ended without an error: {e:?}")),
    }
}

/// The condition a sender attach was refused with: the attach completes, then a detach with
/// the error follows (fe2o3 may also report that detach from the attach itself).
pub async fn sender_refused(attach: Result<Sender, fe2o3_amqp::link::SenderAttachError>) -> String {
    use fe2o3_amqp::link::SenderAttachError;
    match attach {
        Ok(mut sender) => sender_ended_with(&mut sender).await,
        Err(SenderAttachError::RemoteClosedWithError(e)) => condition_symbol(&e.condition),
        Err(e) => panic!("attach failed without a remote error: {e:?}"),
    }
}

/// The condition a receiver attach was refused with (see [`sender_refused`]).
pub async fn receiver_refused(
    attach: Result<Receiver, fe2o3_amqp::link::ReceiverAttachError>,
) -> String {
    use fe2o3_amqp::link::ReceiverAttachError;
    match attach {
        Ok(mut receiver) => receiver_ended_with(&mut receiver).await,
        Err(ReceiverAttachError::RemoteClosedWithError(e)) => condition_symbol(&e.condition),
        Err(e) => panic!("attach failed without a remote error: {e:?}"),
    }
}

/// Attaches a sender to `address` on the client's session, bounded by [`STEP`].
pub async fn try_sender(
    client: &mut TestClient,
    name: &str,
    address: &str,
) -> Result<Sender, fe2o3_amqp::link::SenderAttachError> {
    tokio::time::timeout(STEP, Sender::attach(&mut client.session, name, address))
        .await
        .expect("attach answered in time")
}

/// Receives one delivery within [`STEP`] and accepts it.
pub async fn recv_one(receiver: &mut Receiver) -> Message<Body<Value>> {
    let delivery: Delivery<Body<Value>> = tokio::time::timeout(STEP, receiver.recv())
        .await
        .expect("a delivery in time")
        .expect("a delivery");
    receiver
        .accept(&delivery)
        .await
        .expect("accept the delivery");
    delivery.into_message()
}

/// Sends `count` plain events (bodies `"{prefix}{i}"`, property `index` = i) to `address` and
/// asserts each is accepted.
pub async fn send_events(sender: &mut Sender, prefix: &str, count: usize) {
    for i in 0..count {
        let outcome = tokio::time::timeout(
            STEP,
            sender.send(event(&format!("{prefix}{i}"), i as i64, None)),
        )
        .await
        .expect("send in time")
        .expect("send");
        assert_eq!(rejected_with(&outcome), None, "event {prefix}{i} accepted");
    }
}
