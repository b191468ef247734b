//! Sending batches within the concurrency limits, taking their outcomes in send order, giving
//! their space back, resolving the outcomes callers await, and handing each outcome to the
//! reporter; the ordering guard; and abandoning everything still held, on `close_abandoning`
//! or when close gives up on the partition.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::stream::FuturesOrdered;
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::{Actor, InFlight, Riders, Sealed};
use crate::buffered::budget::Charge;
use crate::buffered::capacity::release_queued;
use crate::buffered::command::{Command, Line};
use crate::buffered::outcome::{PublishedEvent, ReportedEvent};
use crate::buffered::report::{BatchOutcome, Report};
use crate::error::{Error, ErrorKind, Result};
use crate::idempotence::PublishedSequenceNumbers;

fn abandoned(in_flight: bool) -> Arc<Error> {
    let error = if in_flight {
        Error::new(
            ErrorKind::Abandoned,
            "the producer was closed while this batch was being sent",
        )
        .may_have_reached_the_service()
    } else {
        Error::new(
            ErrorKind::Abandoned,
            "the producer was closed without flushing; the events were not sent",
        )
    };
    Arc::new(error)
}

/// What a send of `batch_bytes` holds besides its events: the AMQP library serializes the
/// delivery into a buffer of its own, grown by doubling, and keeps it until the outcome.
pub(super) fn serialized_size(batch_bytes: usize) -> usize {
    batch_bytes
        .checked_next_power_of_two()
        .unwrap_or(batch_bytes)
}

impl Actor {
    /// Whether a batch can go as soon as a send slot is free: a full one, or the one being
    /// built when it is due, or at once when the partition is idle and `send_when_idle` is on.
    ///
    /// Idle means no send in flight, a batch that started while none was (one that started
    /// during a send lingers, see `BUSY_LINGER`), and no pressure: a partition whose buffer
    /// filled up during
    /// the last send is under full load, and sending its next batch at once would send
    /// whatever few events the freed slots let in so far, alternating tiny and large batches;
    /// it fills instead (it goes when the buffer is full again, or at `max_wait_time`).
    pub(super) fn has_batch_to_send(&self) -> bool {
        !self.ready.is_empty()
            || self.building.as_ref().is_some_and(|b| {
                b.due
                    || (self.settings.send_when_idle
                        && !b.started_busy
                        && self.in_flight.is_empty()
                        && !self.shared.inbox.filled_up())
            })
    }

    /// Starts as many batches as the limits allow without waiting.
    pub(super) fn dispatch(&mut self) {
        while self.has_batch_to_send()
            && self.in_flight.len() < self.settings.max_sends_per_partition
            && self.backlog.pending() < self.backlog_limit
        {
            match self.settings.global_sends.clone().try_acquire_owned() {
                Ok(permit) => self.start_next_send(permit),
                Err(_) => break,
            }
        }
    }

    /// Sends the oldest batch that can go: a full one first, else the one being built.
    pub(super) fn start_next_send(&mut self, permit: OwnedSemaphorePermit) {
        if self.ready.is_empty() {
            self.seal();
        }
        if let Some(sealed) = self.ready.pop_front() {
            self.start_send(sealed, permit);
        }
    }

    fn start_send(&mut self, sealed: Sealed, permit: OwnedSemaphorePermit) {
        self.shared.inbox.clear_filled_up();
        let bytes = sealed.batch.size_in_bytes();
        let encoded = sealed.batch.into_encoded();
        let count = encoded.len();
        let serialized = self.settings.budget.charge(serialized_size(bytes));
        let sender = self.settings.sender.clone();
        let partition = self.shared.id.clone();
        let metrics = &self.shared.metrics;
        metrics.send_started(count, bytes, self.in_flight.len() + 1);
        let retries = metrics.retries();
        let span = tracing::info_span!(
            "send",
            "messaging.system" = "eventhubs",
            "messaging.operation.name" = "send",
            "messaging.destination.partition.id" = %partition,
            "messaging.batch.message_count" = count,
            bytes,
            "error.type" = tracing::field::Empty,
        );
        let send = self.telemetry.instrument_send(
            sealed.riders.events.iter().map(|reported| &reported.event),
            count,
            async move {
                let mut encoded = encoded;
                let published = sender.send(&partition, &mut encoded).await?;
                Ok((published, encoded))
            },
        );
        self.in_flight_events.push_back(InFlight {
            seq: sealed.seq,
            riders: sealed.riders,
            pieces: None,
        });
        self.in_flight.push_back(
            async move {
                let started = tokio::time::Instant::now();
                let result = crate::telemetry::counting_retries(retries, send).await;
                if let Err(error) = &result {
                    tracing::Span::current().record("error.type", error.kind().as_str());
                }
                drop(permit);
                drop(serialized);
                let (result, buffers) = match result {
                    Ok((published, buffers)) => (Ok(published), buffers),
                    Err(error) => (Err(error), Vec::new()),
                };
                (sealed.seq, result, started.elapsed(), buffers)
            }
            .instrument(span)
            .boxed(),
        );
    }

    /// Gives back the slots of the events of `riders`; their bytes of the budget ride with
    /// their report until just before their handler call.
    pub(super) fn release(&self, riders: &mut Riders) -> Charge {
        let count = riders.events.len();
        // Counts first: an enqueuer woken by the freed space must not be counted on top of
        // the events it replaces (the counts would briefly exceed the partition's limit).
        self.settings
            .total_buffered
            .fetch_sub(count, Ordering::SeqCst);
        let reservation = std::mem::take(&mut riders.reservation);
        release_queued(
            &self.shared.inbox,
            &self.settings.budget,
            count,
            reservation,
        )
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
            mut riders,
            pieces,
        }) = self.in_flight_events.pop_front()
        else {
            return;
        };
        debug_assert_eq!(sent_seq, seq);
        let held = self.release(&mut riders);
        match pieces {
            Some(pieces) => self.report_pieces(riders, &pieces, held),
            None => self.report_outcome(riders, result.map_err(Arc::new), held),
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

    /// Reports the outcome of a send of `events` (a whole batch, or a piece of one), whose
    /// slots were given back and whose bytes `held` keeps until the handler call: resolves
    /// the outcomes callers await, hands the events to the reporter, and keeps the
    /// partition's failing flag (automatic routing reads it) and the ordering guard up to
    /// date.
    pub(super) fn report_outcome(
        &mut self,
        riders: Riders,
        result: std::result::Result<Option<PublishedSequenceNumbers>, Arc<Error>>,
        held: Charge,
    ) {
        if riders.events.is_empty() {
            return;
        }
        let metrics = &self.shared.metrics;
        match &result {
            Ok(_) => metrics.published(
                riders.events.len(),
                riders
                    .enqueued_at
                    .waited(tokio::time::Instant::now(), riders.events.len()),
            ),
            Err(error) => metrics.failed(riders.events.len(), error.kind()),
        }
        match &result {
            Ok(_) => {
                // Only on a change: enqueuers of every core read this line.
                if self.shared.failing.load(Ordering::Relaxed) {
                    self.shared.failing.store(false, Ordering::SeqCst);
                }
            }
            Err(error) => {
                self.shared.failing.store(true, Ordering::SeqCst);
                tracing::error!(partition = %self.shared.id, events = riders.events.len(), error = %error, "batch not published");
            }
        }
        self.resolve_outcomes(riders.outcomes, &result);
        let failed_for_good = matches!(&result, Err(e) if e.kind() != ErrorKind::Abandoned && e.kind() != ErrorKind::PartitionPaused);
        self.report(Report::Outcome(BatchOutcome {
            partition_id: self.shared.id.clone(),
            events: riders.events,
            result,
            held,
        }));
        if failed_for_good && self.settings.pause_on_failure {
            self.pause();
        }
    }

    /// Resolves the outcomes awaited for events of a batch (by their index in it).
    fn resolve_outcomes(
        &self,
        outcomes: Vec<(usize, crate::buffered::outcome::OutcomeSender)>,
        result: &std::result::Result<Option<PublishedSequenceNumbers>, Arc<Error>>,
    ) {
        for (index, outcome) in outcomes {
            let resolved = match result {
                Ok(numbers) => Ok(PublishedEvent::new(
                    self.id_for_outcomes.clone(),
                    numbers.as_ref().and_then(|n| n.sequence_number(index)),
                )),
                Err(error) => Err(error.clone()),
            };
            // Nobody awaits a dropped outcome; that changes nothing.
            let _ = outcome.send(resolved);
        }
    }

    /// Reports events as failed at once (too large, the link could not be attached, the
    /// partition is paused, cleared or abandoned), giving their space back.
    pub(super) fn fail_now(&mut self, mut riders: Riders, error: Arc<Error>) {
        let held = self.release(&mut riders);
        self.report_outcome(riders, Err(error), held);
    }

    /// The error of events the ordering guard holds back.
    pub(super) fn paused_error(&self) -> Arc<Error> {
        Arc::new(
            Error::new(
                ErrorKind::PartitionPaused,
                format!(
                    "an earlier batch of partition '{}' failed and the ordering guard paused it; the event was not sent (resume the partition with resume_partition)",
                    self.shared.id
                ),
            )
            .for_partition(self.shared.id.clone()),
        )
    }

    /// The ordering guard: after a batch failed for good, nothing enqueued after it may be
    /// published before the application resumes the partition, or consumers would see a gap.
    /// Everything held and not yet being sent fails with `PartitionPaused`; events taken later
    /// fail too (see `add`), except those a handler enqueues again.
    fn pause(&mut self) {
        if self.shared.paused.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(partition = %self.shared.id, "a batch failed; the ordering guard pauses the partition until it is resumed");
        let error = self.paused_error();
        self.seal();
        for sealed in std::mem::take(&mut self.ready) {
            self.fail_now(sealed.riders, error.clone());
        }
    }

    /// Stops at once: everything not yet published is reported as abandoned.
    pub(super) fn abandon(&mut self) {
        self.shared.inbox.close();
        self.shared
            .inbox
            .take_all(&mut self.pending, &mut self.pending_outcomes);
        let mut queued_riders = Riders::default();
        while let Some(Line(command)) = self.pending.pop_front() {
            match command {
                Command::Event(queued) => {
                    if queued.is_tracked() {
                        if let Some(outcome) = self.pending_outcomes.pop_front() {
                            queued_riders
                                .outcomes
                                .push((queued_riders.events.len(), outcome));
                        }
                    }
                    let (event, routing, reservation) = queued.into_parts();
                    queued_riders.events.push(ReportedEvent { event, routing });
                    queued_riders.reservation.merge(reservation);
                }
                Command::Flush(ack) => self.flush_waiters.push_back((u64::MAX, ack)),
                Command::Clear(ack) => {
                    let _ = self.reports.send(Report::Barrier(ack));
                }
                Command::Close { done, .. } => self.close_waiters.push(done),
            }
        }
        // Batches in flight are cancelled; whether the service got them is unknown.
        self.in_flight = FuturesOrdered::new();
        self.shared.metrics.set_sends_in_flight(0);
        for batch in std::mem::take(&mut self.in_flight_events) {
            self.fail_now(batch.riders, abandoned(true));
        }
        self.seal();
        for sealed in std::mem::take(&mut self.ready) {
            self.fail_now(sealed.riders, abandoned(false));
        }
        if !queued_riders.events.is_empty() {
            self.fail_now(queued_riders, abandoned(false));
        }
        for (_, ack) in std::mem::take(&mut self.flush_waiters) {
            let _ = self.reports.send(Report::Barrier(ack));
        }
        self.commands_done = true;
    }
}
