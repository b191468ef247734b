//! Requests to `$cbs` (put-token) and `$management` (READ), as the request links hand them to
//! the emulator.
//!
//! Input: one byte of options, then the request. Bit 0 picks the node (`$cbs` or
//! `$management`). With bit 1 clear the rest is the transfer payload, decoded as the link does.
//! With bit 1 set the rest describes a request that the target builds and signs with the
//! emulator's key (operation, audience or hub, token type, resource, expiry, key name,
//! expiration, partition), so the fuzzer reaches what follows a valid signature, which it could
//! never forge.
//!
//! Checks, beyond no panic: every reply has an integer status code and the request's message
//! id as correlation id, and encodes; a put-token answered 202 authorizes its audience.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use eventhubs_emulator::fuzzing::{decode_message, Harness};
use eventhubs_emulator::sas::{generate_sas_token, SasKey};
use eventhubs_emulator::{DEFAULT_KEY, DEFAULT_KEY_NAME};
use fe2o3_amqp_types::messaging::message::__private::Serializable;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Timestamp, Value};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct SignedRequest {
    operation: Choice,
    /// Audience (`$cbs`) or hub name (`$management`).
    name: Choice,
    token_type: Choice,
    resource: Choice,
    expiry: Expiry,
    right_key_name: bool,
    jwt_expiration_ms: Option<i64>,
    partition: Option<String>,
    message_id: Option<u64>,
}

/// A field's value: one the emulator knows, or anything.
#[derive(Debug, Arbitrary)]
enum Choice {
    Known(u8),
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Expiry {
    /// Seconds from now (negative: in the past).
    FromNow(i32),
    At(u64),
}

const KNOWN: [&str; 12] = [
    "put-token",
    "READ",
    "sb://localhost/hub",
    "amqps://localhost/hub/Partitions/0",
    "sb://localhost/",
    "hub",
    "servicebus.windows.net:sastoken",
    "jwt",
    "com.microsoft:eventhub",
    "com.microsoft:partition",
    "sb://localhost/other",
    "",
];

impl Choice {
    fn text(&self) -> String {
        match self {
            Choice::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].to_string(),
            Choice::Other(s) => s.clone(),
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl SignedRequest {
    fn build(&self, to_cbs: bool) -> Message<Body<Value>> {
        let expiry = match self.expiry {
            Expiry::FromNow(seconds) => now_unix().saturating_add_signed(i64::from(seconds)),
            Expiry::At(at) => at,
        };
        let key = SasKey {
            name: if self.right_key_name {
                DEFAULT_KEY_NAME.to_string()
            } else {
                "SomeOtherKey".to_string()
            },
            key: DEFAULT_KEY.to_string(),
        };
        let token = generate_sas_token(&self.resource.text(), &key, expiry);
        let token_type = self.token_type.text();
        let mut props = ApplicationProperties::builder()
            .insert("operation", SimpleValue::String(self.operation.text()))
            .insert("name", SimpleValue::String(self.name.text()))
            .insert("type", SimpleValue::String(token_type));
        if let Some(ms) = self.jwt_expiration_ms {
            props = props.insert(
                "expiration",
                SimpleValue::Timestamp(Timestamp::from_milliseconds(ms)),
            );
        }
        if let Some(partition) = &self.partition {
            props = props.insert("partition", SimpleValue::String(partition.clone()));
        }
        let body = if to_cbs {
            Body::Value(AmqpValue(Value::String(token)))
        } else {
            props = props.insert("security_token", SimpleValue::String(token));
            Body::Empty
        };
        Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                message_id: self.message_id.map(MessageId::Ulong),
                reply_to: Some("cbs-reply".into()),
                ..Default::default()
            }),
            application_properties: Some(props.build()),
            body,
            footer: None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let to_cbs = options & 1 == 0;
    let request = if options & 2 == 0 {
        match decode_message(rest) {
            Ok(request) => request,
            // The request link ends on a payload that does not decode.
            Err(_) => return,
        }
    } else {
        match SignedRequest::arbitrary_take_rest(Unstructured::new(rest)) {
            Ok(signed) => signed.build(to_cbs),
            Err(_) => return,
        }
    };
    let harness = Harness::new();
    let reply = if to_cbs {
        harness.cbs(&request)
    } else {
        harness.management(&request)
    };
    check_reply(&request, &reply);
    if to_cbs && status(&reply) == Some(202) {
        let audience = text(&request, "name").unwrap_or_default();
        assert!(
            harness.is_authorized(&audience),
            "an accepted put-token granted nothing"
        );
    }
});

fn status(reply: &Message<Body<Value>>) -> Option<i32> {
    match reply
        .application_properties
        .as_ref()?
        .0
        .get("status-code")?
    {
        SimpleValue::Int(code) => Some(*code),
        _ => None,
    }
}

fn text(message: &Message<Body<Value>>, name: &str) -> Option<String> {
    match message.application_properties.as_ref()?.0.get(name)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.as_str().to_string()),
        SimpleValue::Binary(b) => String::from_utf8(b.to_vec()).ok(),
        _ => None,
    }
}

fn check_reply(request: &Message<Body<Value>>, reply: &Message<Body<Value>>) {
    let code = status(reply);
    assert!(
        matches!(code, Some(200 | 202 | 400 | 401 | 404)),
        "unexpected status {code:?}"
    );
    let message_id = request
        .properties
        .as_ref()
        .and_then(|p| p.message_id.clone());
    let correlation_id = reply
        .properties
        .as_ref()
        .and_then(|p| p.correlation_id.clone());
    assert_eq!(message_id, correlation_id, "the reply does not correlate");
    if let Err(error) = serde_amqp::to_vec(&Serializable(reply.clone())) {
        panic!("a reply does not encode: {error}");
    }
}
