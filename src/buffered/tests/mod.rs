//! Unit tests of the buffered producer's logic over a mock sender, on tokio's paused clock so
//! that delays are asserted exactly. Protocol behaviour is tested against the emulator in
//! the integration tests (tests/buffered_*.rs). This file holds the mock and the helpers;
//! the tests are grouped by concern in the files beside it.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::sender::BatchSender;
use super::{
    BufferedProducerClient, BufferedProducerHandler, BufferedProducerOptions, EnqueueOptions,
    SendFailedContext, SendSucceededContext,
};
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;
use crate::idempotence::PublishedSequenceNumbers;

mod back_pressure;
mod batching;
mod handlers;
mod routing;
mod shutdown;

#[derive(Debug, Clone)]
struct Sent {
    partition: String,
    bodies: Vec<String>,
    at: Instant,
}

#[derive(Default)]
struct MockState {
    sent: Vec<Sent>,
    failures: VecDeque<ErrorKind>,
    hanging: HashSet<String>,
}

/// Four partitions; sends take `delay`, may fail from a queue of kinds, and may hang per
/// partition. Records what was sent and when.
struct MockSender {
    partitions: Vec<String>,
    max_size: usize,
    delay: Duration,
    state: Mutex<MockState>,
    init_error: Option<ErrorKind>,
}

impl MockSender {
    fn new(max_size: usize, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            partitions: (0..4).map(|i| i.to_string()).collect(),
            max_size,
            delay,
            state: Mutex::new(MockState::default()),
            init_error: None,
        })
    }

    fn sent(&self) -> Vec<Sent> {
        self.state.lock().unwrap().sent.clone()
    }

    fn fail_next(&self, kind: ErrorKind) {
        self.state.lock().unwrap().failures.push_back(kind);
    }

    fn hang(&self, partition: &str) {
        self.state
            .lock()
            .unwrap()
            .hanging
            .insert(partition.to_string());
    }
}

fn body_of(encoded: &[u8]) -> String {
    let message = serde_amqp::from_slice::<
        fe2o3_amqp_types::messaging::message::__private::Deserializable<
            fe2o3_amqp_types::messaging::Message<
                fe2o3_amqp_types::messaging::Body<serde_amqp::Value>,
            >,
        >,
    >(encoded)
    .expect("decodes")
    .0;
    match message.body {
        fe2o3_amqp_types::messaging::Body::Data(batch) => {
            String::from_utf8(batch.iter().flat_map(|d| d.0.to_vec()).collect()).expect("utf8")
        }
        other => panic!("unexpected body {other:?}"),
    }
}

#[async_trait]
impl BatchSender for MockSender {
    async fn partition_ids(&self) -> Result<Vec<String>> {
        match self.init_error {
            Some(kind) => Err(Error::new(kind, "mock refuses")),
            None => Ok(self.partitions.clone()),
        }
    }

    async fn max_batch_size(&self, _partition_id: &str) -> Result<usize> {
        Ok(self.max_size)
    }

    async fn send(
        &self,
        partition_id: &str,
        encoded: &mut Vec<Vec<u8>>,
    ) -> Result<Option<PublishedSequenceNumbers>> {
        let hang = {
            let mut state = self.state.lock().unwrap();
            state.sent.push(Sent {
                partition: partition_id.to_string(),
                bodies: encoded.iter().map(|e| body_of(e)).collect(),
                at: Instant::now(),
            });
            state.hanging.contains(partition_id)
        };
        if hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.delay).await;
        match self.state.lock().unwrap().failures.pop_front() {
            Some(kind) => Err(Error::new(kind, "mock failure")),
            None => Ok(None),
        }
    }

    async fn close(&self) {}
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(String, Vec<String>),
    Failed(String, Vec<String>, ErrorKind),
}

type Outcomes = Arc<Mutex<Vec<Outcome>>>;

fn bodies<'a>(events: impl IntoIterator<Item = &'a EventData>) -> Vec<String> {
    events
        .into_iter()
        .map(|e| String::from_utf8(e.body().to_vec()).unwrap_or_default())
        .collect()
}

struct Recorder(Outcomes);

impl BufferedProducerHandler for Recorder {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        self.0.lock().unwrap().push(Outcome::Ok(
            context.partition_id.clone(),
            bodies(context.event_data()),
        ));
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        self.0.lock().unwrap().push(Outcome::Failed(
            context.partition_id.clone(),
            bodies(context.event_data()),
            context.error.kind(),
        ));
    }
}

fn producer(
    sender: Arc<MockSender>,
    options: BufferedProducerOptions,
) -> (BufferedProducerClient, Outcomes) {
    let outcomes = Outcomes::default();
    let client = BufferedProducerClient::from_parts(
        options,
        None,
        sender,
        Arc::new(Recorder(outcomes.clone())),
    );
    (client, outcomes)
}

fn to(partition: &str) -> EnqueueOptions {
    EnqueueOptions::default().with_partition_id(partition)
}

fn event(body: &str) -> EventData {
    EventData::from(body)
}

fn handled(outcomes: &Outcomes) -> usize {
    outcomes
        .lock()
        .unwrap()
        .iter()
        .map(|o| match o {
            Outcome::Ok(_, b) | Outcome::Failed(_, b, _) => b.len(),
        })
        .sum()
}

async fn settle() {
    // Let spawned tasks run without moving the paused clock.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}
