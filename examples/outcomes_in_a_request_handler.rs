//! Per-event outcomes in an HTTP service: each request enqueues one event, awaits that event's
//! outcome, and only then answers its own client: 201 once the event is stored, 503 when it
//! failed (saying whether it may have been stored after all).
//!
//! ```text
//! cargo run --release --example outcomes_in_a_request_handler [-- --requests N] [--serve]
//! ```
//!
//! It serves `POST /orders/{customer}` on 127.0.0.1 (the body is the order) with axum,
//! publishing to an in-process emulator when `EVENTHUBS_CONNECTION_STRING` is unset. Each
//! customer's orders are keyed by the customer, so they stay in order. Without `--serve` it
//! sends itself `N` requests (default 500) from 50 concurrent clients, prints the answers and
//! the latency the clients saw, checks that every 201 is stored in the emulator, and stops;
//! with `--serve` it serves until Ctrl-C (try `curl -d 'two lattes' localhost:PORT/orders/ada`).
//!
//! The handlers still hear of every event (they count them here): the outcome is for the
//! request, the handler for the producer's own bookkeeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use eventhubs_buffered::{BufferedProducerClient, EnqueueOptions, EventData};
use eventhubs_emulator::Emulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CLIENTS: usize = 50;

/// What the example counts, besides what the clients see.
#[derive(Default)]
struct Counts {
    published: AtomicU64,
    failed: AtomicU64,
}

/// `POST /orders/{customer}`: enqueue the order keyed by customer, await its outcome, answer.
async fn place_order(
    State(producer): State<BufferedProducerClient>,
    Path(customer): Path<String>,
    order: String,
) -> (StatusCode, String) {
    let options = EnqueueOptions::default().with_partition_key(customer);
    let outcome = match producer
        .enqueue_event_with_outcome(EventData::from(order), options)
        .await
    {
        Ok(outcome) => outcome,
        // Refused before it was taken (closing, bad key...): nothing was sent.
        Err(refused) => return (StatusCode::SERVICE_UNAVAILABLE, refused.to_string()),
    };
    match outcome.await {
        Ok(published) => (
            StatusCode::CREATED,
            format!("stored in partition {}\n", published.partition_id()),
        ),
        Err(error) if error.may_have_been_published() => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unknown whether it was stored ({error}); retry with the same order id\n"),
        ),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not stored: {error}\n"),
        ),
    }
}

/// The command line.
#[derive(clap::Parser)]
#[command(about = "An HTTP endpoint that answers once its event is published")]
struct Args {
    /// Requests the built-in client sends.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Keep serving after the requests (for curl).
    #[arg(long)]
    serve: bool,
}

/// One request from a plain HTTP/1.1 client: the status code and how long the answer took.
async fn request(
    address: std::net::SocketAddr,
    customer: &str,
    order: &str,
) -> Result<(u16, Duration), BoxError> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await?;
    let request = format!(
        "POST /orders/{customer} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{order}",
        order.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or("the answer has no status line")?;
    Ok((status, started.elapsed()))
}

/// Sends `count` requests from `CLIENTS` concurrent clients; returns each status and latency.
async fn exercise(address: std::net::SocketAddr, count: usize) -> Vec<(String, u16, Duration)> {
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        clients.spawn(async move {
            let mut answers = Vec::new();
            for i in (client..count).step_by(CLIENTS) {
                let customer = format!("customer-{}", i % 40);
                let order = format!("order-{i}");
                match request(address, &customer, &order).await {
                    Ok((status, took)) => answers.push((order, status, took)),
                    Err(e) => eprintln!("{order}: {e}"),
                }
            }
            answers
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = clients.join_next().await {
        answers.extend(done.unwrap_or_default());
    }
    answers
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = <Args as clap::Parser>::parse();
    let configured = std::env::var("EVENTHUBS_CONNECTION_STRING").unwrap_or_default();
    let emulator = match configured.is_empty() {
        true => Some(Emulator::builder().hub("hub", 4).start().await?),
        false => None,
    };
    let connection_string = match &emulator {
        Some(emulator) => emulator.connection_string(),
        None => configured,
    };
    let counts = Arc::new(Counts::default());
    let producer = BufferedProducerClient::from_connection_string(&connection_string, None)
        .on_send_succeeded({
            let counts = counts.clone();
            move |context| {
                counts
                    .published
                    .fetch_add(context.events.len() as u64, Ordering::Relaxed);
                async {}
            }
        })
        .on_send_failed({
            let counts = counts.clone();
            move |context| {
                counts
                    .failed
                    .fetch_add(context.events.len() as u64, Ordering::Relaxed);
                async move { eprintln!("{} events failed: {}", context.events.len(), context.error) }
            }
        })
        .build()?;

    let app = Router::new()
        .route("/orders/{customer}", post(place_order))
        .with_state(producer.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("serving POST http://{address}/orders/{{customer}}");

    if args.serve {
        tokio::signal::ctrl_c().await?;
    } else {
        let started = Instant::now();
        let answers = exercise(address, args.requests).await;
        let elapsed = started.elapsed();
        let created: Vec<&String> = answers
            .iter()
            .filter(|(_, status, _)| *status == 201)
            .map(|(order, _, _)| order)
            .collect();
        let mut latencies: Vec<Duration> = answers.iter().map(|(_, _, took)| *took).collect();
        latencies.sort();
        println!(
            "{} requests in {:.2?}: {} answered 201 (stored), {} otherwise",
            answers.len(),
            elapsed,
            created.len(),
            answers.len() - created.len()
        );
        println!(
            "latency seen by clients (enqueue, publish, answer): p50 {:.2?}, p99 {:.2?}, max {:.2?}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or_default()
        );
        if let Some(emulator) = &emulator {
            let stored: std::collections::HashSet<String> = emulator
                .partition_ids("hub")?
                .into_iter()
                .flat_map(|p| emulator.events("hub", &p).unwrap_or_default())
                .filter_map(|e| {
                    e.body()
                        .ok()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                })
                .collect();
            let missing = created
                .iter()
                .filter(|order| !stored.contains(**order))
                .count();
            println!("every 201 is stored in the emulator: {}", missing == 0);
            if missing > 0 {
                return Err(format!("{missing} orders answered 201 are not stored").into());
            }
        }
    }
    let _ = stop.send(());
    server.await??;
    producer.close().await?;
    println!(
        "handlers: {} published, {} failed",
        counts.published.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed)
    );
    if let Some(emulator) = emulator {
        emulator.shutdown().await;
    }
    Ok(())
}
