//! [`ProducerClient`]: batches in, deliveries out. The layer the buffered producer stands on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use tokio::sync::Mutex;

use crate::amqp::connection::{AmqpConnection, ConnectionConfig, SenderProperties, CLOSE_GRACE};
use crate::amqp::errors::{Broken, Failure};
use crate::amqp::message::{stamp_publishing, NotStampable};
use crate::amqp::sender::{AmqpSender, Payload};
use crate::amqp::tls::{certificates_from_pem, TlsSettings};
use crate::auth::sas::DEFAULT_TOKEN_VALIDITY;
use crate::auth::{Credential, SharedAccessKey, SharedAccessSignature};
use crate::batch::{batch_target, BatchTarget, CreateBatchOptions, EventDataBatch};
use crate::connection_string::ConnectionString;
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;
use crate::idempotence::{
    PartitionPublishing, PublishedSequenceNumbers, PublishingGrant, Settled, Stamp,
};
use crate::properties::{EventHubProperties, PartitionProperties};
use crate::retry::{RetryOptions, RetryPolicy};

/// The AMQPS port.
const AMQPS_PORT: u16 = 5671;
/// The plain AMQP port (development emulator).
const AMQP_PORT: u16 = 5672;
/// Used when a link announces no max-message-size (the service always does).
const FALLBACK_MAX_MESSAGE_SIZE: u64 = 1024 * 1024;
/// The smallest batch worth making: an envelope and one tiny event.
const MIN_BATCH_SIZE: u64 = 24;

/// How long the service may stay silent on a connection before it is taken as dead: the try
/// timeout (a try on a silent connection could not succeed anyway), at least 1 s, at most
/// 60 s. The service sends heartbeats at half of it, so only a dead connection is that silent.
fn idle_timeout(retry: &RetryOptions) -> Duration {
    retry
        .try_timeout
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Options for [`ProducerClient`].
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

    /// Sets the validity of signed SAS tokens (at least 2 seconds).
    pub fn with_token_validity(mut self, validity: Duration) -> Self {
        self.token_validity = Some(validity);
        self
    }
}

/// Options for [`ProducerClient::send_events`].
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

/// Host and port of a custom endpoint: `host:port`, `host`, or a URL.
fn parse_custom_endpoint(endpoint: &str, default_port: u16) -> Result<(String, u16)> {
    let without_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = without_scheme.split('/').next().unwrap_or_default();
    let invalid = || {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("the custom endpoint '{endpoint}' is not host[:port] or a URL"),
        )
    };
    if authority.is_empty() {
        return Err(invalid());
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            Ok((host.to_string(), port.parse().map_err(|_| invalid())?))
        }
        Some(_) => Err(invalid()),
        None => Ok((authority.to_string(), default_port)),
    }
}

impl ProducerClient {
    /// A client for the event hub named by the connection string's `EntityPath` or by
    /// `eventhub` (both given and different: an error). Does not connect yet.
    pub fn from_connection_string(
        connection_string: &str,
        eventhub: Option<&str>,
        options: ProducerClientOptions,
    ) -> Result<Self> {
        let parsed = ConnectionString::parse(connection_string)?;
        let eventhub = parsed.resolve_eventhub_name(eventhub)?;
        let credential = match (parsed.shared_access_key_name(), parsed.shared_access_key(), parsed.shared_access_signature()) {
            (Some(name), Some(key), _) => Credential::Key(SharedAccessKey::new(name, key)?),
            (_, _, Some(signature)) => Credential::Signature(SharedAccessSignature::parse(signature)?),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidConnectionString,
                    "the connection string has no credential (SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature)",
                ))
            }
        };
        let endpoint = parsed.endpoint();
        let use_tls = !parsed.use_development_emulator();
        let default_port = if use_tls { AMQPS_PORT } else { AMQP_PORT };
        let port = endpoint.port().unwrap_or(default_port);
        Self::build(
            endpoint.host(),
            port,
            use_tls,
            eventhub,
            credential,
            options,
        )
    }

    /// A client for `eventhub` in the namespace `fully_qualified_namespace`
    /// (e.g. `example.servicebus.windows.net`), authenticated by an Entra ID credential
    /// (`azure_identity` or any [`TokenCredential`]). Uses TLS on port 5671.
    pub fn new(
        fully_qualified_namespace: &str,
        eventhub: &str,
        credential: Arc<dyn TokenCredential>,
        options: ProducerClientOptions,
    ) -> Result<Self> {
        Self::build(
            fully_qualified_namespace,
            AMQPS_PORT,
            true,
            eventhub.to_string(),
            Credential::Identity(credential),
            options,
        )
    }

    /// A client authenticated by a shared access key. Uses TLS on port 5671.
    pub fn with_shared_access_key(
        fully_qualified_namespace: &str,
        eventhub: &str,
        key: SharedAccessKey,
        options: ProducerClientOptions,
    ) -> Result<Self> {
        Self::build(
            fully_qualified_namespace,
            AMQPS_PORT,
            true,
            eventhub.to_string(),
            Credential::Key(key),
            options,
        )
    }

    fn build(
        namespace: &str,
        port: u16,
        use_tls: bool,
        eventhub: String,
        credential: Credential,
        options: ProducerClientOptions,
    ) -> Result<Self> {
        options.retry.validate()?;
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
            container_id: identifier.clone(),
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

    fn path_for(&self, target: &BatchTarget) -> String {
        match target {
            BatchTarget::Partition(id) => format!("{}/Partitions/{id}", self.inner.eventhub),
            _ => self.inner.eventhub.clone(),
        }
    }

    fn partition_path(&self, partition_id: &str) -> String {
        format!("{}/Partitions/{partition_id}", self.inner.eventhub)
    }

    /// Runs `f` on the idempotent publishing state of the link to `path`.
    fn publishing<T>(&self, path: &str, f: impl FnOnce(&mut PartitionPublishing) -> T) -> T {
        let mut states = self
            .inner
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(states.entry(path.to_string()).or_default())
    }

    /// How a link to `path` attaches: as an idempotent producer for partitions when asked.
    fn sender_properties(&self, path: &str) -> SenderProperties {
        let idempotent = self.inner.idempotent_partitions && path.contains("/Partitions/");
        SenderProperties {
            idempotent: idempotent.then(|| self.publishing(path, |p| p.request())),
        }
    }

    /// The link to `path`, attached now if there is none.
    async fn sender(&self, path: &str) -> std::result::Result<Arc<AmqpSender>, Failure> {
        let mut senders = self.inner.senders.lock().await;
        if let Some(sender) = senders.get(path) {
            return Ok(sender.clone());
        }
        let properties = self.sender_properties(path);
        let sender = Arc::new(
            self.inner
                .connection
                .attach_sender(path, properties)
                .await?,
        );
        if let Some(grant) = sender.publishing_grant() {
            self.publishing(path, |p| p.granted(grant));
        }
        senders.insert(path.to_string(), sender.clone());
        Ok(sender)
    }

    /// Drops the link to `path`, so the next use attaches a new one.
    async fn detach(&self, path: &str) {
        let removed = self.inner.senders.lock().await.remove(path);
        if let Some(sender) = removed.and_then(|s| Arc::try_unwrap(s).ok()) {
            // Closing tells the service the link is gone; a dead peer must not hold us up.
            let _ = tokio::time::timeout(Duration::from_secs(5), sender.close()).await;
        }
    }

    /// Forgets what a failure broke, so the next try rebuilds it.
    async fn forget(&self, path: &str, sender: &Arc<AmqpSender>, broken: Broken) {
        match broken {
            Broken::Nothing => {}
            Broken::Link => {
                let mut senders = self.inner.senders.lock().await;
                if senders.get(path).is_some_and(|s| Arc::ptr_eq(s, sender)) {
                    senders.remove(path);
                }
            }
            Broken::Connection => {
                self.inner
                    .senders
                    .lock()
                    .await
                    .retain(|_, s| s.generation() != sender.generation());
                self.inner.connection.invalidate(sender.generation()).await;
            }
        }
    }

    /// The max-message-size of the link to `path`, attaching it if needed.
    pub(crate) async fn max_message_size(&self, path: &str) -> Result<u64> {
        let sender = self.with_retries("attach", || self.sender(path)).await?;
        Ok(sender
            .max_message_size()
            .unwrap_or(FALLBACK_MAX_MESSAGE_SIZE))
    }

    /// A new, empty batch. Attaches the link for its target to learn the service's limit.
    pub async fn create_batch(&self, options: CreateBatchOptions) -> Result<EventDataBatch> {
        let target = options.target()?;
        let link_max = self.max_message_size(&self.path_for(&target)).await?;
        let max = match options.max_size_in_bytes {
            Some(requested) if requested > link_max => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                    "max_size_in_bytes {requested} is above the link's limit of {link_max} bytes"
                ),
                ))
            }
            Some(requested) if requested < MIN_BATCH_SIZE => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                    "max_size_in_bytes {requested} is below the minimum of {MIN_BATCH_SIZE} bytes"
                ),
                ))
            }
            Some(requested) => requested,
            None => link_max,
        };
        Ok(EventDataBatch::new(
            target,
            usize::try_from(max).unwrap_or(usize::MAX),
        ))
    }

    /// Sends a batch; returns once the service accepted it, or with the error that ended the
    /// retries. An empty batch is sent as nothing.
    pub async fn send_batch(&self, batch: EventDataBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (target, encoded, _events) = batch.into_parts();
        self.send_encoded(&target, encoded).await
    }

    /// Sends pre-encoded events as one delivery to `target`.
    pub(crate) async fn send_encoded(
        &self,
        target: &BatchTarget,
        encoded: Vec<Vec<u8>>,
    ) -> Result<()> {
        let key = match target {
            BatchTarget::PartitionKey(key) => Some(key.as_str()),
            _ => None,
        };
        let payload = Payload::batch(key, encoded);
        self.send_payload(&self.path_for(target), &payload)
            .await
            .map_err(|error| match error.kind() {
                // The delivery may have reached the service before its outcome was lost.
                ErrorKind::Timeout | ErrorKind::ConnectionLost | ErrorKind::LinkDetached
                    if !error.message().contains("may or may not") =>
                {
                    error.with_context("; the batch may or may not have been published")
                }
                _ => error,
            })
    }

    /// Sends events encoded for an idempotent producer (see [`encode_batch_event`]) to a
    /// partition: stamps them with the next sequence numbers, sends under the retry policy
    /// with the same numbers on every try, and settles a final failure with the service (see
    /// [`crate::idempotence`]). One send per partition at a time.
    ///
    /// [`encode_batch_event`]: crate::amqp::message::encode_batch_event
    pub(crate) async fn send_idempotent(
        &self,
        partition_id: &str,
        mut encoded: Vec<Vec<u8>>,
    ) -> Result<PublishedSequenceNumbers> {
        let path = self.partition_path(partition_id);
        let _turn = PublishingTurn::take(self, &path)?;
        let stamp = self.next_stamp(&path, encoded.len()).await?;
        for (event, sequence_number) in encoded.iter_mut().zip(stamp.published().iter()) {
            stamp_publishing(event, stamp.producer_id, stamp.epoch, sequence_number).map_err(
                |NotStampable| {
                    Error::new(
                        ErrorKind::InvalidArgument,
                        "an event was not encoded for idempotent publishing",
                    )
                },
            )?;
        }
        let payload = Payload::batch(None, encoded);
        match self.send_payload(&path, &payload).await {
            Ok(()) => {
                self.publishing(&path, |p| p.commit(&stamp));
                Ok(stamp.published())
            }
            Err(error) => self.settle_failure(&path, &stamp, error).await,
        }
    }

    /// The numbers for the next batch of `count` events to `path`, attaching the link first
    /// when no attach has said where the sequence stands.
    async fn next_stamp(&self, path: &str, count: usize) -> Result<Stamp> {
        for _ in 0..2 {
            self.with_retries("attach", || self.sender(path)).await?;
            if let Some(stamp) = self.publishing(path, |p| p.stamp(count)) {
                return Ok(stamp);
            }
            // A link attached before the state was fenced: attach again to learn it.
            self.detach(path).await;
        }
        Err(Error::new(
            ErrorKind::ServiceError,
            format!("the service did not say where the idempotent sequence of '{path}' stands"),
        ))
    }

    /// After a batch failed for good: fences it off by attaching with the next epoch and asks
    /// the service whether it stored the batch. Stored: a success after all. Not stored: its
    /// numbers go to the next batch. Unknown: the error says it may have been published.
    async fn settle_failure(
        &self,
        path: &str,
        stamp: &Stamp,
        error: Error,
    ) -> Result<PublishedSequenceNumbers> {
        const MAY_HAVE_BEEN_PUBLISHED: &str = "; it may or may not have been published";
        if error.kind() == ErrorKind::ProducerEpochStolen {
            // Another link holds the producer id with a newer epoch: start over with a new id.
            self.publishing(path, |p| p.forget_producer());
            self.detach(path).await;
            return Err(error);
        }
        self.publishing(path, |p| p.fence());
        self.detach(path).await;
        let grant = self.fencing_attach(path).await;
        match grant.map(|grant| PartitionPublishing::settle(stamp, &grant)) {
            Some(Settled::Published) => {
                tracing::info!(path, error = %error, "the service had stored the batch whose send failed");
                Ok(stamp.published())
            }
            Some(Settled::NotPublished) => {
                Err(error.with_context("; the service confirmed it was not published"))
            }
            Some(Settled::Unknown) | None => Err(error.with_context(MAY_HAVE_BEEN_PUBLISHED)),
        }
    }

    /// Attaches the link that fences a failed batch off and says whether the service stored it.
    /// Tried as often as the retry policy allows, and also after errors that end a send's
    /// retries at once (such as a refused token): while this attach fails, the outcome of the
    /// failed batch stays unknown, and a refusal can be short-lived.
    async fn fencing_attach(&self, path: &str) -> Option<PublishingGrant> {
        let options = self.inner.retry.options().clone();
        for try_number in 1..=options.max_retries.saturating_add(1) {
            let error = match tokio::time::timeout(options.try_timeout, self.sender(path)).await {
                Ok(Ok(sender)) => return sender.publishing_grant(),
                Ok(Err(failure)) => failure.error,
                Err(_) => Error::new(ErrorKind::Timeout, "the fencing attach timed out"),
            };
            if error.kind() == ErrorKind::Closed {
                return None;
            }
            tracing::warn!(path, try_number, error = %error, "could not yet ask the service whether a failed batch was stored");
            if try_number <= options.max_retries {
                tokio::time::sleep(self.inner.retry.delay_for(try_number, &error)).await;
            }
        }
        None
    }

    /// Sends a payload to `path` under the retry policy, rebuilding whatever a failed try broke.
    async fn send_payload(&self, path: &str, payload: &Payload) -> Result<()> {
        let span = tracing::info_span!(
            "send",
            eventhub = %self.inner.eventhub,
            path = %path,
            attempt = tracing::field::Empty
        );
        let send = self.inner.retry.run("send", |attempt| {
            tracing::Span::current().record("attempt", attempt);
            async move {
                let sender = self.sender(path).await.map_err(|f| f.error)?;
                let generation = sender.generation();
                let is_lost = || self.inner.connection.is_generation_lost(generation);
                match sender.send(payload, is_lost).await {
                    Ok(()) => Ok(()),
                    Err(failure) => {
                        self.forget(path, &sender, failure.broken).await;
                        Err(failure.error)
                    }
                }
            }
        });
        tracing::Instrument::instrument(send, span).await
    }

    /// Sends `events` as one batch (all or nothing). Events that do not fit in one batch are
    /// an error of kind [`ErrorKind::MessageTooLarge`]; nothing is sent then.
    pub async fn send_events(
        &self,
        events: Vec<EventData>,
        options: SendEventOptions,
    ) -> Result<()> {
        let target = batch_target(
            options.partition_id.as_deref(),
            options.partition_key.as_deref(),
        )?;
        let batch_options = CreateBatchOptions {
            partition_id: options.partition_id,
            partition_key: match target {
                BatchTarget::PartitionKey(ref key) => Some(key.clone()),
                _ => None,
            },
            max_size_in_bytes: None,
        };
        let mut batch = self.create_batch(batch_options).await?;
        let count = events.len();
        for event in events {
            if let Err(e) = batch.try_add(event) {
                if e.is_too_large_for_any_batch() {
                    return Err(e.to_error());
                }
                return Err(Error::new(
                    ErrorKind::MessageTooLarge,
                    format!(
                        "{count} events do not fit in one batch of {} bytes; send them in several batches",
                        batch.max_size_in_bytes()
                    ),
                ));
            }
        }
        self.send_batch(batch).await
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

/// The one send of an idempotent partition under way; ends it when dropped (also when the
/// send is cancelled).
struct PublishingTurn<'a> {
    producer: &'a ProducerClient,
    path: &'a str,
}

impl<'a> PublishingTurn<'a> {
    fn take(producer: &'a ProducerClient, path: &'a str) -> Result<Self> {
        if producer.publishing(path, |p| p.begin()) {
            Ok(Self { producer, path })
        } else {
            Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("another idempotent send to '{path}' is under way; idempotent publishing sends one batch per partition at a time"),
            ))
        }
    }
}

impl Drop for PublishingTurn<'_> {
    fn drop(&mut self) {
        self.producer.publishing(self.path, |p| p.end());
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
    }

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
