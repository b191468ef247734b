//! Building batches: each event taken from the inbox is encoded once and added to the batch
//! being built; a batch is sealed when the next event does not fit, and made due (sent with
//! the next free slot) by `max_wait_time`, a flush or a full buffer. Also `clear`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Actor, Building, Riders, Sealed};
use crate::amqp::message::{batch_encoding_capacity, encode_batch_event, encode_batch_event_into};
use crate::batch::{message_too_large, EncodedBatch};
use crate::buffered::budget::Reservation;
use crate::buffered::command::Queued;
use crate::buffered::outcome::{OutcomeSender, ReportedEvent, Routing};
use crate::buffered::report::Report;
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;

/// Riders of one event alone (to be reported on its own).
pub(super) fn single(queued: Queued, outcome: Option<OutcomeSender>) -> Riders {
    let (event, routing, reservation) = queued.into_parts();
    Riders {
        events: vec![ReportedEvent { event, routing }],
        outcomes: outcome.map(|o| (0, o)).into_iter().collect(),
        reservation,
        ..Riders::default()
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

    /// [`encode`](Self::encode) into a kept buffer when one fits.
    fn encode_reusing(&mut self, routing: &Routing, event: &EventData) -> Vec<u8> {
        let key = routing.partition_key();
        let idempotent = self.settings.idempotent;
        let mut out = self
            .spare
            .take(batch_encoding_capacity(event, key, idempotent));
        encode_batch_event_into(&mut out, event, key, idempotent);
        out
    }

    /// Keeps the buffers of a batch whose send ended for the next encodings, about a batch's
    /// worth; none once the partition has nothing left to send. The most ever kept while the
    /// partition is busy counts in the byte budget until it is idle: buffers taken for events
    /// still count then (the events count too), so the budget errs on the safe side by at most
    /// a batch, and a busy partition does not touch the shared budget after every send.
    pub(super) fn keep_buffers(&mut self, buffers: Vec<Vec<u8>>) {
        let idle = self.building.is_none() && self.ready.is_empty() && self.in_flight.is_empty();
        if idle {
            self.spare.clear();
            self.spare_charge.set(0);
            return;
        }
        let limit = self.max_size.unwrap_or(0);
        self.spare.keep(buffers, limit);
        if self.spare.bytes() > self.spare_charge.bytes() {
            self.spare_charge.set(self.spare.bytes());
        }
    }

    fn new_building(&self, max_size: usize, oldest: Instant) -> Building {
        let mut batch = EncodedBatch::for_partition(max_size);
        // Sized like the last batch: growing its vectors event by event copied them over and
        // over (and, past glibc's mmap threshold, faulted in fresh pages each time).
        batch.reserve(self.last_batch_len);
        let mut riders = Riders::with_capacity(self.last_batch_len);
        riders.enqueued_at.start_run(oldest, 0);
        Building {
            batch,
            riders,
            oldest,
            due: false,
            started_busy: !self.in_flight.is_empty() || !self.ready.is_empty(),
        }
    }

    /// Adds the first event, asking the connection layer for the batch size limit first.
    pub(super) async fn add_first(&mut self, queued: Queued, outcome: Option<OutcomeSender>) {
        match self.max_size().await {
            Ok(max_size) => self.add(queued, outcome, max_size),
            Err(e) => {
                let riders = single(queued, outcome);
                self.fail_now(riders, Arc::new(e));
            }
        }
    }

    /// Adds an event to the batch being built; seals the batch first when the event does not
    /// fit, and fails an event that fits in no batch (or arrives while the partition is
    /// paused) at once.
    pub(super) fn add(&mut self, queued: Queued, outcome: Option<OutcomeSender>, max_size: usize) {
        if self.settings.pause_on_failure && self.shared.is_paused() && !queued.is_requeued() {
            let riders = single(queued, outcome);
            let error = self.paused_error();
            self.fail_now(riders, error);
            return;
        }
        let (event, routing, reservation) = queued.into_parts();
        let encoded = self.encode_reusing(&routing, &event);
        let enqueued_at = self.received_at;
        let reported = ReportedEvent { event, routing };
        let building = match &mut self.building {
            Some(building) => building,
            None => self
                .building
                .insert(self.new_building(max_size, enqueued_at)),
        };
        let refused = match building.batch.try_push(encoded) {
            Ok(()) => return join(building, reported, outcome, reservation),
            Err(refused) => refused,
        };
        if refused.too_large_for_any_batch {
            if self.building.as_ref().is_some_and(|b| b.batch.is_empty()) {
                self.building = None;
            }
            let riders = Riders {
                events: vec![reported],
                outcomes: outcome.map(|o| (0, o)).into_iter().collect(),
                reservation,
                ..Riders::default()
            };
            let error = message_too_large(refused.added, max_size);
            self.fail_now(riders, Arc::new(error));
            return;
        }
        // The batch is full: seal it and start the next one with this event.
        self.seal();
        let mut building = self.new_building(max_size, enqueued_at);
        match building.batch.try_push(refused.encoded) {
            Ok(()) => {
                join(&mut building, reported, outcome, reservation);
                self.building = Some(building);
            }
            // It fitted in an empty batch a moment ago; report it rather than lose it.
            Err(_) => {
                let riders = Riders {
                    events: vec![reported],
                    outcomes: outcome.map(|o| (0, o)).into_iter().collect(),
                    reservation,
                    ..Riders::default()
                };
                let error = Error::new(
                    ErrorKind::MessageTooLarge,
                    "the event did not fit in an empty batch",
                );
                self.fail_now(riders, Arc::new(error));
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
            self.fail_now(sealed.riders, error.clone());
        }
        let _ = self.reports.send(Report::Barrier(ack));
    }
}

/// Records an event just added to `building`'s encoded batch, with what rides with it.
fn join(
    building: &mut Building,
    reported: ReportedEvent,
    outcome: Option<OutcomeSender>,
    reservation: Reservation,
) {
    let riders = &mut building.riders;
    if let Some(outcome) = outcome {
        riders.outcomes.push((riders.events.len(), outcome));
    }
    riders.events.push(reported);
    riders.reservation.merge(reservation);
}
