//! Options of a [`ProducerClient`](super::ProducerClient) and of one send, and the custom
//! endpoint's address.

use std::time::Duration;

use crate::amqp::config::TransportType;
use crate::amqp::proxy::ProxyOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::retry::RetryOptions;

/// How long the service may stay silent on a connection before it is taken as dead: the try
/// timeout (a try on a silent connection could not succeed anyway), at least 1 s, at most
/// 60 s. The service sends heartbeats at half of it, so only a dead connection is that silent.
pub(super) fn idle_timeout(retry: &RetryOptions) -> Duration {
    retry
        .try_timeout
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Options for [`ProducerClient`](crate::ProducerClient).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ProducerClientOptions {
    /// How operations are retried. Default: [`RetryOptions::default`].
    pub retry: RetryOptions,
    /// A name for this client, used as the AMQP container id and in logs.
    /// Default: `producer-` and a random suffix.
    pub identifier: Option<String>,
    /// Connect here instead of the namespace's host (e.g. a proxy or a private endpoint), as
    /// `host:port` or `amqps://host:port`. Tokens and TLS still name the namespace.
    /// Default: none.
    pub custom_endpoint: Option<String>,
    /// Extra root certificates (PEM) to trust besides the web PKI roots. Default: none.
    pub trusted_root_certificates_pem: Vec<String>,
    /// Validity of the SAS tokens signed from a shared access key. Default: 1 hour.
    pub token_validity: Option<Duration>,
    /// An HTTP proxy to tunnel the connection through (`CONNECT`), for networks that only
    /// let traffic out through one; TLS still runs end to end with the service, and the
    /// certificate is checked against the namespace. The environment's `HTTPS_PROXY` and
    /// `NO_PROXY` apply only when the application passes [`ProxyOptions::from_env`].
    /// Default: none (a direct connection).
    pub proxy: Option<ProxyOptions>,
    /// AMQP over TCP (port 5671) or over WebSockets (port 443, for networks that only let
    /// HTTPS out; it works through [`proxy`](Self::proxy) too). Default:
    /// [`TransportType::AmqpTcp`].
    pub transport: TransportType,
    /// Partition links attach as idempotent producers (set by the buffered producer).
    pub(crate) idempotent_partitions: bool,
}

impl ProducerClientOptions {
    /// Sets the retry options.
    pub fn with_retry_options(mut self, retry: RetryOptions) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the identifier.
    pub fn with_identifier(mut self, identifier: impl Into<String>) -> Self {
        self.identifier = Some(identifier.into());
        self
    }

    /// Connects to this endpoint instead of the namespace's host.
    pub fn with_custom_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.custom_endpoint = Some(endpoint.into());
        self
    }

    /// Trusts an extra root certificate (PEM), for example a test server's own CA.
    pub fn with_trusted_root_certificate_pem(mut self, pem: impl Into<String>) -> Self {
        self.trusted_root_certificates_pem.push(pem.into());
        self
    }

    /// Connects through an HTTP proxy.
    pub fn with_proxy(mut self, proxy: ProxyOptions) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Sets the transport: AMQP over TCP or over WebSockets.
    pub fn with_transport(mut self, transport: TransportType) -> Self {
        self.transport = transport;
        self
    }

    /// Sets the validity of signed SAS tokens (at least 2 seconds).
    pub fn with_token_validity(mut self, validity: Duration) -> Self {
        self.token_validity = Some(validity);
        self
    }
}

/// Options for [`ProducerClient::send_events`](crate::ProducerClient::send_events).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendEventOptions {
    /// The partition to send to. Default: none (the service picks).
    pub partition_id: Option<String>,
    /// The partition key. Default: none. Not together with `partition_id`.
    pub partition_key: Option<String>,
}

impl SendEventOptions {
    /// Sends to this partition.
    pub fn with_partition_id(mut self, id: impl Into<String>) -> Self {
        self.partition_id = Some(id.into());
        self
    }

    /// Sends with this partition key.
    pub fn with_partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }
}

/// Host and port of a custom endpoint: `host:port`, `host`, an IPv6 literal (`[::1]:5672`,
/// `[::1]` or `::1`), or a URL with any of these as its authority. An IPv6 host comes back
/// without its brackets, as a socket address takes it.
pub(super) fn parse_custom_endpoint(endpoint: &str, default_port: u16) -> Result<(String, u16)> {
    let without_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = without_scheme.split('/').next().unwrap_or_default();
    let invalid = || {
        Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "the custom endpoint '{endpoint}' is not host[:port], [IPv6 address][:port] or a URL"
            ),
        )
    };
    let port_of = |text: &str| text.parse::<u16>().map_err(|_| invalid());
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, rest) = bracketed.split_once(']').ok_or_else(invalid)?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid());
        }
        let port = match rest {
            "" => default_port,
            _ => port_of(rest.strip_prefix(':').ok_or_else(invalid)?)?,
        };
        return Ok((host.to_string(), port));
    }
    if authority.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((authority.to_string(), default_port));
    }
    match authority.rsplit_once(':') {
        Some((host, _)) if host.is_empty() || host.contains(':') => Err(invalid()),
        Some((host, port)) => Ok((host.to_string(), port_of(port)?)),
        None if authority.is_empty() => Err(invalid()),
        None => Ok((authority.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_endpoints_parse() {
        assert_eq!(
            parse_custom_endpoint("proxy:1234", 5671).unwrap(),
            ("proxy".into(), 1234)
        );
        assert_eq!(
            parse_custom_endpoint("amqps://proxy.example/", 5671).unwrap(),
            ("proxy.example".into(), 5671)
        );
        assert_eq!(
            parse_custom_endpoint("amqp://h:99/x", 5671).unwrap(),
            ("h".into(), 99)
        );
        assert!(parse_custom_endpoint("", 5671).is_err());
        assert!(parse_custom_endpoint("h:notaport", 5671).is_err());
        assert!(parse_custom_endpoint(":80", 5671).is_err());
        assert!(parse_custom_endpoint("h:70000", 5671).is_err());
    }

    #[test]
    fn ipv6_literals_parse_with_and_without_brackets() {
        for (endpoint, expected) in [
            ("[::1]:5672", ("::1", 5672)),
            ("[::1]", ("::1", 5671)),
            ("::1", ("::1", 5671)),
            ("amqps://[2001:db8::7]:443/", ("2001:db8::7", 443)),
            ("[fe80::1%25eth0]:5671", ("", 0)),
        ] {
            match parse_custom_endpoint(endpoint, 5671) {
                Ok((host, port)) => assert_eq!((host.as_str(), port), expected, "{endpoint}"),
                Err(e) => {
                    assert_eq!(expected, ("", 0), "{endpoint}: {e}");
                    assert!(e.to_string().contains(endpoint), "{e}");
                }
            }
        }
        for bad in ["[::1", "[::1]x", "[::1]:", "[nothost]:80", "1::2:3:x:80"] {
            assert!(parse_custom_endpoint(bad, 5671).is_err(), "{bad}");
        }
    }
}
