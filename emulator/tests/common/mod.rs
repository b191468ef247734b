//! A small Event Hubs client built directly on fe2o3-amqp, for talking to the emulator over
//! loopback in tests: connect, put-token, management reads, plain and batched sends, receives.
#![allow(dead_code)]

use std::time::Duration;

use eventhubs_emulator::{Emulator, BATCH_MESSAGE_FORMAT};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Batch, Body, Data, Message, MessageAnnotations, MessageId,
    Outcome, Properties, Source,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Value};
use fe2o3_amqp::{Connection, Delivery, Sendable, Session};

/// Generous bound for any single protocol step in tests.
pub const STEP: Duration = Duration::from_secs(10);

/// The reply of a `$cbs` or `$management` request.
pub struct Reply {
    pub status: i32,
    pub condition: Option<String>,
    pub description: Option<String>,
    pub correlation_id: Option<MessageId>,
    pub body: Body<Value>,
}

pub struct TestClient {
    pub connection: ConnectionHandle<()>,
    pub session: SessionHandle<()>,
    host: String,
    requests: Vec<(String, Sender, Receiver)>,
    next_id: u64,
}

fn property_text(message: &Message<Body<Value>>, name: &str) -> Option<String> {
    match message.application_properties.as_ref()?.0.get(name)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

impl TestClient {
    /// Connects over plain TCP with SASL ANONYMOUS and begins one session.
    pub async fn connect(emulator: &Emulator) -> Self {
        let addr = emulator.local_addr();
        let url = format!("amqp://{}:{}", addr.ip(), addr.port());
        let mut connection = tokio::time::timeout(
            STEP,
            Connection::builder()
                .container_id("emulator-test")
                .sasl_profile(SaslProfile::Anonymous)
                .open(url.as_str()),
        )
        .await
        .expect("connect in time")
        .expect("connection opens");
        let session = Session::begin(&mut connection)
            .await
            .expect("session begins");
        Self {
            connection,
            session,
            host: format!("{}:{}", addr.ip(), addr.port()),
            requests: Vec::new(),
            next_id: 0,
        }
    }

    /// The audience URL of an entity path on this emulator.
    pub fn audience(&self, path: &str) -> String {
        format!("sb://{}/{}", self.host, path)
    }

    /// Sends a request to `$cbs` or `$management` and waits for the reply with the same
    /// correlation id.
    pub async fn request(
        &mut self,
        node: &str,
        properties: &[(&str, SimpleValue)],
        body: Body<Value>,
    ) -> Reply {
        if !self.requests.iter().any(|(n, _, _)| n == node) {
            let reply_to = format!("{node}-replies");
            let sender = Sender::attach(&mut self.session, format!("{node}-sender"), node)
                .await
                .expect("request link");
            let receiver = Receiver::builder()
                .name(format!("{node}-receiver"))
                .source(node)
                .target(reply_to.as_str())
                .attach(&mut self.session)
                .await
                .expect("reply link");
            self.requests.push((node.to_string(), sender, receiver));
        }
        self.next_id += 1;
        let id = MessageId::Ulong(self.next_id);
        let mut props = ApplicationProperties::builder();
        for (k, v) in properties {
            props = props.insert(k.to_string(), v.clone());
        }
        let message = Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                message_id: Some(id.clone()),
                reply_to: Some(format!("{node}-replies")),
                ..Default::default()
            }),
            application_properties: Some(props.build()),
            body,
            footer: None,
        };
        let (_, sender, receiver) = self
            .requests
            .iter_mut()
            .find(|(n, _, _)| n == node)
            .expect("links");
        tokio::time::timeout(STEP, sender.send(message))
            .await
            .expect("request sent in time")
            .expect("request accepted");
        let delivery: Delivery<Body<Value>> = tokio::time::timeout(STEP, receiver.recv())
            .await
            .expect("reply in time")
            .expect("reply received");
        receiver.accept(&delivery).await.expect("settle reply");
        let message = delivery.into_message();
        let status = match message
            .application_properties
            .as_ref()
            .and_then(|p| p.0.get("status-code"))
        {
            Some(SimpleValue::Int(code)) => *code,
            other => panic!("status-code must be an AMQP int, got {other:?}"),
        };
        Reply {
            status,
            condition: property_text(&message, "error-condition"),
            description: property_text(&message, "status-description"),
            correlation_id: message
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.clone()),
            body: message.body,
        }
    }

    /// put-token with a given token and type; returns the reply.
    pub async fn put_token(
        &mut self,
        audience: &str,
        token: &str,
        token_type: SimpleValue,
    ) -> Reply {
        let props = [
            ("operation", SimpleValue::String("put-token".into())),
            ("type", token_type),
            ("name", SimpleValue::String(audience.into())),
        ];
        self.request(
            "$cbs",
            &props,
            Body::Value(AmqpValue(Value::String(token.into()))),
        )
        .await
    }

    /// Puts a SAS token that must be accepted (202).
    async fn put_valid_sas(&mut self, audience: &str, token: &str) {
        let reply = self
            .put_token(
                audience,
                token,
                SimpleValue::String("servicebus.windows.net:sastoken".into()),
            )
            .await;
        assert_eq!(
            reply.status, 202,
            "put-token for {audience}: {:?}",
            reply.description
        );
    }

    /// Authorizes `path` (e.g. "hub") with a valid SAS token signed by the emulator's key.
    pub async fn authorize(&mut self, emulator: &Emulator, path: &str) {
        let audience = self.audience(path);
        let token = emulator.sas_token(&audience, Duration::from_secs(3600));
        self.put_valid_sas(&audience, &token).await;
    }

    /// A `$management` READ.
    pub async fn read(&mut self, entity_type: &str, hub: &str, partition: Option<&str>) -> Reply {
        let mut props = vec![
            ("operation", SimpleValue::String("READ".into())),
            ("type", SimpleValue::String(entity_type.into())),
            ("name", SimpleValue::String(hub.into())),
        ];
        if let Some(p) = partition {
            props.push(("partition", SimpleValue::String(p.into())));
        }
        self.request("$management", &props, Body::Empty).await
    }

    /// Attaches a sending link; returns it with the max-message-size the emulator announced.
    pub async fn sender(&mut self, address: &str) -> Sender {
        tokio::time::timeout(
            STEP,
            Sender::attach(&mut self.session, format!("send-{address}"), address),
        )
        .await
        .expect("attach in time")
        .expect("sender attaches")
    }

    /// Attaches a receiving link from `address` with an optional selector filter.
    pub async fn receiver(&mut self, address: &str, filter: Option<&str>) -> Receiver {
        receiver_builder(address, filter)
            .attach(&mut self.session)
            .await
            .expect("receiver attaches")
    }

    pub async fn close(mut self) {
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

pub fn receiver_builder(
    address: &str,
    filter: Option<&str>,
) -> fe2o3_amqp::link::builder::Builder<
    fe2o3_amqp::link::role::ReceiverMarker,
    fe2o3_amqp::types::messaging::Target,
    fe2o3_amqp::link::builder::WithName,
    fe2o3_amqp::link::builder::WithSource,
    fe2o3_amqp::link::builder::WithTarget,
> {
    let mut source = Source::builder().address(address.to_string());
    if let Some(expr) = filter {
        // The standard Apache selector descriptor code, as the JS and Rust SDKs send it.
        let described = serde_amqp::described::Described {
            descriptor: serde_amqp::descriptor::Descriptor::Code(0x0000_468C_0000_0004),
            value: Value::String(expr.to_string()),
        };
        source = source.add_to_filter(
            Symbol::from("apache.org:selector-filter:string"),
            Some(described),
        );
    }
    Receiver::builder()
        .name(format!("recv-{address}"))
        .source(source.build())
        .target("test-receiver")
}

/// One event as the AMQP message clients send: data body, an `index` property, optional key.
pub fn event(body: &str, index: i64, partition_key: Option<&str>) -> Message<Data> {
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: partition_key.map(key_annotations),
        properties: None,
        application_properties: Some(
            ApplicationProperties::builder()
                .insert("index", SimpleValue::Long(index))
                .build(),
        ),
        body: Data(Binary::from(body.as_bytes().to_vec())),
        footer: None,
    }
}

fn key_annotations(key: &str) -> MessageAnnotations {
    MessageAnnotations::builder()
        .insert(
            OwnedKey::Symbol(Symbol::from("x-opt-partition-key")),
            Value::String(key.to_string()),
        )
        .build()
}

/// The encoded bytes of a message, as a batch's data section holds them.
pub fn encode(message: Message<Data>) -> Vec<u8> {
    serde_amqp::to_vec(&Serializable(message)).expect("encode")
}

/// A batch envelope (format 0x80013700) of the given events.
pub fn batch(events: Vec<Message<Data>>, partition_key: Option<&str>) -> Sendable<Body<Value>> {
    let sections: Batch<Data> = events
        .into_iter()
        .map(|e| Data(Binary::from(encode(e))))
        .collect();
    let envelope = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: partition_key.map(key_annotations),
        properties: None,
        application_properties: None,
        body: Body::<Value>::Data(sections),
        footer: None,
    };
    Sendable::builder()
        .message(envelope)
        .message_format(BATCH_MESSAGE_FORMAT)
        .build()
}

/// The rejection condition of an outcome, or None when accepted.
pub fn rejection(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Accepted(_) => None,
        Outcome::Rejected(r) => Some(
            r.error
                .as_ref()
                .map(|e| {
                    serde_amqp::to_value(&e.condition)
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_default()
                })
                .unwrap_or_default(),
        ),
        other => Some(format!("{other:?}")),
    }
}

/// The value of an annotation on a received message.
pub fn annotation<B>(message: &Message<B>, name: &str) -> Option<Value> {
    message
        .message_annotations
        .as_ref()?
        .0
        .get(&OwnedKey::Symbol(Symbol::from(name)))
        .cloned()
}

pub async fn emulator() -> Emulator {
    Emulator::builder()
        .hub("hub", 4)
        .start()
        .await
        .expect("emulator starts")
}

impl TestClient {
    /// Connects over plain TCP to an emulator at `addr` that runs elsewhere (e.g. the binary),
    /// with SASL ANONYMOUS, and begins one session.
    /// The socket has TCP_NODELAY set (fe2o3 leaves Nagle on), so small request frames are not
    /// held back waiting for delayed acknowledgements.
    pub async fn connect_addr(addr: std::net::SocketAddr) -> Self {
        let stream = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
            .await
            .expect("TCP connect in time")
            .expect("TCP connects");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut connection = tokio::time::timeout(
            STEP,
            Connection::builder()
                .container_id("emulator-test")
                .sasl_profile(SaslProfile::Anonymous)
                .hostname(addr.ip().to_string().as_str())
                .open_with_stream(stream),
        )
        .await
        .expect("connect in time")
        .expect("connection opens");
        let session = tokio::time::timeout(STEP, Session::begin(&mut connection))
            .await
            .expect("session begins in time")
            .expect("session begins");
        Self {
            connection,
            session,
            host: format!("{}:{}", addr.ip(), addr.port()),
            requests: Vec::new(),
            next_id: 0,
        }
    }

    /// Authorizes `path` with a SAS token signed by `key` (for an emulator run elsewhere).
    pub async fn authorize_with_key(&mut self, key: &eventhubs_emulator::sas::SasKey, path: &str) {
        let audience = self.audience(path);
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            + 3600;
        let token = eventhubs_emulator::sas::generate_sas_token(&audience, key, expiry);
        self.put_valid_sas(&audience, &token).await;
    }
}

/// The symbol of an AMQP error condition, e.g. `amqp:link:detach-forced`.
pub fn condition_symbol(condition: &fe2o3_amqp::types::definitions::ErrorCondition) -> String {
    match serde_amqp::to_value(condition) {
        Ok(Value::Symbol(symbol)) => symbol.as_str().to_string(),
        other => panic!("an error condition encodes as a symbol, not {other:?}"),
    }
}

/// The symbol of a rejected outcome's error condition; None when accepted. Panics on other
/// outcomes and on a rejection without an error.
pub fn rejected_with(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Accepted(_) => None,
        Outcome::Rejected(r) => Some(condition_symbol(
            &r.error
                .as_ref()
                .expect("a rejection carries an error")
                .condition,
        )),
        other => panic!("expected accepted or rejected, got {other:?}"),
    }
}

/// The map of a `$management` READ reply, keyed by string.
pub fn reply_map(reply: &Reply) -> std::collections::BTreeMap<String, Value> {
    match &reply.body {
        Body::Value(AmqpValue(Value::Map(map))) => map
            .iter()
            .map(|(k, v)| match k {
                Value::String(k) => (k.clone(), v.clone()),
                other => panic!("management map keys are strings, not {other:?}"),
            })
            .collect(),
        other => panic!("expected a map body, got {other:?}"),
    }
}

/// Waits (polling, up to [`STEP`]) until `condition` holds; panics naming `what` otherwise.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let polled = tokio::time::timeout(STEP, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting until {what}");
}

// ---------------------------------------------------------------------------------------------
// Helpers of the protocol suites (cbs, management, producer and consumer links, idempotence,
// TLS, robustness).
// ---------------------------------------------------------------------------------------------

/// The put-token `type` of SAS tokens.
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

impl TestClient {
    /// Begins a session on a connection opened elsewhere (e.g. over TLS); `host` is `HOST:PORT`
    /// as audiences should name it.
    pub async fn over(mut connection: ConnectionHandle<()>, host: &str) -> Self {
        let session = tokio::time::timeout(STEP, Session::begin(&mut connection))
            .await
            .expect("session begins in time")
            .expect("session begins");
        Self {
            connection,
            session,
            host: host.to_string(),
            requests: Vec::new(),
            next_id: 0,
        }
    }

    /// `HOST:PORT` of the emulator, as audiences name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends `message` as it is (no message-id or reply-to added) to `$cbs` or `$management`
    /// on the links `request` uses, and returns the next reply on the node's receiving link.
    pub async fn exchange(
        &mut self,
        node: &str,
        message: Message<Body<Value>>,
    ) -> Message<Body<Value>> {
        self.ensure_request_links(node).await;
        let (_, sender, receiver) = self
            .requests
            .iter_mut()
            .find(|(n, _, _)| n == node)
            .expect("links");
        let outcome = tokio::time::timeout(STEP, sender.send(message))
            .await
            .expect("request sent in time")
            .expect("request sent");
        assert!(
            matches!(outcome, Outcome::Accepted(_)),
            "request not accepted: {outcome:?}"
        );
        let delivery: Delivery<Body<Value>> = tokio::time::timeout(STEP, receiver.recv())
            .await
            .expect("reply in time")
            .expect("reply received");
        receiver.accept(&delivery).await.expect("settle reply");
        delivery.into_message()
    }

    async fn ensure_request_links(&mut self, node: &str) {
        if self.requests.iter().any(|(n, _, _)| n == node) {
            return;
        }
        let sender = Sender::attach(&mut self.session, format!("{node}-sender"), node)
            .await
            .expect("request link");
        let receiver = Receiver::builder()
            .name(format!("{node}-receiver"))
            .source(node)
            .target(format!("{node}-replies"))
            .attach(&mut self.session)
            .await
            .expect("reply link");
        self.requests.push((node.to_string(), sender, receiver));
    }

    /// put-token of a SAS token for `audience`, signed with the emulator's key, valid `validity`.
    pub async fn put_sas(
        &mut self,
        emulator: &Emulator,
        audience: &str,
        validity: Duration,
    ) -> Reply {
        let token = emulator.sas_token(audience, validity);
        self.put_token(audience, &token, SimpleValue::String(SAS_TOKEN_TYPE.into()))
            .await
    }
}

/// A `$cbs` / `$management` request message with the given application properties.
pub fn request_message(
    message_id: Option<MessageId>,
    reply_to: Option<&str>,
    properties: &[(&str, SimpleValue)],
    body: Body<Value>,
) -> Message<Body<Value>> {
    let mut props = ApplicationProperties::builder();
    for (k, v) in properties {
        props = props.insert(k.to_string(), v.clone());
    }
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            message_id,
            reply_to: reply_to.map(str::to_string),
            ..Default::default()
        }),
        application_properties: Some(props.build()),
        body,
        footer: None,
    }
}

/// An application property of a message.
pub fn app_property<B>(message: &Message<B>, name: &str) -> Option<SimpleValue> {
    message
        .application_properties
        .as_ref()?
        .0
        .get(name)
        .cloned()
}

/// The condition of the error a link ended with, as a send reports it; None for other errors.
pub fn send_error_condition(error: &fe2o3_amqp::link::SendError) -> Option<String> {
    use fe2o3_amqp::link::{DetachError, LinkStateError, SendError};
    match error {
        SendError::Detached(
            DetachError::RemoteClosedWithError(e) | DetachError::RemoteDetachedWithError(e),
        )
        | SendError::LinkStateError(
            LinkStateError::RemoteClosedWithError(e) | LinkStateError::RemoteDetachedWithError(e),
        ) => Some(condition_symbol(&e.condition)),
        _ => None,
    }
}

/// The condition of the error a link ended with, as a receive reports it; None for other errors.
pub fn recv_error_condition(error: &fe2o3_amqp::link::RecvError) -> Option<String> {
    use fe2o3_amqp::link::{LinkStateError, RecvError};
    match error {
        RecvError::LinkStateError(
            LinkStateError::RemoteClosedWithError(e) | LinkStateError::RemoteDetachedWithError(e),
        ) => Some(condition_symbol(&e.condition)),
        _ => None,
    }
}

/// The condition of the error a remote detach carried; None for other detach outcomes.
pub fn detach_error_condition(error: &fe2o3_amqp::link::DetachError) -> Option<String> {
    use fe2o3_amqp::link::DetachError;
    match error {
        DetachError::RemoteClosedWithError(e) | DetachError::RemoteDetachedWithError(e) => {
            Some(condition_symbol(&e.condition))
        }
        _ => None,
    }
}

/// Waits for the emulator to end a sender link; returns the condition it gave.
pub async fn sender_ended_with(sender: &mut Sender) -> String {
    let error = tokio::time::timeout(STEP, sender.on_detach())
        .await
        .expect("the link ends in time");
    detach_error_condition(&error)
        .unwrap_or_else(|| panic!("the link ended without an error: {error:?}"))
}

/// Waits for the emulator to end a receiver link; returns the condition it gave.
pub async fn receiver_ended_with(receiver: &mut Receiver) -> String {
    let result = tokio::time::timeout(STEP, receiver.recv::<Body<Value>>())
        .await
        .expect("the link ends in time");
    match result {
        Ok(delivery) => panic!(
            "expected the link to end, got a delivery: {:?}",
            delivery.message()
        ),
        Err(e) => recv_error_condition(&e)
            .unwrap_or_else(|| panic!("the link ended without an error: {e:?}")),
    }
}

/// The condition a sender attach was refused with: the attach completes, then a detach with
/// the error follows (fe2o3 may also report that detach from the attach itself).
pub async fn sender_refused(attach: Result<Sender, fe2o3_amqp::link::SenderAttachError>) -> String {
    use fe2o3_amqp::link::SenderAttachError;
    match attach {
        Ok(mut sender) => sender_ended_with(&mut sender).await,
        Err(SenderAttachError::RemoteClosedWithError(e)) => condition_symbol(&e.condition),
        Err(e) => panic!("attach failed without a remote error: {e:?}"),
    }
}

/// The condition a receiver attach was refused with (see [`sender_refused`]).
pub async fn receiver_refused(
    attach: Result<Receiver, fe2o3_amqp::link::ReceiverAttachError>,
) -> String {
    use fe2o3_amqp::link::ReceiverAttachError;
    match attach {
        Ok(mut receiver) => receiver_ended_with(&mut receiver).await,
        Err(ReceiverAttachError::RemoteClosedWithError(e)) => condition_symbol(&e.condition),
        Err(e) => panic!("attach failed without a remote error: {e:?}"),
    }
}

/// Attaches a sender to `address` on the client's session, bounded by [`STEP`].
pub async fn try_sender(
    client: &mut TestClient,
    name: &str,
    address: &str,
) -> Result<Sender, fe2o3_amqp::link::SenderAttachError> {
    tokio::time::timeout(STEP, Sender::attach(&mut client.session, name, address))
        .await
        .expect("attach answered in time")
}

/// Receives one delivery within [`STEP`] and accepts it.
pub async fn recv_one(receiver: &mut Receiver) -> Message<Body<Value>> {
    let delivery: Delivery<Body<Value>> = tokio::time::timeout(STEP, receiver.recv())
        .await
        .expect("a delivery in time")
        .expect("a delivery");
    receiver
        .accept(&delivery)
        .await
        .expect("accept the delivery");
    delivery.into_message()
}

/// The bytes of a message's data body (the sections joined).
pub fn data_body(message: &Message<Body<Value>>) -> Vec<u8> {
    match &message.body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.iter().copied()).collect(),
        other => panic!("expected a data body, got {other:?}"),
    }
}

/// Sends `count` plain events (bodies `"{prefix}{i}"`, property `index` = i) to `address` and
/// asserts each is accepted.
pub async fn send_events(sender: &mut Sender, prefix: &str, count: usize) {
    for i in 0..count {
        let outcome = tokio::time::timeout(
            STEP,
            sender.send(event(&format!("{prefix}{i}"), i as i64, None)),
        )
        .await
        .expect("send in time")
        .expect("send");
        assert_eq!(rejected_with(&outcome), None, "event {prefix}{i} accepted");
    }
}

/// A bare AMQP peer over TCP that frames everything itself, for what fe2o3 cannot do or show:
/// malformed input, abrupt disconnects, oversized transfers, and the remote attach's fields.
pub mod raw {
    use super::STEP;
    use eventhubs_emulator::Emulator;
    use fe2o3_amqp::types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
    use fe2o3_amqp::types::messaging::{Source, Target, TargetArchetype};
    use fe2o3_amqp::types::performatives::{
        Attach, Begin, ChannelMax, MaxFrameSize, Open, Performative, Transfer,
    };
    use fe2o3_amqp::types::primitives::{Array, Binary, Symbol};
    use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub const SASL_HEADER: &[u8; 8] = b"AMQP\x03\x01\x00\x00";
    pub const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x01\x00\x00";
    const FRAME_AMQP: u8 = 0;
    const FRAME_SASL: u8 = 1;

    /// One frame: the 8-byte header (doff 2) and the body.
    pub fn frame(frame_type: u8, channel: u16, body: &[u8]) -> Vec<u8> {
        let size = u32::try_from(8 + body.len()).expect("frame size");
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&size.to_be_bytes());
        out.push(2);
        out.push(frame_type);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    pub struct RawConnection {
        pub stream: TcpStream,
    }

    impl RawConnection {
        pub async fn tcp(emulator: &Emulator) -> Self {
            let stream = tokio::time::timeout(STEP, TcpStream::connect(emulator.local_addr()))
                .await
                .expect("connect in time")
                .expect("connect");
            Self { stream }
        }

        /// TCP, SASL ANONYMOUS, open, and a session on channel 0.
        pub async fn handshake(emulator: &Emulator) -> Self {
            let mut raw = Self::tcp(emulator).await;
            raw.sasl_anonymous().await;
            raw.open().await;
            raw.begin().await;
            raw
        }

        pub async fn write(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.expect("write");
        }

        async fn read_exact(&mut self, n: usize) -> Option<Vec<u8>> {
            let mut buf = vec![0; n];
            match tokio::time::timeout(STEP, self.stream.read_exact(&mut buf))
                .await
                .expect("read in time")
            {
                Ok(_) => Some(buf),
                Err(_) => None,
            }
        }

        /// Reads the emulator's protocol header and checks it is `expected`.
        pub async fn expect_header(&mut self, expected: &[u8; 8]) {
            let header = self.read_exact(8).await.expect("a protocol header");
            assert_eq!(&header, expected, "protocol header");
        }

        /// The next frame as (type, channel, body); None at end of stream.
        pub async fn read_frame(&mut self) -> Option<(u8, u16, Vec<u8>)> {
            let size =
                u32::from_be_bytes(self.read_exact(4).await?.try_into().expect("4 bytes")) as usize;
            assert!(size >= 8, "frame size {size} below the header size");
            let rest = self.read_exact(size - 4).await?;
            let body_start = usize::from(rest[0]) * 4 - 4;
            let channel = u16::from_be_bytes([rest[2], rest[3]]);
            Some((rest[1], channel, rest[body_start..].to_vec()))
        }

        pub async fn sasl_anonymous(&mut self) {
            self.write(SASL_HEADER).await;
            let header = self.read_exact(8).await.expect("SASL header back");
            assert_eq!(&header, SASL_HEADER);
            let (frame_type, _, _mechanisms) = self.read_frame().await.expect("sasl-mechanisms");
            assert_eq!(frame_type, FRAME_SASL);
            let init = SaslInit {
                mechanism: Symbol::from("ANONYMOUS"),
                initial_response: None,
                hostname: None,
            };
            let body = serde_amqp::to_vec(&init).expect("encode sasl-init");
            self.write(&frame(FRAME_SASL, 0, &body)).await;
            let (frame_type, _, body) = self.read_frame().await.expect("sasl-outcome");
            assert_eq!(frame_type, FRAME_SASL);
            let outcome: SaslOutcome = serde_amqp::from_slice(&body).expect("decode sasl-outcome");
            assert!(
                matches!(outcome.code, SaslCode::Ok),
                "SASL outcome {:?}",
                outcome.code
            );
        }

        pub async fn open(&mut self) {
            self.write(AMQP_HEADER).await;
            let header = self.read_exact(8).await.expect("AMQP header back");
            assert_eq!(&header, AMQP_HEADER);
            let open = Open {
                container_id: "raw-test".into(),
                hostname: None,
                max_frame_size: MaxFrameSize(65536),
                channel_max: ChannelMax(16),
                idle_time_out: None,
                outgoing_locales: None,
                incoming_locales: None,
                offered_capabilities: None,
                desired_capabilities: None,
                properties: None,
            };
            self.send(Performative::Open(open), &[]).await;
            let reply = self.next_performative().await;
            assert!(
                matches!(reply, Some(Performative::Open(_))),
                "expected open, got {reply:?}"
            );
        }

        pub async fn begin(&mut self) {
            let begin = Begin {
                remote_channel: None,
                next_outgoing_id: 0,
                incoming_window: 65536,
                outgoing_window: 65536,
                handle_max: Handle(1024),
                offered_capabilities: None,
                desired_capabilities: None,
                properties: None,
            };
            self.send(Performative::Begin(begin), &[]).await;
            let reply = self.next_performative().await;
            assert!(
                matches!(reply, Some(Performative::Begin(_))),
                "expected begin, got {reply:?}"
            );
        }

        /// Sends a performative (and a transfer's payload) on channel 0.
        pub async fn send(&mut self, performative: Performative, payload: &[u8]) {
            let mut body = serde_amqp::to_vec(&performative).expect("encode performative");
            body.extend_from_slice(payload);
            self.write(&frame(FRAME_AMQP, 0, &body)).await;
        }

        /// The next performative, skipping empty (heartbeat) frames; None at end of stream.
        pub async fn next_performative(&mut self) -> Option<Performative> {
            loop {
                let (frame_type, _, body) = self.read_frame().await?;
                assert_eq!(frame_type, FRAME_AMQP, "an AMQP frame");
                if body.is_empty() {
                    continue;
                }
                return Some(serde_amqp::from_slice(&body).expect("decode performative"));
            }
        }

        /// Skips performatives until `pick` returns something; panics at end of stream.
        pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(Performative) -> Option<T>) -> T {
            loop {
                let performative = self
                    .next_performative()
                    .await
                    .expect("the stream ended first");
                if let Some(found) = pick(performative) {
                    return found;
                }
            }
        }

        /// Reads (and drops) whatever the emulator still sends until it closes the stream.
        /// Returns false when it is still open after [`STEP`].
        pub async fn closed_by_peer(&mut self) -> bool {
            let mut buf = [0u8; 4096];
            let drained = tokio::time::timeout(STEP, async {
                loop {
                    match self.stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            drained.is_ok()
        }
    }

    /// A sender's attach to `address` (the client sends, the emulator receives).
    pub fn sender_attach(name: &str, handle: u32, address: &str) -> Attach {
        Attach {
            name: name.to_string(),
            handle: Handle(handle),
            role: Role::Sender,
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(Box::new(
                Source::builder().address(format!("{name}-source")).build(),
            )),
            target: Some(Box::new(TargetArchetype::Target(
                Target::builder().address(address.to_string()).build(),
            ))),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: Some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }
    }

    /// A receiver's attach from `address` (the emulator sends, the client receives).
    pub fn receiver_attach(name: &str, handle: u32, address: &str) -> Attach {
        Attach {
            name: name.to_string(),
            handle: Handle(handle),
            role: Role::Receiver,
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(Box::new(
                Source::builder().address(address.to_string()).build(),
            )),
            target: Some(Box::new(TargetArchetype::Target(
                Target::builder().address(format!("{name}-target")).build(),
            ))),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: None,
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }
    }

    /// The first transfer of a single-frame, unsettled delivery.
    pub fn transfer(handle: u32, delivery_id: u32) -> Transfer {
        Transfer {
            handle: Handle(handle),
            delivery_id: Some(delivery_id),
            delivery_tag: Some(Binary::from(delivery_id.to_be_bytes().to_vec())),
            message_format: Some(0),
            settled: Some(false),
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        }
    }

    /// Whether the capabilities list the symbol.
    pub fn has_capability(capabilities: &Option<Array<Symbol>>, name: &str) -> bool {
        capabilities
            .as_ref()
            .is_some_and(|c| c.0.iter().any(|s| s.as_str() == name))
    }
}
