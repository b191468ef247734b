//! A property of BufferedProducerClient against the emulator: whatever mix of enqueues,
//! flushes and faults happens, every event gets exactly one handler call, what succeeded is
//! stored exactly once where it was reported, what failed is not stored, the order of each
//! partition is kept, and nothing stays buffered after close.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerHandler, BufferedProducerOptions, EnqueueOptions,
    ErrorKind, EventData, PropertyValue, RetryOptions, SendFailedContext, SendSucceededContext,
};
use eventhubs_emulator::{partition_index_for_key, Emulator, FaultCondition, FaultScope, Value};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const HUB: &str = "hub";
const PARTITIONS: usize = 4;
const KEYS: [&str; 3] = ["alpha", "beta", "device-7"];

#[derive(Debug, Clone)]
enum Route {
    Automatic,
    Key(usize),
    Partition(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        count: usize,
        route: Route,
    },
    Flush,
    /// Rejections a retry can get past (unless several add up beyond max_retries).
    RejectTransient {
        count: u64,
        partition: usize,
        timeout: bool,
    },
    /// One rejection no retry can fix.
    RejectNonTransient {
        partition: usize,
    },
    /// Flush, then cut the connection. (Cutting it while a batch is in flight may store that
    /// batch twice, which is at-least-once delivery, tested on its own in
    /// buffered_producer.rs; here every success must be stored exactly once.)
    DropConnection,
    DelayDispositions(u64),
}

fn route() -> impl Strategy<Value = Route> {
    prop_oneof![
        Just(Route::Automatic),
        (0..KEYS.len()).prop_map(Route::Key),
        (0..PARTITIONS).prop_map(Route::Partition),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..8, route()).prop_map(|(count, route)| Op::Enqueue { count, route }),
        1 => Just(Op::Flush),
        1 => (1u64..=3, 0..PARTITIONS, any::<bool>())
            .prop_map(|(count, partition, timeout)| Op::RejectTransient { count, partition, timeout }),
        1 => (0..PARTITIONS).prop_map(|partition| Op::RejectNonTransient { partition }),
        1 => Just(Op::DropConnection),
        1 => prop_oneof![Just(0u64), Just(10), Just(40)].prop_map(Op::DelayDispositions),
    ]
}

/// One handler call: partition, event ids in order, error kind of a failure.
type Call = (String, Vec<i64>, Option<ErrorKind>);

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Call>>>);

fn id_of(event: &EventData) -> i64 {
    match event.property("id") {
        Some(PropertyValue::I64(id)) => *id,
        other => panic!("an event without its id: {other:?}"),
    }
}

impl BufferedProducerHandler for Recorder {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        let ids = context.event_data().map(id_of).collect();
        self.0
            .lock()
            .unwrap()
            .push((context.partition_id, ids, None));
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        let ids = context.event_data().map(id_of).collect();
        let kind = Some(context.error.kind());
        self.0
            .lock()
            .unwrap()
            .push((context.partition_id, ids, kind));
    }
}

/// What the test knows of an enqueued event.
struct Enqueued {
    id: i64,
    key: Option<&'static str>,
    partition: Option<String>,
}

async fn run_case(
    ops: Vec<Op>,
    max_wait_ms: Option<u64>,
    per_partition: usize,
) -> Result<(), TestCaseError> {
    let emulator = Emulator::builder()
        .hub(HUB, PARTITIONS)
        .start()
        .await
        .expect("emulator");
    let retry = RetryOptions::default()
        .with_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(20))
        // A lost connection costs one try timeout (a connection-layer bug, see
        // buffered_producer.rs); keep it short, far above any answer time used here.
        .with_try_timeout(Duration::from_secs(1));
    let options = BufferedProducerOptions::default()
        .with_max_wait_time(max_wait_ms.map(Duration::from_millis))
        .with_max_buffered_events_per_partition(per_partition)
        .with_retry_options(retry);
    let recorder = Recorder::default();
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(options)
            .handler(recorder.clone())
            .build()
            .expect("producer");
    let faults = emulator.faults();

    let mut enqueued: Vec<Enqueued> = Vec::new();
    for op in ops {
        match op {
            Op::Enqueue { count, route } => {
                for _ in 0..count {
                    let id = enqueued.len() as i64;
                    let (options, key, partition) = match &route {
                        Route::Automatic => (EnqueueOptions::default(), None, None),
                        Route::Key(k) => (
                            EnqueueOptions::default().with_partition_key(KEYS[*k]),
                            Some(KEYS[*k]),
                            Some(partition_index_for_key(KEYS[*k], PARTITIONS).to_string()),
                        ),
                        Route::Partition(p) => (
                            EnqueueOptions::default().with_partition_id(p.to_string()),
                            None,
                            Some(p.to_string()),
                        ),
                    };
                    let event = EventData::from(format!("event {id}")).with_property("id", id);
                    producer
                        .enqueue_event(event, options)
                        .await
                        .map_err(|e| TestCaseError::fail(format!("enqueue {id}: {e}")))?;
                    enqueued.push(Enqueued { id, key, partition });
                }
            }
            Op::Flush => producer
                .flush()
                .await
                .map_err(|e| TestCaseError::fail(format!("flush: {e}")))?,
            Op::RejectTransient {
                count,
                partition,
                timeout,
            } => {
                let condition = if timeout {
                    FaultCondition::Timeout
                } else {
                    FaultCondition::InternalError
                };
                faults.reject_next(
                    count,
                    condition,
                    FaultScope::partition(HUB, partition.to_string()),
                );
            }
            Op::RejectNonTransient { partition } => faults.reject_next(
                1,
                FaultCondition::ResourceLimitExceeded,
                FaultScope::partition(HUB, partition.to_string()),
            ),
            Op::DropConnection => {
                producer
                    .flush()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("flush: {e}")))?;
                faults.drop_connections();
                // The drop is carried out asynchronously: wait for it, so that no batch sent
                // next is in flight when it happens.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while emulator.connection_count() > 0 {
                    prop_assert!(
                        tokio::time::Instant::now() < deadline,
                        "the connection was not dropped"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            Op::DelayDispositions(ms) => faults.delay_dispositions(Duration::from_millis(ms)),
        }
    }
    producer
        .close()
        .await
        .map_err(|e| TestCaseError::fail(format!("close: {e}")))?;

    // Nothing buffered; nothing more accepted.
    prop_assert_eq!(producer.total_buffered_event_count(), 0);
    for p in 0..PARTITIONS {
        prop_assert_eq!(producer.buffered_event_count(&p.to_string()), 0);
    }
    let late = producer
        .enqueue_event(EventData::from("late"), EnqueueOptions::default())
        .await;
    prop_assert_eq!(late.map_err(|e| e.kind()), Err(ErrorKind::Closed));

    // Exactly one handler call for every event, where its id or key says.
    let calls = recorder.0.lock().unwrap().clone();
    let mut outcome: HashMap<i64, (String, Option<ErrorKind>)> = HashMap::new();
    for (partition, ids, kind) in &calls {
        for id in ids {
            let previous = outcome.insert(*id, (partition.clone(), *kind));
            prop_assert!(previous.is_none(), "event {} reported twice", id);
        }
        if let Some(kind) = kind {
            prop_assert!(
                matches!(
                    kind,
                    ErrorKind::QuotaExceeded | ErrorKind::ServiceError | ErrorKind::Timeout
                ),
                "unexpected failure kind {:?}",
                kind
            );
        }
    }
    prop_assert_eq!(outcome.len(), enqueued.len(), "every event was reported");
    for e in &enqueued {
        let (reported, _) = outcome
            .get(&e.id)
            .ok_or_else(|| TestCaseError::fail(format!("event {} never reported", e.id)))?;
        if let Some(expected) = &e.partition {
            prop_assert_eq!(reported, expected, "event {} partition", e.id);
        }
    }

    // Successes stored exactly once, where reported; failures not stored at all; each
    // partition stores and reports in enqueue order.
    let mut stored_count = 0;
    for p in 0..PARTITIONS {
        let partition = p.to_string();
        let stored = emulator.events(HUB, &partition).expect("events");
        stored_count += stored.len();
        let mut stored_ids = Vec::new();
        for event in &stored {
            let id = match event.property("id").expect("decodes") {
                Some(Value::Long(id)) => id,
                other => return Err(TestCaseError::fail(format!("stored id {other:?}"))),
            };
            let key = event.partition_key().expect("decodes");
            prop_assert_eq!(
                key.as_deref(),
                enqueued[id as usize].key,
                "event {} key",
                id
            );
            stored_ids.push(id);
        }
        let succeeded_here: Vec<i64> = enqueued
            .iter()
            .map(|e| e.id)
            .filter(|id| outcome[id] == (partition.clone(), None))
            .collect();
        prop_assert_eq!(
            &stored_ids,
            &succeeded_here,
            "partition {} stores each success once, in enqueue order",
            p
        );
        let reported_here: Vec<i64> = calls
            .iter()
            .filter(|(q, _, _)| *q == partition)
            .flat_map(|(_, ids, _)| ids.iter().copied())
            .collect();
        prop_assert!(
            reported_here.windows(2).all(|w| w[0] < w[1]),
            "partition {} reported out of order: {:?}",
            p,
            reported_here
        );
    }
    let successes = outcome.values().filter(|(_, kind)| kind.is_none()).count();
    prop_assert_eq!(stored_count, successes);
    Ok(())
}

proptest! {
    // A few dozen cases, each a fresh emulator and producer (about 50 ms); a failing case
    // shrinks for at most a minute (each try of a hanging case costs its 15 s bound).
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_event_is_reported_once_and_successes_are_stored_once(
        ops in proptest::collection::vec(op(), 1..12),
        max_wait_ms in prop_oneof![Just(Some(5u64)), Just(Some(20)), Just(None)],
        per_partition in prop_oneof![Just(4usize), Just(50)],
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            match tokio::time::timeout(
                Duration::from_secs(15),
                run_case(ops, max_wait_ms, per_partition),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(TestCaseError::fail("the case did not finish within 15 s")),
            }
        })?;
    }
}
