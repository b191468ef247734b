//! The reporter of a partition: a task that turns the actor's outcomes, in send order, into
//! handler calls (one per batch or piece), each marked as running inside a handler, with a
//! panicking handler logged and contained.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::mpsc;

use super::client::{BufferedProducerClient, WeakProducer};
use super::context::{SendFailedContext, SendSucceededContext};
use super::handler::DynHandler;
use super::report::{as_handler, Backlog, BatchOutcome, Report, StartReporter};

/// Starts reporters that call `handler`, with contexts that lead back to `producer`.
pub(crate) struct Reporters {
    pub handler: Arc<dyn DynHandler>,
    pub producer: WeakProducer,
}

impl StartReporter for Reporters {
    fn start(&self, backlog: Arc<Backlog>) -> mpsc::UnboundedSender<Report> {
        let (reports, reports_rx) = mpsc::unbounded_channel();
        tokio::spawn(run_reporter(
            self.handler.clone(),
            reports_rx,
            backlog,
            self.producer.clone(),
        ));
        reports
    }
}

/// Calls the handler for each report of one partition, in order, until the channel closes.
async fn run_reporter(
    handler: Arc<dyn DynHandler>,
    reports: mpsc::UnboundedReceiver<Report>,
    backlog: Arc<Backlog>,
    producer: WeakProducer,
) {
    let mut reports = Unreported(reports);
    while let Some(report) = reports.0.recv().await {
        let call = match report {
            Report::Barrier(ack) => {
                let _ = ack.send(());
                continue;
            }
            // Lazy, so that a handler that panics before its future exists (a closure's
            // synchronous part) panics inside `catch_unwind` below too.
            Report::Outcome(outcome) => {
                let producer = producer.upgrade();
                let handler = &*handler;
                async move { call_for(handler, outcome, producer).await }
            }
        };
        backlog.set_busy(Some(tokio::time::Instant::now()));
        let outcome = as_handler(AssertUnwindSafe(call).catch_unwind()).await;
        backlog.set_busy(None);
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-text panic".to_string());
            tracing::error!(panic = %message, "a buffered producer handler panicked; the producer goes on");
        }
        backlog.handled();
    }
}

/// The reports of a partition on their way to the handler. Dropped with reports still in it
/// only when the runtime shut down under the reporter: those events' handler calls can no
/// longer happen, and that must not go unsaid.
struct Unreported(mpsc::UnboundedReceiver<Report>);

impl Drop for Unreported {
    fn drop(&mut self) {
        let mut events = 0;
        while let Ok(report) = self.0.try_recv() {
            if let Report::Outcome(outcome) = report {
                events += outcome.events.len();
            }
        }
        if events > 0 {
            tracing::error!(
                events,
                "the runtime stopped the buffered producer before these events' outcomes reached the handler (call close() before the runtime shuts down)"
            );
        }
    }
}

/// The handler call for one outcome.
fn call_for(
    handler: &dyn DynHandler,
    outcome: BatchOutcome,
    producer: Option<BufferedProducerClient>,
) -> BoxFuture<'_, ()> {
    let BatchOutcome {
        partition_id,
        events,
        result,
        held,
    } = outcome;
    // The events leave the buffer for the handler: their bytes no longer count (so that a
    // handler re-enqueueing them finds the room they held).
    drop(held);
    match result {
        Ok(published_sequence_numbers) => handler.succeeded(SendSucceededContext {
            partition_id,
            events,
            published_sequence_numbers,
            producer,
        }),
        Err(error) => handler.failed(SendFailedContext {
            partition_id,
            events,
            error,
            producer,
        }),
    }
}
