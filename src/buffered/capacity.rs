//! Buffer space: a count of events per partition and a byte budget shared by all partitions.
//! Space is held from enqueue until the event's batch is sent (or failed), then given back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};

use crate::event::{EventData, PropertyValue};

/// Space held by one or more buffered events, as counts of permits taken out of the
/// partition's slots and the byte budget. It holds no reference to either: whoever holds it
/// gives it back with [`release`] (the actor, once the batch is sent or failed). Counting
/// instead of holding owned permits keeps reference-count traffic on the shared semaphores
/// off the enqueue path.
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

    /// Bytes of the budget now held for the event too.
    pub(crate) fn add_bytes(&mut self, bytes: usize) {
        self.bytes += bytes;
    }
}

/// Gives the space of `reservation` back to the partition's slots and the byte budget.
pub(crate) fn release(slots: &Semaphore, budget: &ByteBudget, reservation: Reservation) {
    if reservation.slots > 0 {
        slots.add_permits(reservation.slots);
    }
    if reservation.bytes > 0 {
        budget.semaphore.add_permits(reservation.bytes);
    }
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

/// Turns borrowed permits into counted space; from here on only [`release`] gives it back.
fn counted(slot: SemaphorePermit<'_>, bytes: SemaphorePermit<'_>) -> Reservation {
    let reservation = Reservation {
        slots: slot.num_permits(),
        bytes: bytes.num_permits(),
    };
    slot.forget();
    bytes.forget();
    reservation
}

/// Waits for space for one event of `size` bytes in the partition's slots and the byte
/// budget. When the budget is short, marks itself as waiting and calls `sweep`, which must
/// give every partition's credit back, before it waits. Cancel-safe: dropped before
/// completion, the permits it got are dropped (given back).
pub(crate) async fn acquire(
    slots: &Semaphore,
    budget: &ByteBudget,
    size: usize,
    sweep: &(dyn Fn() + Sync),
) -> Option<Reservation> {
    let slot = slots.acquire().await.ok()?;
    let permits = budget.permits_for(size) as u32;
    let bytes = match budget.semaphore.try_acquire_many(permits) {
        Ok(bytes) => bytes,
        Err(TryAcquireError::Closed) => return None,
        Err(TryAcquireError::NoPermits) => {
            let _waiting = budget.waiting();
            sweep();
            budget.semaphore.acquire_many(permits).await.ok()?
        }
    };
    Some(counted(slot, bytes))
}

/// A slot of the partition now, without bytes (the inbox takes those from its credit), or
/// None when the partition is full.
pub(crate) fn try_slot(slots: &Semaphore) -> Option<Reservation> {
    let slot = slots.try_acquire().ok()?;
    let reservation = Reservation {
        slots: slot.num_permits(),
        bytes: 0,
    };
    slot.forget();
    Some(reservation)
}

/// Space now, slot and bytes straight from the budget (not from credit), or None when the
/// partition or the budget is full.
pub(crate) fn try_acquire(
    slots: &Semaphore,
    budget: &ByteBudget,
    size: usize,
) -> Option<Reservation> {
    let slot = slots.try_acquire().ok()?;
    let bytes = match budget
        .semaphore
        .try_acquire_many(budget.permits_for(size) as u32)
    {
        Ok(permit) => permit,
        Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => return None,
    };
    Some(counted(slot, bytes))
}

/// Space for an event re-enqueued by a handler: whatever is free now, and no wait for the rest.
/// The handler's batch has just given back at least as much, so the overdraft is bounded.
pub(crate) fn acquire_for_handler(
    slots: &Semaphore,
    budget: &ByteBudget,
    size: usize,
) -> Reservation {
    let mut reservation = Reservation::default();
    if let Ok(slot) = slots.try_acquire() {
        reservation.slots = slot.num_permits();
        slot.forget();
    }
    if let Ok(bytes) = budget
        .semaphore
        .try_acquire_many(budget.permits_for(size) as u32)
    {
        reservation.bytes = bytes.num_permits();
        bytes.forget();
    }
    reservation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn space_is_held_until_released() {
        let events = Arc::new(Semaphore::new(2));
        let budget = ByteBudget::new(1000);
        let mut a = try_acquire(&events, &budget, 400).expect("room");
        let b = try_acquire(&events, &budget, 400).expect("room");
        assert!(
            try_acquire(&events, &budget, 1).is_none(),
            "no event slot left"
        );
        a.merge(b);
        assert_eq!(budget.semaphore.available_permits(), 200);
        release(&events, &budget, a);
        assert_eq!(events.available_permits(), 2);
        assert_eq!(budget.semaphore.available_permits(), 1000);
    }

    #[tokio::test]
    async fn a_huge_event_takes_the_whole_budget_but_still_passes() {
        let events = Arc::new(Semaphore::new(10));
        let budget = ByteBudget::new(1000);
        let r = acquire(&events, &budget, 5000, &|| {})
            .await
            .expect("passes alone");
        assert_eq!(budget.semaphore.available_permits(), 0);
        release(&events, &budget, r);
        assert_eq!(budget.semaphore.available_permits(), 1000);
    }

    #[tokio::test]
    async fn a_cancelled_acquire_holds_nothing() {
        let events = Arc::new(Semaphore::new(1));
        let budget = ByteBudget::new(1000);
        let held = try_acquire(&events, &budget, 10).expect("room");
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            acquire(&events, &budget, 10, &|| {}),
        )
        .await;
        assert!(waiting.is_err());
        // The cancelled acquire gave back what it had; only the held space is out.
        assert_eq!(budget.semaphore.available_permits(), 990);
        release(&events, &budget, held);
        assert_eq!(events.available_permits(), 1);
        assert_eq!(budget.semaphore.available_permits(), 1000);
    }

    #[test]
    fn handler_overdraft_never_waits() {
        let events = Arc::new(Semaphore::new(0));
        let budget = ByteBudget::new(65536);
        let r = acquire_for_handler(&events, &budget, 10);
        assert_eq!(r.slots, 0);
        assert_eq!(r.bytes, 10);
        release(&events, &budget, r);
        assert_eq!(
            events.available_permits(),
            0,
            "nothing taken, nothing given back"
        );
    }

    #[test]
    fn estimates_grow_with_content() {
        let small = estimated_size(&EventData::from("x"));
        let big = estimated_size(&EventData::from(vec![0u8; 1000]).with_property("name", "value"));
        assert!(big > small + 1000);
    }
}
