//! Building batches: each event taken from the inbox is encoded once and added to the batch
//! being built; a batch is sealed when the next event does not fit, and on flush.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Actor, Building, Sealed};
use crate::amqp::message::encode_batch_event;
use crate::batch::{BatchTarget, EventDataBatch};
use crate::buffered::budget::Reservation;
use crate::buffered::command::Queued;
use crate::buffered::report::Report;
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;

impl Actor {
    /// The batch size limit, asking the connection layer the first time.
    pub(super) async fn max_size(&mut self) -> Result<usize> {
        if let Some(size) = self.max_size {
            return Ok(size);
        }
        let size = self.settings.sender.max_batch_size(&self.shared.id).await?;
        self.max_size = Some(size);
        Ok(size)
    }

    pub(super) fn encode(&self, queued_key: &Option<String>, event: &EventData) -> Vec<u8> {
        encode_batch_event(event, queued_key.as_deref(), self.settings.idempotent)
    }

    fn new_building(&self, max_size: usize, oldest: Instant) -> Building {
        let mut batch =
            EventDataBatch::new(BatchTarget::Partition(self.shared.id.clone()), max_size);
        // Sized like the last batch: growing its vectors event by event copied them over and
        // over (and, past glibc's mmap threshold, faulted in fresh pages each time).
        batch.reserve(self.last_batch_len);
        Building {
            batch,
            keys: Vec::with_capacity(self.last_batch_len),
            reservation: Reservation::default(),
            oldest,
        }
    }

    /// Adds the first event, asking the connection layer for the batch size limit first.
    pub(super) async fn add_first(&mut self, queued: Queued) {
        match self.max_size().await {
            Ok(max_size) => self.add(queued, max_size),
            Err(e) => {
                let (event, key, reservation) = queued.into_parts();
                self.fail_now(vec![event], vec![key], reservation, Arc::new(e));
            }
        }
    }

    pub(super) fn add(&mut self, queued: Queued, max_size: usize) {
        let (event, key, reservation) = queued.into_parts();
        let enqueued_at = self.received_at;
        let encoded = self.encode(&key, &event);
        if self.building.is_none() {
            self.building = Some(self.new_building(max_size, enqueued_at));
        }
        let Some(building) = self.building.as_mut() else {
            return;
        };
        let refused = match building.batch.try_add_encoded(event, encoded) {
            Ok(()) => {
                building.keys.push(key);
                building.reservation.merge(reservation);
                return;
            }
            Err(refused) => refused,
        };
        if refused.is_too_large_for_any_batch() {
            let error = Arc::new(refused.to_error());
            if self.building.as_ref().is_some_and(|b| b.batch.is_empty()) {
                self.building = None;
            }
            self.fail_now(vec![refused.into_event()], vec![key], reservation, error);
            return;
        }
        // The batch is full: seal it and start the next one with this event.
        self.seal();
        let event = refused.into_event();
        let encoded = self.encode(&key, &event);
        let mut building = self.new_building(max_size, enqueued_at);
        match building.batch.try_add_encoded(event, encoded) {
            Ok(()) => {
                building.keys.push(key);
                building.reservation.merge(reservation);
                self.building = Some(building);
            }
            // It fitted in an empty batch a moment ago; report it rather than lose it.
            Err(refused) => self.fail_now(
                vec![refused.into_event()],
                vec![key],
                reservation,
                Arc::new(Error::new(
                    ErrorKind::MessageTooLarge,
                    "the event did not fit in an empty batch",
                )),
            ),
        }
    }

    /// Seals the batch being built, if any, for sending.
    pub(super) fn seal(&mut self) {
        if let Some(building) = self.building.take() {
            self.last_batch_len = building.batch.len();
            let seq = self.next_seq;
            self.next_seq += 1;
            self.ready.push_back(Sealed {
                seq,
                batch: building.batch,
                keys: building.keys,
                reservation: building.reservation,
            });
        }
    }

    pub(super) fn flush(&mut self, ack: oneshot::Sender<()>) {
        self.seal();
        let target = self.next_seq - 1;
        if target <= self.completed_seq {
            let _ = self.reports.send(Report::Barrier(ack));
        } else {
            self.flush_waiters.push_back((target, ack));
        }
    }
}
