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
    /// Bytes charged (see [`Self::charge`]) beyond what the budget had free: the next bytes
    /// given back repay them before anybody can take them.
    owed: Arc<AtomicUsize>,
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
            owed: Arc::new(AtomicUsize::new(0)),
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

    /// Gives bytes back to the budget (released batches, credit swept from the partitions):
    /// they repay what charges owe first.
    pub(crate) fn give_back(&self, bytes: usize) {
        let free = bytes - self.repay(bytes);
        if free > 0 {
            self.semaphore.add_permits(free);
        }
    }

    /// Repays up to `bytes` of what charges owe; returns how much.
    fn repay(&self, bytes: usize) -> usize {
        if self.owed.load(Ordering::SeqCst) == 0 {
            return 0;
        }
        let before = self
            .owed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |owed| {
                Some(owed - owed.min(bytes))
            })
            .unwrap_or_else(|owed| owed);
        before.min(bytes)
    }

    /// Counts `bytes` the producer holds besides its events' (the copy a send in flight is
    /// serialized into, kept encode buffers) until the charge is dropped. Never waits, so that
    /// sends, which free the budget, never wait for it: what the budget lacks now is owed, and
    /// enqueues wait until the next bytes given back have repaid it.
    pub(crate) fn charge(&self, bytes: usize) -> Charge {
        let mut charge = Charge {
            budget: self.clone(),
            bytes: 0,
        };
        charge.set(bytes);
        charge
    }

    /// Bytes already taken (events' reservations), given back when the charge is dropped.
    pub(crate) fn holding(&self, bytes: usize) -> Charge {
        Charge {
            budget: self.clone(),
            bytes,
        }
    }

    fn take_now_or_owe(&self, bytes: usize) {
        let free = self.semaphore.available_permits().min(bytes);
        let taken = u32::try_from(free)
            .ok()
            .and_then(|n| self.semaphore.try_acquire_many(n).ok())
            .map_or(0, |permit| {
                let n = permit.num_permits();
                permit.forget();
                n
            });
        if bytes > taken {
            self.owed.fetch_add(bytes - taken, Ordering::SeqCst);
        }
    }

    /// Bytes free in the budget now (not counting partitions' credit).
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

/// Bytes of the budget held until dropped: by reported events on their way to the handler
/// ([`ByteBudget::holding`]), or by what the producer holds besides events
/// ([`ByteBudget::charge`]).
#[derive(Debug)]
pub(crate) struct Charge {
    budget: ByteBudget,
    bytes: usize,
}

impl Charge {
    /// Holds `bytes` from now on: takes or gives back the difference.
    pub(crate) fn set(&mut self, bytes: usize) {
        if bytes == self.bytes {
            return;
        }
        if bytes > self.bytes {
            self.budget.take_now_or_owe(bytes - self.bytes);
        } else {
            self.budget.give_back(self.bytes - bytes);
        }
        self.bytes = bytes;
    }

    /// The bytes it holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
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
    fn a_charge_never_waits_and_what_it_owes_is_repaid_before_anyone_takes_bytes() {
        let budget = ByteBudget::new(1000);
        assert_eq!(budget.try_take(700), Some(700));
        let charge = budget.charge(500);
        assert_eq!(budget.available(), 0, "300 taken, 200 owed");
        budget.give_back(150);
        assert_eq!(budget.available(), 0, "repaid 150 of the 200 owed");
        assert_eq!(budget.try_take(1), None);
        budget.give_back(550);
        assert_eq!(budget.available(), 500, "50 repaid, 500 free");
        drop(charge);
        assert_eq!(budget.available(), 1000, "everything back, nothing owed");
    }

    #[test]
    fn a_charge_follows_what_it_holds() {
        let budget = ByteBudget::new(1000);
        let mut charge = budget.charge(0);
        charge.set(400);
        assert_eq!(budget.available(), 600);
        charge.set(100);
        assert_eq!(budget.available(), 900);
        charge.set(1500);
        assert_eq!(budget.available(), 0, "1000 taken, 500 owed");
        charge.set(0);
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
