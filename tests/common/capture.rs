//! Capturing what a test logs: a `tracing` subscriber and a `log` logger that write every
//! event, span field and record, at every level, as lines of text.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span;

pub struct Capture {
    out: Arc<Mutex<String>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Capture {
    /// A subscriber that appends every line to `out`.
    pub fn new(out: Arc<Mutex<String>>) -> Self {
        Self {
            out,
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, attributes: &span::Attributes<'_>) -> span::Id {
        let mut line = format!(
            "SPAN {} {}",
            attributes.metadata().target(),
            attributes.metadata().name()
        );
        attributes.record(&mut Fields(&mut line));
        line.push('\n');
        self.out.lock().unwrap().push_str(&line);
        span::Id::from_u64(
            self.next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn record(&self, _: &span::Id, values: &span::Record<'_>) {
        let mut line = "SPAN-RECORD".to_string();
        values.record(&mut Fields(&mut line));
        line.push('\n');
        self.out.lock().unwrap().push_str(&line);
    }

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!("{} {}", event.metadata().level(), event.metadata().target());
        event.record(&mut Fields(&mut line));
        line.push('\n');
        self.out.lock().unwrap().push_str(&line);
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

pub struct LogCapture {
    pub out: Arc<Mutex<String>>,
}

impl log::Log for LogCapture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!(
            "LOG {} {} {}\n",
            record.level(),
            record.target(),
            record.args()
        );
        self.out.lock().unwrap().push_str(&line);
    }

    fn flush(&self) {}
}
