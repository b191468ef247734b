//! # eventhubs-buffered
//!
//! A buffered producer for Azure Event Hubs: enqueue events one at a time from many tasks; the
//! client batches them per partition, sends over one AMQP 1.0 connection, reports every batch to
//! your handlers and applies back pressure.
//!
//! This release has the connection layer and [`ProducerClient`], which sends batches you build
//! yourself; the buffered producer is built on it. Tests, examples and benchmarks run against
//! [`eventhubs-emulator`](https://crates.io/crates/eventhubs-emulator), a local broker.
//!
//! ```no_run
//! # async fn demo() -> eventhubs_buffered::Result<()> {
//! use eventhubs_buffered::{EventData, ProducerClient, ProducerClientOptions, SendEventOptions};
//!
//! let producer = ProducerClient::from_connection_string(
//!     &std::env::var("EVENTHUBS_CONNECTION_STRING").unwrap_or_default(),
//!     None,
//!     ProducerClientOptions::default(),
//! )?;
//! let events = vec![EventData::from("first"), EventData::from("second")];
//! producer
//!     .send_events(events, SendEventOptions::default().with_partition_key("device-7"))
//!     .await?;
//! producer.close().await;
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
mod producer;
mod properties;
mod retry;

pub use batch::{
    BatchTarget, CreateBatchOptions, EventDataBatch, TryAddError, MAX_PARTITION_KEY_LENGTH,
};
pub use buffered::{
    BufferedProducerBuilder, BufferedProducerClient, BufferedProducerHandler,
    BufferedProducerOptions, EnqueueOptions, RequeueError, SendFailedContext, SendSucceededContext,
    TryEnqueueError, DEFAULT_HANDLER_SHUTDOWN_TIMEOUT, DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_BUFFERED_EVENTS_PER_PARTITION, DEFAULT_MAX_CONCURRENT_SENDS,
    DEFAULT_MAX_CONCURRENT_SENDS_PER_PARTITION, DEFAULT_MAX_WAIT_TIME,
    DEFAULT_PARTITION_REFRESH_INTERVAL,
};
pub use connection_string::{ConnectionString, Endpoint};
pub use error::{Error, ErrorKind, Result};
pub use event::{EventData, PropertyValue};
pub use producer::{ProducerClient, ProducerClientOptions, SendEventOptions};
pub use properties::{EventHubProperties, PartitionProperties};
pub use retry::{RetryMode, RetryOptions};
