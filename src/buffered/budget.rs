//! The units of buffer space: what one event or one batch holds ([`Reservation`]) and the
//! byte budget every partition shares ([`ByteBudget`]). Pure accounting: nothing here knows
//! about partitions, queues or the network.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};

/// Space held by one or more buffered events, as counts of the partition's slots and of the
/// byte budget's permits. It holds no reference to either: whoever holds it gives it back
/// (the actor, once the batch is sent or failed, see `capacity::release`). Counting instead
/// of holding owned permits keeps reference-count traffic off the enqueue path.
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

    /// Partition slots held.
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// Budget bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
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

    /// Takes the bytes of an event of `size` now, straight from the budget (not from any
    /// partition's credit); None when the budget has no room for them.
    pub(crate) fn try_take(&self, size: usize) -> Option<usize> {
        let permit = self
            .semaphore
            .try_acquire_many(self.permits_for(size) as u32)
            .ok()?;
        let taken = permit.num_permits();
        permit.forget();
        Some(taken)
    }

    /// Takes the bytes of an event of `size`: now if the budget has room, else after marking
    /// the caller as waiting and calling `sweep` (which gives every partition's credit back)
    /// and waiting. None once the budget is closed. Cancel-safe.
    pub(crate) async fn take(&self, size: usize, sweep: &(dyn Fn() + Sync)) -> Option<usize> {
        let permits = self.permits_for(size) as u32;
        let permit = match self.semaphore.try_acquire_many(permits) {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return None,
            Err(TryAcquireError::NoPermits) => {
                let _waiting = self.waiting();
                sweep();
                self.semaphore.acquire_many(permits).await.ok()?
            }
        };
        let taken = permit.num_permits();
        permit.forget();
        Some(taken)
    }

    /// Gives bytes back to the budget (released batches, credit swept from the partitions).
    pub(crate) fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.semaphore.add_permits(bytes);
        }
    }

    /// Bytes free in the budget now (not counting partitions' credit).
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn one_event_never_takes_more_than_the_whole_budget() {
        let budget = ByteBudget::new(1000);
        assert_eq!(budget.try_take(5000), Some(1000));
        assert_eq!(budget.try_take(1), None);
        budget.give_back(1000);
        assert_eq!(budget.available(), 1000);
    }

    #[test]
    fn reservations_merge() {
        let mut one = Reservation::default();
        one.add_slot();
        one.add_bytes(100);
        let mut batch = Reservation::default();
        batch.merge(one);
        batch.add_bytes(5);
        assert_eq!((batch.slots(), batch.bytes()), (1, 105));
    }
}
