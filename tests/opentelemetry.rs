//! The `opentelemetry` feature over the real protocol, exported through the OpenTelemetry SDK
//! into its in-memory exporters: the messaging instruments with the conventions' attributes,
//! a span per batch send (linked to the enqueuing spans, with its retries), flush and close
//! spans, and the `traceparent` a consumer finds on the stored events.

mod common;

use std::collections::HashMap;

use eventhubs_buffered::{BufferedProducerClient, OpenTelemetryOptions};
use eventhubs_emulator::{FaultCondition, FaultScope};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::in_memory_exporter::InMemoryMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

use common::*;

struct Exporters {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

impl Exporters {
    fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporter::default();
        Self {
            tracer_provider: SdkTracerProvider::builder()
                .with_simple_exporter(spans.clone())
                .build(),
            meter_provider: SdkMeterProvider::builder()
                .with_reader(PeriodicReader::builder(metrics.clone()).build())
                .build(),
            spans,
            metrics,
        }
    }

    fn options(&self, propagate: bool) -> OpenTelemetryOptions {
        OpenTelemetryOptions::default()
            .with_meter_provider(&self.meter_provider)
            .with_tracer_provider(&self.tracer_provider)
            .with_trace_context_propagation(propagate)
    }

    fn spans(&self) -> Vec<SpanData> {
        self.spans.get_finished_spans().expect("spans")
    }

    fn metrics(&self) -> Vec<ResourceMetrics> {
        self.meter_provider.force_flush().expect("metrics flush");
        self.metrics.get_finished_metrics().expect("metrics")
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn attributes_map(attributes: impl Iterator<Item = KeyValue>) -> HashMap<String, String> {
    attributes
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

/// The data points of the last export of metric `name`: (attributes, value) for a counter,
/// (attributes, count) for a histogram.
fn points(exported: &[ResourceMetrics], name: &str) -> Vec<(HashMap<String, String>, u64)> {
    let mut found = Vec::new();
    for resource in exported.iter().rev().take(1) {
        for scope in resource.scope_metrics() {
            assert_eq!(scope.scope().name(), "eventhubs-buffered");
            for metric in scope.metrics().filter(|m| m.name() == name) {
                match metric.data() {
                    AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                        assert_eq!(metric.unit(), "{message}");
                        for p in sum.data_points() {
                            found.push((attributes_map(p.attributes().cloned()), p.value()));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(histogram)) => {
                        assert_eq!(metric.unit(), "s");
                        for p in histogram.data_points() {
                            found.push((attributes_map(p.attributes().cloned()), p.count()));
                        }
                    }
                    other => panic!("{name} exported as {other:?}"),
                }
            }
        }
    }
    found
}

/// Reads `count` events of `partition` as a consumer does (a receiver link on the default
/// consumer group), returning the string application properties of each.
async fn read_over_amqp(
    emulator: &eventhubs_emulator::Emulator,
    partition: &str,
    count: usize,
) -> Vec<HashMap<String, String>> {
    use fe2o3_amqp::sasl_profile::SaslProfile;
    use fe2o3_amqp::types::messaging::Body;
    use fe2o3_amqp::types::primitives::{SimpleValue, Value as AmqpValue};
    use fe2o3_amqp::{Connection, Delivery, Receiver, Session};

    let addr = emulator.local_addr();
    let url = format!("amqp://{}:{}", addr.ip(), addr.port());
    let mut connection = Connection::builder()
        .container_id("otel-test-consumer")
        .sasl_profile(SaslProfile::Anonymous)
        .open(url.as_str())
        .await
        .expect("consumer connects");
    let mut session = Session::begin(&mut connection).await.expect("session");
    let address = format!("{HUB}/ConsumerGroups/$Default/Partitions/{partition}");
    let mut receiver = Receiver::attach(&mut session, "otel-test-reader", address.as_str())
        .await
        .expect("receiver attaches");
    let mut read = Vec::new();
    for _ in 0..count {
        let delivery: Delivery<Body<AmqpValue>> = bounded("an event", BOUND, receiver.recv())
            .await
            .expect("an event");
        receiver.accept(&delivery).await.expect("accept");
        let properties = delivery
            .message()
            .application_properties
            .as_ref()
            .map(|p| {
                p.0.iter()
                    .filter_map(|(name, value)| match value {
                        SimpleValue::String(s) => Some((name.clone(), s.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        read.push(properties);
    }
    let _ = receiver.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    read
}

#[tokio::test]
async fn sends_are_measured_and_traced_as_the_messaging_conventions_name_them() {
    // The consumer below reads without a `$cbs` token.
    let emulator = eventhubs_emulator::Emulator::builder()
        .hub(HUB, 4)
        .require_authorization(false)
        .start()
        .await
        .expect("emulator starts");
    let exporters = Exporters::new();
    let (producer, recorder) = producer_with(
        &emulator,
        fast_options().with_opentelemetry(exporters.options(true)),
    );
    // Partition 1 is busy once (a retry); partition 2 refuses its batch for good.
    let faults = emulator.faults();
    faults.reject_next(
        1,
        FaultCondition::ServerBusy,
        FaultScope::partition(HUB, "1"),
    );
    faults.reject_next(
        1,
        FaultCondition::ResourceLimitExceeded,
        FaultScope::partition(HUB, "2"),
    );

    // The application's request span encloses the enqueues.
    let tracer = exporters.tracer_provider.tracer("the-application");
    let request = tracer.start("handle request");
    let request_context = request.span_context().clone();
    let context = Context::current_with_span(request);
    async {
        for partition in ["0", "1", "2"] {
            for i in 0..3 {
                producer
                    .enqueue_event(event(format!("p{partition}-{i}")), to(partition))
                    .await
                    .expect("enqueue");
            }
        }
    }
    .with_context(context.clone())
    .await;
    context.span().end();
    // An event enqueued outside any span carries no trace context.
    producer
        .enqueue_event(event("untraced"), to("3"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.succeeded().len(), 7);
    assert_eq!(recorder.failed().len(), 3);

    // A consumer reading over AMQP finds the enqueuing span's trace context on the events.
    let traceparent = format!(
        "00-{:032x}-{:016x}-01",
        request_context.trace_id(),
        request_context.span_id()
    );
    for partition in ["0", "1"] {
        let read = read_over_amqp(&emulator, partition, 3).await;
        for properties in read {
            for property in ["Diagnostic-Id", "traceparent"] {
                assert_eq!(
                    properties.get(property),
                    Some(&traceparent),
                    "{property} of an event read from partition {partition}"
                );
            }
        }
    }
    let untraced = emulator.events(HUB, "3").expect("events");
    assert_eq!(untraced.len(), 1);
    assert_eq!(
        untraced[0].property("Diagnostic-Id").expect("decodes"),
        None
    );

    // One producer span per batch send, linked to the request, with the conventions' names.
    let spans = exporters.spans();
    let sends: Vec<&SpanData> = spans.iter().filter(|s| s.name == "send hub").collect();
    assert_eq!(
        sends.len(),
        4,
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for send in &sends {
        assert_eq!(send.span_kind, SpanKind::Producer);
        assert_eq!(send.instrumentation_scope.name(), "eventhubs-buffered");
        let a = &send.attributes;
        assert_eq!(
            attribute(a, "messaging.system").as_deref(),
            Some("eventhubs")
        );
        assert_eq!(
            attribute(a, "messaging.operation.name").as_deref(),
            Some("send")
        );
        assert_eq!(
            attribute(a, "messaging.operation.type").as_deref(),
            Some("send")
        );
        assert_eq!(
            attribute(a, "messaging.destination.name").as_deref(),
            Some(HUB)
        );
        assert_eq!(
            attribute(a, "server.address").as_deref(),
            Some(producer.fully_qualified_namespace())
        );
        let partition = attribute(a, "messaging.destination.partition.id").expect("partition");
        let count = attribute(a, "messaging.batch.message_count").expect("count");
        let links: Vec<_> = send
            .links
            .links
            .iter()
            .map(|l| l.span_context.clone())
            .collect();
        if partition == "3" {
            assert_eq!(count, "1");
            assert!(links.is_empty(), "the untraced event links nothing");
        } else {
            assert_eq!(count, "3");
            assert_eq!(links.len(), 3, "one link per event of the batch");
            assert!(links
                .iter()
                .all(|l| l.trace_id() == request_context.trace_id()
                    && l.span_id() == request_context.span_id()));
        }
        let retries: Vec<_> = send
            .events
            .events
            .iter()
            .filter(|e| e.name == "retry")
            .collect();
        match partition.as_str() {
            "1" => {
                assert_eq!(
                    retries.len(),
                    1,
                    "the busy try is an event of the send span"
                );
                assert_eq!(
                    attribute(&retries[0].attributes, "error.type").as_deref(),
                    Some("server_busy")
                );
                assert_eq!(attribute(a, "error.type"), None);
            }
            "2" => {
                assert_eq!(
                    attribute(a, "error.type").as_deref(),
                    Some("quota_exceeded")
                );
                assert!(matches!(send.status, Status::Error { .. }));
            }
            _ => {
                assert!(retries.is_empty());
                assert_eq!(attribute(a, "error.type"), None);
            }
        }
    }
    for operation in ["flush hub", "close hub"] {
        assert_eq!(
            spans.iter().filter(|s| s.name == operation).count(),
            1,
            "{operation}"
        );
    }

    // The instruments, per partition, with error.type only on the failed send.
    let exported = exporters.metrics();
    let sent = points(&exported, "messaging.client.sent.messages");
    let duration = points(&exported, "messaging.client.operation.duration");
    for points in [&sent, &duration] {
        assert_eq!(points.len(), 4, "{points:?}");
        for (attributes, _) in points.iter() {
            assert_eq!(attributes["messaging.system"], "eventhubs");
            assert_eq!(attributes["messaging.destination.name"], HUB);
            assert_eq!(attributes["messaging.operation.name"], "send");
            let failed = attributes["messaging.destination.partition.id"] == "2";
            assert_eq!(
                attributes.get("error.type").map(String::as_str),
                failed.then_some("quota_exceeded")
            );
        }
    }
    let sent_total: u64 = sent.iter().map(|(_, v)| v).sum();
    assert_eq!(sent_total, 10, "every event counted once per send");
    let sends_measured: u64 = duration.iter().map(|(_, v)| v).sum();
    assert_eq!(sends_measured, 4);
}

#[tokio::test]
async fn without_propagation_events_are_sent_as_they_were_given() {
    let emulator = emulator().await;
    let exporters = Exporters::new();
    let producer: BufferedProducerClient = producer_with(
        &emulator,
        fast_options().with_opentelemetry(exporters.options(false)),
    )
    .0;
    let tracer = exporters.tracer_provider.tracer("the-application");
    let context = Context::current_with_span(tracer.start("handle request"));
    producer
        .enqueue_event(event("plain"), to("0"))
        .with_context(context)
        .await
        .unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    let stored = emulator.events(HUB, "0").expect("events");
    assert_eq!(stored[0].property("Diagnostic-Id").expect("decodes"), None);
    assert_eq!(stored[0].property("traceparent").expect("decodes"), None);
    // The send is still traced, with nothing to link.
    let spans = exporters.spans();
    let send = spans
        .iter()
        .find(|s| s.name == "send hub")
        .expect("a send span");
    assert!(send.links.links.is_empty());
}
