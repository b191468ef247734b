//! Which partition an event goes to: an explicit id, the service's hash of its key, or
//! automatically, to a partition that has room and is not failing.

use std::sync::atomic::{AtomicUsize, Ordering};

use eventhubs_partition_key::partition_index_for_key;

/// The index of the partition the service would pick for `key` among `count` partitions
/// (ids in the service's order).
pub(crate) fn index_for_key(key: &str, count: usize) -> usize {
    partition_index_for_key(key, count)
}

/// Round-robin start points for automatic routing, so load spreads evenly.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin(AtomicUsize);

impl RoundRobin {
    /// Partition indexes to try, starting after the last one used, each once.
    pub(crate) fn order(&self, count: usize) -> impl Iterator<Item = usize> {
        let start = if count == 0 {
            0
        } else {
            self.0.fetch_add(1, Ordering::Relaxed) % count
        };
        (0..count).map(move |i| (start + i) % count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_published_vectors() {
        assert_eq!(index_for_key("alphabet", 3), 0);
        assert_eq!(index_for_key("alphabet", 11), 4);
        assert_eq!(index_for_key("TheBestParitionEver", 4), 2);
        assert_eq!(index_for_key("TheWorstParitionEver", 15), 1);
    }

    #[test]
    fn round_robin_visits_every_partition_once_and_rotates() {
        let rr = RoundRobin::default();
        let first: Vec<_> = rr.order(4).collect();
        let second: Vec<_> = rr.order(4).collect();
        assert_eq!(first, vec![0, 1, 2, 3]);
        assert_eq!(second, vec![1, 2, 3, 0]);
        assert_eq!(rr.order(0).count(), 0);
    }
}
