//! [`BufferedProducerClient`]: enqueue events one at a time; the client batches them per
//! partition, sends, reports every batch to your handlers, and applies back pressure.
//!
//! Shape: one handle (cheap to clone) over one AMQP connection; one actor task per partition
//! building and sending batches, fed through an inbox; one reporter task per partition calling
//! the handlers in send order; semaphores bounding buffered events per partition and bytes
//! overall.
//!
//! The enqueue path is built to touch as little memory that other cores write as it can: each
//! atomic read-modify-write on such a cache line costs more than everything else an enqueue
//! does. An enqueue with room reads the partition list from a per-thread copy (no lock), takes
//! one slot of the partition's semaphore, pushes into the partition's inbox under its lock
//! (which also covers the per-partition count and the byte budget, see `ByteBudget`), and
//! bumps the total count: four such operations, where a channel, a lock, reference counts and
//! separate counters took about fifteen.

mod capacity;
mod handlers;
mod inbox;
mod options;
mod partition;
mod router;
mod sender;

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use azure_core::credentials::TokenCredential;
use futures_util::future::select_all;
use futures_util::FutureExt;
use tokio::sync::{oneshot, OnceCell, Semaphore};
use tokio::time::Instant;

use self::capacity::{
    acquire, acquire_for_handler, estimated_size, release, try_acquire, ByteBudget, Reservation,
};
use self::handlers::{boxed_failed, boxed_succeeded, in_handler, ClosureHandler};
use self::inbox::{Needs, Refused};
use self::partition::{ActorSettings, Command, PartitionShared, Queued};
use self::router::{index_for_key, RoundRobin};
use self::sender::BatchSender;
use crate::batch::{batch_target, BatchTarget};
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;
use crate::producer::ProducerClient;
use crate::properties::{EventHubProperties, PartitionProperties};

pub use self::handlers::{
    BufferedProducerHandler, RequeueError, SendFailedContext, SendSucceededContext,
};
pub use self::options::{
    BufferedProducerOptions, EnqueueOptions, DEFAULT_HANDLER_SHUTDOWN_TIMEOUT,
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_BUFFERED_EVENTS_PER_PARTITION,
    DEFAULT_MAX_CONCURRENT_SENDS, DEFAULT_MAX_CONCURRENT_SENDS_PER_PARTITION,
    DEFAULT_MAX_WAIT_TIME, DEFAULT_PARTITION_REFRESH_INTERVAL,
};

/// A reference to the producer that does not keep it alive (handlers' contexts use it, so
/// that dropping the last handle still closes the producer).
#[derive(Clone, Default)]
pub(crate) struct WeakProducer(std::sync::Weak<Core>);

impl WeakProducer {
    pub(crate) fn upgrade(&self) -> Option<BufferedProducerClient> {
        self.0.upgrade().map(|core| BufferedProducerClient { core })
    }
}

/// Where an enqueue that found no room at once goes to wait.
enum Placement {
    /// This partition is full (or the byte budget): wait for it.
    Wait(Arc<PartitionHandle>, Option<String>),
    /// Automatic routing found no room anywhere: wait for the first partition with room.
    WaitAny,
}

/// How an enqueue's fast path ended.
enum Placed {
    /// Enqueued: the total buffered count.
    Done(usize),
    /// Refused: the event comes back with the error.
    Failed(EventData, Error),
    /// No room now: the event, and where to wait, and whether the byte budget (rather than
    /// the partitions' slots) is what lacked room.
    Later(EventData, Placement, Short),
}

/// What an enqueue found short of room.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Short {
    Slots,
    Bytes,
    /// The partition's lock was held by another enqueue (only when not waiting for it).
    Busy,
}

/// What the producer keeps of one partition.
struct PartitionHandle {
    shared: Arc<PartitionShared>,
}

/// The partitions known now, in the service's order.
#[derive(Default)]
struct PartitionSet {
    partitions: Vec<Arc<PartitionHandle>>,
}

impl PartitionSet {
    fn get(&self, id: &str) -> Option<&Arc<PartitionHandle>> {
        self.partitions.iter().find(|p| p.shared.id == id)
    }

    fn ids(&self) -> Vec<String> {
        self.partitions
            .iter()
            .map(|p| p.shared.id.clone())
            .collect()
    }
}

/// The producer's state, shared by its handles.
struct Core {
    /// Unique among the producers of this process, so that a thread's copy of a partition list
    /// (see `SeenPartitions`) is never taken for another producer's.
    id: u64,
    options: BufferedProducerOptions,
    producer: Option<ProducerClient>,
    settings: Arc<ActorSettings>,
    budget: ByteBudget,
    initialized: OnceCell<()>,
    /// On a cache line of its own: waiting enqueues take the read lock (a write to its line),
    /// and every enqueue reads the fields around it.
    partitions: OwnLine<RwLock<Arc<PartitionSet>>>,
    /// Changes whenever `partitions` does: threads compare it with their copy's.
    partitions_version: AtomicU64,
    round_robin: RoundRobin,
    closed: AtomicBool,
    close_lock: tokio::sync::Mutex<()>,
}

/// Waits for `done` (a partition's close, answered once its last report was handled); false
/// when the partition's handler call has been running for `timeout`, counted from `started`
/// for a call that began earlier.
async fn handled_in_time(
    done: oneshot::Receiver<()>,
    reporter: &handlers::Backlog,
    started: Instant,
    timeout: std::time::Duration,
) -> bool {
    // While no handler call runs, look again this often (only while closing).
    let idle_check = timeout.min(std::time::Duration::from_millis(100));
    tokio::pin!(done);
    loop {
        let deadline = match reporter.busy_since() {
            Some(since) => since.max(started) + timeout,
            None => Instant::now() + idle_check,
        };
        tokio::select! {
            _ = &mut done => return true,
            _ = tokio::time::sleep_until(deadline) => {
                let stuck = reporter
                    .busy_since()
                    .is_some_and(|since| Instant::now() >= since.max(started) + timeout);
                if stuck {
                    return false;
                }
            }
        }
    }
}

impl Drop for Core {
    /// The last handle is gone: the actors send what is still buffered and stop. (They are told
    /// here rather than by their queues' senders going away, because threads may still hold a
    /// copy of the partition list; see `SeenPartitions`.)
    fn drop(&mut self) {
        let set = match self.partitions.get_mut() {
            Ok(set) => set,
            Err(poisoned) => poisoned.into_inner(),
        };
        for partition in &set.partitions {
            partition.shared.inbox.close();
        }
    }
}

/// A value alone on its cache line (64 bytes), so that writing it does not slow down reading
/// what would otherwise share the line.
#[repr(align(64))]
struct OwnLine<T>(T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for OwnLine<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

static NEXT_PRODUCER_ID: AtomicU64 = AtomicU64::new(1);

/// The partition list a thread last enqueued with, and which producer's and which version of
/// it it is. Enqueues read the list from here: reading it under the producer's `RwLock`, or
/// cloning its `Arc`, writes a cache line that every enqueuer on every core shares, twice per
/// event. When the version changes, the next enqueue on the thread takes a new copy. A copy
/// outliving its producer only holds memory, until the thread enqueues elsewhere or ends.
struct SeenPartitions {
    producer: u64,
    version: u64,
    set: Arc<PartitionSet>,
}

thread_local! {
    static SEEN_PARTITIONS: RefCell<Option<SeenPartitions>> = const { RefCell::new(None) };
}

/// Why [`BufferedProducerClient::try_enqueue_event`] did not take an event; the event comes
/// back with it.
#[derive(Debug)]
pub struct TryEnqueueError {
    event: EventData,
    error: Option<Error>,
}

impl TryEnqueueError {
    /// Whether the target partition (or the byte budget) was full; the event can be tried
    /// again later.
    pub fn is_full(&self) -> bool {
        self.error.is_none()
    }

    /// The error, when the event was refused for another reason than a full buffer.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The event that was not enqueued.
    pub fn into_event(self) -> EventData {
        self.event
    }
}

impl std::fmt::Display for TryEnqueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            Some(e) => write!(f, "{e}"),
            None => f.write_str("the buffer is full"),
        }
    }
}

impl std::error::Error for TryEnqueueError {}

enum Credentials {
    ConnectionString {
        connection_string: String,
        eventhub: Option<String>,
    },
    TokenCredential {
        namespace: String,
        eventhub: String,
        credential: Arc<dyn TokenCredential>,
    },
}

/// Builds a [`BufferedProducerClient`]. A failure handler is required.
pub struct BufferedProducerBuilder {
    credentials: Credentials,
    options: BufferedProducerOptions,
    handler: Option<Arc<dyn BufferedProducerHandler>>,
    succeeded: Option<
        Box<
            dyn Fn(SendSucceededContext) -> futures_util::future::BoxFuture<'static, ()>
                + Send
                + Sync,
        >,
    >,
    failed: Option<
        Box<
            dyn Fn(SendFailedContext) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync,
        >,
    >,
}

impl std::fmt::Debug for BufferedProducerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedProducerBuilder")
            .field("options", &self.options)
            .field(
                "has_handler",
                &(self.handler.is_some() || self.failed.is_some()),
            )
            .finish()
    }
}

impl BufferedProducerBuilder {
    /// Sets every option at once.
    pub fn options(mut self, options: BufferedProducerOptions) -> Self {
        self.options = options;
        self
    }

    /// Registers a handler for both outcomes.
    pub fn handler(mut self, handler: impl BufferedProducerHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Registers a closure called with every published batch.
    pub fn on_send_succeeded<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(SendSucceededContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.succeeded = Some(boxed_succeeded(f));
        self
    }

    /// Registers a closure called with every batch (or event) that was not published.
    pub fn on_send_failed<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(SendFailedContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.failed = Some(boxed_failed(f));
        self
    }

    /// Checks the options and makes the producer. It connects on the first enqueue.
    pub fn build(self) -> Result<BufferedProducerClient> {
        self.options.validate()?;
        let handler: Arc<dyn BufferedProducerHandler> = match (self.handler, self.failed) {
            (Some(_), Some(_)) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "register either a handler or closures, not both",
                ))
            }
            (Some(handler), None) => {
                if self.succeeded.is_some() {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "register either a handler or closures, not both",
                    ));
                }
                handler
            }
            (None, Some(failed)) => Arc::new(ClosureHandler {
                succeeded: self.succeeded,
                failed,
            }),
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "a failure handler is required: register one with on_send_failed or handler, so that no failed event goes unnoticed",
                ))
            }
        };
        let mut client_options = self.options.client.clone();
        client_options.idempotent_partitions = self.options.enable_idempotent_retries;
        let producer = match self.credentials {
            Credentials::ConnectionString {
                connection_string,
                eventhub,
            } => ProducerClient::from_connection_string(
                &connection_string,
                eventhub.as_deref(),
                client_options,
            )?,
            Credentials::TokenCredential {
                namespace,
                eventhub,
                credential,
            } => ProducerClient::new(&namespace, &eventhub, credential, client_options)?,
        };
        let sender: Arc<dyn BatchSender> = Arc::new(producer.clone());
        Ok(BufferedProducerClient::from_parts(
            self.options,
            Some(producer),
            sender,
            handler,
        ))
    }
}

/// A producer you enqueue events into one at a time. One handle (cheap to clone) over one AMQP
/// connection; one actor task per partition builds and sends batches; one reporter task per
/// partition calls the handlers in send order; semaphores bound the buffered events per
/// partition and the bytes overall.
///
/// ```no_run
/// # async fn demo() -> eventhubs_buffered::Result<()> {
/// use eventhubs_buffered::{BufferedProducerClient, EnqueueOptions, EventData};
///
/// let producer = BufferedProducerClient::from_connection_string(
///     &std::env::var("EVENTHUBS_CONNECTION_STRING").unwrap_or_default(),
///     None,
/// )
/// .on_send_failed(|context| async move {
///     eprintln!("{} events failed: {}", context.events.len(), context.error);
/// })
/// .build()?;
/// producer.enqueue_event(EventData::from("hello"), EnqueueOptions::default()).await?;
/// producer.close().await?;
/// # Ok(())
/// # }
/// ```
///
/// Dropping the last clone without [`close`](Self::close) sends what is still buffered in
/// the background and reports it to the handlers, as `close` would, as long as the tokio
/// runtime keeps running; call `close` to know when it is done.
#[derive(Clone)]
pub struct BufferedProducerClient {
    core: Arc<Core>,
}

impl std::fmt::Debug for BufferedProducerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedProducerClient")
            .field("eventhub", &self.eventhub_name())
            .field("buffered", &self.total_buffered_event_count())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl BufferedProducerClient {
    /// A builder for the event hub named by the connection string's `EntityPath` or by
    /// `eventhub` (both given and different: an error at build).
    pub fn from_connection_string(
        connection_string: &str,
        eventhub: Option<&str>,
    ) -> BufferedProducerBuilder {
        Self::builder(Credentials::ConnectionString {
            connection_string: connection_string.to_string(),
            eventhub: eventhub.map(str::to_string),
        })
    }

    /// A builder for `eventhub` in `fully_qualified_namespace`, authenticated by an Entra ID
    /// credential (`azure_identity` or any [`TokenCredential`]).
    pub fn with_credential(
        fully_qualified_namespace: &str,
        eventhub: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> BufferedProducerBuilder {
        Self::builder(Credentials::TokenCredential {
            namespace: fully_qualified_namespace.to_string(),
            eventhub: eventhub.to_string(),
            credential,
        })
    }

    fn builder(credentials: Credentials) -> BufferedProducerBuilder {
        BufferedProducerBuilder {
            credentials,
            options: BufferedProducerOptions::default(),
            handler: None,
            succeeded: None,
            failed: None,
        }
    }

    fn from_parts(
        options: BufferedProducerOptions,
        producer: Option<ProducerClient>,
        sender: Arc<dyn BatchSender>,
        handler: Arc<dyn BufferedProducerHandler>,
    ) -> Self {
        let refresh_interval_ms = options.partition_refresh_interval.as_millis() as u64;
        let core = Arc::new_cyclic(|weak| {
            let settings = Arc::new(ActorSettings {
                producer: WeakProducer(weak.clone()),
                sender,
                handler,
                max_wait_time: options.max_wait_time,
                max_sends_per_partition: options.max_concurrent_sends_per_partition,
                idempotent: options.enable_idempotent_retries,
                global_sends: Arc::new(Semaphore::new(options.max_concurrent_sends)),
                total_buffered: Arc::new(AtomicUsize::new(0)),
                budget: ByteBudget::new(options.max_buffered_bytes),
                next_refresh_ms: AtomicU64::new(refresh_interval_ms),
                epoch: Instant::now(),
            });
            Core {
                id: NEXT_PRODUCER_ID.fetch_add(1, Ordering::Relaxed),
                budget: settings.budget.clone(),
                options,
                producer,
                settings,
                initialized: OnceCell::new(),
                partitions: OwnLine(RwLock::new(Arc::new(PartitionSet::default()))),
                partitions_version: AtomicU64::new(0),
                round_robin: RoundRobin,
                closed: AtomicBool::new(false),
                close_lock: tokio::sync::Mutex::new(()),
            }
        });
        Self { core }
    }

    fn closed_error() -> Error {
        Error::new(ErrorKind::Closed, "the buffered producer is closed")
    }

    fn current_partitions(&self) -> Arc<PartitionSet> {
        self.core
            .partitions
            .read()
            .map(|set| set.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Calls `f` with the partition list, read from this thread's copy when it is current
    /// (see `SeenPartitions`), else from the lock.
    fn with_partitions<R>(&self, f: impl FnOnce(&PartitionSet) -> R) -> R {
        let version = self.core.partitions_version.load(Ordering::Acquire);
        let mut f = Some(f);
        let from_copy = SEEN_PARTITIONS
            .try_with(|seen| {
                // Busy only if `f` itself enqueued on this thread; then the lock serves.
                let mut seen = seen.try_borrow_mut().ok()?;
                let current = seen
                    .as_ref()
                    .is_some_and(|s| s.producer == self.core.id && s.version == version);
                if !current {
                    *seen = Some(SeenPartitions {
                        producer: self.core.id,
                        version,
                        set: self.current_partitions(),
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
            (None, Some(f)) => f(&self.current_partitions()),
            (None, None) => unreachable!("f runs once: on the copy or on the locked list"),
        }
    }

    /// Reads the partitions (and connects) the first time, within the retry policy; after
    /// that, one atomic load.
    async fn ensure_initialized(&self) -> Result<()> {
        if self.core.initialized.initialized() {
            return Ok(());
        }
        self.partitions().await.map(|_| ())
    }

    /// The partitions, reading them (and connecting) the first time, within the retry policy.
    async fn partitions(&self) -> Result<Arc<PartitionSet>> {
        self.core
            .initialized
            .get_or_try_init(|| async {
                let ids = self.core.settings.sender.partition_ids().await?;
                self.install_partitions(ids);
                Ok::<(), Error>(())
            })
            .await?;
        Ok(self.current_partitions())
    }

    /// Adds actors for partition ids not yet known; keeps the service's order.
    fn install_partitions(&self, ids: Vec<String>) {
        let mut guard = match self.core.partitions.write() {
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
            let shared = partition::spawn(
                id,
                self.core.options.max_buffered_events_per_partition,
                self.core.settings.clone(),
            );
            partitions.push(Arc::new(PartitionHandle { shared }));
        }
        // Partitions never disappear from an event hub; keep any the new list lacks.
        for old in &known.partitions {
            if !partitions.iter().any(|p| p.shared.id == old.shared.id) {
                partitions.push(old.clone());
            }
        }
        *guard = Arc::new(PartitionSet { partitions });
        self.core.partitions_version.fetch_add(1, Ordering::Release);
    }

    /// Reads the partition list again in the background when the interval has passed.
    /// Only actors call this, as they take enqueued events, so an idle producer does nothing.
    /// One atomic load when not due.
    pub(crate) fn refresh_if_due(&self, now: Instant) {
        let settings = &self.core.settings;
        let now_ms = now.saturating_duration_since(settings.epoch).as_millis() as u64;
        let due = settings.next_refresh_ms.load(Ordering::Relaxed);
        if now_ms < due || self.is_closed() {
            return;
        }
        // One caller wins the right to refresh; u64::MAX keeps the others out meanwhile.
        if settings
            .next_refresh_ms
            .compare_exchange(due, u64::MAX, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move {
            match client.core.settings.sender.partition_ids().await {
                Ok(ids) => client.install_partitions(ids),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the partition list failed; keeping the known one")
                }
            }
            let interval = client.core.options.partition_refresh_interval.as_millis() as u64;
            let settings = &client.core.settings;
            let now_ms = settings.epoch.elapsed().as_millis() as u64;
            settings
                .next_refresh_ms
                .store(now_ms + interval, Ordering::SeqCst);
        });
    }

    /// Where an event goes, checking the options: an error names what is wrong.
    fn resolve<'a>(
        &self,
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

    /// Gives every partition's byte credit back to the budget, before waiting for bytes (see
    /// `ByteBudget`).
    fn sweep_credits(&self) {
        let set = self.current_partitions();
        let credit = set
            .partitions
            .iter()
            .map(|p| p.shared.inbox.take_credit())
            .sum();
        self.core.budget.give_back(credit);
    }

    /// Space in the partition for one event: waits while it is full (not in a handler).
    async fn reserve(
        &self,
        partition: &PartitionHandle,
        size: usize,
        in_handler: bool,
    ) -> Result<Reservation> {
        let inbox = &partition.shared.inbox;
        if in_handler {
            return Ok(acquire_for_handler(inbox, &self.core.budget, size));
        }
        acquire(inbox, &self.core.budget, size, &|| self.sweep_credits())
            .await
            .ok_or_else(Self::closed_error)
    }

    /// Picks a partition for an event without id or key: a healthy one with room, else a
    /// failing one with room, else the first to get room.
    async fn reserve_automatic(
        &self,
        set: &PartitionSet,
        size: usize,
        in_handler: bool,
    ) -> Result<(Arc<PartitionHandle>, Reservation)> {
        let count = set.partitions.len();
        if count == 0 {
            return Err(Error::new(
                ErrorKind::ServiceError,
                "the event hub reported no partitions",
            ));
        }
        let first = self.core.round_robin.order(count).next().unwrap_or(0);
        let order = (0..count).map(|i| (first + i) % count);
        if in_handler {
            // Events a handler re-enqueues never wait; they go to the next partition that is
            // not failing (or the next one, if all are).
            let index = order
                .clone()
                .find(|&i| !set.partitions[i].shared.failing.load(Ordering::SeqCst))
                .unwrap_or(first);
            let partition = set.partitions[index].clone();
            let reservation = acquire_for_handler(&partition.shared.inbox, &self.core.budget, size);
            return Ok((partition, reservation));
        }
        if let Some(found) = self.try_reserve_automatic(set, size) {
            return Ok(found);
        }
        let sweep = || self.sweep_credits();
        let waits = order.map(|i| {
            let partition = set.partitions[i].clone();
            let budget = self.core.budget.clone();
            let sweep = &sweep;
            async move {
                let reservation = acquire(&partition.shared.inbox, &budget, size, sweep).await;
                (partition, reservation)
            }
            .boxed()
        });
        let ((partition, reservation), _, _) = select_all(waits).await;
        Ok((partition, reservation.ok_or_else(Self::closed_error)?))
    }

    /// Counts an event as buffered and queues it to the partition's actor, taking what it
    /// `needs` (see `Inbox::push_event`); no await, so nothing is half-enqueued. On refusal, what
    /// `reservation` held is given back and the event comes back.
    fn push(
        &self,
        partition: &PartitionHandle,
        event: EventData,
        key: Option<String>,
        reservation: Reservation,
        needs: Needs,
    ) -> std::result::Result<usize, Refused> {
        let settings = &self.core.settings;
        // Counted before it is queued: the actor may send and release it at once.
        let total = settings.total_buffered.fetch_add(1, Ordering::SeqCst) + 1;
        let queued = Queued::new(event, key, reservation);
        match partition
            .shared
            .inbox
            .push_event(queued, needs, &settings.budget)
        {
            Ok(()) => Ok(total),
            Err(mut refused) => {
                settings.total_buffered.fetch_sub(1, Ordering::SeqCst);
                let (Refused::Closed(queued)
                | Refused::NoSlot(queued)
                | Refused::NoBytes(queued)
                | Refused::Busy(queued)) = &mut refused;
                let space = std::mem::take(&mut queued.space);
                release(&partition.shared.inbox, &settings.budget, 0, space.into());
                Err(refused)
            }
        }
    }

    /// Queues an event whose space is reserved; an error if the partition takes no more.
    fn push_reserved(
        &self,
        partition: &PartitionHandle,
        event: EventData,
        key: Option<String>,
        reservation: Reservation,
    ) -> Result<usize> {
        let needs = Needs {
            slot: false,
            bytes: 0,
            wait_for_lock: true,
        };
        self.push(partition, event, key, reservation, needs)
            .map_err(|_| Self::closed_error())
    }

    /// Enqueues into `partition` if it has room now, a slot and bytes (from the partition's
    /// credit) taken under its inbox lock. Otherwise the event comes back with what was short
    /// (or with `Short::Busy` when another enqueue held the lock and `wait_for_lock` is false).
    fn try_push(
        &self,
        partition: &PartitionHandle,
        event: EventData,
        key: Option<String>,
        size: usize,
        wait_for_lock: bool,
    ) -> std::result::Result<Placed, (EventData, Option<String>, Short)> {
        let needs = Needs {
            slot: true,
            bytes: self.core.budget.permits_for(size),
            wait_for_lock,
        };
        match self.push(partition, event, key, Reservation::default(), needs) {
            Ok(total) => Ok(Placed::Done(total)),
            Err(Refused::Closed(queued)) => Ok(Placed::Failed(queued.event, Self::closed_error())),
            Err(refused @ Refused::NoSlot(_)) => {
                let (event, key, _) = refused.into_queued().into_parts();
                Err((event, key, Short::Slots))
            }
            Err(refused @ Refused::NoBytes(_)) => {
                let (event, key, _) = refused.into_queued().into_parts();
                Err((event, key, Short::Bytes))
            }
            Err(refused @ Refused::Busy(_)) => {
                let (event, key, _) = refused.into_queued().into_parts();
                Err((event, key, Short::Busy))
            }
        }
    }

    /// The fast path of an enqueue: room now, or where to wait. Runs on the thread's copy of
    /// the partition list and clones nothing unless the event has to wait.
    fn place_now(
        &self,
        set: &PartitionSet,
        options: &EnqueueOptions,
        event: EventData,
        size: usize,
        in_handler: bool,
    ) -> Placed {
        let target = match self.resolve(set, options) {
            Ok(target) => target,
            Err(e) => return Placed::Failed(event, e),
        };
        match target {
            // Handlers never wait: the wait path gives them what space there is at once.
            Some((partition, key)) if in_handler => {
                Placed::Later(event, Placement::Wait(partition.clone(), key), Short::Slots)
            }
            Some((partition, key)) => match self.try_push(partition, event, key, size, true) {
                Ok(placed) => placed,
                Err((event, key, short)) => {
                    Placed::Later(event, Placement::Wait(partition.clone(), key), short)
                }
            },
            None if in_handler => Placed::Later(event, Placement::WaitAny, Short::Slots),
            None => self.place_automatic(set, event, size),
        }
    }

    /// A healthy partition with room now, else a failing one with room; never waits for room.
    ///
    /// A partition whose lock another enqueue holds is passed over for the next one, and only
    /// waited for if no other partition takes the event: enqueuers on different cores that
    /// happen to pick the same partition would otherwise queue up behind one another and then
    /// keep moving through the partitions in step, colliding on every event.
    fn place_automatic(&self, set: &PartitionSet, mut event: EventData, size: usize) -> Placed {
        let count = set.partitions.len();
        if count > 0 {
            let first = self.core.round_robin.order(count).next().unwrap_or(0);
            for want_failing in [false, true] {
                let mut passed_over = false;
                for wait_for_lock in [false, true] {
                    if wait_for_lock && !passed_over {
                        break;
                    }
                    for i in (0..count).map(|i| (first + i) % count) {
                        let partition = &set.partitions[i];
                        if partition.shared.failing.load(Ordering::Relaxed) != want_failing
                            || !partition.shared.inbox.may_have_room()
                        {
                            continue;
                        }
                        match self.try_push(partition, event, None, size, wait_for_lock) {
                            Ok(placed) => return placed,
                            // The budget is shared: no other partition has bytes either.
                            Err((event, _, Short::Bytes)) => {
                                return Placed::Later(event, Placement::WaitAny, Short::Bytes)
                            }
                            Err((back, _, Short::Busy)) => {
                                passed_over = true;
                                event = back;
                            }
                            Err((back, _, Short::Slots)) => event = back,
                        }
                    }
                }
            }
        }
        Placed::Later(event, Placement::WaitAny, Short::Slots)
    }

    /// Enqueues one event; returns how many events are buffered in total.
    ///
    /// Waits while the target partition (or the byte budget) is full. Cancel-safe: dropping
    /// the future (e.g. under `tokio::time::timeout`) enqueues nothing and holds no space.
    /// The first call connects and reads the partitions, within the retry policy's bounds.
    pub async fn enqueue_event(&self, event: EventData, options: EnqueueOptions) -> Result<usize> {
        if self.is_closed() {
            return Err(Self::closed_error());
        }
        self.ensure_initialized().await?;
        let size = estimated_size(&event);
        let in_handler = in_handler();
        let placed =
            self.with_partitions(|set| self.place_now(set, &options, event, size, in_handler));
        match placed {
            Placed::Done(total) => Ok(total),
            Placed::Failed(_, e) => Err(e),
            Placed::Later(event, Placement::Wait(partition, key), _) => {
                let reservation = self.reserve(&partition, size, in_handler).await?;
                self.push_reserved(&partition, event, key, reservation)
            }
            Placed::Later(event, Placement::WaitAny, _) => {
                let set = self.current_partitions();
                let (partition, reservation) =
                    self.reserve_automatic(&set, size, in_handler).await?;
                self.push_reserved(&partition, event, None, reservation)
            }
        }
    }

    /// A healthy partition with room now, else a failing one with room, with bytes straight
    /// from the budget; never waits.
    fn try_reserve_automatic(
        &self,
        set: &PartitionSet,
        size: usize,
    ) -> Option<(Arc<PartitionHandle>, Reservation)> {
        let count = set.partitions.len();
        if count == 0 {
            return None;
        }
        let first = self.core.round_robin.order(count).next().unwrap_or(0);
        for want_failing in [false, true] {
            for i in (0..count).map(|i| (first + i) % count) {
                let partition = &set.partitions[i];
                if partition.shared.failing.load(Ordering::Relaxed) != want_failing {
                    continue;
                }
                if let Some(reservation) =
                    try_acquire(&partition.shared.inbox, &self.core.budget, size)
                {
                    return Some((partition.clone(), reservation));
                }
            }
        }
        None
    }

    /// Enqueues events one after another with the same options; returns the total buffered
    /// count after the last. Events enqueued together may go to different batches. On an
    /// error, the events before it stay enqueued.
    pub async fn enqueue_events(
        &self,
        events: impl IntoIterator<Item = EventData>,
        options: EnqueueOptions,
    ) -> Result<usize> {
        let mut total = self.total_buffered_event_count();
        for event in events {
            total = self.enqueue_event(event, options.clone()).await?;
        }
        Ok(total)
    }

    /// Enqueues one event if there is room now, and never waits for room: when the partition
    /// or the byte budget is full, the event comes back. (The first call still connects.)
    pub async fn try_enqueue_event(
        &self,
        event: EventData,
        options: EnqueueOptions,
    ) -> std::result::Result<usize, TryEnqueueError> {
        let refused = |event, error| TryEnqueueError { event, error };
        if self.is_closed() {
            return Err(refused(event, Some(Self::closed_error())));
        }
        let set = match self.partitions().await {
            Ok(set) => set,
            Err(e) => return Err(refused(event, Some(e))),
        };
        let size = estimated_size(&event);
        let (event, placement) = match self.place_now(&set, &options, event, size, false) {
            Placed::Done(total) => return Ok(total),
            Placed::Failed(event, e) => return Err(refused(event, Some(e))),
            // (Busy does not come back from place_now: it waits for locks when it must.)
            Placed::Later(event, _, Short::Slots | Short::Busy) => {
                return Err(refused(event, None))
            }
            Placed::Later(event, placement, Short::Bytes) => (event, placement),
        };
        // Short of bytes: maybe only because partitions hold some as credit. Take it back and
        // try once more, with bytes straight from the budget.
        self.sweep_credits();
        let found = match placement {
            Placement::Wait(partition, key) => {
                try_acquire(&partition.shared.inbox, &self.core.budget, size)
                    .map(|reservation| (partition, key, reservation))
            }
            Placement::WaitAny => self
                .try_reserve_automatic(&set, size)
                .map(|(partition, reservation)| (partition, None, reservation)),
        };
        let Some((partition, key, reservation)) = found else {
            return Err(refused(event, None));
        };
        let needs = Needs {
            slot: false,
            bytes: 0,
            wait_for_lock: true,
        };
        match self.push(&partition, event, key, reservation, needs) {
            Ok(total) => Ok(total),
            Err(refusal) => Err(refused(
                refusal.into_queued().event,
                Some(Self::closed_error()),
            )),
        }
    }

    /// Sends everything buffered now, without waiting out `max_wait_time`, and returns once
    /// each of those events has had its handler call. Enqueues may go on meanwhile; events
    /// enqueued after the call started (including events a failure handler re-enqueues while
    /// it runs) are not waited for: loop on `flush` while
    /// [`total_buffered_event_count`](Self::total_buffered_event_count) is above zero to
    /// settle those too.
    ///
    /// It waits for the handlers, however long they take: to bound it, run it under
    /// `tokio::time::timeout` (it is cancel-safe: dropping it changes nothing but the wait).
    pub async fn flush(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Self::closed_error());
        }
        self.barrier(Command::Flush).await;
        Ok(())
    }

    async fn barrier(&self, command: impl Fn(oneshot::Sender<()>) -> Command) {
        let set = self.current_partitions();
        let mut waits = Vec::new();
        for partition in &set.partitions {
            let (ack, done) = oneshot::channel();
            if partition.shared.inbox.push_command(command(ack)).is_ok() {
                waits.push(done);
            }
        }
        for done in waits {
            let _ = done.await;
        }
    }

    /// Flushes, then stops the actors and closes the connection. Enqueues after it fail with
    /// [`ErrorKind::Closed`]. Calling it again waits for the first call and returns.
    ///
    /// Returns once every event enqueued before it had its handler call: sends are bounded by
    /// the retry policy (a service that stopped answering makes them fail, and they are
    /// reported as failures), and closing the connection waits for the service at most the
    /// try timeout (never more than 5 s). A handler call that does not return holds close up
    /// for at most
    /// [`handler_shutdown_timeout`](BufferedProducerOptions::handler_shutdown_timeout); close
    /// then returns an error of kind [`ErrorKind::Timeout`] (see that option for what happens
    /// to the events of that partition).
    pub async fn close(&self) -> Result<()> {
        self.shut_down(false).await
    }

    /// Stops at once: every event not yet published is reported to the failure handler with
    /// an [`ErrorKind::Abandoned`] error (batches cut off mid-send say they may have been
    /// published). Then closes the connection in the background, without waiting for the
    /// service. Returns once every event had its handler call, or with an error of kind
    /// [`ErrorKind::Timeout`] after a handler call stuck for
    /// [`handler_shutdown_timeout`](BufferedProducerOptions::handler_shutdown_timeout).
    pub async fn close_abandoning(&self) -> Result<()> {
        self.shut_down(true).await
    }

    async fn shut_down(&self, abandon: bool) -> Result<()> {
        let _serial = self.core.close_lock.lock().await;
        let first = !self.core.closed.swap(true, Ordering::SeqCst);
        let stuck = if first || abandon {
            self.close_partitions(abandon).await
        } else {
            Vec::new()
        };
        if abandon {
            // Closing politely waits for the service's answers; abandoning must not wait for
            // a service that stopped answering. The connection closes in the background.
            let sender = self.core.settings.sender.clone();
            tokio::spawn(async move { sender.close().await });
        } else {
            self.core.settings.sender.close().await;
        }
        if stuck.is_empty() {
            return Ok(());
        }
        let timeout = self.core.options.handler_shutdown_timeout;
        tracing::warn!(partitions = ?stuck, ?timeout, "close stopped waiting for stuck handlers");
        Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "close stopped waiting for the handler of partition(s) {stuck:?}: a handler call did not return within handler_shutdown_timeout ({timeout:?}); their events not yet published were abandoned, and their outcomes not yet reported go to the handler if the stuck call returns"
            ),
        ))
    }

    /// Tells every partition to close (or abandon) and waits until each has had its events
    /// sent and reported, giving up on a partition whose handler call stays stuck for
    /// `handler_shutdown_timeout`. Returns the ids of the partitions given up on.
    async fn close_partitions(&self, abandon: bool) -> Vec<String> {
        let set = self.current_partitions();
        let started = Instant::now();
        let timeout = self.core.options.handler_shutdown_timeout;
        let mut waits = Vec::new();
        for partition in &set.partitions {
            let (ack, done) = oneshot::channel();
            if partition
                .shared
                .inbox
                .push_command(Command::Close { abandon, done: ack })
                .is_ok()
            {
                let partition = partition.clone();
                waits.push(async move {
                    let reporter = &partition.shared.reporter;
                    if handled_in_time(done, reporter, started, timeout).await {
                        None
                    } else {
                        partition.shared.give_up.notify_one();
                        Some(partition.shared.id.clone())
                    }
                });
            }
        }
        futures_util::future::join_all(waits)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Whether close was called.
    pub fn is_closed(&self) -> bool {
        self.core.closed.load(Ordering::SeqCst)
    }

    /// Events enqueued and not yet published or failed, over all partitions.
    pub fn total_buffered_event_count(&self) -> usize {
        self.core.settings.total_buffered.load(Ordering::SeqCst)
    }

    /// Events buffered for one partition (0 for a partition not known).
    pub fn buffered_event_count(&self, partition_id: &str) -> usize {
        self.current_partitions()
            .get(partition_id)
            .map_or(0, |p| p.shared.inbox.buffered())
    }

    fn producer(&self) -> Result<&ProducerClient> {
        self.core.producer.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                "this producer has no connection",
            )
        })
    }

    /// The partition ids, connecting first if needed.
    pub async fn partition_ids(&self) -> Result<Vec<String>> {
        Ok(self.partitions().await?.ids())
    }

    /// The event hub's properties.
    pub async fn eventhub_properties(&self) -> Result<EventHubProperties> {
        self.producer()?.eventhub_properties().await
    }

    /// One partition's properties.
    pub async fn partition_properties(&self, partition_id: &str) -> Result<PartitionProperties> {
        self.producer()?.partition_properties(partition_id).await
    }

    /// The namespace's host name.
    pub fn fully_qualified_namespace(&self) -> &str {
        self.core
            .producer
            .as_ref()
            .map_or("", |p| p.fully_qualified_namespace())
    }

    /// The event hub's name.
    pub fn eventhub_name(&self) -> &str {
        self.core
            .producer
            .as_ref()
            .map_or("", |p| p.eventhub_name())
    }

    /// The producer's identifier.
    pub fn identifier(&self) -> &str {
        self.core.producer.as_ref().map_or("", |p| p.identifier())
    }

    /// The options in force.
    pub fn options(&self) -> &BufferedProducerOptions {
        &self.core.options
    }
}

#[cfg(test)]
mod tests;
