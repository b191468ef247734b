//! The per-partition actor: takes enqueued events from its inbox, encodes each once into the
//! batch being built, seals the batch when it is full, when its oldest event has waited
//! `max_wait_time`, or on flush and close, sends sealed batches within the concurrency limits,
//! and hands every outcome, in send order, to the partition's reporter.
//!
//! - `mod.rs`: the actor's state, its start and its loop (what it waits for, in which order);
//! - `building.rs`: adding events to the batch being built and sealing it;
//! - `sending.rs`: sending sealed batches, their outcomes, and abandoning;
//! - `resplit.rs`: a batch refused for a size limit the service lowered, sent again in pieces;
//! - `settings.rs`: what the producer and the actors share.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::budget::Reservation;
use super::command::Command;
use super::inbox::Inbox;
use super::report::{Backlog, Report};
use crate::batch::EventDataBatch;
use crate::error::Result;
use crate::event::EventData;
use crate::idempotence::PublishedSequenceNumbers;

mod building;
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
    let shared = Arc::new(PartitionShared {
        id,
        failing: AtomicBool::new(false),
        reporter: backlog.clone(),
        give_up: tokio::sync::Notify::new(),
        inbox: Inbox::new(max_buffered_events),
    });
    let reports = settings.reporters.start(backlog.clone());
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
        if self.settings.refresh.is_due(now) {
            (self.settings.refresh_partitions)();
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
}
