//! Recovery when ordering does not matter: enqueue transiently failed events again.
//!
//! ```text
//! cargo run --release --example requeue_on_failure
//! ```
//!
//! The producer already retries every send (`RetryOptions`); a batch reaches the failure
//! handler only once those retries are used up, or at once when the error is not transient.
//! When the order of events does not matter, the handler can give transiently failed events
//! another chance by enqueueing them again: they are routed anew, mostly to other partitions,
//! and go out in a later batch. Errors that are not transient (a quota, a size, an
//! authorization) would fail the same way again, so those events are recorded as lost.
//!
//! Each event carries an `attempt` property, so that no event goes round forever: after
//! `MAX_ATTEMPTS` tries it is given up. The property is also published, which lets consumers
//! see which events took several tries.
//!
//! The run uses an in-process emulator whose partition 3 fails its next deliveries with
//! `amqp:internal-error` (transient) and whose partition 1 refuses one with
//! `amqp:resource-limit-exceeded` (not transient). At the end it checks that every event was
//! delivered, given up or lost, and that the emulator stored exactly the delivered ones.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, EnqueueOptions, Error, EventData,
    PropertyValue, RetryOptions, SendFailedContext, SendSucceededContext,
};
use eventhubs_emulator::{Emulator, FaultCondition, FaultScope};

type BoxError = Box<dyn std::error::Error>;

const HUB: &str = "hub";
const PARTITIONS: usize = 4;
const EVENTS: u32 = 10_000;
/// The property that counts the tries of an event (absent on the first).
const ATTEMPT: &str = "attempt";
/// The property that numbers the events, from 0.
const INDEX: &str = "index";
/// Tries an event gets, the first included, before it is given up.
const MAX_ATTEMPTS: i64 = 5;
/// Deliveries partition 3 rejects: with one retry per send, every two fail one batch.
const PARTITION_3_REJECTIONS: u64 = 20;
/// Small partition buffers make small batches, so that the injected faults hit a few of many
/// batches rather than a quarter of the run.
const BUFFERED_EVENTS_PER_PARTITION: usize = 250;

/// Locks a mutex even if a panicking handler poisoned it: the counts stay meaningful.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An integer property of `event`, if it has one.
fn int_property(event: &EventData, name: &str) -> Option<i64> {
    match event.property(name) {
        Some(PropertyValue::I64(value)) => Some(*value),
        _ => None,
    }
}

/// Which try this is for `event`: 1 until it has been enqueued again.
fn attempt_of(event: &EventData) -> i64 {
    int_property(event, ATTEMPT).unwrap_or(1)
}

/// The handlers' state: what became of the events.
#[derive(Default)]
struct Recovery {
    delivered: AtomicU64,
    requeued: AtomicU64,
    given_up: AtomicU64,
    delivered_by_attempt: Mutex<BTreeMap<i64, u64>>,
    lost_by_reason: Mutex<BTreeMap<String, u64>>,
}

impl Recovery {
    fn on_delivered(&self, context: &SendSucceededContext) {
        self.delivered
            .fetch_add(context.events.len() as u64, Ordering::Relaxed);
        let mut by_attempt = lock(&self.delivered_by_attempt);
        for event in context.event_data() {
            *by_attempt.entry(attempt_of(event)).or_default() += 1;
        }
    }

    async fn on_failed(&self, context: SendFailedContext) {
        if !context.error.is_transient() {
            // Trying again would get the same answer: keep the reason instead.
            self.record_lost(context.events.len(), context.error.to_string());
            return;
        }
        // The context hands out the producer the events came from.
        let Some(producer) = context.producer().cloned() else {
            self.record_lost(context.events.len(), "the producer is gone".into());
            return;
        };
        for reported in context.events {
            self.requeue(&producer, reported.event, &context.error)
                .await;
        }
    }

    /// Enqueues `event` again, with its next attempt number, unless it has had all its tries.
    ///
    /// One event at a time rather than `enqueue_events`: if an enqueue were refused (the
    /// producer closing), the count of what was taken must stay exact. It never waits for
    /// buffer space: enqueues from a handler use the space its failed batch gave back.
    async fn requeue(
        &self,
        producer: &BufferedProducerClient,
        mut event: EventData,
        error: &Error,
    ) {
        let attempt = attempt_of(&event);
        if attempt >= MAX_ATTEMPTS {
            self.given_up.fetch_add(1, Ordering::Relaxed);
            let index = int_property(&event, INDEX).unwrap_or(-1);
            eprintln!("giving up event {index} after {attempt} tries: {error}");
            return;
        }
        event.set_property(ATTEMPT, attempt + 1);
        // Automatic routing sends re-enqueued events to partitions whose last send did not
        // fail, so they leave the failing one.
        match producer
            .enqueue_event(event, EnqueueOptions::default())
            .await
        {
            Ok(_) => {
                self.requeued.fetch_add(1, Ordering::Relaxed);
            }
            Err(refused) => self.record_lost(1, format!("not enqueued again: {refused}")),
        }
    }

    fn record_lost(&self, events: usize, reason: String) {
        *lock(&self.lost_by_reason).entry(reason).or_default() += events as u64;
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn given_up(&self) -> u64 {
        self.given_up.load(Ordering::Relaxed)
    }

    fn lost(&self) -> u64 {
        lock(&self.lost_by_reason).values().sum()
    }
}

fn build_producer(
    emulator: &Emulator,
    recovery: &Arc<Recovery>,
) -> Result<BufferedProducerClient, BoxError> {
    // Few, quick retries, so that failures reach the handler within milliseconds. (A
    // server-busy error would add 4 to 8 s to each pause, as the service asks.)
    let retry = RetryOptions::default()
        .with_max_retries(1)
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50));
    let options = BufferedProducerOptions::default()
        .with_retry_options(retry)
        .with_max_buffered_events_per_partition(BUFFERED_EVENTS_PER_PARTITION);
    let on_delivered = recovery.clone();
    let on_failed = recovery.clone();
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(options)
            .on_send_succeeded(move |context| {
                on_delivered.on_delivered(&context);
                async {}
            })
            .on_send_failed(move |context| {
                let recovery = on_failed.clone();
                async move { recovery.on_failed(context).await }
            })
            .build()?;
    Ok(producer)
}

/// Makes the emulator misbehave. The rules count deliveries, not time, so every run meets
/// the same faults whatever the machine's speed.
fn inject_faults(emulator: &Emulator) {
    let faults = emulator.faults();
    faults.reject_next(
        PARTITION_3_REJECTIONS,
        FaultCondition::InternalError,
        FaultScope::partition(HUB, "3"),
    );
    faults.reject_next(
        1,
        FaultCondition::ResourceLimitExceeded,
        FaultScope::partition(HUB, "1"),
    );
}

async fn publish(producer: &BufferedProducerClient) -> Result<u64, BoxError> {
    for index in 0..EVENTS {
        let event = EventData::from(format!(r#"{{"index":{index}}}"#))
            .with_property(INDEX, i64::from(index));
        producer
            .enqueue_event(event, EnqueueOptions::default())
            .await?;
    }
    Ok(u64::from(EVENTS))
}

/// Flushes until nothing is buffered; returns how many flushes it took.
///
/// A flush returns once every event buffered when it began has been reported to a handler,
/// but events the failure handler enqueued again meanwhile need another flush.
async fn settle(producer: &BufferedProducerClient) -> Result<u32, BoxError> {
    let mut flushes = 0;
    loop {
        producer.flush().await?;
        flushes += 1;
        if producer.total_buffered_event_count() == 0 {
            return Ok(flushes);
        }
    }
}

fn print_report(enqueued: u64, recovery: &Recovery) {
    println!("enqueued:     {enqueued}");
    println!("delivered:    {}", recovery.delivered());
    for (attempt, count) in lock(&recovery.delivered_by_attempt).iter() {
        println!("  on try {attempt}: {count}");
    }
    println!(
        "re-enqueued:  {} times",
        recovery.requeued.load(Ordering::Relaxed)
    );
    println!(
        "given up:     {} (after {MAX_ATTEMPTS} tries)",
        recovery.given_up()
    );
    println!("lost:         {}", recovery.lost());
    for (reason, count) in lock(&recovery.lost_by_reason).iter() {
        println!("  {count}: {reason}");
    }
}

fn verify(emulator: &Emulator, enqueued: u64, recovery: &Recovery) -> Result<(), BoxError> {
    let stored = emulator.total_event_count(HUB)? as u64;
    println!("stored by the emulator: {stored}");
    if stored != recovery.delivered() {
        return Err(format!(
            "the emulator stored {stored} events but {} were delivered",
            recovery.delivered()
        )
        .into());
    }
    let accounted = recovery.delivered() + recovery.given_up() + recovery.lost();
    if accounted != enqueued {
        return Err(format!(
            "{enqueued} events enqueued but {accounted} delivered, given up or lost"
        )
        .into());
    }
    println!("ok: every event was delivered, given up or lost, and the emulator agrees");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let emulator = Emulator::builder().hub(HUB, PARTITIONS).start().await?;
    let recovery = Arc::new(Recovery::default());
    let producer = build_producer(&emulator, &recovery)?;
    inject_faults(&emulator);

    let started = Instant::now();
    let enqueued = publish(&producer).await?;
    let flushes = settle(&producer).await?;
    let elapsed = started.elapsed();
    producer.close().await?;

    print_report(enqueued, &recovery);
    println!(
        "settled after {flushes} flushes in {:.2} s",
        elapsed.as_secs_f64()
    );
    verify(&emulator, enqueued, &recovery)
}
