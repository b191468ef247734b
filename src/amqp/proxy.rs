//! An HTTP proxy between the client and the service: the options (an address, optional basic
//! authentication, hosts that bypass it; from `HTTPS_PROXY` / `NO_PROXY` when the application
//! asks) and the tunnel through it (`CONNECT host:port`), over which TLS and AMQP then run as
//! they would over a direct connection.

use std::fmt;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind, Result};

/// The longest proxy answer read before giving up on it (the status line and headers).
const MAX_ANSWER: usize = 16 * 1024;

/// An HTTP proxy to reach the service through, with `CONNECT`
/// ([`ProducerClientOptions::with_proxy`](crate::ProducerClientOptions::with_proxy)).
///
/// `Debug` and every error name the proxy's host and port, never its credentials.
///
/// ```
/// use eventhubs_buffered::ProxyOptions;
///
/// let proxy = ProxyOptions::new("http://proxy.internal:3128")?
///     .with_basic_auth("svc-ingest", "s3cret")
///     .with_no_proxy("localhost, .internal.example");
/// assert!(!format!("{proxy:?}").contains("s3cret"));
/// # Ok::<(), eventhubs_buffered::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyOptions {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    no_proxy: Vec<String>,
}

impl fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

impl ProxyOptions {
    /// A proxy at `url`: `http://host:port`, `host:port` or `http://user:password@host:port`
    /// (percent-encoded credentials). Without a port, 80.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] naming what is wrong (never the credentials): another
    /// scheme than `http`, no host, a port that is not 1 to 65535.
    pub fn new(url: &str) -> Result<Self> {
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(invalid(format!(
                    "the proxy URL's scheme is '{scheme}'; only http:// proxies (which tunnel with CONNECT) are supported"
                )))
            }
            None => url,
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((userinfo, address)) => (Some(userinfo), address),
            None => (None, authority),
        };
        let (host, port) = split_host_port(address).ok_or_else(|| {
            invalid(format!(
                "the proxy address '{address}' is not host[:port] with a port of 1 to 65535"
            ))
        })?;
        let mut options = Self {
            host,
            port,
            credentials: None,
            no_proxy: Vec::new(),
        };
        if let Some(userinfo) = credentials {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(text)
                    .decode_utf8()
                    .map(|t| t.into_owned())
                    .map_err(|_| {
                        invalid(
                            "the proxy URL's credentials are not valid percent-encoded UTF-8"
                                .to_string(),
                        )
                    })
            };
            options.credentials = Some((decode(user)?, decode(password)?));
        }
        Ok(options)
    }

    /// The proxy the environment names, when the application opts in to it: `HTTPS_PROXY`
    /// (or `https_proxy`, then `ALL_PROXY` / `all_proxy`), with the hosts of `NO_PROXY` (or
    /// `no_proxy`) bypassing it. `Ok(None)` when none is set or it is empty.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), for a malformed variable (named in the error).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_variables(|name| std::env::var(name).ok())
    }

    fn from_variables(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let first = |names: &[&'static str]| -> Option<(&'static str, String)> {
            names.iter().find_map(|name| {
                lookup(name)
                    .filter(|value| !value.trim().is_empty())
                    .map(|value| (*name, value))
            })
        };
        let Some((name, url)) = first(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
        else {
            return Ok(None);
        };
        let proxy = Self::new(&url).map_err(|e| invalid(format!("{name}: {}", e.message())))?;
        Ok(Some(match first(&["NO_PROXY", "no_proxy"]) {
            Some((_, list)) => proxy.with_no_proxy(&list),
            None => proxy,
        }))
    }

    /// Authenticates to the proxy with HTTP basic authentication.
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Hosts reached directly, comma-separated as `NO_PROXY` writes them: a name matches
    /// itself and its subdomains (`example.com` and `.example.com` both match
    /// `ns.example.com`), an IP address itself, and `*` every host.
    pub fn with_no_proxy(mut self, hosts: &str) -> Self {
        self.no_proxy = hosts
            .split(',')
            .map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        self
    }

    /// The proxy's host and port.
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// Whether a connection to `host` goes through the proxy.
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        !self.no_proxy.iter().any(|entry| {
            entry == "*"
                || host == *entry
                || host
                    .strip_suffix(entry.as_str())
                    .is_some_and(|prefix| prefix.ends_with('.'))
        })
    }
}

/// `host[:port]` or `[v6]:port`; the port defaults to 80.
fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = match address.strip_prefix('[') {
        Some(bracketed) => {
            let (host, rest) = bracketed.split_once(']')?;
            (host, rest.strip_prefix(':'))
        }
        None => match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().ok().filter(|p| *p > 0)?,
        None => 80,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Opens a tunnel to `host:port` through `proxy`: a TCP connection to the proxy on which
/// `CONNECT` succeeded, ready for TLS or AMQP.
pub(crate) async fn tunnel(proxy: &ProxyOptions, host: &str, port: u16) -> Result<TcpStream> {
    let (proxy_host, proxy_port) = proxy.address();
    let mut stream = TcpStream::connect((proxy_host, proxy_port))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::ConnectionFailed,
                format!("could not connect to the HTTP proxy {proxy_host}:{proxy_port}"),
            )
            .with_source(e)
        })?;
    let _ = stream.set_nodelay(true);
    let target = match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    };
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, password)) = &proxy.credentials {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
    }
    request.push_str("\r\n");
    let lost = |e: std::io::Error| {
        Error::new(
            ErrorKind::ConnectionFailed,
            format!(
                "the HTTP proxy {proxy_host}:{proxy_port} closed the tunnel request to {target}"
            ),
        )
        .with_source(e)
    };
    stream.write_all(request.as_bytes()).await.map_err(lost)?;
    let status = read_answer_status(&mut stream).await.map_err(lost)?;
    match status {
        Some(200..=299) => Ok(stream),
        // 407 is the standard answer; some proxies (tinyproxy) answer CONNECT with 401.
        Some(code @ (401 | 407)) => Err(Error::new(
            ErrorKind::Unauthorized,
            format!(
                "the HTTP proxy {proxy_host}:{proxy_port} refused the proxy credentials (status {code}){}",
                if proxy.credentials.is_some() { "" } else { "; none were given (ProxyOptions::with_basic_auth)" }
            ),
        )),
        Some(code) => Err(Error::new(
            ErrorKind::ConnectionFailed,
            format!("the HTTP proxy {proxy_host}:{proxy_port} refused the tunnel to {target} with status {code}"),
        )),
        None => Err(Error::new(
            ErrorKind::ConnectionFailed,
            format!("the HTTP proxy {proxy_host}:{proxy_port} answered CONNECT with something that is not HTTP"),
        )),
    }
}

/// Reads the proxy's answer up to its blank line (not one byte further: what follows is the
/// tunnel) and returns its status code, or None when it is not an HTTP status line.
async fn read_answer_status(stream: &mut TcpStream) -> std::io::Result<Option<u16>> {
    let mut answer = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= MAX_ANSWER {
            return Ok(None);
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        answer.push(byte[0]);
    }
    Ok(status_code(&answer))
}

/// The status code of an HTTP answer (`HTTP/1.x 200 ...`).
fn status_code(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_address_and_credentials_without_showing_them() {
        let proxy = ProxyOptions::new("http://us%40er:p%3Ass@proxy.example:3128/").unwrap();
        assert_eq!(proxy.address(), ("proxy.example", 3128));
        assert_eq!(
            proxy.credentials,
            Some(("us@er".to_string(), "p:ss".to_string()))
        );
        let shown = format!("{proxy:?}");
        assert!(
            !shown.contains("p:ss") && !shown.contains("us@er"),
            "{shown}"
        );
        assert_eq!(ProxyOptions::new("proxy").unwrap().address(), ("proxy", 80));
        assert_eq!(
            ProxyOptions::new("[::1]:8888").unwrap().address(),
            ("::1", 8888)
        );
        for bad in [
            "https://proxy:3128",
            "http://:3128",
            "proxy:0",
            "proxy:x",
            "socks5://p:1",
        ] {
            let error = ProxyOptions::new(bad).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
        let error = ProxyOptions::new("http://user:secret@:3128").unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn no_proxy_matches_hosts_and_their_subdomains() {
        let proxy = ProxyOptions::new("proxy:1")
            .unwrap()
            .with_no_proxy(" localhost, .internal.example ,10.0.0.7,::1");
        for direct in [
            "localhost",
            "ns.internal.example",
            "internal.example",
            "10.0.0.7",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(!proxy.applies_to(direct), "{direct}");
        }
        for proxied in [
            "ns.servicebus.windows.net",
            "notinternal.example",
            "10.0.0.70",
        ] {
            assert!(proxy.applies_to(proxied), "{proxied}");
        }
        assert!(!proxy.with_no_proxy("*").applies_to("anything"));
    }

    #[test]
    fn the_environment_is_read_in_the_usual_order() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(ProxyOptions::from_variables(vars(&[])).unwrap(), None);
        let proxy = ProxyOptions::from_variables(vars(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:2"),
            ("no_proxy", "localhost"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(proxy.address(), ("upper", 2));
        assert!(!proxy.applies_to("localhost"));
        let error = ProxyOptions::from_variables(vars(&[("HTTPS_PROXY", "ftp://x")])).unwrap_err();
        assert!(error.to_string().contains("HTTPS_PROXY"), "{error}");
        assert_eq!(
            ProxyOptions::from_variables(vars(&[("HTTPS_PROXY", " ")])).unwrap(),
            None
        );
    }

    #[test]
    fn status_lines_are_read() {
        assert_eq!(
            status_code(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some(200)
        );
        assert_eq!(
            status_code(b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n"),
            Some(407)
        );
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
    }
}
