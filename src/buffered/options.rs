//! Options of the buffered producer and of each enqueue.

use std::sync::Arc;
use std::time::Duration;

use super::partitioner::Partitioner;
use crate::error::{Error, ErrorKind, Result};
use crate::producer::ProducerClientOptions;
use crate::retry::RetryOptions;

/// Default for [`BufferedProducerOptions::max_wait_time`].
pub const DEFAULT_MAX_WAIT_TIME: Duration = Duration::from_millis(250);
/// Default for [`BufferedProducerOptions::max_buffered_events_per_partition`].
pub const DEFAULT_MAX_BUFFERED_EVENTS_PER_PARTITION: usize = 2500;
/// Default for [`BufferedProducerOptions::max_buffered_bytes`]: 256 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 * 1024 * 1024;
/// Default for [`BufferedProducerOptions::max_concurrent_sends`].
pub const DEFAULT_MAX_CONCURRENT_SENDS: usize = 64;
/// Default for [`BufferedProducerOptions::max_concurrent_sends_per_partition`].
pub const DEFAULT_MAX_CONCURRENT_SENDS_PER_PARTITION: usize = 1;
/// Default for [`BufferedProducerOptions::partition_refresh_interval`].
pub const DEFAULT_PARTITION_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Default for [`BufferedProducerOptions::handler_shutdown_timeout`].
pub const DEFAULT_HANDLER_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How the buffered producer batches, bounds memory and sends.
///
/// Every field has a documented default; [`BufferedProducerBuilder::build`](super::BufferedProducerBuilder::build)
/// checks them and names the field that is out of range.
#[derive(Clone)]
#[non_exhaustive]
pub struct BufferedProducerOptions {
    /// How long the oldest event of a batch may wait before the batch is sent although not
    /// full. `None` sends only full batches, on flush and close, and (with
    /// [`send_when_idle`](Self::send_when_idle)) whenever the partition is idle. Default:
    /// 250 ms.
    ///
    /// A batch whose time came while every send slot of its partition is busy keeps taking
    /// events, up to its size limit, until a slot frees: a small value never queues up tiny
    /// batches behind a slow send.
    pub max_wait_time: Option<Duration>,
    /// Send a batch at once when its partition has a free send slot and nothing else waits
    /// for one, instead of waiting for `max_wait_time`: an idle partition adds no latency,
    /// while under load events accumulate during each send into the next batch, so batches
    /// grow with the load by themselves (as Kafka's producer with `linger.ms=0`). It costs
    /// nothing in service capacity, which Event Hubs counts in events, not batches. Default:
    /// true.
    ///
    /// Measured on a 2-core machine against the emulator (`examples/latency.rs`, 4
    /// partitions, 100-byte events; see the CHANGELOG for the full table): enqueue-to-handler
    /// latency at 1,000 events/s fell from p50 128 ms / p99 252 ms to about 1 ms / 3 ms,
    /// full-load throughput stayed within noise. Turn it off to trade latency for fewer,
    /// fuller batches when sends are expensive for you (each batch waits up to
    /// `max_wait_time` then).
    pub send_when_idle: bool,
    /// Events buffered per partition before enqueueing to it waits. Default: 2500.
    pub max_buffered_events_per_partition: usize,
    /// Bytes the producer may hold for events enqueued and not yet reported, over all
    /// partitions; enqueueing waits while they are taken. Default: 256 MiB. At least 64 KiB.
    ///
    /// What it counts, per event, from enqueue until its handler call starts (while its
    /// report waits behind other handler calls, too): the event as you gave it (body,
    /// property names and values, message id, correlation id, content type, key) and its
    /// encoded copy in the batch (the same again), plus 128 bytes of bookkeeping. So 1 KiB
    /// events take about 2.2 KiB of the bound each. It also counts what the producer
    /// holds besides events: each send in flight, the buffer the AMQP library serializes its
    /// batch into (the batch's size rounded up to a power of two: 1 MiB for a full batch on
    /// the service), and the encode buffers a partition with sends in progress keeps for its
    /// next events (at most one batch's worth; none on an idle partition). Those are taken
    /// without waiting, since sends are what frees the bound: when the bound is full they are
    /// owed, and enqueues wait until finished batches have repaid them. Not counted: the
    /// allocator's own overhead, events handed to your handlers, and the connection's own
    /// buffers. An event larger than the bound takes all of it and passes alone, so 1 MiB
    /// events work with any bound.
    ///
    /// Sizing a container: the heap the producer's process held at its peak stayed within the
    /// bound + 15 MiB (`examples/memory.rs`: 8 tasks enqueueing 1 KiB events through a 20 s
    /// stall and a recovery), and at full load over 100 partitions within the bound +
    /// 25..70 MiB (each partition's queues and batch vectors keep the capacity they
    /// reached). Resident memory adds what the allocator keeps after frees: the
    /// application's event bodies, allocated by tasks on one worker thread and freed after
    /// their report on another, leave each thread's heap at its own peak. With
    /// glibc's default of one arena per thread that gave peaks of bound + 45..53 MiB for a
    /// 64 MiB bound and bound + 89..131 MiB for 256 MiB (mimalloc behaves alike); with
    /// `MALLOC_ARENA_MAX=1` in the environment, bound + 35..50 MiB for 256 MiB.
    pub max_buffered_bytes: usize,
    /// Batches being sent at once, over all partitions. Default: 64.
    ///
    /// With one send per partition in flight (the default below), this only binds hubs of more
    /// than 64 partitions, and each batch in flight holds at most one partition's buffer.
    /// Measured with `examples/throughput.rs` (32 partitions, 300,000 events of 100 B,
    /// dispositions delayed 20 ms like a slow network, one run each on a 2-core machine):
    /// 4 in flight gave 636k events/s, 16 gave 718k, 64 gave 625k — within the machine's
    /// noise, because the producer is bounded by CPU there, not by round trips. 64 keeps
    /// every partition of a common hub (up to 32, or 64) sending at once on real networks,
    /// where round trips dominate, without letting a very large hub put hundreds of batches
    /// in flight.
    pub max_concurrent_sends: usize,
    /// Batches being sent at once to one partition, 1 to 100. Default: 1, which keeps the
    /// events of a partition in order even when a send is retried. More raises throughput
    /// per partition on slow networks (4 partitions, dispositions delayed 20 ms: 217k
    /// events/s with 1, 379k with 4, in one run), but a retried batch can then land after a
    /// later one.
    pub max_concurrent_sends_per_partition: usize,
    /// How often the partition list is read again (new partitions get actors). It is read
    /// only when events are enqueued, so an idle producer does nothing. Default: 60 s.
    pub partition_refresh_interval: Duration,
    /// Publish as an idempotent producer: each partition link gets a producer id and epoch
    /// from the service, every event carries the next sequence number, and retries reuse the
    /// numbers, so a batch whose acknowledgement was lost (timeout, dropped connection,
    /// detached link) is stored once however often it is sent. A batch that fails for good
    /// is settled with the service before it is reported: the link re-attaches with the next
    /// epoch (so a delivery of the batch still on its way can no longer be stored) and the
    /// service's last sequence number says whether the batch was stored; if it was, it is
    /// reported as a success after all, and if it was not, as a failure that
    /// [`confirmed_not_published`](crate::Error::confirmed_not_published). Settling keeps
    /// trying, across reconnects, for one more retry-policy bound
    /// ([`RetryOptions::bound`](crate::RetryOptions::bound)) per failed batch; only when it
    /// cannot reach the service in that time is the batch reported as
    /// [`may_have_been_published`](crate::Error::may_have_been_published). So: nothing is
    /// stored twice, every reported success is stored, and a reported failure was not
    /// stored unless it says it may have been. Requires
    /// `max_concurrent_sends_per_partition == 1`. Default: false.
    pub enable_idempotent_retries: bool,
    /// The ordering guard: after a batch of a partition fails for good, pause the partition,
    /// so that nothing enqueued after the failed events is published before them and
    /// consumers never see a gap. While paused, enqueues to the partition (by id or by a key
    /// that maps to it) are refused with [`ErrorKind::PartitionPaused`], its events not yet
    /// being sent fail with that kind (reported to the failure handler), and automatic
    /// routing passes it over; the failure handler may still
    /// [`requeue`](crate::SendFailedContext::requeue) events. Resume it with
    /// [`resume_partition`](super::BufferedProducerClient::resume_partition). Google Pub/Sub's
    /// ordering keys behave this way. Default: false.
    pub pause_partition_on_failure: bool,
    /// Maps partition keys to partitions. Default: None, the service's own hash
    /// ([`ServicePartitioner`](crate::ServicePartitioner)).
    pub partitioner: Option<Arc<dyn Partitioner>>,
    /// OpenTelemetry metrics, spans and trace-context propagation (feature
    /// `opentelemetry`). Default: None, no OpenTelemetry records; the
    /// [`metrics`](super::BufferedProducerClient::metrics) snapshot is there either way.
    #[cfg(feature = "opentelemetry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
    pub opentelemetry: Option<crate::telemetry::OpenTelemetryOptions>,
    /// How long [`close`](super::BufferedProducerClient::close) and
    /// [`close_abandoning`](super::BufferedProducerClient::close_abandoning) wait for one
    /// handler call that does not return, 1 ms to 1 hour. Default: 30 s.
    ///
    /// Close waits for every send (within the retry policy's bound) and for every handler
    /// call. When a partition's handler call has been running this long (counted from when
    /// close began, for a call that started earlier), close stops waiting for that partition:
    /// its events not yet published are reported as [`Abandoned`](crate::ErrorKind::Abandoned)
    /// (a batch cut off mid-send may have been published, and says so), the connection is
    /// closed, and close returns an error of kind [`Timeout`](crate::ErrorKind::Timeout)
    /// naming the partitions. Their reports stay queued, in order, behind the stuck call:
    /// should it ever return, each of those events gets its one handler call then (the
    /// partition's reporter task lives on for that); if it never returns, they never do.
    /// Partitions whose handlers return are not affected.
    pub handler_shutdown_timeout: Duration,
    /// Connection settings: retries, identifier, custom endpoint, trusted roots.
    pub client: ProducerClientOptions,
}

impl Default for BufferedProducerOptions {
    fn default() -> Self {
        Self {
            max_wait_time: Some(DEFAULT_MAX_WAIT_TIME),
            send_when_idle: true,
            pause_partition_on_failure: false,
            partitioner: None,
            #[cfg(feature = "opentelemetry")]
            opentelemetry: None,
            max_buffered_events_per_partition: DEFAULT_MAX_BUFFERED_EVENTS_PER_PARTITION,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            max_concurrent_sends: DEFAULT_MAX_CONCURRENT_SENDS,
            max_concurrent_sends_per_partition: DEFAULT_MAX_CONCURRENT_SENDS_PER_PARTITION,
            partition_refresh_interval: DEFAULT_PARTITION_REFRESH_INTERVAL,
            enable_idempotent_retries: false,
            handler_shutdown_timeout: DEFAULT_HANDLER_SHUTDOWN_TIMEOUT,
            client: ProducerClientOptions::default(),
        }
    }
}

impl std::fmt::Debug for BufferedProducerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("BufferedProducerOptions");
        debug
            .field("max_wait_time", &self.max_wait_time)
            .field("send_when_idle", &self.send_when_idle)
            .field(
                "max_buffered_events_per_partition",
                &self.max_buffered_events_per_partition,
            )
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("max_concurrent_sends", &self.max_concurrent_sends)
            .field(
                "max_concurrent_sends_per_partition",
                &self.max_concurrent_sends_per_partition,
            )
            .field(
                "partition_refresh_interval",
                &self.partition_refresh_interval,
            )
            .field("enable_idempotent_retries", &self.enable_idempotent_retries)
            .field(
                "pause_partition_on_failure",
                &self.pause_partition_on_failure,
            )
            .field(
                "partitioner",
                &self.partitioner.as_ref().map_or("service", |_| "custom"),
            )
            .field("handler_shutdown_timeout", &self.handler_shutdown_timeout)
            .field("client", &self.client);
        #[cfg(feature = "opentelemetry")]
        debug.field("opentelemetry", &self.opentelemetry);
        debug.finish()
    }
}

fn out_of_range(field: &str, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidArgument, format!("{field} {why}"))
}

impl BufferedProducerOptions {
    /// Sets [`max_wait_time`](Self::max_wait_time).
    pub fn with_max_wait_time(mut self, max_wait_time: Option<Duration>) -> Self {
        self.max_wait_time = max_wait_time;
        self
    }

    /// Sets [`send_when_idle`](Self::send_when_idle).
    pub fn with_send_when_idle(mut self, send_when_idle: bool) -> Self {
        self.send_when_idle = send_when_idle;
        self
    }

    /// Sets [`pause_partition_on_failure`](Self::pause_partition_on_failure) (the ordering
    /// guard).
    pub fn with_pause_partition_on_failure(mut self, pause: bool) -> Self {
        self.pause_partition_on_failure = pause;
        self
    }

    /// Sets [`opentelemetry`](Self::opentelemetry).
    #[cfg(feature = "opentelemetry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
    pub fn with_opentelemetry(mut self, options: crate::telemetry::OpenTelemetryOptions) -> Self {
        self.opentelemetry = Some(options);
        self
    }

    /// Sets [`partitioner`](Self::partitioner).
    pub fn with_partitioner(mut self, partitioner: impl Partitioner) -> Self {
        self.partitioner = Some(Arc::new(partitioner));
        self
    }

    /// Sets [`max_buffered_events_per_partition`](Self::max_buffered_events_per_partition).
    pub fn with_max_buffered_events_per_partition(mut self, count: usize) -> Self {
        self.max_buffered_events_per_partition = count;
        self
    }

    /// Sets [`max_buffered_bytes`](Self::max_buffered_bytes).
    pub fn with_max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Sets [`max_concurrent_sends`](Self::max_concurrent_sends).
    pub fn with_max_concurrent_sends(mut self, count: usize) -> Self {
        self.max_concurrent_sends = count;
        self
    }

    /// Sets [`max_concurrent_sends_per_partition`](Self::max_concurrent_sends_per_partition).
    pub fn with_max_concurrent_sends_per_partition(mut self, count: usize) -> Self {
        self.max_concurrent_sends_per_partition = count;
        self
    }

    /// Sets [`partition_refresh_interval`](Self::partition_refresh_interval).
    pub fn with_partition_refresh_interval(mut self, interval: Duration) -> Self {
        self.partition_refresh_interval = interval;
        self
    }

    /// Sets [`enable_idempotent_retries`](Self::enable_idempotent_retries).
    pub fn with_idempotent_retries(mut self, enable: bool) -> Self {
        self.enable_idempotent_retries = enable;
        self
    }

    /// Sets [`handler_shutdown_timeout`](Self::handler_shutdown_timeout).
    pub fn with_handler_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.handler_shutdown_timeout = timeout;
        self
    }

    /// Sets the retry options of sends and connection operations.
    pub fn with_retry_options(mut self, retry: RetryOptions) -> Self {
        self.client.retry = retry;
        self
    }

    /// Sets the identifier of the producer (AMQP container id, logs).
    pub fn with_identifier(mut self, identifier: impl Into<String>) -> Self {
        self.client.identifier = Some(identifier.into());
        self
    }

    /// Sets the connection settings.
    pub fn with_client_options(mut self, client: ProducerClientOptions) -> Self {
        self.client = client;
        self
    }

    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        if let Some(wait) = self.max_wait_time {
            if wait.is_zero() || wait > Duration::from_secs(3600) {
                return Err(out_of_range(
                    "max_wait_time",
                    format!("must be above zero and at most 1 hour (or None), not {wait:?}"),
                ));
            }
        }
        if !(1..=1_000_000).contains(&self.max_buffered_events_per_partition) {
            return Err(out_of_range(
                "max_buffered_events_per_partition",
                format!(
                    "must be 1 to 1000000, not {}",
                    self.max_buffered_events_per_partition
                ),
            ));
        }
        if self.max_buffered_bytes < 64 * 1024 {
            return Err(out_of_range(
                "max_buffered_bytes",
                format!("must be at least 65536, not {}", self.max_buffered_bytes),
            ));
        }
        if !(1..=10_000).contains(&self.max_concurrent_sends) {
            return Err(out_of_range(
                "max_concurrent_sends",
                format!("must be 1 to 10000, not {}", self.max_concurrent_sends),
            ));
        }
        if !(1..=100).contains(&self.max_concurrent_sends_per_partition) {
            return Err(out_of_range(
                "max_concurrent_sends_per_partition",
                format!(
                    "must be 1 to 100, not {}",
                    self.max_concurrent_sends_per_partition
                ),
            ));
        }
        if self.enable_idempotent_retries && self.max_concurrent_sends_per_partition != 1 {
            return Err(out_of_range(
                "max_concurrent_sends_per_partition",
                format!(
                    "must be 1 when enable_idempotent_retries is set (sequence numbers allow one batch in flight per partition), not {}",
                    self.max_concurrent_sends_per_partition
                ),
            ));
        }
        if self.partition_refresh_interval < Duration::from_secs(1) {
            return Err(out_of_range(
                "partition_refresh_interval",
                format!(
                    "must be at least 1 second, not {:?}",
                    self.partition_refresh_interval
                ),
            ));
        }
        if self.handler_shutdown_timeout < Duration::from_millis(1)
            || self.handler_shutdown_timeout > Duration::from_secs(3600)
        {
            return Err(out_of_range(
                "handler_shutdown_timeout",
                format!(
                    "must be 1 ms to 1 hour, not {:?}",
                    self.handler_shutdown_timeout
                ),
            ));
        }
        self.client.retry.validate()
    }
}

/// Where one enqueued event goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnqueueOptions {
    /// The partition, by id. Default: none.
    pub partition_id: Option<String>,
    /// The partition key (at most 128 characters; empty means none). Default: none.
    pub partition_key: Option<String>,
}

impl EnqueueOptions {
    /// To this partition.
    pub fn with_partition_id(mut self, id: impl Into<String>) -> Self {
        self.partition_id = Some(id.into());
        self
    }

    /// With this partition key.
    pub fn with_partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let o = BufferedProducerOptions::default();
        assert!(o.validate().is_ok());
        assert_eq!(o.max_wait_time, Some(Duration::from_millis(250)));
        assert_eq!(o.max_buffered_events_per_partition, 2500);
        assert_eq!(o.max_concurrent_sends_per_partition, 1);
        assert_eq!(o.handler_shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn each_bad_value_is_named() {
        let cases: Vec<(BufferedProducerOptions, &str)> = vec![
            (
                BufferedProducerOptions::default().with_max_wait_time(Some(Duration::ZERO)),
                "max_wait_time",
            ),
            (
                BufferedProducerOptions::default().with_max_buffered_events_per_partition(0),
                "max_buffered_events_per_partition",
            ),
            (
                BufferedProducerOptions::default().with_max_buffered_bytes(10),
                "max_buffered_bytes",
            ),
            (
                BufferedProducerOptions::default().with_max_concurrent_sends(0),
                "max_concurrent_sends",
            ),
            (
                BufferedProducerOptions::default().with_max_concurrent_sends_per_partition(101),
                "max_concurrent_sends_per_partition",
            ),
            (
                BufferedProducerOptions::default().with_partition_refresh_interval(Duration::ZERO),
                "partition_refresh_interval",
            ),
            (
                BufferedProducerOptions::default()
                    .with_retry_options(RetryOptions::default().with_max_retries(1000)),
                "max_retries",
            ),
            (
                BufferedProducerOptions::default().with_handler_shutdown_timeout(Duration::ZERO),
                "handler_shutdown_timeout",
            ),
            (
                BufferedProducerOptions::default()
                    .with_handler_shutdown_timeout(Duration::from_secs(3601)),
                "handler_shutdown_timeout",
            ),
        ];
        for (options, field) in cases {
            let err = options.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
        assert!(BufferedProducerOptions::default()
            .with_max_wait_time(None)
            .validate()
            .is_ok());
    }
}
