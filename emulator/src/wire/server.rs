//! The accept loop, and the life of each connection and session: TLS and SASL, the open, then
//! every attach handed to the link dispatcher.

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

/// Serves connections until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    ns: Arc<Namespace>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_tcp(stream, peer, ns.clone(), tls.clone(), shutdown.clone()));
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

async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    ns: Arc<Namespace>,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let cut = CutSwitch::default();
    // A second handle on the socket lets the "drop" fault end it while fe2o3 owns the stream.
    let raw = stream_clone(&stream);
    let result = match tls {
        Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
            Ok(Ok(stream)) => {
                let io = WireStream::new(stream, cut.clone()).recording_open(open_sink(&ns));
                serve_connection(io, ns, cut, raw, shutdown).await
            }
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Err(_) => Err("TLS handshake timed out".to_string()),
        },
        None => {
            let io = WireStream::new(stream, cut.clone()).recording_open(open_sink(&ns));
            serve_connection(io, ns, cut, raw, shutdown).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Where a connection's `open` goes: the namespace, which keeps what every client announced.
fn open_sink(ns: &Arc<Namespace>) -> super::client_open::OpenSink {
    let ns = Arc::downgrade(ns);
    Arc::new(move |open| {
        if let Some(ns) = ns.upgrade() {
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
