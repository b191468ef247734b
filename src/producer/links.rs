//! The sending link of each entity path: attached on first use (as an idempotent producer for
//! partitions when asked), shared by sends, and forgotten when a failure broke it or its
//! connection.

use std::sync::Arc;
use std::time::Duration;

use crate::amqp::connection::SenderProperties;
use crate::amqp::errors::{Broken, Failure};
use crate::amqp::sender::AmqpSender;
use crate::batch::BatchTarget;
use crate::error::Result;
use crate::idempotence::PartitionPublishing;

use super::ProducerClient;

/// Used when a link announces no max-message-size (the service always does).
const FALLBACK_MAX_MESSAGE_SIZE: u64 = 1024 * 1024;

impl ProducerClient {
    pub(super) fn path_for(&self, target: &BatchTarget) -> String {
        match target {
            BatchTarget::Partition(id) => format!("{}/Partitions/{id}", self.inner.eventhub),
            _ => self.inner.eventhub.clone(),
        }
    }

    pub(super) fn partition_path(&self, partition_id: &str) -> String {
        format!("{}/Partitions/{partition_id}", self.inner.eventhub)
    }

    /// Runs `f` on the idempotent publishing state of the link to `path`.
    pub(super) fn publishing<T>(
        &self,
        path: &str,
        f: impl FnOnce(&mut PartitionPublishing) -> T,
    ) -> T {
        let mut states = self
            .inner
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(states.entry(path.to_string()).or_default())
    }

    /// How a link to `path` attaches: as an idempotent producer for partitions when asked.
    pub(super) fn sender_properties(&self, path: &str) -> SenderProperties {
        let idempotent = self.inner.idempotent_partitions && path.contains("/Partitions/");
        SenderProperties {
            idempotent: idempotent.then(|| self.publishing(path, |p| p.request())),
        }
    }

    /// The link to `path`, attached now if there is none.
    pub(super) async fn sender(&self, path: &str) -> std::result::Result<Arc<AmqpSender>, Failure> {
        let mut senders = self.inner.senders.lock().await;
        if let Some(sender) = senders.get(path) {
            return Ok(sender.clone());
        }
        let properties = self.sender_properties(path);
        let sender = Arc::new(
            self.inner
                .connection
                .attach_sender(path, properties)
                .await?,
        );
        if let Some(grant) = sender.publishing_grant() {
            self.publishing(path, |p| p.granted(grant));
        }
        senders.insert(path.to_string(), sender.clone());
        Ok(sender)
    }

    /// Drops the link to `path`, so the next use attaches a new one.
    pub(super) async fn detach(&self, path: &str) {
        let removed = self.inner.senders.lock().await.remove(path);
        if let Some(sender) = removed.and_then(|s| Arc::try_unwrap(s).ok()) {
            // Closing tells the service the link is gone; a dead peer must not hold us up.
            let _ = tokio::time::timeout(Duration::from_secs(5), sender.close()).await;
        }
    }

    /// Forgets what a failure broke, so the next try rebuilds it.
    pub(super) async fn forget(&self, path: &str, sender: &Arc<AmqpSender>, broken: Broken) {
        match broken {
            Broken::Nothing => {}
            Broken::Link => {
                let mut senders = self.inner.senders.lock().await;
                if senders.get(path).is_some_and(|s| Arc::ptr_eq(s, sender)) {
                    senders.remove(path);
                }
            }
            Broken::Connection => {
                self.inner
                    .senders
                    .lock()
                    .await
                    .retain(|_, s| s.generation() != sender.generation());
                self.inner.connection.invalidate(sender.generation()).await;
            }
        }
    }

    /// The max-message-size of the link to `path`, attaching it if needed.
    pub(crate) async fn max_message_size(&self, path: &str) -> Result<u64> {
        let sender = self.with_retries("attach", || self.sender(path)).await?;
        Ok(sender
            .max_message_size()
            .unwrap_or(FALLBACK_MAX_MESSAGE_SIZE))
    }
}
