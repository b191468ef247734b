//! What [`BufferedProducerClient::metrics`](crate::BufferedProducerClient::metrics) returns: a
//! snapshot of the producer's counters, gauges and distributions, per partition and in total.

use std::time::Duration;

use crate::error::ErrorKind;

/// A summary of the values recorded so far: how many, their mean, the median, the 99th
/// percentile and the largest. Percentiles come from a log-linear histogram and are within
/// about 3% of the exact values; the mean (rounded down) and the maximum are exact. All zero
/// while nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Distribution<T> {
    /// Values recorded.
    pub count: u64,
    /// The mean.
    pub mean: T,
    /// The median.
    pub p50: T,
    /// The 99th percentile.
    pub p99: T,
    /// The largest value.
    pub max: T,
}

/// The metrics of one partition, or of all of them ([`ProducerMetrics::total`]).
///
/// Counters only grow. Every event an enqueue accepted is counted in `enqueued` at once, and
/// in exactly one of `published`, `failed` and `abandoned` when its batch's outcome is known
/// (just before its handler is called). So once the producer is flushed,
/// `published + failed + abandoned == enqueued`, and the gauges (`buffered_events`,
/// `buffered_bytes`, `sends_in_flight`) are zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionMetrics {
    /// The partition's id; `None` in the total.
    pub partition_id: Option<String>,
    /// Events accepted by an enqueue (an enqueue that failed handed its event back and is not
    /// counted). Events a handler enqueues again count again.
    pub enqueued: u64,
    /// Events the service acknowledged.
    pub published: u64,
    /// Events reported to the failure handler with an error other than
    /// [`ErrorKind::Abandoned`].
    pub failed: u64,
    /// `failed`, by the error's kind (kinds with a count above zero, most frequent first).
    pub failed_by_kind: Vec<(ErrorKind, u64)>,
    /// Events reported with [`ErrorKind::Abandoned`] (close without flushing, `clear`, a
    /// partition close gave up on).
    pub abandoned: u64,
    /// Events buffered now: enqueued, and not yet published or failed.
    pub buffered_events: u64,
    /// Bytes of the byte budget ([`max_buffered_bytes`]) the buffered events hold now. Events
    /// waiting for their handler call, sends in flight and kept encode buffers hold some more
    /// of it (see there), not shown here.
    ///
    /// [`max_buffered_bytes`]: crate::BufferedProducerOptions::max_buffered_bytes
    pub buffered_bytes: u64,
    /// Batches being sent now.
    pub sends_in_flight: u64,
    /// Tries of batch sends after the first (each retry counts once).
    pub retries: u64,
    /// Events per batch sent.
    pub batch_events: Distribution<u64>,
    /// Encoded bytes per batch sent.
    pub batch_bytes: Distribution<u64>,
    /// How long each send took, retries included (microsecond resolution).
    pub send_duration: Distribution<Duration>,
    /// From an event's enqueue until the service acknowledged its batch, per published event
    /// (microsecond resolution; the enqueue time is when the partition took the event, at
    /// most one burst of enqueues late).
    pub publish_latency: Distribution<Duration>,
}

impl PartitionMetrics {
    /// Events that failed with `kind`.
    pub fn failed_with(&self, kind: ErrorKind) -> u64 {
        self.failed_by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, count)| *count)
    }
}

/// A snapshot of a buffered producer's metrics, from
/// [`BufferedProducerClient::metrics`](crate::BufferedProducerClient::metrics).
///
/// Taking one costs a lock per partition and copies a few kilobytes; it is meant for a
/// scrape every few seconds, not per event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerMetrics {
    /// All partitions together (distributions merged, not averaged).
    pub total: PartitionMetrics,
    /// Each partition the producer knows, in the service's order.
    pub partitions: Vec<PartitionMetrics>,
    /// Times the connection was opened again after the first (after it was lost, or closed
    /// for being idle).
    pub reconnects: u64,
}

impl ProducerMetrics {
    /// The metrics of one partition, if the producer knows it.
    pub fn partition(&self, partition_id: &str) -> Option<&PartitionMetrics> {
        self.partitions
            .iter()
            .find(|p| p.partition_id.as_deref() == Some(partition_id))
    }
}
