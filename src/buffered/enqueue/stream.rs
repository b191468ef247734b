//! Enqueueing a whole stream: each item goes through the enqueue pipeline; an item whose
//! partition is full is held back (parked, in order, with the later items for that partition)
//! while items for partitions with room keep flowing. Reading the stream pauses only when
//! [`MAX_PARKED`] items are held back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use futures_util::FutureExt;

use super::placement::{paused_error, Placed, Placement};
use super::EnqueueError;
use crate::buffered::budget::Reservation;
use crate::buffered::capacity::{held_size, release};
use crate::buffered::client::BufferedProducerClient;
use crate::buffered::command::Parcel;
use crate::buffered::options::EnqueueOptions;
use crate::buffered::partitions::PartitionHandle;
use crate::error::{Error, Result};
use crate::event::EventData;

/// The most items [`BufferedProducerClient::enqueue_stream`] holds back for full partitions
/// before it stops reading the stream.
pub const MAX_PARKED: usize = 4096;

/// Why [`BufferedProducerClient::enqueue_stream`] stopped: the error of the first item it could
/// not enqueue, with every event it had taken from the stream and not enqueued (that item and
/// those held back for full partitions). The stream itself stays with you, at the item after
/// the refused one: call `enqueue_stream` again to go on.
#[derive(Debug)]
pub struct EnqueueStreamError {
    error: Error,
    enqueued: u64,
    events: Vec<EventData>,
}

impl EnqueueStreamError {
    /// Why the stream stopped.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// How many events were enqueued before it stopped.
    pub fn enqueued(&self) -> u64 {
        self.enqueued
    }

    /// The events taken from the stream and not enqueued: the refused one first, then those
    /// held back for full partitions, each partition's in stream order.
    pub fn into_events(self) -> Vec<EventData> {
        self.events
    }
}

impl std::fmt::Display for EnqueueStreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the stream stopped after {} events: {}",
            self.enqueued, self.error
        )
    }
}

impl std::error::Error for EnqueueStreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Where held-back items wait: one partition, or any partition (automatic routing).
#[derive(Clone, PartialEq, Eq, Hash)]
enum Lane {
    Partition(String),
    Any,
}

/// Items held back for a lane, in stream order, each with its size in the budget.
struct Parked {
    target: Option<Arc<PartitionHandle>>,
    items: VecDeque<(Parcel, usize)>,
}

type RoomFuture<'a> = BoxFuture<'a, (Lane, Result<(Arc<PartitionHandle>, Reservation)>)>;

/// The state of one `enqueue_stream` call.
struct Feeder<'a> {
    client: &'a BufferedProducerClient,
    lanes: HashMap<Lane, Parked>,
    parked: usize,
    enqueued: u64,
    /// Waits for room in the lanes that hold items back, one per lane.
    room: FuturesUnordered<RoomFuture<'a>>,
}

impl BufferedProducerClient {
    /// Enqueues every item (an event and its options) of `events` until the stream ends, then
    /// returns how many were enqueued. Back pressure applies per partition: an item whose
    /// partition is full is held back, with the later items for the same partition (so each
    /// partition's items keep their order), while items for partitions with room go on; the
    /// stream is read further until [`MAX_PARKED`] items are held back. It returns once every
    /// item taken from the stream is enqueued (not yet published: flush for that).
    ///
    /// ```no_run
    /// # async fn demo(producer: eventhubs_buffered::BufferedProducerClient) -> Result<(), eventhubs_buffered::EnqueueStreamError> {
    /// use eventhubs_buffered::{EnqueueOptions, EventData};
    /// use futures_util::stream;
    ///
    /// let mut readings = stream::iter((0..10_000).map(|i| {
    ///     let device = format!("device-{}", i % 50);
    ///     (EventData::from(format!("reading {i}")), EnqueueOptions::default().with_partition_key(device))
    /// }));
    /// let enqueued = producer.enqueue_stream(&mut readings).await?;
    /// assert_eq!(enqueued, 10_000);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The first item that cannot be enqueued (bad options, too large, a paused partition,
    /// the producer closed) stops it: the error holds that event and those held back, and the
    /// stream stays at the next item. Dropping the returned future drops the events it had
    /// taken from the stream and not yet enqueued (at most `MAX_PARKED` + 1), as dropping an
    /// `enqueue_event` future drops its event.
    pub async fn enqueue_stream<S>(
        &self,
        events: &mut S,
    ) -> std::result::Result<u64, EnqueueStreamError>
    where
        S: Stream<Item = (EventData, EnqueueOptions)> + Unpin,
    {
        if let Err(error) = self.ensure_initialized().await {
            return Err(EnqueueStreamError {
                error,
                enqueued: 0,
                events: Vec::new(),
            });
        }
        let mut feeder = Feeder {
            client: self,
            lanes: HashMap::new(),
            parked: 0,
            enqueued: 0,
            room: FuturesUnordered::new(),
        };
        let mut ended = false;
        loop {
            if ended && feeder.parked == 0 {
                return Ok(feeder.enqueued);
            }
            let read = !ended && feeder.parked < MAX_PARKED;
            tokio::select! {
                biased;
                Some((lane, room)) = feeder.room.next(), if !feeder.room.is_empty() => {
                    feeder.room_in(lane, room)?;
                }
                item = events.next(), if read => match item {
                    Some((event, options)) => feeder.take(event, &options)?,
                    None => ended = true,
                },
            }
        }
    }
}

impl<'a> Feeder<'a> {
    /// One item from the stream: enqueued now, held back behind its lane's items, or refused.
    fn take(
        &mut self,
        mut event: EventData,
        options: &EnqueueOptions,
    ) -> std::result::Result<(), EnqueueStreamError> {
        let client = self.client;
        if client.is_closed() {
            return Err(self.stop(EnqueueError::new(
                event,
                BufferedProducerClient::closed_error(),
            )));
        }
        client.core.settings.telemetry.stamp(&mut event);
        let size = held_size(&event);
        if let Err(error) = client.check_size(&event, options, size) {
            return Err(self.stop(EnqueueError::new(event, error)));
        }
        let set = client.current_partitions();
        let (target, command) = match client.prepare(&set, options, event, None, false) {
            Ok(prepared) => prepared,
            Err((command, error)) => {
                return Err(self.stop(EnqueueError::from_parcel(command, error)))
            }
        };
        let lane = match target {
            Some(partition) => Lane::Partition(partition.shared.id.clone()),
            None => Lane::Any,
        };
        if self.lanes.get(&lane).is_some_and(|p| !p.items.is_empty()) {
            self.park(lane, target.cloned(), command, size);
            return Ok(());
        }
        match client.place_prepared(&set, target, command, size, false) {
            Placed::Done => {
                self.enqueued += 1;
                Ok(())
            }
            Placed::Failed(command, error) => {
                Err(self.stop(EnqueueError::from_parcel(command, error)))
            }
            Placed::Later(command, placement, _) => {
                let target = match placement {
                    Placement::Wait(partition) => Some(partition),
                    Placement::WaitAny => None,
                };
                self.park(lane, target, command, size);
                Ok(())
            }
        }
    }

    /// Holds an item back in its lane, and starts waiting for room there if nobody does yet.
    fn park(
        &mut self,
        lane: Lane,
        target: Option<Arc<PartitionHandle>>,
        command: Parcel,
        size: usize,
    ) {
        let parked = self.lanes.entry(lane.clone()).or_insert_with(|| Parked {
            target,
            items: VecDeque::new(),
        });
        let first = parked.items.is_empty();
        parked.items.push_back((command, size));
        self.parked += 1;
        if first {
            self.wait_for_room(lane);
        }
    }

    /// Waits (cancel-safe) for room for the first item held back in `lane`.
    fn wait_for_room(&mut self, lane: Lane) {
        let Some(parked) = self.lanes.get(&lane) else {
            return;
        };
        let Some((_, size)) = parked.items.front() else {
            return;
        };
        let size = *size;
        let client = self.client;
        let target = parked.target.clone();
        self.room.push(
            async move {
                let room = match target {
                    Some(partition) => client
                        .reserve(&partition, size, false)
                        .await
                        .map(|reservation| (partition, reservation)),
                    None => {
                        let set = client.current_partitions();
                        client.reserve_automatic(&set, size, false).await
                    }
                };
                (lane, room)
            }
            .boxed(),
        );
    }

    /// Room came for the first item of `lane`: enqueues it, then as many after it as fit now.
    fn room_in(
        &mut self,
        lane: Lane,
        room: Result<(Arc<PartitionHandle>, Reservation)>,
    ) -> std::result::Result<(), EnqueueStreamError> {
        let client = self.client;
        let Some((command, _)) = self.lanes.get_mut(&lane).and_then(|p| p.items.pop_front()) else {
            return Ok(());
        };
        self.parked -= 1;
        let pushed = match room {
            Ok((partition, reservation)) if partition.shared.is_paused() => {
                release(&partition.shared.inbox, &client.core.budget, reservation);
                let error = paused_error(&partition.shared.id);
                Err(EnqueueError::from_parcel(command, error))
            }
            Ok((partition, reservation)) => client.push_reserved(&partition, command, reservation),
            Err(error) => Err(EnqueueError::from_parcel(command, error)),
        };
        if let Err(refused) = pushed {
            return Err(self.stop(refused));
        }
        self.enqueued += 1;
        let set = client.current_partitions();
        while let Some((command, size)) =
            self.lanes.get_mut(&lane).and_then(|p| p.items.pop_front())
        {
            self.parked -= 1;
            let target = self.lanes.get(&lane).and_then(|p| p.target.clone());
            match client.place_prepared(&set, target.as_ref(), command, size, false) {
                Placed::Done => self.enqueued += 1,
                Placed::Failed(command, error) => {
                    return Err(self.stop(EnqueueError::from_parcel(command, error)))
                }
                Placed::Later(command, _, _) => {
                    if let Some(parked) = self.lanes.get_mut(&lane) {
                        parked.items.push_front((command, size));
                        self.parked += 1;
                    }
                    self.wait_for_room(lane);
                    return Ok(());
                }
            }
        }
        self.lanes.remove(&lane);
        Ok(())
    }

    /// The error that stops the stream: the refused event, then every event held back.
    fn stop(&mut self, refused: EnqueueError) -> EnqueueStreamError {
        let (event, error) = refused.into_parts();
        let mut events = vec![event];
        for (_, parked) in self.lanes.drain() {
            events.extend(
                parked
                    .items
                    .into_iter()
                    .map(|(parcel, _)| parcel.into_event()),
            );
        }
        self.parked = 0;
        EnqueueStreamError {
            error,
            enqueued: self.enqueued,
            events,
        }
    }
}
