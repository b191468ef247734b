//! Where and how a connection goes: the endpoint, TLS, the transport (AMQP on the stream or
//! in WebSocket messages), a proxy, and the timings the connection keeps.

use std::time::Duration;

use super::proxy::ProxyOptions;
use super::tls::TlsSettings;
use crate::error::{Error, ErrorKind};

/// How the client reaches Event Hubs.
///
/// Both carry the same AMQP 1.0 connection; they differ in the network path, not in what
/// the service does. Connection strings do not choose it: set it in
/// [`ProducerClientOptions::with_transport`](crate::ProducerClientOptions::with_transport).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportType {
    /// AMQP over TCP: TLS on port 5671, or plain AMQP on 5672 for a development emulator
    /// (`UseDevelopmentEmulator=true`). The default.
    #[default]
    AmqpTcp,
    /// AMQP over WebSockets: `wss://<namespace>/$servicebus/websocket` on port 443, the
    /// HTTPS port, for networks that let nothing else out; `ws://` on port 80 for a
    /// development emulator. A port named in the endpoint (connection string or custom
    /// endpoint) is used instead. The library's default feature `websockets` provides it;
    /// without that feature, clients set to it fail to build with `InvalidArgument`.
    AmqpWebSockets,
}

impl TransportType {
    /// The service's port for this transport, with or without TLS.
    pub(crate) fn default_port(self, tls: bool) -> u16 {
        match (self, tls) {
            (Self::AmqpTcp, true) => 5671,
            (Self::AmqpTcp, false) => 5672,
            (Self::AmqpWebSockets, true) => 443,
            (Self::AmqpWebSockets, false) => 80,
        }
    }

    /// Fails when this build cannot speak the transport.
    pub(crate) fn check_available(self) -> crate::Result<()> {
        if self == Self::AmqpWebSockets && !cfg!(feature = "websockets") {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the AmqpWebSockets transport needs the crate's `websockets` feature (on by default)",
            ));
        }
        Ok(())
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionConfig {
    /// The namespace's host name; audiences are built from it.
    pub fully_qualified_namespace: String,
    /// Where to open the TCP connection (a custom endpoint, or the namespace itself).
    pub connect_host: String,
    pub connect_port: u16,
    /// TLS settings; None for plain AMQP (the development emulator).
    pub tls: Option<TlsSettings>,
    /// AMQP straight on the stream, or in WebSocket messages.
    pub transport: TransportType,
    /// The AMQP container id (the client's identifier).
    pub container_id: String,
    /// An HTTP proxy to tunnel through, for the hosts it applies to.
    pub proxy: Option<ProxyOptions>,
    /// Validity of the SAS tokens this side signs.
    pub token_validity: Duration,
    /// How long the service may stay silent before the connection is taken as dead. The
    /// service is asked to send a heartbeat at least every half of it, so a live connection
    /// never stays silent that long; a dead one (black-holed, half-open) is then closed and
    /// replaced instead of being used forever.
    pub idle_timeout: Duration,
}

impl ConnectionConfig {
    /// The audience URL of an entity path (`hub`, `hub/Partitions/0`, ...); a namespace that
    /// is an IPv6 address is written in brackets, as URLs write it.
    pub(crate) fn audience(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "amqps" } else { "amqp" };
        let host = &self.fully_qualified_namespace;
        match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("{scheme}://[{host}]/{path}"),
            Err(_) => format!("{scheme}://{host}/{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_has_the_services_ports() {
        assert_eq!(TransportType::default(), TransportType::AmqpTcp);
        assert_eq!(TransportType::AmqpTcp.default_port(true), 5671);
        assert_eq!(TransportType::AmqpTcp.default_port(false), 5672);
        assert_eq!(TransportType::AmqpWebSockets.default_port(true), 443);
        assert_eq!(TransportType::AmqpWebSockets.default_port(false), 80);
    }
}
