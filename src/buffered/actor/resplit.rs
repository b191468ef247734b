//! Batches built for a size limit the service has since lowered: a batch refused as too large
//! is sent again in pieces that fit the limit the partition's link announces now (the
//! connection layer re-attaches a link the service refused a delivery on for its size), and
//! only an event too large on its own for the new limit fails, alone, with
//! [`ErrorKind::MessageTooLarge`]. A batch is split at most once; when the limit did not go
//! down, the refusal is reported as it came.
//!
//! The pieces go out one after another inside the batch's own send, under its sequence
//! number, so flush, close and the order of reports see one batch as before.

use std::sync::{Arc, Mutex};

use futures_util::FutureExt;

use super::{Actor, Riders};
use crate::amqp::message::data_section_size;
use crate::batch::{message_too_large, BatchTarget, EventDataBatch};
use crate::buffered::budget::Charge;
use crate::buffered::sender::BatchSender;
use crate::error::{Error, ErrorKind, Result};
use crate::idempotence::PublishedSequenceNumbers;

/// The outcome of one piece: how many events (in order) and whether they were published.
pub(crate) struct Piece {
    count: usize,
    result: Result<Option<PublishedSequenceNumbers>>,
}

/// Where a batch sent in pieces leaves the outcome of each piece.
pub(crate) type Pieces = Arc<Mutex<Vec<Piece>>>;

/// Sends `encoded` again as batches within the partition's current limit; leaves the outcome
/// of each piece in `out`. `refusal` is why the whole batch was refused.
async fn send_in_pieces(
    sender: &dyn BatchSender,
    partition: &str,
    encoded: Vec<Vec<u8>>,
    refusal: Error,
    out: &Pieces,
) {
    let push = |count, result| {
        out.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Piece { count, result })
    };
    let count = encoded.len();
    let max = match sender.max_batch_size(partition).await {
        Ok(max) => max,
        Err(_) => return push(count, Err(refusal)),
    };
    let empty =
        EventDataBatch::new(BatchTarget::Partition(partition.to_string()), max).size_in_bytes();
    let sizes: Vec<usize> = encoded.iter().map(|e| data_section_size(e.len())).collect();
    if empty + sizes.iter().sum::<usize>() <= max {
        // The limit did not go down: splitting cannot help.
        return push(count, Err(refusal));
    }
    tracing::warn!(
        partition,
        events = count,
        max_size = max,
        "the service refused a batch as too large; sending it again in pieces within its new limit"
    );
    let mut piece: Vec<Vec<u8>> = Vec::new();
    let mut piece_size = empty;
    let mut events = encoded.into_iter().zip(sizes);
    loop {
        let next = events.next();
        let fits = next
            .as_ref()
            .is_some_and(|(_, size)| piece_size + size <= max);
        if !fits && !piece.is_empty() {
            let n = piece.len();
            let mut sent = std::mem::take(&mut piece);
            let result = sender.send(partition, &mut sent).await;
            push(n, result);
            piece_size = empty;
        }
        let Some((event, size)) = next else {
            return;
        };
        if empty + size > max {
            push(1, Err(message_too_large(size, max)));
        } else {
            piece_size += size;
            piece.push(event);
        }
    }
}

impl Actor {
    /// After the send of batch `seq` failed with `error`: when the service refused it as too
    /// large, sends it again in pieces (once) and returns true; its outcome then comes with
    /// the pieces. False leaves the failure to be reported as it is.
    pub(super) fn resend_in_pieces(&mut self, seq: u64, error: &Error) -> bool {
        if error.kind() != ErrorKind::MessageTooLarge {
            return false;
        }
        let first_time = self
            .in_flight_events
            .front()
            .is_some_and(|batch| batch.seq == seq && batch.pieces.is_none());
        if !first_time {
            return false;
        }
        let Some(mut batch) = self.in_flight_events.pop_front() else {
            return false;
        };
        let encoded: Vec<Vec<u8>> = batch
            .riders
            .events
            .iter()
            .map(|reported| self.encode(&reported.routing, &reported.event))
            .collect();
        let pieces = Pieces::default();
        batch.pieces = Some(pieces.clone());
        self.in_flight_events.push_front(batch);
        // New batches are built for the limit the service takes now; the one being built
        // was made for the old limit, so it goes now (and is split too if need be).
        self.max_size = None;
        self.seal();
        let sender = self.settings.sender.clone();
        let global = self.settings.global_sends.clone();
        let partition = self.shared.id.clone();
        let refusal = error.copy();
        let retries = self.shared.metrics.retries();
        // The new encodings and the serialized pieces, besides the events' own bytes.
        let encoded_bytes: usize = encoded.iter().map(Vec::len).sum();
        let held = encoded_bytes + super::sending::serialized_size(encoded_bytes);
        let charge = self.settings.budget.charge(held);
        self.in_flight.push_front(
            async move {
                let _charge = charge;
                let _permit = global.acquire_owned().await.ok();
                let started = tokio::time::Instant::now();
                let send = send_in_pieces(&*sender, &partition, encoded, refusal, &pieces);
                crate::telemetry::counting_retries(retries, send).await;
                // The pieces' buffers are not kept: a refused batch is rare.
                (seq, Ok(None), started.elapsed(), Vec::new())
            }
            .boxed(),
        );
        self.shared
            .metrics
            .set_sends_in_flight(self.in_flight.len());
        true
    }

    /// Reports a batch that was sent in pieces (its slots already given back): one report per
    /// piece, in order; the batch's bytes, `held`, ride with the last.
    pub(super) fn report_pieces(&mut self, mut riders: Riders, pieces: &Pieces, held: Charge) {
        let pieces = std::mem::take(&mut *pieces.lock().unwrap_or_else(|p| p.into_inner()));
        let mut held = Some(held);
        let last = pieces.len();
        for (index, Piece { count, result }) in pieces.into_iter().enumerate() {
            let rest = riders.split_off(count);
            let charge = match index + 1 == last && rest.events.is_empty() {
                true => held.take(),
                false => None,
            };
            self.report_outcome(
                std::mem::replace(&mut riders, rest),
                result.map_err(Arc::new),
                charge.unwrap_or_else(|| self.settings.budget.holding(0)),
            );
        }
        if !riders.events.is_empty() {
            // Never lose an event, whatever the pieces said.
            let error = Error::new(
                ErrorKind::ServiceError,
                "the batch was refused as too large and could not be sent again",
            );
            let charge = held.unwrap_or_else(|| self.settings.budget.holding(0));
            self.report_outcome(riders, Err(Arc::new(error)), charge);
        }
    }
}
