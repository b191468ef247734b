//! The one AMQP connection of a client: opened on first use, with one session, `$cbs` and
//! `$management` links, tokens per audience renewed ahead of expiry, and reopened after a loss.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::Fields;
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Connection, Session};
use tokio::sync::{Mutex, MutexGuard, Notify};

use super::config::ConnectionConfig;
use super::errors::{from_attach_error, lost_during, Broken, Failure};
use super::message::{
    IDEMPOTENT_PRODUCER_CAPABILITY, PRODUCER_EPOCH, PRODUCER_ID, PRODUCER_SEQUENCE_NUMBER,
};
use super::request_response::RequestResponseLink;
use super::sender::AmqpSender;
use super::transport;
use super::{cbs, management};
use crate::auth::{renewal_delay, Credential, Token};
use crate::error::{Error, ErrorKind};
use crate::idempotence::{PublishingGrant, PublishingRequest};
use crate::properties::{EventHubProperties, PartitionProperties};

/// A token put on the connection, and when to renew it.
#[derive(Debug)]
struct Grant {
    token: Token,
    renew_at: tokio::time::Instant,
}

/// A live connection.
struct Live {
    generation: u64,
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    cbs: RequestResponseLink,
    management: Option<RequestResponseLink>,
    grants: HashMap<String, Grant>,
    links_made: u64,
}

/// The client's connection. Cheap to share (`Arc`); every operation takes the lock only for
/// as long as it talks to the connection itself, never while a delivery is in flight.
pub(crate) struct AmqpConnection {
    config: ConnectionConfig,
    credential: Credential,
    live: Mutex<Option<Live>>,
    generations: AtomicU64,
    closed: AtomicBool,
    /// Wakes the renewal task when a grant is added or the connection closes.
    renewals_changed: Arc<Notify>,
    renewal_started: std::sync::Once,
    /// This connection, for the renewal task (which must not keep it alive).
    this: Weak<AmqpConnection>,
}

impl std::fmt::Debug for AmqpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConnection")
            .field("namespace", &self.config.fully_qualified_namespace)
            .field("closed", &self.closed.load(Ordering::SeqCst))
            .finish()
    }
}

fn closed_error() -> Failure {
    Failure::new(
        Error::new(ErrorKind::Closed, "the client is closed"),
        Broken::Nothing,
    )
}

impl AmqpConnection {
    pub(crate) fn new(config: ConnectionConfig, credential: Credential) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            config,
            credential,
            live: Mutex::new(None),
            generations: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            renewals_changed: Arc::new(Notify::new()),
            renewal_started: std::sync::Once::new(),
            this: this.clone(),
        })
    }

    /// Starts the token renewal task, once, from inside the runtime (construction may happen
    /// outside one).
    fn start_renewals(&self) {
        self.renewal_started.call_once(|| {
            tokio::spawn(renew_tokens(
                self.this.clone(),
                self.renewals_changed.clone(),
            ));
        });
    }

    pub(crate) fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// `error` (a refusal the service answered with [`ErrorKind::Unauthorized`]) said in the
    /// credential's words when its shared access signature expired: the service only says
    /// the link's token expired, not when, nor what to do.
    pub(crate) fn explain_unauthorized(&self, error: Error) -> Error {
        match self.credential.expired() {
            Some(expired) if error.kind() == ErrorKind::Unauthorized => {
                let service_said = error.message().to_string();
                error.reworded(format!(
                    "{} (the service: {service_said})",
                    expired.message()
                ))
            }
            _ => error,
        }
    }

    /// Times a connection was opened after the first.
    pub(crate) fn reconnects(&self) -> u64 {
        self.generations.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// The live connection, opened if there is none or the last one was lost.
    async fn live(&self) -> Result<MutexGuard<'_, Option<Live>>, Failure> {
        if self.is_closed() {
            return Err(closed_error());
        }
        let mut guard = self.live.lock().await;
        let usable = guard
            .as_ref()
            .is_some_and(|live| !live.connection.is_closed());
        if !usable {
            if let Some(old) = guard.take() {
                close_live(old).await;
            }
            *guard = Some(self.open().await?);
            self.start_renewals();
        }
        Ok(guard)
    }

    async fn open(&self) -> Result<Live, Failure> {
        let config = &self.config;
        let stream = transport::open_stream(config).await?;
        let opened = Connection::builder()
            .container_id(config.container_id.clone())
            .hostname(config.fully_qualified_namespace.as_str())
            .sasl_profile(SaslProfile::Anonymous)
            .properties(client_properties())
            .max_frame_size(65536u32)
            .idle_time_out(u32::try_from(config.idle_timeout.as_millis()).unwrap_or(u32::MAX))
            .open_with_stream(stream)
            .await;
        let mut connection = opened.map_err(|e| {
            Failure::new(
                Error::new(
                    ErrorKind::ConnectionFailed,
                    format!("the AMQP connection did not open: {e}"),
                ),
                Broken::Connection,
            )
        })?;
        let mut session = Session::builder()
            .incoming_window(5000)
            .outgoing_window(5000)
            .begin(&mut connection)
            .await
            .map_err(|e| {
                Failure::new(
                    Error::new(
                        ErrorKind::ConnectionFailed,
                        format!("the AMQP session did not begin: {e}"),
                    ),
                    Broken::Connection,
                )
            })?;
        let cbs = unless_lost(
            &mut connection,
            "the $cbs attach",
            RequestResponseLink::attach(&mut session, "$cbs", &config.container_id),
        )
        .await?;
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!(namespace = %config.fully_qualified_namespace, generation, "connection opened");
        Ok(Live {
            generation,
            connection,
            session,
            cbs,
            management: None,
            grants: HashMap::new(),
            links_made: 0,
        })
    }

    /// Puts a token for `audience` unless a valid one is already on the connection.
    async fn authorize(&self, live: &mut Live, audience: &str) -> Result<Token, Failure> {
        if let Some(grant) = live.grants.get(audience) {
            if grant.token.expires_at > SystemTime::now() {
                return Ok(grant.token.clone());
            }
        }
        let token = self
            .credential
            .token(audience, self.config.token_validity)
            .await
            .map_err(|e| Failure::new(e, Broken::Nothing))?;
        unless_lost(
            &mut live.connection,
            "the $cbs put-token",
            cbs::put_token(&mut live.cbs, audience, &token),
        )
        .await?;
        let renew_at =
            tokio::time::Instant::now() + renewal_delay(SystemTime::now(), token.expires_at);
        live.grants.insert(
            audience.to_string(),
            Grant {
                token: token.clone(),
                renew_at,
            },
        );
        self.renewals_changed.notify_one();
        Ok(token)
    }

    /// Attaches a sending link to `path` (e.g. `hub/Partitions/0`), authorizing it first.
    pub(crate) async fn attach_sender(
        &self,
        path: &str,
        properties: SenderProperties,
    ) -> Result<AmqpSender, Failure> {
        let mut guard = self.live().await?;
        let live = guard.as_mut().ok_or_else(closed_error)?;
        let result = self.attach_on(live, path, properties).await;
        if let Err(failure) = &result {
            if failure.broken == Broken::Connection {
                if let Some(old) = guard.take() {
                    close_live(old).await;
                }
            }
        }
        result
    }

    async fn attach_on(
        &self,
        live: &mut Live,
        path: &str,
        properties: SenderProperties,
    ) -> Result<AmqpSender, Failure> {
        let audience = self.config.audience(path);
        self.authorize(live, &audience).await?;
        live.links_made += 1;
        let name = format!("{}-{}-{}", self.config.container_id, path, live.links_made);
        let mut builder = Sender::builder()
            .name(name)
            .source(self.config.container_id.as_str())
            .target(path);
        if let Some(request) = &properties.idempotent {
            builder = builder
                .add_desired_capabilities(Symbol::from(IDEMPOTENT_PRODUCER_CAPABILITY))
                .properties(publishing_request_fields(request));
        }
        let attach = async {
            builder
                .attach(&mut live.session)
                .await
                .map_err(|e| from_attach_error(&e))
        };
        let sender = unless_lost(&mut live.connection, "the link's attach", attach).await?;
        let grant = match properties.idempotent {
            Some(_) => Some(publishing_grant(&sender).ok_or_else(|| {
                Failure::new(
                    Error::new(
                        ErrorKind::ServiceError,
                        format!("the service did not grant idempotent publishing on '{path}' (no producer id, epoch and sequence number in its attach)"),
                    ),
                    Broken::Link,
                )
            })?),
            None => None,
        };
        Ok(AmqpSender::new(
            sender,
            live.generation,
            path.to_string(),
            grant,
        ))
    }

    /// Whether the connection of `generation` is gone (closed, or already replaced). Never
    /// waits: when the connection is busy it answers false and the caller asks again later.
    pub(crate) fn is_generation_lost(&self, generation: u64) -> bool {
        match self.live.try_lock() {
            Ok(guard) => match guard.as_ref() {
                Some(live) => live.generation != generation || live.connection.is_closed(),
                None => true,
            },
            Err(_) => false,
        }
    }

    /// Forgets the connection of `generation` (after a failure that broke it), so the next
    /// operation opens a new one.
    pub(crate) async fn invalidate(&self, generation: u64) {
        let mut guard = self.live.lock().await;
        if guard
            .as_ref()
            .is_some_and(|live| live.generation == generation)
        {
            if let Some(old) = guard.take() {
                close_live(old).await;
            }
        }
    }

    async fn with_management<T>(
        &self,
        hub: &str,
        call: impl for<'a> FnOnce(
            &'a mut RequestResponseLink,
            String,
        ) -> futures_util::future::BoxFuture<'a, Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let mut guard = self.live().await?;
        let live = guard.as_mut().ok_or_else(closed_error)?;
        let result = async {
            let token = self.authorize(live, &self.config.audience(hub)).await?;
            if live.management.is_none() {
                let attach = RequestResponseLink::attach(
                    &mut live.session,
                    "$management",
                    &self.config.container_id,
                );
                live.management = Some(
                    unless_lost(&mut live.connection, "the $management attach", attach).await?,
                );
            }
            let link = live.management.as_mut().ok_or_else(closed_error)?;
            unless_lost(
                &mut live.connection,
                "a $management request",
                call(link, token.value),
            )
            .await
        }
        .await;
        if let Err(failure) = &result {
            match failure.broken {
                Broken::Connection => {
                    if let Some(old) = guard.take() {
                        close_live(old).await;
                    }
                }
                Broken::Link => {
                    if let Some(live) = guard.as_mut() {
                        live.management = None;
                    }
                }
                Broken::Nothing => {}
            }
        }
        result
    }

    pub(crate) async fn eventhub_properties(
        &self,
        hub: &str,
    ) -> Result<EventHubProperties, Failure> {
        let hub_name = hub.to_string();
        self.with_management(hub, move |link, token| {
            Box::pin(async move { management::eventhub_properties(link, &hub_name, &token).await })
        })
        .await
    }

    pub(crate) async fn partition_properties(
        &self,
        hub: &str,
        partition: &str,
    ) -> Result<PartitionProperties, Failure> {
        let hub_name = hub.to_string();
        let partition = partition.to_string();
        self.with_management(hub, move |link, token| {
            Box::pin(async move {
                management::partition_properties(link, &hub_name, &partition, &token).await
            })
        })
        .await
    }

    /// Renews every grant whose time has come; returns when the next one is due.
    async fn renew_due(&self) -> Option<tokio::time::Instant> {
        let mut guard = self.live.lock().await;
        let live = guard.as_mut()?;
        let now = tokio::time::Instant::now();
        let due: Vec<String> = live
            .grants
            .iter()
            .filter(|(_, g)| g.renew_at <= now)
            .map(|(audience, _)| audience.clone())
            .collect();
        for audience in due {
            // Drop the old grant so authorize() asks the credential for a fresh token.
            let old = live.grants.remove(&audience);
            if let Err(failure) = self.authorize(live, &audience).await {
                tracing::warn!(%audience, error = %failure.error, "token renewal failed; trying again shortly");
                if let Some(mut old) = old {
                    old.renew_at = now
                        + Duration::from_secs(5).min(
                            old.token
                                .expires_at
                                .duration_since(SystemTime::now())
                                .unwrap_or_default()
                                / 2
                                + Duration::from_millis(100),
                        );
                    live.grants.insert(audience, old);
                }
            }
        }
        live.grants.values().map(|g| g.renew_at).min()
    }

    /// Closes the connection; further operations fail with [`ErrorKind::Closed`]. Waits for
    /// the service's answer until `deadline` at most.
    pub(crate) async fn close(&self, deadline: tokio::time::Instant) {
        self.closed.store(true, Ordering::SeqCst);
        self.renewals_changed.notify_one();
        let mut guard = self.live.lock().await;
        if let Some(live) = guard.take() {
            close_live_until(live, deadline).await;
        }
    }
}

/// Waits for `operation` on `connection`, unless the connection ends first: then the
/// operation fails at once as a lost connection (whatever stage it was in), instead of waiting
/// for an answer that cannot come until the try timeout. fe2o3 ends a link's wait when its
/// session stops, but a reset during a handshake may leave a wait (a put-token's reply, an
/// attach) that only the connection's end tells about.
async fn unless_lost<T>(
    connection: &mut ConnectionHandle<()>,
    stage: &str,
    operation: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    if connection.is_closed() {
        return Err(lost_during(stage));
    }
    tokio::select! {
        biased;
        result = operation => result,
        // Cancel-safe: it polls the engine's join handle by reference.
        _ = connection.on_close() => Err(lost_during(stage)),
    }
}

/// Opens a TCP connection to `host:port`: a name that does not resolve is
/// [`ErrorKind::HostNotFound`] (not retried); addresses that all refuse or cannot be reached
/// are [`ErrorKind::ConnectionFailed`].
/// What the client says about itself in its `open`, as Azure's SDKs do (product, version,
/// platform, framework, user agent), so that the service's diagnostics can tell it apart. The
/// user agent follows Azure's form, `azsdk-<language>-<package>/<version> (<platform>)`.
fn client_properties() -> fe2o3_amqp::types::definitions::Fields {
    let version = env!("CARGO_PKG_VERSION");
    let platform = format!("{}; {}", std::env::consts::OS, std::env::consts::ARCH);
    let mut fields = fe2o3_amqp::types::definitions::Fields::new();
    for (name, value) in [
        ("product", "eventhubs-buffered".to_string()),
        ("version", version.to_string()),
        ("platform", platform.clone()),
        ("framework", "Rust".to_string()),
        (
            "user-agent",
            format!("azsdk-rust-eventhubs-buffered/{version} ({platform})"),
        ),
    ] {
        fields.insert(Symbol::from(name), Value::String(value));
    }
    fields
}

/// Link settings beyond the address (idempotent publishing uses them).
#[derive(Debug, Clone, Default)]
pub(crate) struct SenderProperties {
    /// Attach as an idempotent producer asking for these values.
    pub idempotent: Option<PublishingRequest>,
}

/// The attach properties of an idempotent producer link: unknown values go as null, which
/// asks the service to assign them.
fn publishing_request_fields(request: &PublishingRequest) -> Fields {
    let mut fields = Fields::new();
    fields.insert(
        Symbol::from(PRODUCER_ID),
        request.producer_id.map_or(Value::Null, Value::Long),
    );
    fields.insert(
        Symbol::from(PRODUCER_EPOCH),
        request.epoch.map_or(Value::Null, Value::Short),
    );
    fields.insert(
        Symbol::from(PRODUCER_SEQUENCE_NUMBER),
        request.last_sequence.map_or(Value::Null, Value::Int),
    );
    fields
}

/// What the service granted an idempotent link. fe2o3 merges the peer's attach properties
/// over the requested ones, so these are the service's values.
fn publishing_grant(sender: &Sender) -> Option<PublishingGrant> {
    sender.properties(|fields| {
        let fields = fields.as_ref()?;
        let get = |name: &str| fields.get(&Symbol::from(name));
        let producer_id = match get(PRODUCER_ID)? {
            Value::Long(v) => *v,
            Value::Int(v) => i64::from(*v),
            _ => return None,
        };
        let epoch = match get(PRODUCER_EPOCH)? {
            Value::Short(v) => *v,
            Value::Byte(v) => i16::from(*v),
            _ => return None,
        };
        let last_sequence = match get(PRODUCER_SEQUENCE_NUMBER)? {
            Value::Int(v) => *v,
            Value::Long(v) => i32::try_from(*v).ok()?,
            _ => return None,
        };
        Some(PublishingGrant {
            producer_id,
            epoch,
            last_sequence,
        })
    })
}

/// How long closing a connection waits for the service at most.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);

async fn close_live(live: Live) {
    close_live_until(live, tokio::time::Instant::now() + CLOSE_GRACE).await;
}

async fn close_live_until(live: Live, deadline: tokio::time::Instant) {
    let Live {
        mut connection,
        mut session,
        cbs,
        management,
        ..
    } = live;
    let closing = async move {
        cbs.close().await;
        if let Some(m) = management {
            m.close().await;
        }
        let _ = session.end().await;
        let _ = connection.close().await;
    };
    // A dead peer must not hold up whoever closes.
    let _ = tokio::time::timeout_at(deadline, closing).await;
}

impl Drop for AmqpConnection {
    fn drop(&mut self) {
        // Lets the renewal task see that the connection is gone.
        self.renewals_changed.notify_one();
    }
}

/// Renews tokens ahead of expiry for as long as the connection exists. It sleeps until the
/// next renewal is due, or until a grant is added; with nothing to renew it waits for a
/// notification and uses no CPU. It holds the connection only while renewing.
async fn renew_tokens(connection: Weak<AmqpConnection>, changed: Arc<Notify>) {
    loop {
        let next = {
            let Some(connection) = connection.upgrade() else {
                return;
            };
            if connection.is_closed() {
                return;
            }
            connection.renew_due().await
        };
        let notified = changed.notified();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}
