//! Sending sealed batches within the concurrency limits, taking their outcomes in send order,
//! giving their space back, and handing each outcome to the reporter; and abandoning
//! everything still held, on `close_abandoning` or when close gives up on the partition.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::stream::FuturesOrdered;
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::{Actor, InFlight};
use crate::buffered::budget::Reservation;
use crate::buffered::capacity::release;
use crate::buffered::command::Command;
use crate::buffered::report::{BatchOutcome, Report};
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;
use crate::idempotence::PublishedSequenceNumbers;

fn abandoned(in_flight: bool) -> Arc<Error> {
    let message = if in_flight {
        "the producer was closed while this batch was being sent; it may or may not have been published"
    } else {
        "the producer was closed without flushing; the events were not sent"
    };
    Arc::new(Error::new(ErrorKind::Abandoned, message))
}

impl Actor {
    /// Starts as many ready batches as the limits allow without waiting.
    pub(super) fn dispatch_ready(&mut self) {
        while !self.ready.is_empty()
            && self.in_flight.len() < self.settings.max_sends_per_partition
            && self.backlog.pending() < self.backlog_limit
        {
            match self.settings.global_sends.clone().try_acquire_owned() {
                Ok(permit) => self.start_send(permit),
                Err(_) => break,
            }
        }
    }

    pub(super) fn start_send(&mut self, permit: OwnedSemaphorePermit) {
        let Some(sealed) = self.ready.pop_front() else {
            return;
        };
        let bytes = sealed.batch.size_in_bytes();
        let (_, encoded, events) = sealed.batch.into_parts();
        let count = events.len();
        self.in_flight_events.push_back(InFlight {
            seq: sealed.seq,
            events,
            keys: sealed.keys,
            reservation: sealed.reservation,
            pieces: None,
        });
        let sender = self.settings.sender.clone();
        let partition = self.shared.id.clone();
        let span = tracing::info_span!("send_batch", partition = %partition, events = count, bytes);
        self.in_flight.push_back(
            async move {
                let result = sender.send(&partition, encoded).await;
                drop(permit);
                (sealed.seq, result)
            }
            .instrument(span)
            .boxed(),
        );
    }

    /// Gives back the space of `count` events.
    pub(super) fn release(&self, count: usize, reservation: Reservation) {
        // Counts first: an enqueuer woken by the freed space must not be counted on top of
        // the events it replaces (the counts would briefly exceed the partition's limit).
        self.settings
            .total_buffered
            .fetch_sub(count, Ordering::SeqCst);
        release(
            &self.shared.inbox,
            &self.settings.budget,
            count,
            reservation,
        );
    }

    pub(super) fn report(&self, report: Report) {
        if matches!(report, Report::Outcome(_)) {
            self.backlog.added();
        }
        if self.reports.send(report).is_err() {
            tracing::error!(partition = %self.shared.id, "the reporter is gone; an outcome could not be reported");
        }
    }

    pub(super) fn on_completed(
        &mut self,
        seq: u64,
        result: Result<Option<PublishedSequenceNumbers>>,
    ) {
        if let Err(error) = &result {
            if self.resend_in_pieces(seq, error) {
                return;
            }
        }
        let Some(InFlight {
            seq: sent_seq,
            events,
            keys,
            reservation,
            pieces,
        }) = self.in_flight_events.pop_front()
        else {
            return;
        };
        debug_assert_eq!(sent_seq, seq);
        self.release(events.len(), reservation);
        match pieces {
            Some(pieces) => self.report_pieces(events, keys, &pieces),
            None => self.report_outcome(events, keys, result),
        }
        self.completed_seq = seq;
        while self
            .flush_waiters
            .front()
            .is_some_and(|(target, _)| *target <= seq)
        {
            if let Some((_, ack)) = self.flush_waiters.pop_front() {
                let _ = self.reports.send(Report::Barrier(ack));
            }
        }
    }

    /// Reports the outcome of a send of `events` (a whole batch, or a piece of one) and keeps
    /// the partition's failing flag, which automatic routing reads, up to date.
    pub(super) fn report_outcome(
        &self,
        events: Vec<EventData>,
        keys: Vec<Option<String>>,
        result: Result<Option<PublishedSequenceNumbers>>,
    ) {
        if events.is_empty() {
            return;
        }
        let result = match result {
            Ok(published_sequence_numbers) => {
                // Only on a change: enqueuers of every core read this line.
                if self.shared.failing.load(Ordering::Relaxed) {
                    self.shared.failing.store(false, Ordering::SeqCst);
                }
                Ok(published_sequence_numbers)
            }
            Err(error) => {
                self.shared.failing.store(true, Ordering::SeqCst);
                tracing::error!(partition = %self.shared.id, events = events.len(), error = %error, "batch not published");
                Err(Arc::new(error))
            }
        };
        self.report(Report::Outcome(BatchOutcome {
            partition_id: self.shared.id.clone(),
            events,
            keys,
            result,
        }));
    }

    /// Reports events as failed at once (too large, or the link could not be attached).
    pub(super) fn fail_now(
        &self,
        events: Vec<EventData>,
        keys: Vec<Option<String>>,
        reservation: Reservation,
        error: Arc<Error>,
    ) {
        self.release(events.len(), reservation);
        tracing::error!(partition = %self.shared.id, events = events.len(), error = %error, "events not published");
        self.report(Report::Outcome(BatchOutcome {
            partition_id: self.shared.id.clone(),
            events,
            keys,
            result: Err(error),
        }));
    }

    /// Stops at once: everything not yet published is reported as abandoned.
    pub(super) fn abandon(&mut self) {
        self.shared.inbox.close();
        self.shared.inbox.take_all(&mut self.pending);
        let mut queued_events = Vec::new();
        let mut queued_keys = Vec::new();
        let mut queued_space = Reservation::default();
        while let Some(command) = self.pending.pop_front() {
            match command {
                Command::Event(queued) => {
                    let (event, key, reservation) = queued.into_parts();
                    queued_events.push(event);
                    queued_keys.push(key);
                    queued_space.merge(reservation);
                }
                Command::Flush(ack) => self.flush_waiters.push_back((u64::MAX, ack)),
                Command::Close { done, .. } => self.close_waiters.push(done),
            }
        }
        // Batches in flight are cancelled; whether the service got them is unknown.
        self.in_flight = FuturesOrdered::new();
        for batch in std::mem::take(&mut self.in_flight_events) {
            self.fail_now(batch.events, batch.keys, batch.reservation, abandoned(true));
        }
        self.seal();
        for sealed in std::mem::take(&mut self.ready) {
            let (_, _, events) = sealed.batch.into_parts();
            self.fail_now(events, sealed.keys, sealed.reservation, abandoned(false));
        }
        if !queued_events.is_empty() {
            self.fail_now(queued_events, queued_keys, queued_space, abandoned(false));
        }
        for (_, ack) in std::mem::take(&mut self.flush_waiters) {
            let _ = self.reports.send(Report::Barrier(ack));
        }
        self.commands_done = true;
    }
}
