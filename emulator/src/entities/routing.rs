//! Partition routing and AMQP entity address parsing.
//!
//! Events sent with a partition key must land on the partition the real service would pick,
//! so the hash comes from `eventhubs-partition-key`, the one implementation the client crate
//! uses too.

pub use eventhubs_partition_key::{partition_index_for_key, partition_key_hash};

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
        fn address_parsing_never_panics(address in any::<String>()) {
            let _ = parse_entity_address(&address);
        }
    }
}
