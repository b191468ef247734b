//! The slow path of an enqueue: waiting for space (back pressure), cancel-safe, in one
//! partition or in whichever partition gets room first; `try_enqueue_event`, which never
//! waits; and pushing an event whose space is reserved.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::select_all;
use futures_util::FutureExt;

use super::placement::{Placed, Placement, Short};
use super::EnqueueError;
use crate::buffered::budget::Reservation;
use crate::buffered::capacity::{acquire, acquire_for_handler, held_size, try_acquire};
use crate::buffered::client::BufferedProducerClient;
use crate::buffered::command::Parcel;
use crate::buffered::inbox::Needs;
use crate::buffered::options::EnqueueOptions;
use crate::buffered::partitions::{PartitionHandle, PartitionSet};
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;

fn buffer_full() -> Error {
    Error::new(
        ErrorKind::BufferFull,
        "the partition's buffer (or the byte budget) is full",
    )
}

impl BufferedProducerClient {
    /// Enqueues one event if there is room now, and never waits for room: when the partition
    /// or the byte budget is full, the event comes back with an error of kind
    /// [`ErrorKind::BufferFull`]. (The first call still connects.)
    pub async fn try_enqueue_event(
        &self,
        mut event: EventData,
        options: EnqueueOptions,
    ) -> std::result::Result<(), EnqueueError> {
        if self.is_closed() {
            return Err(EnqueueError::new(event, Self::closed_error()));
        }
        let set = match self.partitions().await {
            Ok(set) => set,
            Err(e) => return Err(EnqueueError::new(event, e)),
        };
        self.core.settings.telemetry.stamp(&mut event);
        let size = held_size(&event);
        if let Err(error) = self.check_size(&event, &options, size) {
            return Err(EnqueueError::new(event, error));
        }
        let (command, placement) = match self.place_now(&set, &options, event, None, size, false) {
            Placed::Done => return Ok(()),
            Placed::Failed(command, e) => return Err(EnqueueError::from_parcel(command, e)),
            // (Busy does not come back from place_now: it waits for locks when it must.)
            Placed::Later(command, _, Short::Slots | Short::Busy) => {
                return Err(EnqueueError::from_parcel(command, buffer_full()))
            }
            Placed::Later(command, placement, Short::Bytes) => (command, placement),
        };
        // Short of bytes: maybe only because partitions hold some as credit. Take it back and
        // try once more, with bytes straight from the budget.
        self.sweep_credits();
        let found = match placement {
            Placement::Wait(partition) => {
                try_acquire(&partition.shared.inbox, &self.core.budget, size)
                    .map(|reservation| (partition, reservation))
            }
            Placement::WaitAny => self.try_reserve_automatic(&set, size),
        };
        let Some((partition, reservation)) = found else {
            return Err(EnqueueError::from_parcel(command, buffer_full()));
        };
        self.push_reserved(&partition, command, reservation)
    }

    /// A healthy partition with room now, else a failing one with room (never a paused one),
    /// with bytes straight from the budget; never waits.
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
                if partition.shared.failing.load(Ordering::Relaxed) != want_failing
                    || partition.shared.is_paused()
                {
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
    pub(crate) fn sweep_credits(&self) {
        let set = self.current_partitions();
        let credit = set
            .partitions
            .iter()
            .map(|p| p.shared.inbox.take_credit())
            .sum();
        self.core.budget.give_back(credit);
    }

    /// Space in the partition for one event: waits while it is full (not in a handler).
    pub(super) async fn reserve(
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
    /// failing one with room, else the first to get room; never a paused one.
    pub(super) async fn reserve_automatic(
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
        let usable = |i: &usize| !set.partitions[*i].shared.is_paused();
        if in_handler {
            // Events a handler re-enqueues never wait; they go to the next partition that is
            // neither failing nor paused (or the next one, if all are).
            let index = order
                .clone()
                .filter(usable)
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
        let waits: Vec<_> = order
            .filter(usable)
            .map(|i| {
                let partition = set.partitions[i].clone();
                let budget = self.core.budget.clone();
                let sweep = &sweep;
                async move {
                    let reservation = acquire(&partition.shared.inbox, &budget, size, sweep).await;
                    (partition, reservation)
                }
                .boxed()
            })
            .collect();
        if waits.is_empty() {
            return Err(Error::new(
                ErrorKind::PartitionPaused,
                "every partition is paused by the ordering guard; resume one with resume_partition",
            ));
        }
        let ((partition, reservation), _, _) = select_all(waits).await;
        Ok((partition, reservation.ok_or_else(Self::closed_error)?))
    }

    /// Queues an event whose space is reserved; an error if the partition takes no more.
    pub(super) fn push_reserved(
        &self,
        partition: &PartitionHandle,
        mut command: Parcel,
        reservation: Reservation,
    ) -> std::result::Result<(), EnqueueError> {
        command.queued.hold(reservation);
        let needs = Needs {
            slot: false,
            bytes: 0,
            wait_for_lock: true,
        };
        self.push(partition, command, needs).map_err(|refused| {
            EnqueueError::from_parcel(refused.into_parcel(), Self::closed_error())
        })
    }
}
