//! The `attach` performative of a client's link, decoded from the fuzzer's bytes as the
//! emulator's frame decoder does, then run through the checks the emulator makes before it
//! answers: routing by address, then the producer checks (hub, partition, authorization,
//! idempotent-producer properties) or the consumer checks (consumer group, partition,
//! authorization, start-position filter, epoch).
//!
//! Input: one byte of options (bit 0: the connection holds a grant for the whole namespace, so
//! the checks after authorization run), then the encoded `attach`.
#![no_main]

use eventhubs_emulator::fuzzing::Harness;
use fe2o3_amqp_types::performatives::Attach;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let Ok(attach) = serde_amqp::from_slice::<Attach>(rest) else {
        return;
    };
    let harness = Harness::new();
    if options & 1 != 0 {
        harness.authorize_everything();
    }
    let _ = harness.check_attach(&attach);
    // A second attach on the same namespace meets the registrations of the first.
    let _ = harness.check_attach(&attach);
});
