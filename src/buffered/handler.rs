//! The handler interface: a trait for both outcomes that is implemented with plain
//! `async fn`s, the adapter that lets the producer hold any handler behind one pointer, and
//! the adapter for handlers registered as closures.

use std::future::Future;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::context::{SendFailedContext, SendSucceededContext};

/// Receives the outcome of every batch. Calls for one partition come in send order;
/// partitions are independent. A handler that panics is logged and the producer goes on.
///
/// Implement it with plain `async fn`s (no macro needed); the futures must be `Send`:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use eventhubs_buffered::{BufferedProducerHandler, SendFailedContext, SendSucceededContext};
///
/// #[derive(Default)]
/// struct Counting {
///     published: AtomicU64,
/// }
///
/// impl BufferedProducerHandler for Counting {
///     async fn on_send_succeeded(&self, context: SendSucceededContext) {
///         self.published.fetch_add(context.events.len() as u64, Ordering::Relaxed);
///     }
///
///     async fn on_send_failed(&self, context: SendFailedContext) {
///         eprintln!("{} events failed: {}", context.events.len(), context.error);
///     }
/// }
/// ```
///
/// Events a handler enqueues again (for example, after a transient failure) never wait for
/// buffer space: they take the space their batch just gave back, so re-enqueueing from a
/// handler cannot deadlock even when every buffer is full.
pub trait BufferedProducerHandler: Send + Sync + 'static {
    /// A batch was published. Default: does nothing.
    fn on_send_succeeded(&self, context: SendSucceededContext) -> impl Future<Output = ()> + Send {
        let _ = context;
        async {}
    }

    /// Events were not published (retries exhausted, a non-transient error, too large, paused
    /// by the ordering guard, cleared, or abandoned at close).
    fn on_send_failed(&self, context: SendFailedContext) -> impl Future<Output = ()> + Send;
}

/// A handler behind a pointer: the producer calls every handler through this.
pub(crate) trait DynHandler: Send + Sync + 'static {
    fn succeeded(&self, context: SendSucceededContext) -> BoxFuture<'_, ()>;
    fn failed(&self, context: SendFailedContext) -> BoxFuture<'_, ()>;
}

impl<H: BufferedProducerHandler> DynHandler for H {
    fn succeeded(&self, context: SendSucceededContext) -> BoxFuture<'_, ()> {
        self.on_send_succeeded(context).boxed()
    }

    fn failed(&self, context: SendFailedContext) -> BoxFuture<'_, ()> {
        self.on_send_failed(context).boxed()
    }
}

pub(crate) type SucceededFn = dyn Fn(SendSucceededContext) -> BoxFuture<'static, ()> + Send + Sync;
pub(crate) type FailedFn = dyn Fn(SendFailedContext) -> BoxFuture<'static, ()> + Send + Sync;

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

impl DynHandler for ClosureHandler {
    fn succeeded(&self, context: SendSucceededContext) -> BoxFuture<'_, ()> {
        match &self.succeeded {
            Some(f) => f(context),
            None => async {}.boxed(),
        }
    }

    fn failed(&self, context: SendFailedContext) -> BoxFuture<'_, ()> {
        (self.failed)(context)
    }
}
