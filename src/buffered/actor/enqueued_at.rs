//! When the events of a batch were enqueued, for the publish latency in the metrics.
//!
//! The partition takes its inbox in bursts, and the time it takes a burst stands for the
//! enqueue time of the burst's events. A batch keeps one entry per run of events: the time and
//! the index of the run's first event. A run starts with the batch and with each burst the
//! actor takes (not per event: the per-event loop stays as it was), unless the burst came
//! within [`RUN`] of the run before (its events then count as enqueued that much early), so a
//! full batch under load keeps a few dozen entries, while an idle partition's sub-millisecond
//! latencies are still told apart.

use std::time::Duration;

use tokio::time::Instant;

/// How much later than its run's time an event may have been enqueued.
const RUN: Duration = Duration::from_micros(100);

/// The enqueue times of a batch's events, as runs of (time, index of the run's first event).
#[derive(Debug, Default)]
pub(super) struct EnqueuedAt {
    runs: Vec<(Instant, usize)>,
}

impl EnqueuedAt {
    /// The events from `index` on (until the next run) were enqueued at `at`.
    pub(super) fn start_run(&mut self, at: Instant, index: usize) {
        if let Some((last, _)) = self.runs.last() {
            if at.saturating_duration_since(*last) < RUN {
                return;
            }
        }
        self.runs.push((at, index));
    }

    /// Splits off the times of the events from index `at` on (their indexes start from 0).
    pub(super) fn split_off(&mut self, at: usize) -> EnqueuedAt {
        let moved = self.runs.partition_point(|(_, first)| *first < at);
        let mut later: Vec<(Instant, usize)> = self
            .runs
            .drain(moved..)
            .map(|(time, first)| (time, first - at))
            .collect();
        // The run that covers index `at` goes on in the part split off.
        if later.first().is_none_or(|(_, first)| *first != 0) {
            if let Some((time, _)) = self.runs.last() {
                later.insert(0, (*time, 0));
            }
        }
        EnqueuedAt { runs: later }
    }

    /// How long each run of a batch of `events` events has waited by `now`, with its count.
    pub(super) fn waited(
        &self,
        now: Instant,
        events: usize,
    ) -> impl Iterator<Item = (Duration, usize)> + '_ {
        self.runs.iter().enumerate().map(move |(i, (at, first))| {
            let end = self.runs.get(i + 1).map_or(events, |(_, next)| *next);
            (
                now.saturating_duration_since(*at),
                end.saturating_sub(*first),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(times: &EnqueuedAt, events: usize) -> Vec<usize> {
        times
            .waited(Instant::now(), events)
            .map(|(_, c)| c)
            .collect()
    }

    #[test]
    fn runs_start_with_bursts_and_splits_cut_them_where_asked() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut times = EnqueuedAt::default();
        // Bursts at 0 ms (3 events), 5 ms (2), 9 ms (1) and 9.099 ms (1, joins the run before).
        times.start_run(start, 0);
        times.start_run(start + ms(5), 3);
        times.start_run(start + ms(9), 5);
        times.start_run(start + ms(9) + Duration::from_micros(99), 6);
        assert_eq!(counts(&times, 7), vec![3, 2, 2]);
        let later = times.split_off(4);
        assert_eq!(counts(&times, 4), vec![3, 1]);
        assert_eq!(counts(&later, 3), vec![1, 2]);
        let rest = times.split_off(3);
        assert_eq!(counts(&times, 3), vec![3]);
        assert_eq!(counts(&rest, 1), vec![1]);
        let waited: Vec<_> = later.waited(start + ms(10), 3).collect();
        assert_eq!(waited, vec![(ms(5), 1), (ms(1), 2)]);
    }

    #[test]
    fn a_split_at_a_run_boundary_or_past_the_end_keeps_counts_whole() {
        let start = Instant::now();
        let mut times = EnqueuedAt::default();
        times.start_run(start, 0);
        times.start_run(start + Duration::from_millis(1), 2);
        let later = times.split_off(2);
        assert_eq!(counts(&times, 2), vec![2]);
        assert_eq!(counts(&later, 1), vec![1]);
        let nothing = times.split_off(2);
        assert_eq!(counts(&nothing, 0), vec![0]);
    }
}
