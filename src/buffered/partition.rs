//! The per-partition actor: takes enqueued events from its queue, encodes each once into the
//! batch being built, seals the batch when it is full, when its oldest event has waited
//! `max_wait_time`, or on flush and close, sends sealed batches within the concurrency limits,
//! and hands every outcome, in send order, to the partition's reporter.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use super::capacity::{release, ByteBudget, EventSpace, Reservation};
use super::handlers::{
    run_reporter, Backlog, BufferedProducerHandler, Report, SendFailedContext, SendSucceededContext,
};
use super::inbox::Inbox;
use super::sender::BatchSender;
use crate::amqp::message::encode_batch_event;
use crate::batch::{BatchTarget, EventDataBatch};
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;
use crate::idempotence::PublishedSequenceNumbers;

mod resplit;

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

/// What the producer and the actor share about one partition.
#[derive(Debug)]
pub(crate) struct PartitionShared {
    pub id: String,
    /// Whether the last send of this partition failed (automatic routing avoids it).
    pub failing: AtomicBool,
    /// The reporter's state: reports waiting, and the handler call running now.
    pub reporter: Arc<Backlog>,
    /// Told when close stops waiting for this partition (its handler is stuck): the actor
    /// then reports everything it still holds as abandoned and stops.
    pub give_up: tokio::sync::Notify,
    /// Commands on their way to the actor; also the partition's free slots, its count of
    /// buffered events and its byte credit.
    pub inbox: Inbox,
}

/// Settings and resources every actor of a producer shares.
pub(crate) struct ActorSettings {
    pub producer: super::WeakProducer,
    pub sender: Arc<dyn BatchSender>,
    pub handler: Arc<dyn BufferedProducerHandler>,
    pub max_wait_time: Option<Duration>,
    pub max_sends_per_partition: usize,
    /// Events are encoded with idempotent publishing placeholders.
    pub idempotent: bool,
    pub global_sends: Arc<Semaphore>,
    pub total_buffered: Arc<AtomicUsize>,
    pub budget: ByteBudget,
    /// When the partition list is next read, in milliseconds since `epoch`; `u64::MAX` while a
    /// read is running. Actors check it as they take enqueued events (see `Actor::take`).
    pub next_refresh_ms: AtomicU64,
    pub epoch: Instant,
}

impl ActorSettings {
    /// Whether the partition list is due to be read again: one atomic load.
    pub(crate) fn refresh_due(&self, now: Instant) -> bool {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        now_ms >= self.next_refresh_ms.load(Ordering::Relaxed)
    }
}

/// Starts the actor and reporter of one partition; returns what the producer keeps of it.
pub(crate) fn spawn(
    id: String,
    max_buffered_events: usize,
    settings: Arc<ActorSettings>,
) -> Arc<PartitionShared> {
    let backlog = Arc::new(Backlog::default());
    let shared = Arc::new(PartitionShared {
        id,
        failing: AtomicBool::new(false),
        reporter: backlog.clone(),
        give_up: tokio::sync::Notify::new(),
        inbox: Inbox::new(max_buffered_events),
    });
    let (reports, reports_rx) = mpsc::unbounded_channel();
    tokio::spawn(run_reporter(
        settings.handler.clone(),
        reports_rx,
        backlog.clone(),
        settings.producer.clone(),
    ));
    let backlog_limit = (2 * settings.max_sends_per_partition).max(4);
    let actor = Actor {
        shared: shared.clone(),
        settings,
        pending: VecDeque::new(),
        received_at: Instant::now(),
        commands_done: false,
        reports,
        backlog,
        backlog_limit,
        max_size: None,
        building: None,
        last_batch_len: 0,
        ready: VecDeque::new(),
        in_flight: FuturesOrdered::new(),
        in_flight_events: VecDeque::new(),
        next_seq: 1,
        completed_seq: 0,
        flush_waiters: VecDeque::new(),
        close_waiters: Vec::new(),
    };
    tokio::spawn(actor.run());
    shared
}

struct Building {
    batch: EventDataBatch,
    keys: Vec<Option<String>>,
    reservation: Reservation,
    oldest: Instant,
}

struct Sealed {
    seq: u64,
    batch: EventDataBatch,
    keys: Vec<Option<String>>,
    reservation: Reservation,
}

/// Events of a batch in flight, with their keys and the space they hold.
struct InFlight {
    seq: u64,
    events: Vec<EventData>,
    keys: Vec<Option<String>>,
    reservation: Reservation,
    /// Set when the batch is being sent again in pieces (the service lowered its size
    /// limit): the outcome of each piece, in order.
    pieces: Option<resplit::Pieces>,
}

type Sending = BoxFuture<'static, (u64, Result<Option<PublishedSequenceNumbers>>)>;

struct Actor {
    shared: Arc<PartitionShared>,
    settings: Arc<ActorSettings>,
    /// Commands taken from the inbox and not yet handled, in order.
    pending: VecDeque<Command>,
    /// When the commands in `pending` were taken: stands for the enqueue time of their events
    /// (a batch's `max_wait_time` counts from its first event's). At most one burst late.
    received_at: Instant,
    /// The inbox is closed and empty: no more commands will come.
    commands_done: bool,
    reports: mpsc::UnboundedSender<Report>,
    backlog: Arc<Backlog>,
    backlog_limit: usize,
    /// The partition link's max-message-size, learned on the first event.
    max_size: Option<usize>,
    building: Option<Building>,
    /// Events in the batch sealed last: the next one is sized for as many.
    last_batch_len: usize,
    ready: VecDeque<Sealed>,
    in_flight: FuturesOrdered<Sending>,
    /// Events of the batches in flight, in send order.
    in_flight_events: VecDeque<InFlight>,
    next_seq: u64,
    completed_seq: u64,
    /// Flushes waiting for every batch up to a sequence number to be reported.
    flush_waiters: VecDeque<(u64, oneshot::Sender<()>)>,
    close_waiters: Vec<oneshot::Sender<()>>,
}

fn abandoned(in_flight: bool) -> Arc<Error> {
    let message = if in_flight {
        "the producer was closed while this batch was being sent; it may or may not have been published"
    } else {
        "the producer was closed without flushing; the events were not sent"
    };
    Arc::new(Error::new(ErrorKind::Abandoned, message))
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Actor {
    async fn run(mut self) {
        loop {
            if self.handle_pending().await {
                break;
            }
            self.seal_if_nothing_more_can_come();
            self.dispatch_ready();
            if self.is_finished() {
                break;
            }
            let deadline = match (&self.building, self.settings.max_wait_time) {
                (Some(b), Some(wait)) => Some(b.oldest + wait),
                _ => None,
            };
            let has_slot = self.in_flight.len() < self.settings.max_sends_per_partition;
            let backlog_full = self.backlog.pending() >= self.backlog_limit;
            let wants_global = !self.ready.is_empty() && has_slot && !backlog_full;
            let global = self.settings.global_sends.clone();
            let backlog = self.backlog.clone();
            let shared = self.shared.clone();
            tokio::select! {
                biased;
                Some((seq, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.on_completed(seq, result);
                }
                permit = global.acquire_owned(), if wants_global => {
                    if let Ok(permit) = permit {
                        self.start_send(permit);
                    }
                }
                _ = backlog.wait_below(self.backlog_limit), if backlog_full && !self.ready.is_empty() => {}
                _ = sleep_until_some(deadline), if deadline.is_some() => self.seal(),
                // Close stopped waiting for this partition (its handler is stuck).
                _ = shared.give_up.notified() => {
                    self.abandon();
                    break;
                }
                // Commands already taken are handled one per turn while a sealed batch waits
                // for a send slot: a close_abandoning must not wait behind a send that hangs
                // (memory stays bounded by the slots).
                _ = std::future::ready(()), if !self.pending.is_empty() => {}
                open = shared.inbox.recv(&mut self.pending), if self.pending.is_empty() && !self.commands_done => {
                    if open {
                        self.took_commands();
                    } else {
                        self.commands_done = true;
                        self.seal();
                    }
                }
            }
        }
        for done in self.close_waiters.drain(..) {
            let _ = self.reports.send(Report::Barrier(done));
        }
        // Nothing comes any more: what credit of the byte budget the partition holds, and the
        // inbox's memory, go back.
        self.settings
            .budget
            .give_back(self.shared.inbox.take_credit());
        self.shared.inbox.shrink();
    }

    /// Commands were just taken from the inbox: notes the time, for the batches they start,
    /// and reads the partition list again when that is due (taking enqueued events is what
    /// keeps the list fresh; an idle producer does nothing).
    fn took_commands(&mut self) {
        let now = Instant::now();
        self.received_at = now;
        if self.settings.refresh_due(now) {
            if let Some(producer) = self.settings.producer.upgrade() {
                producer.refresh_if_due(now);
            }
        }
    }

    /// Seals the batch being built when the partition's buffer is full and its queue is empty:
    /// enqueuers are waiting for space only a send can free, so waiting for the batch to
    /// fill or for `max_wait_time` would only stall them.
    fn seal_if_nothing_more_can_come(&mut self) {
        if self.building.is_some()
            && self.ready.is_empty()
            && self.pending.is_empty()
            && !self.shared.inbox.may_have_room()
            && self.shared.inbox.is_full_and_empty()
        {
            self.seal();
        }
    }

    /// Everything is sent and reported, and no command can come any more.
    fn is_finished(&self) -> bool {
        self.commands_done
            && self.building.is_none()
            && self.ready.is_empty()
            && self.in_flight.is_empty()
    }

    /// Handles the commands taken from the inbox, without going back to `select!` between
    /// them: at least one, then until a batch is sealed (it must be sent first) or after
    /// `MAX_BURST` commands, so completions are not held up. True when the actor must stop at
    /// once (abandoned).
    async fn handle_pending(&mut self) -> bool {
        const MAX_BURST: usize = 1024;
        for _ in 0..MAX_BURST {
            let Some(command) = self.pending.pop_front() else {
                break;
            };
            match command {
                // Synchronous once the batch size limit is known: no future per event.
                Command::Event(queued) => match self.max_size {
                    Some(max_size) => self.add(queued, max_size),
                    None => self.add_first(queued).await,
                },
                Command::Flush(ack) => self.flush(ack),
                Command::Close {
                    abandon: false,
                    done,
                } => {
                    self.close_waiters.push(done);
                    // Events already queued are still taken; new ones are refused.
                    self.shared.inbox.close();
                }
                Command::Close {
                    abandon: true,
                    done,
                } => {
                    self.close_waiters.push(done);
                    self.abandon();
                    return true;
                }
            }
            if !self.ready.is_empty() {
                break;
            }
        }
        false
    }

    /// The batch size limit, asking the connection layer the first time.
    async fn max_size(&mut self) -> Result<usize> {
        if let Some(size) = self.max_size {
            return Ok(size);
        }
        let size = self.settings.sender.max_batch_size(&self.shared.id).await?;
        self.max_size = Some(size);
        Ok(size)
    }

    fn encode(&self, queued_key: &Option<String>, event: &EventData) -> Vec<u8> {
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
    async fn add_first(&mut self, queued: Queued) {
        match self.max_size().await {
            Ok(max_size) => self.add(queued, max_size),
            Err(e) => {
                let (event, key, reservation) = queued.into_parts();
                self.fail_now(vec![event], vec![key], reservation, Arc::new(e));
            }
        }
    }

    fn add(&mut self, queued: Queued, max_size: usize) {
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
    fn seal(&mut self) {
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

    fn flush(&mut self, ack: oneshot::Sender<()>) {
        self.seal();
        let target = self.next_seq - 1;
        if target <= self.completed_seq {
            let _ = self.reports.send(Report::Barrier(ack));
        } else {
            self.flush_waiters.push_back((target, ack));
        }
    }

    /// Starts as many ready batches as the limits allow without waiting.
    fn dispatch_ready(&mut self) {
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

    fn start_send(&mut self, permit: OwnedSemaphorePermit) {
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
    fn release(&self, count: usize, reservation: Reservation) {
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

    fn report(&self, report: Report) {
        if matches!(report, Report::Succeeded(_) | Report::Failed(_)) {
            self.backlog.added();
        }
        if self.reports.send(report).is_err() {
            tracing::error!(partition = %self.shared.id, "the reporter is gone; an outcome could not be reported");
        }
    }

    fn on_completed(&mut self, seq: u64, result: Result<Option<PublishedSequenceNumbers>>) {
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
    fn report_outcome(
        &self,
        events: Vec<EventData>,
        keys: Vec<Option<String>>,
        result: Result<Option<PublishedSequenceNumbers>>,
    ) {
        if events.is_empty() {
            return;
        }
        let partition_id = self.shared.id.clone();
        match result {
            Ok(published_sequence_numbers) => {
                // Only on a change: enqueuers of every core read this line.
                if self.shared.failing.load(Ordering::Relaxed) {
                    self.shared.failing.store(false, Ordering::SeqCst);
                }
                self.report(Report::Succeeded(SendSucceededContext {
                    partition_id,
                    events,
                    partition_keys: keys,
                    published_sequence_numbers,
                    producer: None,
                }));
            }
            Err(error) => {
                self.shared.failing.store(true, Ordering::SeqCst);
                tracing::error!(partition = %partition_id, events = events.len(), error = %error, "batch not published");
                self.report(Report::Failed(SendFailedContext {
                    partition_id,
                    events,
                    partition_keys: keys,
                    error: Arc::new(error),
                    producer: None,
                }));
            }
        }
    }

    /// Reports events as failed at once (too large, or the link could not be attached).
    fn fail_now(
        &self,
        events: Vec<EventData>,
        keys: Vec<Option<String>>,
        reservation: Reservation,
        error: Arc<Error>,
    ) {
        self.release(events.len(), reservation);
        tracing::error!(partition = %self.shared.id, events = events.len(), error = %error, "events not published");
        self.report(Report::Failed(SendFailedContext {
            partition_id: self.shared.id.clone(),
            events,
            partition_keys: keys,
            error,
            producer: None,
        }));
    }

    /// Stops at once: everything not yet published is reported as abandoned.
    fn abandon(&mut self) {
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
