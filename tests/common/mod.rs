//! Helpers shared by the hostile-condition tests (shutdown_under_faults.rs, hostile_input.rs,
//! secrets.rs): an emulator, producers with fast retries, a recorder of every handler call,
//! bounded waits on the real clock, and a TCP proxy that can black-hole its connections.
//!
//! Real IO does not work with tokio's paused clock, so every wait here is bounded on the real
//! clock and a timeout is a test failure naming what did not happen.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerHandler, BufferedProducerOptions, EnqueueOptions,
    ErrorKind, EventData, RetryOptions, SendFailedContext, SendSucceededContext,
};
use eventhubs_emulator::Emulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const HUB: &str = "hub";

/// A generous bound for things that take milliseconds when all is well.
pub const BOUND: Duration = Duration::from_secs(5);

/// One handler call: the partition, the bodies in order, and the failure if it was one.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub partition: String,
    pub bodies: Vec<String>,
    pub error: Option<ErrorKind>,
    pub message: Option<String>,
}

/// Records every handler call, in the order the calls happened.
#[derive(Clone, Default)]
pub struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
}

pub fn body_text(event: &EventData) -> String {
    String::from_utf8(event.body().to_vec()).expect("utf8 body")
}

#[async_trait::async_trait]
impl BufferedProducerHandler for Recorder {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        self.record(context.partition_id, &context.events, None);
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        self.record(
            context.partition_id,
            &context.events,
            Some((context.error.kind(), context.error.to_string())),
        );
    }
}

impl Recorder {
    pub fn record(
        &self,
        partition: String,
        events: &[EventData],
        error: Option<(ErrorKind, String)>,
    ) {
        let (error, message) = match error {
            Some((kind, message)) => (Some(kind), Some(message)),
            None => (None, None),
        };
        self.calls.lock().unwrap().push(Call {
            partition,
            bodies: events.iter().map(body_text).collect(),
            error,
            message,
        });
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Events handled so far (successes and failures).
    pub fn handled(&self) -> usize {
        self.calls().iter().map(|c| c.bodies.len()).sum()
    }

    /// Every reported body with its partition and error kind, one entry per event.
    pub fn outcomes(&self) -> Vec<(String, String, Option<ErrorKind>)> {
        self.calls()
            .into_iter()
            .flat_map(|c| {
                let partition = c.partition.clone();
                let error = c.error;
                c.bodies
                    .into_iter()
                    .map(move |b| (b, partition.clone(), error))
            })
            .collect()
    }

    pub fn succeeded(&self) -> Vec<String> {
        self.outcomes()
            .into_iter()
            .filter(|(_, _, e)| e.is_none())
            .map(|(b, _, _)| b)
            .collect()
    }

    pub fn failed(&self) -> Vec<(String, ErrorKind)> {
        self.outcomes()
            .into_iter()
            .filter_map(|(b, _, e)| e.map(|e| (b, e)))
            .collect()
    }

    /// The failure message each failed event was reported with.
    pub fn failure_messages(&self) -> HashMap<String, String> {
        self.calls()
            .into_iter()
            .filter_map(|c| c.message.map(|m| (c.bodies, m)))
            .flat_map(|(bodies, m)| bodies.into_iter().map(move |b| (b, m.clone())))
            .collect()
    }

    /// Panics unless each of `expected` was reported exactly once and nothing else was.
    pub fn assert_exactly_once(&self, expected: &[String]) {
        let mut seen = HashSet::new();
        for (body, _, _) in self.outcomes() {
            assert!(seen.insert(body.clone()), "{body} was reported twice");
        }
        let expected: HashSet<String> = expected.iter().cloned().collect();
        let missing: Vec<_> = expected.difference(&seen).collect();
        let extra: Vec<_> = seen.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "not reported: {missing:?}; reported but never enqueued: {extra:?}"
        );
    }
}

pub async fn emulator() -> Emulator {
    Emulator::builder()
        .hub(HUB, 4)
        .start()
        .await
        .expect("emulator starts")
}

pub fn fast_retries() -> RetryOptions {
    RetryOptions::default()
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_try_timeout(Duration::from_secs(3))
}

/// Short max_wait_time and fast retries.
pub fn fast_options() -> BufferedProducerOptions {
    BufferedProducerOptions::default()
        .with_max_wait_time(Some(Duration::from_millis(20)))
        .with_retry_options(fast_retries())
}

/// The longest a send may take under `retry` before it is reported: every try times out and
/// every pause is the longest.
pub fn retry_bound(retry: &RetryOptions) -> Duration {
    retry.try_timeout * (retry.max_retries + 1) + retry.max_delay * retry.max_retries
}

pub fn producer_for(
    connection_string: &str,
    options: BufferedProducerOptions,
) -> (BufferedProducerClient, Recorder) {
    let recorder = Recorder::default();
    let producer = BufferedProducerClient::from_connection_string(connection_string, None)
        .options(options)
        .handler(recorder.clone())
        .build()
        .expect("producer builds");
    (producer, recorder)
}

pub fn producer_with(
    emulator: &Emulator,
    options: BufferedProducerOptions,
) -> (BufferedProducerClient, Recorder) {
    producer_for(&emulator.connection_string(), options)
}

pub fn to(partition: &str) -> EnqueueOptions {
    EnqueueOptions::default().with_partition_id(partition)
}

pub fn keyed(key: &str) -> EnqueueOptions {
    EnqueueOptions::default().with_partition_key(key)
}

pub fn auto() -> EnqueueOptions {
    EnqueueOptions::default()
}

pub fn event(body: impl Into<String>) -> EventData {
    EventData::from(body.into())
}

/// A future bounded on the real clock; a timeout is a test failure naming `what`.
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not complete within {limit:?}"),
    }
}

/// Polls `condition` every few milliseconds until it holds; fails the test after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The stored bodies of a partition, in sequence order.
pub fn stored(emulator: &Emulator, partition: &str) -> Vec<String> {
    emulator
        .events(HUB, partition)
        .expect("events")
        .iter()
        .map(|e| String::from_utf8(e.body().expect("body").to_vec()).expect("utf8"))
        .collect()
}

/// Every stored body of the hub.
pub fn stored_all(emulator: &Emulator) -> Vec<String> {
    emulator
        .partition_ids(HUB)
        .expect("ids")
        .into_iter()
        .flat_map(|p| stored(emulator, &p))
        .collect()
}

/// A TCP proxy on loopback in front of the emulator. `black_hole` makes it swallow every byte
/// of the connections open now, in both directions, without closing them: the client sees a
/// peer that stops answering (a dead NAT entry, a pulled cable), not a closed connection.
/// Connections opened later are forwarded normally unless `black_hole_new` is set too.
pub struct Proxy {
    pub port: u16,
    /// Generation of black-holed connections: connections of a generation below it swallow.
    cut_before: Arc<std::sync::atomic::AtomicU64>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    refuse_new: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let cut_before = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let refuse_new = Arc::new(AtomicBool::new(false));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let cut_before = cut_before.clone();
            let generation = generation.clone();
            let refuse_new = refuse_new.clone();
            let tasks = tasks.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(target).await else {
                        continue;
                    };
                    // A black-holed new connection: its generation is cut already.
                    let mine = generation.fetch_add(1, Ordering::SeqCst);
                    if refuse_new.load(Ordering::SeqCst) {
                        cut_before.fetch_max(mine + 1, Ordering::SeqCst);
                    }
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(client_read, server_write, mine, cut_before.clone());
                    let down = pump(server_read, client_write, mine, cut_before.clone());
                    let mut tasks = tasks.lock().unwrap();
                    tasks.push(tokio::spawn(up));
                    tasks.push(tokio::spawn(down));
                }
            })
        };
        tasks.lock().unwrap().push(accept);
        Proxy {
            port,
            cut_before,
            generation,
            refuse_new,
            tasks,
        }
    }

    /// The emulator's connection string, pointed at this proxy.
    pub fn connection_string(&self, emulator: &Emulator) -> String {
        let port = emulator.local_addr().port();
        emulator
            .connection_string()
            .replace(&format!(":{port}"), &format!(":{}", self.port))
    }

    /// How many connections the proxy has accepted.
    pub fn accepted(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Every connection open now stops carrying bytes (both ways), and stays open.
    pub fn black_hole(&self) {
        self.cut_before
            .fetch_max(self.generation.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Connections opened from now on are black-holed from their first byte.
    pub fn black_hole_new(&self) {
        self.refuse_new.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    generation: u64,
    cut_before: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if generation < cut_before.load(Ordering::SeqCst) {
            continue; // swallowed
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
