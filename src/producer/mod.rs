//! [`ProducerClient`]: batches in, deliveries out. The layer the buffered producer stands on.
//!
//! - `mod.rs`: the client, its construction and accessors, management reads, close;
//! - `options.rs`: its options and those of a send;
//! - `links.rs`: the sending link of each entity path, attached on first use and forgotten
//!   when a failure broke it;
//! - `send.rs`: batches and sends under the retry policy;
//! - `idempotent.rs`: sends of an idempotent producer, and settling a batch that failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use tokio::sync::Mutex;

use crate::amqp::config::ConnectionConfig;
use crate::amqp::connection::{AmqpConnection, CLOSE_GRACE};
use crate::amqp::errors::Failure;
use crate::amqp::sender::AmqpSender;
use crate::amqp::tls::{certificates_from_pem, TlsSettings};
use crate::auth::sas::DEFAULT_TOKEN_VALIDITY;
use crate::auth::{Credential, SasCredential, SharedAccessKey};
use crate::connection_string::ConnectionString;
use crate::error::{Error, ErrorKind, Result};
use crate::idempotence::PartitionPublishing;
use crate::properties::{EventHubProperties, PartitionProperties};
use crate::retry::{RetryOptions, RetryPolicy};

mod idempotent;
mod links;
mod options;
mod send;

use self::options::{idle_timeout, parse_custom_endpoint};
pub use self::options::{ProducerClientOptions, SendEventOptions};

struct Inner {
    connection: Arc<AmqpConnection>,
    eventhub: String,
    identifier: String,
    retry: RetryPolicy,
    senders: Mutex<HashMap<String, Arc<AmqpSender>>>,
    /// Whether partition links are idempotent producers.
    idempotent_partitions: bool,
    /// The idempotent publishing state of each partition link, by path.
    publishing: std::sync::Mutex<HashMap<String, PartitionPublishing>>,
}

/// Sends batches of events to one event hub over one AMQP connection.
///
/// Cheap to clone: clones share the connection and links. The connection opens on first use
/// and reopens after a loss; links are attached per partition on first use.
///
/// ```no_run
/// # async fn demo() -> eventhubs_buffered::Result<()> {
/// use eventhubs_buffered::{CreateBatchOptions, EventData, ProducerClient, ProducerClientOptions};
///
/// let producer = ProducerClient::from_connection_string(
///     "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=...",
///     Some("telemetry"),
///     ProducerClientOptions::default(),
/// )?;
/// let mut batch = producer.create_batch(CreateBatchOptions::default()).await?;
/// batch.try_add(EventData::from("hello")).map_err(|e| e.to_error())?;
/// producer.send_batch(batch).await?;
/// producer.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ProducerClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProducerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerClient")
            .field("namespace", &self.fully_qualified_namespace())
            .field("eventhub", &self.inner.eventhub)
            .field("identifier", &self.inner.identifier)
            .finish()
    }
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl ProducerClient {
    /// Times the connection was opened again after the first.
    pub(crate) fn reconnects(&self) -> u64 {
        self.inner.connection.reconnects()
    }

    /// A client for the event hub named by the connection string's `EntityPath` or by
    /// `eventhub` (both given and different: an error). Does not connect yet.
    pub fn from_connection_string(
        connection_string: &str,
        eventhub: Option<&str>,
        options: ProducerClientOptions,
    ) -> Result<Self> {
        let parsed = ConnectionString::parse(connection_string)?;
        parsed.warn_about_oddities();
        let eventhub = parsed.resolve_eventhub_name(eventhub)?;
        let credential = match (parsed.shared_access_key_name(), parsed.shared_access_key(), parsed.shared_access_signature()) {
            (Some(name), Some(key), _) => Credential::Key(SharedAccessKey::new(name, key)?),
            (_, _, Some(signature)) => Credential::Signature(SasCredential::new(signature)?),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidConnectionString,
                    "the connection string has no credential (SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature)",
                ))
            }
        };
        let endpoint = parsed.endpoint();
        let use_tls = !parsed.use_development_emulator();
        Self::build(
            endpoint.host(),
            endpoint.port(),
            use_tls,
            eventhub,
            credential,
            options,
        )
    }

    /// A client for `eventhub` in the namespace `fully_qualified_namespace`
    /// (e.g. `example.servicebus.windows.net`), authenticated by an Entra ID credential
    /// (`azure_identity` or any [`TokenCredential`]). Uses TLS, on port 5671 (443 over
    /// WebSockets).
    pub fn new(
        fully_qualified_namespace: &str,
        eventhub: &str,
        credential: Arc<dyn TokenCredential>,
        options: ProducerClientOptions,
    ) -> Result<Self> {
        Self::for_namespace(
            fully_qualified_namespace,
            eventhub,
            Credential::Identity(credential),
            options,
        )
    }

    /// A client authenticated by a shared access key. Uses TLS, on port 5671 (443 over
    /// WebSockets).
    pub fn with_shared_access_key(
        fully_qualified_namespace: &str,
        eventhub: &str,
        key: SharedAccessKey,
        options: ProducerClientOptions,
    ) -> Result<Self> {
        Self::for_namespace(
            fully_qualified_namespace,
            eventhub,
            Credential::Key(key),
            options,
        )
    }

    /// A client authenticated by a shared access signature the application can replace before
    /// it expires ([`SasCredential::update`]). Uses TLS, on port 5671 (443 over WebSockets).
    pub fn with_sas_credential(
        fully_qualified_namespace: &str,
        eventhub: &str,
        credential: SasCredential,
        options: ProducerClientOptions,
    ) -> Result<Self> {
        Self::for_namespace(
            fully_qualified_namespace,
            eventhub,
            Credential::Signature(credential),
            options,
        )
    }

    /// A client for a namespace reached by its name, with TLS on the transport's port.
    fn for_namespace(
        fully_qualified_namespace: &str,
        eventhub: &str,
        credential: Credential,
        options: ProducerClientOptions,
    ) -> Result<Self> {
        Self::build(
            fully_qualified_namespace,
            None,
            true,
            eventhub.to_string(),
            credential,
            options,
        )
    }

    /// `port`: the one the endpoint names, else the transport's own (5671 or 443 with TLS).
    fn build(
        namespace: &str,
        port: Option<u16>,
        use_tls: bool,
        eventhub: String,
        credential: Credential,
        options: ProducerClientOptions,
    ) -> Result<Self> {
        options.retry.validate()?;
        options.transport.check_available()?;
        let port = port.unwrap_or_else(|| options.transport.default_port(use_tls));
        if namespace.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the namespace is empty",
            ));
        }
        if eventhub.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the event hub name is empty",
            ));
        }
        let token_validity = options.token_validity.unwrap_or(DEFAULT_TOKEN_VALIDITY);
        if token_validity < Duration::from_secs(2) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "token_validity must be at least 2 seconds",
            ));
        }
        let (connect_host, connect_port) = match &options.custom_endpoint {
            Some(endpoint) => parse_custom_endpoint(endpoint, port)?,
            None => (namespace.to_string(), port),
        };
        let tls = if use_tls {
            let mut roots = Vec::new();
            for pem in &options.trusted_root_certificates_pem {
                roots.extend(certificates_from_pem(pem)?);
            }
            Some(TlsSettings::new(&roots)?)
        } else {
            None
        };
        let identifier = options
            .identifier
            .clone()
            .unwrap_or_else(|| format!("producer-{}", random_suffix()));
        let config = ConnectionConfig {
            fully_qualified_namespace: namespace.to_string(),
            connect_host,
            connect_port,
            tls,
            transport: options.transport,
            container_id: identifier.clone(),
            proxy: options.proxy.clone(),
            token_validity,
            idle_timeout: idle_timeout(&options.retry),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                connection: AmqpConnection::new(config, credential),
                eventhub,
                identifier,
                retry: RetryPolicy::new(options.retry),
                senders: Mutex::new(HashMap::new()),
                idempotent_partitions: options.idempotent_partitions,
                publishing: std::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The namespace's host name.
    pub fn fully_qualified_namespace(&self) -> &str {
        &self.inner.connection.config().fully_qualified_namespace
    }

    /// The event hub's name.
    pub fn eventhub_name(&self) -> &str {
        &self.inner.eventhub
    }

    /// This client's identifier.
    pub fn identifier(&self) -> &str {
        &self.inner.identifier
    }

    /// Whether partition links attach as idempotent producers.
    pub(crate) fn idempotent_partitions(&self) -> bool {
        self.inner.idempotent_partitions
    }

    /// The retry options in force.
    pub fn retry_options(&self) -> &RetryOptions {
        self.inner.retry.options()
    }

    /// Runs a connection-level operation under the retry policy, reconnecting after losses.
    async fn with_retries<T, F, Fut>(&self, operation: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        self.inner
            .retry
            .run(operation, |_| {
                let attempt = call();
                async move { attempt.await.map_err(|failure| failure.error) }
            })
            .await
    }

    /// The event hub's properties.
    pub async fn eventhub_properties(&self) -> Result<EventHubProperties> {
        let hub = self.inner.eventhub.clone();
        self.with_retries("eventhub properties", || {
            self.inner.connection.eventhub_properties(&hub)
        })
        .await
    }

    /// The event hub's partition ids, in the service's order.
    pub async fn partition_ids(&self) -> Result<Vec<String>> {
        Ok(self.eventhub_properties().await?.partition_ids)
    }

    /// One partition's properties.
    pub async fn partition_properties(&self, partition_id: &str) -> Result<PartitionProperties> {
        let hub = self.inner.eventhub.clone();
        self.with_retries("partition properties", || {
            self.inner
                .connection
                .partition_properties(&hub, partition_id)
        })
        .await
    }

    /// Closes the links and the connection. Operations after it fail with
    /// [`ErrorKind::Closed`]. Waits for the service's answers at most the try timeout, and
    /// never more than 5 s, however many links there are: a service that stopped answering
    /// cannot hold it up longer.
    pub async fn close(&self) {
        let senders: Vec<_> = self
            .inner
            .senders
            .lock()
            .await
            .drain()
            .map(|(_, s)| s)
            .collect();
        // One bound for the whole close, links closed together: a service that stopped
        // answering must not hold close up once per link.
        let grace = CLOSE_GRACE.min(self.inner.retry.options().try_timeout);
        let deadline = tokio::time::Instant::now() + grace;
        let links = futures_util::future::join_all(
            senders
                .into_iter()
                .filter_map(|sender| Arc::try_unwrap(sender).ok())
                .map(AmqpSender::close),
        );
        let _ = tokio::time::timeout_at(deadline, links).await;
        self.inner.connection.close(deadline).await;
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.connection.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn construction_checks_its_input() {
        let err = ProducerClient::from_connection_string(
            "Endpoint=sb://h/;SharedAccessKeyName=k;SharedAccessKey=v",
            None,
            Default::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let client = ProducerClient::from_connection_string(
            "Endpoint=sb://h/;SharedAccessKeyName=k;SharedAccessKey=secret-value;EntityPath=hub",
            None,
            Default::default(),
        )
        .unwrap();
        assert_eq!(client.eventhub_name(), "hub");
        assert_eq!(client.fully_qualified_namespace(), "h");
        assert!(!format!("{client:?}").contains("secret-value"));
        let bad_retry = ProducerClientOptions::default()
            .with_retry_options(RetryOptions::default().with_max_retries(1000));
        assert!(ProducerClient::from_connection_string(
            "Endpoint=sb://h/;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=hub",
            None,
            bad_retry
        )
        .is_err());
    }
}
