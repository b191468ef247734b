//! A sending link that several sends may use at once: each send holds the link only while its
//! delivery is handed to the session, then awaits its outcome without it.

use fe2o3_amqp::link::Sender;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{Batch, Body, Data, Message, MessageAnnotations};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Value};
use fe2o3_amqp::Sendable;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Mutex;

use super::errors::{from_outcome, from_send_error, Broken, Failure};
use super::message::{BATCH_MESSAGE_FORMAT, PARTITION_KEY_ANNOTATION};
use crate::error::{Error, ErrorKind};
use crate::idempotence::PublishingGrant;

/// A batch ready for the wire. Built once; retries send the same payload.
pub(crate) struct Payload(Sendable<Body<Value>>);

impl Payload {
    /// The envelope (format 0x80013700) of pre-encoded events, with the partition key
    /// annotation when there is one.
    pub(crate) fn batch(partition_key: Option<&str>, encoded_events: Vec<Vec<u8>>) -> Self {
        let sections: Batch<Data> = encoded_events
            .into_iter()
            .map(|e| Data(Binary::from(e)))
            .collect();
        let annotations = partition_key.map(|key| {
            MessageAnnotations::builder()
                .insert(
                    OwnedKey::Symbol(Symbol::from(PARTITION_KEY_ANNOTATION)),
                    Value::String(key.to_string()),
                )
                .build()
        });
        let envelope = Message {
            header: None,
            delivery_annotations: None,
            message_annotations: annotations,
            properties: None,
            application_properties: None,
            body: Body::<Value>::Data(sections),
            footer: None,
        };
        Self(
            Sendable::builder()
                .message(envelope)
                .message_format(BATCH_MESSAGE_FORMAT)
                .build(),
        )
    }

    /// The encoded events back (stamped, if they were), for their buffers to be reused.
    pub(crate) fn into_encoded(self) -> Vec<Vec<u8>> {
        match self.0.message.body {
            Body::Data(sections) => sections
                .into_iter()
                .map(|Data(binary)| binary.into_vec())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The encoded size of the delivery.
    #[cfg(test)]
    pub(crate) fn encoded_size(&self) -> usize {
        use fe2o3_amqp::types::messaging::message::__private::Serializable;
        serde_amqp::to_vec(&Serializable(&self.0.message))
            .map(|v| v.len())
            .unwrap_or(0)
    }
}

/// Whether any try of a send handed its delivery to the connection and never heard a definite
/// outcome (accepted or refused) for it: then the service may have stored the batch, whatever
/// later tries say. Shared by the tries of one send.
#[derive(Debug, Default)]
pub(crate) struct Uncertainty(AtomicBool);

impl Uncertainty {
    /// Whether some try may have reached the service without a definite outcome.
    pub(crate) fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Armed while a delivery is with the connection and its outcome is not known: dropped armed
/// (the outcome was lost, or the try was abandoned at its timeout), it records the
/// uncertainty.
struct Unanswered<'a> {
    uncertainty: &'a Uncertainty,
    armed: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.uncertainty.0.store(true, Ordering::SeqCst);
        }
    }
}

/// How often a send in flight checks that its connection is still there. Only while a
/// delivery awaits its outcome: an idle producer does not wake up for this.
const LIVENESS_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

async fn wait_until_lost(is_lost: impl Fn() -> bool) {
    loop {
        tokio::time::sleep(LIVENESS_CHECK).await;
        if is_lost() {
            return;
        }
    }
}

pub(crate) struct AmqpSender {
    link: Mutex<Sender>,
    max_message_size: Option<u64>,
    /// What the service granted, for an idempotent producer link.
    grant: Option<PublishingGrant>,
    generation: u64,
    path: String,
}

impl std::fmt::Debug for AmqpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSender")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .field("max_message_size", &self.max_message_size)
            .finish()
    }
}

impl AmqpSender {
    pub(crate) fn new(
        sender: Sender,
        generation: u64,
        path: String,
        grant: Option<PublishingGrant>,
    ) -> Self {
        Self {
            max_message_size: sender.max_message_size(),
            grant,
            link: Mutex::new(sender),
            generation,
            path,
        }
    }

    /// The max-message-size the service announced for this link.
    pub(crate) fn max_message_size(&self) -> Option<u64> {
        self.max_message_size
    }

    /// The idempotent publishing state the service granted at attach, for such a link.
    pub(crate) fn publishing_grant(&self) -> Option<PublishingGrant> {
        self.grant
    }

    /// Which connection this link lives on.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Sends one delivery and waits for the service's outcome, or until `is_lost` says the
    /// connection under the link is gone: fe2o3 does not end a pending outcome when its
    /// connection dies, and waiting out the try timeout would stall every send in flight.
    ///
    /// A failure after the delivery was handed over without a definite outcome is marked as
    /// possibly published, and recorded in `uncertainty` (also when this future is dropped
    /// while it waits, as the retry policy does at a try's timeout).
    pub(crate) async fn send(
        &self,
        payload: &Payload,
        is_lost: impl Fn() -> bool,
        uncertainty: &Uncertainty,
    ) -> Result<(), Failure> {
        let in_flight = {
            let mut link = self.link.lock().await;
            link.send_batchable_ref(&payload.0)
                .await
                .map_err(|e| from_send_error(&e))?
        };
        let mut unanswered = Unanswered {
            uncertainty,
            armed: true,
        };
        let outcome = tokio::select! {
            outcome = in_flight => outcome.map_err(|e| from_send_error(&e)),
            _ = wait_until_lost(is_lost) => Err(Failure::new(
                Error::new(
                    ErrorKind::ConnectionLost,
                    "the connection was lost while the batch was in flight",
                ),
                Broken::Connection,
            )),
        };
        match outcome {
            // Accepted or refused by the service: a definite answer.
            Ok(outcome) => {
                unanswered.armed = false;
                from_outcome(outcome)
            }
            Err(mut failure) => {
                failure.error = failure.error.may_have_reached_the_service();
                Err(failure)
            }
        }
    }

    /// Closes the link (best effort).
    pub(crate) async fn close(self) {
        let _ = self.link.into_inner().close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchTarget, EventDataBatch};
    use crate::event::EventData;

    fn exact(target: BatchTarget, bodies: &[usize]) {
        let mut batch = EventDataBatch::new(target.clone(), usize::MAX);
        for (i, len) in bodies.iter().enumerate() {
            let event = EventData::from(vec![b'x'; *len]).with_property("index", i as i64);
            batch.try_add(event).expect("fits");
        }
        let expected = batch.size_in_bytes();
        let (target, encoded, _) = batch.into_parts();
        let key = match &target {
            BatchTarget::PartitionKey(k) => Some(k.as_str()),
            _ => None,
        };
        assert_eq!(
            Payload::batch(key, encoded).encoded_size(),
            expected,
            "{target:?} {bodies:?}"
        );
    }

    #[test]
    fn batch_size_accounting_matches_the_wire_exactly() {
        exact(BatchTarget::Automatic, &[0, 1, 100]);
        exact(
            BatchTarget::Automatic,
            &[200, 240, 250, 255, 256, 300, 70_000],
        );
        exact(
            BatchTarget::PartitionKey("device-7".into()),
            &[10, 245, 300],
        );
        exact(BatchTarget::PartitionKey("k".repeat(128)), &[1]);
        exact(BatchTarget::Partition("3".into()), &[5; 50]);
    }
}
