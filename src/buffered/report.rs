//! What a partition's actor hands to the partition's reporter: the outcome of each batch, in
//! send order, and barriers that flush and close wait on. Also the reporter's backlog (how
//! many outcomes wait for their handler call) and the marker that tells an enqueue it runs
//! inside a handler. The reporter itself, which turns outcomes into handler calls, stands
//! above the client (see `reporter.rs`); the actor only knows this interface.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};

use super::budget::Charge;
use super::outcome::ReportedEvent;
use crate::error::Error;
use crate::idempotence::PublishedSequenceNumbers;

/// The outcome of sending some events of one partition (a batch, a piece of one, or events
/// that failed before they could be sent).
pub(crate) struct BatchOutcome {
    pub partition_id: String,
    /// The events, each with how it was routed, as the handler gets them.
    pub events: Vec<ReportedEvent>,
    /// Published (with the sequence numbers of an idempotent producer), or why not.
    pub result: Result<Option<PublishedSequenceNumbers>, Arc<Error>>,
    /// The events' bytes of `max_buffered_bytes`: held until just before the handler call
    /// (dropping it gives them back).
    pub held: Charge,
}

/// One thing for the reporter to do.
pub(crate) enum Report {
    Outcome(BatchOutcome),
    /// Answer once every report before it was handled (flush and close wait on this).
    Barrier(oneshot::Sender<()>),
}

/// Starts the reporter of one partition and returns where its reports go. Implemented above
/// the client, where the handler and the producer's handle are known.
pub(crate) trait StartReporter: Send + Sync + 'static {
    /// A new reporter task for one partition, keeping `backlog` up to date.
    fn start(&self, backlog: Arc<Backlog>) -> mpsc::UnboundedSender<Report>;
}

/// How many reports of a partition wait for their handler; the partition stops sending when
/// too many do, so a stuck handler holds up only its own partition, with bounded memory.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    pending: AtomicUsize,
    drained: Notify,
    /// When the handler call running now started; None between calls.
    busy_since: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Backlog {
    /// When the handler call running now started, if one is running.
    pub(crate) fn busy_since(&self) -> Option<tokio::time::Instant> {
        *self.busy_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handler call starts (`Some`) or ended (`None`).
    pub(crate) fn set_busy(&self, since: Option<tokio::time::Instant>) {
        *self.busy_since.lock().unwrap_or_else(|p| p.into_inner()) = since;
    }

    /// Reports queued and not yet handled.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// One more report is queued.
    pub(crate) fn added(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// One report was handled.
    pub(crate) fn handled(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        self.drained.notify_one();
    }

    /// Returns once fewer than `limit` reports are queued.
    pub(crate) async fn wait_below(&self, limit: usize) {
        while self.pending() >= limit {
            let notified = self.drained.notified();
            if self.pending() < limit {
                return;
            }
            notified.await;
        }
    }
}

tokio::task_local! {
    /// Set while a handler runs, so that its enqueues take the space its batch released.
    static IN_HANDLER: ();
}

/// Whether the current task is running a handler of this crate.
pub(crate) fn in_handler() -> bool {
    IN_HANDLER.try_with(|_| ()).is_ok()
}

/// Runs a handler call marked as such (see [`in_handler`]).
pub(crate) async fn as_handler<F: Future>(call: F) -> F::Output {
    IN_HANDLER.scope((), call).await
}
