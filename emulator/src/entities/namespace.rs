//! The namespace: its event hubs and partitions, counters, and the registries that let the
//! fault controls reach live connections and links.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use std::time::SystemTime;

use tokio::sync::{broadcast, mpsc, watch};

use crate::connection::ClientOpen;
use crate::entities::idempotence::ProducerIds;
use crate::entities::store::Partition;
use crate::faults::{FaultCondition, FaultRules};
use crate::sas::SasKey;

/// The settings of a running emulator.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub keys: Vec<SasKey>,
    pub require_authorization: bool,
    pub accept_jwt: bool,
    pub consumer_groups: Vec<String>,
    /// Consumer groups of one hub only (by hub name, lower case), as a Config.json gives them.
    pub hub_consumer_groups: HashMap<String, Vec<String>>,
    /// Most events kept per partition; None keeps every event.
    pub retention: Option<usize>,
    /// The idle timeout announced in the open; a connection silent for longer is dropped.
    /// Zero announces none and never drops.
    pub idle_timeout: Duration,
}

/// The idle timeout the service announces in its open (120 s).
pub const SERVICE_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// One event hub.
#[derive(Debug)]
pub(crate) struct Hub {
    pub name: String,
    pub created_at: SystemTime,
    retention: Option<usize>,
    partitions: RwLock<Vec<Arc<Partition>>>,
    round_robin: AtomicUsize,
}

impl Hub {
    pub(crate) fn new(name: String, partition_count: usize, retention: Option<usize>) -> Self {
        Self {
            name,
            created_at: SystemTime::now(),
            retention,
            partitions: RwLock::new(
                (0..partition_count)
                    .map(|i| Arc::new(Partition::new(i.to_string(), retention)))
                    .collect(),
            ),
            round_robin: AtomicUsize::new(0),
        }
    }

    pub(crate) fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn partition_ids(&self) -> Vec<String> {
        self.partitions().iter().map(|p| p.id.clone()).collect()
    }

    pub(crate) fn partition(&self, id: &str) -> Option<Arc<Partition>> {
        self.partitions().into_iter().find(|p| p.id == id)
    }

    /// The partition an event without partition id goes to: by key hash, else round-robin.
    pub(crate) fn route(&self, key: Option<&str>) -> Option<Arc<Partition>> {
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        let index = match key {
            Some(key) => crate::entities::routing::partition_index_for_key(key, partitions.len()),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % partitions.len().max(1),
        };
        partitions.get(index).cloned()
    }

    /// Adds partitions up to `count`; never removes any (the service cannot either).
    pub(crate) fn grow_to(&self, count: usize) -> usize {
        let mut partitions = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        while partitions.len() < count {
            let id = partitions.len().to_string();
            partitions.push(Arc::new(Partition::new(id, self.retention)));
        }
        partitions.len()
    }
}

/// Counters of what the emulator did, for tests and the CLI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Deliveries received on producer links (a batch counts once).
    pub deliveries: u64,
    /// Events stored.
    pub events_stored: u64,
    /// Deliveries rejected (by a fault rule or for cause).
    pub rejected: u64,
    /// Events an idempotent producer sent again that were accepted but not stored twice.
    pub duplicates_dropped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    pub deliveries: AtomicU64,
    pub events_stored: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicates_dropped: AtomicU64,
}

impl AtomicCounters {
    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            deliveries: self.deliveries.load(Ordering::Relaxed),
            events_stored: self.events_stored.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            duplicates_dropped: self.duplicates_dropped.load(Ordering::Relaxed),
        }
    }
}

/// Orders for a live connection.
#[derive(Debug, Clone)]
pub(crate) enum ConnectionOrder {
    /// Close with this condition (AMQP `close` with an error).
    Close(FaultCondition),
    /// Cut the transport without a word.
    Drop,
}

/// Order to detach the producer links of one partition (or all of a hub's, with no partition).
#[derive(Debug, Clone)]
pub(crate) struct DetachOrder {
    pub hub: String,
    pub partition: Option<String>,
    pub condition: FaultCondition,
}

/// Order to a consumer link to go away because a newer epoch took the partition.
pub(crate) type Kick = watch::Sender<bool>;

#[derive(Debug)]
struct ConsumerEntry {
    id: u64,
    epoch: Option<i64>,
    kick: Kick,
}

/// Everything one emulator serves.
#[derive(Debug)]
pub(crate) struct Namespace {
    pub settings: Settings,
    hubs: RwLock<HashMap<String, Arc<Hub>>>,
    pub faults: FaultRules,
    pub counters: AtomicCounters,
    pub producer_ids: ProducerIds,
    connections: Mutex<HashMap<u64, mpsc::UnboundedSender<ConnectionOrder>>>,
    consumers: Mutex<HashMap<(String, String, String), Vec<ConsumerEntry>>>,
    next_id: AtomicU64,
    /// Tells this emulator's tracking ids from another's (the start time, in nanoseconds).
    instance: u64,
    detach_orders: broadcast::Sender<DetachOrder>,
    /// What each client announced in its `open`, in the order they connected.
    client_opens: Mutex<Vec<ClientOpen>>,
}

/// Why a consumer link may not attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochRefusal {
    /// A link with a higher epoch (or any epoch, for a link without one) holds the partition.
    Outranked,
}

impl Namespace {
    pub(crate) fn new(
        settings: Settings,
        hubs: Vec<(String, usize)>,
        max_message_size: u64,
    ) -> Self {
        let (detach_orders, _) = broadcast::channel(64);
        let retention = settings.retention;
        Self {
            settings,
            hubs: RwLock::new(
                hubs.into_iter()
                    .map(|(name, count)| {
                        let hub = Hub::new(name.clone(), count, retention);
                        (name.to_ascii_lowercase(), Arc::new(hub))
                    })
                    .collect(),
            ),
            faults: FaultRules::new(max_message_size),
            counters: AtomicCounters::default(),
            producer_ids: ProducerIds::default(),
            connections: Mutex::new(HashMap::new()),
            consumers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            instance: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default(),
            detach_orders,
            client_opens: Mutex::new(Vec::new()),
        }
    }

    /// A client's `open` was read.
    pub(crate) fn record_open(&self, open: ClientOpen) {
        self.client_opens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(open);
    }

    /// What every client announced so far, in the order they connected.
    pub(crate) fn client_opens(&self) -> Vec<ClientOpen> {
        self.client_opens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Hub names are case-insensitive, as in the service.
    pub(crate) fn hub(&self, name: &str) -> Option<Arc<Hub>> {
        let hubs = self.hubs.read().unwrap_or_else(|p| p.into_inner());
        hubs.get(&name.to_ascii_lowercase()).cloned()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A new `com.microsoft:tracking-id`, shaped as the service's: 32 upper-case hex digits
    /// and the gateway suffix (`_G0`).
    pub(crate) fn tracking_id(&self) -> String {
        format!("{:016X}{:016X}_G0", self.instance, self.next_id())
    }

    pub(crate) fn register_connection(&self, id: u64) -> mpsc::UnboundedReceiver<ConnectionOrder> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        rx
    }

    pub(crate) fn unregister_connection(&self, id: u64) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Sends an order to every live connection; returns how many got it.
    pub(crate) fn order_connections(&self, order: ConnectionOrder) -> usize {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections
            .values()
            .filter(|tx| tx.send(order.clone()).is_ok())
            .count()
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub(crate) fn detach_orders(&self) -> broadcast::Receiver<DetachOrder> {
        self.detach_orders.subscribe()
    }

    pub(crate) fn order_detach(&self, order: DetachOrder) -> usize {
        self.detach_orders.send(order).unwrap_or(0)
    }

    /// Whether `hub` has the consumer group `name`: one of every hub's, or one of its own.
    pub(crate) fn is_consumer_group(&self, hub: &str, name: &str) -> bool {
        let own = self
            .settings
            .hub_consumer_groups
            .get(&hub.to_ascii_lowercase())
            .into_iter()
            .flatten();
        self.settings
            .consumer_groups
            .iter()
            .chain(own)
            .any(|g| g.eq_ignore_ascii_case(name))
    }

    /// Registers a consumer link on a partition under the epoch rules: a link with an epoch at
    /// least as high as every other takes the partition and the others are kicked; a link
    /// without an epoch may not join while an epoch link holds it.
    pub(crate) fn register_consumer(
        &self,
        key: (String, String, String),
        epoch: Option<i64>,
    ) -> Result<(u64, watch::Receiver<bool>), EpochRefusal> {
        let mut consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        let entries = consumers.entry(key).or_default();
        entries.retain(|e| !e.kick.is_closed());
        let highest = entries.iter().filter_map(|e| e.epoch).max();
        match (epoch, highest) {
            (None, Some(_)) => return Err(EpochRefusal::Outranked),
            (Some(mine), Some(theirs)) if mine < theirs => return Err(EpochRefusal::Outranked),
            (Some(_), _) => {
                for entry in entries.drain(..) {
                    entry.kick.send_replace(true);
                }
            }
            (None, None) => {}
        }
        let id = self.next_id();
        let (kick, kicked) = watch::channel(false);
        entries.push(ConsumerEntry { id, epoch, kick });
        Ok((id, kicked))
    }

    pub(crate) fn unregister_consumer(&self, key: &(String, String, String), id: u64) {
        let mut consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entries) = consumers.get_mut(key) {
            entries.retain(|e| e.id != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace() -> Namespace {
        let settings = Settings {
            keys: vec![],
            require_authorization: true,
            accept_jwt: true,
            consumer_groups: vec!["$Default".into()],
            hub_consumer_groups: Default::default(),
            retention: None,
            idle_timeout: crate::entities::namespace::SERVICE_IDLE_TIMEOUT,
        };
        Namespace::new(settings, vec![("Hub".into(), 2)], 1024)
    }

    #[test]
    fn hubs_are_found_case_insensitively_and_grow() {
        let ns = namespace();
        let hub = ns.hub("hub").expect("hub");
        assert_eq!(hub.name, "Hub");
        assert_eq!(hub.partition_ids(), vec!["0", "1"]);
        assert_eq!(hub.grow_to(4), 4);
        assert_eq!(hub.grow_to(3), 4);
        assert!(hub.partition("3").is_some());
        assert!(ns.is_consumer_group("hub", "$default"));
    }

    #[test]
    fn round_robin_and_keyed_routing() {
        let ns = namespace();
        let hub = ns.hub("hub").expect("hub");
        let a = hub.route(None).expect("p").id.clone();
        let b = hub.route(None).expect("p").id.clone();
        assert_ne!(a, b);
        let k1 = hub.route(Some("alphabet")).expect("p").id.clone();
        assert_eq!(k1, hub.route(Some("alphabet")).expect("p").id);
    }

    #[test]
    fn epochs_take_over_partitions() {
        let ns = namespace();
        let key = ("hub".to_string(), "$default".to_string(), "0".to_string());
        let (_plain, plain_kicked) = ns.register_consumer(key.clone(), None).unwrap();
        let (_e5, e5_kicked) = ns.register_consumer(key.clone(), Some(5)).unwrap();
        assert!(*plain_kicked.borrow());
        assert_eq!(
            ns.register_consumer(key.clone(), None).unwrap_err(),
            EpochRefusal::Outranked
        );
        assert_eq!(
            ns.register_consumer(key.clone(), Some(4)).unwrap_err(),
            EpochRefusal::Outranked
        );
        let (_e6, _) = ns.register_consumer(key, Some(6)).unwrap();
        assert!(*e5_kicked.borrow());
    }
}
