//! Batches and sends: a batch for a target, sent as one delivery under the retry policy,
//! with whatever a failed try broke rebuilt before the next.

use crate::amqp::sender::{Payload, Uncertainty};
use crate::batch::{batch_target, BatchTarget, CreateBatchOptions, EventDataBatch};
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;

use super::{ProducerClient, SendEventOptions};

/// The smallest batch worth making: an envelope and one tiny event.
const MIN_BATCH_SIZE: u64 = 24;

impl ProducerClient {
    /// A new, empty batch. Attaches the link for its target to learn the service's limit.
    pub async fn create_batch(&self, options: CreateBatchOptions) -> Result<EventDataBatch> {
        let target = options.target()?;
        let link_max = self.max_message_size(&self.path_for(&target)).await?;
        let max = match options.max_size_in_bytes {
            Some(requested) if requested > link_max => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                    "max_size_in_bytes {requested} is above the link's limit of {link_max} bytes"
                ),
                ))
            }
            Some(requested) if requested < MIN_BATCH_SIZE => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                    "max_size_in_bytes {requested} is below the minimum of {MIN_BATCH_SIZE} bytes"
                ),
                ))
            }
            Some(requested) => requested,
            None => link_max,
        };
        Ok(EventDataBatch::new(
            target,
            usize::try_from(max).unwrap_or(usize::MAX),
        ))
    }

    /// Sends a batch; returns once the service accepted it, or with the error that ended the
    /// retries. An empty batch is sent as nothing.
    pub async fn send_batch(&self, batch: EventDataBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (target, mut encoded, _events) = batch.into_parts();
        self.send_encoded(&target, &mut encoded).await
    }

    /// Sends pre-encoded events as one delivery to `target`; `encoded` holds them again
    /// afterwards, for their buffers to be reused.
    pub(crate) async fn send_encoded(
        &self,
        target: &BatchTarget,
        encoded: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        let key = match target {
            BatchTarget::PartitionKey(key) => Some(key.as_str()),
            _ => None,
        };
        let payload = Payload::batch(key, std::mem::take(encoded));
        let result = self.send_payload(&self.path_for(target), &payload).await;
        *encoded = payload.into_encoded();
        result
    }

    /// Sends a payload to `path` under the retry policy, rebuilding whatever a failed try broke.
    ///
    /// When the send fails for good, its error says whether the batch may have been stored
    /// ([`Error::may_have_been_published`]): true as soon as any try handed the delivery to the
    /// connection and never heard a definite outcome (its connection was lost, its link
    /// detached, or the try timed out), whatever the last try's error is.
    pub(super) async fn send_payload(&self, path: &str, payload: &Payload) -> Result<()> {
        let uncertain = Uncertainty::default();
        let span = tracing::info_span!(
            "send",
            eventhub = %self.inner.eventhub,
            path = %path,
            attempt = tracing::field::Empty
        );
        let send = self.inner.retry.run("send", |attempt| {
            tracing::Span::current().record("attempt", attempt);
            let uncertain = &uncertain;
            async move {
                let sender = self.sender(path).await.map_err(|f| f.error)?;
                let generation = sender.generation();
                let is_lost = || self.inner.connection.is_generation_lost(generation);
                match sender.send(payload, is_lost, uncertain).await {
                    Ok(()) => Ok(()),
                    Err(failure) => {
                        self.forget(path, &sender, failure.broken).await;
                        Err(failure.error)
                    }
                }
            }
        });
        let result = tracing::Instrument::instrument(send, span).await;
        result.map_err(|error| {
            let error = self.inner.connection.explain_unauthorized(error);
            match uncertain.any() {
                true => error.may_have_reached_the_service(),
                false => error,
            }
        })
    }

    /// Sends `events` as one batch (all or nothing). Events that do not fit in one batch are
    /// an error of kind [`ErrorKind::MessageTooLarge`]; nothing is sent then.
    pub async fn send_events(
        &self,
        events: Vec<EventData>,
        options: SendEventOptions,
    ) -> Result<()> {
        let target = batch_target(
            options.partition_id.as_deref(),
            options.partition_key.as_deref(),
        )?;
        let batch_options = CreateBatchOptions {
            partition_id: options.partition_id,
            partition_key: match target {
                BatchTarget::PartitionKey(ref key) => Some(key.clone()),
                _ => None,
            },
            max_size_in_bytes: None,
        };
        let mut batch = self.create_batch(batch_options).await?;
        let count = events.len();
        for event in events {
            if let Err(e) = batch.try_add(event) {
                if e.is_too_large_for_any_batch() {
                    return Err(e.to_error());
                }
                return Err(Error::new(
                    ErrorKind::MessageTooLarge,
                    format!(
                        "{count} events do not fit in one batch of {} bytes; send them in several batches",
                        batch.max_size_in_bytes()
                    ),
                ));
            }
        }
        self.send_batch(batch).await
    }
}
