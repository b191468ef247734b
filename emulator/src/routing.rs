//! Partition routing and AMQP entity address parsing.
//!
//! Events sent with a partition key must land on the same partition the
//! real service would pick, so clients that depend on key affinity behave
//! identically against the emulator. The service hashes the key with Bob
//! Jenkins' lookup3 `hashlittle2` (both seeds zero) and folds the two 32-bit
//! outputs into a signed 16-bit value.

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

/// A parsed AMQP link address (source or target) naming an emulator entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityAddress {
    /// The claims-based-security node, `$cbs`.
    Cbs,
    /// The management node, `$management` or `<hub>/$management`.
    Management,
    /// An event hub, used by senders that let the service pick a partition.
    Hub {
        /// Event hub name as written in the address.
        hub: String,
    },
    /// A specific partition of an event hub, used by partition senders.
    Partition {
        /// Event hub name as written in the address.
        hub: String,
        /// Partition id as written in the address.
        partition: String,
    },
    /// A consumer group without a partition.
    ConsumerGroup {
        /// Event hub name as written in the address.
        hub: String,
        /// Consumer group name as written in the address.
        consumer_group: String,
    },
    /// A partition read through a consumer group, used by receivers.
    ConsumerPartition {
        /// Event hub name as written in the address.
        hub: String,
        /// Consumer group name as written in the address.
        consumer_group: String,
        /// Partition id as written in the address.
        partition: String,
    },
}

const CBS_NODE: &str = "$cbs";
const MANAGEMENT_NODE: &str = "$management";
const PARTITIONS: &str = "Partitions";
const CONSUMER_GROUPS: &str = "ConsumerGroups";

/// Parses an AMQP link address into the entity it names.
///
/// Accepts bare paths (`hub/Partitions/0`), paths with a leading `/`, and
/// full URLs (`amqps://host:port/hub/...`); a trailing `/` is ignored. The
/// path keywords match case-insensitively while names keep their spelling.
/// Returns `None` for empty segments or any unrecognised shape.
pub fn parse_entity_address(address: &str) -> Option<EntityAddress> {
    let path = entity_path(address);
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return None;
    }
    match segments.as_slice() {
        [node] if node.eq_ignore_ascii_case(CBS_NODE) => Some(EntityAddress::Cbs),
        [node] if node.eq_ignore_ascii_case(MANAGEMENT_NODE) => Some(EntityAddress::Management),
        [hub, rest @ ..] if !is_reserved_node(hub) => parse_hub_path(hub, rest),
        _ => None,
    }
}

/// Strips the scheme and authority of a URL plus one leading and one
/// trailing `/`, leaving the entity path.
fn entity_path(address: &str) -> &str {
    let path = match address.split_once("://") {
        // Everything up to the first '/' after the scheme is host[:port].
        Some((_, after_scheme)) => after_scheme.split_once('/').map_or("", |(_, path)| path),
        None => address,
    };
    let path = path.strip_prefix('/').unwrap_or(path);
    path.strip_suffix('/').unwrap_or(path)
}

/// Hub names never start with `$`, so the node names cannot be hubs; this
/// keeps e.g. `$cbs/Partitions/0` from being treated as a partition.
fn is_reserved_node(segment: &str) -> bool {
    segment.eq_ignore_ascii_case(CBS_NODE) || segment.eq_ignore_ascii_case(MANAGEMENT_NODE)
}

/// Interprets the segments following a hub name.
fn parse_hub_path(hub: &str, rest: &[&str]) -> Option<EntityAddress> {
    let hub = hub.to_string();
    match rest {
        [] => Some(EntityAddress::Hub { hub }),
        [node] if node.eq_ignore_ascii_case(MANAGEMENT_NODE) => Some(EntityAddress::Management),
        [keyword, partition] if keyword.eq_ignore_ascii_case(PARTITIONS) => {
            Some(EntityAddress::Partition {
                hub,
                partition: partition.to_string(),
            })
        }
        [keyword, group] if keyword.eq_ignore_ascii_case(CONSUMER_GROUPS) => {
            Some(EntityAddress::ConsumerGroup {
                hub,
                consumer_group: group.to_string(),
            })
        }
        [group_keyword, group, partition_keyword, partition]
            if group_keyword.eq_ignore_ascii_case(CONSUMER_GROUPS)
                && partition_keyword.eq_ignore_ascii_case(PARTITIONS) =>
        {
            Some(EntityAddress::ConsumerPartition {
                hub,
                consumer_group: group.to_string(),
                partition: partition.to_string(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    fn hub(name: &str) -> EntityAddress {
        EntityAddress::Hub { hub: name.into() }
    }

    #[test]
    fn parses_special_nodes() {
        assert_eq!(parse_entity_address("$cbs"), Some(EntityAddress::Cbs));
        assert_eq!(parse_entity_address("/$cbs"), Some(EntityAddress::Cbs));
        assert_eq!(
            parse_entity_address("$management"),
            Some(EntityAddress::Management)
        );
        assert_eq!(
            parse_entity_address("hub/$management"),
            Some(EntityAddress::Management)
        );
        assert_eq!(
            parse_entity_address("amqps://ns.servicebus.windows.net/$management"),
            Some(EntityAddress::Management)
        );
    }

    #[test]
    fn parses_hub() {
        assert_eq!(parse_entity_address("hub"), Some(hub("hub")));
        assert_eq!(parse_entity_address("/hub/"), Some(hub("hub")));
        assert_eq!(
            parse_entity_address("amqp://localhost:5672/MyHub"),
            Some(hub("MyHub"))
        );
    }

    #[test]
    fn parses_partition() {
        let expected = Some(EntityAddress::Partition {
            hub: "hub".into(),
            partition: "0".into(),
        });
        assert_eq!(parse_entity_address("/hub/Partitions/0"), expected);
        assert_eq!(parse_entity_address("hub/partitions/0/"), expected);
        assert_eq!(
            parse_entity_address("amqps://ns.servicebus.windows.net/hub/partitions/3"),
            Some(EntityAddress::Partition {
                hub: "hub".into(),
                partition: "3".into(),
            })
        );
    }

    #[test]
    fn parses_consumer_group() {
        assert_eq!(
            parse_entity_address("sb://127.0.0.1:1234/hub/consumergroups/$default"),
            Some(EntityAddress::ConsumerGroup {
                hub: "hub".into(),
                consumer_group: "$default".into(),
            })
        );
    }

    #[test]
    fn parses_consumer_partition() {
        assert_eq!(
            parse_entity_address("amqp://127.0.0.1:5672/hub/ConsumerGroups/$Default/Partitions/1"),
            Some(EntityAddress::ConsumerPartition {
                hub: "hub".into(),
                consumer_group: "$Default".into(),
                partition: "1".into(),
            })
        );
        assert_eq!(
            parse_entity_address("hub/CONSUMERGROUPS/cg/PARTITIONS/7"),
            Some(EntityAddress::ConsumerPartition {
                hub: "hub".into(),
                consumer_group: "cg".into(),
                partition: "7".into(),
            })
        );
    }

    #[test]
    fn rejects_malformed_addresses() {
        let rejected = [
            "",
            "/",
            "//",
            "amqps://host",
            "amqps://host/",
            "hub//Partitions/0",
            "hub/Partitions",
            "hub/Partitions/",
            "hub/Partitions/0/extra",
            "hub/Unknown/0",
            "hub/ConsumerGroups/cg/Partitions",
            "hub/ConsumerGroups/cg/Other/1",
            "hub/ConsumerGroups//Partitions/1",
            "$cbs/Partitions/0",
            "$management/extra",
        ];
        for address in rejected {
            assert_eq!(parse_entity_address(address), None, "address {address:?}");
        }
    }

    proptest! {
        #[test]
        fn index_is_in_range(key in any::<String>(), count in 1usize..1000) {
            prop_assert!(partition_index_for_key(&key, count) < count);
        }

        #[test]
        fn address_parsing_never_panics(address in any::<String>()) {
            let _ = parse_entity_address(&address);
        }
    }
}
