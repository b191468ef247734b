//! Partition logs: events are kept as the encoded AMQP messages they arrived as, and decoded
//! only when read, so storing a batch costs a few pointer moves per event.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fe2o3_amqp_types::messaging::{message::__private::Deserializable, Body, Message};
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::watch;

use crate::error::EmulatorError;
use crate::idempotence::ProducerStates;

/// One stored event: its encoded message and the values the service assigned to it.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub sequence_number: i64,
    pub offset: i64,
    pub enqueued_time_ms: i64,
    pub raw: Bytes,
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<StoredEvent>,
    next_offset: i64,
}

/// One partition of an event hub.
#[derive(Debug)]
pub(crate) struct Partition {
    pub id: String,
    log: Mutex<Log>,
    /// Number of events stored so far; consumers wait on changes.
    appended: watch::Sender<u64>,
    pub producers: ProducerStates,
}

/// What a partition looks like from `$management`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionSummary {
    pub begin_sequence_number: i64,
    pub last_sequence_number: i64,
    pub last_offset: i64,
    pub last_enqueued_time_ms: i64,
    pub is_empty: bool,
}

pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Partition {
    pub(crate) fn new(id: String) -> Self {
        Self {
            id,
            log: Mutex::new(Log::default()),
            appended: watch::Sender::new(0),
            producers: ProducerStates::default(),
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log half-written (pushes are atomic),
        // so a poisoned lock is still safe to use.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends events in order; returns the sequence number of the first.
    pub(crate) fn append(&self, raws: impl IntoIterator<Item = Bytes>) -> i64 {
        let now = now_millis();
        let mut log = self.log();
        let first = log.events.len() as i64;
        for raw in raws {
            let sequence_number = log.events.len() as i64;
            let offset = log.next_offset;
            log.next_offset += raw.len() as i64;
            log.events.push(StoredEvent {
                sequence_number,
                offset,
                enqueued_time_ms: now,
                raw,
            });
        }
        let count = log.events.len() as u64;
        drop(log);
        self.appended.send_replace(count);
        first
    }

    pub(crate) fn len(&self) -> usize {
        self.log().events.len()
    }

    /// Up to `max` events starting at index `from`.
    pub(crate) fn read(&self, from: usize, max: usize) -> Vec<StoredEvent> {
        let log = self.log();
        let end = log.events.len().min(from.saturating_add(max));
        log.events
            .get(from..end)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Index of the first event whose value (as picked by `key`) is above `value`, or at or above
    /// it when `inclusive`.
    pub(crate) fn position_after(
        &self,
        key: impl Fn(&StoredEvent) -> i64,
        value: i64,
        inclusive: bool,
    ) -> usize {
        let log = self.log();
        log.events.partition_point(|e| {
            let v = key(e);
            if inclusive {
                v < value
            } else {
                v <= value
            }
        })
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    pub(crate) fn summary(&self) -> PartitionSummary {
        let log = self.log();
        match log.events.last() {
            Some(last) => PartitionSummary {
                begin_sequence_number: 0,
                last_sequence_number: last.sequence_number,
                last_offset: last.offset,
                last_enqueued_time_ms: last.enqueued_time_ms,
                is_empty: false,
            },
            None => PartitionSummary {
                begin_sequence_number: 0,
                last_sequence_number: -1,
                last_offset: -1,
                last_enqueued_time_ms: 0,
                is_empty: true,
            },
        }
    }
}

/// An event as stored by the emulator, for tests to inspect.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    /// The partition's sequence number for this event (0 for the first).
    pub sequence_number: i64,
    /// The event's offset in the partition (its byte position).
    pub offset: i64,
    /// When the emulator stored the event.
    pub enqueued_time: SystemTime,
    /// The message exactly as it was sent (one data section of a batch, or the plain message).
    pub raw: Bytes,
}

impl ReceivedEvent {
    pub(crate) fn from_stored(event: &StoredEvent) -> Self {
        Self {
            sequence_number: event.sequence_number,
            offset: event.offset,
            enqueued_time: UNIX_EPOCH + Duration::from_millis(event.enqueued_time_ms.max(0) as u64),
            raw: event.raw.clone(),
        }
    }

    /// The decoded AMQP message.
    pub fn message(&self) -> Result<Message<Body<Value>>, EmulatorError> {
        decode_message(&self.raw)
    }

    /// The body: the data sections joined, or the bytes of a string or binary amqp-value.
    pub fn body(&self) -> Result<Bytes, EmulatorError> {
        Ok(match self.message()?.body {
            Body::Data(batch) => {
                let mut out = Vec::new();
                for data in batch.iter() {
                    out.extend_from_slice(&data.0);
                }
                Bytes::from(out)
            }
            Body::Value(v) => match v.0 {
                Value::String(s) => Bytes::from(s),
                Value::Binary(b) => Bytes::from(b.into_vec()),
                other => Bytes::from(format!("{other:?}")),
            },
            Body::Sequence(_) | Body::Empty => Bytes::new(),
        })
    }

    /// The `x-opt-partition-key` annotation, if the event has one.
    pub fn partition_key(&self) -> Result<Option<String>, EmulatorError> {
        Ok(crate::message::partition_key(&self.message()?))
    }

    /// A message annotation by its symbol key (for example
    /// `com.microsoft:producer-sequence-number`).
    pub fn annotation(&self, name: &str) -> Result<Option<Value>, EmulatorError> {
        let message = self.message()?;
        Ok(crate::message::annotation(&message.message_annotations, name).cloned())
    }

    /// An application property by name.
    pub fn property(&self, name: &str) -> Result<Option<Value>, EmulatorError> {
        let message = self.message()?;
        Ok(message
            .application_properties
            .and_then(|p| p.0.get(name).cloned())
            .map(Value::from))
    }
}

pub(crate) fn decode_message(raw: &[u8]) -> Result<Message<Body<Value>>, EmulatorError> {
    serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(raw)
        .map(|d| d.0)
        .map_err(|e| EmulatorError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_assigns_sequence_numbers_and_byte_offsets() {
        let p = Partition::new("0".into());
        assert!(p.summary().is_empty);
        let first = p.append([Bytes::from_static(b"abc"), Bytes::from_static(b"de")]);
        assert_eq!(first, 0);
        let second = p.append([Bytes::from_static(b"f")]);
        assert_eq!(second, 2);
        let events = p.read(0, 10);
        let offsets: Vec<_> = events.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, vec![0, 3, 5]);
        let summary = p.summary();
        assert_eq!(summary.last_sequence_number, 2);
        assert_eq!(summary.last_offset, 5);
        assert!(!summary.is_empty);
    }

    #[test]
    fn position_after_honours_inclusive() {
        let p = Partition::new("0".into());
        p.append((0..5).map(|_| Bytes::from_static(b"xx")));
        assert_eq!(p.position_after(|e| e.sequence_number, 2, false), 3);
        assert_eq!(p.position_after(|e| e.sequence_number, 2, true), 2);
        assert_eq!(p.position_after(|e| e.offset, 3, false), 2);
        assert_eq!(p.position_after(|e| e.offset, 100, false), 5);
        assert_eq!(p.read(4, 10).len(), 1);
        assert!(p.read(9, 10).is_empty());
    }
}
