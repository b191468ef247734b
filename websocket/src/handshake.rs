//! The HTTP upgrades: a client asking for `AMQPWSB10`, a server granting it only on the
//! Event Hubs path.

use std::fmt;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::stream::WebSocketBytes;
use crate::{PATH, PLAIN_PORT, SECURE_PORT, SUBPROTOCOL};

/// A WebSocket handshake that did not end in an AMQP WebSocket connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server answered the upgrade with this HTTP status instead of switching protocols.
    Refused {
        /// The HTTP status code.
        status: u16,
    },
    /// The server switched protocols without agreeing to `AMQPWSB10`.
    Subprotocol,
    /// The client asked for another path than `/$servicebus/websocket` (server side).
    WrongPath {
        /// The path the client asked for.
        path: String,
    },
    /// The client did not offer the `AMQPWSB10` subprotocol (server side).
    NoSubprotocolOffered,
    /// The URL given to [`connect`] is not a `ws://` or `wss://` URL.
    InvalidUrl(String),
    /// The connection failed or ended during the handshake.
    Io(io::Error),
    /// The peer broke the WebSocket handshake rules.
    Protocol(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { status } => write!(
                f,
                "the server refused the WebSocket upgrade with HTTP status {status}"
            ),
            Self::Subprotocol => write!(
                f,
                "the server accepted the WebSocket but not its {SUBPROTOCOL} subprotocol"
            ),
            Self::WrongPath { path } => write!(
                f,
                "the client asked for the WebSocket path '{path}', not '{PATH}'"
            ),
            Self::NoSubprotocolOffered => write!(
                f,
                "the client did not offer the {SUBPROTOCOL} WebSocket subprotocol"
            ),
            Self::InvalidUrl(reason) => write!(f, "invalid WebSocket URL: {reason}"),
            Self::Io(e) => write!(
                f,
                "the connection failed during the WebSocket handshake: {e}"
            ),
            Self::Protocol(reason) => write!(f, "WebSocket handshake failed: {reason}"),
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The URL of a namespace's AMQP WebSocket endpoint: `wss://host/$servicebus/websocket`
/// (`ws://` without TLS), with the port only when it is not the scheme's own (443 or 80). An
/// IPv6 host is written in brackets.
pub fn url(secure: bool, host: &str, port: Option<u16>) -> String {
    let (scheme, default_port) = if secure {
        ("wss", SECURE_PORT)
    } else {
        ("ws", PLAIN_PORT)
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match port {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}{PATH}"),
        _ => format!("{scheme}://{host}{PATH}"),
    }
}

/// Frames and messages as large as the service's: AMQP frames are at most a few hundred KiB.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// Upgrades `stream` (TCP, TLS or a proxy tunnel the caller opened) to an AMQP WebSocket:
/// a `GET` of `url` (see [`url`]) asking for `AMQPWSB10`, which the server must grant.
pub async fn connect<S>(stream: S, url: &str) -> Result<WebSocketBytes<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url
        .into_client_request()
        .map_err(|e| HandshakeError::InvalidUrl(format!("'{url}': {e}")))?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let (socket, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config()))
            .await
            .map_err(client_error)?;
    Ok(WebSocketBytes::new(socket))
}

fn client_error(error: WsError) -> HandshakeError {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match error {
        WsError::Http(response) => HandshakeError::Refused {
            status: response.status().as_u16(),
        },
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(_)) => {
            HandshakeError::Subprotocol
        }
        WsError::Io(e) => HandshakeError::Io(e),
        WsError::Url(e) => HandshakeError::InvalidUrl(e.to_string()),
        other => HandshakeError::Protocol(other.to_string()),
    }
}

/// Accepts a client's upgrade on `stream` if it asks for `/$servicebus/websocket` (with or
/// without a trailing slash) with the `AMQPWSB10` subprotocol; otherwise answers 404 (another
/// path) or 400 (no `AMQPWSB10`) and fails.
// tungstenite's callback type fixes the size of the refusal (an HTTP response).
#[allow(clippy::result_large_err)]
pub async fn accept<S>(stream: S) -> Result<WebSocketBytes<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut refusal = None;
    let check = |request: &Request, mut response: Response| match check_request(request) {
        Ok(()) => {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
            Ok(response)
        }
        Err(error) => {
            let answer = error_response(&error);
            refusal = Some(error);
            Err(answer)
        }
    };
    let accepted =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config())).await;
    match (accepted, refusal) {
        (Ok(socket), _) => Ok(WebSocketBytes::new(socket)),
        (Err(_), Some(refusal)) => Err(refusal),
        (Err(WsError::Io(e)), None) => Err(HandshakeError::Io(e)),
        (Err(other), None) => Err(HandshakeError::Protocol(other.to_string())),
    }
}

fn check_request(request: &Request) -> Result<(), HandshakeError> {
    let path = request.uri().path();
    // .NET asks for the path with a trailing slash, Python without: the service takes both.
    if path.strip_suffix('/').unwrap_or(path) != PATH {
        return Err(HandshakeError::WrongPath {
            path: path.to_string(),
        });
    }
    let offered = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if offered {
        Ok(())
    } else {
        Err(HandshakeError::NoSubprotocolOffered)
    }
}

fn error_response(error: &HandshakeError) -> ErrorResponse {
    let status = match error {
        HandshakeError::WrongPath { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = ErrorResponse::new(Some(error.to_string()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls_name_the_port_only_when_it_is_not_the_schemes() {
        assert_eq!(
            url(true, "ns.servicebus.windows.net", None),
            "wss://ns.servicebus.windows.net/$servicebus/websocket"
        );
        assert_eq!(
            url(true, "ns.example", Some(443)),
            "wss://ns.example/$servicebus/websocket"
        );
        assert_eq!(
            url(false, "127.0.0.1", Some(8080)),
            "ws://127.0.0.1:8080/$servicebus/websocket"
        );
        assert_eq!(
            url(false, "::1", Some(80)),
            "ws://[::1]/$servicebus/websocket"
        );
        assert_eq!(
            url(true, "[::1]", Some(9)),
            "wss://[::1]:9/$servicebus/websocket"
        );
    }

    #[tokio::test]
    async fn bytes_cross_in_both_directions_across_message_boundaries() {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move {
            let mut server = accept(server_io).await.expect("accepted");
            let mut received = vec![0u8; 200_000];
            server.read_exact(&mut received).await.expect("read");
            server.write_all(&received).await.expect("echo");
            server.flush().await.expect("flush");
            received
        });
        let mut client = connect(client_io, &url(false, "localhost", Some(1)))
            .await
            .expect("connected");
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for piece in sent.chunks(7_000) {
            client.write_all(piece).await.expect("write");
        }
        client.flush().await.expect("flush");
        let mut echoed = vec![0u8; sent.len()];
        client.read_exact(&mut echoed).await.expect("read the echo");
        assert_eq!(echoed, sent);
        assert_eq!(server.await.expect("server"), sent);
    }

    async fn refused(request: &str) -> (String, HandshakeError) {
        let (mut client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(accept(server_io));
        client_io
            .write_all(request.as_bytes())
            .await
            .expect("request written");
        let mut answer = vec![0u8; 1024];
        let n = client_io.read(&mut answer).await.expect("answer");
        let error = server.await.expect("server").expect_err("refused");
        (String::from_utf8_lossy(&answer[..n]).into_owned(), error)
    }

    fn upgrade(path: &str, protocol: Option<&str>) -> String {
        let protocol = protocol
            .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
            .unwrap_or_default();
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{protocol}\r\n"
        )
    }

    #[test]
    fn the_path_may_end_with_a_slash() {
        let request = |path: &str| {
            Request::builder()
                .uri(path)
                .header(header::SEC_WEBSOCKET_PROTOCOL, "other, AMQPWSB10")
                .body(())
                .expect("a request")
        };
        assert!(check_request(&request("/$servicebus/websocket")).is_ok());
        assert!(check_request(&request("/$servicebus/websocket/")).is_ok());
        assert!(check_request(&request("/$servicebus/websocket//")).is_err());
        assert!(check_request(&request("/$servicebus")).is_err());
    }

    #[tokio::test]
    async fn the_server_grants_only_the_amqp_path_and_subprotocol() {
        let (answer, error) = refused(&upgrade("/other", Some(SUBPROTOCOL))).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(
            matches!(&error, HandshakeError::WrongPath { path } if path == "/other"),
            "{error:?}"
        );
        let (answer, error) = refused(&upgrade(PATH, Some("amqp"))).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            matches!(error, HandshakeError::NoSubprotocolOffered),
            "{error:?}"
        );
        let (answer, error) = refused(&upgrade(PATH, None)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            matches!(error, HandshakeError::NoSubprotocolOffered),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_client_refuses_a_server_that_does_not_grant_the_subprotocol() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(tokio_tungstenite::accept_async(server_io));
        let error = connect(client_io, &url(false, "localhost", None))
            .await
            .expect_err("refused");
        assert!(matches!(error, HandshakeError::Subprotocol), "{error:?}");
        drop(server);
    }

    #[tokio::test]
    async fn a_client_reports_the_status_of_a_refused_upgrade() {
        let (client_io, mut server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut request = vec![0u8; 2048];
            let _ = server_io.read(&mut request).await;
            let _ = server_io
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await;
            server_io
        });
        let error = connect(client_io, &url(true, "localhost", None))
            .await
            .expect_err("refused");
        assert!(
            matches!(error, HandshakeError::Refused { status: 403 }),
            "{error:?}"
        );
        drop(server);
    }
}
