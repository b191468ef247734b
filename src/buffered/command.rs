//! What travels from the producer's handles to a partition's actor: queued events and the
//! flush and close commands. Both sides (and the inbox between them) use these types.

use tokio::sync::oneshot;

use super::budget::{EventSpace, Reservation};
use crate::event::EventData;

/// An event on its way to a partition. Kept to 64 bytes, one cache line, because the inbox
/// hands every one from the enqueuing core to the actor's: the key as a boxed `str` (16 bytes,
/// not 24), the space as an `EventSpace` (8, not 16). (No enqueue time: reading the clock for
/// every event cost more than the rest of the enqueue's bookkeeping; the actor reads it once
/// per burst it takes, see `Actor::received_at`.) Aligned, so that it never straddles two.
#[repr(align(64))]
pub(crate) struct Queued {
    pub event: EventData,
    key: Option<Box<str>>,
    pub space: EventSpace,
}

impl Queued {
    pub(crate) fn new(event: EventData, key: Option<String>, reservation: Reservation) -> Self {
        Self {
            event,
            key: key.map(String::into_boxed_str),
            space: reservation.into(),
        }
    }

    /// The event, its partition key and the space it holds.
    pub(crate) fn into_parts(self) -> (EventData, Option<String>, Reservation) {
        (self.event, self.key.map(String::from), self.space.into())
    }
}

/// What a partition's queue carries.
pub(crate) enum Command {
    Event(Queued),
    /// Send everything before this now; answer once all of it has been reported.
    Flush(oneshot::Sender<()>),
    /// Stop: send (or, when abandoning, report as abandoned) everything, then answer.
    Close {
        abandon: bool,
        done: oneshot::Sender<()>,
    },
}
