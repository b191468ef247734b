//! Sends of an idempotent producer: each batch stamped with the next sequence numbers, the
//! same numbers on every try, and a batch that fails for good settled with the service
//! (fenced off with the next epoch; the service says whether it stored it).

use crate::amqp::message::{stamp_publishing, NotStampable};
use crate::amqp::sender::Payload;
use crate::error::{Error, ErrorKind, Result};
use crate::idempotence::{
    PartitionPublishing, PublishedSequenceNumbers, PublishingGrant, Settled, Stamp,
};

use super::ProducerClient;

impl ProducerClient {
    /// Sends events encoded for an idempotent producer (see [`encode_batch_event`]) to a
    /// partition: stamps them with the next sequence numbers, sends under the retry policy
    /// with the same numbers on every try, and settles a final failure with the service (see
    /// [`crate::idempotence`]). One send per partition at a time.
    ///
    /// [`encode_batch_event`]: crate::amqp::message::encode_batch_event
    pub(crate) async fn send_idempotent(
        &self,
        partition_id: &str,
        encoded: &mut Vec<Vec<u8>>,
    ) -> Result<PublishedSequenceNumbers> {
        let path = self.partition_path(partition_id);
        let _turn = PublishingTurn::take(self, &path)?;
        let stamp = self.next_stamp(&path, encoded.len()).await?;
        for (event, sequence_number) in encoded.iter_mut().zip(stamp.published().iter()) {
            stamp_publishing(event, stamp.producer_id, stamp.epoch, sequence_number).map_err(
                |NotStampable| {
                    Error::new(
                        ErrorKind::InvalidArgument,
                        "an event was not encoded for idempotent publishing",
                    )
                },
            )?;
        }
        let payload = Payload::batch(None, std::mem::take(encoded));
        let sent = self.send_payload(&path, &payload).await;
        *encoded = payload.into_encoded();
        match sent {
            Ok(()) => {
                self.publishing(&path, |p| p.commit(&stamp));
                Ok(stamp.published())
            }
            Err(error) => self.settle_failure(&path, &stamp, error).await,
        }
    }

    /// The numbers for the next batch of `count` events to `path`, attaching the link first
    /// when no attach has said where the sequence stands.
    pub(super) async fn next_stamp(&self, path: &str, count: usize) -> Result<Stamp> {
        for _ in 0..2 {
            self.with_retries("attach", || self.sender(path)).await?;
            if let Some(stamp) = self.publishing(path, |p| p.stamp(count)) {
                return Ok(stamp);
            }
            // A link attached before the state was fenced: attach again to learn it.
            self.detach(path).await;
        }
        Err(Error::new(
            ErrorKind::ServiceError,
            format!("the service did not say where the idempotent sequence of '{path}' stands"),
        ))
    }

    /// After a batch failed for good: fences it off by attaching with the next epoch and asks
    /// the service whether it stored the batch. Stored: a success after all. Not stored: its
    /// numbers go to the next batch. Unknown: the error says it may have been published.
    pub(super) async fn settle_failure(
        &self,
        path: &str,
        stamp: &Stamp,
        error: Error,
    ) -> Result<PublishedSequenceNumbers> {
        if error.kind() == ErrorKind::ProducerEpochStolen {
            // Another link holds the producer id with a newer epoch: start over with a new id.
            self.publishing(path, |p| p.forget_producer());
            self.detach(path).await;
            return Err(error);
        }
        self.publishing(path, |p| p.fence());
        self.detach(path).await;
        let grant = self.fencing_attach(path).await;
        match grant.map(|grant| PartitionPublishing::settle(stamp, &grant)) {
            Some(Settled::Published) => {
                tracing::info!(path, error = %error, "the service had stored the batch whose send failed");
                Ok(stamp.published())
            }
            Some(Settled::NotPublished) => Err(error.settled_as_not_published()),
            Some(Settled::Unknown) | None => Err(error.may_have_reached_the_service()),
        }
    }

    /// Attaches the link that fences a failed batch off and says whether the service stored it.
    /// Tried for as long as the retry policy lets one operation take
    /// ([`RetryOptions::bound`](crate::RetryOptions::bound)), across reconnects, and also
    /// after errors that end a send's retries at once (such as a refused token): while this
    /// attach fails, the outcome of the failed batch stays unknown, and a lost connection or a
    /// refusal can be short-lived. Tries that fail at once (a connection cut during its
    /// handshake) do not use the bound up in a few milliseconds: each waits the policy's delay.
    pub(super) async fn fencing_attach(&self, path: &str) -> Option<PublishingGrant> {
        let options = self.inner.retry.options().clone();
        let deadline = tokio::time::Instant::now() + options.bound();
        let mut try_number: u32 = 1;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let try_timeout = options.try_timeout.min(left);
            let error = match tokio::time::timeout(try_timeout, self.sender(path)).await {
                Ok(Ok(sender)) => return sender.publishing_grant(),
                Ok(Err(failure)) => failure.error,
                Err(_) => Error::new(ErrorKind::Timeout, "the fencing attach timed out"),
            };
            if error.kind() == ErrorKind::Closed {
                return None;
            }
            tracing::warn!(path, try_number, error = %error, "could not yet ask the service whether a failed batch was stored");
            let delay = self
                .inner
                .retry
                .delay_for(try_number.min(options.max_retries.max(1)), &error);
            if tokio::time::Instant::now() + delay >= deadline {
                return None;
            }
            tokio::time::sleep(delay).await;
            try_number = try_number.saturating_add(1);
        }
    }
}

/// The one send of an idempotent partition under way; ends it when dropped (also when the
/// send is cancelled).
struct PublishingTurn<'a> {
    producer: &'a ProducerClient,
    path: &'a str,
}

impl<'a> PublishingTurn<'a> {
    fn take(producer: &'a ProducerClient, path: &'a str) -> Result<Self> {
        if producer.publishing(path, |p| p.begin()) {
            Ok(Self { producer, path })
        } else {
            Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("another idempotent send to '{path}' is under way; idempotent publishing sends one batch per partition at a time"),
            ))
        }
    }
}

impl Drop for PublishingTurn<'_> {
    fn drop(&mut self) {
        self.producer.publishing(self.path, |p| p.end());
    }
}
