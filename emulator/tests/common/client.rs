//! `TestClient`: a connection with one session, `$cbs` and `$management` requests, senders
//! and receivers, built directly on fe2o3-amqp.

use std::time::Duration;

use eventhubs_emulator::Emulator;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Outcome, Properties, Source,
};
use fe2o3_amqp::types::primitives::{SimpleValue, Symbol, Value};
use fe2o3_amqp::{Connection, Delivery, Session};

use super::*;

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
