//! Quickstart: publish events with the buffered producer and see where they went.
//!
//! ```text
//! cargo run --release --example quickstart [-- --events N]
//! ```
//!
//! Where it publishes:
//!
//! * `EVENTHUBS_CONNECTION_STRING` unset or empty: to an in-process emulator (event hub `hub`,
//!   4 partitions), so the example runs anywhere, offline; at the end it checks that the
//!   emulator stored exactly the events the producer confirmed.
//! * `EVENTHUBS_CONNECTION_STRING` set: to that event hub, named by the string's `EntityPath`
//!   or by `EVENTHUBS_NAME`.
//!
//! What it does: 4 tasks enqueue `N` events (default 100,000) between them, half routed
//! automatically, half with one of 64 partition keys. The producer batches them per partition
//! and reports every batch to the handlers, which count what was confirmed and what failed.
//! A progress bar of confirmed events is drawn on stderr when stdout is a terminal. At the end
//! it prints a per-partition table, the totals and the throughput, a summary of the producer's
//! own metrics (batch sizes, send durations, enqueue-to-publish latency), and exits non-zero if
//! any event failed. `RUST_LOG=info` (or `debug`) logs what the producer does, on stderr.

use std::collections::HashMap;
use std::env::{self, VarError};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use eventhubs_buffered::{
    BufferedProducerClient, EnqueueOptions, ErrorKind, EventData, ProducerMetrics,
    SendFailedContext, SendSucceededContext,
};
use eventhubs_emulator::Emulator;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error>;

const DEFAULT_EVENTS: u32 = 100_000;
/// Tasks enqueueing at the same time, as several parts of an application would.
const PUBLISHERS: u32 = 4;
/// Distinct partition keys ("device-0" to "device-63") of the keyed half.
const DEVICES: u32 = 64;
const EMULATOR_HUB: &str = "hub";
const EMULATOR_PARTITIONS: usize = 4;
/// How many failed batches are printed in full; the rest are only counted.
const ERRORS_SHOWN: u64 = 5;
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// The command line.
#[derive(clap::Parser)]
#[command(about = "Publish events with the buffered producer and see where they went")]
struct Args {
    /// How many events to publish.
    #[arg(long, default_value_t = DEFAULT_EVENTS, value_parser = clap::value_parser!(u32).range(1..))]
    events: u32,
}

/// The event hub to publish to, and the emulator serving it when there is one.
struct Destination {
    connection_string: String,
    eventhub: Option<String>,
    emulator: Option<Emulator>,
}

impl Destination {
    async fn from_env() -> Result<Self, BoxError> {
        match env::var("EVENTHUBS_CONNECTION_STRING") {
            Ok(connection_string) if !connection_string.trim().is_empty() => Ok(Self {
                connection_string,
                eventhub: env::var("EVENTHUBS_NAME")
                    .ok()
                    .filter(|name| !name.is_empty()),
                emulator: None,
            }),
            Ok(_) | Err(VarError::NotPresent) => {
                let emulator = Emulator::builder()
                    .hub(EMULATOR_HUB, EMULATOR_PARTITIONS)
                    .start()
                    .await?;
                println!("EVENTHUBS_CONNECTION_STRING is not set: using an in-process emulator");
                Ok(Self {
                    connection_string: emulator.connection_string(),
                    eventhub: None,
                    emulator: Some(emulator),
                })
            }
            Err(VarError::NotUnicode(_)) => {
                Err("EVENTHUBS_CONNECTION_STRING is not valid Unicode".into())
            }
        }
    }
}

/// Locks a mutex even if a panicking handler poisoned it: the counts stay meaningful.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default, Clone, Copy)]
struct PartitionTally {
    events: u64,
    batches: u64,
}

/// What the handlers learned. Handlers are called once per batch, not per event, so the
/// mutexes are taken a few hundred times a second at most.
#[derive(Default)]
struct Tally {
    confirmed: AtomicU64,
    failed: AtomicU64,
    failed_batches: AtomicU64,
    partitions: Mutex<HashMap<String, PartitionTally>>,
    failures_by_kind: Mutex<HashMap<ErrorKind, u64>>,
}

impl Tally {
    fn record_success(&self, context: &SendSucceededContext) {
        let events = context.events.len() as u64;
        self.confirmed.fetch_add(events, Ordering::Relaxed);
        let mut partitions = lock(&self.partitions);
        let tally = partitions.entry(context.partition_id.clone()).or_default();
        tally.events += events;
        tally.batches += 1;
    }

    fn record_failure(&self, context: &SendFailedContext) {
        let events = context.events.len() as u64;
        self.failed.fetch_add(events, Ordering::Relaxed);
        *lock(&self.failures_by_kind)
            .entry(context.error.kind())
            .or_default() += events;
        let batch_number = self.failed_batches.fetch_add(1, Ordering::Relaxed);
        if batch_number < ERRORS_SHOWN {
            eprintln!(
                "partition {}: {events} events not published: {}",
                context.partition_id, context.error
            );
        }
    }

    fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    fn partition(&self, id: &str) -> PartitionTally {
        lock(&self.partitions).get(id).copied().unwrap_or_default()
    }
}

fn build_producer(
    destination: &Destination,
    tally: &Arc<Tally>,
) -> Result<BufferedProducerClient, BoxError> {
    let on_success = tally.clone();
    let on_failure = tally.clone();
    let producer = BufferedProducerClient::from_connection_string(
        &destination.connection_string,
        destination.eventhub.as_deref(),
    )
    // The counting is synchronous, so the handlers do it before returning a ready future.
    .on_send_succeeded(move |context| {
        on_success.record_success(&context);
        async {}
    })
    .on_send_failed(move |context| {
        on_failure.record_failure(&context);
        async {}
    })
    .build()?;
    Ok(producer)
}

/// Event `index`: even indexes are routed automatically (to whichever partition has room),
/// odd ones carry a device's partition key, so all events of a device land in one partition,
/// in order.
fn make_event(index: u32) -> (EventData, EnqueueOptions) {
    let routing = if index.is_multiple_of(2) {
        None
    } else {
        Some(format!("device-{}", index % DEVICES))
    };
    let body = match &routing {
        Some(device) => format!(r#"{{"index":{index},"device":"{device}","reading":{index}}}"#),
        None => format!(r#"{{"index":{index},"reading":{index}}}"#),
    };
    let event = EventData::from(body).with_property("index", i64::from(index));
    let options = match routing {
        Some(key) => EnqueueOptions::default().with_partition_key(key),
        None => EnqueueOptions::default(),
    };
    (event, options)
}

/// Enqueues `events` events from `PUBLISHERS` tasks; returns how many were enqueued.
///
/// Task `t` takes indexes `t, t + PUBLISHERS, ...`; since `DEVICES` is a multiple of
/// `PUBLISHERS`, each device's events come from one task, in index order.
async fn publish(producer: &BufferedProducerClient, events: u32) -> Result<u64, BoxError> {
    let mut publishers = JoinSet::new();
    for first in 0..PUBLISHERS.min(events) {
        let producer = producer.clone();
        publishers.spawn(async move {
            let mut enqueued = 0u64;
            for index in (first..events).step_by(PUBLISHERS as usize) {
                let (event, options) = make_event(index);
                // Waits when the partition's buffer is full: that is the back pressure.
                producer.enqueue_event(event, options).await?;
                enqueued += 1;
            }
            Ok::<u64, eventhubs_buffered::Error>(enqueued)
        });
    }
    let mut total = 0;
    while let Some(joined) = publishers.join_next().await {
        total += joined??;
    }
    Ok(total)
}

/// A bar of confirmed events on stderr, hidden when stdout is not a terminal (output piped
/// to a file or another program gets the table only).
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "[{bar:40}] {pos:>10}/{len} confirmed {percent:>3}% {per_sec}",
    )
    .map(|style| style.progress_chars("#> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar
}

/// Moves the bar on a timer (not per event, which would cost more than the publishing) until
/// `stop` fires, then finishes it.
async fn show_progress(tally: Arc<Tally>, bar: ProgressBar, mut stop: oneshot::Receiver<()>) {
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => bar.set_position(tally.confirmed()),
            _ = &mut stop => break,
        }
    }
    bar.set_position(tally.confirmed());
    bar.finish();
}

fn print_partition_table(partition_ids: &[String], tally: &Tally) {
    println!();
    println!(
        "{:>9} {:>10} {:>8} {:>11}",
        "partition", "events", "batches", "mean batch"
    );
    for id in partition_ids {
        let PartitionTally { events, batches } = tally.partition(id);
        let mean = if batches == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", events as f64 / batches as f64)
        };
        println!("{id:>9} {events:>10} {batches:>8} {mean:>11}");
    }
}

fn print_totals(enqueued: u64, tally: &Tally, elapsed: Duration) {
    println!();
    println!("enqueued:   {enqueued}");
    println!("confirmed:  {}", tally.confirmed());
    println!("failed:     {}", tally.failed());
    for (kind, count) in lock(&tally.failures_by_kind).iter() {
        println!("  {kind}: {count}");
    }
    let seconds = elapsed.as_secs_f64();
    println!("elapsed:    {seconds:.2} s");
    println!(
        "throughput: {:.0} events/s",
        tally.confirmed() as f64 / seconds.max(f64::EPSILON)
    );
}

/// What the producer measured itself (`BufferedProducerClient::metrics`): batch sizes, send
/// durations and how long events waited from enqueue to publish.
fn print_metrics(metrics: &ProducerMetrics) {
    let total = &metrics.total;
    println!();
    println!(
        "producer metrics: {} batches, {} retries, {} reconnects",
        total.batch_events.count, total.retries, metrics.reconnects
    );
    println!(
        "  events per batch: p50 {}  p99 {}  max {}",
        total.batch_events.p50, total.batch_events.p99, total.batch_events.max
    );
    println!(
        "  send duration:    p50 {:?}  p99 {:?}  max {:?}",
        total.send_duration.p50, total.send_duration.p99, total.send_duration.max
    );
    println!(
        "  enqueue to publish: p50 {:?}  p99 {:?}  max {:?}",
        total.publish_latency.p50, total.publish_latency.p99, total.publish_latency.max
    );
}

/// The emulator is the ground truth: every confirmed event must be stored, and nothing else.
fn check_emulator(emulator: &Emulator, confirmed: u64) -> Result<(), BoxError> {
    let stored = emulator.total_event_count(EMULATOR_HUB)? as u64;
    println!("stored by the emulator: {stored}");
    if stored != confirmed {
        return Err(format!(
            "the emulator stored {stored} events but the producer confirmed {confirmed}"
        )
        .into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = <Args as clap::Parser>::parse();
    // RUST_LOG=info (or debug, or eventhubs_buffered=debug) shows what the producer does.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let destination = Destination::from_env().await?;
    let tally = Arc::new(Tally::default());
    let producer = build_producer(&destination, &tally)?;
    // Connect before the clock starts. A wrong key or hub name fails here, with a clear error,
    // rather than in the middle of the progress bar.
    producer.partition_ids().await?;
    println!(
        "publishing {} events to event hub '{}' from {PUBLISHERS} tasks",
        args.events,
        producer.eventhub_name()
    );

    let started = Instant::now();
    let (stop_progress, stop) = oneshot::channel();
    let bar = progress_bar(u64::from(args.events));
    let progress = tokio::spawn(show_progress(tally.clone(), bar, stop));
    let published = publish(&producer, args.events).await;
    // Even if a publisher failed, send what was enqueued so that the counts below are final.
    producer.flush().await?;
    let elapsed = started.elapsed();
    let _ = stop_progress.send(());
    progress.await?;
    let enqueued = published?;
    // Read again: the list can grow while the producer runs (the producer rereads it periodically).
    let partition_ids = producer.partition_ids().await?;
    producer.close().await?;

    print_partition_table(&partition_ids, &tally);
    print_totals(enqueued, &tally, elapsed);
    print_metrics(&producer.metrics());
    if let Some(emulator) = &destination.emulator {
        check_emulator(emulator, tally.confirmed())?;
    }
    if tally.failed() > 0 {
        return Err(format!("{} events were not published", tally.failed()).into());
    }
    Ok(())
}
