//! [`EventData`]: one event, with its body, application properties and identifiers.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

/// A typed application property value. Read it back with the typed getters (`as_str`,
/// `as_i64`, ...), which answer None for another type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PropertyValue {
    /// A UTF-8 string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A signed 8-bit integer.
    I8(i8),
    /// A signed 16-bit integer.
    I16(i16),
    /// A signed 32-bit integer.
    I32(i32),
    /// A signed 64-bit integer.
    I64(i64),
    /// An unsigned 8-bit integer.
    U8(u8),
    /// An unsigned 16-bit integer.
    U16(u16),
    /// An unsigned 32-bit integer.
    U32(u32),
    /// An unsigned 64-bit integer.
    U64(u64),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// Opaque bytes.
    Binary(Bytes),
    /// A UUID, as its 16 bytes in network order.
    Uuid([u8; 16]),
    /// A point in time (sent with millisecond precision).
    Timestamp(SystemTime),
}

impl PropertyValue {
    /// The string, for a [`String`](Self::String).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of any signed or unsigned integer type that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value of any unsigned integer type, or of a signed one that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            _ => self.as_i64().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// The value of a float, or of an integer (which may round).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value of a [`Bool`](Self::Bool).
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The bytes of a [`Binary`](Self::Binary).
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Self::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The bytes of a [`Uuid`](Self::Uuid).
    pub fn as_uuid(&self) -> Option<[u8; 16]> {
        match *self {
            Self::Uuid(v) => Some(v),
            _ => None,
        }
    }

    /// The time of a [`Timestamp`](Self::Timestamp).
    pub fn as_timestamp(&self) -> Option<SystemTime> {
        match *self {
            Self::Timestamp(v) => Some(v),
            _ => None,
        }
    }
}

macro_rules! property_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for PropertyValue {
            fn from(value: $t) -> Self {
                Self::$variant(value.into())
            }
        })*
    };
}

property_from!(
    String => String, &str => String, bool => Bool, i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64, f32 => F32, f64 => F64, Bytes => Binary,
    Vec<u8> => Binary, SystemTime => Timestamp,
);

/// What an event carries besides its body; shared between clones until one is changed.
#[derive(Debug, Clone, Default, PartialEq)]
struct Metadata {
    properties: Vec<(String, PropertyValue)>,
    message_id: Option<String>,
    correlation_id: Option<String>,
    content_type: Option<String>,
}

/// One event. Cloning is cheap: the body is reference-counted and the rest is shared until a
/// clone changes it.
///
/// `Debug` never prints a whole body: its length and up to 32 bytes of it, so that logging
/// an event (or a handler's context) with `{:?}` neither floods logs nor leaks payloads.
#[derive(Clone, Default, PartialEq)]
pub struct EventData {
    body: Bytes,
    metadata: Option<Arc<Metadata>>,
}

impl EventData {
    /// An event with this body and nothing else.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            metadata: None,
        }
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Replaces the body.
    pub fn set_body(&mut self, body: impl Into<Bytes>) {
        self.body = body.into();
    }

    fn metadata_mut(&mut self) -> &mut Metadata {
        Arc::make_mut(self.metadata.get_or_insert_with(Default::default))
    }

    /// Sets an application property (replacing one of the same name); returns the event.
    pub fn with_property(
        mut self,
        name: impl Into<String>,
        value: impl Into<PropertyValue>,
    ) -> Self {
        self.set_property(name, value);
        self
    }

    /// Sets an application property, replacing one of the same name.
    pub fn set_property(&mut self, name: impl Into<String>, value: impl Into<PropertyValue>) {
        let name = name.into();
        let value = value.into();
        let properties = &mut self.metadata_mut().properties;
        match properties.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => properties.push((name, value)),
        }
    }

    /// The application properties, in the order they were first set.
    pub fn properties(&self) -> &[(String, PropertyValue)] {
        self.metadata
            .as_deref()
            .map(|m| m.properties.as_slice())
            .unwrap_or_default()
    }

    /// An application property by name.
    pub fn property(&self, name: &str) -> Option<&PropertyValue> {
        self.properties()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// A string property by name (None when absent or of another type).
    pub fn property_str(&self, name: &str) -> Option<&str> {
        self.property(name)?.as_str()
    }

    /// An integer property by name, of any integer type that fits an `i64` (None when absent
    /// or of another type).
    pub fn property_i64(&self, name: &str) -> Option<i64> {
        self.property(name)?.as_i64()
    }

    /// Sets the message id; returns the event.
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.metadata_mut().message_id = Some(id.into());
        self
    }

    /// The message id, if set.
    pub fn message_id(&self) -> Option<&str> {
        self.metadata.as_deref()?.message_id.as_deref()
    }

    /// Sets the correlation id; returns the event.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata_mut().correlation_id = Some(id.into());
        self
    }

    /// The correlation id, if set.
    pub fn correlation_id(&self) -> Option<&str> {
        self.metadata.as_deref()?.correlation_id.as_deref()
    }

    /// Sets the content type (e.g. `application/json`); returns the event.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.metadata_mut().content_type = Some(content_type.into());
        self
    }

    /// The content type, if set.
    pub fn content_type(&self) -> Option<&str> {
        self.metadata.as_deref()?.content_type.as_deref()
    }
}

/// How many bytes of a body `Debug` shows.
const DEBUG_BODY_PREFIX: usize = 32;

/// A body shown by its length and its first bytes: as text when they are UTF-8, else in hex.
struct BodyPreview<'a>(&'a [u8]);

impl std::fmt::Debug for BodyPreview<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = &self.0[..self.0.len().min(DEBUG_BODY_PREFIX)];
        let more = if prefix.len() < self.0.len() {
            "…"
        } else {
            ""
        };
        write!(f, "{} bytes ", self.0.len())?;
        match std::str::from_utf8(prefix) {
            Ok(text) => write!(f, "{text:?}{more}"),
            Err(_) => {
                for byte in prefix {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str(more)
            }
        }
    }
}

impl std::fmt::Debug for EventData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.properties().iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("EventData")
            .field("body", &BodyPreview(&self.body))
            .field("properties", &names)
            .field("message_id", &self.message_id())
            .field("correlation_id", &self.correlation_id())
            .field("content_type", &self.content_type())
            .finish()
    }
}

impl From<&str> for EventData {
    fn from(body: &str) -> Self {
        Self::new(Bytes::copy_from_slice(body.as_bytes()))
    }
}

impl From<String> for EventData {
    fn from(body: String) -> Self {
        Self::new(Bytes::from(body))
    }
}

impl From<Vec<u8>> for EventData {
    fn from(body: Vec<u8>) -> Self {
        Self::new(Bytes::from(body))
    }
}

impl From<Bytes> for EventData {
    fn from(body: Bytes) -> Self {
        Self::new(body)
    }
}

impl From<&[u8]> for EventData {
    fn from(body: &[u8]) -> Self {
        Self::new(Bytes::copy_from_slice(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_until_changed() {
        let a = EventData::from("body")
            .with_property("k", 1i32)
            .with_message_id("m");
        let mut b = a.clone();
        assert_eq!(a, b);
        b.set_property("k", 2i32);
        assert_eq!(a.property("k"), Some(&PropertyValue::I32(1)));
        assert_eq!(b.property("k"), Some(&PropertyValue::I32(2)));
        assert_eq!(b.properties().len(), 1);
        assert_eq!(b.message_id(), Some("m"));
    }

    #[test]
    fn debug_shows_a_short_prefix_never_the_whole_body() {
        let secret_tail = "the-rest-is-private-payload";
        let event = EventData::from(format!("{}{secret_tail}", "a".repeat(40)))
            .with_property("tenant", "t-1");
        let shown = format!("{event:?}");
        assert!(shown.contains("67 bytes"), "{shown}");
        assert!(!shown.contains(secret_tail), "{shown}");
        assert!(shown.contains("tenant"), "{shown}");
        let binary = format!("{:?}", EventData::from(vec![0xffu8, 0xfe, 0x00]));
        assert!(binary.contains("3 bytes fffe00"), "{binary}");
    }

    #[test]
    fn typed_getters_read_each_type_and_refuse_others() {
        let event = EventData::from("x")
            .with_property("s", "text")
            .with_property("n", 7u8)
            .with_property("big", u64::MAX)
            .with_property("f", 1.5f64)
            .with_property("b", true);
        assert_eq!(event.property_str("s"), Some("text"));
        assert_eq!(event.property_i64("n"), Some(7));
        assert_eq!(event.property_i64("big"), None, "does not fit an i64");
        assert_eq!(
            event.property("big").and_then(PropertyValue::as_u64),
            Some(u64::MAX)
        );
        assert_eq!(
            event.property("f").and_then(PropertyValue::as_f64),
            Some(1.5)
        );
        assert_eq!(
            event.property("b").and_then(PropertyValue::as_bool),
            Some(true)
        );
        assert_eq!(event.property_str("n"), None);
        assert_eq!(event.property_i64("missing"), None);
    }

    #[test]
    fn conversions_keep_the_body() {
        assert_eq!(EventData::from(String::from("x")).body().as_ref(), b"x");
        assert_eq!(EventData::from(vec![1u8, 2]).body().as_ref(), &[1, 2]);
        assert_eq!(
            EventData::from(Bytes::from_static(b"z")).body().as_ref(),
            b"z"
        );
        assert!(EventData::default().properties().is_empty());
    }
}
