//! Which partition a partition key maps to: the service's own hash by default
//! ([`ServicePartitioner`]), or one of your own ([`Partitioner`]).

use eventhubs_partition_key::partition_index_for_key;

/// Maps a partition key to a partition. The default, [`ServicePartitioner`], is the hash the
/// service itself uses, so events sent by key through this producer land where the service
/// (and every official SDK) would put them. A custom partitioner changes that mapping for
/// this producer only: its keyed events are sent to the partition it picks (the key is still
/// stamped on each event as `x-opt-partition-key`).
///
/// ```
/// use eventhubs_buffered::Partitioner;
///
/// /// Keys are tenant ids like "tenant-17": tenant n goes to partition n modulo the count.
/// struct ByTenantNumber;
///
/// impl Partitioner for ByTenantNumber {
///     fn partition_index(&self, key: &str, partition_count: usize) -> usize {
///         let number: usize = key.trim_start_matches("tenant-").parse().unwrap_or(0);
///         number % partition_count
///     }
/// }
/// assert_eq!(ByTenantNumber.partition_index("tenant-17", 4), 1);
/// ```
pub trait Partitioner: Send + Sync + 'static {
    /// The index, in the event hub's partition list (in the service's order), of the
    /// partition for `key`, given `partition_count` (at least 1) partitions. An index at or
    /// above the count is taken modulo the count.
    fn partition_index(&self, key: &str, partition_count: usize) -> usize;
}

/// The service's partition-key hash (Jenkins lookup3 folded to 16 bits, as the service and
/// the official SDKs compute it): the default partitioner.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServicePartitioner;

impl Partitioner for ServicePartitioner {
    fn partition_index(&self, key: &str, partition_count: usize) -> usize {
        partition_index_for_key(key, partition_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_follows_the_published_vectors() {
        let p = ServicePartitioner;
        assert_eq!(p.partition_index("alphabet", 3), 0);
        assert_eq!(p.partition_index("alphabet", 11), 4);
        assert_eq!(p.partition_index("TheBestParitionEver", 4), 2);
        assert_eq!(p.partition_index("TheWorstParitionEver", 15), 1);
    }
}
