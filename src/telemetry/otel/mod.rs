//! OpenTelemetry instrumentation (the `opentelemetry` feature), named as OpenTelemetry's
//! semantic conventions for messaging and for Azure Event Hubs name things:
//!
//! - metrics: `messaging.client.sent.messages` (counter, `{message}`) and
//!   `messaging.client.operation.duration` (histogram, `s`), one record per batch send, with
//!   `messaging.system` = `eventhubs`, `messaging.operation.name` and `.type` = `send`,
//!   `messaging.destination.name` (the event hub), `messaging.destination.partition.id`,
//!   `server.address` and, when the send failed, `error.type` (see [`ErrorKind::as_str`]);
//! - spans: a producer span `send <hub>` per batch send with the same attributes and
//!   `messaging.batch.message_count`, linked to the trace context each event carries, with a
//!   `retry` event per retry; spans `flush <hub>` and `close <hub>`;
//! - trace context, opt-in: an event enqueued inside a span gets the span's W3C
//!   `traceparent` as the application properties `Diagnostic-Id` (what Azure's SDKs read)
//!   and `traceparent`.
//!
//! [`ErrorKind::as_str`]: crate::ErrorKind::as_str

pub(crate) mod trace_context;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry::global::{BoxedTracer, ObjectSafeTracerProvider};
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider};
use opentelemetry::trace::{Link, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};

use crate::error::Error;
use crate::event::{EventData, PropertyValue};

/// The instrumentation scope every instrument and span of this crate is created in.
fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("eventhubs-buffered")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The boundaries (seconds) the conventions advise for `messaging.client.operation.duration`.
const DURATION_BOUNDARIES: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Where a buffered producer sends its OpenTelemetry metrics and spans, and whether it puts
/// the trace context on the events it is given
/// ([`BufferedProducerOptions::with_opentelemetry`](crate::BufferedProducerOptions::with_opentelemetry)).
///
/// By default the global meter and tracer providers (`opentelemetry::global`) are used, as
/// they are when the producer is built, and events are left as they are.
///
/// ```
/// use eventhubs_buffered::{BufferedProducerOptions, OpenTelemetryOptions};
///
/// let options = BufferedProducerOptions::default().with_opentelemetry(
///     OpenTelemetryOptions::default().with_trace_context_propagation(true),
/// );
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct OpenTelemetryOptions {
    meter: Option<Meter>,
    tracer: Option<Arc<BoxedTracer>>,
    propagate_trace_context: bool,
}

impl std::fmt::Debug for OpenTelemetryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenTelemetryOptions")
            .field(
                "meter",
                &if self.meter.is_some() {
                    "given"
                } else {
                    "global"
                },
            )
            .field(
                "tracer",
                &if self.tracer.is_some() {
                    "given"
                } else {
                    "global"
                },
            )
            .field("propagate_trace_context", &self.propagate_trace_context)
            .finish()
    }
}

impl OpenTelemetryOptions {
    /// Records the metrics through `provider` rather than the global meter provider.
    pub fn with_meter_provider<P: MeterProvider + ?Sized>(mut self, provider: &P) -> Self {
        self.meter = Some(provider.meter_with_scope(scope()));
        self
    }

    /// Starts the spans through `provider` rather than the global tracer provider.
    pub fn with_tracer_provider<P: ObjectSafeTracerProvider + ?Sized>(
        mut self,
        provider: &P,
    ) -> Self {
        self.tracer = Some(Arc::new(BoxedTracer::new(provider.boxed_tracer(scope()))));
        self
    }

    /// Puts the trace context of the span an event is enqueued in on the event, as the
    /// application properties `Diagnostic-Id` and `traceparent` (an event that has either
    /// already keeps its own). Costs a look at the current context and, inside a span, a
    /// 55-byte property per event. Default: false.
    ///
    /// The span is OpenTelemetry's current context (`opentelemetry::Context::current()`, as
    /// `FutureExt::with_context` or a `ContextGuard` set it). Applications that make their
    /// spans with `tracing` and bridge them with `tracing-opentelemetry` attach the span's
    /// context around the enqueue:
    /// `producer.enqueue_event(event, options).with_context(tracing::Span::current().context())`.
    pub fn with_trace_context_propagation(mut self, propagate: bool) -> Self {
        self.propagate_trace_context = propagate;
        self
    }

    /// Whether enqueued events get the trace context.
    pub fn propagates_trace_context(&self) -> bool {
        self.propagate_trace_context
    }
}

/// The instruments and tracer of one producer, with the attributes all its records share.
pub(crate) struct Instruments {
    sent_messages: Counter<u64>,
    operation_duration: Histogram<f64>,
    tracer: Arc<BoxedTracer>,
    /// `messaging.system`, `messaging.destination.name`, `server.address`.
    common: Vec<KeyValue>,
    hub: String,
    propagate: bool,
}

impl Instruments {
    pub(crate) fn new(options: &OpenTelemetryOptions, namespace: &str, hub: &str) -> Self {
        let meter = options
            .meter
            .clone()
            .unwrap_or_else(|| opentelemetry::global::meter_with_scope(scope()));
        let tracer = options
            .tracer
            .clone()
            .unwrap_or_else(|| Arc::new(opentelemetry::global::tracer_with_scope(scope())));
        Self {
            sent_messages: meter
                .u64_counter("messaging.client.sent.messages")
                .with_unit("{message}")
                .with_description("Number of messages producer attempted to send to the broker.")
                .build(),
            operation_duration: meter
                .f64_histogram("messaging.client.operation.duration")
                .with_unit("s")
                .with_description(
                    "Duration of messaging operation initiated by a producer or consumer client.",
                )
                .with_boundaries(DURATION_BOUNDARIES.to_vec())
                .build(),
            tracer,
            common: vec![
                KeyValue::new("messaging.system", "eventhubs"),
                KeyValue::new("messaging.destination.name", hub.to_string()),
                KeyValue::new("server.address", namespace.to_string()),
            ],
            hub: hub.to_string(),
            propagate: options.propagate_trace_context,
        }
    }

    /// What the records of `partition_id`'s sends carry.
    pub(crate) fn for_partition(self: &Arc<Self>, partition_id: &str) -> PartitionInstruments {
        let mut attributes = self.common.clone();
        attributes.extend([
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new(
                "messaging.destination.partition.id",
                partition_id.to_string(),
            ),
        ]);
        PartitionInstruments {
            instruments: self.clone(),
            attributes: attributes.into(),
        }
    }

    /// Puts the current span's trace context on `event` (when propagation is on, the span
    /// is valid, and the event carries none yet).
    pub(crate) fn stamp(&self, event: &mut EventData) {
        if !self.propagate
            || event.property(trace_context::DIAGNOSTIC_ID).is_some()
            || event.property(trace_context::TRACEPARENT).is_some()
        {
            return;
        }
        let context = Context::current();
        let Some(value) = trace_context::format(context.span().span_context()) else {
            return;
        };
        event.set_property(trace_context::DIAGNOSTIC_ID, value.clone());
        event.set_property(trace_context::TRACEPARENT, value);
    }

    /// Starts the span of a producer-wide operation (`flush`, `close`), as a child of the
    /// current context.
    pub(crate) fn start_operation(&self, operation: &'static str) -> Context {
        let mut attributes = self.common.clone();
        attributes.push(KeyValue::new("messaging.operation.name", operation));
        let span = self
            .tracer
            .span_builder(format!("{operation} {}", self.hub))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start(&*self.tracer);
        Context::current_with_span(span)
    }
}

/// Ends the span of `context` with the outcome of its operation.
pub(crate) fn end_span(context: &Context, error: Option<&Error>) {
    let span = context.span();
    if let Some(error) = error {
        span.set_attribute(KeyValue::new("error.type", error.kind().as_str()));
        span.set_status(Status::error(error.to_string()));
    }
    span.end();
}

/// The instruments as one partition's sends use them.
pub(crate) struct PartitionInstruments {
    instruments: Arc<Instruments>,
    attributes: Arc<[KeyValue]>,
}

/// A batch send being traced and measured.
pub(crate) struct SendRecord {
    instruments: Arc<Instruments>,
    attributes: Arc<[KeyValue]>,
    events: u64,
    started: Instant,
    /// The send span, as the send's context (retries add their events to it).
    pub context: Context,
}

impl PartitionInstruments {
    /// Starts the span of a batch send of `count` events, linked to the trace contexts the
    /// events carry.
    pub(crate) fn start_send<'e>(
        &self,
        events: impl Iterator<Item = &'e EventData>,
        count: usize,
    ) -> SendRecord {
        let links: Vec<Link> = events
            .filter_map(|event| match event.property(trace_context::DIAGNOSTIC_ID) {
                Some(PropertyValue::String(value)) => trace_context::parse(value),
                _ => None,
            })
            .map(Link::with_context)
            .collect();
        let mut attributes = self.attributes.to_vec();
        attributes.push(KeyValue::new(
            "messaging.batch.message_count",
            i64::try_from(count).unwrap_or(i64::MAX),
        ));
        let tracer = &self.instruments.tracer;
        let span = tracer
            .span_builder(format!("send {}", self.instruments.hub))
            .with_kind(SpanKind::Producer)
            .with_attributes(attributes)
            .with_links(links)
            .start(&**tracer);
        SendRecord {
            instruments: self.instruments.clone(),
            attributes: self.attributes.clone(),
            events: count as u64,
            started: Instant::now(),
            context: Context::current_with_span(span),
        }
    }
}

impl SendRecord {
    /// The send ended: records the metrics and ends the span.
    pub(crate) fn end(self, error: Option<&Error>) {
        let took = self.started.elapsed().as_secs_f64();
        let attributes: Cow<'_, [KeyValue]> = match error {
            None => Cow::Borrowed(&self.attributes),
            Some(error) => {
                let mut with_error = self.attributes.to_vec();
                with_error.push(KeyValue::new("error.type", error.kind().as_str()));
                Cow::Owned(with_error)
            }
        };
        self.instruments.sent_messages.add(self.events, &attributes);
        self.instruments
            .operation_duration
            .record(took, &attributes);
        end_span(&self.context, error);
    }
}

/// A try of the send running in this context failed and is tried again: an event on its span.
pub(crate) fn retrying(try_number: u32, error: &Error) {
    opentelemetry::trace::get_active_span(|span| {
        span.add_event(
            "retry",
            vec![
                KeyValue::new("try_number", i64::from(try_number)),
                KeyValue::new("error.type", error.kind().as_str()),
            ],
        );
    });
}
