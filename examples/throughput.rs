//! Throughput of the buffered producer against the limit of the connection layer, in one run.
//!
//! `cargo run --release --example throughput -- [--events N] [--size BYTES] [--partitions N]
//! [--delay-ms MS] [--concurrency-per-partition N] [--max-concurrent-sends N]
//! [--buffered-events-per-partition N]`
//!
//! 1. Publishes `events` events of `size` bytes through `BufferedProducerClient` to the
//!    in-process emulator (automatic routing, enqueued from 4 tasks), and waits until the last
//!    one is confirmed.
//! 2. Publishes the same number of events pre-batched: full batches built in advance and sent
//!    with `ProducerClient::send_batch`, with the same concurrency (the practical limit).
//!
//! `--delay-ms` delays every disposition in the emulator, like a slow network. Prints events/s
//! of both, their ratio, and the peak memory (RSS) of each phase.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, CreateBatchOptions, EnqueueOptions, EventData,
    EventDataBatch, ProducerClient, ProducerClientOptions,
};
use eventhubs_emulator::Emulator;

struct Args {
    events: u64,
    size: usize,
    partitions: usize,
    delay: Duration,
    per_partition: usize,
    max_sends: usize,
    buffered_events: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        events: 1_000_000,
        size: 100,
        partitions: 4,
        delay: Duration::ZERO,
        per_partition: 1,
        max_sends: eventhubs_buffered::DEFAULT_MAX_CONCURRENT_SENDS,
        buffered_events: eventhubs_buffered::DEFAULT_MAX_BUFFERED_EVENTS_PER_PARTITION,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: '{value}' is not a number"))?;
        match flag.as_str() {
            "--events" => args.events = n.max(1),
            "--size" => args.size = n as usize,
            "--partitions" => args.partitions = (n as usize).max(1),
            "--delay-ms" => args.delay = Duration::from_millis(n),
            "--concurrency-per-partition" => args.per_partition = (n as usize).clamp(1, 100),
            "--max-concurrent-sends" => args.max_sends = (n as usize).max(1),
            "--buffered-events-per-partition" => args.buffered_events = (n as usize).max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// Peak resident memory of this process since the last reset, from /proc (Linux only).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Starts a new peak-memory measurement (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn format_mib(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.0} MiB"))
}

async fn buffered_phase(
    emulator: &Emulator,
    args: &Args,
) -> Result<f64, Box<dyn std::error::Error>> {
    let confirmed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let options = BufferedProducerOptions::default()
        .with_max_concurrent_sends_per_partition(args.per_partition);
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(options)
            .on_send_succeeded({
                let confirmed = confirmed.clone();
                move |context| {
                    confirmed.fetch_add(context.events.len() as u64, Ordering::Relaxed);
                    async {}
                }
            })
            .on_send_failed({
                let failed = failed.clone();
                move |context| {
                    failed.fetch_add(context.events.len() as u64, Ordering::Relaxed);
                    async {}
                }
            })
            .build()?;
    // Connect before the clock starts, as the pre-batched phase does.
    producer.partition_ids().await?;
    let body = bytes::Bytes::from(vec![b'x'; args.size]);
    let tasks = 4u64;
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let producer = producer.clone();
        let body = body.clone();
        let count = args.events / tasks + u64::from(t < args.events % tasks);
        handles.push(tokio::spawn(async move {
            for _ in 0..count {
                producer
                    .enqueue_event(EventData::new(body.clone()), EnqueueOptions::default())
                    .await?;
            }
            Ok::<(), eventhubs_buffered::Error>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    producer.flush().await?;
    let elapsed = start.elapsed().as_secs_f64();
    producer.close().await?;
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 || confirmed.load(Ordering::Relaxed) != args.events {
        return Err(format!("buffered phase: {failed} events failed").into());
    }
    Ok(args.events as f64 / elapsed)
}

async fn full_batches(
    producer: &ProducerClient,
    args: &Args,
) -> Result<Vec<EventDataBatch>, Box<dyn std::error::Error>> {
    let body = bytes::Bytes::from(vec![b'x'; args.size]);
    let mut batches = Vec::new();
    let mut remaining = args.events;
    let mut partition = 0;
    while remaining > 0 {
        let options = CreateBatchOptions::default().with_partition_id(partition.to_string());
        let mut batch = producer.create_batch(options).await?;
        while remaining > 0 && batch.try_add(EventData::new(body.clone())).is_ok() {
            remaining -= 1;
        }
        batches.push(batch);
        partition = (partition + 1) % args.partitions;
    }
    Ok(batches)
}

async fn prebatched_phase(
    emulator: &Emulator,
    args: &Args,
) -> Result<f64, Box<dyn std::error::Error>> {
    let producer = ProducerClient::from_connection_string(
        &emulator.connection_string(),
        None,
        ProducerClientOptions::default(),
    )?;
    let batches = full_batches(&producer, args).await?;
    // The same number of batches in flight as the buffered producer allows.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        args.partitions * args.per_partition,
    ));
    let start = Instant::now();
    let mut sends = Vec::new();
    for batch in batches {
        let permit = in_flight.clone().acquire_owned().await?;
        let producer = producer.clone();
        sends.push(tokio::spawn(async move {
            let result = producer.send_batch(batch).await;
            drop(permit);
            result
        }));
    }
    for send in sends {
        send.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    producer.close().await;
    Ok(args.events as f64 / elapsed)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let emulator = Emulator::builder()
        .hub("hub", args.partitions)
        .start()
        .await?;
    emulator.faults().delay_dispositions(args.delay);
    println!(
        "throughput: {} events of {} B, {} partitions, {} send(s) in flight per partition, at most {} in all, dispositions delayed {:?}",
        args.events, args.size, args.partitions, args.per_partition, args.max_sends, args.delay
    );

    reset_peak_rss();
    let buffered = buffered_phase(&emulator, &args).await?;
    let buffered_peak = peak_rss_mib();
    reset_peak_rss();
    let prebatched = prebatched_phase(&emulator, &args).await?;
    let prebatched_peak = peak_rss_mib();

    println!(
        "buffered producer:   {buffered:>12.0} events/s   peak memory {}",
        format_mib(buffered_peak)
    );
    println!(
        "pre-batched limit:   {prebatched:>12.0} events/s   peak memory {} (all batches built before sending)",
        format_mib(prebatched_peak)
    );
    println!(
        "ratio buffered / limit: {:.0}%",
        100.0 * buffered / prebatched
    );
    let stored = emulator.counters().events_stored;
    if stored != 2 * args.events {
        return Err(format!(
            "the emulator stored {stored} events, expected {}",
            2 * args.events
        )
        .into());
    }
    emulator.shutdown().await;
    Ok(())
}
