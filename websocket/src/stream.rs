//! A byte stream carried in WebSocket binary messages.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Written bytes are sent as one message at the next flush, or once this many are waiting:
/// an AMQP frame is written in pieces (header, performative, payload), and a message per piece
/// would cost a WebSocket header and a mask pass each.
const MESSAGE_TARGET: usize = 64 * 1024;

/// A WebSocket connection read and written as a byte stream.
///
/// Reading yields the payloads of the binary messages received, in order (pings and pongs
/// are answered and skipped; a close ends the stream; a text message is an error, AMQP sends
/// none). Writing collects bytes and sends them as one binary message at each flush.
#[derive(Debug)]
pub struct WebSocketBytes<S> {
    socket: WebSocketStream<S>,
    /// What is left of the last message received.
    incoming: Bytes,
    /// Bytes written since the last message sent.
    outgoing: Vec<u8>,
    /// The peer closed (or the connection ended): reads return end of stream.
    read_closed: bool,
}

impl<S> WebSocketBytes<S> {
    /// Wraps an open WebSocket connection.
    pub fn new(socket: WebSocketStream<S>) -> Self {
        Self {
            socket,
            incoming: Bytes::new(),
            outgoing: Vec::new(),
            read_closed: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketBytes<S> {
    /// Hands the bytes written so far to the WebSocket as one binary message.
    fn poll_send_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.outgoing.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let mut socket = Pin::new(&mut self.socket);
        ready!(socket.as_mut().poll_ready(cx)).map_err(into_io)?;
        let payload = Bytes::from(std::mem::take(&mut self.outgoing));
        socket
            .start_send(Message::Binary(payload))
            .map_err(into_io)?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WebSocketBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.incoming.is_empty() {
                let n = this.incoming.len().min(buf.remaining());
                buf.put_slice(&this.incoming[..n]);
                this.incoming.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                Some(Ok(Message::Binary(payload))) => this.incoming = payload,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message on an AMQP WebSocket (AMQP travels in binary messages)",
                    )))
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(WsError::ConnectionClosed)) => {
                    this.read_closed = true;
                }
                Some(Err(e)) => return Poll::Ready(Err(into_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WebSocketBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() >= MESSAGE_TARGET {
            ready!(this.poll_send_written(cx))?;
        }
        this.outgoing.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_written(cx))?;
        Pin::new(&mut this.socket).poll_flush(cx).map_err(into_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_written(cx))?;
        match ready!(Pin::new(&mut this.socket).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(into_io(e))),
        }
    }
}

/// The I/O error inside, or the WebSocket error as one.
fn into_io(error: WsError) -> io::Error {
    match error {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the WebSocket connection is closed",
        ),
        other => io::Error::other(other),
    }
}
