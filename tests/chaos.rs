//! Chaos: 200,000 events over 8 partitions (half keyed, half automatic) from 4 tasks, while
//! the emulator follows a random schedule of faults: server-busy and other transient
//! rejections, withheld acknowledgements, dispositions delayed beyond the try timeout, link
//! detaches, dropped and closed connections, a period of refused tokens, and a partition-count
//! increase. Exact accounting afterwards:
//!
//! - every enqueued event got exactly one handler call;
//! - every event reported as published is stored;
//! - within a partition, the events of one key are stored in the order they were enqueued;
//! - with idempotent retries, the stored events are exactly the ones reported as published,
//!   none twice; without, duplicates are counted and printed (ambiguous failures allow them).
//!
//! In the network mode (100,000 events) the faults are made outside the emulator, by the fault proxy of
//! `common/proxy.rs` between the producer and the emulator: resets of live connections,
//! reconnects reset at a random stage of their handshake, acknowledgements lost one way, black
//! holes, connections cut after some bytes, and delay; the accounting is the same.
//!
//! The schedule is random but seeded: the seed is printed, and `CHAOS_SEED=<n>` replays it.
//! Run with `--nocapture` to see the tallies.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::{Direction, Proxy, Stage};
use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerHandler, BufferedProducerOptions, EnqueueOptions,
    ErrorKind, EventData, RetryOptions, SendFailedContext, SendSucceededContext,
};
use eventhubs_emulator::{Emulator, FaultCondition, FaultScope, Faults};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HUB: &str = "chaos";
const PARTITIONS: usize = 8;
const GROWN_PARTITIONS: usize = 10;
const TASKS: usize = 4;
const EVENTS_PER_TASK: usize = 50_000;
/// The network mode's faults cost more time each (black holes wait out try timeouts): half
/// as many events keep its run as long as the emulator mode's.
const NETWORK_EVENTS_PER_TASK: usize = 25_000;

impl Faulty {
    fn events_per_task(self) -> usize {
        match self {
            Faulty::Emulator => EVENTS_PER_TASK,
            Faulty::Network => NETWORK_EVENTS_PER_TASK,
        }
    }
}
const KEYS_PER_TASK: usize = 16;

/// What the handlers said about each event, by body.
#[derive(Default)]
struct Ledger {
    outcomes: Mutex<HashMap<String, Vec<Option<ErrorKind>>>>,
}

#[derive(Clone, Default)]
struct Handler(Arc<Ledger>);

fn body_of(event: &EventData) -> String {
    String::from_utf8(event.body().to_vec()).expect("utf8 body")
}

impl BufferedProducerHandler for Handler {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        let mut outcomes = self.0.outcomes.lock().unwrap();
        for event in context.event_data() {
            outcomes.entry(body_of(event)).or_default().push(None);
        }
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        let kind = context.error.kind();
        let mut outcomes = self.0.outcomes.lock().unwrap();
        for event in context.event_data() {
            outcomes.entry(body_of(event)).or_default().push(Some(kind));
        }
    }
}

/// The body of the `index`-th event of `task`, and its key when it has one: even indexes are
/// keyed, each task with keys of its own, so that a key's enqueue order is its task's order.
fn event_of(task: usize, index: usize) -> (String, Option<String>) {
    let body = format!("{task}-{index}");
    let key = index
        .is_multiple_of(2)
        .then(|| format!("key-{task}-{}", (index / 2) % KEYS_PER_TASK));
    (body, key)
}

fn parse_body(body: &str) -> (usize, usize) {
    let (task, index) = body.split_once('-').expect("task-index");
    (task.parse().expect("task"), index.parse().expect("index"))
}

fn retries() -> RetryOptions {
    // The window of eight retries (about 3 s) outlasts each fault of the schedule; a try
    // timeout of 1 s makes withheld and delayed acknowledgements cost a second, not a minute.
    RetryOptions::default()
        .with_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_millis(500))
        .with_max_retries(8)
        .with_try_timeout(Duration::from_secs(1))
}

/// Injects one random fault; returns its name for the tally.
async fn random_fault(faults: &Faults, rng: &mut StdRng, busy_left: &mut usize) -> &'static str {
    let partition = rng.random_range(0..PARTITIONS).to_string();
    let scope = FaultScope::partition(HUB, partition.clone());
    match rng.random_range(0..7) {
        0 if *busy_left > 0 => {
            // Each server-busy costs its partition the service's extra pause of 4 to 8 s.
            *busy_left -= 1;
            faults.reject_next(1, FaultCondition::ServerBusy, scope);
            "server-busy"
        }
        0 | 1 => {
            faults.reject_next(
                rng.random_range(1..3),
                if rng.random_bool(0.5) {
                    FaultCondition::Timeout
                } else {
                    FaultCondition::InternalError
                },
                scope,
            );
            "transient rejection"
        }
        2 => {
            faults.withhold_next(rng.random_range(1..3), scope);
            "withheld acknowledgement"
        }
        3 => {
            faults.delay_dispositions(Duration::from_millis(1500));
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
            faults.delay_dispositions(Duration::ZERO);
            "dispositions delayed beyond the try timeout"
        }
        4 => {
            let which = rng.random_bool(0.5).then_some(partition.as_str());
            faults.detach_senders(HUB, which, FaultCondition::DetachForced);
            "link detach"
        }
        5 => {
            faults.drop_connections();
            "dropped connection"
        }
        _ => {
            faults.close_connections();
            "closed connection"
        }
    }
}

/// Makes one random network fault with the proxy; returns its name for the tally. Faults that
/// leave a connection unusable (lost answers, a black hole) end with a reset after a while, as
/// a middlebox that gives up on the flow would.
async fn random_network_fault(proxy: &Proxy, rng: &mut StdRng) -> &'static str {
    let linger = Duration::from_millis(rng.random_range(100..400));
    match rng.random_range(0..6) {
        0 => {
            proxy.reset();
            "reset"
        }
        1 => {
            let stage = [Stage::Open, Stage::PutToken, Stage::EntityAttach][rng.random_range(0..3)];
            proxy.reset_new_at(stage, rng.random_range(1..3));
            proxy.reset();
            "reset, then reconnects reset during their handshake"
        }
        2 => {
            proxy.drop_answers();
            tokio::time::sleep(linger).await;
            proxy.reset();
            "acknowledgements lost one way, then reset"
        }
        3 => {
            proxy.black_hole();
            tokio::time::sleep(linger).await;
            proxy.reset();
            "black hole, then reset"
        }
        4 => {
            let direction = if rng.random_bool(0.5) {
                Direction::Up
            } else {
                Direction::Down
            };
            proxy.cut_new_after(Some((direction, rng.random_range(100..4000))));
            proxy.reset();
            tokio::time::sleep(linger).await;
            proxy.cut_new_after(None);
            "reconnects cut after some bytes"
        }
        _ => {
            proxy.delay(Duration::from_millis(rng.random_range(20..200)));
            tokio::time::sleep(linger).await;
            proxy.delay(Duration::ZERO);
            "delay"
        }
    }
}

/// Where the faults come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Faulty {
    /// The emulator's fault injection.
    Emulator,
    /// The fault proxy between the producer and the emulator.
    Network,
}

struct Run {
    faulty: Faulty,
    events_per_task: usize,
    enqueued: usize,
    outcomes: HashMap<String, Vec<Option<ErrorKind>>>,
    /// Stored occurrences per body, and each partition's stored (body, key) in order.
    stored: HashMap<String, usize>,
    partitions: BTreeMap<String, Vec<(String, Option<String>)>>,
    faults: BTreeMap<&'static str, usize>,
    elapsed: Duration,
}

async fn run(idempotent: bool, faulty: Faulty) -> Run {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("chaos ({faulty:?} faults, idempotent: {idempotent}): seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let emulator = Emulator::builder()
        .hub(HUB, PARTITIONS)
        .start()
        .await
        .expect("emulator starts");
    let handler = Handler::default();
    let options = BufferedProducerOptions::default()
        .with_max_wait_time(Some(Duration::from_millis(20)))
        .with_partition_refresh_interval(Duration::from_secs(1))
        .with_retry_options(retries())
        .with_idempotent_retries(idempotent);
    let proxy = Proxy::start(emulator.local_addr()).await;
    let connection_string = match faulty {
        Faulty::Emulator => emulator.connection_string(),
        Faulty::Network => proxy.connection_string(&emulator),
    };
    let producer = BufferedProducerClient::from_connection_string(&connection_string, None)
        .options(options)
        .handler(handler.clone())
        .build()
        .expect("producer builds");

    let started = Instant::now();
    let enqueued = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let events_per_task = faulty.events_per_task();
    for task in 0..TASKS {
        let producer = producer.clone();
        let enqueued = enqueued.clone();
        tasks.push(tokio::spawn(async move {
            for index in 0..events_per_task {
                let (body, key) = event_of(task, index);
                let options = match key {
                    Some(key) => EnqueueOptions::default().with_partition_key(key),
                    None => EnqueueOptions::default(),
                };
                producer
                    .enqueue_event(EventData::from(body), options)
                    .await
                    .expect("enqueue");
                enqueued.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let total = TASKS * events_per_task;
    let faults = emulator.faults();
    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut busy_left = 3;
    let mut tokens_refused = false;
    let mut grown = false;
    let chaos = async {
        // The hub always grows: a run whose enqueues all end between two ticks (fast when
        // many sends fail at once) still gets its growth, after the last enqueue.
        while !done.load(Ordering::Relaxed) || !grown {
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..300))).await;
            let progress = enqueued.load(Ordering::Relaxed);
            let name = if !grown && progress > total / 2 {
                grown = true;
                faults
                    .grow_partitions(HUB, GROWN_PARTITIONS)
                    .expect("partitions grow");
                "partition count increased"
            } else if faulty == Faulty::Network {
                random_network_fault(&proxy, &mut rng).await
            } else if !tokens_refused && progress > total / 4 {
                tokens_refused = true;
                // New connections are refused their tokens for a while: cut the current one
                // so the producer must reconnect into the refusal.
                faults.reject_tokens_for(Duration::from_millis(1500));
                faults.drop_connections();
                "tokens refused for 1.5 s"
            } else {
                random_fault(&faults, &mut rng, &mut busy_left).await
            };
            *tally.entry(name).or_default() += 1;
        }
    };
    let enqueuing = async {
        for task in tasks {
            task.await.expect("enqueue task");
        }
        done.store(true, Ordering::Relaxed);
    };
    tokio::join!(chaos, enqueuing);
    faults.clear();
    proxy.heal();
    tokio::time::timeout(Duration::from_secs(120), producer.close())
        .await
        .expect("close completes")
        .expect("close succeeds");
    let elapsed = started.elapsed();

    let mut stored = HashMap::new();
    let mut partitions = BTreeMap::new();
    for partition in emulator.partition_ids(HUB).expect("hub") {
        let events = emulator.events(HUB, &partition).expect("events");
        let mut list = Vec::with_capacity(events.len());
        for event in events {
            let body = String::from_utf8(event.body().expect("body").to_vec()).expect("utf8");
            *stored.entry(body.clone()).or_insert(0) += 1;
            list.push((body, event.partition_key().expect("key")));
        }
        partitions.insert(partition, list);
    }
    let outcomes = std::mem::take(&mut *handler.0.outcomes.lock().unwrap());
    Run {
        faulty,
        events_per_task,
        enqueued: enqueued.load(Ordering::Relaxed),
        outcomes,
        stored,
        partitions,
        faults: tally,
        elapsed,
    }
}

impl Run {
    fn succeeded(&self) -> impl Iterator<Item = &String> {
        self.outcomes
            .iter()
            .filter(|(_, o)| o.first().is_some_and(Option::is_none))
            .map(|(body, _)| body)
    }

    fn duplicates(&self) -> usize {
        self.stored.values().map(|n| n - 1).sum()
    }

    fn print_tallies(&self, idempotent: bool) {
        let mut failed: BTreeMap<String, usize> = BTreeMap::new();
        for kind in self
            .outcomes
            .values()
            .filter_map(|o| o.first().copied().flatten())
        {
            *failed.entry(format!("{kind:?}")).or_default() += 1;
        }
        let stored_reported_failed = self
            .outcomes
            .iter()
            .filter(|(body, o)| {
                o.first().is_some_and(Option::is_some) && self.stored.contains_key(*body)
            })
            .count();
        println!(
            "chaos ({:?} faults, idempotent: {idempotent}) in {:.1?}: enqueued {}, succeeded {}, failed {:?}, stored {} distinct, duplicates {}, stored although reported failed {}, faults {:?}",
            self.faulty,
            self.elapsed,
            self.enqueued,
            self.succeeded().count(),
            failed,
            self.stored.len(),
            self.duplicates(),
            stored_reported_failed,
            self.faults,
        );
    }

    /// With idempotent retries: nothing stored twice, and what is stored is exactly what was
    /// reported as published.
    fn assert_stored_is_succeeded(&self) {
        assert_eq!(self.duplicates(), 0, "no event stored twice");
        let succeeded: std::collections::HashSet<&String> = self.succeeded().collect();
        let stored: std::collections::HashSet<&String> = self.stored.keys().collect();
        assert_eq!(stored.len(), succeeded.len(), "stored == succeeded exactly");
        assert_eq!(stored, succeeded);
    }

    fn assert_common(&self) {
        let total = TASKS * self.events_per_task;
        assert_eq!(self.enqueued, total);
        assert_eq!(self.outcomes.len(), total, "every event was reported");
        for (body, outcomes) in &self.outcomes {
            assert_eq!(
                outcomes.len(),
                1,
                "{body} got {} handler calls",
                outcomes.len()
            );
        }
        for body in self.succeeded() {
            assert!(
                self.stored.contains_key(body),
                "{body} reported published but not stored"
            );
        }
        for body in self.stored.keys() {
            assert!(
                self.outcomes.contains_key(body),
                "{body} stored but never enqueued"
            );
        }
        for (partition, events) in &self.partitions {
            let mut last_index: HashMap<&str, usize> = HashMap::new();
            let mut seen = std::collections::HashSet::new();
            for (body, key) in events {
                let Some(key) = key else { continue };
                if !seen.insert(body.as_str()) {
                    continue; // a duplicate of an earlier batch
                }
                let (_, index) = parse_body(body);
                if let Some(previous) = last_index.insert(key.as_str(), index) {
                    assert!(
                        previous < index,
                        "partition {partition}: key {key} stored index {index} after {previous}"
                    );
                }
            }
        }
        assert_eq!(
            self.partitions.len(),
            GROWN_PARTITIONS,
            "the hub grew during the run"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_idempotent_retries_stores_exactly_what_succeeded() {
    let run = run(true, Faulty::Emulator).await;
    run.print_tallies(true);
    run.assert_common();
    run.assert_stored_is_succeeded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_without_idempotence_loses_nothing_and_counts_duplicates() {
    let run = run(false, Faulty::Emulator).await;
    run.print_tallies(false);
    run.assert_common();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_chaos_with_idempotent_retries_stores_exactly_what_succeeded() {
    let run = run(true, Faulty::Network).await;
    run.print_tallies(true);
    run.assert_common();
    run.assert_stored_is_succeeded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_chaos_without_idempotence_loses_nothing_and_counts_duplicates() {
    let run = run(false, Faulty::Network).await;
    run.print_tallies(false);
    run.assert_common();
}
