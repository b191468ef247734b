//! The enqueue pipeline: an event's way from `enqueue_event` into a partition's inbox, in
//! three steps that never touch the network:
//!
//! 1. **choose a partition** (`placement.rs`): by id, by its key mapped by the partitioner
//!    (`routing.rs`), or automatically, a healthy partition with room, passing over one whose
//!    lock another enqueue holds or that the ordering guard paused;
//! 2. **reserve space**: a slot of the partition and bytes of the budget, at once when there
//!    is room (the fast path, one lock), else by waiting, cancel-safe (`waiting.rs`, back
//!    pressure);
//! 3. **push** the event into the partition's inbox, counted as buffered.
//!
//! An enqueue that fails hands the event back ([`EnqueueError`]). Events a handler
//! re-enqueues never wait: they take the space their batch just gave back. `stream.rs` feeds
//! a whole stream through the same steps without letting one full partition stall the rest.
//!
//! The fast path is built to touch as little memory that other cores write as it can: each
//! atomic read-modify-write on such a cache line costs more than everything else an enqueue
//! does. With room, an enqueue reads the partition list from a per-thread copy (no lock),
//! takes the partition's inbox lock (which also covers its free slots, its count and its
//! byte credit, see `ByteBudget`), and bumps the total count. Asking for an outcome adds a
//! boxed command and a channel; not asking costs nothing.

use std::sync::atomic::Ordering;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::capacity::held_size;
use super::client::BufferedProducerClient;
use super::command::Parcel;
use super::options::EnqueueOptions;
use super::outcome::{OutcomeSender, PendingOutcome};
use super::report::in_handler;
use crate::amqp::message::encode_batch_event;
use crate::batch::fits_alone;
use crate::error::{Error, ErrorKind};
use crate::event::EventData;

mod placement;
mod stream;
mod waiting;

use self::placement::{Placed, Placement};
pub use self::stream::{EnqueueStreamError, MAX_PARKED};

/// Why an enqueue did not take an event; the event comes back with it, so that nothing you
/// gave is lost on an error.
///
/// [`kind`](Self::kind) says why: [`ErrorKind::BufferFull`] from
/// [`try_enqueue_event`](BufferedProducerClient::try_enqueue_event),
/// [`ErrorKind::InvalidArgument`] for bad options, [`ErrorKind::MessageTooLarge`] for an
/// event larger than the service takes, [`ErrorKind::PartitionPaused`] for a partition the
/// ordering guard paused, [`ErrorKind::Closed`] after close, or the connection's error when
/// the first enqueue could not connect.
#[derive(Debug)]
pub struct EnqueueError {
    event: EventData,
    error: Error,
    /// Events of an `enqueue_events` call that were not tried, after `event`.
    rest: Vec<EventData>,
}

impl EnqueueError {
    pub(crate) fn new(event: EventData, error: Error) -> Self {
        Self {
            event,
            error,
            rest: Vec::new(),
        }
    }

    /// The error of a refused event (its outcome sender, if any, is dropped: the caller never
    /// got the pending outcome).
    fn from_parcel(parcel: Parcel, error: Error) -> Self {
        Self::new(parcel.into_event(), error)
    }

    /// Why the event was not enqueued.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The kind of [`error`](Self::error).
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// Whether the buffer was full (from `try_enqueue_event`): the event can be tried again
    /// later.
    pub fn is_full(&self) -> bool {
        self.error.kind() == ErrorKind::BufferFull
    }

    /// The event that was not enqueued.
    pub fn into_event(self) -> EventData {
        self.event
    }

    /// The event that was not enqueued, and why.
    pub fn into_parts(self) -> (EventData, Error) {
        (self.event, self.error)
    }

    /// Every event that was not enqueued: the refused one, then (from
    /// [`enqueue_events`](BufferedProducerClient::enqueue_events)) those not tried after it.
    pub fn into_events(self) -> Vec<EventData> {
        std::iter::once(self.event).chain(self.rest).collect()
    }
}

impl std::fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the event was not enqueued: {}", self.error)
    }
}

impl std::error::Error for EnqueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<EnqueueError> for Error {
    /// The error alone (the event is dropped).
    fn from(refused: EnqueueError) -> Self {
        refused.error
    }
}

impl BufferedProducerClient {
    /// Enqueues one event. It is sent with others of its partition and reported to a handler;
    /// ask [`enqueue_event_with_outcome`](Self::enqueue_event_with_outcome) to await its
    /// outcome too.
    ///
    /// Waits while the target partition (or the byte budget) is full: back pressure. Cancel-
    /// safe, by tokio's convention: dropping the future (e.g. under `tokio::time::timeout`)
    /// before it completes enqueues nothing and holds no space, and the event, which the
    /// future owns, is dropped with it; to keep the event, use
    /// [`try_enqueue_event`](Self::try_enqueue_event), which never waits and hands it back.
    /// The first call connects and reads the partitions, within the retry policy's bounds.
    ///
    /// # Errors
    ///
    /// An [`EnqueueError`] holding the event and the reason (see its kinds).
    pub async fn enqueue_event(
        &self,
        event: EventData,
        options: EnqueueOptions,
    ) -> Result<(), EnqueueError> {
        match self.enqueue_now(event, &options, None)? {
            None => Ok(()),
            Some(waiting) => waiting.await,
        }
    }

    /// Enqueues one event, as [`enqueue_event`](Self::enqueue_event), and returns its outcome
    /// to await: where it was published, or the error its batch failed with. Typical use: a
    /// request handler enqueues, awaits the outcome, then answers its own client.
    ///
    /// ```no_run
    /// # async fn demo(producer: eventhubs_buffered::BufferedProducerClient) -> eventhubs_buffered::Result<()> {
    /// use eventhubs_buffered::{EnqueueOptions, EventData};
    ///
    /// let outcome = producer
    ///     .enqueue_event_with_outcome(EventData::from("order 17"), EnqueueOptions::default().with_partition_key("customer-4"))
    ///     .await?;
    /// match outcome.await {
    ///     Ok(published) => println!("stored in partition {}", published.partition_id()),
    ///     Err(error) if error.may_have_been_published() => println!("unknown: {error}"),
    ///     Err(error) => println!("not stored: {error}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn enqueue_event_with_outcome(
        &self,
        event: EventData,
        options: EnqueueOptions,
    ) -> Result<PendingOutcome, EnqueueError> {
        let (sender, pending) = PendingOutcome::channel();
        if let Some(waiting) = self.enqueue_now(event, &options, Some(sender))? {
            waiting.await?;
        }
        Ok(pending)
    }

    /// Enqueues events one after another with the same options. Events enqueued together may
    /// go to different batches (and, routed automatically, to different partitions).
    ///
    /// # Errors
    ///
    /// On an error, the events before the refused one stay enqueued; the refused one and
    /// those after it come back in the error ([`EnqueueError::into_events`]).
    pub async fn enqueue_events(
        &self,
        events: Vec<EventData>,
        options: EnqueueOptions,
    ) -> Result<(), EnqueueError> {
        let mut events = events.into_iter();
        while let Some(event) = events.next() {
            let enqueued = match self.enqueue_now(event, &options, None) {
                Ok(None) => Ok(()),
                Ok(Some(waiting)) => waiting.await,
                Err(refused) => Err(refused),
            };
            if let Err(mut refused) = enqueued {
                refused.rest = events.collect();
                return Err(refused);
            }
        }
        Ok(())
    }

    /// The steps every enqueue takes (see the module documentation), as far as they go
    /// without waiting: `Ok(None)` when the event is enqueued, else the rest to await (the
    /// first connection, or room). The waiting part is boxed, only when needed: an enqueue
    /// future then stays a few words, which the fast path moves around without a memcpy.
    // The refusal carries the event back; it is large only on the error path.
    #[allow(clippy::result_large_err, clippy::type_complexity)]
    fn enqueue_now<'a>(
        &'a self,
        mut event: EventData,
        options: &'a EnqueueOptions,
        outcome: Option<OutcomeSender>,
    ) -> Result<Option<BoxFuture<'a, Result<(), EnqueueError>>>, EnqueueError> {
        if self.is_closed() {
            return Err(EnqueueError::new(event, Self::closed_error()));
        }
        self.core.settings.telemetry.stamp(&mut event);
        if !self.core.initialized.initialized() {
            return Ok(Some(
                async move {
                    if let Err(error) = self.ensure_initialized().await {
                        return Err(EnqueueError::new(event, error));
                    }
                    match self.enqueue_now(event, options, outcome)? {
                        None => Ok(()),
                        Some(waiting) => waiting.await,
                    }
                }
                .boxed(),
            ));
        }
        let size = held_size(&event);
        if let Err(error) = self.check_size(&event, options, size) {
            return Err(EnqueueError::new(event, error));
        }
        let in_handler = in_handler();
        let placed = self
            .core
            .partitions
            .with(|set| self.place_now(set, options, event, outcome, size, in_handler));
        match placed {
            Placed::Done => Ok(None),
            Placed::Failed(command, error) => Err(EnqueueError::from_parcel(command, error)),
            Placed::Later(command, placement, _) => Ok(Some(
                self.wait_and_push(command, placement, size, in_handler)
                    .boxed(),
            )),
        }
    }

    /// Steps 2 and 3 when the fast path found no room: waits for it, then pushes.
    async fn wait_and_push(
        &self,
        command: Parcel,
        placement: Placement,
        size: usize,
        in_handler: bool,
    ) -> Result<(), EnqueueError> {
        match placement {
            Placement::Wait(partition) => match self.reserve(&partition, size, in_handler).await {
                Ok(reservation) => self.push_reserved(&partition, command, reservation),
                Err(error) => Err(EnqueueError::from_parcel(command, error)),
            },
            Placement::WaitAny => {
                let set = self.current_partitions();
                match self.reserve_automatic(&set, size, in_handler).await {
                    Ok((partition, reservation)) => {
                        self.push_reserved(&partition, command, reservation)
                    }
                    Err(error) => Err(EnqueueError::from_parcel(command, error)),
                }
            }
        }
    }

    /// Refuses an event that could never be sent: larger, encoded in its batch, than the
    /// largest batch the service takes (known once the first partition link is attached;
    /// before that, the actor reports such an event to the failure handler). One atomic load
    /// for events far below the limit; larger ones are measured exactly.
    fn check_size(
        &self,
        event: &EventData,
        options: &EnqueueOptions,
        held: usize,
    ) -> Result<(), Error> {
        // The held size counts the event twice; its encoded form is never more than that
        // and what a key and the annotations add (well below this slack).
        const SLACK: usize = 1024;
        let max = self.core.settings.link_max_size.load(Ordering::Relaxed);
        if max == 0 || held.saturating_add(SLACK) < max {
            return Ok(());
        }
        let key = options.partition_key.as_deref().filter(|k| !k.is_empty());
        let encoded = encode_batch_event(event, key, self.core.settings.idempotent).len();
        if fits_alone(encoded, max) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::MessageTooLarge,
            format!(
                "the event is {encoded} bytes encoded ({} bytes of body); the event hub takes batches of at most {max} bytes, so it can never be sent",
                event.body().len()
            ),
        ))
    }
}
