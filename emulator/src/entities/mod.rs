//! What the emulator holds: the namespace with its hubs and settings (`namespace.rs`), each
//! partition's stored events (`store.rs`), how addresses and keys map to partitions
//! (`routing.rs`), and idempotent producers' state (`idempotence.rs`).

pub(crate) mod idempotence;
pub(crate) mod namespace;
pub mod routing;
pub(crate) mod store;
