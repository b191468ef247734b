//! # eventhubs-buffered
//!
//! A buffered producer for Azure Event Hubs: enqueue events one at a time from many tasks; the
//! client batches them per partition, sends over one AMQP 1.0 connection, reports every batch to
//! your handlers and applies back pressure.
//!
//! [`BufferedProducerClient`] is the main type: register a failure handler (and, if you like, a
//! success handler), enqueue events from any number of tasks, flush before state transitions and
//! close at shutdown. Every enqueued event ends in exactly one handler call. With
//! [`BufferedProducerOptions::enable_idempotent_retries`] retries never store an event twice.
//! [`ProducerClient`], the layer below, sends batches you build yourself. Tests, examples and
//! benchmarks run against `eventhubs-emulator`, a local Event Hubs-compatible broker in this
//! workspace.
//!
//! ```no_run
//! # async fn demo() -> eventhubs_buffered::Result<()> {
//! use eventhubs_buffered::{BufferedProducerClient, EnqueueOptions, EventData};
//!
//! let producer = BufferedProducerClient::from_connection_string(
//!     &std::env::var("EVENTHUBS_CONNECTION_STRING").unwrap_or_default(),
//!     None,
//! )
//! .on_send_failed(|context| async move {
//!     eprintln!("{} events not published: {}", context.events.len(), context.error);
//! })
//! .build()?;
//! producer
//!     .enqueue_event(EventData::from("hello"), EnqueueOptions::default().with_partition_key("device-7"))
//!     .await?;
//! producer.flush().await?;
//! producer.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # The outcome of one event
//!
//! Handlers hear of every batch. When a caller needs the fate of *its* event (a request
//! handler that answers its own client once the event is stored, a pipeline that checkpoints),
//! [`enqueue_event_with_outcome`](BufferedProducerClient::enqueue_event_with_outcome) returns a
//! [`PendingOutcome`] to await: the partition (and, with idempotent retries, the sequence
//! number) it was published under, or the error its batch failed with. Outcomes of a
//! partition resolve in send order, so "everything up to line N is published" is a loop over
//! them:
//!
//! ```no_run
//! # async fn demo(producer: eventhubs_buffered::BufferedProducerClient, lines: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::VecDeque;
//! use eventhubs_buffered::{EnqueueOptions, EventData};
//!
//! let mut in_flight = VecDeque::new();
//! let mut checkpoint = 0; // every line before this one is published
//! for (number, line) in lines.into_iter().enumerate() {
//!     let outcome = producer
//!         .enqueue_event_with_outcome(EventData::from(line), EnqueueOptions::default())
//!         .await?;
//!     in_flight.push_back((number, outcome));
//!     // Advance over the front while its outcome is known (no waiting here).
//!     while let Some((number, outcome)) = in_flight.front_mut() {
//!         match futures_util::FutureExt::now_or_never(&mut *outcome) {
//!             Some(Ok(_published)) => checkpoint = *number + 1,
//!             Some(Err(error)) => return Err(error.into()),
//!             None => break,
//!         }
//!         in_flight.pop_front();
//!     }
//! }
//! for (number, outcome) in in_flight {
//!     outcome.await?;
//!     checkpoint = number + 1;
//! }
//! println!("published up to line {checkpoint}");
//! # Ok(())
//! # }
//! ```
//!
//! # Ordering
//!
//! - **What is ordered.** Events of one partition are published in the order they were
//!   enqueued (by one task; enqueues racing from several tasks have no order between them).
//!   Events of one partition key go to one partition (the service's hash, or your
//!   [`Partitioner`]), so a key's events are ordered. Automatically routed events have no
//!   order. Handler calls and outcomes of a partition come in send order.
//! - **Retries.** With the default one send in flight per partition, a batch is retried
//!   before the next batch of its partition goes, so retries do not reorder. With
//!   [`max_concurrent_sends_per_partition`](BufferedProducerOptions::max_concurrent_sends_per_partition)
//!   above 1, a retried batch can land after a later one.
//! - **Duplicates without idempotent retries.** A try whose acknowledgement was lost (a
//!   timeout, a lost connection, a detached link) may have been stored; the retry stores it
//!   again. A batch that fails for good after such a try may have been published although it
//!   is reported failed: its error says so ([`Error::may_have_been_published`]), so that a
//!   handler does not blindly send it again.
//! - **With idempotent retries**
//!   ([`enable_idempotent_retries`](BufferedProducerOptions::enable_idempotent_retries)),
//!   every event carries a sequence number the service deduplicates on: retries never store
//!   an event twice, and a batch that fails for good is settled with the service first
//!   (reported published if it was stored, [`Error::confirmed_not_published`] if not). When
//!   the settling itself cannot reach the service within the retry policy's bound, the batch
//!   is reported as "may have been published".
//! - **Gaps after a failure.** When a batch fails for good, later events of its partition are
//!   still sent, so a consumer sees a gap. The ordering guard
//!   ([`pause_partition_on_failure`](BufferedProducerOptions::pause_partition_on_failure))
//!   pauses the partition instead, until you resume it.
//!
//! Idempotent retries are not the default, by evidence: the service grants the capability per
//! link and not in every region and cloud, Microsoft documents it as costing throughput and
//! ships it opt-in in every SDK, and it forbids more than one send in flight per partition;
//! the ambiguity it removes is typed on every error without it. Turn it on where duplicates
//! matter more than those costs. Without the service's grant, an idempotent partition's sends
//! fail with a [`ErrorKind::ServiceError`] that says so, rather than silently publishing
//! without deduplication.
//!
//! # Shutting down
//!
//! Call [`close`](BufferedProducerClient::close) (bounded by the retry policy and
//! [`handler_shutdown_timeout`](BufferedProducerOptions::handler_shutdown_timeout); under your
//! own deadline, race it with `tokio::time::timeout` and fall back to
//! [`close_abandoning`](BufferedProducerClient::close_abandoning), which reports every event not
//! yet published). Dropping the last handle without closing closes on a multi-thread runtime
//! (blocking the dropping thread until done) and in the background elsewhere; what a runtime
//! shutdown cuts off is logged at error level with its count.
//!
//! # Metrics and tracing
//!
//! [`metrics`](BufferedProducerClient::metrics) returns a [`ProducerMetrics`] snapshot, per
//! partition and in total: events enqueued, published, failed (by kind) and abandoned, what is
//! buffered, retries and reconnects, and distributions of batch sizes, send durations and
//! enqueue-to-publish latency. Every batch send runs in a `tracing` span (`send`, with the
//! partition, the event count and, on failure, `error.type`), as do `flush` and `close`. The
//! `opentelemetry` feature adds OpenTelemetry instruments and spans named as OpenTelemetry's
//! messaging conventions name them, and, when asked, puts the enqueuing span's trace context
//! on each event (`OpenTelemetryOptions`, set with `BufferedProducerOptions::with_opentelemetry`).
//!
//! # Networks
//!
//! The connection is AMQP over TLS on port 5671 by default. Where only HTTPS gets out, set
//! [`TransportType::AmqpWebSockets`] with
//! [`ProducerClientOptions::with_transport`]: the same AMQP connection inside a WebSocket on
//! port 443 (the default feature `websockets`). Either goes through an HTTP proxy
//! ([`ProducerClientOptions::with_proxy`]) or to a custom endpoint.
//!
//! ```no_run
//! use eventhubs_buffered::{BufferedProducerClient, BufferedProducerOptions, ProducerClientOptions, TransportType};
//! # fn build(connection_string: &str) -> eventhubs_buffered::Result<()> {
//! let client = ProducerClientOptions::default().with_transport(TransportType::AmqpWebSockets);
//! let producer = BufferedProducerClient::from_connection_string(connection_string, None)
//!     .options(BufferedProducerOptions::default().with_client_options(client))
//!     .on_send_failed(|context| async move { eprintln!("{}", context.error) })
//!     .build()?;
//! # drop(producer);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod amqp;
pub mod auth;
mod batch;
mod buffered;
mod connection_string;
mod error;
mod event;
mod idempotence;
mod producer;
mod properties;
mod retry;
mod telemetry;

pub use amqp::config::TransportType;
pub use amqp::proxy::ProxyOptions;
pub use batch::{
    BatchTarget, CreateBatchOptions, EventDataBatch, TryAddError, MAX_PARTITION_KEY_LENGTH,
};
pub use buffered::{
    BufferedProducerBuilder, BufferedProducerClient, BufferedProducerHandler,
    BufferedProducerOptions, EnqueueError, EnqueueOptions, EnqueueStreamError, EventOutcome,
    Partitioner, PendingOutcome, PublishedEvent, ReportedEvent, RequeueError, Routing,
    SendFailedContext, SendSucceededContext, ServicePartitioner, DEFAULT_HANDLER_SHUTDOWN_TIMEOUT,
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_BUFFERED_EVENTS_PER_PARTITION,
    DEFAULT_MAX_CONCURRENT_SENDS, DEFAULT_MAX_CONCURRENT_SENDS_PER_PARTITION,
    DEFAULT_MAX_WAIT_TIME, DEFAULT_PARTITION_REFRESH_INTERVAL, MAX_PARKED,
};
pub use connection_string::{ConnectionString, Endpoint};
pub use error::{Error, ErrorKind, Result};
pub use event::{EventData, PropertyValue};
pub use idempotence::PublishedSequenceNumbers;
pub use producer::{ProducerClient, ProducerClientOptions, SendEventOptions};
pub use properties::{EventHubProperties, PartitionProperties};
pub use retry::{RetryMode, RetryOptions};
#[cfg(feature = "opentelemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
pub use telemetry::OpenTelemetryOptions;
pub use telemetry::{Distribution, PartitionMetrics, ProducerMetrics};
