//! What a producer tells about itself: a metrics snapshot that is always there
//! ([`ProducerMetrics`], from [`BufferedProducerClient::metrics`]), the retries of a send,
//! counted for the partition that sends it, and, with the `opentelemetry` feature, metrics,
//! spans and trace context for OpenTelemetry.
//!
//! - `histogram.rs`: the log-linear histogram behind every distribution;
//! - `recorder.rs`: where a partition's actor records its batches, once per batch;
//! - `snapshot.rs`: the public snapshot types;
//! - `otel/`: the OpenTelemetry instruments, spans and `traceparent` (feature
//!   `opentelemetry`); [`Telemetry`] and [`PartitionTelemetry`] are what the rest of the crate
//!   calls, with or without the feature.
//!
//! [`BufferedProducerClient::metrics`]: crate::BufferedProducerClient::metrics

mod histogram;
#[cfg(feature = "opentelemetry")]
mod otel;
mod recorder;
mod snapshot;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) use self::recorder::{add_counters, PartitionRecorder, QueueCounts, Recorded};
pub use self::snapshot::{Distribution, PartitionMetrics, ProducerMetrics};

#[cfg(feature = "opentelemetry")]
pub use self::otel::OpenTelemetryOptions;

use crate::error::{Error, Result};
use crate::event::EventData;

tokio::task_local! {
    /// The retry counter of the partition whose send runs in this task now.
    static RETRIES: Arc<AtomicU64>;
}

/// Runs `send` counting its retries in `retries` (see [`retrying`]).
pub(crate) async fn counting_retries<F: Future>(retries: Arc<AtomicU64>, send: F) -> F::Output {
    RETRIES.scope(retries, send).await
}

/// Try `try_number` failed with `error` and the retry policy tries again: counted for the
/// send this runs in, if any, and an event on its span.
pub(crate) fn retrying(try_number: u32, error: &Error) {
    let _ = RETRIES.try_with(|retries| retries.fetch_add(1, Ordering::Relaxed));
    #[cfg(feature = "opentelemetry")]
    otel::retrying(try_number, error);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (try_number, error);
}

/// A producer's OpenTelemetry instrumentation, when it has one (always none without the
/// `opentelemetry` feature): what enqueues, flush and close call.
#[derive(Clone, Default)]
pub(crate) struct Telemetry {
    #[cfg(feature = "opentelemetry")]
    otel: Option<Arc<otel::Instruments>>,
}

impl Telemetry {
    /// The instrumentation `options` ask for, for the producer of `hub` in `namespace`.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn new(options: Option<&OpenTelemetryOptions>, namespace: &str, hub: &str) -> Self {
        Self {
            otel: options.map(|o| Arc::new(otel::Instruments::new(o, namespace, hub))),
        }
    }

    /// What the sends of one partition record.
    pub(crate) fn partition(&self, partition_id: &str) -> PartitionTelemetry {
        #[cfg(feature = "opentelemetry")]
        return PartitionTelemetry {
            otel: self
                .otel
                .as_ref()
                .map(|o| Arc::new(o.for_partition(partition_id))),
        };
        #[cfg(not(feature = "opentelemetry"))]
        {
            let _ = partition_id;
            PartitionTelemetry {}
        }
    }

    /// Puts the trace context on an event about to be enqueued, when asked to.
    #[inline]
    pub(crate) fn stamp(&self, event: &mut EventData) {
        #[cfg(feature = "opentelemetry")]
        if let Some(otel) = &self.otel {
            otel.stamp(event);
        }
        #[cfg(not(feature = "opentelemetry"))]
        let _ = event;
    }

    /// Runs a producer-wide operation (`flush`, `close`) in a span of its own.
    pub(crate) async fn operation<T>(
        &self,
        operation: &'static str,
        run: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        #[cfg(feature = "opentelemetry")]
        if let Some(otel) = &self.otel {
            use opentelemetry::context::FutureExt as _;
            let context = otel.start_operation(operation);
            let result = run.with_context(context.clone()).await;
            otel::end_span(&context, result.as_ref().err());
            return result;
        }
        let _ = operation;
        run.await
    }
}

/// What the sends of one partition record for OpenTelemetry (nothing without the feature).
#[derive(Clone, Default)]
pub(crate) struct PartitionTelemetry {
    #[cfg(feature = "opentelemetry")]
    otel: Option<Arc<otel::PartitionInstruments>>,
}

impl PartitionTelemetry {
    /// Wraps a batch send of `events` in its span and metrics (links to the events' trace
    /// contexts are taken now).
    pub(crate) fn instrument_send<'e, T, F>(
        &self,
        events: impl Iterator<Item = &'e EventData>,
        count: usize,
        send: F,
    ) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        #[cfg(feature = "opentelemetry")]
        {
            let record = self.otel.as_ref().map(|o| o.start_send(events, count));
            async move {
                let Some(record) = record else {
                    return send.await;
                };
                use opentelemetry::context::FutureExt as _;
                let result = send.with_context(record.context.clone()).await;
                record.end(result.as_ref().err());
                result
            }
        }
        #[cfg(not(feature = "opentelemetry"))]
        {
            let _ = (events, count);
            send
        }
    }
}
