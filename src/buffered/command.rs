//! What travels from the producer's handles to a partition's actor: queued events (with an
//! outcome to resolve, when the caller asked for one) and the flush, clear and close
//! commands. Both sides (and the inbox between them) use these types.

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
}

/// An event on its way to a partition. Kept to 64 bytes, one cache line, because the inbox
/// hands every one from the enqueuing core to the actor's: the key as a boxed `str` (16 bytes,
/// not 24), the space and routing as a [`Ticket`] (8). (No enqueue time: reading the clock
/// for every event cost more than the rest of the enqueue's bookkeeping; the actor reads it
/// once per burst it takes.) Aligned, so that it never straddles two.
#[repr(align(64))]
pub(crate) struct Queued {
    pub event: EventData,
    key: Option<Box<str>>,
    ticket: Ticket,
}

impl Queued {
    /// An event routed as `routing` (by key, id, or automatically), holding `reservation`.
    pub(crate) fn new(event: EventData, routing: Routing, reservation: Reservation) -> Self {
        let (key, automatic) = match routing {
            Routing::PartitionKey(key) => (Some(key.into_boxed_str()), false),
            Routing::PartitionId => (None, false),
            Routing::Automatic => (None, true),
        };
        debug_assert!(reservation.slots() <= 1);
        Self {
            event,
            key,
            ticket: Ticket {
                bytes: u32::try_from(reservation.bytes()).unwrap_or(u32::MAX),
                slot: reservation.slots() > 0,
                automatic,
                requeued: false,
            },
        }
    }

    /// Marks the event as enqueued again by a handler.
    pub(crate) fn mark_requeued(&mut self) {
        self.ticket.requeued = true;
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

/// An event whose enqueuer awaits its outcome.
pub(crate) struct Tracked {
    pub queued: Queued,
    pub outcome: OutcomeSender,
}

/// What a partition's queue carries.
pub(crate) enum Command {
    Event(Queued),
    /// An event with an outcome to resolve (boxed: an event without one stays one cache line).
    Tracked(Box<Tracked>),
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

impl Command {
    /// The queued event of an event command.
    pub(crate) fn queued_mut(&mut self) -> Option<&mut Queued> {
        match self {
            Self::Event(queued) => Some(queued),
            Self::Tracked(tracked) => Some(&mut tracked.queued),
            _ => None,
        }
    }

    /// The event of an event command, with its outcome sender when it has one.
    pub(crate) fn into_event(self) -> Option<(Queued, Option<OutcomeSender>)> {
        match self {
            Self::Event(queued) => Some((queued, None)),
            Self::Tracked(tracked) => {
                let Tracked { queued, outcome } = *tracked;
                Some((queued, Some(outcome)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_event_is_one_cache_line_and_keeps_its_routing() {
        assert_eq!(std::mem::size_of::<Queued>(), 64);
        assert_eq!(std::mem::size_of::<Command>(), 64);
        for routing in [
            Routing::Automatic,
            Routing::PartitionId,
            Routing::PartitionKey("device-7".into()),
        ] {
            let mut space = Reservation::default();
            space.add_slot();
            space.add_bytes(100);
            let mut queued = Queued::new(EventData::from("x"), routing.clone(), space);
            queued.hold_bytes(20);
            assert_eq!(queued.routing(), routing);
            let (_, back, space) = queued.into_parts();
            assert_eq!(back, routing);
            assert_eq!((space.slots(), space.bytes()), (1, 120));
        }
    }
}
