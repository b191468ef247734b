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
use super::handler::BufferedProducerHandler;
use super::report::{as_handler, Backlog, BatchOutcome, Report, StartReporter};

/// Starts reporters that call `handler`, with contexts that lead back to `producer`.
pub(crate) struct Reporters {
    pub handler: Arc<dyn BufferedProducerHandler>,
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
    handler: Arc<dyn BufferedProducerHandler>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    backlog: Arc<Backlog>,
    producer: WeakProducer,
) {
    while let Some(report) = reports.recv().await {
        let call = match report {
            Report::Barrier(ack) => {
                let _ = ack.send(());
                continue;
            }
            Report::Outcome(outcome) => call_for(&*handler, outcome, producer.upgrade()),
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

/// The handler call for one outcome.
fn call_for(
    handler: &dyn BufferedProducerHandler,
    outcome: BatchOutcome,
    producer: Option<BufferedProducerClient>,
) -> BoxFuture<'_, ()> {
    let BatchOutcome {
        partition_id,
        events,
        keys,
        result,
    } = outcome;
    match result {
        Ok(published_sequence_numbers) => handler.on_send_succeeded(SendSucceededContext {
            partition_id,
            events,
            partition_keys: keys,
            published_sequence_numbers,
            producer,
        }),
        Err(error) => handler.on_send_failed(SendFailedContext {
            partition_id,
            events,
            partition_keys: keys,
            error,
            producer,
        }),
    }
}
