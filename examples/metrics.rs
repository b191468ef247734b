//! Metrics and traces of the buffered producer, exported through the OpenTelemetry SDK to
//! stdout, and the producer's own metrics snapshot.
//!
//! ```text
//! cargo run --example metrics --features opentelemetry [-- --events N]
//! ```
//!
//! Publishes `N` events (default 1,000) inside an application span `handle requests`, with
//! trace-context propagation on: each event carries the span's `traceparent`, and each batch
//! send is a producer span `send <hub>` linked to it. On the embedded emulator (when
//! `EVENTHUBS_CONNECTION_STRING` is unset) partition 0 answers "server busy" once, so one send
//! span shows a `retry` event. At the end the stdout exporters print the spans (the
//! application's, each send, flush and close) and the instruments
//! `messaging.client.sent.messages` and `messaging.client.operation.duration`; then the
//! snapshot from `BufferedProducerClient::metrics` is printed per partition.

use std::env;

use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, EnqueueOptions, EventData,
    OpenTelemetryOptions, ProducerMetrics,
};
use eventhubs_emulator::{Emulator, FaultCondition, FaultScope};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;

type BoxError = Box<dyn std::error::Error>;

/// The command line.
#[derive(clap::Parser)]
#[command(about = "Metrics and traces of the buffered producer, exported to stdout")]
struct Args {
    /// How many events to publish.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    events: u32,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Args = clap::Parser::parse();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default()).build(),
        )
        .build();

    let (connection_string, emulator) = match env::var("EVENTHUBS_CONNECTION_STRING") {
        Ok(s) if !s.trim().is_empty() => (s, None),
        _ => {
            let emulator = Emulator::builder().hub("hub", 4).start().await?;
            emulator.faults().reject_next(
                1,
                FaultCondition::ServerBusy,
                FaultScope::partition("hub", "0"),
            );
            (emulator.connection_string(), Some(emulator))
        }
    };
    let telemetry = OpenTelemetryOptions::default()
        .with_meter_provider(&meter_provider)
        .with_tracer_provider(&tracer_provider)
        .with_trace_context_propagation(true);
    let producer = BufferedProducerClient::from_connection_string(&connection_string, None)
        .options(BufferedProducerOptions::default().with_opentelemetry(telemetry))
        .on_send_failed(|context| async move {
            eprintln!("{} events failed: {}", context.events.len(), context.error);
        })
        .build()?;

    let requests = tracer_provider.tracer("example").start("handle requests");
    let context = Context::current_with_span(requests);
    async {
        for i in 0..args.events {
            let partition = (i % 4).to_string();
            producer
                .enqueue_event(
                    EventData::from(format!("event {i}")),
                    EnqueueOptions::default().with_partition_id(partition),
                )
                .await?;
        }
        Ok::<_, BoxError>(())
    }
    .with_context(context.clone())
    .await?;
    context.span().end();
    producer.flush().await?;
    producer.close().await?;

    tracer_provider.shutdown()?;
    meter_provider.shutdown()?;
    print_snapshot(&producer.metrics());
    if let Some(emulator) = emulator {
        emulator.shutdown().await;
    }
    Ok(())
}

/// The snapshot the producer keeps whether or not OpenTelemetry is used.
fn print_snapshot(metrics: &ProducerMetrics) {
    println!("\nmetrics snapshot (BufferedProducerClient::metrics)");
    println!(
        "{:>9} {:>9} {:>9} {:>7} {:>9} {:>14} {:>14}",
        "partition", "enqueued", "published", "failed", "retries", "batch p50/max", "latency p99"
    );
    for p in metrics.partitions.iter().chain([&metrics.total]) {
        println!(
            "{:>9} {:>9} {:>9} {:>7} {:>9} {:>14} {:>14?}",
            p.partition_id.as_deref().unwrap_or("total"),
            p.enqueued,
            p.published,
            p.failed + p.abandoned,
            p.retries,
            format!("{}/{}", p.batch_events.p50, p.batch_events.max),
            p.publish_latency.p99,
        );
    }
}
