//! What a handler is given: the contexts of published and failed events, and re-enqueueing
//! failed events with their options ([`SendFailedContext::requeue`]).

use std::sync::Arc;

use super::client::BufferedProducerClient;
use super::options::EnqueueOptions;
use crate::error::Error;
use crate::event::EventData;
use crate::idempotence::PublishedSequenceNumbers;

/// A batch the service accepted.
#[derive(Debug)]
#[non_exhaustive]
pub struct SendSucceededContext {
    /// The partition the events were published to.
    pub partition_id: String,
    /// The events, in the order they were enqueued; yours to keep.
    pub events: Vec<EventData>,
    /// The partition key each event was enqueued with (same order as `events`).
    pub partition_keys: Vec<Option<String>>,
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
}

/// Events that were not published, and why.
#[derive(Debug)]
#[non_exhaustive]
pub struct SendFailedContext {
    /// The partition the events were bound for.
    pub partition_id: String,
    /// The events, in the order they were enqueued; yours to re-enqueue or keep.
    pub events: Vec<EventData>,
    /// The partition key each event was enqueued with (same order as `events`).
    pub partition_keys: Vec<Option<String>>,
    /// Why they failed (shared by every event of the batch).
    pub error: Arc<Error>,
    pub(crate) producer: Option<BufferedProducerClient>,
}

impl SendFailedContext {
    /// The producer the events were enqueued to, to re-enqueue them (an enqueue from a
    /// handler never waits for space). None once the producer has been dropped.
    pub fn producer(&self) -> Option<&BufferedProducerClient> {
        self.producer.as_ref()
    }

    /// Enqueues the events again with the options they had: the same partition key, or,
    /// for events without key, the same partition. Returns the total buffered count.
    ///
    /// When an event cannot be enqueued (the producer was closed or dropped meanwhile), the
    /// events before it stay enqueued and it and the ones after it come back in the error,
    /// so that none is lost.
    pub async fn requeue(self) -> std::result::Result<usize, RequeueError> {
        let partition_id = self.partition_id;
        let mut events = self.events.into_iter();
        let mut keys = self.partition_keys.into_iter();
        let Some(producer) = self.producer else {
            return Err(RequeueError {
                error: Error::new(
                    crate::ErrorKind::Closed,
                    "the producer is gone; the events cannot be re-enqueued",
                ),
                events: events.collect(),
                partition_keys: keys.collect(),
            });
        };
        let mut total = producer.total_buffered_event_count();
        while let Some(event) = events.next() {
            let key = keys.next().flatten();
            let options = match &key {
                Some(key) => EnqueueOptions::default().with_partition_key(key.clone()),
                None => EnqueueOptions::default().with_partition_id(partition_id.clone()),
            };
            match producer.enqueue_event(event.clone(), options).await {
                Ok(count) => total = count,
                Err(error) => {
                    return Err(RequeueError {
                        error,
                        events: std::iter::once(event).chain(events).collect(),
                        partition_keys: std::iter::once(key).chain(keys).collect(),
                    })
                }
            }
        }
        Ok(total)
    }
}

/// Why [`SendFailedContext::requeue`] did not re-enqueue every event; the events it did not
/// take come back with it, in order.
#[derive(Debug)]
pub struct RequeueError {
    error: Error,
    events: Vec<EventData>,
    partition_keys: Vec<Option<String>>,
}

impl RequeueError {
    /// Why the first of the returned events was not enqueued (for example
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed)).
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The partition key of each returned event (same order as the events).
    pub fn partition_keys(&self) -> &[Option<String>] {
        &self.partition_keys
    }

    /// The events that were not re-enqueued, in their order.
    pub fn into_events(self) -> Vec<EventData> {
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
