//! Reading the parts of an AMQP message the service cares about, and building replies.

use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageAnnotations, Properties,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};

/// The message format of a batch: each data section holds one encoded event.
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

/// Annotation naming the partition key of an event.
pub(crate) const PARTITION_KEY: &str = "x-opt-partition-key";

/// A message annotation looked up by its symbol (or string) key.
pub(crate) fn annotation<'a>(
    annotations: &'a Option<MessageAnnotations>,
    name: &str,
) -> Option<&'a Value> {
    annotations.as_ref()?.0.iter().find_map(|(k, v)| {
        let key = match k {
            OwnedKey::Symbol(s) => s.as_str(),
            OwnedKey::Ulong(_) => return None,
        };
        (key == name).then_some(v)
    })
}

/// The partition key stamped on a message, if any (empty counts as none).
pub(crate) fn partition_key<B>(message: &Message<B>) -> Option<String> {
    match annotation(&message.message_annotations, PARTITION_KEY)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Symbol(s) if !s.as_str().is_empty() => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// An application property as text: requests send names and operations as string, symbol or
/// binary depending on the client.
pub(crate) fn text_property<B>(message: &Message<B>, name: &str) -> Option<String> {
    let value = message.application_properties.as_ref()?.0.get(name)?;
    simple_text(value)
}

pub(crate) fn simple_text(value: &SimpleValue) -> Option<String> {
    match value {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.as_str().to_string()),
        SimpleValue::Binary(b) => String::from_utf8(b.to_vec()).ok(),
        _ => None,
    }
}

/// The body of a request as text (put-token carries the token as an amqp-value string).
pub(crate) fn body_text(body: &Body<Value>) -> Option<String> {
    match body {
        Body::Value(AmqpValue(Value::String(s))) => Some(s.clone()),
        Body::Value(AmqpValue(Value::Symbol(s))) => Some(s.as_str().to_string()),
        Body::Value(AmqpValue(Value::Binary(b))) => String::from_utf8(b.to_vec()).ok(),
        Body::Data(batch) => batch
            .iter()
            .next()
            .and_then(|d| String::from_utf8(d.0.to_vec()).ok()),
        _ => None,
    }
}

/// A reply to a `$cbs` or `$management` request. The service leaves `status-description` out
/// of a successful `$management` answer, hence the option.
pub(crate) fn reply(
    request: &Message<Body<Value>>,
    status_code: i32,
    description: Option<&str>,
    error_condition: Option<&str>,
    body: Body<Value>,
) -> Message<Body<Value>> {
    let mut props =
        ApplicationProperties::builder().insert("status-code", SimpleValue::Int(status_code));
    if let Some(description) = description {
        props = props.insert(
            "status-description",
            SimpleValue::String(description.to_string()),
        );
    }
    if let Some(condition) = error_condition {
        props = props.insert(
            "error-condition",
            SimpleValue::String(condition.to_string()),
        );
    }
    let correlation_id = request
        .properties
        .as_ref()
        .and_then(|p| p.message_id.clone());
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            correlation_id,
            ..Default::default()
        }),
        application_properties: Some(props.build()),
        body,
        footer: None,
    }
}

/// Where to send the reply: the request's reply-to, if it has one.
pub(crate) fn reply_to<B>(message: &Message<B>) -> Option<String> {
    let address = message.properties.as_ref()?.reply_to.as_ref()?;
    Some(address.to_string())
}
