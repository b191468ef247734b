//! The fate of one event: how it was routed ([`Routing`]), the event as handlers get it back
//! ([`ReportedEvent`]), and the outcome a caller can await for it ([`PendingOutcome`], which
//! resolves to a [`PublishedEvent`] or the shared error).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind};
use crate::event::EventData;

/// How an event was routed when it was enqueued; [`SendFailedContext::requeue`] routes it the
/// same way again.
///
/// [`SendFailedContext::requeue`]: crate::SendFailedContext::requeue
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Routing {
    /// Neither partition id nor key: the producer chose a partition with room. Requeued, it
    /// is routed again (it may go to another partition).
    Automatic,
    /// To the partition named by its id (the context's `partition_id`).
    PartitionId,
    /// By this partition key, hashed as the service does (or by the custom partitioner); the
    /// key is stamped on the event.
    PartitionKey(String),
}

impl Routing {
    /// The partition key, for an event routed by one.
    pub fn partition_key(&self) -> Option<&str> {
        match self {
            Self::PartitionKey(key) => Some(key),
            _ => None,
        }
    }
}

/// An event a handler is told about, with how it was routed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReportedEvent {
    /// The event; yours to keep or enqueue again.
    pub event: EventData,
    /// How it was routed when it was enqueued.
    pub routing: Routing,
}

impl ReportedEvent {
    /// The partition key it was enqueued with, if any.
    pub fn partition_key(&self) -> Option<&str> {
        self.routing.partition_key()
    }
}

/// Where an event was published.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedEvent {
    partition_id: Arc<str>,
    sequence_number: Option<i32>,
}

impl PublishedEvent {
    pub(crate) fn new(partition_id: Arc<str>, sequence_number: Option<i32>) -> Self {
        Self {
            partition_id,
            sequence_number,
        }
    }

    /// The partition the event was published to.
    pub fn partition_id(&self) -> &str {
        &self.partition_id
    }

    /// The event's sequence number as an idempotent producer (the number the service
    /// deduplicates on), with
    /// [`enable_idempotent_retries`](crate::BufferedProducerOptions::enable_idempotent_retries);
    /// None otherwise.
    pub fn idempotent_sequence_number(&self) -> Option<i32> {
        self.sequence_number
    }
}

/// What became of one event: published, or failed for good with the error its batch failed
/// with (shared by the batch's events).
pub type EventOutcome = Result<PublishedEvent, Arc<Error>>;

/// Where the actor sends an event's outcome.
pub(crate) type OutcomeSender = oneshot::Sender<EventOutcome>;

/// The outcome of one enqueued event, to await: returned by
/// [`enqueue_event_with_outcome`](crate::BufferedProducerClient::enqueue_event_with_outcome).
///
/// It resolves once the event's batch was published or failed for good, in the same order
/// as the handler calls of its partition, and before the handler call that reports the
/// event (which still happens: handlers remain the one place every event is reported). An
/// abandoned event resolves to an error of kind [`ErrorKind::Abandoned`]. Dropping it changes
/// nothing: the event is still sent and reported.
#[derive(Debug)]
#[must_use = "await it to learn the event's outcome (dropping it changes nothing else)"]
pub struct PendingOutcome {
    receiver: oneshot::Receiver<EventOutcome>,
}

impl PendingOutcome {
    /// A pending outcome and the sender that resolves it.
    pub(crate) fn channel() -> (OutcomeSender, Self) {
        let (sender, receiver) = oneshot::channel();
        (sender, Self { receiver })
    }
}

impl Future for PendingOutcome {
    type Output = EventOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<EventOutcome> {
        Pin::new(&mut self.receiver).poll(cx).map(|received| {
            received.unwrap_or_else(|_| {
                // The actor holding the event went away without an outcome: only when the
                // runtime it ran on shut down (it logs the events it could not report).
                Err(Arc::new(Error::new(
                    ErrorKind::Abandoned,
                    "the producer stopped (its runtime shut down) before this event's outcome was known",
                )))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_outcome_resolves_once_and_a_lost_sender_means_abandoned() {
        let (sender, pending) = PendingOutcome::channel();
        let _ = sender.send(Ok(PublishedEvent::new(Arc::from("3"), Some(7))));
        let published = pending.await.expect("published");
        assert_eq!(published.partition_id(), "3");
        assert_eq!(published.idempotent_sequence_number(), Some(7));
        let (sender, pending) = PendingOutcome::channel();
        drop(sender);
        assert_eq!(pending.await.unwrap_err().kind(), ErrorKind::Abandoned);
    }

    #[test]
    fn routing_names_the_key_only_for_keyed_events() {
        assert_eq!(Routing::PartitionKey("k".into()).partition_key(), Some("k"));
        assert_eq!(Routing::Automatic.partition_key(), None);
        assert_eq!(Routing::PartitionId.partition_key(), None);
    }
}
