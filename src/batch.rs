//! [`EventDataBatch`]: events that fit in one delivery, sized exactly.
//!
//! Each event is encoded when it is added; the batch counts the envelope and every data section
//! byte for byte, so a batch that accepted an event is never refused by the service for its
//! size.

use crate::amqp::message::{data_section_size, encode_batch_event, encode_envelope_head};
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;

/// Where a batch goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BatchTarget {
    /// The service picks a partition.
    #[default]
    Automatic,
    /// One partition, by id.
    Partition(String),
    /// The partition the service's hash of this key picks; every event carries the key.
    PartitionKey(String),
}

/// Options for [`crate::ProducerClient::create_batch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateBatchOptions {
    /// The partition to send to. Default: none (the service picks).
    pub partition_id: Option<String>,
    /// The partition key. Default: none. Not together with `partition_id`.
    pub partition_key: Option<String>,
    /// Largest batch in bytes. Default: the link's max-message-size. Larger values are an error.
    pub max_size_in_bytes: Option<u64>,
}

impl CreateBatchOptions {
    /// Sends the batch to this partition.
    pub fn with_partition_id(mut self, id: impl Into<String>) -> Self {
        self.partition_id = Some(id.into());
        self
    }

    /// Stamps this partition key on the batch and its events.
    pub fn with_partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// Caps the batch size below the link's maximum.
    pub fn with_max_size_in_bytes(mut self, bytes: u64) -> Self {
        self.max_size_in_bytes = Some(bytes);
        self
    }

    /// The target these options describe, checked: id and key are exclusive, a key has at most
    /// 128 characters, an empty key means no key.
    pub(crate) fn target(&self) -> Result<BatchTarget> {
        batch_target(self.partition_id.as_deref(), self.partition_key.as_deref())
    }
}

/// Longest partition key the service accepts, in characters.
pub const MAX_PARTITION_KEY_LENGTH: usize = 128;

/// Checks a partition id / key pair and says where events go.
pub(crate) fn batch_target(
    partition_id: Option<&str>,
    partition_key: Option<&str>,
) -> Result<BatchTarget> {
    let key = partition_key.filter(|k| !k.is_empty());
    match (partition_id, key) {
        (Some(_), Some(_)) => Err(Error::new(
            ErrorKind::InvalidArgument,
            "set a partition id or a partition key, not both",
        )),
        (Some(""), None) => Err(Error::new(ErrorKind::InvalidArgument, "the partition id is empty")),
        (Some(id), None) => Ok(BatchTarget::Partition(id.to_string())),
        (None, Some(key)) if key.chars().count() > MAX_PARTITION_KEY_LENGTH => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "the partition key has {} characters; at most {MAX_PARTITION_KEY_LENGTH} are allowed",
                key.chars().count()
            ),
        )),
        (None, Some(key)) => Ok(BatchTarget::PartitionKey(key.to_string())),
        (None, None) => Ok(BatchTarget::Automatic),
    }
}

/// Why [`EventDataBatch::try_add`] did not take an event; the event comes back with it.
#[derive(Debug)]
pub struct TryAddError {
    event: EventData,
    too_large_for_any_batch: bool,
    encoded_size: usize,
    max_size: usize,
}

impl TryAddError {
    /// The event that was not added.
    pub fn into_event(self) -> EventData {
        self.event
    }

    /// Whether the event is too large even for an empty batch (it can never be sent).
    pub fn is_too_large_for_any_batch(&self) -> bool {
        self.too_large_for_any_batch
    }

    /// The error to report for an event that can never be sent.
    pub fn to_error(&self) -> Error {
        message_too_large(self.encoded_size, self.max_size)
    }
}

impl std::fmt::Display for TryAddError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.too_large_for_any_batch {
            write!(f, "{}", self.to_error())
        } else {
            f.write_str("the batch is full")
        }
    }
}

impl std::error::Error for TryAddError {}

pub(crate) fn message_too_large(size: usize, max_size: usize) -> Error {
    Error::new(
        ErrorKind::MessageTooLarge,
        format!("an event of {size} bytes (encoded) does not fit in a batch of at most {max_size} bytes"),
    )
}

/// Whether an event of `encoded_len` bytes (encoded) fits alone in a batch of at most
/// `max_size` bytes sent to a partition (no key on the envelope).
pub(crate) fn fits_alone(encoded_len: usize, max_size: usize) -> bool {
    encode_envelope_head(None).len() + data_section_size(encoded_len) <= max_size
}

/// The encoded events of one delivery, sized exactly: what a batch sends. The buffered
/// producer keeps its events beside it (with their routing); [`EventDataBatch`] keeps them
/// inside.
#[derive(Debug)]
pub(crate) struct EncodedBatch {
    max_size: usize,
    head_len: usize,
    size: usize,
    encoded: Vec<Vec<u8>>,
}

/// Why [`EncodedBatch::try_push`] did not take an encoded event; it comes back.
pub(crate) struct NotAdded {
    pub encoded: Vec<u8>,
    /// Encoded size of its data section.
    pub added: usize,
    /// Too large even for an empty batch.
    pub too_large_for_any_batch: bool,
}

impl EncodedBatch {
    /// An empty batch of at most `max_size` bytes whose envelope head is `head_len` bytes.
    pub(crate) fn new(head_len: usize, max_size: usize) -> Self {
        Self {
            max_size,
            head_len,
            size: head_len,
            encoded: Vec::new(),
        }
    }

    /// An empty batch for a partition (no key on the envelope).
    pub(crate) fn for_partition(max_size: usize) -> Self {
        Self::new(encode_envelope_head(None).len(), max_size)
    }

    /// Makes room for `additional` more events without reallocating.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.encoded.reserve(additional);
    }

    /// Adds an encoded event if it fits; otherwise hands it back.
    pub(crate) fn try_push(&mut self, encoded: Vec<u8>) -> std::result::Result<(), NotAdded> {
        let added = data_section_size(encoded.len());
        if self.size + added > self.max_size {
            return Err(NotAdded {
                encoded,
                added,
                too_large_for_any_batch: self.head_len + added > self.max_size,
            });
        }
        self.size += added;
        self.encoded.push(encoded);
        Ok(())
    }

    /// How many events it holds.
    pub(crate) fn len(&self) -> usize {
        self.encoded.len()
    }

    /// Whether it holds no event.
    pub(crate) fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }

    /// The size of the delivery in bytes.
    pub(crate) fn size_in_bytes(&self) -> usize {
        self.size
    }

    /// The largest size it may reach.
    pub(crate) fn max_size_in_bytes(&self) -> usize {
        self.max_size
    }

    /// The encoded events, for the wire.
    pub(crate) fn into_encoded(self) -> Vec<Vec<u8>> {
        self.encoded
    }
}

/// Events bound for one delivery. Make one with [`crate::ProducerClient::create_batch`].
#[derive(Debug)]
pub struct EventDataBatch {
    target: BatchTarget,
    encoded: EncodedBatch,
    events: Vec<EventData>,
}

impl EventDataBatch {
    /// An empty batch of at most `max_size` bytes for `target`.
    pub(crate) fn new(target: BatchTarget, max_size: usize) -> Self {
        let head = match &target {
            BatchTarget::PartitionKey(key) => encode_envelope_head(Some(key)),
            _ => encode_envelope_head(None),
        };
        Self {
            target,
            encoded: EncodedBatch::new(head.len(), max_size),
            events: Vec::new(),
        }
    }

    /// Adds an event if it fits; otherwise hands it back. An event too large for any batch is
    /// flagged ([`TryAddError::is_too_large_for_any_batch`]).
    pub fn try_add(&mut self, event: EventData) -> std::result::Result<(), TryAddError> {
        let key = match &self.target {
            BatchTarget::PartitionKey(key) => Some(key.as_str()),
            _ => None,
        };
        let encoded = encode_batch_event(&event, key, false);
        match self.encoded.try_push(encoded) {
            Ok(()) => {
                self.events.push(event);
                Ok(())
            }
            Err(refused) => Err(TryAddError {
                event,
                too_large_for_any_batch: refused.too_large_for_any_batch,
                encoded_size: refused.added,
                max_size: self.encoded.max_size_in_bytes(),
            }),
        }
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The size of the delivery in bytes, as the service will count it.
    pub fn size_in_bytes(&self) -> usize {
        self.encoded.size_in_bytes()
    }

    /// The largest size this batch may reach.
    pub fn max_size_in_bytes(&self) -> usize {
        self.encoded.max_size_in_bytes()
    }

    /// Where the batch goes.
    pub fn target(&self) -> &BatchTarget {
        &self.target
    }

    /// The events, in the order they were added.
    pub fn events(&self) -> &[EventData] {
        &self.events
    }

    /// Takes the batch apart: the encoded events (for the wire) and the events themselves.
    pub(crate) fn into_parts(self) -> (BatchTarget, Vec<Vec<u8>>, Vec<EventData>) {
        (self.target, self.encoded.into_encoded(), self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_rules() {
        assert_eq!(batch_target(None, None).unwrap(), BatchTarget::Automatic);
        assert_eq!(
            batch_target(None, Some("")).unwrap(),
            BatchTarget::Automatic
        );
        assert_eq!(
            batch_target(Some("1"), None).unwrap(),
            BatchTarget::Partition("1".into())
        );
        assert_eq!(
            batch_target(None, Some("k")).unwrap(),
            BatchTarget::PartitionKey("k".into())
        );
        assert_eq!(
            batch_target(Some("1"), Some("k")).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let long = "é".repeat(129);
        let err = batch_target(None, Some(&long)).unwrap_err();
        assert!(err.to_string().contains("129 characters"));
        assert!(batch_target(None, Some(&"é".repeat(128))).is_ok());
    }

    #[test]
    fn size_counts_every_byte() {
        let mut batch = EventDataBatch::new(BatchTarget::Automatic, 1000);
        assert_eq!(batch.size_in_bytes(), 0);
        batch.try_add(EventData::from("abc")).unwrap();
        // data section of the event: 3 + 2 + (3 + 2 + 3)
        assert_eq!(batch.size_in_bytes(), 13);
        let mut keyed = EventDataBatch::new(BatchTarget::PartitionKey("k".into()), 1000);
        let head = keyed.size_in_bytes();
        assert!(head > 0);
        keyed.try_add(EventData::from("abc")).unwrap();
        assert!(
            keyed.size_in_bytes() > 13 + head,
            "the key rides in each event too"
        );
    }

    #[test]
    fn fits_alone_agrees_with_an_empty_batch() {
        for len in [0usize, 100, 200, 255, 256, 1000] {
            let event = EventData::from(vec![b'x'; len]);
            let encoded = encode_batch_event(&event, None, false).len();
            for max in [encoded, encoded + 5, encoded + 8, encoded + 20] {
                let mut batch = EventDataBatch::new(BatchTarget::Partition("0".into()), max);
                let fits = batch.try_add(event.clone()).is_ok();
                assert_eq!(fits_alone(encoded, max), fits, "{len} bytes, max {max}");
            }
        }
    }

    #[test]
    fn full_batch_hands_the_event_back() {
        let mut batch = EventDataBatch::new(BatchTarget::Automatic, 30);
        batch.try_add(EventData::from("0123456789")).unwrap();
        let err = batch.try_add(EventData::from("0123456789")).unwrap_err();
        assert!(!err.is_too_large_for_any_batch());
        assert_eq!(err.into_event().body().as_ref(), b"0123456789");
        assert_eq!(batch.len(), 1);
        let err = batch.try_add(EventData::from(vec![0u8; 100])).unwrap_err();
        assert!(err.is_too_large_for_any_batch());
        assert_eq!(err.to_error().kind(), ErrorKind::MessageTooLarge);
    }
}
