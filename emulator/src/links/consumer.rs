//! Links from consumers: stored events from the requested position, then live ones, as the
//! client's credit allows.

use std::sync::Arc;

use fe2o3_amqp::acceptor::{LinkAcceptor, LinkEndpoint, ListenerSessionHandle};
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    Annotations, Body, DeliveryAnnotations, Message, MessageAnnotations,
};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{Symbol, Timestamp, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::context::{amqp_error, check_authorization, sleep_until_some, LinkContext, LinkRefusal};
use super::filter::{parse_start_position, StartPosition};
use crate::entities::store::{decode_message, Partition, StoredEvent};

const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
const EPOCH: &str = "com.microsoft:epoch";
const RUNTIME_METRIC: &str = "com.microsoft:enable-receiver-runtime-metric";
const LINK_STOLEN: &str = "amqp:link:stolen";
/// Events read from the log per turn; each still waits for the client's credit.
const READ_CHUNK: usize = 128;

type AttachResult = Result<(), (Attach, LinkRefusal)>;

/// Accepts a consumer link on `<hub>/ConsumerGroups/<cg>/Partitions/<id>`.
pub(crate) async fn accept(
    session: &mut ListenerSessionHandle,
    attach: Attach,
    ctx: &LinkContext,
    address: &str,
    hub_name: String,
    consumer_group: String,
    partition_id: String,
) -> AttachResult {
    let checked = check(
        ctx,
        &attach,
        address,
        &hub_name,
        &consumer_group,
        &partition_id,
    );
    let (partition, start, epoch, authorized_until) = match checked {
        Ok(v) => v,
        Err(refusal) => return Err((attach, refusal)),
    };
    let key = (
        hub_name.to_ascii_lowercase(),
        consumer_group.to_ascii_lowercase(),
        partition_id.clone(),
    );
    let (registration, kicked) = match ctx.ns.register_consumer(key.clone(), epoch) {
        Ok(r) => r,
        Err(_) => {
            let why = "A receiver with a higher epoch is connected to this partition.";
            return Err((attach, LinkRefusal::new(LINK_STOLEN, why)));
        }
    };
    let metric = wants_runtime_metric(&attach);
    // The start is fixed before the attach is answered: `@latest` means events sent after the
    // client sees its link attached, not after the link task first runs.
    let cursor = start_index(&partition, &start);
    let mut acceptor = LinkAcceptor::builder().properties(ctx.answer_properties());
    if metric {
        acceptor = acceptor.add_offered_capabilities(Symbol::from(RUNTIME_METRIC));
    }
    let sender = match acceptor
        .build()
        .accept_incoming_attach(attach, session)
        .await
    {
        Ok(LinkEndpoint::Sender(s)) => s,
        Ok(LinkEndpoint::Receiver(r)) => {
            let _ = r.close().await;
            ctx.ns.unregister_consumer(&key, registration);
            return Ok(());
        }
        Err(e) => {
            tracing::debug!(error = %e, "consumer link attach failed");
            ctx.ns.unregister_consumer(&key, registration);
            return Ok(());
        }
    };
    let link = ConsumerLink {
        ctx: ctx.clone(),
        address: address.to_string(),
        partition,
        metric,
    };
    let ns = ctx.ns.clone();
    tokio::spawn(async move {
        link.run(sender, cursor, kicked, authorized_until).await;
        ns.unregister_consumer(&key, registration);
    });
    Ok(())
}

type Checked = (Arc<Partition>, StartPosition, Option<i64>, Option<Instant>);

/// Whether a consumer may attach, and where it starts reading.
pub(crate) fn check(
    ctx: &LinkContext,
    attach: &Attach,
    address: &str,
    hub_name: &str,
    consumer_group: &str,
    partition_id: &str,
) -> Result<Checked, LinkRefusal> {
    let hub = ctx
        .ns
        .hub(hub_name)
        .ok_or_else(|| LinkRefusal::not_found(hub_name))?;
    if !ctx.ns.is_consumer_group(hub_name, consumer_group) {
        return Err(LinkRefusal::not_found(&format!(
            "{hub_name}/ConsumerGroups/{consumer_group}"
        )));
    }
    let partition = hub.partition(partition_id).ok_or_else(|| {
        LinkRefusal::new(
            "com.microsoft:argument-out-of-range",
            format!(
                "The specified partition '{partition_id}' is invalid for event hub '{hub_name}'."
            ),
        )
    })?;
    let authorized_until = check_authorization(ctx, address)?;
    let start = match selector(attach) {
        Some(expr) => parse_start_position(&expr).map_err(|e| {
            LinkRefusal::new(
                "com.microsoft:argument-error",
                format!("bad filter '{expr}': {e}"),
            )
        })?,
        None => StartPosition::Earliest,
    };
    let epoch = match attach
        .properties
        .as_ref()
        .and_then(|p| p.get(&Symbol::from(EPOCH)))
    {
        Some(Value::Long(e)) => Some(*e),
        Some(Value::Int(e)) => Some(i64::from(*e)),
        _ => None,
    };
    Ok((partition, start, epoch, authorized_until))
}

/// The selector filter's expression, whatever descriptor the client gave it.
fn selector(attach: &Attach) -> Option<String> {
    let filters = attach.source.as_ref()?.filter.as_ref()?;
    let value = filters.get(&Symbol::from(SELECTOR_FILTER))?;
    match value {
        Value::Described(described) => match &described.value {
            Value::String(s) => Some(s.clone()),
            _ => None,
        },
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn wants_runtime_metric(attach: &Attach) -> bool {
    attach
        .desired_capabilities
        .as_ref()
        .is_some_and(|caps| caps.0.iter().any(|c| c.as_str() == RUNTIME_METRIC))
}

/// Sequence number of the first event to deliver.
pub(crate) fn start_index(partition: &Partition, start: &StartPosition) -> u64 {
    match *start {
        StartPosition::Earliest => 0,
        StartPosition::Latest => partition.len() as u64,
        StartPosition::Offset { offset, inclusive } => {
            partition.position_after(|e| e.offset, offset, inclusive)
        }
        StartPosition::SequenceNumber {
            sequence_number,
            inclusive,
        } => partition.position_after(|e| e.sequence_number, sequence_number, inclusive),
        StartPosition::EnqueuedTime {
            unix_millis,
            inclusive,
        } => partition.position_after(|e| e.enqueued_time_ms, unix_millis, inclusive),
    }
}

struct ConsumerLink {
    ctx: LinkContext,
    address: String,
    partition: Arc<Partition>,
    metric: bool,
}

/// Why a consumer link stops.
enum Stop {
    Stolen,
    Unauthorized,
    Gone,
}

impl ConsumerLink {
    async fn run(
        &self,
        mut sender: Sender,
        mut cursor: u64,
        mut kicked: watch::Receiver<bool>,
        mut authorized_until: Option<Instant>,
    ) {
        let mut appended = self.partition.subscribe();
        let stop = loop {
            let events = self.partition.read(cursor, READ_CHUNK);
            if events.is_empty() {
                let expiry = authorized_until;
                tokio::select! {
                    changed = appended.changed() => if changed.is_err() { break Stop::Gone },
                    _ = kicked.changed() => break Stop::Stolen,
                    _ = sender.on_detach() => break Stop::Gone,
                    _ = sleep_until_some(expiry) => {
                        authorized_until = self.ctx.conn.authorized_until(&self.address);
                        if authorized_until.is_none() { break Stop::Unauthorized }
                    }
                }
                continue;
            }
            if *kicked.borrow() {
                break Stop::Stolen;
            }
            let mut failed = false;
            for event in &events {
                let Some(message) = self.delivered_message(event) else {
                    continue;
                };
                // Sending waits for credit; the outcome is not awaited (consumers settle freely).
                if sender.send_batchable(message).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed {
                break Stop::Gone;
            }
            if let Some(last) = events.last() {
                cursor = u64::try_from(last.sequence_number).unwrap_or(0) + 1;
            }
        };
        let error = match stop {
            Stop::Gone => {
                let _ = sender.close().await;
                return;
            }
            Stop::Stolen => amqp_error(
                LINK_STOLEN,
                "A receiver with a higher epoch took this partition.",
            ),
            Stop::Unauthorized => amqp_error(
                "amqp:unauthorized-access",
                "The token authorizing this link expired.",
            ),
        };
        let _ = sender.close_with_error(error).await;
    }

    /// The stored event as delivered: the service's annotations added to the message.
    fn delivered_message(&self, event: &StoredEvent) -> Option<Message<Body<Value>>> {
        let mut message = match decode_message(&event.raw) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, sequence_number = event.sequence_number, "stored event does not decode");
                return None;
            }
        };
        let mut annotations: Annotations = message
            .message_annotations
            .take()
            .map(|a| a.0)
            .unwrap_or_default();
        annotate(
            &mut annotations,
            "x-opt-sequence-number",
            Value::Long(event.sequence_number),
        );
        annotate(
            &mut annotations,
            "x-opt-offset",
            Value::String(event.offset.to_string()),
        );
        annotate(
            &mut annotations,
            "x-opt-enqueued-time",
            Value::Timestamp(Timestamp::from_milliseconds(event.enqueued_time_ms)),
        );
        message.message_annotations = Some(MessageAnnotations(annotations));
        if self.metric {
            message.delivery_annotations = Some(self.runtime_metric());
        }
        Some(message)
    }

    fn runtime_metric(&self) -> DeliveryAnnotations {
        let s = self.partition.summary();
        let mut annotations = Annotations::new();
        annotate(
            &mut annotations,
            "last_enqueued_sequence_number",
            Value::Long(s.last_sequence_number),
        );
        annotate(
            &mut annotations,
            "last_enqueued_offset",
            Value::String(s.last_offset.to_string()),
        );
        annotate(
            &mut annotations,
            "last_enqueued_time_utc",
            Value::Timestamp(Timestamp::from_milliseconds(s.last_enqueued_time_ms)),
        );
        annotate(
            &mut annotations,
            "runtime_info_retrieval_time_utc",
            Value::Timestamp(Timestamp::from_milliseconds(
                crate::entities::store::now_millis(),
            )),
        );
        DeliveryAnnotations(annotations)
    }
}

fn annotate(annotations: &mut Annotations, key: &str, value: Value) {
    annotations.insert(OwnedKey::Symbol(Symbol::from(key)), value);
}

/// A stored event as a consumer link on `partition` would deliver it, for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) fn delivered_message(
    ctx: &LinkContext,
    partition: Arc<Partition>,
    event: &StoredEvent,
    metric: bool,
) -> Option<Message<Body<Value>>> {
    let link = ConsumerLink {
        ctx: ctx.clone(),
        address: String::new(),
        partition,
        metric,
    };
    link.delivered_message(event)
}
