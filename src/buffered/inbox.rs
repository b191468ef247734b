//! The queue from enqueuers to a partition's actor, and the partition's share of the buffer:
//! a deque behind a mutex, which the actor takes whole, with the partition's free event slots,
//! its count of buffered events and its byte credit under the same lock.
//!
//! Why not a tokio channel and a semaphore: a channel send costs four atomic read-modify-
//! writes per event (message count, tail position, ready bit, waker) and a semaphore acquire
//! one more, on cache lines the actor's core and the other enqueuers' cores write too; each
//! such operation cost 15 to 35 ns on the 2-core machine this was measured on, more than all
//! the rest of an enqueue. Here an enqueue with room takes one lock (two atomic operations)
//! and finds everything it needs on that one cache line: a slot, bytes (see
//! [`ByteBudget::refill`]) and the queue. The actor swaps out everything queued in one go,
//! and is woken only when it had found the queue empty: once per burst, not once per event.
//! The lock is held only to push, swap or count, never across an await.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use tokio::sync::Notify;

use super::budget::{ByteBudget, Reservation};
use super::command::{Command, Line, Parcel};
use super::outcome::OutcomeSender;
use crate::telemetry::QueueCounts;

/// Why an event was not queued; the event comes back with it, holding what it held before.
pub(crate) enum Refused {
    /// The partition takes no more commands (closing, or the producer is gone).
    Closed(Parcel),
    /// The partition has no free slot.
    NoSlot(Parcel),
    /// The byte budget has no room for the event right now.
    NoBytes(Parcel),
    /// Another enqueue held the lock, and the caller asked not to wait for it.
    Busy(Parcel),
}

impl Refused {
    /// The event and what it still holds.
    pub(crate) fn into_parcel(self) -> Parcel {
        match self {
            Self::Closed(parcel)
            | Self::NoSlot(parcel)
            | Self::NoBytes(parcel)
            | Self::Busy(parcel) => parcel,
        }
    }
}

/// What a queued event still needs to take: a slot of the partition, bytes of the budget;
/// and whether to wait for the lock when another enqueue holds it (automatic routing would
/// rather try another partition, see `BufferedProducerClient::place_automatic`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Needs {
    pub slot: bool,
    pub bytes: usize,
    pub wait_for_lock: bool,
}

/// Everything an enqueue reads and writes, with the lock word, fits one cache line (64 bytes:
/// the counts are `u32`, as a partition holds at most a million events), so that an enqueue
/// moves one line from the core that used the partition last, not two. (Outcome senders live
/// apart, see `Inbox::outcomes`.)
struct State {
    commands: VecDeque<Line<Command>>,
    /// Bytes of the shared budget this partition took ahead of need (see `ByteBudget`).
    credit: usize,
    /// Events queued and not yet released by the actor (sent or failed).
    buffered: u32,
    /// Event slots free: the partition's limit minus the slots that queued, batched and
    /// in-flight events hold.
    free_slots: u32,
    /// Bytes of the budget the buffered events hold (for the metrics; saturates at 4 GiB).
    held_bytes: u32,
    /// The actor found the queue empty and waits: the next push wakes it.
    actor_waiting: bool,
    /// No more commands are taken; those queued are still handed to the actor.
    closed: bool,
}

/// A partition's queue of commands and its share of the buffer, written by enqueuers and by
/// the actor. Aligned so that the lock and the state start a cache line (`repr(C)` keeps them
/// first).
#[repr(C, align(64))]
pub(crate) struct Inbox {
    state: Mutex<State>,
    /// The outcome senders of the tracked events among the queued commands, in the same
    /// order; written under the state's lock (this one is taken inside it), and only by
    /// enqueues that asked for an outcome, so the others never touch its line.
    outcomes: Mutex<VecDeque<OutcomeSender>>,
    /// Whether every slot is taken, readable without the lock: automatic routing skips full
    /// partitions by reading this rather than by taking their locks. Written only when the
    /// partition fills up or gets room again, so reading it rarely moves its line.
    full: AtomicBool,
    /// Whether the partition filled up since the actor last cleared this (when it started a
    /// send): the partition is under pressure, and batches should fill before they go.
    filled_up: AtomicBool,
    /// Events released so far (sent or failed): with `buffered`, what was ever queued.
    /// Written under the state's lock, by the actor only, so a snapshot taken under the lock
    /// sees both counts agree; apart from the state so that enqueues never touch it.
    released: AtomicU64,
    /// Wakes the actor when it waits for commands.
    wake: Notify,
    /// Wakes enqueuers waiting for a slot when slots are given back.
    room: Notify,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Inbox")
            .field("queued", &state.commands.len())
            .field("buffered", &state.buffered)
            .field("free_slots", &state.free_slots)
            .field("closed", &state.closed)
            .finish()
    }
}

impl Inbox {
    /// An inbox for a partition that buffers at most `slots` events.
    pub(crate) fn new(slots: usize) -> Self {
        let slots = u32::try_from(slots).unwrap_or(u32::MAX);
        Self {
            state: Mutex::new(State {
                commands: VecDeque::new(),
                actor_waiting: false,
                closed: false,
                buffered: 0,
                free_slots: slots,
                held_bytes: 0,
                credit: 0,
            }),
            outcomes: Mutex::new(VecDeque::new()),
            full: AtomicBool::new(slots == 0),
            filled_up: AtomicBool::new(false),
            released: AtomicU64::new(0),
            wake: Notify::new(),
            room: Notify::new(),
        }
    }

    /// Takes a slot, under the lock; marks the partition full when it was the last.
    fn take_slot_locked(&self, state: &mut State) {
        state.free_slots -= 1;
        if state.free_slots == 0 {
            self.full.store(true, Ordering::Relaxed);
            self.filled_up.store(true, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; if something did, the state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queue of outcome senders (take it only while holding the state's lock).
    fn lock_outcomes(&self) -> MutexGuard<'_, VecDeque<OutcomeSender>> {
        self.outcomes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an event, first taking what it `needs`: a slot (refused when none is free) and
    /// bytes, from this partition's credit, refilled from the budget when short (refused when
    /// the budget has no room). Counts the event as buffered; its outcome sender, if any, goes
    /// to the queue of outcomes. A refused event holds what it held before.
    // The event comes back by value: boxing it would cost an allocation per enqueue.
    #[allow(clippy::result_large_err)]
    pub(crate) fn push_event(
        &self,
        mut event: Parcel,
        needs: Needs,
        budget: &ByteBudget,
    ) -> Result<(), Refused> {
        let mut state = if needs.wait_for_lock {
            self.lock()
        } else {
            match self.state.try_lock() {
                Ok(state) => state,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return Err(Refused::Busy(event)),
            }
        };
        if state.closed {
            return Err(Refused::Closed(event));
        }
        if needs.slot && state.free_slots == 0 {
            return Err(Refused::NoSlot(event));
        }
        if needs.bytes > 0 {
            if state.credit < needs.bytes && !budget.refill(&mut state.credit, needs.bytes) {
                return Err(Refused::NoBytes(event));
            }
            state.credit -= needs.bytes;
            event.queued.hold_bytes(needs.bytes);
        }
        if needs.slot {
            self.take_slot_locked(&mut state);
            event.queued.hold_slot();
        }
        state.buffered = state.buffered.saturating_add(1);
        state.held_bytes = state.held_bytes.saturating_add(event.queued.held_bytes());
        let Parcel {
            mut queued,
            outcome,
        } = event;
        if let Some(outcome) = outcome {
            queued.mark_tracked();
            self.lock_outcomes().push_back(outcome);
        }
        state.commands.push_back(Line(Command::Event(queued)));
        self.wake_actor(state);
        Ok(())
    }

    /// Queues a flush or close; gives it back when the partition takes no more commands.
    pub(crate) fn push_command(&self, command: Command) -> Result<(), Command> {
        let mut state = self.lock();
        if state.closed {
            return Err(command);
        }
        state.commands.push_back(Line(command));
        self.wake_actor(state);
        Ok(())
    }

    fn wake_actor(&self, mut state: MutexGuard<'_, State>) {
        let wake = std::mem::take(&mut state.actor_waiting);
        drop(state);
        if wake {
            // Stores a permit if the actor is not polling yet, so the wake-up is never lost.
            self.wake.notify_one();
        }
    }

    /// Waits until commands are queued and moves them all to `into`, and the outcome senders
    /// of the tracked events among them to `outcomes` (both must be empty; the queues keep
    /// their allocations in exchange). False once the inbox is closed and empty. Cancel-safe:
    /// commands are moved only in the poll that returns.
    pub(crate) async fn recv(
        &self,
        into: &mut VecDeque<Line<Command>>,
        outcomes: &mut VecDeque<OutcomeSender>,
    ) -> bool {
        debug_assert!(into.is_empty() && outcomes.is_empty());
        loop {
            {
                let mut state = self.lock();
                if !state.commands.is_empty() {
                    std::mem::swap(&mut state.commands, into);
                    let mut waiting = self.lock_outcomes();
                    if !waiting.is_empty() {
                        std::mem::swap(&mut *waiting, outcomes);
                    }
                    state.actor_waiting = false;
                    return true;
                }
                if state.closed {
                    return false;
                }
                state.actor_waiting = true;
            }
            self.wake.notified().await;
        }
    }

    /// Takes everything queued now, and the outcome senders of its tracked events, without
    /// waiting (for abandoning).
    pub(crate) fn take_all(
        &self,
        into: &mut VecDeque<Line<Command>>,
        outcomes: &mut VecDeque<OutcomeSender>,
    ) {
        let mut state = self.lock();
        into.append(&mut state.commands);
        outcomes.append(&mut self.lock_outcomes());
    }

    /// Whether nothing is queued and every slot is taken: only a send can make room.
    pub(crate) fn is_full_and_empty(&self) -> bool {
        let state = self.lock();
        state.commands.is_empty() && state.free_slots == 0
    }

    /// Takes no more commands; those queued are still handed out. Wakes a waiting actor so
    /// that it sees the end.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        self.wake_actor(state);
    }

    /// Whether the partition filled up since the last [`Self::clear_filled_up`].
    pub(crate) fn filled_up(&self) -> bool {
        self.filled_up.load(Ordering::Relaxed)
    }

    /// Starts watching for the partition filling up anew (the actor, as it starts a send).
    pub(crate) fn clear_filled_up(&self) {
        if self.filled_up.load(Ordering::Relaxed) {
            self.filled_up.store(false, Ordering::Relaxed);
        }
    }

    /// Whether a slot looked free a moment ago (no lock: a hint for routing).
    pub(crate) fn may_have_room(&self) -> bool {
        !self.full.load(Ordering::Relaxed)
    }

    /// Takes a free slot now, if there is one.
    pub(crate) fn try_take_slot(&self) -> Option<Reservation> {
        let mut state = self.lock();
        if state.free_slots == 0 {
            return None;
        }
        self.take_slot_locked(&mut state);
        let mut reservation = Reservation::default();
        reservation.add_slot();
        Some(reservation)
    }

    /// Waits for a free slot and takes it. Cancel-safe: nothing is taken until it returns.
    /// Not first come, first served: an enqueue that finds a slot free takes it even while
    /// others wait; waiting enqueuers all retry whenever slots are given back (a whole batch's
    /// at a time).
    pub(crate) async fn take_slot(&self) -> Reservation {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before looking, so that slots given back after the look wake it.
            room.as_mut().enable();
            if let Some(reservation) = self.try_take_slot() {
                return reservation;
            }
            room.await;
        }
    }

    /// Events queued and not yet released.
    pub(crate) fn buffered(&self) -> usize {
        self.lock().buffered as usize
    }

    /// Events accepted so far, those buffered now and the bytes they hold, read together.
    pub(crate) fn queue_counts(&self) -> QueueCounts {
        let state = self.lock();
        let buffered = u64::from(state.buffered);
        QueueCounts {
            enqueued: self.released.load(Ordering::Relaxed) + buffered,
            buffered_events: buffered,
            buffered_bytes: u64::from(state.held_bytes),
        }
    }

    /// `count` queued events, holding `bytes` of the budget, are no longer buffered (sent or
    /// failed; 0 and 0 for space of events never queued) and `slots` slots are free again.
    /// All change together, under the lock: an enqueuer that takes a freed slot is never
    /// counted on top of the event it replaces.
    pub(crate) fn release(&self, count: usize, bytes: usize, slots: usize) {
        {
            let mut state = self.lock();
            self.released.fetch_add(count as u64, Ordering::Relaxed);
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            let slots = u32::try_from(slots).unwrap_or(u32::MAX);
            let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
            state.buffered = state.buffered.saturating_sub(count);
            state.held_bytes = state.held_bytes.saturating_sub(bytes);
            let was_full = state.free_slots == 0;
            state.free_slots = state.free_slots.saturating_add(slots);
            if was_full && state.free_slots > 0 {
                self.full.store(false, Ordering::Relaxed);
            }
        }
        if slots > 0 {
            self.room.notify_waiters();
        }
    }

    /// Takes this partition's unused byte credit (to give it back to the budget).
    pub(crate) fn take_credit(&self) -> usize {
        std::mem::take(&mut self.lock().credit)
    }

    /// Frees the queue's memory once the actor has stopped.
    pub(crate) fn shrink(&self) {
        self.lock().commands = VecDeque::new();
        *self.lock_outcomes() = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enqueue_touches_one_cache_line_of_the_inbox_and_writes_one_for_its_event() {
        assert!(std::mem::size_of::<Mutex<State>>() <= 64);
        assert_eq!(std::mem::align_of::<Inbox>(), 64);
        assert_eq!(std::mem::size_of::<Line<Command>>(), 64);
        assert_eq!(std::mem::align_of::<Line<Command>>(), 64);
    }
}
