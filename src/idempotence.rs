//! Idempotent publishing: what a partition's producer knows of its sequence numbers.
//!
//! The service gives an idempotent producer an id and an epoch at attach, and says which
//! sequence number it last committed for them. Every event then carries the next number; the
//! service stores an event once however often it is sent, so a batch whose outcome is unknown
//! (a lost acknowledgement, a timeout, a dropped connection) can be sent again with the same
//! numbers and is never stored twice.
//!
//! This module is the bookkeeping only, without I/O: which numbers the next batch gets, when
//! they count as published, and how a failure is settled. The rules:
//! - a batch takes the numbers after the last published one, and keeps them for every retry;
//! - they count as published only when the service accepts the batch;
//! - after a final failure the producer re-attaches with the next epoch (fencing: a delivery of
//!   the failed batch still on its way can then no longer be stored) and takes the service's
//!   last committed number as the truth, which also says whether the failed batch was stored;
//!   a batch that was not stored gives its numbers back to the next one.

/// The largest sequence number; the one after it is 0, as the service counts.
const MAX_SEQUENCE: i32 = i32::MAX;

/// The sequence number that follows `n`.
pub(crate) fn next_sequence(n: i32) -> i32 {
    if n == MAX_SEQUENCE {
        0
    } else {
        n + 1
    }
}

/// The sequence number `offset` places after `first`, wrapping as the service does.
fn sequence_at(first: i32, offset: usize) -> i32 {
    let span = i64::from(MAX_SEQUENCE) + 1;
    let offset = i64::try_from(offset).unwrap_or(i64::MAX) % span;
    let at = (i64::from(first) + offset) % span;
    i32::try_from(at).unwrap_or(0)
}

/// Where a batch of an idempotent producer was published: the producer's id and epoch, and the
/// sequence number of each event (consecutive, starting at [`first_sequence_number`]).
///
/// [`first_sequence_number`]: Self::first_sequence_number
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedSequenceNumbers {
    producer_id: i64,
    producer_epoch: i16,
    first: i32,
    count: usize,
}

impl PublishedSequenceNumbers {
    /// The producer id the service assigned to this partition's link.
    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }

    /// The producer's epoch (owner level) when the batch was published.
    pub fn producer_epoch(&self) -> i16 {
        self.producer_epoch
    }

    /// The sequence number of the batch's first event.
    pub fn first_sequence_number(&self) -> i32 {
        self.first
    }

    /// The sequence number of the batch's last event.
    pub fn last_sequence_number(&self) -> i32 {
        sequence_at(self.first, self.count.saturating_sub(1))
    }

    /// How many events the batch held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch held no event.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The sequence number of the event at `index` in the batch, if there is one.
    pub fn sequence_number(&self, index: usize) -> Option<i32> {
        (index < self.count).then(|| sequence_at(self.first, index))
    }

    /// The sequence numbers of the events, in batch order.
    pub fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        (0..self.count).map(|i| sequence_at(self.first, i))
    }
}

/// What an idempotent link asks for at attach; unknown values are sent as null, which asks the
/// service to assign them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PublishingRequest {
    pub producer_id: Option<i64>,
    pub epoch: Option<i16>,
    pub last_sequence: Option<i32>,
}

/// What the service granted at attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PublishingGrant {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
}

/// The numbers one batch is stamped with; kept for every retry of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub producer_id: i64,
    pub epoch: i16,
    pub first: i32,
    pub count: usize,
}

impl Stamp {
    pub(crate) fn last(&self) -> i32 {
        sequence_at(self.first, self.count.saturating_sub(1))
    }

    /// The number before the first: what the service reports when the batch was not stored.
    fn before_first(&self) -> i32 {
        if self.first == 0 {
            MAX_SEQUENCE
        } else {
            self.first - 1
        }
    }

    pub(crate) fn published(&self) -> PublishedSequenceNumbers {
        PublishedSequenceNumbers {
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            first: self.first,
            count: self.count,
        }
    }
}

/// What the service's answer after a failure says about the failed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The service had stored the batch after all.
    Published,
    /// The service had not stored it; its numbers go to the next batch.
    NotPublished,
    /// The answer fits neither (the service's state moved on another way).
    Unknown,
}

/// One partition's idempotent publishing state.
#[derive(Debug, Default)]
pub(crate) struct PartitionPublishing {
    producer_id: Option<i64>,
    epoch: Option<i16>,
    /// The last number the service committed, as far as this side knows; None until an attach
    /// says it (and again after a failure that could not be settled).
    last_published: Option<i32>,
    /// A batch of this partition is being sent.
    sending: bool,
}

impl PartitionPublishing {
    /// What the next attach asks for: the producer id and epoch once known. The sequence
    /// number is left for the service to say: a batch in flight when the link was lost may
    /// have been stored, so ours can be behind, and a stale number must never be able to
    /// rewind the service's record (that would let a resent batch be stored twice).
    pub(crate) fn request(&self) -> PublishingRequest {
        PublishingRequest {
            producer_id: self.producer_id,
            epoch: self.epoch,
            last_sequence: None,
        }
    }

    /// Takes what an attach granted. The service's last committed number is the truth: when it
    /// differs from ours, a batch reported as failed was stored after all, or the service
    /// forgot; either way the next numbers must follow the service's.
    pub(crate) fn granted(&mut self, grant: PublishingGrant) {
        self.producer_id = Some(grant.producer_id);
        self.epoch = Some(grant.epoch);
        self.last_published = Some(grant.last_sequence);
    }

    /// Marks the start of a send; false when another send of this partition is under way
    /// (idempotent publishing allows one at a time).
    pub(crate) fn begin(&mut self) -> bool {
        !std::mem::replace(&mut self.sending, true)
    }

    /// Marks the end of a send.
    pub(crate) fn end(&mut self) {
        self.sending = false;
    }

    /// The numbers for a batch of `count` events, if an attach has told us where to start.
    pub(crate) fn stamp(&self, count: usize) -> Option<Stamp> {
        Some(Stamp {
            producer_id: self.producer_id?,
            epoch: self.epoch?,
            first: next_sequence(self.last_published?),
            count,
        })
    }

    /// The batch was accepted: its numbers are published.
    pub(crate) fn commit(&mut self, stamp: &Stamp) {
        self.last_published = Some(stamp.last());
    }

    /// A batch failed for good: the next attach must fence it off with a newer epoch and learn
    /// the service's last number. Past the last epoch, the producer asks for a new id.
    pub(crate) fn fence(&mut self) {
        self.last_published = None;
        match self.epoch {
            Some(epoch) if epoch < i16::MAX => self.epoch = Some(epoch + 1),
            Some(_) => {
                self.producer_id = None;
                self.epoch = None;
            }
            None => {}
        }
    }

    /// Another producer holds this id: start over with a new one.
    pub(crate) fn forget_producer(&mut self) {
        self.producer_id = None;
        self.epoch = None;
        self.last_published = None;
    }

    /// Settles a failed batch from the service's last committed number after the fence.
    pub(crate) fn settle(stamp: &Stamp, grant: &PublishingGrant) -> Settled {
        if grant.producer_id != stamp.producer_id {
            Settled::Unknown
        } else if grant.last_sequence == stamp.last() {
            Settled::Published
        } else if grant.last_sequence == stamp.before_first() {
            Settled::NotPublished
        } else {
            Settled::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(last: i32) -> PublishingGrant {
        PublishingGrant {
            producer_id: 7,
            epoch: 0,
            last_sequence: last,
        }
    }

    #[test]
    fn nothing_is_stamped_before_an_attach_answered() {
        let state = PartitionPublishing::default();
        assert_eq!(state.stamp(3), None);
        assert_eq!(state.request(), PublishingRequest::default());
    }

    #[test]
    fn batches_take_consecutive_numbers_once_committed() {
        let mut state = PartitionPublishing::default();
        state.granted(grant(-1));
        let first = state.stamp(3).unwrap();
        assert_eq!((first.first, first.last()), (0, 2));
        // Not committed yet: a retry of the same batch gets the same numbers.
        assert_eq!(state.stamp(3), Some(first));
        state.commit(&first);
        let second = state.stamp(2).unwrap();
        assert_eq!((second.first, second.last()), (3, 4));
        assert_eq!(
            state.request(),
            PublishingRequest {
                producer_id: Some(7),
                epoch: Some(0),
                last_sequence: None
            }
        );
    }

    #[test]
    fn a_fence_bumps_the_epoch_and_forgets_the_last_number() {
        let mut state = PartitionPublishing::default();
        state.granted(grant(10));
        state.fence();
        assert_eq!(
            state.request(),
            PublishingRequest {
                producer_id: Some(7),
                epoch: Some(1),
                last_sequence: None
            }
        );
        assert_eq!(state.stamp(1), None);
        state.granted(PublishingGrant {
            producer_id: 7,
            epoch: 1,
            last_sequence: 10,
        });
        assert_eq!(state.stamp(1).map(|s| s.first), Some(11));
    }

    #[test]
    fn the_last_epoch_asks_for_a_new_producer_id() {
        let mut state = PartitionPublishing::default();
        state.granted(PublishingGrant {
            producer_id: 7,
            epoch: i16::MAX,
            last_sequence: 0,
        });
        state.fence();
        assert_eq!(state.request(), PublishingRequest::default());
    }

    #[test]
    fn the_service_answer_settles_a_failed_batch() {
        let mut state = PartitionPublishing::default();
        state.granted(grant(4));
        let stamp = state.stamp(3).unwrap(); // 5..=7
        assert_eq!(
            PartitionPublishing::settle(&stamp, &grant(7)),
            Settled::Published
        );
        assert_eq!(
            PartitionPublishing::settle(&stamp, &grant(4)),
            Settled::NotPublished
        );
        assert_eq!(
            PartitionPublishing::settle(&stamp, &grant(9)),
            Settled::Unknown
        );
        let other_id = PublishingGrant {
            producer_id: 8,
            ..grant(7)
        };
        assert_eq!(
            PartitionPublishing::settle(&stamp, &other_id),
            Settled::Unknown
        );
    }

    #[test]
    fn sequence_numbers_wrap_to_zero() {
        assert_eq!(next_sequence(i32::MAX), 0);
        assert_eq!(next_sequence(-1), 0);
        let mut state = PartitionPublishing::default();
        state.granted(grant(i32::MAX - 1));
        let stamp = state.stamp(3).unwrap();
        let published = stamp.published();
        assert_eq!(published.iter().collect::<Vec<_>>(), vec![i32::MAX, 0, 1]);
        assert_eq!(published.last_sequence_number(), 1);
        assert_eq!(published.sequence_number(3), None);
        let zero = Stamp { first: 0, ..stamp };
        assert_eq!(
            PartitionPublishing::settle(&zero, &grant(i32::MAX)),
            Settled::NotPublished
        );
    }

    #[test]
    fn one_send_at_a_time() {
        let mut state = PartitionPublishing::default();
        assert!(state.begin());
        assert!(!state.begin());
        state.end();
        assert!(state.begin());
    }
}
