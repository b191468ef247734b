//! Throughput of the buffered producer against the limit of the connection layer, in one run.
//!
//! `cargo run --release --example throughput -- [--events N] [--size BYTES] [--partitions N]
//! [--delay-ms MS] [--concurrency-per-partition N] [--max-concurrent-sends N]
//! [--buffered-events-per-partition N] [--max-wait-ms MS] [--phase both|buffered|prebatched]
//! [--outcomes] [--send-when-idle 0|1] [--transport tcp|websockets]`
//!
//! 1. Publishes `events` events of `size` bytes through `BufferedProducerClient` to the
//!    in-process emulator (automatic routing, enqueued from 4 tasks), and waits until the last
//!    one is confirmed.
//! 2. Publishes the same number of events pre-batched: full batches built in advance and sent
//!    with `ProducerClient::send_batch`, with the same concurrency (the practical limit).
//!
//! `--delay-ms` delays every disposition in the emulator, like a slow network. Prints events/s
//! of both, their ratio, the peak memory (RSS) and the average events per delivery of each phase.
//! `--outcomes` asks for every event's outcome in the buffered phase and awaits them in order,
//! a window of 10,000 per task at a time (the cost of per-event outcomes).
//! `--phase buffered` (or `prebatched`) runs one phase alone, for profiling it. `--max-wait-ms`
//! sets the buffered producer's `max_wait_time` (default 250 ms); under a profiler such as
//! callgrind, which slows the program down some 50 times, raise it so that batches are sealed
//! for the same reasons as in a normal run (not because their oldest event waited too long).
//! `--transport websockets` runs both phases over AMQP over WebSockets (the emulator's
//! WebSocket port, `ws://`) instead of AMQP over TCP.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, CreateBatchOptions, EnqueueOptions, EventData,
    EventDataBatch, ProducerClient, ProducerClientOptions, TransportType,
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
    max_wait: Duration,
    phase: Phase,
    /// Ask for every event's outcome and await them (the buffered phase).
    outcomes: bool,
    /// `BufferedProducerOptions::send_when_idle` of the buffered phase.
    send_when_idle: bool,
    transport: Transport,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    /// AMQP over TCP.
    Tcp,
    /// AMQP over WebSockets.
    Websockets,
}

/// The connection string and client options of both phases, for the chosen transport.
fn connection(emulator: &Emulator, args: &Args) -> (String, ProducerClientOptions) {
    match args.transport {
        Transport::Tcp => (
            emulator.connection_string(),
            ProducerClientOptions::default(),
        ),
        Transport::Websockets => (
            emulator
                .websocket_connection_string()
                .expect("the emulator serves WebSockets"),
            ProducerClientOptions::default().with_transport(TransportType::AmqpWebSockets),
        ),
    }
}

/// How many outcomes a task keeps pending with `--outcomes` before it awaits the oldest.
const OUTCOME_WINDOW: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Both,
    Buffered,
    Prebatched,
}

/// The command line (see the module docs for what each phase measures).
#[derive(clap::Parser)]
#[command(about = "Throughput of the buffered producer against the emulator")]
struct Cli {
    /// Events to publish in each phase.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// Body size of each event in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Partitions of the emulated hub.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    partitions: u16,
    /// Delay the emulator adds to every disposition, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Pre-batched phase: sends in flight per partition.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=100))]
    concurrency_per_partition: u8,
    /// Buffered phase: max_concurrent_sends.
    #[arg(long, default_value_t = eventhubs_buffered::DEFAULT_MAX_CONCURRENT_SENDS)]
    max_concurrent_sends: usize,
    /// Buffered phase: max_buffered_events_per_partition.
    #[arg(long, default_value_t = eventhubs_buffered::DEFAULT_MAX_BUFFERED_EVENTS_PER_PARTITION)]
    buffered_events_per_partition: usize,
    /// Buffered phase: max_wait_time in milliseconds.
    #[arg(long, default_value_t = eventhubs_buffered::DEFAULT_MAX_WAIT_TIME.as_millis() as u64)]
    max_wait_ms: u64,
    /// Which phase to run (one alone is handy under a profiler).
    #[arg(long, value_enum, default_value_t = Phase::Both)]
    phase: Phase,
    /// Ask for every event's outcome and await them (the buffered phase).
    #[arg(long)]
    outcomes: bool,
    /// Buffered phase: send_when_idle.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    send_when_idle: bool,
    /// AMQP over TCP, or over WebSockets.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
}

fn parse_args() -> Args {
    let cli = <Cli as clap::Parser>::parse();
    Args {
        events: cli.events,
        size: cli.size,
        partitions: usize::from(cli.partitions),
        delay: Duration::from_millis(cli.delay_ms),
        per_partition: usize::from(cli.concurrency_per_partition),
        max_sends: cli.max_concurrent_sends.max(1),
        buffered_events: cli.buffered_events_per_partition.max(1),
        max_wait: Duration::from_millis(cli.max_wait_ms),
        phase: cli.phase,
        outcomes: cli.outcomes,
        send_when_idle: cli.send_when_idle,
        transport: cli.transport,
    }
}

struct Measured {
    rate: f64,
    peak: Option<f64>,
    per_delivery: f64,
    used: Option<Used>,
}

/// What the process has used so far, from /proc (Linux only): CPU time (user and system, all
/// threads) and, per thread, time running and time waiting for a CPU. Unlike wall-clock time,
/// CPU time hardly changes when other processes load the machine; the rest of a runtime
/// worker's time it was idle, which says how well a phase keeps the cores busy.
struct Usage {
    at: Instant,
    cpu: Duration,
    /// Thread id, and nanoseconds running and waiting for a CPU.
    threads: Vec<(u64, u64, u64)>,
}

fn usage() -> Option<Usage> {
    let at = Instant::now();
    let cpu = process::cpu_time()?;
    let mut threads = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let mut values = schedstat.split_whitespace().map(|v| v.parse::<u64>().ok());
        if let (Some(Some(run)), Some(Some(waiting))) = (values.next(), values.next()) {
            threads.push((tid, run, waiting));
        }
    }
    Some(Usage { at, cpu, threads })
}

/// What a phase used: CPU time per event and the share of the runtime workers' time they were
/// idle (neither running nor waiting for a CPU).
#[derive(Clone, Copy)]
struct Used {
    cpu_ns_per_event: f64,
    workers_idle: f64,
}

fn used(start: Option<Usage>, events: u64) -> Option<Used> {
    let (start, end) = (start?, usage()?);
    let wall = (end.at - start.at).as_nanos() as f64;
    let cpu = end.cpu.checked_sub(start.cpu)?;
    // The workers are the threads that ran or waited the most during the phase (the main
    // thread and idle blocking-pool threads hardly do).
    let mut busy: Vec<u64> = end
        .threads
        .iter()
        .map(|&(tid, run, waiting)| {
            let before = start.threads.iter().find(|t| t.0 == tid);
            let (run0, waiting0) = before.map_or((0, 0), |t| (t.1, t.2));
            (run + waiting).saturating_sub(run0 + waiting0)
        })
        .collect();
    busy.sort_unstable_by(|a, b| b.cmp(a));
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let busy: u64 = busy.iter().take(workers).sum();
    Some(Used {
        cpu_ns_per_event: cpu.as_nanos() as f64 / events as f64,
        workers_idle: (1.0 - busy as f64 / (wall * workers as f64)).max(0.0),
    })
}

fn format_used(used: Option<Used>) -> String {
    used.map_or_else(
        || "CPU n/a".to_string(),
        |u| {
            format!(
                "{:.0} ns CPU per event, workers idle {:.0}%",
                u.cpu_ns_per_event,
                100.0 * u.workers_idle
            )
        },
    )
}

fn format_mib(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.0} MiB"))
}

/// The body of every event, in both phases. Static, so that making and dropping an event
/// costs nothing: what is measured is what the clients do with events. A reference-counted body
/// shared by all events would add one counter that every enqueuing task and every handler, on
/// every core, writes per event: a cost no application has (each event has its own body), and
/// one the pre-batched phase would pay only in part (its events are made before the clock
/// starts) and on one core at a time (a batch's events are dropped together).
fn event_body(size: usize) -> bytes::Bytes {
    bytes::Bytes::from_static(Box::leak(vec![b'x'; size].into_boxed_slice()))
}

async fn buffered_phase(
    emulator: &Emulator,
    args: &Args,
) -> Result<(f64, Option<Used>), Box<dyn std::error::Error>> {
    let confirmed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (connection_string, client) = connection(emulator, args);
    let options = BufferedProducerOptions::default()
        .with_client_options(client)
        .with_max_concurrent_sends_per_partition(args.per_partition)
        .with_max_concurrent_sends(args.max_sends)
        .with_max_buffered_events_per_partition(args.buffered_events)
        .with_max_wait_time(Some(args.max_wait))
        .with_send_when_idle(args.send_when_idle);
    let producer = BufferedProducerClient::from_connection_string(&connection_string, None)
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
    // Connect and attach every partition's link before the clock starts, as the pre-batched
    // phase does when it makes its batches: one warm-up event per partition, flushed.
    let body = event_body(args.size);
    for id in producer.partition_ids().await? {
        producer
            .enqueue_event(
                EventData::new(body.clone()),
                EnqueueOptions::default().with_partition_id(id),
            )
            .await?;
    }
    producer.flush().await?;
    let warm_up = confirmed.swap(0, Ordering::Relaxed);
    let tasks = 4u64;
    let start = Instant::now();
    let usage_start = usage();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let producer = producer.clone();
        let body = body.clone();
        let count = args.events / tasks + u64::from(t < args.events % tasks);
        let outcomes = args.outcomes;
        handles.push(tokio::spawn(async move {
            // With --outcomes, every event's outcome is asked for and awaited in order, a
            // window of them at a time, as a pipeline that checkpoints would.
            let mut pending = std::collections::VecDeque::new();
            for _ in 0..count {
                let event = EventData::new(body.clone());
                if !outcomes {
                    producer
                        .enqueue_event(event, EnqueueOptions::default())
                        .await?;
                    continue;
                }
                let outcome = producer
                    .enqueue_event_with_outcome(event, EnqueueOptions::default())
                    .await?;
                pending.push_back(outcome);
                if pending.len() > OUTCOME_WINDOW {
                    if let Some(oldest) = pending.pop_front() {
                        oldest.await.map_err(|e| e.to_string())?;
                    }
                }
            }
            for outcome in pending {
                outcome.await.map_err(|e| e.to_string())?;
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for handle in handles {
        handle.await?.map_err(|e| e.to_string())?;
    }
    producer.flush().await?;
    let elapsed = start.elapsed().as_secs_f64();
    let used = used(usage_start, args.events);
    producer.close().await?;
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0
        || confirmed.load(Ordering::Relaxed) != args.events
        || warm_up != args.partitions as u64
    {
        return Err(format!("buffered phase: {failed} events failed").into());
    }
    Ok((args.events as f64 / elapsed, used))
}

async fn full_batches(
    producer: &ProducerClient,
    args: &Args,
) -> Result<Vec<EventDataBatch>, Box<dyn std::error::Error>> {
    let body = event_body(args.size);
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
) -> Result<(f64, Option<Used>), Box<dyn std::error::Error>> {
    let (connection_string, client) = connection(emulator, args);
    let producer = ProducerClient::from_connection_string(&connection_string, None, client)?;
    let batches = full_batches(&producer, args).await?;
    // The same number of batches in flight as the buffered producer allows.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        (args.partitions * args.per_partition).min(args.max_sends),
    ));
    let start = Instant::now();
    let usage_start = usage();
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
    let used = used(usage_start, args.events);
    producer.close().await;
    Ok((args.events as f64 / elapsed, used))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let emulator = Emulator::builder()
        .hub("hub", args.partitions)
        .websocket(args.transport == Transport::Websockets)
        .start()
        .await?;
    emulator.faults().delay_dispositions(args.delay);
    println!(
        "throughput: {} events of {} B, {} partitions, {} send(s) in flight per partition, at most {} in all, dispositions delayed {:?}, AMQP over {}",
        args.events,
        args.size,
        args.partitions,
        args.per_partition,
        args.max_sends,
        args.delay,
        match args.transport {
            Transport::Tcp => "TCP",
            Transport::Websockets => "WebSockets",
        }
    );

    // Runs one phase and says how fast it went, the CPU time it took per event (while timed),
    // its peak memory and its average batch.
    async fn measure<F>(
        emulator: &Emulator,
        phase: F,
    ) -> Result<Measured, Box<dyn std::error::Error>>
    where
        F: std::future::Future<Output = Result<(f64, Option<Used>), Box<dyn std::error::Error>>>,
    {
        process::reset_peak_rss();
        let before = emulator.counters();
        let (rate, used) = phase.await?;
        let after = emulator.counters();
        let deliveries = after.deliveries - before.deliveries;
        let stored = after.events_stored - before.events_stored;
        Ok(Measured {
            rate,
            peak: process::peak_rss_mib(),
            per_delivery: stored as f64 / deliveries.max(1) as f64,
            used,
        })
    }

    let mut expected = 0;
    let buffered = if args.phase != Phase::Prebatched {
        // The events, and one warm-up event per partition.
        expected += args.events + args.partitions as u64;
        let m = measure(&emulator, buffered_phase(&emulator, &args)).await?;
        println!(
            "buffered producer:   {:>12.0} events/s   peak memory {}, {:.0} events per batch, {}",
            m.rate,
            format_mib(m.peak),
            m.per_delivery,
            format_used(m.used)
        );
        Some(m.rate)
    } else {
        None
    };
    let prebatched = if args.phase != Phase::Buffered {
        expected += args.events;
        let m = measure(&emulator, prebatched_phase(&emulator, &args)).await?;
        println!(
            "pre-batched limit:   {:>12.0} events/s   peak memory {} (all batches built before sending), {:.0} events per batch, {}",
            m.rate,
            format_mib(m.peak),
            m.per_delivery,
            format_used(m.used)
        );
        Some(m.rate)
    } else {
        None
    };
    if let (Some(buffered), Some(prebatched)) = (buffered, prebatched) {
        println!(
            "ratio buffered / limit: {:.0}%",
            100.0 * buffered / prebatched
        );
    }
    let stored = emulator.counters().events_stored;
    if stored != expected {
        return Err(format!("the emulator stored {stored} events, expected {expected}").into());
    }
    emulator.shutdown().await;
    Ok(())
}
