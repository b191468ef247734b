//! The narrow interface the buffered producer needs from the connection layer, so its logic
//! can be tested on its own.

use async_trait::async_trait;

use crate::batch::BatchTarget;
use crate::error::Result;
use crate::idempotence::PublishedSequenceNumbers;
use crate::producer::ProducerClient;

/// Sends batches to partitions; implemented by [`ProducerClient`].
#[async_trait]
pub(crate) trait BatchSender: Send + Sync + 'static {
    /// The partition ids, in the service's order.
    async fn partition_ids(&self) -> Result<Vec<String>>;
    /// The largest batch the partition's link takes, in bytes.
    async fn max_batch_size(&self, partition_id: &str) -> Result<usize>;
    /// Sends pre-encoded events as one batch to the partition, retries included; says where
    /// they were published when the producer is idempotent. `encoded` holds the events again
    /// afterwards (or nothing), for their buffers to be reused.
    async fn send(
        &self,
        partition_id: &str,
        encoded: &mut Vec<Vec<u8>>,
    ) -> Result<Option<PublishedSequenceNumbers>>;
    /// Closes the connection.
    async fn close(&self);
    /// Times the connection was opened again after the first (for the metrics).
    fn reconnects(&self) -> u64 {
        0
    }
}

#[async_trait]
impl BatchSender for ProducerClient {
    async fn partition_ids(&self) -> Result<Vec<String>> {
        ProducerClient::partition_ids(self).await
    }

    async fn max_batch_size(&self, partition_id: &str) -> Result<usize> {
        let path = format!("{}/Partitions/{partition_id}", self.eventhub_name());
        let size = self.max_message_size(&path).await?;
        Ok(usize::try_from(size).unwrap_or(usize::MAX))
    }

    async fn send(
        &self,
        partition_id: &str,
        encoded: &mut Vec<Vec<u8>>,
    ) -> Result<Option<PublishedSequenceNumbers>> {
        if self.idempotent_partitions() {
            return self.send_idempotent(partition_id, encoded).await.map(Some);
        }
        self.send_encoded(&BatchTarget::Partition(partition_id.to_string()), encoded)
            .await
            .map(|()| None)
    }

    async fn close(&self) {
        ProducerClient::close(self).await;
    }

    fn reconnects(&self) -> u64 {
        ProducerClient::reconnects(self)
    }
}

/// A [`ProducerClient`] the application shares with a buffered producer: it sends as the
/// client does, but closing the buffered producer leaves the connection to the application.
pub(crate) struct SharedProducer(pub ProducerClient);

#[async_trait]
impl BatchSender for SharedProducer {
    async fn partition_ids(&self) -> Result<Vec<String>> {
        BatchSender::partition_ids(&self.0).await
    }

    async fn max_batch_size(&self, partition_id: &str) -> Result<usize> {
        BatchSender::max_batch_size(&self.0, partition_id).await
    }

    async fn send(
        &self,
        partition_id: &str,
        encoded: &mut Vec<Vec<u8>>,
    ) -> Result<Option<PublishedSequenceNumbers>> {
        BatchSender::send(&self.0, partition_id, encoded).await
    }

    /// The application closes its client.
    async fn close(&self) {}

    fn reconnects(&self) -> u64 {
        self.0.reconnects()
    }
}
