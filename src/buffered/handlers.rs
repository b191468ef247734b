//! What the producer tells you about every batch: the handler trait, closure adapters, the
//! contexts, and the per-partition reporter task that calls handlers in send order.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, Notify};

use super::{BufferedProducerClient, EnqueueOptions};
use crate::error::Error;
use crate::event::EventData;
use crate::idempotence::PublishedSequenceNumbers;

/// A batch the service accepted.
#[derive(Debug)]
#[non_exhaustive]
pub struct SendSucceededContext {
    /// The partition the events were published to.
    pub partition_id: String,
    /// The events, in the order they were enqueued; yours to keep.
    pub events: Vec<EventData>,
    /// The partition key each event was enqueued with (same order as `events`).
    pub partition_keys: Vec<Option<String>>,
    /// With [`enable_idempotent_retries`](crate::BufferedProducerOptions::enable_idempotent_retries):
    /// the producer id, epoch and each event's sequence number the service stored them under.
    /// None otherwise.
    pub published_sequence_numbers: Option<PublishedSequenceNumbers>,
    pub(crate) producer: Option<BufferedProducerClient>,
}

impl SendSucceededContext {
    /// The producer that published the batch, while it is still open or closing.
    pub fn producer(&self) -> Option<&BufferedProducerClient> {
        self.producer.as_ref()
    }
}

/// Events that were not published, and why.
#[derive(Debug)]
#[non_exhaustive]
pub struct SendFailedContext {
    /// The partition the events were bound for.
    pub partition_id: String,
    /// The events, in the order they were enqueued; yours to re-enqueue or keep.
    pub events: Vec<EventData>,
    /// The partition key each event was enqueued with (same order as `events`).
    pub partition_keys: Vec<Option<String>>,
    /// Why they failed (shared by every event of the batch).
    pub error: Arc<Error>,
    pub(crate) producer: Option<BufferedProducerClient>,
}

impl SendFailedContext {
    /// The producer the events were enqueued to, to re-enqueue them (an enqueue from a
    /// handler never waits for space). None once the producer has been dropped.
    pub fn producer(&self) -> Option<&BufferedProducerClient> {
        self.producer.as_ref()
    }

    /// Enqueues the events again with the options they had: the same partition key, or,
    /// for events without key, the same partition. Returns the total buffered count.
    ///
    /// When an event cannot be enqueued (the producer was closed or dropped meanwhile), the
    /// events before it stay enqueued and it and the ones after it come back in the error,
    /// so that none is lost.
    pub async fn requeue(self) -> std::result::Result<usize, RequeueError> {
        let partition_id = self.partition_id;
        let mut events = self.events.into_iter();
        let mut keys = self.partition_keys.into_iter();
        let Some(producer) = self.producer else {
            return Err(RequeueError {
                error: Error::new(
                    crate::ErrorKind::Closed,
                    "the producer is gone; the events cannot be re-enqueued",
                ),
                events: events.collect(),
                partition_keys: keys.collect(),
            });
        };
        let mut total = producer.total_buffered_event_count();
        while let Some(event) = events.next() {
            let key = keys.next().flatten();
            let options = match &key {
                Some(key) => EnqueueOptions::default().with_partition_key(key.clone()),
                None => EnqueueOptions::default().with_partition_id(partition_id.clone()),
            };
            match producer.enqueue_event(event.clone(), options).await {
                Ok(count) => total = count,
                Err(error) => {
                    return Err(RequeueError {
                        error,
                        events: std::iter::once(event).chain(events).collect(),
                        partition_keys: std::iter::once(key).chain(keys).collect(),
                    })
                }
            }
        }
        Ok(total)
    }
}

/// Why [`SendFailedContext::requeue`] did not re-enqueue every event; the events it did not
/// take come back with it, in order.
#[derive(Debug)]
pub struct RequeueError {
    error: Error,
    events: Vec<EventData>,
    partition_keys: Vec<Option<String>>,
}

impl RequeueError {
    /// Why the first of the returned events was not enqueued (for example
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed)).
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The partition key of each returned event (same order as the events).
    pub fn partition_keys(&self) -> &[Option<String>] {
        &self.partition_keys
    }

    /// The events that were not re-enqueued, in their order.
    pub fn into_events(self) -> Vec<EventData> {
        self.events
    }
}

impl std::fmt::Display for RequeueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events were not re-enqueued: {}",
            self.events.len(),
            self.error
        )
    }
}

impl std::error::Error for RequeueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Receives the outcome of every batch. Calls for one partition come in send order;
/// partitions are independent. A handler that panics is logged and the producer goes on.
///
/// Events a handler enqueues again (for example, after a transient failure) never wait for
/// buffer space: they take the space their batch just gave back, so re-enqueueing from a
/// handler cannot deadlock even when every buffer is full.
#[async_trait::async_trait]
pub trait BufferedProducerHandler: Send + Sync + 'static {
    /// A batch was published. Default: does nothing.
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        let _ = context;
    }

    /// Events were not published (retries exhausted, a non-transient error, too large, or
    /// abandoned at close).
    async fn on_send_failed(&self, context: SendFailedContext);
}

type SucceededFn = dyn Fn(SendSucceededContext) -> BoxFuture<'static, ()> + Send + Sync;
type FailedFn = dyn Fn(SendFailedContext) -> BoxFuture<'static, ()> + Send + Sync;

/// Handlers registered as closures.
pub(crate) struct ClosureHandler {
    pub succeeded: Option<Box<SucceededFn>>,
    pub failed: Box<FailedFn>,
}

pub(crate) fn boxed_succeeded<F, Fut>(f: F) -> Box<SucceededFn>
where
    F: Fn(SendSucceededContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::new(move |context| f(context).boxed())
}

pub(crate) fn boxed_failed<F, Fut>(f: F) -> Box<FailedFn>
where
    F: Fn(SendFailedContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::new(move |context| f(context).boxed())
}

#[async_trait::async_trait]
impl BufferedProducerHandler for ClosureHandler {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        if let Some(f) = &self.succeeded {
            f(context).await;
        }
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        (self.failed)(context).await;
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

/// One thing for the reporter to do.
pub(crate) enum Report {
    Succeeded(SendSucceededContext),
    Failed(SendFailedContext),
    /// Answer once every report before it was handled (flush and close wait on this).
    Barrier(oneshot::Sender<()>),
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

    fn set_busy(&self, since: Option<tokio::time::Instant>) {
        *self.busy_since.lock().unwrap_or_else(|p| p.into_inner()) = since;
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    pub(crate) fn added(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    fn handled(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        self.drained.notify_one();
    }

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

/// Calls the handler for each report of one partition, in order, until the channel closes.
pub(crate) async fn run_reporter(
    handler: Arc<dyn BufferedProducerHandler>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    backlog: Arc<Backlog>,
    producer: super::WeakProducer,
) {
    while let Some(report) = reports.recv().await {
        let call = match report {
            Report::Barrier(ack) => {
                let _ = ack.send(());
                continue;
            }
            Report::Succeeded(mut context) => {
                context.producer = producer.upgrade();
                handler.on_send_succeeded(context)
            }
            Report::Failed(mut context) => {
                context.producer = producer.upgrade();
                handler.on_send_failed(context)
            }
        };
        backlog.set_busy(Some(tokio::time::Instant::now()));
        let outcome = IN_HANDLER
            .scope((), AssertUnwindSafe(call).catch_unwind())
            .await;
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
