//! The payload of a transfer on a producer link: decoded as the emulator's receiving link does,
//! then checked and stored (plain or batched, routed or to a partition, idempotent or not), then
//! read back as a consumer link would send it.
//!
//! Input: one byte of options, then the payload. Options: bit 0 batch format (0x80013700),
//! bits 1-2 the link (hub, partition 0, partition 3, partition 7 which does not exist), bit 3
//! idempotent producer, bit 4 runtime-metric annotations on delivery.
//!
//! Checks, beyond no panic: a rejected delivery stores nothing; every stored event is read
//! back; a stored plain message, or idempotent event, always decodes again (a consumer would
//! otherwise skip it); what
//! a consumer sends always encodes; an idempotent producer's accepted delivery sent again stores
//! nothing more.
#![no_main]

use eventhubs_emulator::fuzzing::{decode_message, Harness};
use fe2o3_amqp_types::messaging::message::__private::Serializable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&options, payload)) = data.split_first() else {
        return;
    };
    let is_batch = options & 1 != 0;
    let partition = match (options >> 1) & 3 {
        0 => None,
        1 => Some("0"),
        2 => Some("3"),
        _ => Some("7"),
    };
    let idempotent = options & 8 != 0;
    let metric = options & 16 != 0;

    // A payload that does not decode ends the link before the emulator sees a message.
    let Ok(message) = decode_message(payload) else {
        return;
    };
    let harness = Harness::new();
    match harness.store(message.clone(), is_batch, partition, idempotent) {
        Ok(stored) => {
            let delivered = harness.delivered(metric);
            assert_eq!(
                delivered.len(),
                stored,
                "stored events are not all read back"
            );
            if !is_batch || (idempotent && partition.is_some()) {
                // Plain messages are stored re-encoded, and an idempotent producer's batch (only
                // a partition link can be one) had every event decoded for its sequence number:
                // all must decode for consumers. Other batches are stored as sent, unchecked.
                assert!(
                    delivered.iter().all(Option::is_some),
                    "a stored event the emulator decoded does not decode for consumers"
                );
            }
            for message in delivered.into_iter().flatten() {
                if let Err(error) = serde_amqp::to_vec(&Serializable(message)) {
                    panic!("a delivered message does not encode: {error}");
                }
            }
            if idempotent && partition.is_some() {
                // The same delivery again from the same producer (a retry after a lost
                // acknowledgement) is accepted and stores nothing.
                match harness.store(message, is_batch, partition, true) {
                    Ok(after) => assert_eq!(after, stored, "an idempotent retry was stored twice"),
                    Err(error) => panic!("an idempotent retry was refused: {error}"),
                }
            }
        }
        Err(_) => {
            assert!(
                harness.delivered(false).is_empty(),
                "a rejected delivery was stored"
            );
        }
    }
});
