//! # eventhubs-buffered
//!
//! A buffered producer for Azure Event Hubs: enqueue events one at a time from many tasks; the
//! client batches them per partition, sends over one AMQP 1.0 connection, reports every batch to
//! your handlers and applies back pressure.
//!
//! This release ships the workspace and its local broker,
//! [`eventhubs-emulator`](https://crates.io/crates/eventhubs-emulator), which every test, example
//! and benchmark of the producer runs against. The connection layer and the buffered producer
//! follow in the next releases (see CHANGELOG.md).
#![deny(missing_docs)]
