//! A handler that records every call, in the order the calls happened, and what the tests ask
//! of them: outcomes per event, with partitions and error kinds, and exactly-once checks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use eventhubs_buffered::{
    BufferedProducerHandler, ErrorKind, EventData, SendFailedContext, SendSucceededContext,
};

/// One handler call: the partition, the bodies in order, and the failure if it was one.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub partition: String,
    pub bodies: Vec<String>,
    pub error: Option<ErrorKind>,
    pub message: Option<String>,
    /// For a failure: whether its error said the events may have been published.
    pub may_have_been_published: bool,
}

/// What a failure handler call is told, as recorded.
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
    pub may_have_been_published: bool,
}

/// Records every handler call, in the order the calls happened.
#[derive(Clone, Default)]
pub struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
}

pub fn body_text(event: &EventData) -> String {
    String::from_utf8(event.body().to_vec()).expect("utf8 body")
}

impl BufferedProducerHandler for Recorder {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        self.record(&context.partition_id, context.event_data(), None);
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        let failure = Failure {
            kind: context.error.kind(),
            message: context.error.to_string(),
            may_have_been_published: context.error.may_have_been_published(),
        };
        self.record(&context.partition_id, context.event_data(), Some(failure));
    }
}

impl Recorder {
    pub fn record<'a>(
        &self,
        partition: &str,
        events: impl IntoIterator<Item = &'a EventData>,
        failure: Option<Failure>,
    ) {
        let (error, message, may_have_been_published) = match failure {
            Some(f) => (Some(f.kind), Some(f.message), f.may_have_been_published),
            None => (None, None, false),
        };
        self.calls.lock().unwrap().push(Call {
            partition: partition.to_string(),
            bodies: events.into_iter().map(body_text).collect(),
            error,
            message,
            may_have_been_published,
        });
    }

    /// The bodies of every failed event whose error said it may have been published.
    pub fn maybe_published(&self) -> HashSet<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.may_have_been_published)
            .flat_map(|c| c.bodies)
            .collect()
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

    /// Every published body with the partition it was published to.
    pub fn succeeded_in(&self) -> Vec<(String, String)> {
        self.outcomes()
            .into_iter()
            .filter(|(_, _, e)| e.is_none())
            .map(|(b, p, _)| (b, p))
            .collect()
    }

    /// Every failed body with its partition and error kind.
    pub fn failed_in(&self) -> Vec<(String, String, ErrorKind)> {
        self.outcomes()
            .into_iter()
            .filter_map(|(b, p, e)| e.map(|e| (b, p, e)))
            .collect()
    }

    /// Panics unless no event was reported twice.
    pub fn assert_each_reported_once(&self) {
        let mut seen = HashSet::new();
        for (body, _, _) in self.outcomes() {
            assert!(seen.insert(body.clone()), "{body} was reported twice");
        }
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
