//! A histogram of non-negative integers in log-linear buckets: 16 buckets per power of two,
//! so any quantile it reports is within about 3% of the true value (half a bucket), in fixed
//! memory (under 5 KiB, allocated on the first value), with O(1) recording. The exact
//! minimum and maximum are kept besides.
//!
//! Values are microseconds, events or bytes; anything from 2^40 up counts in the last bucket
//! (2^40 microseconds are 12 days), while the maximum stays exact.

use super::Distribution;

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 4;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// Values below this are counted exactly, one bucket each.
const LINEAR_LIMIT: u64 = SUB_BUCKETS as u64;
/// The largest magnitude (bit length) given buckets of its own.
const MAX_BITS: u32 = 40;
const BUCKETS: usize = SUB_BUCKETS + (MAX_BITS - SUB_BITS) as usize * SUB_BUCKETS;

/// Counts of values by bucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct Histogram {
    counts: Option<Box<[u64]>>,
    count: u64,
    /// The exact sum (saturating), for the mean.
    sum: u64,
    min: u64,
    max: u64,
}

/// The bucket of `value`.
fn bucket_of(value: u64) -> usize {
    if value < LINEAR_LIMIT {
        return value as usize;
    }
    let bits = (64 - value.leading_zeros()).min(MAX_BITS);
    let value = value.min((1u64 << MAX_BITS) - 1);
    // The SUB_BITS bits below the leading one choose the sub-bucket.
    let sub = ((value >> (bits - 1 - SUB_BITS)) as usize) & (SUB_BUCKETS - 1);
    SUB_BUCKETS + (bits - 1 - SUB_BITS) as usize * SUB_BUCKETS + sub
}

/// The smallest value and the width of bucket `index`.
fn bucket_bounds(index: usize) -> (u64, u64) {
    if index < SUB_BUCKETS {
        return (index as u64, 1);
    }
    let octave = (index - SUB_BUCKETS) / SUB_BUCKETS;
    let sub = ((index - SUB_BUCKETS) % SUB_BUCKETS) as u64;
    let shift = octave as u32;
    let width = 1u64 << shift;
    ((LINEAR_LIMIT + sub) << shift, width)
}

impl Histogram {
    /// Counts `value` once.
    pub(crate) fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Counts `value` `times` times.
    pub(crate) fn record_n(&mut self, value: u64, times: u64) {
        if times == 0 {
            return;
        }
        let counts = self
            .counts
            .get_or_insert_with(|| vec![0; BUCKETS].into_boxed_slice());
        counts[bucket_of(value)] += times;
        self.min = if self.count == 0 {
            value
        } else {
            self.min.min(value)
        };
        self.max = self.max.max(value);
        self.count += times;
        self.sum = self.sum.saturating_add(value.saturating_mul(times));
    }

    /// Adds every value of `other`.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        let Some(theirs) = &other.counts else {
            return;
        };
        let ours = self
            .counts
            .get_or_insert_with(|| vec![0; BUCKETS].into_boxed_slice());
        for (ours, theirs) in ours.iter_mut().zip(theirs.iter()) {
            *ours += theirs;
        }
        self.min = if self.count == 0 {
            other.min
        } else {
            self.min.min(other.min)
        };
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// The value at quantile `q` (0 to 1): the middle of its bucket, kept within the exact
    /// minimum and maximum. 0 for an empty histogram.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let Some(counts) = &self.counts else {
            return 0;
        };
        if self.count == 0 {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        // The rank of the value wanted, from 1: at least one, at most all of them.
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_bounds(index);
                let middle = low + (width - 1) / 2;
                return middle.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Count, mean, median, 99th percentile and maximum, converted by `unit`.
    pub(crate) fn summary<T: Default>(&self, unit: impl Fn(u64) -> T) -> Distribution<T> {
        if self.count == 0 {
            return Distribution::default();
        }
        Distribution {
            count: self.count,
            mean: unit(self.sum / self.count),
            p50: unit(self.quantile(0.5)),
            p99: unit(self.quantile(0.99)),
            max: unit(self.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::default();
        for v in [1, 2, 3, 3, 15] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 3);
        assert_eq!(h.quantile(0.0), 1);
        assert_eq!(h.quantile(1.0), 15);
        let s = h.summary(|v| v);
        assert_eq!((s.count, s.mean, s.p50, s.p99, s.max), (5, 4, 3, 15, 15));
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        let s = Histogram::default().summary(|v| v);
        assert_eq!((s.count, s.p50, s.p99, s.max), (0, 0, 0, 0));
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 5_000.0).abs() / 5_000.0 < 0.04, "p50 {p50}");
        assert!((p99 - 9_900.0).abs() / 9_900.0 < 0.04, "p99 {p99}");
        assert_eq!(h.summary(|v| v).max, 10_000);
        assert_eq!(h.summary(|v| v).mean, 5_000);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in 0..500u64 {
            a.record(v * 7);
            all.record(v * 7);
            b.record_n(v * 1_000 + 3, 2);
            all.record_n(v * 1_000 + 3, 2);
        }
        a.merge(&b);
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(a.quantile(q), all.quantile(q), "q {q}");
        }
        assert_eq!(a.count, all.count);
        assert_eq!((a.min, a.max), (all.min, all.max));
    }

    #[test]
    fn huge_values_land_in_the_last_bucket_and_keep_the_exact_maximum() {
        let mut h = Histogram::default();
        h.record(u64::MAX);
        h.record(1 << 50);
        assert_eq!(h.summary(|v| v).max, u64::MAX);
        assert!(h.quantile(0.5) >= 1 << 39);
    }

    proptest! {
        #[test]
        fn every_bucket_holds_its_value(value in any::<u64>()) {
            let index = bucket_of(value);
            prop_assert!(index < BUCKETS);
            let (low, width) = bucket_bounds(index);
            let capped = value.min((1u64 << MAX_BITS) - 1);
            prop_assert!(low <= capped && capped - low < width, "{value}: bucket {index} = [{low}, +{width})");
        }

        #[test]
        fn a_quantile_is_within_half_a_bucket(values in proptest::collection::vec(0u64..1 << 30, 1..200), q in 0.0f64..=1.0) {
            let mut h = Histogram::default();
            for v in &values {
                h.record(*v);
            }
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            let exact = sorted[rank - 1] as f64;
            let reported = h.quantile(q) as f64;
            // Half a bucket is at most 1/32 of the value (values below 16 are exact).
            prop_assert!((reported - exact).abs() <= exact / 32.0 + 0.5, "q {q}: exact {exact}, reported {reported}");
        }
    }
}
