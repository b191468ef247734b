//! The accept loops, and the life of each connection and session: TLS, the WebSocket upgrade
//! on a WebSocket listener, SASL, the open, then every attach handed to the link dispatcher.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{ConnectionAcceptor, ListenerConnectionHandle, SessionAcceptor};
use fe2o3_amqp::types::definitions::{Error as AmqpError, ErrorCondition};
use fe2o3_amqp::types::primitives::{OrderedMap, Symbol, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::framing::{CutSwitch, WireStream};
use super::sasl::EmulatorSasl;
use crate::connection::ConnectionState;
use crate::entities::namespace::{ConnectionOrder, Namespace};
use crate::links::{dispatch, LinkContext};

/// Frames larger than this are split; the Python client and .NET both handle 64 KiB.
const MAX_FRAME_SIZE: u32 = 65536;
const CHANNEL_MAX: u16 = 4999;
/// Links per session, as the service announces in its begin.
const HANDLE_MAX: u32 = 255;
/// A client that has not finished TLS, SASL and open by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

fn product_properties() -> OrderedMap<Symbol, Value> {
    let mut props = OrderedMap::new();
    props.insert(
        Symbol::from("product"),
        Value::String("eventhubs-emulator".into()),
    );
    props.insert(
        Symbol::from("version"),
        Value::String(env!("CARGO_PKG_VERSION").into()),
    );
    props
}

/// The segment size the emulator announces, as a peer across a real network would (Ethernet's
/// 1460). Over loopback the kernel would otherwise negotiate about 65,000, and Microsoft's
/// Python client, which reads its socket's TCP options back and sets them again, fails with
/// EINVAL on a maximum segment size above 32,767 whenever the handshake completed first.
const MAX_SEGMENT_SIZE: u32 = 1460;

/// Binds the listening socket (address reuse, as any server; the segment size above).
pub(crate) fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_tcp_mss(MAX_SEGMENT_SIZE)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// What a listener speaks once TCP (and TLS) is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// AMQP bytes straight on the stream (ports 5672 and 5671).
    Amqp,
    /// AMQP in WebSocket binary messages, after an upgrade on `/$servicebus/websocket` with
    /// the `AMQPWSB10` subprotocol (Event Hubs' port 443).
    WebSocket,
}

/// Serves connections until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    ns: Arc<Namespace>,
    tls: Option<TlsAcceptor>,
    framing: Framing,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let accepted = Accepted { ns: ns.clone(), framing, shutdown: shutdown.clone() };
                    tokio::spawn(serve_tcp(stream, peer, tls.clone(), accepted));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// What every accepted connection is served with.
struct Accepted {
    ns: Arc<Namespace>,
    framing: Framing,
    shutdown: watch::Receiver<bool>,
}

async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    accepted: Accepted,
) {
    let _ = stream.set_nodelay(true);
    // A second handle on the socket lets the "drop" fault end it while fe2o3 owns the stream.
    let raw = stream_clone(&stream);
    let result = match tls {
        Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
            Ok(Ok(stream)) => serve_framed(stream, raw, accepted).await,
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Err(_) => Err("TLS handshake timed out".to_string()),
        },
        None => serve_framed(stream, raw, accepted).await,
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Serves the AMQP connection on `stream`, first upgrading it to a WebSocket on a WebSocket
/// listener.
async fn serve_framed<S>(
    stream: S,
    raw: Option<socket2::Socket>,
    accepted: Accepted,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let Accepted {
        ns,
        framing,
        shutdown,
    } = accepted;
    let cut = CutSwitch::default();
    let sink = open_sink(&ns, framing);
    match framing {
        Framing::Amqp => {
            let io = WireStream::new(stream, cut.clone()).recording_open(sink);
            serve_connection(io, ns, cut, raw, shutdown).await
        }
        Framing::WebSocket => {
            let upgraded =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, eventhubs_websocket::accept(stream))
                    .await
                    .map_err(|_| "WebSocket handshake timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            let io = WireStream::new(upgraded, cut.clone()).recording_open(sink);
            serve_connection(io, ns, cut, raw, shutdown).await
        }
    }
}

/// Where a connection's `open` goes: the namespace, which keeps what every client announced.
fn open_sink(ns: &Arc<Namespace>, framing: Framing) -> super::client_open::OpenSink {
    let ns = Arc::downgrade(ns);
    Arc::new(move |mut open| {
        if let Some(ns) = ns.upgrade() {
            open.websocket = framing == Framing::WebSocket;
            ns.record_open(open);
        }
    })
}

fn stream_clone(stream: &TcpStream) -> Option<socket2::Socket> {
    socket2::SockRef::from(stream).try_clone().ok()
}

/// Serves one AMQP connection (SASL, open, sessions) over `io` until it ends or `shutdown`.
pub(crate) async fn serve_connection<S>(
    io: WireStream<S>,
    ns: Arc<Namespace>,
    cut: CutSwitch,
    raw: Option<socket2::Socket>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut acceptor = ConnectionAcceptor::builder()
        .container_id("eventhubs-emulator")
        .max_frame_size(MAX_FRAME_SIZE)
        .channel_max(CHANNEL_MAX)
        .properties(product_properties())
        .sasl_acceptor(EmulatorSasl);
    // fe2o3 announces this value and ends the connection when the client sends nothing (not
    // even an empty frame) for that long, as the service drops a silent client.
    let idle_ms = u32::try_from(ns.settings.idle_timeout.as_millis()).unwrap_or(u32::MAX);
    if idle_ms > 0 {
        acceptor = acceptor.idle_time_out(idle_ms);
    }
    let acceptor = acceptor.build();
    let mut connection = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io))
        .await
        .map_err(|_| "AMQP handshake timed out".to_string())?
        .map_err(|e| format!("AMQP open failed: {e}"))?;

    let id = ns.next_id();
    let mut orders = ns.register_connection(id);
    let ctx = LinkContext {
        ns: ns.clone(),
        conn: Arc::new(ConnectionState::default()),
    };
    let session_acceptor = SessionAcceptor::builder()
        .handle_max(HANDLE_MAX)
        .properties(product_properties())
        .build();

    let outcome = loop {
        tokio::select! {
            session = session_acceptor.accept(&mut connection) => match session {
                Ok(session) => { tokio::spawn(serve_session(session, ctx.clone())); }
                Err(e) => break Some(format!("session ended the connection: {e}")),
            },
            order = orders.recv() => match order {
                Some(ConnectionOrder::Close(condition)) => {
                    close_with(&mut connection, condition.symbol(), "Connection closed by the emulator (fault injection).").await;
                    break None;
                }
                Some(ConnectionOrder::Drop) | None => {
                    cut.cut();
                    if let Some(raw) = &raw {
                        let _ = raw.set_linger(Some(Duration::ZERO));
                        let _ = raw.shutdown(std::net::Shutdown::Both);
                    }
                    break None;
                }
            },
            _ = shutdown.changed() => {
                close_with(&mut connection, "amqp:connection:forced", "The emulator is shutting down.").await;
                break None;
            }
        }
    };
    ns.unregister_connection(id);
    let _ = connection.on_close().await;
    outcome.map_or(Ok(()), Err)
}

async fn close_with(connection: &mut ListenerConnectionHandle, condition: &str, description: &str) {
    let error = AmqpError::new(
        ErrorCondition::Custom(Symbol::from(condition)),
        Some(description.to_string()),
        None,
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), connection.close_with_error(error)).await;
}

async fn serve_session(mut session: fe2o3_amqp::acceptor::ListenerSessionHandle, ctx: LinkContext) {
    while let Some(attach) = session.next_incoming_attach().await {
        dispatch(&mut session, attach, &ctx).await;
    }
}
