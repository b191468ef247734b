//! The partition-key hash of Azure Event Hubs.
//!
//! Events published with a partition key land on the partition the service picks by hashing
//! the key. A client that assigns partitions itself (a buffered producer) and a local
//! emulator must pick the same one. The service hashes the key's UTF-8 bytes with Bob
//! Jenkins' lookup3 `hashlittle2` (both seeds zero), folds the two 32-bit outputs into a signed
//! 16-bit value, and takes the absolute value of its truncating remainder by the partition
//! count. This crate is that function, checked against the published vectors.
#![deny(missing_docs)]
#![cfg_attr(not(test), no_std)]

/// Computes the service's 16-bit hash of a partition key.
///
/// This is lookup3 `hashlittle2` over the key's UTF-8 bytes with both seeds
/// set to zero, folded as `(primary ^ secondary) as i16`.
pub fn partition_key_hash(key: &str) -> i16 {
    let (primary, secondary) = hashlittle2(key.as_bytes(), 0, 0);
    // Truncation to the low 16 bits is the documented folding.
    (primary ^ secondary) as i16
}

/// Maps a partition key to a partition index in `0..partition_count`.
///
/// Mirrors the service: the absolute value of the truncating remainder of
/// the signed hash. Returns 0 when `partition_count` is 0 instead of
/// dividing by zero.
pub fn partition_index_for_key(key: &str, partition_count: usize) -> usize {
    let hash = partition_key_hash(key);
    // |h rem n| == |h| mod n for truncating remainder, and working on the
    // magnitude avoids any signed overflow or narrowing of `n`.
    usize::from(hash.unsigned_abs())
        .checked_rem(partition_count)
        .unwrap_or(0)
}

/// lookup3 `hashlittle2`: returns `(c, b)`, i.e. the primary and secondary
/// hash words, for the given primary and secondary seeds.
fn hashlittle2(data: &[u8], primary_seed: u32, secondary_seed: u32) -> (u32, u32) {
    // The reference folds the length in as a 32-bit value, wrapping.
    let initial = 0xdead_beef_u32
        .wrapping_add(data.len() as u32)
        .wrapping_add(primary_seed);
    let mut state = State {
        a: initial,
        b: initial,
        c: initial.wrapping_add(secondary_seed),
    };

    // Whole blocks are mixed only while more than 12 bytes remain: the last
    // block (1..=12 bytes) always goes through the tail and `final` instead.
    let mut rest = data;
    while rest.len() > 12 {
        let Some((block, tail)) = rest.split_first_chunk::<12>() else {
            break;
        };
        state.add_block(block);
        state.mix();
        rest = tail;
    }

    if rest.is_empty() {
        // Only reachable for empty input; the reference skips `final` here.
        return (state.c, state.b);
    }
    state.add_block(&zero_padded(rest));
    state.finalize();
    (state.c, state.b)
}

/// Copies a tail of at most 12 bytes into a zeroed block, which matches the
/// reference's per-length switch that adds only the bytes present.
fn zero_padded(tail: &[u8]) -> [u8; 12] {
    let mut block = [0u8; 12];
    for (dst, src) in block.iter_mut().zip(tail) {
        *dst = *src;
    }
    block
}

/// The three lookup3 internal state words.
struct State {
    a: u32,
    b: u32,
    c: u32,
}

impl State {
    /// Adds a 12-byte block read as three little-endian words.
    fn add_block(&mut self, block: &[u8; 12]) {
        let [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11] = *block;
        self.a = self.a.wrapping_add(u32::from_le_bytes([b0, b1, b2, b3]));
        self.b = self.b.wrapping_add(u32::from_le_bytes([b4, b5, b6, b7]));
        self.c = self.c.wrapping_add(u32::from_le_bytes([b8, b9, b10, b11]));
    }

    /// lookup3 `mix`: reversible mixing applied between full blocks.
    fn mix(&mut self) {
        let State { a, b, c } = self;
        *a = a.wrapping_sub(*c) ^ c.rotate_left(4);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a) ^ a.rotate_left(6);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b) ^ b.rotate_left(8);
        *b = b.wrapping_add(*a);
        *a = a.wrapping_sub(*c) ^ c.rotate_left(16);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a) ^ a.rotate_left(19);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b) ^ b.rotate_left(4);
        *b = b.wrapping_add(*a);
    }

    /// lookup3 `final`: avalanche after the last (partial) block.
    fn finalize(&mut self) {
        let State { a, b, c } = self;
        *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
        *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
        *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
        *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
        *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
        *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
        *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn index_is_in_range(key in any::<String>(), count in 1usize..1000) {
            prop_assert!(partition_index_for_key(&key, count) < count);
        }
    }

    #[test]
    fn hash_matches_published_vectors() {
        let vectors = [
            ("7", -15263),
            ("131", 30562),
            ("FWfAT", -22341),
            ("sOdeEAsyQoEuEFPGerWO", -6503),
            ("!c*_!I@1^c", 15372),
            ("$0cb", 26269),
            ("-4189260826195535198", 453),
            ("7149583486996073602", 12977),
        ];
        for (key, expected) in vectors {
            assert_eq!(partition_key_hash(key), expected, "key {key:?}");
        }
    }

    #[test]
    fn index_matches_published_vectors() {
        let vectors = [
            ("alphabet", 3, 0),
            ("alphabet", 11, 4),
            ("TheBestParitionEver", 4, 2),
            ("TheWorstParitionEver", 15, 1),
        ];
        for (key, count, expected) in vectors {
            assert_eq!(
                partition_index_for_key(key, count),
                expected,
                "key {key:?} with {count} partitions"
            );
        }
    }

    #[test]
    fn empty_key_skips_final_mixing() {
        // With no bytes, c and b both stay at 0xdeadbeef, so they cancel.
        assert_eq!(hashlittle2(&[], 0, 0), (0xdead_beef, 0xdead_beef));
        assert_eq!(partition_key_hash(""), 0);
    }

    #[test]
    fn block_boundaries_do_not_panic() {
        for len in 0..=40 {
            let key = "x".repeat(len);
            let _ = partition_key_hash(&key);
        }
    }

    #[test]
    fn zero_partitions_yields_zero() {
        assert_eq!(partition_index_for_key("anything", 0), 0);
    }
}
