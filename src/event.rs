//! [`EventData`]: one event, with its body, application properties and identifiers.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

/// A typed application property value.
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
#[derive(Debug, Clone, Default, PartialEq)]
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
