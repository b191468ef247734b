//! The handler interface: a trait for both outcomes, and the adapter for handlers registered
//! as closures.

use std::future::Future;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::context::{SendFailedContext, SendSucceededContext};

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
