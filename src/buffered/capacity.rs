//! Waiting for and giving back buffer space: a slot of the partition (in its inbox) and
//! bytes of the shared budget, taken together for one event, cancel-safe, and given back
//! together when its batch is done. The units themselves are in `budget.rs`.

use super::budget::{ByteBudget, Charge, Reservation};
use super::inbox::Inbox;
use crate::event::{EventData, PropertyValue};

/// Gives the space of `reservation`, held by no queued event (an enqueue that did not
/// complete), back to the partition's slots and the byte budget.
pub(crate) fn release(inbox: &Inbox, budget: &ByteBudget, reservation: Reservation) {
    if reservation.slots() > 0 {
        inbox.release(0, 0, reservation.slots());
    }
    budget.give_back(reservation.bytes());
}

/// Gives the slots of `count` queued events back and stops counting them as buffered (the
/// actor, once their batch is sent or failed); their bytes stay taken, in the charge
/// returned, until it is dropped just before their handler call.
pub(crate) fn release_queued(
    inbox: &Inbox,
    budget: &ByteBudget,
    count: usize,
    reservation: Reservation,
) -> Charge {
    // Counts and slots first: an enqueuer woken by the freed space must not be counted on top
    // of the events it replaces (the counts would briefly exceed the partition's limit).
    inbox.release(count, reservation.bytes(), reservation.slots());
    budget.holding(reservation.bytes())
}

/// The bytes of the budget an event holds from enqueue until its handler call: the event as
/// given (body, properties, identifiers) and its encoded copy in the batch, which holds the
/// same content again, plus the bookkeeping around both. Cheap: no encoding. Documented on
/// `BufferedProducerOptions::max_buffered_bytes`; keep the two in step.
pub(crate) fn held_size(event: &EventData) -> usize {
    const BOOKKEEPING: usize = 128;
    let properties: usize = event
        .properties()
        .iter()
        .map(|(name, value)| name.len() + 8 + value_size(value))
        .sum();
    let ids = event.message_id().map_or(0, str::len)
        + event.correlation_id().map_or(0, str::len)
        + event.content_type().map_or(0, str::len);
    let content = event.body().len() + properties + ids;
    2 * content + BOOKKEEPING
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
            self.inbox.release(0, 0, reservation.slots());
        }
    }
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
    let taken = budget.take(size, sweep).await?;
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
    let taken = budget.try_take(size)?;
    let mut reservation = slot.keep();
    reservation.add_bytes(taken);
    Some(reservation)
}

/// Space for an event re-enqueued by a handler: whatever is free now, and no wait for the rest.
/// The handler's batch has just given back at least as much, so the overdraft is bounded.
pub(crate) fn acquire_for_handler(inbox: &Inbox, budget: &ByteBudget, size: usize) -> Reservation {
    let mut reservation = inbox.try_take_slot().unwrap_or_default();
    if let Some(taken) = budget.try_take(size) {
        reservation.add_bytes(taken);
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
        assert_eq!(budget.available(), 200);
        release(&events, &budget, a);
        assert!(events.try_take_slot().is_some() && events.try_take_slot().is_some());
        assert_eq!(budget.available(), 1000);
    }

    #[tokio::test]
    async fn a_huge_event_takes_the_whole_budget_but_still_passes() {
        let events = Inbox::new(10);
        let budget = ByteBudget::new(1000);
        let r = acquire(&events, &budget, 5000, &|| {})
            .await
            .expect("passes alone");
        assert_eq!(budget.available(), 0);
        release(&events, &budget, r);
        assert_eq!(budget.available(), 1000);
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
        assert_eq!(budget.available(), 5);
        assert!(
            events.may_have_room(),
            "the waiting acquire's slot came back"
        );
        release(&events, &budget, held);
        assert_eq!(budget.available(), 1000);
    }

    #[test]
    fn handler_overdraft_never_waits() {
        let events = Inbox::new(0);
        let budget = ByteBudget::new(65536);
        let r = acquire_for_handler(&events, &budget, 10);
        assert_eq!(r.slots(), 0);
        assert_eq!(r.bytes(), 10);
        release(&events, &budget, r);
        assert!(!events.may_have_room(), "nothing taken, nothing given back");
    }

    #[test]
    fn an_event_is_counted_with_its_encoded_copy() {
        let small = held_size(&EventData::from("x"));
        let big = held_size(&EventData::from(vec![0u8; 1000]).with_property("name", "value"));
        assert!(big > small + 2000, "the body counts twice");
        let event = EventData::from(vec![0u8; 1000]).with_property("name", "value");
        let encoded = crate::amqp::message::encode_batch_event(&event, None, false).len();
        assert!(
            held_size(&event) >= 1000 + encoded,
            "at least the event and its copy"
        );
    }
}
