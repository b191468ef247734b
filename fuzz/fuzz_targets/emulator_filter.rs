//! The text a consumer's attach and any link's address carry: the start-position selector
//! filter and the entity address.
//!
//! Checks, beyond no panic: a parsed filter, written back in its canonical form, parses to the
//! same position; a refused value is quoted from the input; a parsed address, written back as a
//! path, parses to the same entity.
#![no_main]

use eventhubs_emulator::filter::{parse_start_position, FilterError, StartPosition};
use eventhubs_emulator::routing::{parse_entity_address, EntityAddress};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_filter(&text);
    check_address(&text);
});

fn check_filter(text: &str) {
    match parse_start_position(text) {
        Ok(position) => {
            let canonical = write_filter(&position);
            assert_eq!(
                parse_start_position(&canonical).as_ref(),
                Ok(&position),
                "{canonical:?} parses differently"
            );
        }
        Err(FilterError::InvalidValue { value, .. }) => {
            assert!(
                text.contains(&value),
                "the error quotes {value:?}, not in the input"
            );
        }
        Err(_) => {}
    }
}

fn write_filter(position: &StartPosition) -> String {
    let op = |inclusive: bool| if inclusive { ">=" } else { ">" };
    match position {
        StartPosition::Earliest => "amqp.annotation.x-opt-offset > '-1'".to_string(),
        StartPosition::Latest => "amqp.annotation.x-opt-offset > '@latest'".to_string(),
        // `-1` itself means Earliest; `-01` is the same number without that meaning.
        StartPosition::Offset {
            offset: -1,
            inclusive,
        } => format!("amqp.annotation.x-opt-offset {} '-01'", op(*inclusive)),
        StartPosition::Offset { offset, inclusive } => {
            format!("amqp.annotation.x-opt-offset {} '{offset}'", op(*inclusive))
        }
        StartPosition::SequenceNumber {
            sequence_number,
            inclusive,
        } => format!(
            "amqp.annotation.x-opt-sequence-number {} '{sequence_number}'",
            op(*inclusive)
        ),
        StartPosition::EnqueuedTime {
            unix_millis,
            inclusive,
        } => format!(
            "amqp.annotation.x-opt-enqueued-time {} '{unix_millis}'",
            op(*inclusive)
        ),
    }
}

fn check_address(text: &str) {
    let Some(entity) = parse_entity_address(text) else {
        return;
    };
    let path = match &entity {
        EntityAddress::Cbs => "$cbs".to_string(),
        EntityAddress::Management => "$management".to_string(),
        EntityAddress::Hub { hub } => hub.clone(),
        EntityAddress::Partition { hub, partition } => format!("{hub}/Partitions/{partition}"),
        EntityAddress::ConsumerGroup {
            hub,
            consumer_group,
        } => format!("{hub}/ConsumerGroups/{consumer_group}"),
        EntityAddress::ConsumerPartition {
            hub,
            consumer_group,
            partition,
        } => format!("{hub}/ConsumerGroups/{consumer_group}/Partitions/{partition}"),
    };
    for address in [path.clone(), format!("amqps://ns.example:5671/{path}/")] {
        assert_eq!(
            parse_entity_address(&address).as_ref(),
            Some(&entity),
            "{address:?} parses differently"
        );
    }
}
