//! Does `max_buffered_bytes` bound the producer's memory? Peak resident memory of a producer
//! whose service stalls, for two bounds, and at full load over many partitions.
//!
//! ```text
//! cargo run --release --example memory [-- --stall-seconds S]
//! ```
//!
//! Each measurement runs in a process of its own (this binary again, so that peak memory is
//! one producer's alone), with the emulator in another (see `support/child_emulator.rs`):
//!
//! 1. Stall: 8 tasks enqueue 1 KiB events as fast as they can while the service answers
//!    every delivery `S` seconds late (default 20), then recovers; for `max_buffered_bytes`
//!    of 64 MiB and of 256 MiB (with a per-partition event limit high enough that the bytes
//!    are what binds). Prints the bound, the peak resident memory (Linux's VmHWM) and
//!    how far above the bound it went, and the events delivered after the recovery.
//! 2. Full load: 8 tasks enqueue 300,000 events of 1 KiB over 32 and over 100 partitions with
//!    the default options: events/s and peak resident memory.
//!
//! "Peak heap" is what the program held on the heap at its peak (counted by a wrapper around
//! the system allocator): what `max_buffered_bytes` bounds. Resident memory adds what the
//! allocator keeps after frees; the 256 MiB stall runs a second time with glibc limited to
//! one arena (`MALLOC_ARENA_MAX=1`) to show how much of that is the allocator's. `MEMORY_TRACE=1` prints the live heap and resident memory
//! every half second of a stall measurement.

#[path = "support/child_emulator.rs"]
mod child_emulator;
#[path = "support/process.rs"]
mod process;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use child_emulator::ChildEmulator;
use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, EnqueueOptions, EventData,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MIB: usize = 1024 * 1024;

/// The system allocator, counting the bytes live on the heap and their peak: what the program
/// holds, as against what the allocator keeps from the system (resident memory).
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK_LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;
const TASKS: usize = 8;
const EVENT_SIZE: usize = 1024;
const MEASURE: &str = "--measure";

#[derive(Default)]
struct Counts {
    published: AtomicU64,
    failed: AtomicU64,
}

fn producer(
    connection_string: &str,
    options: BufferedProducerOptions,
    counts: Arc<Counts>,
) -> Result<BufferedProducerClient, BoxError> {
    let failed = counts.clone();
    Ok(
        BufferedProducerClient::from_connection_string(connection_string, None)
            .options(options)
            .on_send_succeeded(move |context| {
                counts
                    .published
                    .fetch_add(context.events.len() as u64, Ordering::Relaxed);
                async {}
            })
            .on_send_failed(move |context| {
                failed
                    .failed
                    .fetch_add(context.events.len() as u64, Ordering::Relaxed);
                async move { eprintln!("{} failed: {}", context.events.len(), context.error) }
            })
            .build()?,
    )
}

/// 8 tasks enqueue 1 KiB events until `stop` is set (or `limit` events are enqueued). Each
/// event has a body of its own, as an application's events do (a shared body would make the
/// producer look smaller than it is).
fn spawn_enqueuers(
    producer: &BufferedProducerClient,
    stop: Arc<AtomicBool>,
    limit: u64,
) -> tokio::task::JoinSet<Result<u64, BoxError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let producer = producer.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) && sent < limit / TASKS as u64 {
                let body = vec![b'm'; EVENT_SIZE];
                producer
                    .enqueue_event(EventData::from(body), EnqueueOptions::default())
                    .await?;
                sent += 1;
            }
            Ok(sent)
        });
    }
    tasks
}

/// One stall measurement: prints `bound peak delivered_after_recovery`.
async fn measure_stall(bound_mib: usize, stall: Duration) -> Result<String, BoxError> {
    let mut emulator = ChildEmulator::start(4).await?;
    let counts = Arc::new(Counts::default());
    // Bytes, not the count of events per partition, must be what binds.
    let options = BufferedProducerOptions::default()
        .with_max_buffered_bytes(bound_mib * MIB)
        .with_max_buffered_events_per_partition(1_000_000);
    let producer = producer(emulator.connection_string(), options, counts.clone())?;
    producer.partition_ids().await?;
    emulator
        .delay_dispositions(u64::try_from(stall.as_millis())?)
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = spawn_enqueuers(&producer, stop.clone(), u64::MAX);
    if std::env::var_os("MEMORY_TRACE").is_some() {
        tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let rss = process::rss_mib().unwrap_or(f64::NAN);
                eprintln!(
                    "live {} MiB, resident {rss:.0} MiB",
                    LIVE.load(Ordering::Relaxed) / MIB
                );
            }
        });
    }
    tokio::time::sleep(stall).await;
    emulator.delay_dispositions(0).await?;
    let before_recovery = counts.published.load(Ordering::Relaxed);
    // Ten more seconds of full load after the recovery.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    producer.close().await?;
    let after = counts.published.load(Ordering::Relaxed) - before_recovery;
    let peak = process::peak_rss_mib().unwrap_or(f64::NAN);
    let peak_live = PEAK_LIVE.load(Ordering::Relaxed) as f64 / MIB as f64;
    emulator.stop().await;
    Ok(format!(
        "{bound_mib} {peak:.0} {after} {} {peak_live:.0}",
        counts.failed.load(Ordering::Relaxed)
    ))
}

/// One full-load measurement: prints `partitions events_per_s peak`.
async fn measure_load(partitions: usize, events: u64) -> Result<String, BoxError> {
    let emulator = ChildEmulator::start(partitions).await?;
    let counts = Arc::new(Counts::default());
    let producer = producer(
        emulator.connection_string(),
        BufferedProducerOptions::default(),
        counts.clone(),
    )?;
    producer.partition_ids().await?;
    let started = Instant::now();
    let mut tasks = spawn_enqueuers(&producer, Arc::new(AtomicBool::new(false)), events);
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    producer.flush().await?;
    let elapsed = started.elapsed();
    producer.close().await?;
    let published = counts.published.load(Ordering::Relaxed);
    let peak = process::peak_rss_mib().unwrap_or(f64::NAN);
    let peak_live = PEAK_LIVE.load(Ordering::Relaxed) as f64 / MIB as f64;
    emulator.stop().await;
    Ok(format!(
        "{partitions} {:.0} {peak:.0} {published} {peak_live:.0}",
        published as f64 / elapsed.as_secs_f64()
    ))
}

/// Runs one measurement in a new process of this binary and returns what it printed.
/// `env` adds variables to its environment.
fn in_own_process(args: &[String], env: &[(&str, &str)]) -> Result<String, BoxError> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .arg(MEASURE)
        .args(args)
        .envs(env.iter().copied())
        .output()?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned().into());
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// The command line.
#[derive(clap::Parser)]
#[command(about = "Peak memory of the producer under a stalled service and at full load")]
struct Args {
    /// How long the service stalls.
    #[arg(long, default_value_t = 20)]
    stall_seconds: u64,
    /// One measurement in this process (how the example runs each case in a process of its
    /// own): `stall BOUND_MIB SECONDS` or `load PARTITIONS EVENTS`.
    #[arg(long, num_args = 3, value_names = ["CASE", "A", "B"], hide = true)]
    measure: Option<Vec<String>>,
}

fn main() -> Result<(), BoxError> {
    if child_emulator::serve_if_child() {
        return Ok(());
    }
    let args = <Args as clap::Parser>::parse();
    if let Some(measure) = &args.measure {
        let runtime = tokio::runtime::Runtime::new()?;
        let line = match measure
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["stall", bound, seconds] => runtime.block_on(measure_stall(
                bound.parse()?,
                Duration::from_secs(seconds.parse()?),
            ))?,
            ["load", partitions, events] => {
                runtime.block_on(measure_load(partitions.parse()?, events.parse()?))?
            }
            _ => {
                return Err(
                    "usage: --measure stall BOUND_MIB SECONDS | load PARTITIONS EVENTS".into(),
                )
            }
        };
        println!("{line}");
        return Ok(());
    }
    let stall_seconds = args.stall_seconds;
    println!(
        "stall of {stall_seconds} s, then 10 s of recovery; 8 tasks, 1 KiB events, 4 partitions"
    );
    println!(
        "{:>10} {:>18} {:>14} {:>16} {:>15} {:>26} {:>8}",
        "bound MiB",
        "glibc arenas",
        "peak RSS MiB",
        "above bound MiB",
        "peak heap MiB",
        "delivered after recovery",
        "failed"
    );
    // glibc keeps one arena per thread by default; a single arena shows how much of the
    // resident memory above the heap is the allocator's, not the producer's.
    for (bound, arenas) in [(64, None), (256, None), (256, Some("1"))] {
        let env: Vec<(&str, &str)> = arenas
            .map(|n| ("MALLOC_ARENA_MAX", n))
            .into_iter()
            .collect();
        let line = in_own_process(
            &["stall".into(), bound.to_string(), stall_seconds.to_string()],
            &env,
        )?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let peak: f64 = fields
            .get(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(f64::NAN);
        println!(
            "{:>10} {:>18} {:>14.0} {:>16.0} {:>15} {:>26} {:>8}",
            bound,
            arenas.map_or("default (per thread)", |_| "MALLOC_ARENA_MAX=1"),
            peak,
            peak - bound as f64,
            fields.get(4).unwrap_or(&"?"),
            fields.get(2).unwrap_or(&"?"),
            fields.get(3).unwrap_or(&"?")
        );
    }
    println!();
    println!("full load, default options (256 MiB bound), 8 tasks, 300,000 events of 1 KiB");
    println!(
        "{:>10} {:>12} {:>14} {:>15}",
        "partitions", "events/s", "peak RSS MiB", "peak heap MiB"
    );
    for partitions in [32, 100] {
        let line = in_own_process(
            &["load".into(), partitions.to_string(), "300000".into()],
            &[],
        )?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        println!(
            "{:>10} {:>12} {:>14} {:>15}",
            partitions,
            fields.get(1).unwrap_or(&"?"),
            fields.get(2).unwrap_or(&"?"),
            fields.get(4).unwrap_or(&"?")
        );
    }
    Ok(())
}
