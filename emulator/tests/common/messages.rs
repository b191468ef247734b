//! Messages as clients send them (events, batches) and reading what comes back (outcomes,
//! annotations, management replies).

use eventhubs_emulator::BATCH_MESSAGE_FORMAT;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Batch, Body, Data, Message, MessageAnnotations, Outcome,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Value};
use fe2o3_amqp::Sendable;

use super::*;

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

/// An application property of a message.
pub fn app_property<B>(message: &Message<B>, name: &str) -> Option<SimpleValue> {
    message
        .application_properties
        .as_ref()?
        .0
        .get(name)
        .cloned()
}

/// The bytes of a message's data body (the sections joined).
pub fn data_body(message: &Message<Body<Value>>) -> Vec<u8> {
    match &message.body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.iter().copied()).collect(),
        other => panic!("expected a data body, got {other:?}"),
    }
}
