//! The in-process emulator: a builder, and the handle of a running instance with its
//! inspection and fault controls.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::connection::ClientOpen;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::entities::namespace::{
    ConnectionOrder, Counters, DetachOrder, Hub, Namespace, Settings, SERVICE_IDLE_TIMEOUT,
};
use crate::entities::store::ReceivedEvent;
use crate::error::EmulatorError;
use crate::faults::{FaultCondition, FaultScope};
use crate::sas::{generate_sas_token, SasKey};
use crate::wire::server::{listen, serve, Framing};

/// The default event hub: `hub` with 4 partitions.
pub const DEFAULT_HUB: (&str, usize) = ("hub", 4);
/// The default max-message-size announced on producer links: 1 MiB, as the Standard tier.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1024 * 1024;
/// The default key name, as in Event Hubs namespaces.
pub const DEFAULT_KEY_NAME: &str = "RootManageSharedAccessKey";
/// The default key. It protects nothing: the emulator listens on loopback only.
pub const DEFAULT_KEY: &str = "emulator-local-key-0123456789";
/// The service's maximum partition count for one event hub (dedicated tier).
const MAX_PARTITIONS: usize = 2048;

/// Configures and starts an [`Emulator`].
///
/// Defaults: one hub `hub` with 4 partitions (when no hub is added), an ephemeral port on
/// 127.0.0.1, plain TCP, max-message-size 1 MiB, key `RootManageSharedAccessKey`, authorization
/// required, JWT tokens accepted unverified, consumer group `$Default`, idle timeout 120 s.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    hubs: Vec<(String, usize)>,
    address: IpAddr,
    port: u16,
    tls: bool,
    max_message_size: u64,
    key: SasKey,
    require_authorization: bool,
    accept_jwt: bool,
    consumer_groups: Vec<String>,
    /// (hub, consumer group): groups of one hub only.
    hub_consumer_groups: Vec<(String, String)>,
    retention: Option<usize>,
    idle_timeout: Duration,
    /// The port of AMQP over WebSockets (0: a free one); none: no WebSocket listener.
    websocket_port: Option<u16>,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            hubs: Vec::new(),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            tls: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            key: SasKey {
                name: DEFAULT_KEY_NAME.to_string(),
                key: DEFAULT_KEY.to_string(),
            },
            require_authorization: true,
            accept_jwt: true,
            consumer_groups: vec!["$Default".to_string()],
            hub_consumer_groups: Vec::new(),
            retention: None,
            idle_timeout: SERVICE_IDLE_TIMEOUT,
            websocket_port: None,
        }
    }
}

impl EmulatorBuilder {
    /// Adds an event hub with `partitions` partitions (ids "0".."n-1").
    pub fn hub(mut self, name: impl Into<String>, partitions: usize) -> Self {
        self.hubs.push((name.into(), partitions));
        self
    }

    /// The TCP port to listen on; 0 (the default) picks a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The local address to listen on. Default 127.0.0.1; only loopback addresses are accepted.
    pub fn address(mut self, address: IpAddr) -> Self {
        self.address = address;
        self
    }

    /// Serve TLS (`amqps://`) with a certificate made at start; see [`Emulator::ca_certificate_pem`].
    pub fn tls(mut self, enabled: bool) -> Self {
        self.tls = enabled;
        self
    }

    /// The max-message-size announced on producer links (default 1 MiB).
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The shared access key that signs valid SAS tokens.
    pub fn shared_access_key(mut self, name: impl Into<String>, key: impl Into<String>) -> Self {
        self.key = SasKey {
            name: name.into(),
            key: key.into(),
        };
        self
    }

    /// Whether links need a `$cbs` put-token first (default true).
    pub fn require_authorization(mut self, required: bool) -> Self {
        self.require_authorization = required;
        self
    }

    /// Whether JWT tokens are accepted without verification (default true); false refuses them.
    pub fn accept_jwt(mut self, accepted: bool) -> Self {
        self.accept_jwt = accepted;
        self
    }

    /// Adds a consumer group besides `$Default`.
    pub fn consumer_group(mut self, name: impl Into<String>) -> Self {
        self.consumer_groups.push(name.into());
        self
    }

    /// Adds a consumer group to one hub only (as a Config.json gives them); reads through
    /// another hub's group are refused as the service refuses them.
    pub fn hub_consumer_group(mut self, hub: impl Into<String>, name: impl Into<String>) -> Self {
        self.hub_consumer_groups.push((hub.into(), name.into()));
        self
    }

    /// Adds the event hubs and consumer groups of a Microsoft emulator configuration file
    /// (`Config.json`, see [`crate::config`]), and serves Microsoft's documented key
    /// ([`MICROSOFT_EMULATOR_KEY`](crate::config::MICROSOFT_EMULATOR_KEY)) unless a key was set
    /// before, so that the connection string of Microsoft's emulator works unchanged:
    /// `Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;`
    /// (with the default port 5672 of the binary).
    ///
    /// # Errors
    ///
    /// [`EmulatorError::InvalidConfig`] when the file's content is not a configuration of that
    /// shape (naming what is wrong); [`EmulatorError::Io`] when it cannot be read.
    pub fn microsoft_config(self, json: &str) -> Result<Self, EmulatorError> {
        let hubs = crate::config::parse_microsoft_config(json)?;
        let mut builder = self;
        if builder.key.key == DEFAULT_KEY {
            builder.key.key = crate::config::MICROSOFT_EMULATOR_KEY.to_string();
        }
        for hub in hubs {
            builder = builder.hub(hub.name.clone(), hub.partitions);
            for group in hub.consumer_groups {
                builder = builder.hub_consumer_group(hub.name.clone(), group);
            }
        }
        Ok(builder)
    }

    /// The hubs, partitions and consumer groups this builder will serve, and how (port, TLS,
    /// authorization, key name, idle timeout), as lines of text; the key's value is not shown.
    ///
    /// # Errors
    ///
    /// What [`start`](Self::start) would refuse in the configuration.
    pub fn effective_config(&self) -> Result<String, EmulatorError> {
        self.validate()?;
        let mut hubs = self.hubs.clone();
        if hubs.is_empty() {
            hubs.push((DEFAULT_HUB.0.to_string(), DEFAULT_HUB.1));
        }
        let mut out = format!(
            "address {}:{}{}\nkey name {}\nauthorization {}\nidle timeout {} ms\n",
            self.address,
            self.port,
            if self.tls { " (TLS)" } else { "" },
            self.key.name,
            if self.require_authorization {
                "required"
            } else {
                "off"
            },
            self.idle_timeout.as_millis(),
        );
        for (name, partitions) in hubs {
            let mut groups = self.consumer_groups.clone();
            groups.extend(
                self.hub_consumer_groups
                    .iter()
                    .filter(|(hub, _)| hub.eq_ignore_ascii_case(&name))
                    .map(|(_, group)| group.clone()),
            );
            out.push_str(&format!(
                "hub {name}: {partitions} partitions; consumer groups {}\n",
                groups.join(", ")
            ));
        }
        Ok(out)
    }

    /// Keeps at most about `events` events per partition, dropping the oldest (like the
    /// service's retention), so that long runs hold bounded memory. Consumers and
    /// [`Emulator::events`] see the retained events; sequence numbers and offsets go on.
    /// Default: every event is kept.
    pub fn max_events_per_partition(mut self, events: usize) -> Self {
        self.retention = Some(events);
        self
    }

    /// The idle timeout announced in the open (default 120 s, as the service announces): a
    /// connection on which the client sends nothing, not even an empty frame, for that long is
    /// dropped. A shorter value lets a test exercise a client's idle and reconnect paths
    /// quickly; zero announces none and keeps silent connections forever. Whole milliseconds,
    /// at most `u32::MAX` ms.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Also serves AMQP over WebSockets (`ws://`, or `wss://` with [`tls`](Self::tls)) on a
    /// port of its own, as Event Hubs does on 443: the upgrade must ask for the path
    /// `/$servicebus/websocket` and the subprotocol `AMQPWSB10`. The port is a free one; see
    /// [`websocket_port`](Self::websocket_port) to choose it. Default: off.
    pub fn websocket(mut self, enabled: bool) -> Self {
        self.websocket_port = enabled.then_some(self.websocket_port.unwrap_or(0));
        self
    }

    /// Serves AMQP over WebSockets on this port (0 picks a free one); turns
    /// [`websocket`](Self::websocket) on.
    pub fn websocket_port(mut self, port: u16) -> Self {
        self.websocket_port = Some(port);
        self
    }

    fn validate(&self) -> Result<(), EmulatorError> {
        if !self.address.is_loopback() {
            return Err(EmulatorError::InvalidConfig(format!(
                "the emulator listens on loopback addresses only, not {}",
                self.address
            )));
        }
        for (name, partitions) in &self.hubs {
            let valid_name = !name.is_empty()
                && name.len() <= 256
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid_name {
                return Err(EmulatorError::InvalidConfig(format!(
                    "hub name '{name}' must be 1-256 letters, digits, '-', '_' or '.'"
                )));
            }
            if !(1..=MAX_PARTITIONS).contains(partitions) {
                return Err(EmulatorError::InvalidConfig(format!(
                    "hub '{name}' needs 1 to {MAX_PARTITIONS} partitions, not {partitions}"
                )));
            }
        }
        for (hub, group) in &self.hub_consumer_groups {
            if !self
                .hubs
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(hub))
            {
                return Err(EmulatorError::InvalidConfig(format!(
                    "consumer group '{group}' names hub '{hub}', which is not configured"
                )));
            }
        }
        if self.idle_timeout.as_millis() > u128::from(u32::MAX) {
            return Err(EmulatorError::InvalidConfig(format!(
                "the idle timeout must be at most {} ms, not {} ms",
                u32::MAX,
                self.idle_timeout.as_millis()
            )));
        }
        if self.retention == Some(0) {
            return Err(EmulatorError::InvalidConfig(
                "the retention must keep at least one event per partition".into(),
            ));
        }
        if self.max_message_size == 0 {
            return Err(EmulatorError::InvalidConfig(
                "max message size must be positive".into(),
            ));
        }
        if self.key.name.is_empty() || self.key.key.is_empty() {
            return Err(EmulatorError::InvalidConfig(
                "the key name and key must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// Binds the socket and starts serving.
    pub async fn start(self) -> Result<Emulator, EmulatorError> {
        self.validate()?;
        let mut hubs = self.hubs.clone();
        if hubs.is_empty() {
            hubs.push((DEFAULT_HUB.0.to_string(), DEFAULT_HUB.1));
        }
        let default_hub = hubs[0].0.clone();
        let tls = if self.tls {
            Some(crate::wire::tls::generate(&[])?)
        } else {
            None
        };
        let listener = listen(SocketAddr::new(self.address, self.port))?;
        let local_addr = listener.local_addr()?;
        let settings = Settings {
            keys: vec![self.key.clone()],
            require_authorization: self.require_authorization,
            accept_jwt: self.accept_jwt,
            consumer_groups: self.consumer_groups.clone(),
            hub_consumer_groups: hub_groups(&self.hub_consumer_groups),
            retention: self.retention,
            idle_timeout: self.idle_timeout,
        };
        let ns = Arc::new(Namespace::new(settings, hubs, self.max_message_size));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        let mut tasks = vec![tokio::spawn(serve(
            listener,
            ns.clone(),
            acceptor.clone(),
            Framing::Amqp,
            shutdown_rx.clone(),
        ))];
        let mut websocket_addr = None;
        if let Some(port) = self.websocket_port {
            let listener = listen(SocketAddr::new(self.address, port))?;
            websocket_addr = Some(listener.local_addr()?);
            tasks.push(tokio::spawn(serve(
                listener,
                ns.clone(),
                acceptor,
                Framing::WebSocket,
                shutdown_rx,
            )));
        }
        Ok(Emulator {
            ns,
            local_addr,
            websocket_addr,
            default_hub,
            key: self.key,
            ca_pem: tls.map(|t| t.ca_pem),
            shutdown,
            tasks,
        })
    }
}

/// Groups of one hub, by the hub's name in lower case.
fn hub_groups(pairs: &[(String, String)]) -> std::collections::HashMap<String, Vec<String>> {
    let mut groups: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (hub, group) in pairs {
        groups
            .entry(hub.to_ascii_lowercase())
            .or_default()
            .push(group.clone());
    }
    groups
}

/// A running emulator. Dropping it stops the server (connections are closed).
#[derive(Debug)]
pub struct Emulator {
    ns: Arc<Namespace>,
    local_addr: SocketAddr,
    websocket_addr: Option<SocketAddr>,
    default_hub: String,
    key: SasKey,
    ca_pem: Option<String>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Emulator {
    /// A builder with the defaults described on [`EmulatorBuilder`].
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// The address the emulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The host clients should name: `localhost` with TLS (the certificate's name), else the IP
    /// (an IPv6 address in brackets, as a URL writes it).
    fn host(&self) -> String {
        match self.local_addr.ip() {
            _ if self.ca_pem.is_some() => "localhost".to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        }
    }

    /// The namespace endpoint, `sb://HOST:PORT`.
    pub fn endpoint(&self) -> String {
        format!("sb://{}:{}", self.host(), self.local_addr.port())
    }

    /// The address of AMQP over WebSockets, when [`EmulatorBuilder::websocket`] turned it on.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.websocket_addr
    }

    /// The namespace endpoint on the WebSocket port, `sb://HOST:PORT`: what a client using
    /// the WebSocket transport names (its path is `/$servicebus/websocket`).
    pub fn websocket_endpoint(&self) -> Option<String> {
        let addr = self.websocket_addr?;
        Some(format!("sb://{}:{}", self.host(), addr.port()))
    }

    /// A connection string for the first hub whose endpoint is the WebSocket port, for clients
    /// set to the WebSocket transport. Without TLS it carries `UseDevelopmentEmulator=true`
    /// (`ws://`).
    pub fn websocket_connection_string(&self) -> Option<String> {
        let endpoint = self.websocket_endpoint()?;
        Some(format!(
            "{}EntityPath={}",
            self.connection_string_at(&endpoint),
            self.default_hub
        ))
    }

    /// A namespace-level connection string (no `EntityPath`). Without TLS it carries
    /// `UseDevelopmentEmulator=true`, which tells clients to use plain AMQP on the given port.
    pub fn namespace_connection_string(&self) -> String {
        self.connection_string_at(&self.endpoint())
    }

    fn connection_string_at(&self, endpoint: &str) -> String {
        let emulator_flag = if self.ca_pem.is_some() {
            ""
        } else {
            "UseDevelopmentEmulator=true;"
        };
        format!(
            "Endpoint={endpoint};SharedAccessKeyName={};SharedAccessKey={};{emulator_flag}",
            self.key.name, self.key.key
        )
    }

    /// A connection string for the first hub (`EntityPath` set).
    pub fn connection_string(&self) -> String {
        self.connection_string_for(&self.default_hub)
    }

    /// A connection string for the given hub.
    pub fn connection_string_for(&self, hub: &str) -> String {
        format!("{}EntityPath={hub}", self.namespace_connection_string())
    }

    /// The PEM of the certificate authority that signed the TLS certificate (TLS only).
    pub fn ca_certificate_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The key name and key of valid tokens.
    pub fn shared_access_key(&self) -> (&str, &str) {
        (&self.key.name, &self.key.key)
    }

    /// A SAS token for `resource` signed with the emulator's key, valid for `validity`.
    pub fn sas_token(&self, resource: &str, validity: Duration) -> String {
        let expiry = crate::services::refusal::now_unix() + validity.as_secs();
        generate_sas_token(resource, &self.key, expiry)
    }

    fn hub(&self, name: &str) -> Result<Arc<Hub>, EmulatorError> {
        self.ns
            .hub(name)
            .ok_or_else(|| EmulatorError::UnknownHub(name.to_string()))
    }

    /// The partition ids of a hub, in order.
    pub fn partition_ids(&self, hub: &str) -> Result<Vec<String>, EmulatorError> {
        Ok(self.hub(hub)?.partition_ids())
    }

    /// The events stored in one partition, in order.
    pub fn events(&self, hub: &str, partition: &str) -> Result<Vec<ReceivedEvent>, EmulatorError> {
        let p =
            self.hub(hub)?
                .partition(partition)
                .ok_or_else(|| EmulatorError::UnknownPartition {
                    hub: hub.to_string(),
                    partition: partition.to_string(),
                })?;
        Ok(p.read(0, usize::MAX)
            .iter()
            .map(ReceivedEvent::from_stored)
            .collect())
    }

    /// How many events one partition was given: its next sequence number. With a
    /// [retention](EmulatorBuilder::max_events_per_partition), the oldest may be gone.
    pub fn event_count(&self, hub: &str, partition: &str) -> Result<usize, EmulatorError> {
        let p =
            self.hub(hub)?
                .partition(partition)
                .ok_or_else(|| EmulatorError::UnknownPartition {
                    hub: hub.to_string(),
                    partition: partition.to_string(),
                })?;
        Ok(p.len())
    }

    /// How many events the hub holds over all its partitions.
    pub fn total_event_count(&self, hub: &str) -> Result<usize, EmulatorError> {
        Ok(self.hub(hub)?.partitions().iter().map(|p| p.len()).sum())
    }

    /// What the emulator has done so far.
    pub fn counters(&self) -> Counters {
        self.ns.counters.snapshot()
    }

    /// How many client connections are open.
    pub fn connection_count(&self) -> usize {
        self.ns.connection_count()
    }

    /// What each client announced in its AMQP `open` (container id, host name, and its string
    /// properties such as `product`, `version`, `platform` and `user-agent`), in the order the
    /// clients connected.
    pub fn client_opens(&self) -> Vec<ClientOpen> {
        self.ns.client_opens()
    }

    /// The fault controls.
    pub fn faults(&self) -> Faults {
        Faults {
            ns: self.ns.clone(),
        }
    }

    /// Stops accepting, closes every connection with `amqp:connection:forced`, and waits (up to
    /// 5 s) for them to end.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.ns.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Fault injection for a running emulator. Cheap to clone; every method takes effect at once.
#[derive(Debug, Clone)]
pub struct Faults {
    ns: Arc<Namespace>,
}

impl Faults {
    /// Rejects the next `count` deliveries in `scope` with `condition`, without storing them.
    pub fn reject_next(&self, count: u64, condition: FaultCondition, scope: FaultScope) {
        self.ns.faults.reject_next(count, condition, scope);
    }

    /// Stores the next `count` deliveries in `scope` but never answers them (lost
    /// acknowledgements).
    pub fn withhold_next(&self, count: u64, scope: FaultScope) {
        self.ns.faults.withhold_next(count, scope);
    }

    /// Delays every acceptance by `delay` (a slow network); `Duration::ZERO` ends it.
    pub fn delay_dispositions(&self, delay: Duration) {
        self.ns.faults.delay_dispositions(delay);
    }

    /// Detaches the producer links of a partition (or, with `None`, every producer link of the
    /// hub) with `condition`. Returns how many link tasks heard the order.
    pub fn detach_senders(
        &self,
        hub: &str,
        partition: Option<&str>,
        condition: FaultCondition,
    ) -> usize {
        self.ns.order_detach(DetachOrder {
            hub: hub.to_string(),
            partition: partition.map(str::to_string),
            condition,
        })
    }

    /// Closes every client connection with `amqp:connection:forced`. Returns how many.
    pub fn close_connections(&self) -> usize {
        self.ns
            .order_connections(ConnectionOrder::Close(FaultCondition::ConnectionForced))
    }

    /// Closes every client connection with the given condition. Returns how many.
    pub fn close_connections_with(&self, condition: FaultCondition) -> usize {
        self.ns.order_connections(ConnectionOrder::Close(condition))
    }

    /// Cuts every client connection's TCP stream without an AMQP close. Returns how many.
    pub fn drop_connections(&self) -> usize {
        self.ns.order_connections(ConnectionOrder::Drop)
    }

    /// Answers every put-token with 401 for `period`; `Duration::ZERO` ends it.
    pub fn reject_tokens_for(&self, period: Duration) {
        self.ns.faults.reject_tokens_for(period);
    }

    /// Changes the max-message-size: deliveries above it are rejected with
    /// `amqp:link:message-size-exceeded`, and links attached from now on announce it.
    pub fn set_max_message_size(&self, bytes: u64) {
        self.ns.faults.set_max_message_size(bytes);
    }

    /// Grows a hub to `partitions` partitions (never shrinks). Returns the new count.
    pub fn grow_partitions(&self, hub: &str, partitions: usize) -> Result<usize, EmulatorError> {
        if partitions > MAX_PARTITIONS {
            return Err(EmulatorError::InvalidConfig(format!(
                "at most {MAX_PARTITIONS} partitions, not {partitions}"
            )));
        }
        let hub = self
            .ns
            .hub(hub)
            .ok_or_else(|| EmulatorError::UnknownHub(hub.to_string()))?;
        Ok(hub.grow_to(partitions))
    }

    /// Ends every delivery and token rule (reject, withhold, delay, token rejection).
    pub fn clear(&self) {
        self.ns.faults.clear();
    }
}
