//! # eventhubs-emulator
//!
//! A local broker that speaks the Azure Event Hubs dialect of AMQP 1.0, for tests, examples and
//! benchmarks that cannot reach Azure. It runs in-process (like a mock cluster) or as a binary,
//! and Microsoft's own clients work against it.
//!
//! What it serves: SASL (MSSBCBS, PLAIN, ANONYMOUS, EXTERNAL), `$cbs` put-token with SAS validation,
//! `$management` READ of hub and partition properties, producer links to a hub or a partition
//! (plain and batched messages, partition-key routing with the service's hash, idempotent
//! producers), consumer links with start-position filters and epochs, optional TLS, and fault
//! injection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), eventhubs_emulator::EmulatorError> {
//! use eventhubs_emulator::{Emulator, FaultCondition, FaultScope};
//!
//! let emulator = Emulator::builder().hub("hub", 4).start().await?;
//! println!("{}", emulator.connection_string());
//! emulator.faults().reject_next(2, FaultCondition::ServerBusy, FaultScope::Any);
//! // ... publish with any Event Hubs client ...
//! let stored = emulator.events("hub", "0")?;
//! println!("{} events in partition 0", stored.len());
//! emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The rooms, from the public API down: `emulator.rs` (the in-process API), `wire/` (accept
// loop, TLS, SASL, framing), `links/` (attach dispatch, producer and consumer links, the
// request links of the services), `services/` (`$cbs`, `$management`), `entities/`
// (namespace, stored partitions, routing, idempotence); below them `faults.rs`,
// `connection.rs` (per-connection grants and reply routes), `message.rs`, `sas.rs`, and
// `config.rs` (Microsoft's Config.json).
pub mod config;
mod connection;
mod emulator;
mod entities;
mod error;
mod faults;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod links;
mod message;
pub mod sas;
mod services;
mod wire;

pub use entities::routing;
pub use links::filter;

pub use connection::ClientOpen;
pub use emulator::{
    Emulator, EmulatorBuilder, Faults, DEFAULT_HUB, DEFAULT_KEY, DEFAULT_KEY_NAME,
    DEFAULT_MAX_MESSAGE_SIZE,
};
pub use entities::namespace::Counters;
pub use entities::routing::{partition_index_for_key, partition_key_hash};
pub use entities::store::ReceivedEvent;
pub use error::EmulatorError;
pub use faults::{FaultCondition, FaultScope};
/// AMQP values, as found in stored events' properties.
pub use fe2o3_amqp_types::primitives::Value;
pub use message::BATCH_MESSAGE_FORMAT;
