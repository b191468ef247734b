//! Which partition an event goes to: an explicit id, its key mapped by the partitioner (the
//! service's hash by default), or automatically: the round-robin start points automatic
//! routing tries partitions from (the choice among them, by room and health, is the enqueue
//! pipeline's).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;

use super::options::EnqueueOptions;
use super::outcome::Routing;
use super::partitioner::Partitioner;
use super::partitions::{PartitionHandle, PartitionSet};
use crate::batch::{batch_target, BatchTarget};
use crate::error::{Error, ErrorKind, Result};

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

/// Where an event goes, checking the options (an error names what is wrong): a partition and
/// how the event is routed to it, or None for automatic routing.
pub(crate) fn resolve<'a>(
    set: &'a PartitionSet,
    options: &EnqueueOptions,
    partitioner: &dyn Partitioner,
) -> Result<Option<(&'a Arc<PartitionHandle>, Routing)>> {
    let key = options.partition_key.as_deref().filter(|k| !k.is_empty());
    // The common cases first, without the allocations `batch_target` makes.
    match (options.partition_id.as_deref(), key) {
        (None, None) => return Ok(None),
        (Some(id), None) if !id.is_empty() => {
            if let Some(p) = set.get(id) {
                return Ok(Some((p, Routing::PartitionId)));
            }
        }
        _ => {}
    }
    match batch_target(options.partition_id.as_deref(), key)? {
        BatchTarget::Partition(id) => match set.get(&id) {
            Some(p) => Ok(Some((p, Routing::PartitionId))),
            None => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "partition '{id}' does not exist; the event hub's partitions are {:?}",
                    set.ids()
                ),
            )
            .for_partition(id)),
        },
        BatchTarget::PartitionKey(key) => {
            let count = set.partitions.len();
            if count == 0 {
                return Err(Error::new(
                    ErrorKind::ServiceError,
                    "the event hub reported no partitions",
                ));
            }
            let index = partitioner.partition_index(&key, count) % count;
            Ok(Some((&set.partitions[index], Routing::PartitionKey(key))))
        }
        BatchTarget::Automatic => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
