//! Where a partition's actor records what happens to its batches, once per batch (never per
//! event on the enqueue path): counters it alone writes, and distributions behind a lock that
//! only it and a snapshot take.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::histogram::Histogram;
use super::snapshot::PartitionMetrics;
use crate::error::ErrorKind;

/// The metrics a partition's actor records.
#[derive(Debug, Default)]
pub(crate) struct PartitionRecorder {
    published: AtomicU64,
    failed: AtomicU64,
    abandoned: AtomicU64,
    /// Shared with the sends in flight, which count their retries in it (see
    /// [`super::counting_retries`]).
    retries: Arc<AtomicU64>,
    sends_in_flight: AtomicU64,
    recorded: Mutex<Recorded>,
}

/// The distributions, and the failures by kind (rare, so a list).
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorded {
    failed_by_kind: Vec<(ErrorKind, u64)>,
    batch_events: Histogram,
    batch_bytes: Histogram,
    send_micros: Histogram,
    latency_micros: Histogram,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn duration_of(micros: u64) -> Duration {
    Duration::from_micros(micros)
}

impl PartitionRecorder {
    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counter the sends of this partition count their retries in.
    pub(crate) fn retries(&self) -> Arc<AtomicU64> {
        self.retries.clone()
    }

    /// A batch of `events` events, `bytes` encoded bytes, starts; `in_flight` sends are in
    /// flight now.
    pub(crate) fn send_started(&self, events: usize, bytes: usize, in_flight: usize) {
        self.sends_in_flight
            .store(in_flight as u64, Ordering::Relaxed);
        let mut recorded = self.recorded();
        recorded.batch_events.record(events as u64);
        recorded.batch_bytes.record(bytes as u64);
    }

    /// `in_flight` sends are in flight now (after sends were cancelled or added).
    pub(crate) fn set_sends_in_flight(&self, in_flight: usize) {
        self.sends_in_flight
            .store(in_flight as u64, Ordering::Relaxed);
    }

    /// A send ended after `took`; `in_flight` sends are in flight now.
    pub(crate) fn send_ended(&self, took: Duration, in_flight: usize) {
        self.sends_in_flight
            .store(in_flight as u64, Ordering::Relaxed);
        self.recorded().send_micros.record(micros(took));
    }

    /// `events` events were published; `waited` gives how long groups of them waited since
    /// their enqueue (each with its count).
    pub(crate) fn published(&self, events: usize, waited: impl Iterator<Item = (Duration, usize)>) {
        self.published.fetch_add(events as u64, Ordering::Relaxed);
        let mut recorded = self.recorded();
        for (waited, count) in waited {
            recorded
                .latency_micros
                .record_n(micros(waited), count as u64);
        }
    }

    /// `events` events are reported with an error of `kind`.
    pub(crate) fn failed(&self, events: usize, kind: ErrorKind) {
        let events = events as u64;
        if kind == ErrorKind::Abandoned {
            self.abandoned.fetch_add(events, Ordering::Relaxed);
            return;
        }
        self.failed.fetch_add(events, Ordering::Relaxed);
        let mut recorded = self.recorded();
        match recorded.failed_by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, count)) => *count += events,
            None => recorded.failed_by_kind.push((kind, events)),
        }
    }

    /// The partition's metrics now. `enqueued`, `buffered_events` and `buffered_bytes` come
    /// from the partition's inbox, which counts them as events come and go.
    pub(crate) fn snapshot(
        &self,
        partition_id: &str,
        queue: QueueCounts,
    ) -> (PartitionMetrics, Recorded) {
        let recorded = self.recorded().clone();
        let metrics = PartitionMetrics {
            partition_id: Some(partition_id.to_string()),
            enqueued: queue.enqueued,
            published: self.published.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            buffered_events: queue.buffered_events,
            buffered_bytes: queue.buffered_bytes,
            sends_in_flight: self.sends_in_flight.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            ..PartitionMetrics::default()
        };
        (recorded.summarize_into(metrics), recorded)
    }
}

/// What a partition's inbox counts: events accepted so far, and those buffered now with the
/// bytes of the budget they hold.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueueCounts {
    pub enqueued: u64,
    pub buffered_events: u64,
    pub buffered_bytes: u64,
}

impl Recorded {
    /// Adds another partition's distributions and failures to these.
    pub(crate) fn merge(&mut self, other: &Recorded) {
        for (kind, count) in &other.failed_by_kind {
            match self.failed_by_kind.iter_mut().find(|(k, _)| k == kind) {
                Some((_, ours)) => *ours += count,
                None => self.failed_by_kind.push((*kind, *count)),
            }
        }
        self.batch_events.merge(&other.batch_events);
        self.batch_bytes.merge(&other.batch_bytes);
        self.send_micros.merge(&other.send_micros);
        self.latency_micros.merge(&other.latency_micros);
    }

    /// `metrics` with these distributions and failures filled in.
    pub(crate) fn summarize_into(&self, mut metrics: PartitionMetrics) -> PartitionMetrics {
        let mut failed_by_kind = self.failed_by_kind.clone();
        failed_by_kind.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        metrics.failed_by_kind = failed_by_kind;
        metrics.batch_events = self.batch_events.summary(|v| v);
        metrics.batch_bytes = self.batch_bytes.summary(|v| v);
        metrics.send_duration = self.send_micros.summary(duration_of);
        metrics.publish_latency = self.latency_micros.summary(duration_of);
        metrics
    }
}

/// Adds one partition's counters to the total's.
pub(crate) fn add_counters(total: &mut PartitionMetrics, partition: &PartitionMetrics) {
    total.enqueued += partition.enqueued;
    total.published += partition.published;
    total.failed += partition.failed;
    total.abandoned += partition.abandoned;
    total.buffered_events += partition.buffered_events;
    total.buffered_bytes += partition.buffered_bytes;
    total.sends_in_flight += partition.sends_in_flight;
    total.retries += partition.retries;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_by_kind_and_abandoned_apart() {
        let recorder = PartitionRecorder::default();
        recorder.published(3, [(Duration::from_millis(2), 3)].into_iter());
        recorder.failed(2, ErrorKind::Timeout);
        recorder.failed(1, ErrorKind::Unauthorized);
        recorder.failed(4, ErrorKind::Timeout);
        recorder.failed(5, ErrorKind::Abandoned);
        let (m, _) = recorder.snapshot("0", QueueCounts::default());
        assert_eq!((m.published, m.failed, m.abandoned), (3, 7, 5));
        assert_eq!(
            m.failed_by_kind,
            vec![(ErrorKind::Timeout, 6), (ErrorKind::Unauthorized, 1)]
        );
        assert_eq!(m.failed_with(ErrorKind::Abandoned), 0);
        assert_eq!(m.publish_latency.count, 3);
        assert_eq!(m.publish_latency.max, Duration::from_millis(2));
    }

    #[test]
    fn totals_merge_distributions_rather_than_average_them() {
        let (a, b) = (PartitionRecorder::default(), PartitionRecorder::default());
        for _ in 0..99 {
            a.send_started(10, 1_000, 1);
        }
        b.send_started(1_000, 100_000, 1);
        let (ma, mut ra) = a.snapshot("0", QueueCounts::default());
        let (mb, rb) = b.snapshot("1", QueueCounts::default());
        let mut total = PartitionMetrics::default();
        add_counters(&mut total, &ma);
        add_counters(&mut total, &mb);
        ra.merge(&rb);
        let total = ra.summarize_into(total);
        assert_eq!(total.batch_events.count, 100);
        assert_eq!(total.batch_events.p50, 10);
        assert_eq!(total.batch_events.max, 1_000);
        assert_eq!(total.sends_in_flight, 2);
    }
}
