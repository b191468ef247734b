//! Buffer space: a count of events per partition and a byte budget shared by all partitions.
//! Space is held from enqueue until the event's batch is sent (or failed), then given back.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::event::{EventData, PropertyValue};

/// Space held by one or more buffered events. Dropping it gives the space back.
#[derive(Debug, Default)]
pub(crate) struct Reservation {
    events: Option<OwnedSemaphorePermit>,
    bytes: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Joins another reservation into this one (a batch holds one for all its events).
    pub(crate) fn merge(&mut self, other: Reservation) {
        merge_permit(&mut self.events, other.events);
        merge_permit(&mut self.bytes, other.bytes);
    }
}

fn merge_permit(into: &mut Option<OwnedSemaphorePermit>, other: Option<OwnedSemaphorePermit>) {
    match (into.as_mut(), other) {
        (Some(mine), Some(theirs)) => mine.merge(theirs),
        (None, Some(theirs)) => *into = Some(theirs),
        (_, None) => {}
    }
}

/// The byte budget, shared by every partition.
#[derive(Debug, Clone)]
pub(crate) struct ByteBudget {
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl ByteBudget {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Permits an event of `size` bytes takes: never more than the whole budget (so that one
    /// huge event can still pass, alone), nor more than a single acquire can ask for.
    fn permits_for(&self, size: usize) -> u32 {
        u32::try_from(size.clamp(1, self.max)).unwrap_or(u32::MAX)
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

/// Waits for space for one event of `size` bytes in the partition's `events` semaphore and the
/// byte budget. Cancel-safe: dropped before completion, it holds nothing.
pub(crate) async fn acquire(
    events: &Arc<Semaphore>,
    budget: &ByteBudget,
    size: usize,
) -> Option<Reservation> {
    let event_permit = events.clone().acquire_owned().await.ok()?;
    let byte_permit = budget
        .semaphore
        .clone()
        .acquire_many_owned(budget.permits_for(size))
        .await
        .ok()?;
    Some(Reservation {
        events: Some(event_permit),
        bytes: Some(byte_permit),
    })
}

/// Space now, or None when the partition or the budget is full.
pub(crate) fn try_acquire(
    events: &Arc<Semaphore>,
    budget: &ByteBudget,
    size: usize,
) -> Option<Reservation> {
    let event_permit = events.clone().try_acquire_owned().ok()?;
    let byte_permit = match budget
        .semaphore
        .clone()
        .try_acquire_many_owned(budget.permits_for(size))
    {
        Ok(permit) => permit,
        Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => return None,
    };
    Some(Reservation {
        events: Some(event_permit),
        bytes: Some(byte_permit),
    })
}

/// Space for an event re-enqueued by a handler: whatever is free now, and no wait for the rest.
/// The handler's batch has just given back at least as much, so the overdraft is bounded.
pub(crate) fn acquire_for_handler(
    events: &Arc<Semaphore>,
    budget: &ByteBudget,
    size: usize,
) -> Reservation {
    Reservation {
        events: events.clone().try_acquire_owned().ok(),
        bytes: budget
            .semaphore
            .clone()
            .try_acquire_many_owned(budget.permits_for(size))
            .ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn space_is_held_until_the_reservation_drops() {
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
        drop(a);
        assert_eq!(events.available_permits(), 2);
        assert_eq!(budget.semaphore.available_permits(), 1000);
    }

    #[tokio::test]
    async fn a_huge_event_takes_the_whole_budget_but_still_passes() {
        let events = Arc::new(Semaphore::new(10));
        let budget = ByteBudget::new(1000);
        let r = acquire(&events, &budget, 5000).await.expect("passes alone");
        assert_eq!(budget.semaphore.available_permits(), 0);
        drop(r);
        assert_eq!(budget.semaphore.available_permits(), 1000);
    }

    #[tokio::test]
    async fn a_cancelled_acquire_holds_nothing() {
        let events = Arc::new(Semaphore::new(1));
        let budget = ByteBudget::new(1000);
        let held = try_acquire(&events, &budget, 10).expect("room");
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            acquire(&events, &budget, 10),
        )
        .await;
        assert!(waiting.is_err());
        drop(held);
        assert_eq!(events.available_permits(), 1);
        assert_eq!(budget.semaphore.available_permits(), 1000);
    }

    #[test]
    fn handler_overdraft_never_waits() {
        let events = Arc::new(Semaphore::new(0));
        let budget = ByteBudget::new(65536);
        let r = acquire_for_handler(&events, &budget, 10);
        assert!(r.events.is_none());
        assert!(r.bytes.is_some());
    }

    #[test]
    fn estimates_grow_with_content() {
        let small = estimated_size(&EventData::from("x"));
        let big = estimated_size(&EventData::from(vec![0u8; 1000]).with_property("name", "value"));
        assert!(big > small + 1000);
    }
}
