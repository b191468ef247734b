//! [`BufferedProducerClient`]: enqueue events one at a time; the client batches them per
//! partition, sends, reports every batch to your handlers, and applies back pressure.
//!
//! Shape: one handle (cheap to clone) over one AMQP connection; one actor task per partition
//! building and sending batches; one reporter task per partition calling the handlers in send
//! order; semaphores bounding buffered events per partition and bytes overall.

mod capacity;
mod handlers;
mod options;
mod partition;
mod router;
mod sender;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use azure_core::credentials::TokenCredential;
use futures_util::future::select_all;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, OnceCell, Semaphore};
use tokio::time::Instant;

use self::capacity::{
    acquire, acquire_for_handler, estimated_size, release, try_acquire, ByteBudget, Reservation,
};
use self::handlers::{boxed_failed, boxed_succeeded, in_handler, ClosureHandler};
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

/// Where an enqueue stands after its fast path.
enum Placement {
    /// Space was reserved in this partition.
    Reserved(Arc<PartitionHandle>, Option<String>, Reservation),
    /// This partition is full: wait for it.
    Wait(Arc<PartitionHandle>, Option<String>),
    /// Automatic routing found no room anywhere: wait for the first partition with room.
    WaitAny,
}

/// What the producer keeps of one partition.
struct PartitionHandle {
    shared: Arc<PartitionShared>,
    commands: mpsc::UnboundedSender<Command>,
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
    options: BufferedProducerOptions,
    producer: Option<ProducerClient>,
    settings: Arc<ActorSettings>,
    budget: ByteBudget,
    initialized: OnceCell<()>,
    partitions: RwLock<Arc<PartitionSet>>,
    /// When the partition list is next read, in milliseconds since `epoch`; `u64::MAX` while a
    /// read is running.
    next_refresh_ms: std::sync::atomic::AtomicU64,
    epoch: Instant,
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
            });
            Core {
                budget: settings.budget.clone(),
                options,
                producer,
                settings,
                initialized: OnceCell::new(),
                partitions: RwLock::new(Arc::new(PartitionSet::default())),
                next_refresh_ms: std::sync::atomic::AtomicU64::new(refresh_interval_ms),
                epoch: Instant::now(),
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
        let mut partitions = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(existing) = known.get(&id) {
                partitions.push(existing.clone());
                continue;
            }
            let (shared, commands) = partition::spawn(
                id,
                self.core.options.max_buffered_events_per_partition,
                self.core.settings.clone(),
            );
            partitions.push(Arc::new(PartitionHandle { shared, commands }));
        }
        // Partitions never disappear from an event hub; keep any the new list lacks.
        for old in &known.partitions {
            if !partitions.iter().any(|p| p.shared.id == old.shared.id) {
                partitions.push(old.clone());
            }
        }
        *guard = Arc::new(PartitionSet { partitions });
    }

    /// Reads the partition list again in the background when the interval has passed.
    /// Only enqueues call this, so an idle producer does nothing. One atomic load when not due.
    fn refresh_if_due(&self, now: Instant) {
        let now_ms = now.saturating_duration_since(self.core.epoch).as_millis() as u64;
        let due = self.core.next_refresh_ms.load(Ordering::Relaxed);
        if now_ms < due {
            return;
        }
        // One caller wins the right to refresh; u64::MAX keeps the others out meanwhile.
        if self
            .core
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
            let now_ms = client.core.epoch.elapsed().as_millis() as u64;
            client
                .core
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
        match batch_target(
            options.partition_id.as_deref(),
            options.partition_key.as_deref(),
        )? {
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

    /// Space in the partition for one event: waits while it is full (not in a handler).
    async fn reserve(&self, partition: &PartitionHandle, size: usize) -> Result<Reservation> {
        let slots = &partition.shared.slots;
        if in_handler() {
            return Ok(acquire_for_handler(slots, &self.core.budget, size));
        }
        acquire(slots, &self.core.budget, size)
            .await
            .ok_or_else(Self::closed_error)
    }

    /// Picks a partition for an event without id or key: a healthy one with room, else a
    /// failing one with room, else the first to get room.
    async fn reserve_automatic(
        &self,
        set: &PartitionSet,
        size: usize,
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
        if in_handler() {
            // Events a handler re-enqueues never wait; they go to the next partition that is
            // not failing (or the next one, if all are).
            let index = order
                .clone()
                .find(|&i| !set.partitions[i].shared.failing.load(Ordering::SeqCst))
                .unwrap_or(first);
            let partition = set.partitions[index].clone();
            let reservation = acquire_for_handler(&partition.shared.slots, &self.core.budget, size);
            return Ok((partition, reservation));
        }
        if let Some(found) = self.try_reserve_automatic(set, size) {
            return Ok(found);
        }
        let waits = order.map(|i| {
            let partition = set.partitions[i].clone();
            let budget = self.core.budget.clone();
            async move {
                let reservation = acquire(&partition.shared.slots, &budget, size).await;
                (partition, reservation)
            }
            .boxed()
        });
        let ((partition, reservation), _, _) = select_all(waits).await;
        Ok((partition, reservation.ok_or_else(Self::closed_error)?))
    }

    /// Hands the event to the partition's actor; no await, so nothing is half-enqueued.
    fn push(
        &self,
        partition: &PartitionHandle,
        event: EventData,
        key: Option<String>,
        reservation: Reservation,
    ) -> Result<usize> {
        let now = Instant::now();
        self.refresh_if_due(now);
        partition.shared.buffered.fetch_add(1, Ordering::SeqCst);
        let total = self
            .core
            .settings
            .total_buffered
            .fetch_add(1, Ordering::SeqCst)
            + 1;
        let queued = Queued {
            event,
            key,
            reservation,
            enqueued_at: now,
        };
        if let Err(refused) = partition.commands.send(Command::Event(queued)) {
            partition.shared.buffered.fetch_sub(1, Ordering::SeqCst);
            self.core
                .settings
                .total_buffered
                .fetch_sub(1, Ordering::SeqCst);
            if let Command::Event(queued) = refused.0 {
                release(
                    &partition.shared.slots,
                    &self.core.budget,
                    queued.reservation,
                );
            }
            return Err(Self::closed_error());
        }
        Ok(total)
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
        // The common case, room now, is decided under the read lock without cloning the
        // partition list; only the chosen partition's handle is cloned.
        let placement = {
            let set = self
                .core
                .partitions
                .read()
                .unwrap_or_else(|p| p.into_inner());
            match self.resolve(&set, &options)? {
                Some((partition, key)) => match self.try_reserve(partition, size) {
                    Some(reservation) => Placement::Reserved(partition.clone(), key, reservation),
                    None => Placement::Wait(partition.clone(), key),
                },
                None if in_handler() => Placement::WaitAny,
                None => match self.try_reserve_automatic(&set, size) {
                    Some((partition, reservation)) => {
                        Placement::Reserved(partition, None, reservation)
                    }
                    None => Placement::WaitAny,
                },
            }
        };
        match placement {
            Placement::Reserved(partition, key, reservation) => {
                self.push(&partition, event, key, reservation)
            }
            Placement::Wait(partition, key) => {
                let reservation = self.reserve(&partition, size).await?;
                self.push(&partition, event, key, reservation)
            }
            Placement::WaitAny => {
                let set = self.current_partitions();
                let (partition, reservation) = self.reserve_automatic(&set, size).await?;
                self.push(&partition, event, None, reservation)
            }
        }
    }

    /// Space in `partition` now, if there is some (handlers never wait: see `reserve`).
    fn try_reserve(&self, partition: &PartitionHandle, size: usize) -> Option<Reservation> {
        if in_handler() {
            return None;
        }
        try_acquire(&partition.shared.slots, &self.core.budget, size)
    }

    /// A healthy partition with room now, else a failing one with room; never waits.
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
                    try_acquire(&partition.shared.slots, &self.core.budget, size)
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
        let target = match self.resolve(&set, &options) {
            Ok(target) => target,
            Err(e) => return Err(refused(event, Some(e))),
        };
        let (partition, key, reservation) = match target {
            Some((partition, key)) => {
                match try_acquire(&partition.shared.slots, &self.core.budget, size) {
                    Some(r) => (partition.clone(), key, r),
                    None => return Err(refused(event, None)),
                }
            }
            None => match self.try_reserve_automatic(&set, size) {
                Some((partition, r)) => (partition, None, r),
                None => return Err(refused(event, None)),
            },
        };
        match self.push(&partition, event.clone(), key, reservation) {
            Ok(total) => Ok(total),
            Err(e) => Err(refused(event, Some(e))),
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
            if partition.commands.send(command(ack)).is_ok() {
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
                .commands
                .send(Command::Close { abandon, done: ack })
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
            .map_or(0, |p| p.shared.buffered.load(Ordering::SeqCst))
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
