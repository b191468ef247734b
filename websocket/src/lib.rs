//! AMQP 1.0 over WebSockets as Azure Event Hubs speaks it.
//!
//! The service accepts AMQP on `wss://<namespace>:443/$servicebus/websocket` with the
//! WebSocket subprotocol `AMQPWSB10`: after the HTTP upgrade, the AMQP connection's bytes
//! travel in binary messages. This crate has the two handshakes ([`connect`] for a client,
//! [`accept`] for a server) and [`WebSocketBytes`], which turns the message stream back into a
//! byte stream (`tokio::io::AsyncRead` + `AsyncWrite`) for an AMQP stack to run over.
//!
//! TLS and proxies are the caller's: both handshakes take whatever stream the caller opened
//! (TCP, a TLS session, a proxy tunnel).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
//! let url = eventhubs_websocket::url(false, "127.0.0.1", Some(8080));
//! let bytes = eventhubs_websocket::connect(tcp, &url).await?;
//! // `bytes` is an AsyncRead + AsyncWrite: open the AMQP connection over it.
//! # drop(bytes);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod handshake;
mod stream;

pub use handshake::{accept, connect, url, HandshakeError};
pub use stream::WebSocketBytes;

/// The WebSocket subprotocol of AMQP 1.0 (`Sec-WebSocket-Protocol`).
pub const SUBPROTOCOL: &str = "AMQPWSB10";

/// The path Event Hubs serves AMQP over WebSockets on.
pub const PATH: &str = "/$servicebus/websocket";

/// The port of AMQP over WebSockets with TLS (`wss`).
pub const SECURE_PORT: u16 = 443;

/// The port of AMQP over WebSockets without TLS (`ws`, development emulators only).
pub const PLAIN_PORT: u16 = 80;
