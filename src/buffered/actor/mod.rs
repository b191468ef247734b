//! The per-partition actor: takes enqueued events from its inbox, encodes each once into the
//! batch being built, sends batches within the concurrency limits, and hands every outcome,
//! in send order, to the partition's reporter (resolving the per-event outcomes callers
//! await on the way).
//!
//! When a batch goes:
//! - at once when the partition has a free send slot and nothing else waits for one
//!   (`send_when_idle`, the default): an idle partition adds no latency, and events that
//!   arrive while a send is in flight accumulate into the next batch, which goes when the slot
//!   frees once its first event has waited 1 ms (`BUSY_LINGER`), so a steady stream makes
//!   full batches rather than one per round trip;
//! - when it is full (the next event does not fit), or the partition's buffer is full;
//! - when its oldest event has waited `max_wait_time`, on flush, and on close. A batch whose
//!   time came while every send slot is busy keeps taking events, up to its size limit, until
//!   a slot frees: small `max_wait_time` values never queue up tiny batches.
//!
//! - `mod.rs`: the actor's state, its start and its loop (what it waits for, in which order);
//! - `building.rs`: adding events to the batch being built, sealing, flush and clear;
//! - `sending.rs`: sending batches, their outcomes, the ordering guard, and abandoning;
//! - `resplit.rs`: a batch refused for a size limit the service lowered, sent again in pieces;
//! - `settings.rs`: what the producer and the actors share.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::budget::{Charge, Reservation};
use super::command::{Command, Line};
use super::inbox::Inbox;
use super::outcome::{OutcomeSender, ReportedEvent};
use super::report::{Backlog, Report};
use crate::batch::EncodedBatch;
use crate::error::Result;
use crate::idempotence::PublishedSequenceNumbers;
use crate::telemetry::PartitionTelemetry;
use encode_buffers::SpareBuffers;

mod building;
mod encode_buffers;
mod enqueued_at;
mod resplit;
mod sending;
mod settings;

pub(crate) use self::settings::{ActorSettings, PartitionShared, RefreshSchedule};

/// Starts the actor and reporter of one partition; returns what the producer keeps of it.
pub(crate) fn spawn(
    id: String,
    max_buffered_events: usize,
    settings: Arc<ActorSettings>,
) -> Arc<PartitionShared> {
    let backlog = Arc::new(Backlog::default());
    let shared = Arc::new(PartitionShared::new(
        id,
        backlog.clone(),
        Inbox::new(max_buffered_events),
    ));
    let reports = settings.reporters.start(backlog.clone());
    let backlog_limit = (2 * settings.max_sends_per_partition).max(4);
    let spare_charge = settings.budget.charge(0);
    let actor = Actor {
        spare_charge,
        telemetry: settings.telemetry.partition(&shared.id),
        id_for_outcomes: Arc::from(shared.id.as_str()),
        shared: shared.clone(),
        settings,
        pending: VecDeque::new(),
        pending_outcomes: VecDeque::new(),
        received_at: Instant::now(),
        commands_done: false,
        reports,
        backlog,
        backlog_limit,
        max_size: None,
        building: None,
        last_batch_len: 0,
        spare: SpareBuffers::default(),
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

/// What a batch carries besides its encoded bytes: its events as the handler gets them (each
/// with how it was routed), the outcomes callers await (by the event's index in the batch;
/// most events have none), and the buffer space it holds.
#[derive(Default)]
struct Riders {
    events: Vec<ReportedEvent>,
    outcomes: Vec<(usize, OutcomeSender)>,
    reservation: Reservation,
    /// When the events were enqueued (for the metrics' publish latency); empty for events
    /// reported without being sent.
    enqueued_at: enqueued_at::EnqueuedAt,
}

impl Riders {
    fn with_capacity(events: usize) -> Self {
        Self {
            events: Vec::with_capacity(events),
            ..Self::default()
        }
    }

    /// Splits off the events from `at` on, with their outcomes (their indexes start from 0
    /// again); the space stays here.
    fn split_off(&mut self, at: usize) -> Riders {
        let events = self.events.split_off(at.min(self.events.len()));
        let (keep, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.outcomes)
            .into_iter()
            .partition(|(index, _)| *index < at);
        self.outcomes = keep;
        Riders {
            events,
            outcomes: later
                .into_iter()
                .map(|(index, outcome)| (index - at, outcome))
                .collect(),
            reservation: Reservation::default(),
            enqueued_at: self.enqueued_at.split_off(at),
        }
    }
}

/// The batch being built.
struct Building {
    batch: EncodedBatch,
    riders: Riders,
    /// When its first event was taken from the inbox.
    oldest: Instant,
    /// Its time came (max_wait_time, a flush, a full buffer) while no send slot was free: it
    /// goes with the next free slot, and takes events until then.
    due: bool,
    /// Its first event came while a send was in flight: events keep coming during sends, so
    /// it lingers up to [`BUSY_LINGER`] to fill rather than going the moment the slot frees.
    started_busy: bool,
}

/// How long a batch that started filling during a send waits for more events before it goes
/// with the next free slot (with `send_when_idle`): enough for a steady stream to fill
/// batches (an event per microsecond makes a batch of about a thousand), short next to
/// `max_wait_time` and to what people notice.
const BUSY_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// A full batch waiting for a send slot.
struct Sealed {
    seq: u64,
    batch: EncodedBatch,
    riders: Riders,
}

/// A batch in flight: its events and what rides with them.
struct InFlight {
    seq: u64,
    riders: Riders,
    /// Set when the batch is being sent again in pieces (the service lowered its size
    /// limit): the outcome of each piece, in order.
    pieces: Option<resplit::Pieces>,
}

/// A send in flight: resolves to its batch's sequence number, its result, how long it took
/// and the buffers of its encoded events, to be reused.
type Sending = BoxFuture<
    'static,
    (
        u64,
        Result<Option<PublishedSequenceNumbers>>,
        std::time::Duration,
        Vec<Vec<u8>>,
    ),
>;

struct Actor {
    shared: Arc<PartitionShared>,
    settings: Arc<ActorSettings>,
    /// OpenTelemetry spans and metrics of this partition's sends, when asked for.
    telemetry: PartitionTelemetry,
    /// The partition id as the outcomes of its events carry it (cloned per event: one atomic
    /// increment, no allocation).
    id_for_outcomes: Arc<str>,
    /// Commands taken from the inbox and not yet handled, in order.
    pending: VecDeque<Line<Command>>,
    /// The outcome senders of the tracked events among `pending`, in the same order.
    pending_outcomes: VecDeque<OutcomeSender>,
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
    /// Buffers of events whose send ended, for the next events' encodings (see
    /// `encode_buffers.rs`).
    spare: SpareBuffers,
    /// The kept buffers' capacity, counted in the byte budget.
    spare_charge: Charge,
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

impl Drop for Actor {
    /// The actor stops with events still held only when its runtime shut down under it (every
    /// other way out reports them first): they can be neither sent nor reported any more, and
    /// must not vanish without a word.
    fn drop(&mut self) {
        self.shared
            .inbox
            .take_all(&mut self.pending, &mut self.pending_outcomes);
        let queued = self
            .pending
            .iter()
            .filter(|c| matches!(c.0, Command::Event(_)))
            .count();
        let unsent = queued
            + self.building.as_ref().map_or(0, |b| b.batch.len())
            + self.ready.iter().map(|s| s.batch.len()).sum::<usize>();
        let in_flight: usize = self
            .in_flight_events
            .iter()
            .map(|b| b.riders.events.len())
            .sum();
        if unsent + in_flight > 0 {
            tracing::error!(
                partition = %self.shared.id,
                unsent,
                in_flight_may_have_been_published = in_flight,
                "the runtime stopped the buffered producer before these events were sent and reported; they are lost to the handlers (call close() before the runtime shuts down)"
            );
        }
    }
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
            self.mark_due_if_nothing_more_can_come();
            self.dispatch();
            if self.is_finished() {
                break;
            }
            let deadline = self.building.as_ref().filter(|b| !b.due).and_then(|b| {
                let linger =
                    (self.settings.send_when_idle && b.started_busy).then_some(BUSY_LINGER);
                let wait = match (self.settings.max_wait_time, linger) {
                    (Some(wait), Some(linger)) => Some(wait.min(linger)),
                    (wait, linger) => wait.or(linger),
                };
                wait.map(|wait| b.oldest + wait)
            });
            let has_slot = self.in_flight.len() < self.settings.max_sends_per_partition;
            let backlog_full = self.backlog.pending() >= self.backlog_limit;
            let has_work = self.has_batch_to_send();
            let wants_global = has_work && has_slot && !backlog_full;
            let global = self.settings.global_sends.clone();
            let backlog = self.backlog.clone();
            let shared = self.shared.clone();
            tokio::select! {
                biased;
                Some((seq, result, took, buffers)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.shared.metrics.send_ended(took, self.in_flight.len());
                    self.on_completed(seq, result);
                    self.keep_buffers(buffers);
                }
                permit = global.acquire_owned(), if wants_global => {
                    if let Ok(permit) = permit {
                        self.start_next_send(permit);
                    }
                }
                _ = backlog.wait_below(self.backlog_limit), if backlog_full && has_work => {}
                _ = sleep_until_some(deadline), if deadline.is_some() => self.mark_due(),
                // Close stopped waiting for this partition (its handler is stuck).
                _ = shared.give_up.notified() => {
                    self.abandon();
                    break;
                }
                // Commands already taken are handled one per turn while a full batch waits
                // for a send slot: a close_abandoning must not wait behind a send that hangs
                // (memory stays bounded by the slots).
                _ = std::future::ready(()), if !self.pending.is_empty() => {}
                open = shared.inbox.recv(&mut self.pending, &mut self.pending_outcomes), if self.pending.is_empty() && !self.commands_done => {
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
        // The burst's events join the batch being built from here on: noted once per burst,
        // not per event (see `enqueued_at.rs`).
        if let Some(building) = &mut self.building {
            let riders = &mut building.riders;
            riders.enqueued_at.start_run(now, riders.events.len());
        }
        if self.settings.refresh.is_due(now) {
            (self.settings.refresh_partitions)();
        }
    }

    /// The batch being built is due when the partition's buffer is full, its queue is empty
    /// and no send is in flight: enqueuers are waiting for space only this batch's send can
    /// free, so waiting for it to fill or for `max_wait_time` would only stall them. (While a
    /// send is in flight, its completion frees room and the batch fills on.)
    fn mark_due_if_nothing_more_can_come(&mut self) {
        if self.building.is_some()
            && self.in_flight.is_empty()
            && self.pending.is_empty()
            && !self.shared.inbox.may_have_room()
            && self.shared.inbox.is_full_and_empty()
        {
            self.mark_due();
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
    /// them: at least one, then until a batch is full (it must be sent first) or after
    /// `MAX_BURST` commands, so completions are not held up. True when the actor must stop at
    /// once (abandoned).
    async fn handle_pending(&mut self) -> bool {
        const MAX_BURST: usize = 1024;
        for _ in 0..MAX_BURST {
            let Some(Line(command)) = self.pending.pop_front() else {
                break;
            };
            match command {
                Command::Event(queued) => {
                    let outcome = match queued.is_tracked() {
                        true => self.pending_outcomes.pop_front(),
                        false => None,
                    };
                    // Synchronous once the batch size limit is known: no future per event.
                    match self.max_size {
                        Some(max_size) => self.add(queued, outcome, max_size),
                        None => self.add_first(queued, outcome).await,
                    }
                }
                Command::Flush(ack) => self.flush(ack),
                Command::Clear(ack) => self.clear(ack),
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
}
