//! What travels from the producer's handles to a partition's actor: queued events and the
//! flush, clear and close commands, and, on the enqueue side, a [`Parcel`]: an event with
//! the outcome to resolve when the caller asked for one (the inbox keeps those senders in a
//! queue of their own, so that an event without one stays one cache line and allocates
//! nothing). Both sides (and the inbox between them) use these types.

use tokio::sync::oneshot;

use super::budget::Reservation;
use super::outcome::{OutcomeSender, Routing};
use crate::event::EventData;

/// The space one queued event holds and how it was routed, packed into 8 bytes: with it, an
/// event waiting in a partition's inbox takes one cache line (see [`Queued`]).
#[derive(Debug, Default, Clone, Copy)]
struct Ticket {
    /// Bytes of the budget held for the event.
    bytes: u32,
    /// Whether a slot of the partition is held for the event.
    slot: bool,
    /// Routed automatically (not by partition id), for events without key.
    automatic: bool,
    /// Enqueued again by a handler: taken even while the ordering guard pauses the partition.
    requeued: bool,
    /// Its outcome sender waits in the inbox's queue of outcomes, in the same order.
    tracked: bool,
}

/// An event on its way to a partition. Kept to 64 bytes, one cache line, because the inbox
/// hands every one from the enqueuing core to the actor's: the key as a boxed `str` (16 bytes,
/// not 24), the space and routing as a [`Ticket`] (8). (No enqueue time: reading the clock
/// for every event cost more than the rest of the enqueue's bookkeeping; the actor reads it
/// once per burst it takes.) Not aligned itself, so that a [`Parcel`] (it and an outcome
/// sender) stays small to move; queues hold commands in a [`Line`], which is.
pub(crate) struct Queued {
    pub event: EventData,
    key: Option<Box<str>>,
    ticket: Ticket,
}

impl Queued {
    /// An event routed as `routing` (by key, id, or automatically), holding no space yet.
    pub(crate) fn new(event: EventData, routing: Routing) -> Self {
        let (key, automatic) = match routing {
            Routing::PartitionKey(key) => (Some(key.into_boxed_str()), false),
            Routing::PartitionId => (None, false),
            Routing::Automatic => (None, true),
        };
        Self {
            event,
            key,
            ticket: Ticket {
                bytes: 0,
                slot: false,
                automatic,
                requeued: false,
                tracked: false,
            },
        }
    }

    /// Marks the event as enqueued again by a handler.
    pub(crate) fn mark_requeued(&mut self) {
        self.ticket.requeued = true;
    }

    /// Marks the event as having its outcome sender in the inbox's queue of outcomes.
    pub(crate) fn mark_tracked(&mut self) {
        self.ticket.tracked = true;
    }

    /// Whether the event's outcome sender waits in the queue of outcomes.
    pub(crate) fn is_tracked(&self) -> bool {
        self.ticket.tracked
    }

    /// Whether a handler enqueued the event again.
    pub(crate) fn is_requeued(&self) -> bool {
        self.ticket.requeued
    }

    /// A slot of the partition is now held for the event.
    pub(crate) fn hold_slot(&mut self) {
        self.ticket.slot = true;
    }

    /// Bytes of the budget are now held for the event too.
    pub(crate) fn hold_bytes(&mut self, bytes: usize) {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.ticket.bytes = self.ticket.bytes.saturating_add(bytes);
    }

    /// Bytes of the budget the event holds.
    pub(crate) fn held_bytes(&self) -> u32 {
        self.ticket.bytes
    }

    /// Space reserved for the event is now held by it too.
    pub(crate) fn hold(&mut self, reservation: Reservation) {
        if reservation.slots() > 0 {
            self.hold_slot();
        }
        self.hold_bytes(reservation.bytes());
    }

    /// Takes the space the event holds (to give it back); it holds none after.
    pub(crate) fn take_space(&mut self) -> Reservation {
        let mut space = Reservation::default();
        if std::mem::take(&mut self.ticket.slot) {
            space.add_slot();
        }
        space.add_bytes(std::mem::take(&mut self.ticket.bytes) as usize);
        space
    }

    /// How the event was routed.
    #[cfg(test)]
    pub(crate) fn routing(&self) -> Routing {
        match (&self.key, self.ticket.automatic) {
            (Some(key), _) => Routing::PartitionKey(key.to_string()),
            (None, true) => Routing::Automatic,
            (None, false) => Routing::PartitionId,
        }
    }

    /// The event, how it was routed and the space it holds.
    pub(crate) fn into_parts(mut self) -> (EventData, Routing, Reservation) {
        let space = self.take_space();
        let routing = match self.key.take() {
            Some(key) => Routing::PartitionKey(String::from(key)),
            None if self.ticket.automatic => Routing::Automatic,
            None => Routing::PartitionId,
        };
        (self.event, routing, space)
    }
}

/// An event on its way through the enqueue pipeline: the queued event, and the sender of
/// its outcome when the caller asked for one.
pub(crate) struct Parcel {
    pub queued: Queued,
    pub outcome: Option<OutcomeSender>,
}

impl Parcel {
    /// The event, routed as `routing`, holding no space yet.
    pub(crate) fn new(event: EventData, routing: Routing, outcome: Option<OutcomeSender>) -> Self {
        Self {
            queued: Queued::new(event, routing),
            outcome,
        }
    }

    /// The event alone (the outcome sender, if any, is dropped).
    pub(crate) fn into_event(self) -> EventData {
        self.queued.into_parts().0
    }
}

/// A value alone on one cache line: queues hold their commands so, so that handing one from
/// an enqueuing core to the actor's moves one line, never two.
#[repr(align(64))]
pub(crate) struct Line<T>(pub T);

/// What a partition's queue carries: one cache line (see [`Queued`]).
pub(crate) enum Command {
    Event(Queued),
    /// Send everything before this now; answer once all of it has been reported.
    Flush(oneshot::Sender<()>),
    /// Report everything buffered and not yet being sent as abandoned; answer once reported.
    Clear(oneshot::Sender<()>),
    /// Stop: send (or, when abandoning, report as abandoned) everything, then answer.
    Close {
        abandon: bool,
        done: oneshot::Sender<()>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_event_is_one_cache_line_and_keeps_its_routing() {
        assert_eq!(std::mem::size_of::<Queued>(), 64);
        assert_eq!(std::mem::size_of::<Command>(), 64);
        assert_eq!(std::mem::size_of::<Line<Command>>(), 64);
        assert_eq!(std::mem::align_of::<Line<Command>>(), 64);
        assert!(
            std::mem::size_of::<Parcel>() <= 80,
            "a parcel stays small to move"
        );

        for routing in [
            Routing::Automatic,
            Routing::PartitionId,
            Routing::PartitionKey("device-7".into()),
        ] {
            let mut space = Reservation::default();
            space.add_slot();
            space.add_bytes(100);
            let mut queued = Queued::new(EventData::from("x"), routing.clone());
            queued.hold(space);
            queued.hold_bytes(20);
            assert_eq!(queued.routing(), routing);
            let (_, back, space) = queued.into_parts();
            assert_eq!(back, routing);
            assert_eq!((space.slots(), space.bytes()), (1, 120));
        }
    }
}
