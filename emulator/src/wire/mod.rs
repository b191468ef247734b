//! The wire: accepting TCP connections (`server.rs`), TLS with a certificate authority made at
//! start (`tls.rs`), SASL (`sasl.rs`), and the byte-level quirks other clients need
//! (`framing.rs`: performatives padded to their full field count, and a switch that cuts a
//! connection for fault injection), and reading what each client announces in its `open`
//! (`client_open.rs`).

mod client_open;
pub(crate) mod framing;
mod sasl;
pub(crate) mod server;
pub(crate) mod tls;
