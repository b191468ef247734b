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
#![deny(missing_docs)]

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
