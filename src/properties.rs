//! Properties of an event hub and of its partitions, as the service reports them.

use std::time::SystemTime;

/// An event hub's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventHubProperties {
    /// The event hub's name.
    pub name: String,
    /// When the event hub was created.
    pub created_at: SystemTime,
    /// Its partition ids, in the service's order.
    pub partition_ids: Vec<String>,
}

/// A partition's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionProperties {
    /// The event hub's name.
    pub eventhub_name: String,
    /// The partition id.
    pub id: String,
    /// Sequence number of the first event still stored.
    pub beginning_sequence_number: i64,
    /// Sequence number of the last event stored (-1 when none was ever stored).
    pub last_enqueued_sequence_number: i64,
    /// Offset of the last event stored.
    pub last_enqueued_offset: String,
    /// When the last event was stored.
    pub last_enqueued_time: SystemTime,
    /// Whether the partition holds no event.
    pub is_empty: bool,
}
