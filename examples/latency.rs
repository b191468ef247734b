//! Latency from enqueue to the success handler at steady rates, and full-load throughput, in
//! one run, printed as a table: how `send_when_idle` (the default) and a small
//! `max_wait_time` behave against a service that answers at once or slowly.
//!
//! ```text
//! cargo run --release --example latency [-- --seconds S] [--full-load-events N]
//! ```
//!
//! The emulator runs in a child process (this binary again, see `support/child_emulator.rs`),
//! so the producer's process holds only the producer. For each configuration, events of
//! 100 bytes are enqueued from one task at 100, 1,000 and 20,000 events/s for `S` seconds
//! (default 3) over 4 partitions, automatically routed; each body carries its enqueue time,
//! and the success handler records the latency. Then 4 tasks enqueue `N` events (default
//! 500,000) as fast as they can: events/s, CPU per event, events per batch. Last, the same
//! full load against a service that answers every batch 20 ms late, with `max_wait_time`
//! 5 ms: the case where sealing small batches on a timer used to queue them behind the busy
//! send slot.

#[path = "support/child_emulator.rs"]
mod child_emulator;
#[path = "support/process.rs"]
mod process;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use child_emulator::ChildEmulator;
use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, EnqueueOptions, EventData,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const RATES: [u64; 3] = [100, 1_000, 20_000];
const BODY: usize = 100;

/// What the handler records: each event's latency, and how many batches carried them.
#[derive(Default)]
struct Recorded {
    latencies_us: Mutex<Vec<u64>>,
    batches: AtomicU64,
    events: AtomicU64,
}

/// A 100-byte body that starts with its enqueue time, in nanoseconds since `origin`.
fn stamped(origin: Instant) -> EventData {
    let mut body = vec![b'.'; BODY];
    let nanos = origin.elapsed().as_nanos() as u64;
    body[..8].copy_from_slice(&nanos.to_le_bytes());
    EventData::from(body)
}

fn producer(
    connection_string: &str,
    options: BufferedProducerOptions,
    origin: Instant,
    recorded: Arc<Recorded>,
) -> Result<BufferedProducerClient, BoxError> {
    Ok(
        BufferedProducerClient::from_connection_string(connection_string, None)
            .options(options)
            .on_send_succeeded(move |context| {
                let now = origin.elapsed().as_nanos() as u64;
                let mut latencies = recorded
                    .latencies_us
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for event in context.event_data() {
                    let mut stamp = [0u8; 8];
                    stamp.copy_from_slice(&event.body()[..8]);
                    latencies.push(now.saturating_sub(u64::from_le_bytes(stamp)) / 1000);
                }
                recorded.batches.fetch_add(1, Ordering::Relaxed);
                recorded
                    .events
                    .fetch_add(context.events.len() as u64, Ordering::Relaxed);
                async {}
            })
            .on_send_failed(|context| async move {
                eprintln!("{} events failed: {}", context.events.len(), context.error)
            })
            .build()?,
    )
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// A producer whose links are warm (8 events sent and reported), with its recordings cleared,
/// and the instant event stamps count from.
async fn warmed_up(
    connection_string: &str,
    options: BufferedProducerOptions,
) -> Result<(BufferedProducerClient, Arc<Recorded>, Instant), BoxError> {
    let origin = Instant::now();
    let recorded = Arc::new(Recorded::default());
    let producer = producer(connection_string, options, origin, recorded.clone())?;
    producer.partition_ids().await?;
    for _ in 0..8 {
        producer
            .enqueue_event(stamped(origin), EnqueueOptions::default())
            .await?;
    }
    producer.flush().await?;
    recorded
        .latencies_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    recorded.batches.store(0, Ordering::Relaxed);
    recorded.events.store(0, Ordering::Relaxed);
    Ok((producer, recorded, origin))
}

/// Enqueues at `rate` events/s for `seconds`, paced in 1 ms steps; returns p50, p99 (ms) and
/// the mean events per batch.
async fn steady(
    connection_string: &str,
    options: BufferedProducerOptions,
    rate: u64,
    seconds: u64,
) -> Result<(f64, f64, f64), BoxError> {
    let (producer, recorded, origin) = warmed_up(connection_string, options).await?;

    let total = rate * seconds;
    let started = Instant::now();
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent < total {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(total) {
            producer
                .enqueue_event(stamped(origin), EnqueueOptions::default())
                .await?;
            sent += 1;
        }
    }
    producer.close().await?;
    let mut latencies = recorded
        .latencies_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    latencies.sort_unstable();
    let batches = recorded.batches.load(Ordering::Relaxed).max(1);
    let per_batch = recorded.events.load(Ordering::Relaxed) as f64 / batches as f64;
    Ok((
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        per_batch,
    ))
}

/// 4 tasks enqueue `events` as fast as they can; returns events/s, CPU ns per event and the
/// mean events per batch.
async fn full_load(
    connection_string: &str,
    options: BufferedProducerOptions,
    events: u64,
) -> Result<(f64, f64, f64), BoxError> {
    let (producer, recorded, origin) = warmed_up(connection_string, options).await?;
    let cpu_before = process::cpu_time();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let producer = producer.clone();
        tasks.spawn(async move {
            for _ in 0..events / 4 {
                producer
                    .enqueue_event(stamped(origin), EnqueueOptions::default())
                    .await?;
            }
            Ok::<(), BoxError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    producer.flush().await?;
    let elapsed = started.elapsed();
    let cpu = cpu_before
        .zip(process::cpu_time())
        .map_or(f64::NAN, |(a, b)| (b - a).as_nanos() as f64 / events as f64);
    producer.close().await?;
    let batches = recorded.batches.load(Ordering::Relaxed).max(1);
    let per_batch = recorded.events.load(Ordering::Relaxed) as f64 / batches as f64;
    Ok((events as f64 / elapsed.as_secs_f64(), cpu, per_batch))
}

/// The command line.
#[derive(clap::Parser)]
#[command(about = "Enqueue-to-handler latency at steady rates, and full-load throughput")]
struct Args {
    /// Seconds of each steady-rate run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Events of the full-load run.
    #[arg(long, default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(4..))]
    full_load_events: u64,
}

fn main() -> Result<(), BoxError> {
    if child_emulator::serve_if_child() {
        return Ok(());
    }
    let args = <Args as clap::Parser>::parse();
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

async fn run(args: Args) -> Result<(), BoxError> {
    let mut emulator = ChildEmulator::start(4).await?;
    let cs = emulator.connection_string().to_string();
    let configurations = [
        (
            "send_when_idle (default), max_wait 250 ms",
            BufferedProducerOptions::default(),
        ),
        (
            "without send_when_idle, max_wait 250 ms",
            BufferedProducerOptions::default().with_send_when_idle(false),
        ),
    ];
    println!("enqueue -> success handler, 100 B events, 4 partitions, emulator in a child process");
    println!(
        "{:<44} {:>9} {:>10} {:>10} {:>14}",
        "configuration", "events/s", "p50 ms", "p99 ms", "events/batch"
    );
    for (name, options) in &configurations {
        for rate in RATES {
            let (p50, p99, per_batch) = steady(&cs, options.clone(), rate, args.seconds).await?;
            println!("{name:<44} {rate:>9} {p50:>10.2} {p99:>10.2} {per_batch:>14.1}");
        }
    }
    println!();
    println!(
        "{:<44} {:>12} {:>14} {:>14}",
        "full load (4 tasks)", "events/s", "CPU ns/event", "events/batch"
    );
    for (name, options) in &configurations {
        let (rate, cpu, per_batch) = full_load(&cs, options.clone(), args.full_load_events).await?;
        println!("{name:<44} {rate:>12.0} {cpu:>14.0} {per_batch:>14.1}");
    }
    emulator.delay_dispositions(20).await?;
    for (name, options) in [
        (
            "slow service (+20 ms), max_wait 5 ms",
            BufferedProducerOptions::default().with_max_wait_time(Some(Duration::from_millis(5))),
        ),
        (
            "  same, without send_when_idle",
            BufferedProducerOptions::default()
                .with_max_wait_time(Some(Duration::from_millis(5)))
                .with_send_when_idle(false),
        ),
    ] {
        let (rate, cpu, per_batch) = full_load(&cs, options, args.full_load_events / 5).await?;
        println!("{name:<44} {rate:>12.0} {cpu:>14.0} {per_batch:>14.1}");
    }
    emulator.stop().await;
    Ok(())
}
