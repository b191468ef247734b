//! What a handler is given: the contexts of published and failed events, each event paired
//! with how it was routed, and re-enqueueing failed events the way they were routed
//! ([`SendFailedContext::requeue`]).

use std::sync::Arc;

use super::client::BufferedProducerClient;
use super::options::EnqueueOptions;
use super::outcome::{ReportedEvent, Routing};
use crate::error::{Error, ErrorKind};
use crate::event::EventData;
use crate::idempotence::PublishedSequenceNumbers;

/// A batch the service accepted.
///
/// `Debug` shows each event's body length and a short prefix, never a whole body.
#[derive(Debug)]
#[non_exhaustive]
pub struct SendSucceededContext {
    /// The partition the events were published to.
    pub partition_id: String,
    /// The events, in the order they were enqueued, each with how it was routed; yours to
    /// keep.
    pub events: Vec<ReportedEvent>,
    /// With [`enable_idempotent_retries`](crate::BufferedProducerOptions::enable_idempotent_retries):
    /// the producer id, epoch and each event's sequence number the service stored them under.
    /// None otherwise.
    pub published_sequence_numbers: Option<PublishedSequenceNumbers>,
    pub(crate) producer: Option<BufferedProducerClient>,
}

impl SendSucceededContext {
    /// The producer that published the batch, while it is still open or closing.
    pub fn producer(&self) -> Option<&BufferedProducerClient> {
        self.producer.as_ref()
    }

    /// The events alone, in order.
    pub fn event_data(&self) -> impl Iterator<Item = &EventData> {
        self.events.iter().map(|e| &e.event)
    }
}

/// Events that were not published, and why.
///
/// `Debug` shows each event's body length and a short prefix, never a whole body.
#[derive(Debug)]
#[non_exhaustive]
pub struct SendFailedContext {
    /// The partition the events were bound for.
    pub partition_id: String,
    /// The events, in the order they were enqueued, each with how it was routed; yours to
    /// re-enqueue or keep.
    pub events: Vec<ReportedEvent>,
    /// Why they failed (shared by every event of the batch). Check
    /// [`Error::may_have_been_published`] before sending them again without idempotent
    /// retries: such events may be stored twice.
    pub error: Arc<Error>,
    pub(crate) producer: Option<BufferedProducerClient>,
}

impl SendFailedContext {
    /// The producer the events were enqueued to, to re-enqueue them (an enqueue from a
    /// handler never waits for space). None once the producer has been dropped.
    pub fn producer(&self) -> Option<&BufferedProducerClient> {
        self.producer.as_ref()
    }

    /// The events alone, in order.
    pub fn event_data(&self) -> impl Iterator<Item = &EventData> {
        self.events.iter().map(|e| &e.event)
    }

    /// Enqueues the events again, each routed as it was: by the same partition key, to the
    /// same partition id, or, for automatically routed events, automatically again (not
    /// pinned to the partition that failed). From the handler, the enqueues never wait for
    /// space, and they are taken even while the ordering guard pauses the partition, so
    /// that a handler can requeue before it resumes the partition, keeping the order.
    ///
    /// When an event cannot be enqueued (the producer was closed or dropped meanwhile), the
    /// events before it stay enqueued and it and the ones after it come back in the error,
    /// so that none is lost.
    pub async fn requeue(self) -> std::result::Result<(), RequeueError> {
        let partition_id = self.partition_id;
        let mut events = self.events.into_iter();
        let Some(producer) = self.producer else {
            return Err(RequeueError {
                error: Error::new(
                    ErrorKind::Closed,
                    "the producer is gone; the events cannot be re-enqueued",
                ),
                events: events.collect(),
            });
        };
        while let Some(reported) = events.next() {
            let options = match &reported.routing {
                Routing::PartitionKey(key) => EnqueueOptions::default().with_partition_key(key),
                Routing::PartitionId => {
                    EnqueueOptions::default().with_partition_id(partition_id.clone())
                }
                Routing::Automatic => EnqueueOptions::default(),
            };
            let ReportedEvent { event, routing } = reported;
            if let Err(refused) = producer.enqueue_event(event, options).await {
                let (event, error) = refused.into_parts();
                return Err(RequeueError {
                    error,
                    events: std::iter::once(ReportedEvent { event, routing })
                        .chain(events)
                        .collect(),
                });
            }
        }
        Ok(())
    }
}

/// Why [`SendFailedContext::requeue`] did not re-enqueue every event; the events it did not
/// take come back with it, in order.
#[derive(Debug)]
pub struct RequeueError {
    error: Error,
    events: Vec<ReportedEvent>,
}

impl RequeueError {
    /// Why the first of the returned events was not enqueued (for example
    /// [`ErrorKind::Closed`]).
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The events that were not re-enqueued, in their order, with their routing.
    pub fn events(&self) -> &[ReportedEvent] {
        &self.events
    }

    /// The events that were not re-enqueued, in their order.
    pub fn into_events(self) -> Vec<ReportedEvent> {
        self.events
    }
}

impl std::fmt::Display for RequeueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events were not re-enqueued: {}",
            self.events.len(),
            self.error
        )
    }
}

impl std::error::Error for RequeueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
