//! The partitions a producer knows, in the service's order, each with its actor: the list,
//! how it grows when the event hub gains partitions, and the per-thread copy enqueues read
//! it from.
//!
//! Enqueues read the list from a copy kept per thread: reading it under the producer's
//! `RwLock`, or cloning its `Arc`, writes a cache line that every enqueuer on every core
//! shares, twice per event. A version number tells a thread when its copy is stale.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::actor::{self, ActorSettings, PartitionShared};
use crate::error::Result;

/// What the producer keeps of one partition.
pub(crate) struct PartitionHandle {
    pub shared: Arc<PartitionShared>,
}

/// The partitions known now, in the service's order.
#[derive(Default)]
pub(crate) struct PartitionSet {
    pub partitions: Vec<Arc<PartitionHandle>>,
}

impl PartitionSet {
    /// The partition with this id, if known.
    pub(crate) fn get(&self, id: &str) -> Option<&Arc<PartitionHandle>> {
        self.partitions.iter().find(|p| p.shared.id == id)
    }

    /// The ids, in the service's order.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.partitions
            .iter()
            .map(|p| p.shared.id.clone())
            .collect()
    }
}

/// A value alone on its cache line (64 bytes), so that writing it does not slow down reading
/// what would otherwise share the line.
#[repr(align(64))]
struct OwnLine<T>(T);

static NEXT_LIST_ID: AtomicU64 = AtomicU64::new(1);

/// The partition list a thread last enqueued with, and which producer's and which version of
/// it it is. A copy outliving its producer only holds memory, until the thread enqueues
/// elsewhere or ends.
struct SeenPartitions {
    list: u64,
    version: u64,
    set: Arc<PartitionSet>,
}

thread_local! {
    static SEEN_PARTITIONS: RefCell<Option<SeenPartitions>> = const { RefCell::new(None) };
}

/// A producer's partitions, with their actors.
pub(crate) struct PartitionList {
    /// Unique among the producers of this process, so that a thread's copy of a list is never
    /// taken for another producer's.
    id: u64,
    /// On a cache line of its own: waiting enqueues take the read lock (a write to its line),
    /// and every enqueue reads the fields around it.
    set: OwnLine<RwLock<Arc<PartitionSet>>>,
    /// Changes whenever `set` does: threads compare it with their copy's.
    version: AtomicU64,
    settings: Arc<ActorSettings>,
    max_buffered_events: usize,
}

impl PartitionList {
    /// An empty list; partitions added later get actors with these settings.
    pub(crate) fn new(settings: Arc<ActorSettings>, max_buffered_events: usize) -> Self {
        Self {
            id: NEXT_LIST_ID.fetch_add(1, Ordering::Relaxed),
            set: OwnLine(RwLock::new(Arc::new(PartitionSet::default()))),
            version: AtomicU64::new(0),
            settings,
            max_buffered_events,
        }
    }

    /// The list now, from the lock.
    pub(crate) fn current(&self) -> Arc<PartitionSet> {
        self.set
            .0
            .read()
            .map(|set| set.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Calls `f` with the list, read from this thread's copy when it is current, else from
    /// the lock.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&PartitionSet) -> R) -> R {
        let version = self.version.load(Ordering::Acquire);
        let mut f = Some(f);
        let from_copy = SEEN_PARTITIONS
            .try_with(|seen| {
                // Busy only if `f` itself enqueued on this thread; then the lock serves.
                let mut seen = seen.try_borrow_mut().ok()?;
                let current = seen
                    .as_ref()
                    .is_some_and(|s| s.list == self.id && s.version == version);
                if !current {
                    *seen = Some(SeenPartitions {
                        list: self.id,
                        version,
                        set: self.current(),
                    });
                }
                let seen = seen.as_ref()?;
                let f = f.take()?;
                Some(f(&seen.set))
            })
            .ok()
            .flatten();
        match (from_copy, f) {
            (Some(result), _) => result,
            (None, Some(f)) => f(&self.current()),
            (None, None) => unreachable!("f runs once: on the copy or on the locked list"),
        }
    }

    /// Adds actors for partition ids not yet known; keeps the service's order. Partitions
    /// never disappear from an event hub: any the new list lacks are kept.
    pub(crate) fn install(&self, ids: Vec<String>) {
        let mut guard = match self.set.0.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let known = guard.clone();
        // The usual refresh finds nothing new: keep the list, and every thread's copy of it.
        let unchanged = ids.len() == known.partitions.len()
            && ids
                .iter()
                .zip(&known.partitions)
                .all(|(id, p)| *id == p.shared.id);
        if unchanged && !known.partitions.is_empty() {
            return;
        }
        let mut partitions = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(existing) = known.get(&id) {
                partitions.push(existing.clone());
                continue;
            }
            let shared = actor::spawn(id, self.max_buffered_events, self.settings.clone());
            partitions.push(Arc::new(PartitionHandle { shared }));
        }
        for old in &known.partitions {
            if !partitions.iter().any(|p| p.shared.id == old.shared.id) {
                partitions.push(old.clone());
            }
        }
        *guard = Arc::new(PartitionSet { partitions });
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Reads the partition ids from the service and installs any new ones.
    pub(crate) async fn read_and_install(&self) -> Result<()> {
        let ids = self.settings.sender.partition_ids().await?;
        self.install(ids);
        Ok(())
    }

    /// Tells every actor that no more commands come: each sends what it holds and stops.
    /// (They are told rather than left to notice their queues' senders going away, because
    /// threads may still hold a copy of the list.)
    pub(crate) fn close_all(&self) {
        let set = match self.set.0.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for partition in &set.partitions {
            partition.shared.inbox.close();
        }
    }
}
