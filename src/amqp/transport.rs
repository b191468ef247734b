//! How the AMQP connection's bytes reach the service: TCP (through an HTTP proxy where one
//! applies), then TLS unless the endpoint is a development emulator, then, for the WebSocket
//! transport, an upgrade to `AMQPWSB10` on `/$servicebus/websocket`.

use std::fmt::Debug;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::config::{ConnectionConfig, TransportType};
use super::errors::{Broken, Failure};
use super::proxy;
use crate::error::{Error, ErrorKind};

/// What the AMQP connection runs over: any of the layerings above.
pub(crate) trait AmqpIo: AsyncRead + AsyncWrite + Debug + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Debug + Send + Unpin + 'static> AmqpIo for T {}

/// The stream the AMQP connection opens over.
pub(crate) type AmqpStream = Box<dyn AmqpIo>;

/// Connects to the configured endpoint and runs every layer below AMQP.
pub(crate) async fn open_stream(config: &ConnectionConfig) -> Result<AmqpStream, Failure> {
    let lost = |error: Error| Failure::new(error, Broken::Connection);
    let tcp = match config
        .proxy
        .as_ref()
        .filter(|p| p.applies_to(&config.connect_host))
    {
        Some(proxy) => proxy::tunnel(proxy, &config.connect_host, config.connect_port)
            .await
            .map_err(lost)?,
        None => connect_tcp(&config.connect_host, config.connect_port).await?,
    };
    let _ = tcp.set_nodelay(true);
    match &config.tls {
        Some(tls) => {
            let secured = tls
                .connect(&config.fully_qualified_namespace, tcp)
                .await
                .map_err(lost)?;
            framed(config, secured).await
        }
        None => framed(config, tcp).await,
    }
}

/// Adds the transport's framing (none, or the WebSocket upgrade) over `stream`.
async fn framed<S: AmqpIo>(config: &ConnectionConfig, stream: S) -> Result<AmqpStream, Failure> {
    match config.transport {
        TransportType::AmqpTcp => Ok(Box::new(stream)),
        TransportType::AmqpWebSockets => upgrade(config, stream).await,
    }
}

#[cfg(feature = "websockets")]
async fn upgrade<S: AmqpIo>(config: &ConnectionConfig, stream: S) -> Result<AmqpStream, Failure> {
    let url = eventhubs_websocket::url(
        config.tls.is_some(),
        &config.fully_qualified_namespace,
        Some(config.connect_port),
    );
    match eventhubs_websocket::connect(stream, &url).await {
        Ok(upgraded) => Ok(Box::new(upgraded)),
        Err(e) => Err(Failure::new(
            upgrade_error(&url, &config.connect_host, e),
            Broken::Connection,
        )),
    }
}

#[cfg(not(feature = "websockets"))]
async fn upgrade<S: AmqpIo>(_: &ConnectionConfig, _: S) -> Result<AmqpStream, Failure> {
    Err(Failure::new(
        TransportType::AmqpWebSockets
            .check_available()
            .err()
            .unwrap_or_else(|| Error::new(ErrorKind::InvalidArgument, "no WebSocket support")),
        Broken::Connection,
    ))
}

/// The error of a refused WebSocket upgrade, by what the answer means for a retry.
#[cfg(feature = "websockets")]
fn upgrade_error(url: &str, host: &str, error: eventhubs_websocket::HandshakeError) -> Error {
    use eventhubs_websocket::HandshakeError;
    let kind = match &error {
        HandshakeError::Refused {
            status: 401 | 403 | 407,
        } => ErrorKind::Unauthorized,
        HandshakeError::Refused { status: 404 } => ErrorKind::NotFound,
        _ => ErrorKind::ConnectionFailed,
    };
    Error::new(
        kind,
        format!("the AMQP WebSocket upgrade at {url} (connected to {host}) failed: {error}"),
    )
    .with_source(error)
}

async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, Failure> {
    let fail = |error: Error| Failure::new(error, Broken::Connection);
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| {
            fail(
                Error::new(
                    ErrorKind::HostNotFound,
                    format!("the host name '{host}' does not resolve (check the namespace or the endpoint)"),
                )
                .with_source(e),
            )
        })?
        .collect();
    let mut last_error = None;
    for address in &addresses {
        match TcpStream::connect(address).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last_error = Some(e),
        }
    }
    let error = Error::new(
        ErrorKind::ConnectionFailed,
        format!("could not connect to {host}:{port} (refused or unreachable; is the port right and the service up?)"),
    );
    Err(fail(match last_error {
        Some(e) => error.with_source(e),
        None => Error::new(
            ErrorKind::HostNotFound,
            format!("the host name '{host}' resolves to no address"),
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "websockets")]
    #[test]
    fn refused_upgrades_say_what_a_retry_can_change() {
        use eventhubs_websocket::HandshakeError;
        let url = "wss://ns.example/$servicebus/websocket";
        let kind = |error| upgrade_error(url, "ns.example", error).kind();
        assert_eq!(
            kind(HandshakeError::Refused { status: 403 }),
            ErrorKind::Unauthorized
        );
        assert_eq!(
            kind(HandshakeError::Refused { status: 404 }),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(HandshakeError::Refused { status: 503 }),
            ErrorKind::ConnectionFailed
        );
        assert_eq!(
            kind(HandshakeError::Subprotocol),
            ErrorKind::ConnectionFailed
        );
        let error = upgrade_error(url, "ns.example", HandshakeError::Refused { status: 503 });
        assert!(error.is_transient());
        assert!(error.to_string().contains(url), "{error}");
        assert!(error.to_string().contains("503"), "{error}");
    }
}
