//! Buffer space: a count of events per partition and a byte budget shared by all partitions.
//! Space is held from enqueue until the event's batch is sent (or failed), then given back.
//! A partition's free slots live in its inbox (see `inbox.rs`), the budget's bytes in a
//! semaphore with a per-partition credit in front of it (see [`ByteBudget`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};

use super::inbox::Inbox;
use crate::event::{EventData, PropertyValue};

/// Space held by one or more buffered events, as counts of the partition's slots and of the
/// byte budget's permits. It holds no reference to either: whoever holds it gives it back
/// with [`release`] (the actor, once the batch is sent or failed). Counting instead of
/// holding owned permits keeps reference-count traffic off the enqueue path.
#[derive(Debug, Default)]
#[must_use = "space must be given back with release()"]
pub(crate) struct Reservation {
    slots: usize,
    bytes: usize,
}

impl Reservation {
    /// Joins another reservation into this one (a batch holds one for all its events).
    pub(crate) fn merge(&mut self, other: Reservation) {
        self.slots += other.slots;
        self.bytes += other.bytes;
    }

    /// A slot of the partition is now held for the event too.
    pub(crate) fn add_slot(&mut self) {
        self.slots += 1;
    }

    /// Bytes of the budget now held for the event too.
    pub(crate) fn add_bytes(&mut self, bytes: usize) {
        self.bytes += bytes;
    }
}

/// The space one queued event holds, packed: with it, an event waiting in a partition's inbox
/// takes one cache line (see `Queued`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EventSpace {
    bytes: u32,
    slot: bool,
}

impl EventSpace {
    /// A slot of the partition is now held for the event.
    pub(crate) fn add_slot(&mut self) {
        self.slot = true;
    }

    /// Bytes of the budget now held for the event (at most what `ByteBudget::permits_for`
    /// gives one event).
    pub(crate) fn add_bytes(&mut self, bytes: usize) {
        self.bytes += u32::try_from(bytes).unwrap_or(u32::MAX);
    }
}

impl From<Reservation> for EventSpace {
    /// The space of one event (one slot at most, bytes as `ByteBudget::permits_for` gives).
    fn from(reservation: Reservation) -> Self {
        debug_assert!(reservation.slots <= 1);
        Self {
            bytes: u32::try_from(reservation.bytes).unwrap_or(u32::MAX),
            slot: reservation.slots > 0,
        }
    }
}

impl From<EventSpace> for Reservation {
    fn from(space: EventSpace) -> Self {
        Self {
            slots: usize::from(space.slot),
            bytes: space.bytes as usize,
        }
    }
}

/// Gives the space of `reservation` back to the partition's slots and the byte budget; `count`
/// events (those the reservation was for, 0 for events never queued) are no longer buffered.
pub(crate) fn release(inbox: &Inbox, budget: &ByteBudget, count: usize, reservation: Reservation) {
    // Counts and slots first: an enqueuer woken by the freed space must not be counted on top
    // of the events it replaces (the counts would briefly exceed the partition's limit).
    if count > 0 || reservation.slots > 0 {
        inbox.release(count, reservation.slots);
    }
    budget.give_back(reservation.bytes);
}

/// The byte budget, shared by every partition.
///
/// Taking an event's bytes from the shared semaphore would cost an atomic operation on one
/// cache line that every enqueuer, on every core, writes. Instead each partition takes bytes
/// in chunks, ahead of need, and keeps them as credit in its inbox (under the lock an enqueue
/// takes anyway), so the shared semaphore is touched about once per chunk. Bytes still go
/// back to the semaphore when a batch is released, so credit only ever holds what the
/// partition's next events need. Credit is never allowed to keep anybody waiting: whoever
/// would have to wait for bytes first marks itself as waiting and sweeps every partition's
/// credit back ([`Self::waiting`]), and while someone waits, partitions take exactly what an
/// event needs and nothing ahead.
#[derive(Debug, Clone)]
pub(crate) struct ByteBudget {
    semaphore: Arc<Semaphore>,
    max: usize,
    /// Bytes a partition takes ahead of need: small next to the budget.
    chunk: usize,
    /// Enqueues waiting for bytes (or about to).
    waiters: Arc<AtomicUsize>,
}

/// Marks an enqueue as waiting for bytes while it lives (dropped with a cancelled enqueue).
pub(crate) struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ByteBudget {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
            // 64 KiB (some 400 small events) with the default 256 MiB budget; 1/64 of the
            // budget when it is small, so that credit never holds much of it.
            chunk: (max / 64).min(64 * 1024),
            waiters: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Permits an event of `size` bytes takes: never more than the whole budget (so that one
    /// huge event can still pass, alone), nor more than a single acquire can ask for.
    pub(crate) fn permits_for(&self, size: usize) -> usize {
        size.clamp(1, self.max).min(u32::MAX as usize)
    }

    /// Tops `credit` (a partition's, under its inbox lock) up to at least `need` bytes from
    /// the budget, with a chunk more when nobody waits for bytes; false when the budget has
    /// no room for `need` now.
    pub(crate) fn refill(&self, credit: &mut usize, need: usize) -> bool {
        let missing = need.saturating_sub(*credit);
        let take = |bytes: usize| {
            u32::try_from(bytes)
                .ok()
                .and_then(|n| self.semaphore.try_acquire_many(n).ok())
                .map(SemaphorePermit::forget)
                .is_some()
        };
        let ahead = self.chunk;
        let taken = if self.waiters.load(Ordering::SeqCst) == 0 && take(missing + ahead) {
            missing + ahead
        } else if take(missing) {
            missing
        } else {
            return false;
        };
        *credit += taken;
        // Someone started waiting meanwhile, after sweeping this partition (or it would have
        // taken the credit): keep nothing ahead of need, as the waiter relies on.
        if taken > missing && self.waiters.load(Ordering::SeqCst) > 0 {
            self.semaphore.add_permits(*credit - need);
            *credit = need;
        }
        true
    }

    /// Marks the caller as waiting for bytes, so that no partition takes bytes ahead of need
    /// until it is dropped. Sweep the partitions' credit back after this, before waiting.
    pub(crate) fn waiting(&self) -> Waiting {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        Waiting(self.waiters.clone())
    }

    /// Gives bytes back to the budget (credit swept from the partitions).
    pub(crate) fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.semaphore.add_permits(bytes);
        }
    }
}

/// Roughly how many bytes an event occupies while buffered: body, properties, identifiers
/// and a constant for the bookkeeping around it. Cheap: no encoding.
pub(crate) fn estimated_size(event: &EventData) -> usize {
    const OVERHEAD: usize = 64;
    let properties: usize = event
        .properties()
        .iter()
        .map(|(name, value)| name.len() + 8 + value_size(value))
        .sum();
    let ids = event.message_id().map_or(0, str::len)
        + event.correlation_id().map_or(0, str::len)
        + event.content_type().map_or(0, str::len);
    OVERHEAD + event.body().len() + properties + ids
}

fn value_size(value: &PropertyValue) -> usize {
    match value {
        PropertyValue::String(s) => s.len(),
        PropertyValue::Binary(b) => b.len(),
        _ => 16,
    }
}

/// A slot taken while the enqueue may still be cancelled: given back unless kept.
struct SlotGuard<'a> {
    inbox: &'a Inbox,
    reservation: Option<Reservation>,
}

impl SlotGuard<'_> {
    fn keep(mut self) -> Reservation {
        self.reservation.take().unwrap_or_default()
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            self.inbox.release(0, reservation.slots);
        }
    }
}

/// Takes `permits` bytes of the budget: now if it has room, else after marking the caller as
/// waiting and calling `sweep` (which gives every partition's credit back) and waiting.
/// Cancel-safe.
async fn bytes(budget: &ByteBudget, permits: u32, sweep: &(dyn Fn() + Sync)) -> Option<usize> {
    let permit = match budget.semaphore.try_acquire_many(permits) {
        Ok(permit) => permit,
        Err(TryAcquireError::Closed) => return None,
        Err(TryAcquireError::NoPermits) => {
            let _waiting = budget.waiting();
            sweep();
            budget.semaphore.acquire_many(permits).await.ok()?
        }
    };
    let taken = permit.num_permits();
    permit.forget();
    Some(taken)
}

/// Waits for space for one event of `size` bytes in the partition (`inbox`) and the byte
/// budget. When the budget is short, marks itself as waiting and calls `sweep`, which must
/// give every partition's credit back, before it waits. Cancel-safe: dropped before
/// completion, it holds nothing.
pub(crate) async fn acquire(
    inbox: &Inbox,
    budget: &ByteBudget,
    size: usize,
    sweep: &(dyn Fn() + Sync),
) -> Option<Reservation> {
    let slot = SlotGuard {
        inbox,
        reservation: Some(inbox.take_slot().await),
    };
    let taken = bytes(budget, budget.permits_for(size) as u32, sweep).await?;
    let mut reservation = slot.keep();
    reservation.add_bytes(taken);
    Some(reservation)
}

/// Space now, a slot and bytes straight from the budget (not from credit), or None when the
/// partition or the budget is full.
pub(crate) fn try_acquire(inbox: &Inbox, budget: &ByteBudget, size: usize) -> Option<Reservation> {
    let slot = SlotGuard {
        inbox,
        reservation: Some(inbox.try_take_slot()?),
    };
    let permit = budget
        .semaphore
        .try_acquire_many(budget.permits_for(size) as u32)
        .ok()?;
    let mut reservation = slot.keep();
    reservation.add_bytes(permit.num_permits());
    permit.forget();
    Some(reservation)
}

/// Space for an event re-enqueued by a handler: whatever is free now, and no wait for the rest.
/// The handler's batch has just given back at least as much, so the overdraft is bounded.
pub(crate) fn acquire_for_handler(inbox: &Inbox, budget: &ByteBudget, size: usize) -> Reservation {
    let mut reservation = inbox.try_take_slot().unwrap_or_default();
    if let Ok(bytes) = budget
        .semaphore
        .try_acquire_many(budget.permits_for(size) as u32)
    {
        reservation.add_bytes(bytes.num_permits());
        bytes.forget();
    }
    reservation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn space_is_held_until_released() {
        let events = Inbox::new(2);
        let budget = ByteBudget::new(1000);
        let mut a = try_acquire(&events, &budget, 400).expect("room");
        let b = try_acquire(&events, &budget, 400).expect("room");
        assert!(
            try_acquire(&events, &budget, 1).is_none(),
            "no event slot left"
        );
        a.merge(b);
        assert_eq!(budget.semaphore.available_permits(), 200);
        release(&events, &budget, 0, a);
        assert!(events.try_take_slot().is_some() && events.try_take_slot().is_some());
        assert_eq!(budget.semaphore.available_permits(), 1000);
    }

    #[tokio::test]
    async fn a_huge_event_takes_the_whole_budget_but_still_passes() {
        let events = Inbox::new(10);
        let budget = ByteBudget::new(1000);
        let r = acquire(&events, &budget, 5000, &|| {})
            .await
            .expect("passes alone");
        assert_eq!(budget.semaphore.available_permits(), 0);
        release(&events, &budget, 0, r);
        assert_eq!(budget.semaphore.available_permits(), 1000);
    }

    #[tokio::test]
    async fn a_cancelled_acquire_holds_nothing() {
        let events = Inbox::new(2);
        let budget = ByteBudget::new(1000);
        let held = try_acquire(&events, &budget, 995).expect("room");
        // Gets a slot, then waits for bytes; cancelled there, it must give the slot back.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            acquire(&events, &budget, 10, &|| {}),
        )
        .await;
        assert!(waiting.is_err());
        assert_eq!(budget.semaphore.available_permits(), 5);
        assert!(
            events.may_have_room(),
            "the waiting acquire's slot came back"
        );
        release(&events, &budget, 0, held);
        assert_eq!(budget.semaphore.available_permits(), 1000);
    }

    #[test]
    fn handler_overdraft_never_waits() {
        let events = Inbox::new(0);
        let budget = ByteBudget::new(65536);
        let r = acquire_for_handler(&events, &budget, 10);
        assert_eq!(r.slots, 0);
        assert_eq!(r.bytes, 10);
        release(&events, &budget, 0, r);
        assert!(!events.may_have_room(), "nothing taken, nothing given back");
    }

    #[test]
    fn credit_is_taken_ahead_unless_someone_waits() {
        let budget = ByteBudget::new(64 * 64 * 1024);
        let mut credit = 0;
        assert!(budget.refill(&mut credit, 100));
        assert_eq!(credit, 100 + 64 * 1024, "a chunk ahead");
        let _waiting = budget.waiting();
        let mut other = 0;
        assert!(budget.refill(&mut other, 100));
        assert_eq!(other, 100, "exactly what is needed while someone waits");
    }

    #[test]
    fn estimates_grow_with_content() {
        let small = estimated_size(&EventData::from("x"));
        let big = estimated_size(&EventData::from(vec![0u8; 1000]).with_property("name", "value"));
        assert!(big > small + 1000);
    }
}
