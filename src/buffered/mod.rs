//! [`BufferedProducerClient`]: enqueue events one at a time; the client batches them per
//! partition, sends, reports every batch to your handlers, and applies back pressure.
//!
//! The rooms, from the public handle down (a file uses only what stands below it):
//!
//! - `builder.rs`: constructors and the builder (options, handlers);
//! - `reporter.rs`: the task per partition that calls the handlers, in send order;
//! - `handler.rs`, `context.rs`: the handler trait and closures; what a handler is given;
//! - `enqueue/`: the enqueue pipeline, choose a partition -> reserve space -> push, and
//!   enqueueing a whole stream;
//! - `shutdown.rs`: flush, close, close_abandoning, drop;
//! - `metrics.rs`: the producer's metrics snapshot (recorded in `crate::telemetry`);
//! - `client.rs`: the handle every clone shares, its first connection and its accessors;
//! - `routing.rs`: which partition: explicit id, the service's key hash, round-robin;
//! - `partitions.rs`: the partition list, its refresh and the per-thread copy of it;
//! - `actor/`: one task per partition: builds batches, sends them, hands over outcomes;
//! - `capacity.rs`, `inbox.rs`: what an enqueue and an actor share: a partition's queue, its
//!   slots and byte credit, and waiting for space;
//! - `command.rs`, `report.rs`, `budget.rs`: the types both sides use: queued events and
//!   commands; outcomes for the reporter; units of buffer space and the byte budget;
//! - `options.rs`, `partitioner.rs`, `outcome.rs`: options with their defaults; mapping keys
//!   to partitions; an event's routing and outcome;
//! - `sender.rs`: the narrow interface to the connection layer (`ProducerClient` implements
//!   it), which keeps the logic testable.

mod actor;
mod budget;
mod builder;
mod capacity;
mod client;
mod command;
mod context;
mod enqueue;
mod handler;
mod inbox;
mod metrics;
mod options;
mod outcome;
mod partitioner;
mod partitions;
mod report;
mod reporter;
mod routing;
mod sender;
mod shutdown;

pub use self::builder::BufferedProducerBuilder;
pub use self::client::BufferedProducerClient;
pub use self::context::{RequeueError, SendFailedContext, SendSucceededContext};
pub use self::enqueue::{EnqueueError, EnqueueStreamError, MAX_PARKED};
pub use self::handler::BufferedProducerHandler;
pub use self::options::{
    BufferedProducerOptions, EnqueueOptions, DEFAULT_HANDLER_SHUTDOWN_TIMEOUT,
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_BUFFERED_EVENTS_PER_PARTITION,
    DEFAULT_MAX_CONCURRENT_SENDS, DEFAULT_MAX_CONCURRENT_SENDS_PER_PARTITION,
    DEFAULT_MAX_WAIT_TIME, DEFAULT_PARTITION_REFRESH_INTERVAL,
};
pub use self::outcome::{EventOutcome, PendingOutcome, PublishedEvent, ReportedEvent, Routing};
pub use self::partitioner::{Partitioner, ServicePartitioner};

#[cfg(test)]
mod tests;
