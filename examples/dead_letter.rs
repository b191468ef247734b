//! Recovery when ordering matters: write failed events to a dead-letter file.
//!
//! ```text
//! cargo run --release --example dead_letter
//! ```
//!
//! Events with the same partition key land in one partition, and the producer keeps them in
//! enqueue order there: one send per partition at a time (the default
//! `max_concurrent_sends_per_partition` of 1), and retries happen inside that send. Enqueueing
//! a failed batch again would break that order, since later events of the same keys have gone
//! out meanwhile. So the failure handler sets failed events aside instead, one line each, in a
//! file that a person or a repair job can replay knowing what it does; the events that were
//! delivered stay in order, with gaps where events were set aside.
//!
//! The run uses an in-process emulator. A third of the way through, the service starts
//! refusing deliveries with `amqp:resource-limit-exceeded` (a quota: not transient, so not
//! retried) for a while. At the end it checks that every event was delivered or dead-lettered,
//! that the file has a line per dead-lettered event, and, from what the emulator stored, that
//! each key's delivered events are in one partition and in enqueue order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, EnqueueOptions, EventData, PropertyValue,
    SendFailedContext, SendSucceededContext,
};
use eventhubs_emulator::{Emulator, FaultCondition, FaultScope, ReceivedEvent, Value};
use tokio::fs::File;
use tokio::io::AsyncWriteExt;

type BoxError = Box<dyn std::error::Error>;

const HUB: &str = "hub";
const PARTITIONS: usize = 4;
const EVENTS: u32 = 10_000;
/// Partition keys "account-0" to "account-15".
const KEYS: u32 = 16;
/// The property that numbers the events in enqueue order, from 0.
const INDEX: &str = "index";
/// When the outage starts, as an event index, and how many deliveries it refuses.
const OUTAGE_STARTS_AT: u32 = EVENTS / 3;
const OUTAGE_DELIVERIES: u64 = 4;
/// Small partition buffers make small batches, so that the outage hits a few of many batches
/// rather than a quarter of the run.
const BUFFERED_EVENTS_PER_PARTITION: usize = 100;

fn index_of(event: &EventData) -> Option<i64> {
    match event.property(INDEX) {
        Some(PropertyValue::I64(index)) => Some(*index),
        _ => None,
    }
}

/// One tab-separated line: partition, key (`-` without one), index, error kind.
fn dead_letter_line(
    partition_id: &str,
    event: &EventData,
    key: Option<&str>,
    error_kind: &str,
) -> String {
    let index = index_of(event).map_or_else(|| "-".to_string(), |i| i.to_string());
    format!(
        "{partition_id}\t{}\t{index}\t{error_kind}\n",
        key.unwrap_or("-")
    )
}

/// The dead-letter file and what the handlers counted.
struct Outcomes {
    delivered: AtomicU64,
    dead_lettered: AtomicU64,
    /// Events whose line could not be written: those are truly lost, and the run fails.
    unwritten: AtomicU64,
    path: PathBuf,
    /// Handlers of different partitions run at once; the lock keeps each batch's lines together.
    file: tokio::sync::Mutex<File>,
}

impl Outcomes {
    async fn create(path: PathBuf) -> Result<Self, BoxError> {
        let file = File::create(&path)
            .await
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self {
            delivered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            unwritten: AtomicU64::new(0),
            path,
            file: tokio::sync::Mutex::new(file),
        })
    }

    fn on_delivered(&self, context: &SendSucceededContext) {
        self.delivered
            .fetch_add(context.events.len() as u64, Ordering::Relaxed);
    }

    async fn on_failed(&self, context: SendFailedContext) {
        let count = context.events.len() as u64;
        let kind = context.error.kind().to_string();
        let lines: String = context
            .events
            .iter()
            .map(|reported| {
                dead_letter_line(
                    &context.partition_id,
                    &reported.event,
                    reported.partition_key(),
                    &kind,
                )
            })
            .collect();
        match self.append(lines.as_bytes()).await {
            Ok(()) => {
                self.dead_lettered.fetch_add(count, Ordering::Relaxed);
            }
            Err(e) => {
                self.unwritten.fetch_add(count, Ordering::Relaxed);
                eprintln!(
                    "could not dead-letter {count} events of partition {} ({}): {e}",
                    context.partition_id, context.error
                );
            }
        }
    }

    /// Writes and syncs before the handler returns: the file is the only copy of these events.
    async fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut file = self.file.lock().await;
        file.write_all(bytes).await?;
        file.sync_data().await
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
}

fn build_producer(
    emulator: &Emulator,
    outcomes: &Arc<Outcomes>,
) -> Result<BufferedProducerClient, BoxError> {
    let options = BufferedProducerOptions::default()
        .with_max_buffered_events_per_partition(BUFFERED_EVENTS_PER_PARTITION);
    let on_delivered = outcomes.clone();
    let on_failed = outcomes.clone();
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(options)
            .on_send_succeeded(move |context| {
                on_delivered.on_delivered(&context);
                async {}
            })
            .on_send_failed(move |context| {
                let outcomes = on_failed.clone();
                async move { outcomes.on_failed(context).await }
            })
            .build()?;
    Ok(producer)
}

/// Enqueues every event from this one task, so that each key's enqueue order is its index
/// order. Returns how many were enqueued.
async fn publish(producer: &BufferedProducerClient, emulator: &Emulator) -> Result<u64, BoxError> {
    for index in 0..EVENTS {
        if index == OUTAGE_STARTS_AT {
            // Simulated: a real service would do this on its own.
            println!("outage: the service refuses the next {OUTAGE_DELIVERIES} deliveries");
            emulator.faults().reject_next(
                OUTAGE_DELIVERIES,
                FaultCondition::ResourceLimitExceeded,
                FaultScope::Any,
            );
        }
        let key = format!("account-{}", index % KEYS);
        let event = EventData::from(format!(r#"{{"account":"{key}","index":{index}}}"#))
            .with_property(INDEX, i64::from(index));
        producer
            .enqueue_event(event, EnqueueOptions::default().with_partition_key(key))
            .await?;
    }
    Ok(u64::from(EVENTS))
}

/// A stored event's key (the partition key the service routed it by) and index.
fn stored_key_and_index(event: &ReceivedEvent) -> Result<(String, i64), BoxError> {
    let key = event
        .partition_key()?
        .ok_or("a stored event has no partition key")?;
    match event.property(INDEX)? {
        Some(Value::Long(index)) => Ok((key, index)),
        other => Err(format!("a stored event has index {other:?}, not a long").into()),
    }
}

/// Checks, from what the emulator stored, that each key's events are in one partition and in
/// enqueue order (increasing indexes; gaps are the dead-lettered events). Returns the number
/// of keys seen.
fn check_order_per_key(emulator: &Emulator) -> Result<usize, BoxError> {
    // Per key: its partition and the last index seen there.
    let mut last_seen: HashMap<String, (String, i64)> = HashMap::new();
    for partition in emulator.partition_ids(HUB)? {
        for event in emulator.events(HUB, &partition)? {
            let (key, index) = stored_key_and_index(&event)?;
            match last_seen.get(&key) {
                Some((other, _)) if *other != partition => {
                    return Err(
                        format!("key {key} is in partitions {other} and {partition}").into(),
                    )
                }
                Some((_, last)) if *last >= index => {
                    return Err(
                        format!("key {key}: event {index} was stored after event {last}").into(),
                    )
                }
                _ => {}
            }
            last_seen.insert(key, (partition.clone(), index));
        }
    }
    Ok(last_seen.len())
}

async fn verify(emulator: &Emulator, enqueued: u64, outcomes: &Outcomes) -> Result<(), BoxError> {
    let unwritten = outcomes.unwritten.load(Ordering::Relaxed);
    if unwritten > 0 {
        return Err(format!("{unwritten} failed events could not be dead-lettered").into());
    }
    let accounted = outcomes.delivered() + outcomes.dead_lettered();
    if accounted != enqueued {
        return Err(format!(
            "{enqueued} events enqueued but {accounted} delivered or dead-lettered"
        )
        .into());
    }
    let lines = tokio::fs::read_to_string(&outcomes.path)
        .await?
        .lines()
        .count() as u64;
    println!(
        "dead-letter file:  {} ({lines} lines)",
        outcomes.path.display()
    );
    if lines != outcomes.dead_lettered() {
        return Err(format!(
            "the dead-letter file has {lines} lines for {} events",
            outcomes.dead_lettered()
        )
        .into());
    }
    let stored = emulator.total_event_count(HUB)? as u64;
    if stored != outcomes.delivered() {
        return Err(format!(
            "the emulator stored {stored} events but {} were delivered",
            outcomes.delivered()
        )
        .into());
    }
    let keys = check_order_per_key(emulator)?;
    println!(
        "ok: delivered + dead-lettered = enqueued; the emulator stored the {stored} delivered"
    );
    println!("ok: each of the {keys} keys is in one partition, in enqueue order");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let emulator = Emulator::builder().hub(HUB, PARTITIONS).start().await?;
    let path =
        std::env::temp_dir().join(format!("eventhubs-dead-letter-{}.tsv", std::process::id()));
    let outcomes = Arc::new(Outcomes::create(path).await?);
    let producer = build_producer(&emulator, &outcomes)?;

    let enqueued = publish(&producer, &emulator).await?;
    // Close sends what is still buffered and returns once every batch has been reported.
    producer.close().await?;

    println!("enqueued:          {enqueued}");
    println!("delivered:         {}", outcomes.delivered());
    println!("dead-lettered:     {}", outcomes.dead_lettered());
    verify(&emulator, enqueued, &outcomes).await
}
