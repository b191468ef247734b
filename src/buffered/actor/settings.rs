//! What the producer and a partition's actor share: the partition's own state
//! ([`PartitionShared`]) and the settings and resources of every actor of one producer
//! ([`ActorSettings`]), including when the partition list is next read.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::buffered::budget::ByteBudget;
use crate::buffered::inbox::Inbox;
use crate::buffered::report::{Backlog, StartReporter};
use crate::buffered::sender::BatchSender;
use crate::telemetry::{PartitionRecorder, Telemetry};

/// What the producer and the actor share about one partition.
#[derive(Debug)]
pub(crate) struct PartitionShared {
    pub id: String,
    /// Whether the last send of this partition failed (automatic routing avoids it).
    pub failing: AtomicBool,
    /// Whether the ordering guard paused the partition after a batch failed: enqueues are
    /// refused (except a handler's) until the application resumes it.
    pub paused: AtomicBool,
    /// The reporter's state: reports waiting, and the handler call running now.
    pub reporter: Arc<Backlog>,
    /// Told when close stops waiting for this partition (its handler is stuck): the actor
    /// then reports everything it still holds as abandoned and stops.
    pub give_up: tokio::sync::Notify,
    /// Commands on their way to the actor; also the partition's free slots, its count of
    /// buffered events and its byte credit.
    pub inbox: Inbox,
    /// What the actor records of its batches, for the metrics.
    pub metrics: PartitionRecorder,
}

impl PartitionShared {
    pub(crate) fn new(id: String, reporter: Arc<Backlog>, inbox: Inbox) -> Self {
        Self {
            id,
            failing: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            reporter,
            give_up: tokio::sync::Notify::new(),
            inbox,
            metrics: PartitionRecorder::default(),
        }
    }

    /// Whether the ordering guard paused the partition.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
}

/// Settings and resources every actor of a producer shares.
pub(crate) struct ActorSettings {
    pub sender: Arc<dyn BatchSender>,
    /// Starts each partition's reporter (which calls the handlers).
    pub reporters: Arc<dyn StartReporter>,
    pub max_wait_time: Option<Duration>,
    /// A batch goes at once when the partition has a free send slot (see `actor/mod.rs`).
    pub send_when_idle: bool,
    /// Pause a partition after a batch of it failed (the ordering guard).
    pub pause_on_failure: bool,
    pub max_sends_per_partition: usize,
    /// The largest batch the service takes, learned from the first partition link attached
    /// (0 until then): enqueues refuse events that could never fit.
    pub link_max_size: AtomicUsize,
    /// Events are encoded with idempotent publishing placeholders.
    pub idempotent: bool,
    pub global_sends: Arc<Semaphore>,
    pub total_buffered: Arc<AtomicUsize>,
    pub budget: ByteBudget,
    /// When the partition list is next read. Actors check it as they take enqueued events.
    pub refresh: RefreshSchedule,
    /// Reads the partition list again, in the background (called by an actor when
    /// [`RefreshSchedule::is_due`]).
    pub refresh_partitions: Box<dyn Fn() + Send + Sync>,
    /// OpenTelemetry instrumentation, when the options ask for it.
    pub telemetry: Telemetry,
}

/// When the partition list is next read: checked by every actor as it takes enqueued events,
/// so it costs one atomic load when not due, and an idle producer never reads the list.
#[derive(Debug)]
pub(crate) struct RefreshSchedule {
    /// Milliseconds since `epoch`; `u64::MAX` while a read is running.
    next_ms: AtomicU64,
    epoch: Instant,
    interval_ms: u64,
}

impl RefreshSchedule {
    /// The first read is due `interval` from now.
    pub(crate) fn new(interval: Duration) -> Self {
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        Self {
            next_ms: AtomicU64::new(interval_ms),
            epoch: Instant::now(),
            interval_ms,
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the partition list is due to be read again: one atomic load.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.millis(now) >= self.next_ms.load(Ordering::Relaxed)
    }

    /// Takes the right to read the list now; false when it is not due or another caller took
    /// it. Whoever takes it calls [`Self::done`] afterwards.
    pub(crate) fn claim(&self, now: Instant) -> bool {
        let due = self.next_ms.load(Ordering::Relaxed);
        self.millis(now) >= due
            && self
                .next_ms
                .compare_exchange(due, u64::MAX, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
    }

    /// The read that [`Self::claim`] allowed is over: the next is due one interval from now.
    pub(crate) fn done(&self) {
        let next = self.millis(Instant::now()).saturating_add(self.interval_ms);
        self.next_ms.store(next, Ordering::SeqCst);
    }
}
