//! Building batches: each event taken from the inbox is encoded once and added to the batch
//! being built; a batch is sealed when the next event does not fit, and made due (sent with
//! the next free slot) by `max_wait_time`, a flush or a full buffer. Also `clear`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Actor, Building, Riders, Sealed};
use crate::amqp::message::encode_batch_event;
use crate::batch::{BatchTarget, EventDataBatch};
use crate::buffered::budget::Reservation;
use crate::buffered::command::Queued;
use crate::buffered::outcome::{OutcomeSender, Routing};
use crate::buffered::report::Report;
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;

/// One event on its way into a batch.
pub(super) struct Arriving {
    pub event: EventData,
    pub routing: Routing,
    pub reservation: Reservation,
    pub outcome: Option<OutcomeSender>,
}

impl Arriving {
    fn new(queued: Queued, outcome: Option<OutcomeSender>) -> Self {
        let (event, routing, reservation) = queued.into_parts();
        Self {
            event,
            routing,
            reservation,
            outcome,
        }
    }

    /// The event alone, with its riders, to be reported on its own.
    pub(super) fn into_single(self) -> (Vec<EventData>, Riders) {
        let riders = Riders {
            routes: vec![self.routing],
            outcomes: self.outcome.map(|o| (0, o)).into_iter().collect(),
            reservation: self.reservation,
        };
        (vec![self.event], riders)
    }
}

impl Actor {
    /// The batch size limit, asking the connection layer the first time.
    pub(super) async fn max_size(&mut self) -> Result<usize> {
        if let Some(size) = self.max_size {
            return Ok(size);
        }
        let size = self.settings.sender.max_batch_size(&self.shared.id).await?;
        self.max_size = Some(size);
        self.settings.link_max_size.store(size, Ordering::Relaxed);
        Ok(size)
    }

    pub(super) fn encode(&self, routing: &Routing, event: &EventData) -> Vec<u8> {
        encode_batch_event(event, routing.partition_key(), self.settings.idempotent)
    }

    fn new_building(&self, max_size: usize, oldest: Instant) -> Building {
        let mut batch =
            EventDataBatch::new(BatchTarget::Partition(self.shared.id.clone()), max_size);
        // Sized like the last batch: growing its vectors event by event copied them over and
        // over (and, past glibc's mmap threshold, faulted in fresh pages each time).
        batch.reserve(self.last_batch_len);
        Building {
            batch,
            riders: Riders::with_capacity(self.last_batch_len),
            oldest,
            due: false,
        }
    }

    /// Adds the first event, asking the connection layer for the batch size limit first.
    pub(super) async fn add_first(&mut self, queued: Queued, outcome: Option<OutcomeSender>) {
        match self.max_size().await {
            Ok(max_size) => self.add(queued, outcome, max_size),
            Err(e) => {
                let (events, riders) = Arriving::new(queued, outcome).into_single();
                self.fail_now(events, riders, Arc::new(e));
            }
        }
    }

    /// Adds an event to the batch being built; seals the batch first when the event does not
    /// fit, and fails an event that fits in no batch (or arrives while the partition is
    /// paused) at once.
    pub(super) fn add(&mut self, queued: Queued, outcome: Option<OutcomeSender>, max_size: usize) {
        if self.shared.is_paused() && !queued.is_requeued() {
            let (events, riders) = Arriving::new(queued, outcome).into_single();
            let error = self.paused_error();
            self.fail_now(events, riders, error);
            return;
        }
        let arriving = Arriving::new(queued, outcome);
        let encoded = self.encode(&arriving.routing, &arriving.event);
        let enqueued_at = self.received_at;
        let building = match &mut self.building {
            Some(building) => building,
            None => self
                .building
                .insert(self.new_building(max_size, enqueued_at)),
        };
        let refused = match building.batch.try_add_encoded(arriving.event, encoded) {
            Ok(()) => {
                return join(
                    building,
                    arriving.routing,
                    arriving.outcome,
                    arriving.reservation,
                )
            }
            Err(refused) => refused,
        };
        let too_large = refused
            .is_too_large_for_any_batch()
            .then(|| refused.to_error());
        let arriving = Arriving {
            event: refused.into_event(),
            ..arriving
        };
        if let Some(error) = too_large {
            if self.building.as_ref().is_some_and(|b| b.batch.is_empty()) {
                self.building = None;
            }
            let (events, riders) = arriving.into_single();
            self.fail_now(events, riders, Arc::new(error));
            return;
        }
        // The batch is full: seal it and start the next one with this event.
        self.seal();
        let encoded = self.encode(&arriving.routing, &arriving.event);
        let mut building = self.new_building(max_size, enqueued_at);
        match building.batch.try_add_encoded(arriving.event, encoded) {
            Ok(()) => {
                join(
                    &mut building,
                    arriving.routing,
                    arriving.outcome,
                    arriving.reservation,
                );
                self.building = Some(building);
            }
            // It fitted in an empty batch a moment ago; report it rather than lose it.
            Err(refused) => {
                let arriving = Arriving {
                    event: refused.into_event(),
                    ..arriving
                };
                let (events, riders) = arriving.into_single();
                let error = Error::new(
                    ErrorKind::MessageTooLarge,
                    "the event did not fit in an empty batch",
                );
                self.fail_now(events, riders, Arc::new(error));
            }
        }
    }

    /// Seals the batch being built, if any: it waits for a send slot and takes no more events.
    pub(super) fn seal(&mut self) {
        if let Some(building) = self.building.take() {
            self.last_batch_len = building.batch.len();
            let seq = self.next_seq;
            self.next_seq += 1;
            self.ready.push_back(Sealed {
                seq,
                batch: building.batch,
                riders: building.riders,
            });
        }
    }

    /// The batch being built goes with the next free send slot, and takes events until then.
    pub(super) fn mark_due(&mut self) {
        if let Some(building) = &mut self.building {
            building.due = true;
        }
    }

    /// Sends what is buffered now (it goes with the next free slots) and answers once all of
    /// it has been reported.
    pub(super) fn flush(&mut self, ack: oneshot::Sender<()>) {
        self.mark_due();
        // The batch being built gets the next sequence number when it is sealed.
        let target = if self.building.is_some() {
            self.next_seq
        } else {
            self.next_seq - 1
        };
        if target <= self.completed_seq {
            let _ = self.reports.send(Report::Barrier(ack));
        } else {
            self.flush_waiters.push_back((target, ack));
        }
    }

    /// Reports every event not yet being sent (full batches and the one being built) as
    /// abandoned; answers once that has been reported.
    pub(super) fn clear(&mut self, ack: oneshot::Sender<()>) {
        let error = Arc::new(Error::new(
            ErrorKind::Abandoned,
            "clear() removed the event from the buffer before it was sent; it was not published",
        ));
        self.seal();
        for sealed in std::mem::take(&mut self.ready) {
            let (_, _, events) = sealed.batch.into_parts();
            self.fail_now(events, sealed.riders, error.clone());
        }
        let _ = self.reports.send(Report::Barrier(ack));
    }
}

/// Records what rides with an event just added to `building`.
fn join(
    building: &mut Building,
    routing: Routing,
    outcome: Option<OutcomeSender>,
    reservation: Reservation,
) {
    let riders = &mut building.riders;
    if let Some(outcome) = outcome {
        riders.outcomes.push((riders.routes.len(), outcome));
    }
    riders.routes.push(routing);
    riders.reservation.merge(reservation);
}
