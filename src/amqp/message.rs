//! Encoding events as AMQP 1.0 messages.
//!
//! Events are encoded by hand, once, straight into their final bytes: a batch's data sections
//! are these bytes, so a batch is sized exactly and sent without encoding its events again.
//! The layout is the standard one (message-annotations, properties, application-properties,
//! data); the tests decode it with fe2o3's own types to prove it.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{EventData, PropertyValue};

/// Message format of a batch envelope whose data sections each hold one encoded event.
pub(crate) const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;
/// Annotation carrying the partition key.
pub(crate) const PARTITION_KEY_ANNOTATION: &str = "x-opt-partition-key";
/// Desired capability of an idempotent producer link.
pub(crate) const IDEMPOTENT_PRODUCER_CAPABILITY: &str = "com.microsoft:idempotent-producer";
/// Link property and event annotation: an idempotent producer's sequence number (int).
pub(crate) const PRODUCER_SEQUENCE_NUMBER: &str = "com.microsoft:producer-sequence-number";
/// Link property and event annotation: an idempotent producer's id (long).
pub(crate) const PRODUCER_ID: &str = "com.microsoft:producer-id";
/// Link property and event annotation: an idempotent producer's epoch (short).
pub(crate) const PRODUCER_EPOCH: &str = "com.microsoft:producer-epoch";

const MESSAGE_ANNOTATIONS: u8 = 0x72;
const PROPERTIES: u8 = 0x73;
const APPLICATION_PROPERTIES: u8 = 0x74;
const DATA: u8 = 0x75;

/// Encoded size of a data section holding `len` bytes: the section descriptor (3 bytes) and a
/// vbin8 (2) or vbin32 (5) header. These are the 5 or 8 bytes every SDK counts per event.
pub(crate) fn data_section_size(len: usize) -> usize {
    3 + if len <= u8::MAX as usize { 2 } else { 5 } + len
}

/// An annotation value the producer stamps on events.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AnnotationValue<'a> {
    String(&'a str),
    /// Always in the 4-byte form, so it can be overwritten in place.
    Int(i32),
    /// Always in the 8-byte form, so it can be overwritten in place.
    Long(i64),
    Short(i16),
}

/// Writes AMQP-encoded values into a byte vector.
struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    fn section(&mut self, code: u8) {
        self.out.extend_from_slice(&[0x00, 0x53, code]);
    }

    fn null(&mut self) {
        self.out.push(0x40);
    }

    fn variable(&mut self, small: u8, large: u8, bytes: &[u8]) {
        match u8::try_from(bytes.len()) {
            Ok(len) => self.out.extend_from_slice(&[small, len]),
            Err(_) => {
                self.out.push(large);
                self.out
                    .extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            }
        }
        self.out.extend_from_slice(bytes);
    }

    fn string(&mut self, s: &str) {
        self.variable(0xa1, 0xb1, s.as_bytes());
    }

    fn symbol(&mut self, s: &str) {
        self.variable(0xa3, 0xb3, s.as_bytes());
    }

    fn binary(&mut self, b: &[u8]) {
        self.variable(0xa0, 0xb0, b);
    }

    fn long(&mut self, v: i64) {
        match i8::try_from(v) {
            Ok(small) => self.out.extend_from_slice(&[0x55, small as u8]),
            Err(_) => {
                self.out.push(0x81);
                self.out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    fn int(&mut self, v: i32) {
        match i8::try_from(v) {
            Ok(small) => self.out.extend_from_slice(&[0x54, small as u8]),
            Err(_) => {
                self.out.push(0x71);
                self.out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    fn timestamp(&mut self, t: SystemTime) {
        let ms = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        };
        self.out.push(0x83);
        self.out.extend_from_slice(&ms.to_be_bytes());
    }

    fn property(&mut self, value: &PropertyValue) {
        match value {
            PropertyValue::String(s) => self.string(s),
            PropertyValue::Bool(b) => self.out.push(if *b { 0x41 } else { 0x42 }),
            PropertyValue::I8(v) => self.out.extend_from_slice(&[0x51, *v as u8]),
            PropertyValue::I16(v) => {
                self.out.push(0x61);
                self.out.extend_from_slice(&v.to_be_bytes());
            }
            PropertyValue::I32(v) => self.int(*v),
            PropertyValue::I64(v) => self.long(*v),
            PropertyValue::U8(v) => self.out.extend_from_slice(&[0x50, *v]),
            PropertyValue::U16(v) => {
                self.out.push(0x60);
                self.out.extend_from_slice(&v.to_be_bytes());
            }
            PropertyValue::U32(v) => match u8::try_from(*v) {
                Ok(small) => self.out.extend_from_slice(&[0x52, small]),
                Err(_) => {
                    self.out.push(0x70);
                    self.out.extend_from_slice(&v.to_be_bytes());
                }
            },
            PropertyValue::U64(v) => match u8::try_from(*v) {
                Ok(small) => self.out.extend_from_slice(&[0x53, small]),
                Err(_) => {
                    self.out.push(0x80);
                    self.out.extend_from_slice(&v.to_be_bytes());
                }
            },
            PropertyValue::F32(v) => {
                self.out.push(0x72);
                self.out.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            PropertyValue::F64(v) => {
                self.out.push(0x82);
                self.out.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            PropertyValue::Binary(b) => self.binary(b),
            PropertyValue::Uuid(u) => {
                self.out.push(0x98);
                self.out.extend_from_slice(u);
            }
            PropertyValue::Timestamp(t) => self.timestamp(*t),
        }
    }

    fn annotation(&mut self, value: &AnnotationValue<'_>) {
        match value {
            AnnotationValue::String(s) => self.string(s),
            AnnotationValue::Int(v) => {
                self.out.push(0x71);
                self.out.extend_from_slice(&v.to_be_bytes());
            }
            AnnotationValue::Long(v) => {
                self.out.push(0x81);
                self.out.extend_from_slice(&v.to_be_bytes());
            }
            AnnotationValue::Short(v) => {
                self.out.push(0x61);
                self.out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    /// Writes a map or list whose `count` elements `write` appends, choosing the compact
    /// (8-bit) form when it fits.
    fn compound(&mut self, small: u8, large: u8, count: usize, write: impl FnOnce(&mut Self)) {
        let header_at = self.out.len();
        self.out.extend_from_slice(&[0; 9]);
        let body_at = self.out.len();
        write(self);
        let body_len = self.out.len() - body_at;
        if count <= 255 && body_len < 255 {
            self.out[header_at] = small;
            self.out[header_at + 1] = (body_len + 1) as u8;
            self.out[header_at + 2] = count as u8;
            self.out.copy_within(body_at.., header_at + 3);
            self.out.truncate(self.out.len() - 6);
        } else {
            self.out[header_at] = large;
            self.out[header_at + 1..header_at + 5]
                .copy_from_slice(&((body_len + 4) as u32).to_be_bytes());
            self.out[header_at + 5..header_at + 9].copy_from_slice(&(count as u32).to_be_bytes());
        }
    }
}

/// Encodes the message-annotations section with symbol keys, if there are any annotations.
fn encode_annotations(out: &mut Vec<u8>, annotations: &[(&str, AnnotationValue<'_>)]) {
    if annotations.is_empty() {
        return;
    }
    let mut e = Encoder { out };
    e.section(MESSAGE_ANNOTATIONS);
    e.compound(0xc1, 0xd1, annotations.len() * 2, |e| {
        for (key, value) in annotations {
            e.symbol(key);
            e.annotation(value);
        }
    });
}

/// The room an encoding of `event` is first given: its body and a little per property.
fn encoding_capacity(event: &EventData) -> usize {
    event.body().len() + 32 + event.properties().len() * 24
}

/// The room a batch encoding of `event` ([`encode_batch_event`]) is given: enough for it in
/// most cases, so that its buffer seldom grows (growing doubles it).
pub(crate) fn batch_encoding_capacity(
    event: &EventData,
    partition_key: Option<&str>,
    idempotent: bool,
) -> usize {
    let ids = event.message_id().map_or(0, str::len)
        + event.correlation_id().map_or(0, str::len)
        + event.content_type().map_or(0, str::len);
    let key = partition_key.map_or(0, |key| key.len() + 32);
    let publishing = if idempotent { 128 } else { 0 };
    encoding_capacity(event) + ids + key + publishing
}

/// Encodes one event as a complete AMQP message, with the given message annotations.
#[cfg(test)]
pub(crate) fn encode_event(
    event: &EventData,
    annotations: &[(&str, AnnotationValue<'_>)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoding_capacity(event));
    encode_event_into(&mut out, event, annotations);
    out
}

/// Encodes one event at the end of `out`.
fn encode_event_into(
    out: &mut Vec<u8>,
    event: &EventData,
    annotations: &[(&str, AnnotationValue<'_>)],
) {
    let properties = event.properties();
    encode_annotations(out, annotations);
    let mut e = Encoder { out };
    encode_properties_section(&mut e, event);
    if !properties.is_empty() {
        e.section(APPLICATION_PROPERTIES);
        e.compound(0xc1, 0xd1, properties.len() * 2, |e| {
            for (name, value) in properties {
                e.string(name);
                e.property(value);
            }
        });
    }
    e.section(DATA);
    e.binary(event.body());
}

/// Encodes one event for a batch: with the partition key annotation when there is a key, and,
/// for an idempotent producer, with its three publishing annotations first, holding
/// placeholders of their final width that [`stamp_publishing`] overwrites at send time.
pub(crate) fn encode_batch_event(
    event: &EventData,
    partition_key: Option<&str>,
    idempotent: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch_encoding_capacity(event, partition_key, idempotent));
    encode_batch_event_into(&mut out, event, partition_key, idempotent);
    out
}

/// [`encode_batch_event`] into `out` (emptied first), reusing its allocation.
pub(crate) fn encode_batch_event_into(
    out: &mut Vec<u8>,
    event: &EventData,
    partition_key: Option<&str>,
    idempotent: bool,
) {
    out.clear();
    let mut annotations: [(&str, AnnotationValue<'_>); 4] = [
        (PRODUCER_SEQUENCE_NUMBER, AnnotationValue::Int(0)),
        (PRODUCER_ID, AnnotationValue::Long(0)),
        (PRODUCER_EPOCH, AnnotationValue::Short(0)),
        (PARTITION_KEY_ANNOTATION, AnnotationValue::String("")),
    ];
    let first = if idempotent { 0 } else { 3 };
    let last = match partition_key {
        Some(key) => {
            annotations[3].1 = AnnotationValue::String(key);
            4
        }
        None => 3,
    };
    encode_event_into(out, event, &annotations[first..last]);
}

/// The publishing annotations of an encoded event don't sit where [`encode_batch_event`]
/// puts them: the event was not encoded for an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotStampable;

/// Writes an idempotent producer's id, epoch and sequence number over the placeholders of an
/// event encoded by [`encode_batch_event`] for an idempotent producer; the size is unchanged.
pub(crate) fn stamp_publishing(
    encoded: &mut [u8],
    producer_id: i64,
    epoch: i16,
    sequence_number: i32,
) -> Result<(), NotStampable> {
    if encoded.get(..3) != Some(&[0x00, 0x53, MESSAGE_ANNOTATIONS][..]) {
        return Err(NotStampable);
    }
    let mut at = match encoded.get(3) {
        Some(0xc1) => 6,
        Some(0xd1) => 12,
        _ => return Err(NotStampable),
    };
    let fields: [(&str, u8, &[u8]); 3] = [
        (
            PRODUCER_SEQUENCE_NUMBER,
            0x71,
            &sequence_number.to_be_bytes(),
        ),
        (PRODUCER_ID, 0x81, &producer_id.to_be_bytes()),
        (PRODUCER_EPOCH, 0x61, &epoch.to_be_bytes()),
    ];
    for (key, constructor, value) in fields {
        let key_end = at + 2 + key.len();
        let value_end = key_end + 1 + value.len();
        if value_end > encoded.len()
            || encoded[at] != 0xa3
            || usize::from(encoded[at + 1]) != key.len()
            || &encoded[at + 2..key_end] != key.as_bytes()
            || encoded[key_end] != constructor
        {
            return Err(NotStampable);
        }
        encoded[key_end + 1..value_end].copy_from_slice(value);
        at = value_end;
    }
    Ok(())
}

/// A text field of the properties section, and whether it is a symbol (content-type is).
type TextField<'a> = Option<(&'a str, bool)>;

/// Writes the properties section when the event has a message id, correlation id or content
/// type; trailing unset fields are left out, as AMQP allows.
fn encode_properties_section(e: &mut Encoder<'_>, event: &EventData) {
    // message-id, user-id, to, subject, reply-to, correlation-id, content-type
    let fields: [TextField<'_>; 7] = [
        event.message_id().map(|v| (v, false)),
        None,
        None,
        None,
        None,
        event.correlation_id().map(|v| (v, false)),
        event.content_type().map(|v| (v, true)),
    ];
    let Some(count) = fields
        .iter()
        .rposition(Option::is_some)
        .map(|last| last + 1)
    else {
        return;
    };
    e.section(PROPERTIES);
    e.compound(0xc0, 0xd0, count, |e| {
        for field in &fields[..count] {
            match field {
                Some((text, true)) => e.symbol(text),
                Some((text, false)) => e.string(text),
                None => e.null(),
            }
        }
    });
}

/// The sections of a batch envelope before its data sections: the partition key annotation.
pub(crate) fn encode_envelope_head(partition_key: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(key) = partition_key {
        encode_annotations(
            &mut out,
            &[(PARTITION_KEY_ANNOTATION, AnnotationValue::String(key))],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::messaging::annotations::OwnedKey;
    use fe2o3_amqp_types::messaging::message::__private::Deserializable;
    use fe2o3_amqp_types::messaging::{Body, Message, MessageId};
    use fe2o3_amqp_types::primitives::{SimpleValue, Symbol, Value};

    fn decode(bytes: &[u8]) -> Message<Body<Value>> {
        serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(bytes)
            .expect("decodes")
            .0
    }

    fn body_bytes(message: &Message<Body<Value>>) -> Vec<u8> {
        match &message.body {
            Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect(),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn body_only_event_is_one_data_section() {
        let bytes = encode_event(&EventData::from("hello"), &[]);
        assert_eq!(
            bytes,
            [0x00, 0x53, 0x75, 0xa0, 5, b'h', b'e', b'l', b'l', b'o']
        );
        assert_eq!(data_section_size(bytes.len()), bytes.len() + 5);
    }

    #[test]
    fn every_property_type_decodes_with_fe2o3() {
        let when = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let event = EventData::from("b")
            .with_property("s", "text")
            .with_property("t", true)
            .with_property("i8", -3i8)
            .with_property("i16", -300i16)
            .with_property("i32", 70_000i32)
            .with_property("i32s", 5i32)
            .with_property("i64", -9_000_000_000i64)
            .with_property("u8", 200u8)
            .with_property("u16", 60_000u16)
            .with_property("u32", 4_000_000_000u32)
            .with_property("u64", u64::MAX)
            .with_property("f32", 1.5f32)
            .with_property("f64", -2.25f64)
            .with_property("bin", vec![1u8, 2, 3])
            .with_property("uuid", PropertyValue::Uuid([7; 16]))
            .with_property("when", when)
            .with_message_id("mid")
            .with_correlation_id("cid")
            .with_content_type("application/json");
        let message = decode(&encode_event(
            &event,
            &[("x-opt-partition-key", AnnotationValue::String("k"))],
        ));
        let props = message.application_properties.expect("app props").0;
        assert_eq!(props.get("s"), Some(&SimpleValue::String("text".into())));
        assert_eq!(props.get("t"), Some(&SimpleValue::Bool(true)));
        assert_eq!(props.get("i8"), Some(&SimpleValue::Byte(-3)));
        assert_eq!(props.get("i16"), Some(&SimpleValue::Short(-300)));
        assert_eq!(props.get("i32"), Some(&SimpleValue::Int(70_000)));
        assert_eq!(props.get("i32s"), Some(&SimpleValue::Int(5)));
        assert_eq!(props.get("i64"), Some(&SimpleValue::Long(-9_000_000_000)));
        assert_eq!(props.get("u8"), Some(&SimpleValue::Ubyte(200)));
        assert_eq!(props.get("u16"), Some(&SimpleValue::Ushort(60_000)));
        assert_eq!(props.get("u32"), Some(&SimpleValue::Uint(4_000_000_000)));
        assert_eq!(props.get("u64"), Some(&SimpleValue::Ulong(u64::MAX)));
        assert_eq!(
            props.get("f32").map(|v| format!("{v:?}")),
            Some(format!("{:?}", SimpleValue::Float(1.5.into())))
        );
        assert_eq!(
            props.get("f64").map(|v| format!("{v:?}")),
            Some(format!("{:?}", SimpleValue::Double((-2.25).into())))
        );
        assert_eq!(
            props.get("bin"),
            Some(&SimpleValue::Binary(vec![1u8, 2, 3].into()))
        );
        assert!(matches!(props.get("uuid"), Some(SimpleValue::Uuid(_))));
        assert!(
            matches!(props.get("when"), Some(SimpleValue::Timestamp(t)) if t.milliseconds() == 1_700_000_000_123)
        );
        let properties = message.properties.expect("properties");
        assert_eq!(properties.message_id, Some(MessageId::String("mid".into())));
        assert_eq!(
            properties.correlation_id,
            Some(MessageId::String("cid".into()))
        );
        assert_eq!(
            properties.content_type,
            Some(Symbol::from("application/json"))
        );
        let annotations = message.message_annotations.expect("annotations").0;
        assert_eq!(
            annotations.get(&OwnedKey::Symbol(Symbol::from("x-opt-partition-key"))),
            Some(&Value::String("k".into()))
        );
        assert_eq!(body_bytes(&decode(&encode_event(&event, &[]))), b"b");
    }

    #[test]
    fn message_id_alone_and_correlation_id_alone() {
        let m = decode(&encode_event(
            &EventData::from("x").with_message_id("only"),
            &[],
        ));
        assert_eq!(
            m.properties.expect("p").message_id,
            Some(MessageId::String("only".into()))
        );
        let m = decode(&encode_event(
            &EventData::from("x").with_correlation_id("c"),
            &[],
        ));
        let p = m.properties.expect("p");
        assert_eq!(p.message_id, None);
        assert_eq!(p.correlation_id, Some(MessageId::String("c".into())));
    }

    #[test]
    fn large_bodies_and_many_properties_use_32_bit_forms() {
        let mut event = EventData::from(vec![9u8; 70_000]);
        for i in 0..200 {
            event.set_property(format!("property-{i}"), i as i64);
        }
        let bytes = encode_event(&event, &[]);
        let m = decode(&bytes);
        assert_eq!(body_bytes(&m).len(), 70_000);
        assert_eq!(m.application_properties.expect("ap").0.len(), 200);
    }

    fn annotation_of(message: &Message<Body<Value>>, key: &str) -> Option<Value> {
        message
            .message_annotations
            .as_ref()?
            .0
            .get(&OwnedKey::Symbol(Symbol::from(key)))
            .cloned()
    }

    #[test]
    fn idempotent_events_are_stamped_in_place_with_typed_annotations() {
        for key in [None, Some("k".to_string()), Some("é".repeat(128))] {
            let event = EventData::from("body").with_property("p", 1i64);
            let mut bytes = encode_batch_event(&event, key.as_deref(), true);
            let placeholder_len = bytes.len();
            stamp_publishing(&mut bytes, 9_000_000_000, 3, 123_456).expect("stampable");
            assert_eq!(bytes.len(), placeholder_len, "stamping keeps the size");
            let message = decode(&bytes);
            assert_eq!(
                annotation_of(&message, PRODUCER_SEQUENCE_NUMBER),
                Some(Value::Int(123_456))
            );
            assert_eq!(
                annotation_of(&message, PRODUCER_ID),
                Some(Value::Long(9_000_000_000))
            );
            assert_eq!(
                annotation_of(&message, PRODUCER_EPOCH),
                Some(Value::Short(3))
            );
            assert_eq!(
                annotation_of(&message, PARTITION_KEY_ANNOTATION),
                key.clone().map(Value::String)
            );
            assert_eq!(body_bytes(&message), b"body");
            // Stamping again (a retry after a fence) overwrites the same places.
            stamp_publishing(&mut bytes, 1, 4, 0).expect("stampable");
            let message = decode(&bytes);
            assert_eq!(
                annotation_of(&message, PRODUCER_SEQUENCE_NUMBER),
                Some(Value::Int(0))
            );
            assert_eq!(
                annotation_of(&message, PRODUCER_EPOCH),
                Some(Value::Short(4))
            );
        }
    }

    #[test]
    fn an_encoding_into_a_used_buffer_is_the_same_as_into_a_new_one() {
        let large = EventData::from(vec![7u8; 3000]).with_property("p", "v");
        let small = EventData::from("small");
        // A buffer that held a larger, stamped idempotent event before.
        let mut buffer = encode_batch_event(&large, Some("key"), true);
        stamp_publishing(&mut buffer, 9, 2, 41).expect("stampable");
        encode_batch_event_into(&mut buffer, &small, None, false);
        assert_eq!(buffer, encode_batch_event(&small, None, false));
        encode_batch_event_into(&mut buffer, &large, Some("key"), true);
        assert_eq!(buffer, encode_batch_event(&large, Some("key"), true));
    }

    #[test]
    fn the_capacity_given_fits_usual_encodings() {
        let keyed = EventData::from(vec![1u8; 1024])
            .with_property("name", "value")
            .with_message_id("id-1");
        for (key, idempotent) in [
            (None, false),
            (Some("a-partition-key"), false),
            (None, true),
        ] {
            let encoded = encode_batch_event(&keyed, key, idempotent);
            let capacity = batch_encoding_capacity(&keyed, key, idempotent);
            assert!(
                encoded.len() <= capacity,
                "{} > {capacity} ({key:?}, {idempotent})",
                encoded.len()
            );
            assert!(
                capacity - encoded.len() < 160,
                "{capacity} for {}",
                encoded.len()
            );
        }
    }

    #[test]
    fn events_not_encoded_for_idempotence_are_not_stamped() {
        for key in [None, Some("k")] {
            let mut bytes = encode_batch_event(&EventData::from("x"), key, false);
            let before = bytes.clone();
            assert_eq!(stamp_publishing(&mut bytes, 1, 0, 0), Err(NotStampable));
            assert_eq!(bytes, before);
        }
        assert_eq!(stamp_publishing(&mut [], 1, 0, 0), Err(NotStampable));
        let mut truncated = encode_batch_event(&EventData::from("x"), None, true);
        truncated.truncate(20);
        assert_eq!(stamp_publishing(&mut truncated, 1, 0, 0), Err(NotStampable));
    }
}
