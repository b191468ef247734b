//! The fast path of an enqueue: choose the partition, and push the event into it when it has
//! room now (one lock); otherwise say where to wait.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::capacity::release;
use super::super::client::BufferedProducerClient;
use super::super::command::Parcel;
use super::super::inbox::{Needs, Refused};
use super::super::options::EnqueueOptions;
use super::super::outcome::{OutcomeSender, Routing};
use super::super::partitions::{PartitionHandle, PartitionSet};
use super::super::routing::resolve;
use crate::error::{Error, ErrorKind};
use crate::event::EventData;

/// Where an enqueue that found no room at once goes to wait.
pub(super) enum Placement {
    /// This partition is full (or the byte budget): wait for it.
    Wait(Arc<PartitionHandle>),
    /// Automatic routing found no room anywhere: wait for the first partition with room.
    WaitAny,
}

/// How an enqueue's fast path ended.
pub(super) enum Placed {
    /// Enqueued.
    Done,
    /// Refused: the event's parcel comes back with the error.
    Failed(Parcel, Error),
    /// No room now: the event's parcel, where to wait, and what was short.
    Later(Parcel, Placement, Short),
}

/// What an enqueue found short of room.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Short {
    Slots,
    Bytes,
    /// The partition's lock was held by another enqueue (only when not waiting for it).
    Busy,
}

/// An event ready to place: the partition it goes to (None: automatic routing) and its
/// command.
pub(super) type Prepared<'a> = (Option<&'a Arc<PartitionHandle>>, Parcel);

/// The command that carries an event into a partition's inbox.
fn parcel_for(
    event: EventData,
    routing: Routing,
    outcome: Option<OutcomeSender>,
    requeued: bool,
) -> Parcel {
    let mut parcel = Parcel::new(event, routing, outcome);
    if requeued {
        parcel.queued.mark_requeued();
    }
    parcel
}

impl BufferedProducerClient {
    /// Step 1 and the fast path of 2 and 3: room now, or where to wait. Runs on the thread's
    /// copy of the partition list and clones nothing unless the event has to wait.
    pub(super) fn place_now(
        &self,
        set: &PartitionSet,
        options: &EnqueueOptions,
        event: EventData,
        outcome: Option<OutcomeSender>,
        size: usize,
        in_handler: bool,
    ) -> Placed {
        match self.prepare(set, options, event, outcome, in_handler) {
            Ok((target, command)) => self.place_prepared(set, target, command, size, in_handler),
            Err((command, error)) => Placed::Failed(command, error),
        }
    }

    /// Step 1: the partition an event goes to (None: automatic routing) and the command that
    /// carries it; the command comes back with the error when the options are wrong.
    // The command (one cache line) travels by value: boxing it would cost an allocation per
    // event on the fast path.
    #[allow(clippy::result_large_err)]
    pub(super) fn prepare<'a>(
        &self,
        set: &'a PartitionSet,
        options: &EnqueueOptions,
        event: EventData,
        outcome: Option<OutcomeSender>,
        in_handler: bool,
    ) -> Result<Prepared<'a>, (Parcel, Error)> {
        match resolve(set, options, &*self.core.partitioner) {
            Ok(Some((partition, routing))) => Ok((
                Some(partition),
                parcel_for(event, routing, outcome, in_handler),
            )),
            Ok(None) => Ok((
                None,
                parcel_for(event, Routing::Automatic, outcome, in_handler),
            )),
            Err(error) => Err((parcel_for(event, Routing::Automatic, None, false), error)),
        }
    }

    /// Steps 2 and 3 on the fast path, for a prepared event.
    pub(super) fn place_prepared(
        &self,
        set: &PartitionSet,
        target: Option<&Arc<PartitionHandle>>,
        command: Parcel,
        size: usize,
        in_handler: bool,
    ) -> Placed {
        match target {
            Some(partition) => {
                if self.core.options.pause_partition_on_failure
                    && partition.shared.is_paused()
                    && !in_handler
                {
                    return Placed::Failed(command, paused_error(&partition.shared.id));
                }
                // Handlers never wait: the wait path gives them what space there is at once.
                if in_handler {
                    return Placed::Later(
                        command,
                        Placement::Wait(partition.clone()),
                        Short::Slots,
                    );
                }
                match self.try_push(partition, command, size, true) {
                    Ok(placed) => placed,
                    Err((command, short)) => {
                        Placed::Later(command, Placement::Wait(partition.clone()), short)
                    }
                }
            }
            None => {
                if in_handler {
                    return Placed::Later(command, Placement::WaitAny, Short::Slots);
                }
                // (Paused partitions are passed over; when every one is, the wait for room
                // says so.)
                self.place_automatic(set, command, size)
            }
        }
    }

    /// A healthy partition with room now, else a failing one with room; never a paused one;
    /// never waits for room.
    ///
    /// A partition whose lock another enqueue holds is passed over for the next one, and only
    /// waited for if no other partition takes the event: enqueuers on different cores that
    /// happen to pick the same partition would otherwise queue up behind one another and then
    /// keep moving through the partitions in step, colliding on every event.
    fn place_automatic(&self, set: &PartitionSet, mut command: Parcel, size: usize) -> Placed {
        let count = set.partitions.len();
        let guarded = self.core.options.pause_partition_on_failure;
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
                            || (guarded && partition.shared.is_paused())
                        {
                            continue;
                        }
                        match self.try_push(partition, command, size, wait_for_lock) {
                            Ok(placed) => return placed,
                            // The budget is shared: no other partition has bytes either.
                            Err((command, Short::Bytes)) => {
                                return Placed::Later(command, Placement::WaitAny, Short::Bytes)
                            }
                            Err((back, Short::Busy)) => {
                                passed_over = true;
                                command = back;
                            }
                            Err((back, Short::Slots)) => command = back,
                        }
                    }
                }
            }
        }
        Placed::Later(command, Placement::WaitAny, Short::Slots)
    }

    /// Enqueues into `partition` if it has room now, a slot and bytes (from the partition's
    /// credit) taken under its inbox lock. Otherwise the command comes back with what was
    /// short (or with `Short::Busy` when another enqueue held the lock and `wait_for_lock` is
    /// false).
    // The command comes back by value, as in `prepare`.
    #[allow(clippy::result_large_err)]
    fn try_push(
        &self,
        partition: &PartitionHandle,
        command: Parcel,
        size: usize,
        wait_for_lock: bool,
    ) -> Result<Placed, (Parcel, Short)> {
        let needs = Needs {
            slot: true,
            bytes: self.core.budget.permits_for(size),
            wait_for_lock,
        };
        match self.push(partition, command, needs) {
            Ok(()) => Ok(Placed::Done),
            Err(Refused::Closed(command)) => Ok(Placed::Failed(command, Self::closed_error())),
            Err(Refused::NoSlot(command)) => Err((command, Short::Slots)),
            Err(Refused::NoBytes(command)) => Err((command, Short::Bytes)),
            Err(Refused::Busy(command)) => Err((command, Short::Busy)),
        }
    }

    /// Step 3: counts an event as buffered and queues it to the partition's actor, taking what
    /// it `needs` (see `Inbox::push_event`); no await, so nothing is half-enqueued. On
    /// refusal, the space the event held is given back and its command comes back.
    // The parcel comes back by value, as in `prepare`.
    #[allow(clippy::result_large_err)]
    pub(super) fn push(
        &self,
        partition: &PartitionHandle,
        command: Parcel,
        needs: Needs,
    ) -> Result<(), Refused> {
        let settings = &self.core.settings;
        // Counted before it is queued: the actor may send and release it at once.
        settings.total_buffered.fetch_add(1, Ordering::SeqCst);
        match partition
            .shared
            .inbox
            .push_event(command, needs, &settings.budget)
        {
            Ok(()) => Ok(()),
            Err(mut refused) => {
                settings.total_buffered.fetch_sub(1, Ordering::SeqCst);
                let (Refused::Closed(command)
                | Refused::NoSlot(command)
                | Refused::NoBytes(command)
                | Refused::Busy(command)) = &mut refused;
                let space = command.queued.take_space();
                release(&partition.shared.inbox, &settings.budget, space);
                Err(refused)
            }
        }
    }
}

/// The error of an enqueue to a partition the ordering guard paused.
pub(crate) fn paused_error(partition_id: &str) -> Error {
    Error::new(
        ErrorKind::PartitionPaused,
        format!(
            "partition '{partition_id}' is paused by the ordering guard after a batch of it failed; resume it with resume_partition"
        ),
    )
    .for_partition(partition_id)
}
