//! The enqueue pipeline: an event's way from `enqueue_event` into a partition's inbox, in
//! three steps that never touch the network:
//!
//! 1. **choose a partition**: by id, by the service's hash of the key (see `routing.rs`), or
//!    automatically, a healthy partition with room, passing over one whose lock another
//!    enqueue holds;
//! 2. **reserve space**: a slot of the partition and bytes of the budget, at once when there
//!    is room (the fast path, one lock), else by waiting, cancel-safe (back pressure);
//! 3. **push** the event into the partition's inbox, counted as buffered.
//!
//! An enqueue that fails hands the event back. Events a handler re-enqueues never wait: they
//! take the space their batch just gave back.
//!
//! The fast path is built to touch as little memory that other cores write as it can: each
//! atomic read-modify-write on such a cache line costs more than everything else an enqueue
//! does. With room, an enqueue reads the partition list from a per-thread copy (no lock),
//! takes the partition's inbox lock (which also covers its free slots, its count and its
//! byte credit, see `ByteBudget`), and bumps the total count.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::select_all;
use futures_util::FutureExt;

use super::budget::Reservation;
use super::capacity::{acquire, acquire_for_handler, estimated_size, release, try_acquire};
use super::client::BufferedProducerClient;
use super::command::Queued;
use super::inbox::{Needs, Refused};
use super::options::EnqueueOptions;
use super::partitions::{PartitionHandle, PartitionSet};
use super::report::in_handler;
use super::routing::resolve;
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;

/// Why [`BufferedProducerClient::try_enqueue_event`] did not take an event; the event comes
/// back with it.
#[derive(Debug)]
pub struct TryEnqueueError {
    event: EventData,
    error: Option<Error>,
}

impl TryEnqueueError {
    /// Whether the target partition (or the byte budget) was full; the event can be tried
    /// again later.
    pub fn is_full(&self) -> bool {
        self.error.is_none()
    }

    /// The error, when the event was refused for another reason than a full buffer.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The event that was not enqueued.
    pub fn into_event(self) -> EventData {
        self.event
    }
}

impl std::fmt::Display for TryEnqueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            Some(e) => write!(f, "{e}"),
            None => f.write_str("the buffer is full"),
        }
    }
}

impl std::error::Error for TryEnqueueError {}

/// Where an enqueue that found no room at once goes to wait.
enum Placement {
    /// This partition is full (or the byte budget): wait for it.
    Wait(Arc<PartitionHandle>, Option<String>),
    /// Automatic routing found no room anywhere: wait for the first partition with room.
    WaitAny,
}

/// How an enqueue's fast path ended.
enum Placed {
    /// Enqueued: the total buffered count.
    Done(usize),
    /// Refused: the event comes back with the error.
    Failed(EventData, Error),
    /// No room now: the event, and where to wait, and whether the byte budget (rather than
    /// the partitions' slots) is what lacked room.
    Later(EventData, Placement, Short),
}

/// What an enqueue found short of room.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Short {
    Slots,
    Bytes,
    /// The partition's lock was held by another enqueue (only when not waiting for it).
    Busy,
}

impl BufferedProducerClient {
    /// Enqueues one event; returns how many events are buffered in total.
    ///
    /// Waits while the target partition (or the byte budget) is full. Cancel-safe: dropping
    /// the future (e.g. under `tokio::time::timeout`) enqueues nothing and holds no space.
    /// The first call connects and reads the partitions, within the retry policy's bounds.
    pub async fn enqueue_event(&self, event: EventData, options: EnqueueOptions) -> Result<usize> {
        if self.is_closed() {
            return Err(Self::closed_error());
        }
        self.ensure_initialized().await?;
        let size = estimated_size(&event);
        let in_handler = in_handler();
        let placed = self
            .core
            .partitions
            .with(|set| self.place_now(set, &options, event, size, in_handler));
        match placed {
            Placed::Done(total) => Ok(total),
            Placed::Failed(_, e) => Err(e),
            Placed::Later(event, Placement::Wait(partition, key), _) => {
                let reservation = self.reserve(&partition, size, in_handler).await?;
                self.push_reserved(&partition, event, key, reservation)
            }
            Placed::Later(event, Placement::WaitAny, _) => {
                let set = self.current_partitions();
                let (partition, reservation) =
                    self.reserve_automatic(&set, size, in_handler).await?;
                self.push_reserved(&partition, event, None, reservation)
            }
        }
    }

    /// Enqueues events one after another with the same options; returns the total buffered
    /// count after the last. Events enqueued together may go to different batches. On an
    /// error, the events before it stay enqueued.
    pub async fn enqueue_events(
        &self,
        events: impl IntoIterator<Item = EventData>,
        options: EnqueueOptions,
    ) -> Result<usize> {
        let mut total = self.total_buffered_event_count();
        for event in events {
            total = self.enqueue_event(event, options.clone()).await?;
        }
        Ok(total)
    }

    /// Enqueues one event if there is room now, and never waits for room: when the partition
    /// or the byte budget is full, the event comes back. (The first call still connects.)
    pub async fn try_enqueue_event(
        &self,
        event: EventData,
        options: EnqueueOptions,
    ) -> std::result::Result<usize, TryEnqueueError> {
        let refused = |event, error| TryEnqueueError { event, error };
        if self.is_closed() {
            return Err(refused(event, Some(Self::closed_error())));
        }
        let set = match self.partitions().await {
            Ok(set) => set,
            Err(e) => return Err(refused(event, Some(e))),
        };
        let size = estimated_size(&event);
        let (event, placement) = match self.place_now(&set, &options, event, size, false) {
            Placed::Done(total) => return Ok(total),
            Placed::Failed(event, e) => return Err(refused(event, Some(e))),
            // (Busy does not come back from place_now: it waits for locks when it must.)
            Placed::Later(event, _, Short::Slots | Short::Busy) => {
                return Err(refused(event, None))
            }
            Placed::Later(event, placement, Short::Bytes) => (event, placement),
        };
        // Short of bytes: maybe only because partitions hold some as credit. Take it back and
        // try once more, with bytes straight from the budget.
        self.sweep_credits();
        let found = match placement {
            Placement::Wait(partition, key) => {
                try_acquire(&partition.shared.inbox, &self.core.budget, size)
                    .map(|reservation| (partition, key, reservation))
            }
            Placement::WaitAny => self
                .try_reserve_automatic(&set, size)
                .map(|(partition, reservation)| (partition, None, reservation)),
        };
        let Some((partition, key, reservation)) = found else {
            return Err(refused(event, None));
        };
        let needs = Needs {
            slot: false,
            bytes: 0,
            wait_for_lock: true,
        };
        match self.push(&partition, event, key, reservation, needs) {
            Ok(total) => Ok(total),
            Err(refusal) => Err(refused(
                refusal.into_queued().event,
                Some(Self::closed_error()),
            )),
        }
    }

    /// The fast path of an enqueue: room now, or where to wait. Runs on the thread's copy of
    /// the partition list and clones nothing unless the event has to wait.
    fn place_now(
        &self,
        set: &PartitionSet,
        options: &EnqueueOptions,
        event: EventData,
        size: usize,
        in_handler: bool,
    ) -> Placed {
        let target = match resolve(set, options) {
            Ok(target) => target,
            Err(e) => return Placed::Failed(event, e),
        };
        match target {
            // Handlers never wait: the wait path gives them what space there is at once.
            Some((partition, key)) if in_handler => {
                Placed::Later(event, Placement::Wait(partition.clone(), key), Short::Slots)
            }
            Some((partition, key)) => match self.try_push(partition, event, key, size, true) {
                Ok(placed) => placed,
                Err((event, key, short)) => {
                    Placed::Later(event, Placement::Wait(partition.clone(), key), short)
                }
            },
            None if in_handler => Placed::Later(event, Placement::WaitAny, Short::Slots),
            None => self.place_automatic(set, event, size),
        }
    }

    /// A healthy partition with room now, else a failing one with room; never waits for room.
    ///
    /// A partition whose lock another enqueue holds is passed over for the next one, and only
    /// waited for if no other partition takes the event: enqueuers on different cores that
    /// happen to pick the same partition would otherwise queue up behind one another and then
    /// keep moving through the partitions in step, colliding on every event.
    fn place_automatic(&self, set: &PartitionSet, mut event: EventData, size: usize) -> Placed {
        let count = set.partitions.len();
        if count > 0 {
            let first = self.core.round_robin.order(count).next().unwrap_or(0);
            for want_failing in [false, true] {
                let mut passed_over = false;
                for wait_for_lock in [false, true] {
                    if wait_for_lock && !passed_over {
                        break;
                    }
                    for i in (0..count).map(|i| (first + i) % count) {
                        let partition = &set.partitions[i];
                        if partition.shared.failing.load(Ordering::Relaxed) != want_failing
                            || !partition.shared.inbox.may_have_room()
                        {
                            continue;
                        }
                        match self.try_push(partition, event, None, size, wait_for_lock) {
                            Ok(placed) => return placed,
                            // The budget is shared: no other partition has bytes either.
                            Err((event, _, Short::Bytes)) => {
                                return Placed::Later(event, Placement::WaitAny, Short::Bytes)
                            }
                            Err((back, _, Short::Busy)) => {
                                passed_over = true;
                                event = back;
                            }
                            Err((back, _, Short::Slots)) => event = back,
                        }
                    }
                }
            }
        }
        Placed::Later(event, Placement::WaitAny, Short::Slots)
    }

    /// A healthy partition with room now, else a failing one with room, with bytes straight
    /// from the budget; never waits.
    fn try_reserve_automatic(
        &self,
        set: &PartitionSet,
        size: usize,
    ) -> Option<(Arc<PartitionHandle>, Reservation)> {
        let count = set.partitions.len();
        if count == 0 {
            return None;
        }
        let first = self.core.round_robin.order(count).next().unwrap_or(0);
        for want_failing in [false, true] {
            for i in (0..count).map(|i| (first + i) % count) {
                let partition = &set.partitions[i];
                if partition.shared.failing.load(Ordering::Relaxed) != want_failing {
                    continue;
                }
                if let Some(reservation) =
                    try_acquire(&partition.shared.inbox, &self.core.budget, size)
                {
                    return Some((partition.clone(), reservation));
                }
            }
        }
        None
    }

    /// Gives every partition's byte credit back to the budget, before waiting for bytes (see
    /// `ByteBudget`).
    fn sweep_credits(&self) {
        let set = self.current_partitions();
        let credit = set
            .partitions
            .iter()
            .map(|p| p.shared.inbox.take_credit())
            .sum();
        self.core.budget.give_back(credit);
    }

    /// Space in the partition for one event: waits while it is full (not in a handler).
    async fn reserve(
        &self,
        partition: &PartitionHandle,
        size: usize,
        in_handler: bool,
    ) -> Result<Reservation> {
        let inbox = &partition.shared.inbox;
        if in_handler {
            return Ok(acquire_for_handler(inbox, &self.core.budget, size));
        }
        acquire(inbox, &self.core.budget, size, &|| self.sweep_credits())
            .await
            .ok_or_else(Self::closed_error)
    }

    /// Picks a partition for an event without id or key: a healthy one with room, else a
    /// failing one with room, else the first to get room.
    async fn reserve_automatic(
        &self,
        set: &PartitionSet,
        size: usize,
        in_handler: bool,
    ) -> Result<(Arc<PartitionHandle>, Reservation)> {
        let count = set.partitions.len();
        if count == 0 {
            return Err(Error::new(
                ErrorKind::ServiceError,
                "the event hub reported no partitions",
            ));
        }
        let first = self.core.round_robin.order(count).next().unwrap_or(0);
        let order = (0..count).map(|i| (first + i) % count);
        if in_handler {
            // Events a handler re-enqueues never wait; they go to the next partition that is
            // not failing (or the next one, if all are).
            let index = order
                .clone()
                .find(|&i| !set.partitions[i].shared.failing.load(Ordering::SeqCst))
                .unwrap_or(first);
            let partition = set.partitions[index].clone();
            let reservation = acquire_for_handler(&partition.shared.inbox, &self.core.budget, size);
            return Ok((partition, reservation));
        }
        if let Some(found) = self.try_reserve_automatic(set, size) {
            return Ok(found);
        }
        let sweep = || self.sweep_credits();
        let waits = order.map(|i| {
            let partition = set.partitions[i].clone();
            let budget = self.core.budget.clone();
            let sweep = &sweep;
            async move {
                let reservation = acquire(&partition.shared.inbox, &budget, size, sweep).await;
                (partition, reservation)
            }
            .boxed()
        });
        let ((partition, reservation), _, _) = select_all(waits).await;
        Ok((partition, reservation.ok_or_else(Self::closed_error)?))
    }

    /// Counts an event as buffered and queues it to the partition's actor, taking what it
    /// `needs` (see `Inbox::push_event`); no await, so nothing is half-enqueued. On refusal, what
    /// `reservation` held is given back and the event comes back.
    fn push(
        &self,
        partition: &PartitionHandle,
        event: EventData,
        key: Option<String>,
        reservation: Reservation,
        needs: Needs,
    ) -> std::result::Result<usize, Refused> {
        let settings = &self.core.settings;
        // Counted before it is queued: the actor may send and release it at once.
        let total = settings.total_buffered.fetch_add(1, Ordering::SeqCst) + 1;
        let queued = Queued::new(event, key, reservation);
        match partition
            .shared
            .inbox
            .push_event(queued, needs, &settings.budget)
        {
            Ok(()) => Ok(total),
            Err(mut refused) => {
                settings.total_buffered.fetch_sub(1, Ordering::SeqCst);
                let (Refused::Closed(queued)
                | Refused::NoSlot(queued)
                | Refused::NoBytes(queued)
                | Refused::Busy(queued)) = &mut refused;
                let space = std::mem::take(&mut queued.space);
                release(&partition.shared.inbox, &settings.budget, 0, space.into());
                Err(refused)
            }
        }
    }

    /// Queues an event whose space is reserved; an error if the partition takes no more.
    fn push_reserved(
        &self,
        partition: &PartitionHandle,
        event: EventData,
        key: Option<String>,
        reservation: Reservation,
    ) -> Result<usize> {
        let needs = Needs {
            slot: false,
            bytes: 0,
            wait_for_lock: true,
        };
        self.push(partition, event, key, reservation, needs)
            .map_err(|_| Self::closed_error())
    }

    /// Enqueues into `partition` if it has room now, a slot and bytes (from the partition's
    /// credit) taken under its inbox lock. Otherwise the event comes back with what was short
    /// (or with `Short::Busy` when another enqueue held the lock and `wait_for_lock` is false).
    fn try_push(
        &self,
        partition: &PartitionHandle,
        event: EventData,
        key: Option<String>,
        size: usize,
        wait_for_lock: bool,
    ) -> std::result::Result<Placed, (EventData, Option<String>, Short)> {
        let needs = Needs {
            slot: true,
            bytes: self.core.budget.permits_for(size),
            wait_for_lock,
        };
        match self.push(partition, event, key, Reservation::default(), needs) {
            Ok(total) => Ok(Placed::Done(total)),
            Err(Refused::Closed(queued)) => Ok(Placed::Failed(queued.event, Self::closed_error())),
            Err(refused @ Refused::NoSlot(_)) => {
                let (event, key, _) = refused.into_queued().into_parts();
                Err((event, key, Short::Slots))
            }
            Err(refused @ Refused::NoBytes(_)) => {
                let (event, key, _) = refused.into_queued().into_parts();
                Err((event, key, Short::Bytes))
            }
            Err(refused @ Refused::Busy(_)) => {
                let (event, key, _) = refused.into_queued().into_parts();
                Err((event, key, Short::Busy))
            }
        }
    }
}
