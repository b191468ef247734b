//! Entry points for the fuzz targets in the repository's `fuzz/` directory (cargo feature
//! `fuzzing`; not part of the emulator's supported API).
//!
//! Bytes from the network reach the emulator at a few places: the frames of a connection, the
//! payload of a transfer on a producer link, requests to `$cbs` and `$management`, and the
//! attach of a link. Each function here runs the code the server runs at one of those places,
//! without sockets, so a fuzzer can try many inputs a second. None of them changes what the
//! server does.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp_types::definitions::Role;
use fe2o3_amqp_types::messaging::message::DecodeIntoMessage;
use fe2o3_amqp_types::messaging::{Body, Message};
use fe2o3_amqp_types::performatives::Attach;
use fe2o3_amqp_types::primitives::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::connection::ConnectionState;
use crate::emulator::{DEFAULT_HUB, DEFAULT_KEY, DEFAULT_KEY_NAME, DEFAULT_MAX_MESSAGE_SIZE};
use crate::entities::idempotence::ProducerGrant;
use crate::entities::namespace::{Namespace, Settings};
use crate::entities::routing::{parse_entity_address, EntityAddress};
use crate::entities::store::StoredEvent;
use crate::links::context::{attach_address, LinkContext};
use crate::sas::SasKey;
use crate::wire::framing::{CutSwitch, WireStream};

/// One namespace with the [`EmulatorBuilder`](crate::EmulatorBuilder)'s defaults (hub `hub`
/// with 4 partitions, key [`DEFAULT_KEY_NAME`](crate::DEFAULT_KEY_NAME) /
/// [`DEFAULT_KEY`](crate::DEFAULT_KEY), authorization required, JWTs accepted, consumer group
/// `$Default`), and the state of one client connection to it.
pub struct Harness {
    ctx: LinkContext,
    shutdown: watch::Sender<bool>,
    /// The grant of the harness's idempotent producer, per partition id.
    grants: Mutex<HashMap<String, ProducerGrant>>,
}

impl Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").finish_non_exhaustive()
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A fresh namespace with the defaults described on [`Harness`].
    pub fn new() -> Self {
        let settings = Settings {
            retention: None,
            idle_timeout: crate::entities::namespace::SERVICE_IDLE_TIMEOUT,
            keys: vec![SasKey {
                name: DEFAULT_KEY_NAME.to_string(),
                key: DEFAULT_KEY.to_string(),
            }],
            require_authorization: true,
            accept_jwt: true,
            consumer_groups: vec!["$Default".to_string()],
            hub_consumer_groups: Default::default(),
        };
        let hubs = vec![(DEFAULT_HUB.0.to_string(), DEFAULT_HUB.1)];
        let ns = Arc::new(Namespace::new(settings, hubs, DEFAULT_MAX_MESSAGE_SIZE));
        let (shutdown, _) = watch::channel(false);
        Self {
            ctx: LinkContext {
                ns,
                conn: Arc::new(ConnectionState::default()),
            },
            shutdown,
            grants: Mutex::new(HashMap::new()),
        }
    }

    /// Serves one client connection over `io` as the server serves a TCP client (without TLS):
    /// SASL, open, sessions, and every link the client attaches. Returns when the connection
    /// ends; the sessions' and links' tasks are spawned on the current runtime.
    pub async fn serve_connection<S>(&self, io: S) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Debug + Send + Unpin + 'static,
    {
        let cut = CutSwitch::default();
        crate::wire::server::serve_connection(
            WireStream::new(io, cut.clone()),
            self.ctx.ns.clone(),
            cut,
            None,
            self.shutdown.subscribe(),
        )
        .await
    }

    /// How many served connections are still registered with the namespace.
    pub fn connection_count(&self) -> usize {
        self.ctx.ns.connection_count()
    }

    /// Grants this harness's connection the whole namespace for an hour, as an accepted
    /// put-token for the namespace would.
    pub fn authorize_everything(&self) {
        self.ctx
            .conn
            .grant("", Instant::now() + Duration::from_secs(3600));
    }

    /// Whether this harness's connection may use the entity at `address` now.
    pub fn is_authorized(&self, address: &str) -> bool {
        self.ctx.conn.authorized_until(address).is_some()
    }

    /// Answers a `$cbs` request as the `$cbs` node does (recording any grant on this harness's
    /// connection).
    pub fn cbs(&self, request: &Message<Body<Value>>) -> Message<Body<Value>> {
        crate::services::cbs::handle(&self.ctx.ns, &self.ctx.conn, request)
    }

    /// Answers a `$management` request as the `$management` node does.
    pub fn management(&self, request: &Message<Body<Value>>) -> Message<Body<Value>> {
        crate::services::management::handle(&self.ctx.ns, &self.ctx.conn, request)
    }

    /// Checks and stores one delivery as a producer link does: to `partition`, or routed by the
    /// hub when `None`; as an idempotent producer when `idempotent` (one producer id per
    /// partition for the harness's life, granted at its first use, like one attached link).
    /// Returns how many events the partitions hold afterwards, or the rejection.
    pub fn store(
        &self,
        message: Message<Body<Value>>,
        is_batch: bool,
        partition: Option<&str>,
        idempotent: bool,
    ) -> Result<usize, String> {
        let hub = self
            .ctx
            .ns
            .hub(DEFAULT_HUB.0)
            .ok_or_else(|| "the default hub is missing".to_string())?;
        let partition = match partition {
            Some(id) => Some(
                hub.partition(id)
                    .ok_or_else(|| format!("no partition {id}"))?,
            ),
            None => None,
        };
        let grant = match (&partition, idempotent) {
            (Some(p), true) => {
                let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
                let grant = match grants.get(&p.id) {
                    Some(grant) => *grant,
                    None => p
                        .producers
                        .attach(&self.ctx.ns.producer_ids, None, None)
                        .map_err(|_| "the producer id is taken".to_string())?,
                };
                grants.insert(p.id.clone(), grant);
                Some(grant)
            }
            _ => None,
        };
        crate::links::producer::store_delivery(
            &self.ctx,
            hub.clone(),
            partition,
            grant,
            message,
            is_batch,
        )
        .map_err(|(condition, description)| format!("{condition}: {description}"))?;
        Ok(hub.partitions().iter().map(|p| p.len()).sum())
    }

    /// Every stored event of the default hub as a consumer link would send it (with the
    /// runtime-metric annotations when `metric`); `None` for an event that does not decode,
    /// which a consumer link skips.
    pub fn delivered(&self, metric: bool) -> Vec<Option<Message<Body<Value>>>> {
        let Some(hub) = self.ctx.ns.hub(DEFAULT_HUB.0) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for partition in hub.partitions() {
            let events: Vec<StoredEvent> = partition.read(0, usize::MAX);
            for event in &events {
                out.push(crate::links::consumer::delivered_message(
                    &self.ctx,
                    partition.clone(),
                    event,
                    metric,
                ));
            }
        }
        out
    }

    /// Runs the checks an attach meets before the emulator answers it (without a session):
    /// routing by address, then for a producer the hub, partition, authorization and
    /// idempotence checks, and for a consumer the consumer group, partition, authorization,
    /// start-position filter and epoch. Returns the refusal's description.
    pub fn check_attach(&self, attach: &Attach) -> Result<(), String> {
        let address = attach_address(attach).unwrap_or_default();
        match (&attach.role, parse_entity_address(&address)) {
            (Role::Sender, Some(EntityAddress::Hub { hub })) => {
                self.check_producer(attach, &address, &hub, None)
            }
            (Role::Sender, Some(EntityAddress::Partition { hub, partition })) => {
                self.check_producer(attach, &address, &hub, Some(&partition))
            }
            (
                Role::Receiver,
                Some(EntityAddress::ConsumerPartition {
                    hub,
                    consumer_group,
                    partition,
                }),
            ) => {
                let (partition, start, _epoch, _until) = crate::links::consumer::check(
                    &self.ctx,
                    attach,
                    &address,
                    &hub,
                    &consumer_group,
                    &partition,
                )
                .map_err(|r| r.description)?;
                let _ = crate::links::consumer::start_index(&partition, &start);
                Ok(())
            }
            (_, Some(_)) => Ok(()),
            (_, None) => Err(format!("no entity at '{address}'")),
        }
    }

    fn check_producer(
        &self,
        attach: &Attach,
        address: &str,
        hub: &str,
        partition: Option<&str>,
    ) -> Result<(), String> {
        let hub = self
            .ctx
            .ns
            .hub(hub)
            .ok_or_else(|| format!("no hub '{hub}'"))?;
        let partition = match partition {
            Some(id) => Some(
                hub.partition(id)
                    .ok_or_else(|| format!("no partition {id}"))?,
            ),
            None => None,
        };
        crate::links::context::check_authorization(&self.ctx, address)
            .map_err(|r| r.description)?;
        crate::links::producer::idempotent_grant(&self.ctx, attach, partition.as_deref())
            .map(|_| ())
            .map_err(|r| r.description)
    }
}

/// Decodes the payload of a transfer as the emulator's receiving links do.
pub fn decode_message(payload: &[u8]) -> Result<Message<Body<Value>>, String> {
    Body::<Value>::decode_message_from_reader(serde_amqp::read::SliceReader::new(payload))
        .map_err(|e| e.to_string())
}
