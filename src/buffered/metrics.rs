//! The metrics snapshot of a buffered producer: each partition's counters and distributions
//! as its actor recorded them, its queue's counts, and the totals.

use super::client::BufferedProducerClient;
use crate::telemetry::{add_counters, PartitionMetrics, ProducerMetrics, Recorded};

impl BufferedProducerClient {
    /// A snapshot of the producer's metrics, per partition and in total: events enqueued,
    /// published, failed (by kind) and abandoned; what is buffered now; sends in flight,
    /// retries and reconnects; and distributions of batch sizes, send durations and the
    /// latency from enqueue to publish.
    ///
    /// Always available, at no cost to enqueues: the counters the enqueue path keeps anyway
    /// are read, and the rest is recorded once per batch. Taking a snapshot locks each
    /// partition briefly; scrape it every few seconds, not per event.
    ///
    /// ```no_run
    /// # async fn demo(producer: eventhubs_buffered::BufferedProducerClient) -> eventhubs_buffered::Result<()> {
    /// producer.flush().await?;
    /// let metrics = producer.metrics();
    /// let total = &metrics.total;
    /// assert_eq!(total.published + total.failed + total.abandoned, total.enqueued);
    /// println!(
    ///     "published {} events in {} batches, p99 latency {:?}",
    ///     total.published, total.batch_events.count, total.publish_latency.p99
    /// );
    /// for partition in &metrics.partitions {
    ///     println!("{:?}: {} buffered", partition.partition_id, partition.buffered_events);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn metrics(&self) -> ProducerMetrics {
        let set = self.current_partitions();
        let mut total = PartitionMetrics::default();
        let mut distributions = Recorded::default();
        let mut partitions = Vec::with_capacity(set.partitions.len());
        for partition in &set.partitions {
            let shared = &partition.shared;
            let (metrics, recorded) = shared
                .metrics
                .snapshot(&shared.id, shared.inbox.queue_counts());
            add_counters(&mut total, &metrics);
            distributions.merge(&recorded);
            partitions.push(metrics);
        }
        ProducerMetrics {
            total: distributions.summarize_into(total),
            partitions,
            reconnects: self.core.settings.sender.reconnects(),
        }
    }
}
