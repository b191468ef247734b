//! Idempotent producers: per partition, each producer id has an epoch and the last sequence
//! number the partition committed for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// Desired capability that asks for idempotent publishing.
pub(crate) const CAPABILITY: &str = "com.microsoft:idempotent-producer";
/// Link property and event annotation: the producer id (long).
pub(crate) const PRODUCER_ID: &str = "com.microsoft:producer-id";
/// Link property and event annotation: the producer epoch (short).
pub(crate) const PRODUCER_EPOCH: &str = "com.microsoft:producer-epoch";
/// Link property and event annotation: the sequence number (int).
pub(crate) const PRODUCER_SEQUENCE: &str = "com.microsoft:producer-sequence-number";

/// Sequence number reported for a producer that has published nothing yet.
const NOTHING_PUBLISHED: i32 = -1;

/// Hands out producer ids, namespace-wide.
#[derive(Debug)]
pub(crate) struct ProducerIds(AtomicI64);

impl Default for ProducerIds {
    fn default() -> Self {
        Self(AtomicI64::new(1))
    }
}

impl ProducerIds {
    pub(crate) fn next(&self) -> i64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProducerState {
    epoch: i16,
    last_sequence: i32,
}

/// The state granted to an idempotent link at attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerGrant {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
}

/// Why a publication of an idempotent producer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceRefusal {
    /// Another link took the producer id with a newer epoch.
    EpochStolen,
    /// The first sequence number does not follow the last committed one.
    OutOfOrder { expected: i64, got: i64 },
}

/// What to store of a publication that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Events at the front of the publication that were committed before (not stored again).
    pub duplicates: usize,
}

/// The idempotent producers of one partition.
#[derive(Debug, Default)]
pub(crate) struct ProducerStates(Mutex<HashMap<i64, ProducerState>>);

impl ProducerStates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, ProducerState>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Grants (or refuses) an attach asking for `producer_id` / `epoch`; unset values are assigned.
    pub(crate) fn attach(
        &self,
        ids: &ProducerIds,
        producer_id: Option<i64>,
        epoch: Option<i16>,
    ) -> Result<ProducerGrant, SequenceRefusal> {
        let mut states = self.lock();
        let producer_id = producer_id.unwrap_or_else(|| ids.next());
        let state = states.entry(producer_id).or_insert(ProducerState {
            epoch: epoch.unwrap_or(0),
            last_sequence: NOTHING_PUBLISHED,
        });
        match epoch {
            Some(requested) if requested < state.epoch => return Err(SequenceRefusal::EpochStolen),
            Some(requested) => state.epoch = requested,
            None => {}
        }
        Ok(ProducerGrant {
            producer_id,
            epoch: state.epoch,
            last_sequence: state.last_sequence,
        })
    }

    /// Checks a publication of `sequences` (one per event, in order) by a link holding `grant`,
    /// and commits the new ones.
    pub(crate) fn admit(
        &self,
        grant: &ProducerGrant,
        sequences: &[i64],
    ) -> Result<Admission, SequenceRefusal> {
        let mut states = self.lock();
        let state = states.entry(grant.producer_id).or_insert(ProducerState {
            epoch: grant.epoch,
            last_sequence: NOTHING_PUBLISHED,
        });
        if state.epoch != grant.epoch {
            return Err(SequenceRefusal::EpochStolen);
        }
        let last = i64::from(state.last_sequence);
        let duplicates = sequences.iter().take_while(|s| **s <= last).count();
        let fresh = &sequences[duplicates..];
        for (expected, got) in (last + 1..).zip(fresh.iter().copied()) {
            if expected != got {
                return Err(SequenceRefusal::OutOfOrder { expected, got });
            }
        }
        if let Some(new_last) = fresh.last() {
            state.last_sequence = i32::try_from(*new_last).unwrap_or(i32::MAX);
        }
        Ok(Admission { duplicates })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_producer_gets_an_id_and_nothing_published() {
        let ids = ProducerIds::default();
        let states = ProducerStates::default();
        let a = states.attach(&ids, None, None).unwrap();
        let b = states.attach(&ids, None, None).unwrap();
        assert_ne!(a.producer_id, b.producer_id);
        assert_eq!(a.last_sequence, -1);
        assert_eq!(a.epoch, 0);
    }

    #[test]
    fn sequences_must_continue_and_repeats_are_dropped() {
        let ids = ProducerIds::default();
        let states = ProducerStates::default();
        let g = states.attach(&ids, None, None).unwrap();
        assert_eq!(states.admit(&g, &[0, 1, 2]).unwrap().duplicates, 0);
        assert_eq!(states.admit(&g, &[0, 1, 2]).unwrap().duplicates, 3);
        assert_eq!(states.admit(&g, &[2, 3]).unwrap().duplicates, 1);
        assert_eq!(
            states.admit(&g, &[5]),
            Err(SequenceRefusal::OutOfOrder {
                expected: 4,
                got: 5
            })
        );
        let again = states.attach(&ids, Some(g.producer_id), Some(0)).unwrap();
        assert_eq!(again.last_sequence, 3);
    }

    #[test]
    fn a_newer_epoch_steals_the_producer() {
        let ids = ProducerIds::default();
        let states = ProducerStates::default();
        let old = states.attach(&ids, None, Some(1)).unwrap();
        let new = states.attach(&ids, Some(old.producer_id), Some(2)).unwrap();
        assert_eq!(states.admit(&old, &[0]), Err(SequenceRefusal::EpochStolen));
        assert!(states.admit(&new, &[0]).is_ok());
        assert_eq!(
            states.attach(&ids, Some(old.producer_id), Some(1)),
            Err(SequenceRefusal::EpochStolen)
        );
    }
}
