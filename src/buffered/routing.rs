//! Which partition an event goes to: an explicit id, the service's hash of its key, or
//! automatically, to a partition that has room and is not failing.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;

use eventhubs_partition_key::partition_index_for_key;

use super::options::EnqueueOptions;
use super::partitions::{PartitionHandle, PartitionSet};
use crate::batch::{batch_target, BatchTarget};
use crate::error::{Error, ErrorKind, Result};

/// The index of the partition the service would pick for `key` among `count` partitions
/// (ids in the service's order).
pub(crate) fn index_for_key(key: &str, count: usize) -> usize {
    partition_index_for_key(key, count)
}

/// Where each new thread's automatic placements start: one further than the previous
/// thread's, so that threads enqueueing at the same pace go through the partitions side by
/// side rather than in step on the same partition.
static FIRST_START: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Where the next automatic placement on this thread starts. Per thread rather than one
    /// shared counter: enqueuers on different cores then never contend for one cache line,
    /// and each thread still cycles through every partition, so the load spreads evenly.
    static NEXT_START: Cell<usize> = Cell::new(FIRST_START.fetch_add(1, Ordering::Relaxed));
}

/// Round-robin start points for automatic routing, so load spreads evenly.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin;

impl RoundRobin {
    /// Partition indexes to try, starting after the last one used on this thread, each once.
    pub(crate) fn order(&self, count: usize) -> impl Iterator<Item = usize> + Clone {
        let start = if count == 0 {
            0
        } else {
            NEXT_START.with(|next| {
                let start = next.get();
                next.set(start.wrapping_add(1));
                start % count
            })
        };
        (0..count).map(move |i| (start + i) % count)
    }
}

/// Where an event goes, checking the options: an error names what is wrong.
pub(crate) fn resolve<'a>(
    set: &'a PartitionSet,
    options: &EnqueueOptions,
) -> Result<Option<(&'a Arc<PartitionHandle>, Option<String>)>> {
    let key = options.partition_key.as_deref().filter(|k| !k.is_empty());
    // The common cases first, without the allocations `batch_target` makes.
    match (options.partition_id.as_deref(), key) {
        (None, None) => return Ok(None),
        (Some(id), None) if !id.is_empty() => {
            if let Some(p) = set.get(id) {
                return Ok(Some((p, None)));
            }
        }
        _ => {}
    }
    match batch_target(options.partition_id.as_deref(), key)? {
        BatchTarget::Partition(id) => match set.get(&id) {
            Some(p) => Ok(Some((p, None))),
            None => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "partition '{id}' does not exist; the event hub's partitions are {:?}",
                    set.ids()
                ),
            )),
        },
        BatchTarget::PartitionKey(key) => {
            let index = index_for_key(&key, set.partitions.len());
            let partition = set.partitions.get(index).ok_or_else(|| {
                Error::new(
                    ErrorKind::ServiceError,
                    "the event hub reported no partitions",
                )
            })?;
            Ok(Some((partition, Some(key))))
        }
        BatchTarget::Automatic => Ok(None),
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
        let rr = RoundRobin;
        let first: Vec<_> = rr.order(4).collect();
        let second: Vec<_> = rr.order(4).collect();
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        assert_eq!(
            second[0],
            (first[0] + 1) % 4,
            "the next placement starts one further"
        );
        assert_eq!(rr.order(0).count(), 0);
    }
}
