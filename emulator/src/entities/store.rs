//! Partition logs: events are kept as the encoded AMQP messages they arrived as, and decoded
//! only when read, so storing a batch costs a few pointer moves per event.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fe2o3_amqp_types::messaging::{message::__private::Deserializable, Body, Message};
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::watch;

use crate::entities::idempotence::ProducerStates;
use crate::error::EmulatorError;

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
    /// The retained events; the first has sequence number `first_sequence`.
    events: VecDeque<StoredEvent>,
    first_sequence: i64,
    next_offset: i64,
}

impl Log {
    fn next_sequence(&self) -> i64 {
        self.first_sequence + self.events.len() as i64
    }

    /// Index in `events` of the event with sequence number `position` (or of the first
    /// retained one when that event was dropped).
    fn index_of(&self, position: u64) -> usize {
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        usize::try_from(position.saturating_sub(self.first_sequence)).unwrap_or(0)
    }
}

/// One partition of an event hub.
#[derive(Debug)]
pub(crate) struct Partition {
    pub id: String,
    log: Mutex<Log>,
    /// Most events kept; the oldest are dropped beyond it (like the service's retention).
    retention: Option<usize>,
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
    pub(crate) fn new(id: String, retention: Option<usize>) -> Self {
        Self {
            id,
            log: Mutex::new(Log::default()),
            retention,
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
        let first = log.next_sequence();
        for raw in raws {
            let sequence_number = log.next_sequence();
            let offset = log.next_offset;
            log.next_offset += raw.len() as i64;
            log.events.push_back(StoredEvent {
                sequence_number,
                offset,
                enqueued_time_ms: now,
                raw,
            });
        }
        if let Some(retention) = self.retention {
            // Trim in steps of an eighth, so that trimming costs little per event.
            if log.events.len() > retention.saturating_add(retention / 8) {
                let excess = log.events.len() - retention;
                log.events.drain(..excess);
                log.first_sequence += excess as i64;
            }
        }
        let count = log.next_sequence() as u64;
        drop(log);
        self.appended.send_replace(count);
        first
    }

    /// How many events the partition was ever given (the next sequence number); with a
    /// retention, the oldest of them may be gone.
    pub(crate) fn len(&self) -> usize {
        usize::try_from(self.log().next_sequence()).unwrap_or(usize::MAX)
    }

    /// Up to `max` retained events starting at sequence number `from` (or at the oldest
    /// retained one, when the retention dropped `from`).
    pub(crate) fn read(&self, from: u64, max: usize) -> Vec<StoredEvent> {
        let log = self.log();
        let start = log.index_of(from).min(log.events.len());
        let end = log.events.len().min(start.saturating_add(max));
        log.events.range(start..end).cloned().collect()
    }

    /// Sequence number of the first event whose value (as picked by `key`) is above `value`, or
    /// at or above it when `inclusive`.
    pub(crate) fn position_after(
        &self,
        key: impl Fn(&StoredEvent) -> i64,
        value: i64,
        inclusive: bool,
    ) -> u64 {
        let log = self.log();
        let index = log.events.partition_point(|e| {
            let v = key(e);
            if inclusive {
                v < value
            } else {
                v <= value
            }
        });
        (log.first_sequence + index as i64) as u64
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    pub(crate) fn summary(&self) -> PartitionSummary {
        let log = self.log();
        match log.events.back() {
            Some(last) => PartitionSummary {
                begin_sequence_number: log.first_sequence,
                last_sequence_number: last.sequence_number,
                last_offset: last.offset,
                last_enqueued_time_ms: last.enqueued_time_ms,
                is_empty: false,
            },
            None => PartitionSummary {
                begin_sequence_number: log.first_sequence,
                last_sequence_number: log.next_sequence() - 1,
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
        let p = Partition::new("0".into(), None);
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
        let p = Partition::new("0".into(), None);
        p.append((0..5).map(|_| Bytes::from_static(b"xx")));
        assert_eq!(p.position_after(|e| e.sequence_number, 2, false), 3);
        assert_eq!(p.position_after(|e| e.sequence_number, 2, true), 2);
        assert_eq!(p.position_after(|e| e.offset, 3, false), 2);
        assert_eq!(p.position_after(|e| e.offset, 100, false), 5);
        assert_eq!(p.read(4, 10).len(), 1);
        assert!(p.read(9, 10).is_empty());
    }

    #[test]
    fn retention_drops_the_oldest_and_positions_stay_sequence_numbers() {
        let p = Partition::new("0".into(), Some(8));
        for _ in 0..4 {
            p.append((0..5).map(|_| Bytes::from_static(b"xx")));
        }
        // 20 appended; trimmed back to 8 whenever more than 9 were held.
        assert_eq!(p.len(), 20);
        let kept = p.read(0, usize::MAX);
        assert!((8..=9).contains(&kept.len()), "{}", kept.len());
        let first = kept[0].sequence_number;
        assert_eq!(kept.last().map(|e| e.sequence_number), Some(19));
        assert_eq!(p.summary().begin_sequence_number, first);
        assert_eq!(p.summary().last_sequence_number, 19);
        assert_eq!(p.read(18, 10).len(), 2);
        assert_eq!(p.read(25, 10).len(), 0);
        assert_eq!(p.position_after(|e| e.sequence_number, 15, false), 16);
        assert_eq!(
            p.position_after(|e| e.sequence_number, 0, true),
            first as u64
        );
        assert_eq!(kept[0].offset, first * 2, "offsets go on");
    }
}
