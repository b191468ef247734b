//! Soak: steady load through the buffered producer for a long time, with the same faults every
//! minute, to show that throughput and memory do not drift and that the accounting stays exact.
//!
//! `cargo run --release --example soak -- [--minutes N] [--partitions N] [--size BYTES]
//! [--tasks N] [--no-idempotence]`
//!
//! Runs against the in-process emulator, which keeps the last 100,000 events per partition (its
//! retention), so memory measures the producer, not an ever-growing store. Every minute the
//! emulator withholds acknowledgements, detaches the links, drops the connection, answers
//! server-busy, delays dispositions beyond the try timeout, and refuses tokens for a second.
//! Each minute prints the events confirmed per second, failures, the resident memory and the
//! events buffered. At the end: the tallies (enqueued, succeeded, failed by kind, stored,
//! duplicates dropped by the service), and a verdict comparing the second half of the run with
//! the first (throughput within 15 %, memory within 20 % + 16 MiB). The exit code is 1 when the
//! accounting is off or something drifted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, EnqueueOptions, EventData, RetryOptions,
};
use eventhubs_emulator::{Emulator, FaultCondition, FaultScope, Faults};

const HUB: &str = "soak";
const RETAINED_PER_PARTITION: usize = 100_000;

/// The command line.
#[derive(clap::Parser)]
#[command(about = "Steady load with faults every minute; prints drift")]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    minutes: u64,
    /// Partitions of the emulated hub.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    partitions: u16,
    /// Body size of each event in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Enqueuing tasks.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    tasks: u16,
    /// Publish without idempotent retries.
    #[arg(long)]
    no_idempotence: bool,
}

#[derive(Default)]
struct Tallies {
    enqueued: AtomicU64,
    succeeded: AtomicU64,
    failed: Mutex<BTreeMap<String, u64>>,
}

impl Tallies {
    fn failed_total(&self) -> u64 {
        self.failed.lock().map(|f| f.values().sum()).unwrap_or(0)
    }
}

/// Injects the `step`-th fault of a minute (six steps, one every ten seconds).
fn inject(faults: &Faults, step: u64) {
    match step % 6 {
        0 => faults.withhold_next(2, FaultScope::partition(HUB, "0")),
        1 => {
            faults.detach_senders(HUB, None, FaultCondition::DetachForced);
        }
        2 => {
            faults.drop_connections();
        }
        3 => faults.reject_next(
            1,
            FaultCondition::ServerBusy,
            FaultScope::partition(HUB, "1"),
        ),
        4 => faults.delay_dispositions(Duration::from_millis(1500)),
        _ => {
            faults.delay_dispositions(Duration::ZERO);
            faults.reject_tokens_for(Duration::from_secs(1));
            faults.drop_connections();
        }
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    let idempotent = !args.no_idempotence;
    let partitions = usize::from(args.partitions);
    let emulator = Emulator::builder()
        .hub(HUB, partitions)
        .max_events_per_partition(RETAINED_PER_PARTITION)
        .start()
        .await?;
    let tallies = Arc::new(Tallies::default());
    let retry = RetryOptions::default()
        .with_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(500))
        .with_max_retries(8)
        .with_try_timeout(Duration::from_secs(1));
    let options = BufferedProducerOptions::default()
        .with_retry_options(retry)
        .with_idempotent_retries(idempotent);
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(options)
            .on_send_succeeded({
                let tallies = tallies.clone();
                move |context| {
                    tallies
                        .succeeded
                        .fetch_add(context.events.len() as u64, Ordering::Relaxed);
                    async {}
                }
            })
            .on_send_failed({
                let tallies = tallies.clone();
                move |context| {
                    if let Ok(mut failed) = tallies.failed.lock() {
                        *failed
                            .entry(format!("{:?}", context.error.kind()))
                            .or_default() += context.events.len() as u64;
                    }
                    async {}
                }
            })
            .build()?;

    println!(
        "soak: {} minutes, {} partitions, {}-byte events, {} tasks, idempotent retries {}",
        args.minutes, partitions, args.size, args.tasks, idempotent
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut enqueuers = Vec::new();
    for task in 0..args.tasks {
        let producer = producer.clone();
        let tallies = tallies.clone();
        let stop = stop.clone();
        let body = vec![b'x'; args.size];
        enqueuers.push(tokio::spawn(async move {
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let options = if i.is_multiple_of(2) {
                    EnqueueOptions::default().with_partition_key(format!("key-{task}-{}", i % 64))
                } else {
                    EnqueueOptions::default()
                };
                let event = EventData::from(body.clone());
                if producer.enqueue_event(event, options).await.is_err() {
                    break;
                }
                tallies.enqueued.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let faults = {
        let faults = emulator.faults();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut step = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                inject(&faults, step);
                step += 1;
            }
        })
    };

    println!("minute  confirmed/s  failed  rss      buffered");
    let started = Instant::now();
    let mut throughput = Vec::new();
    let mut memory = Vec::new();
    let mut last_succeeded = 0;
    let mut last_failed = 0;
    for minute in 1..=args.minutes {
        tokio::time::sleep_until((started + Duration::from_secs(60 * minute)).into()).await;
        let succeeded = tallies.succeeded.load(Ordering::Relaxed);
        let failed = tallies.failed_total();
        let per_second = (succeeded - last_succeeded) as f64 / 60.0;
        let rss = process::rss_mib().unwrap_or(0.0);
        println!(
            "{minute:>6}  {per_second:>11.0}  {:>6}  {rss:>4.0} MiB  {:>8}",
            failed - last_failed,
            producer.total_buffered_event_count()
        );
        throughput.push(per_second);
        memory.push(rss);
        last_succeeded = succeeded;
        last_failed = failed;
    }
    stop.store(true, Ordering::Relaxed);
    for task in enqueuers {
        task.await?;
    }
    let _ = faults.await;
    emulator.faults().clear();
    producer.close().await?;

    let enqueued = tallies.enqueued.load(Ordering::Relaxed);
    let succeeded = tallies.succeeded.load(Ordering::Relaxed);
    let failed = tallies.failed.lock().map(|f| f.clone()).unwrap_or_default();
    let failed_total: u64 = failed.values().sum();
    let counters = emulator.counters();
    println!(
        "tallies: enqueued {enqueued}, succeeded {succeeded}, failed {failed:?}, stored {}, duplicates dropped by the service {}",
        counters.events_stored, counters.duplicates_dropped
    );

    let mut ok = true;
    if succeeded + failed_total != enqueued {
        println!("ACCOUNTING OFF: {succeeded} + {failed_total} handled != {enqueued} enqueued");
        ok = false;
    }
    if idempotent && counters.events_stored != succeeded {
        println!(
            "ACCOUNTING OFF: stored {} != succeeded {succeeded}",
            counters.events_stored
        );
        ok = false;
    }
    // The first minute warms up; compare the rest, first half against second half.
    let settled = if throughput.len() > 2 { 1 } else { 0 };
    let (early, late) = throughput[settled..].split_at((throughput.len() - settled) / 2);
    let (early_memory, late_memory) = memory[settled..].split_at((memory.len() - settled) / 2);
    if !early.is_empty() && !late.is_empty() {
        let throughput_change = mean(late) / mean(early) - 1.0;
        let memory_change = mean(late_memory) - mean(early_memory);
        let memory_allowance = 0.2 * mean(early_memory) + 16.0;
        println!(
            "drift: throughput {:+.1} % (first half {:.0}/s, second half {:.0}/s), memory {:+.0} MiB (allowed {:.0})",
            throughput_change * 100.0,
            mean(early),
            mean(late),
            memory_change,
            memory_allowance
        );
        if throughput_change.abs() > 0.15 || memory_change > memory_allowance {
            println!("DRIFT");
            ok = false;
        }
    }
    println!("{}", if ok { "soak: OK" } else { "soak: FAILED" });
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
