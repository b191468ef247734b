//! [`BufferedProducerClient`], the public handle: what every clone shares (`Core`), how it is
//! put together, its first connection, and its accessors. Enqueueing is in `enqueue.rs`,
//! flushing and closing in `shutdown.rs`, construction from credentials in `builder.rs`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OnceCell, Semaphore};

use super::actor::{ActorSettings, RefreshSchedule};
use super::budget::ByteBudget;
use super::options::BufferedProducerOptions;
use super::partitioner::{Partitioner, ServicePartitioner};
use super::partitions::{PartitionList, PartitionSet};
use super::report::StartReporter;
use super::routing::RoundRobin;
use super::sender::BatchSender;
use crate::error::{Error, ErrorKind, Result};
use crate::producer::ProducerClient;
use crate::properties::{EventHubProperties, PartitionProperties};
use crate::telemetry::Telemetry;

/// The producer's state, shared by its handles.
pub(crate) struct Core {
    pub options: BufferedProducerOptions,
    pub producer: Option<ProducerClient>,
    pub settings: Arc<ActorSettings>,
    pub budget: ByteBudget,
    pub initialized: OnceCell<()>,
    pub partitions: PartitionList,
    /// Maps keys to partitions (the service's hash unless the options name another).
    pub partitioner: Arc<dyn Partitioner>,
    pub round_robin: RoundRobin,
    pub closed: AtomicBool,
    pub close_lock: tokio::sync::Mutex<()>,
}

/// A reference to the producer that does not keep it alive (handlers' contexts use it, so
/// that dropping the last handle still closes the producer).
#[derive(Clone, Default)]
pub(crate) struct WeakProducer(std::sync::Weak<Core>);

impl WeakProducer {
    pub(crate) fn upgrade(&self) -> Option<BufferedProducerClient> {
        self.0.upgrade().map(|core| BufferedProducerClient { core })
    }
}

/// A producer you enqueue events into one at a time. One handle (cheap to clone) over one AMQP
/// connection; one actor task per partition builds and sends batches; one reporter task per
/// partition calls the handlers in send order; the buffered events per partition and the
/// bytes overall are bounded.
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
    pub(crate) core: Arc<Core>,
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

/// The OpenTelemetry instrumentation the options ask for (none without the feature).
fn telemetry_for(
    options: &BufferedProducerOptions,
    producer: Option<&ProducerClient>,
) -> Telemetry {
    #[cfg(feature = "opentelemetry")]
    return Telemetry::new(
        options.opentelemetry.as_ref(),
        producer.map_or("", |p| p.fully_qualified_namespace()),
        producer.map_or("", |p| p.eventhub_name()),
    );
    #[cfg(not(feature = "opentelemetry"))]
    {
        let _ = (options, producer);
        Telemetry::default()
    }
}

impl BufferedProducerClient {
    /// Puts a producer together: actors send through `sender`; `reporters` makes the
    /// partitions' reporters, given a reference to the producer that does not keep it alive.
    pub(crate) fn assemble(
        options: BufferedProducerOptions,
        producer: Option<ProducerClient>,
        sender: Arc<dyn BatchSender>,
        reporters: impl FnOnce(WeakProducer) -> Arc<dyn StartReporter>,
    ) -> Self {
        let telemetry = telemetry_for(&options, producer.as_ref());
        let core = Arc::new_cyclic(|weak: &std::sync::Weak<Core>| {
            let refresh_from = weak.clone();
            let settings = Arc::new(ActorSettings {
                sender,
                reporters: reporters(WeakProducer(weak.clone())),
                max_wait_time: options.max_wait_time,
                send_when_idle: options.send_when_idle,
                pause_on_failure: options.pause_partition_on_failure,
                max_sends_per_partition: options.max_concurrent_sends_per_partition,
                link_max_size: AtomicUsize::new(0),
                idempotent: options.enable_idempotent_retries,
                global_sends: Arc::new(Semaphore::new(options.max_concurrent_sends)),
                total_buffered: Arc::new(AtomicUsize::new(0)),
                budget: ByteBudget::new(options.max_buffered_bytes),
                refresh: RefreshSchedule::new(options.partition_refresh_interval),
                refresh_partitions: Box::new(move || {
                    if let Some(core) = refresh_from.upgrade() {
                        BufferedProducerClient { core }.refresh_partitions();
                    }
                }),
                telemetry,
            });
            Core {
                budget: settings.budget.clone(),
                partitions: PartitionList::new(
                    settings.clone(),
                    options.max_buffered_events_per_partition,
                ),
                partitioner: options
                    .partitioner
                    .clone()
                    .unwrap_or_else(|| Arc::new(ServicePartitioner)),
                options,
                producer,
                settings,
                initialized: OnceCell::new(),
                round_robin: RoundRobin,
                closed: AtomicBool::new(false),
                close_lock: tokio::sync::Mutex::new(()),
            }
        });
        Self { core }
    }

    /// The error of an operation on a closed producer.
    pub(crate) fn closed_error() -> Error {
        Error::new(ErrorKind::Closed, "the buffered producer is closed")
    }

    /// The partition list now.
    pub(crate) fn current_partitions(&self) -> Arc<PartitionSet> {
        self.core.partitions.current()
    }

    /// Reads the partitions (and connects) the first time, within the retry policy; after
    /// that, one atomic load.
    pub(crate) async fn ensure_initialized(&self) -> Result<()> {
        if self.core.initialized.initialized() {
            return Ok(());
        }
        self.partitions().await.map(|_| ())
    }

    /// The partitions, reading them (and connecting) the first time, within the retry policy.
    pub(crate) async fn partitions(&self) -> Result<Arc<PartitionSet>> {
        self.core
            .initialized
            .get_or_try_init(|| self.core.partitions.read_and_install())
            .await?;
        Ok(self.current_partitions())
    }

    /// Reads the partition list again in the background, unless another read runs or the
    /// producer is closed. Actors call this when it is due, as they take enqueued events, so
    /// an idle producer does nothing.
    fn refresh_partitions(&self) {
        let schedule = &self.core.settings.refresh;
        if self.is_closed() || !schedule.claim(tokio::time::Instant::now()) {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move {
            if let Err(e) = client.core.partitions.read_and_install().await {
                tracing::warn!(error = %e, "reading the partition list failed; keeping the known one");
            }
            client.core.settings.refresh.done();
        });
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
