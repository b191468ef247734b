//! The ends of a producer's work: `flush` (a barrier through every partition, or one),
//! `clear` (every unsent event reported as abandoned, the producer stays open), the ordering
//! guard's `resume_partition`, `close` (flush, then stop the actors and close the
//! connection), `close_abandoning` (stop at once, every unsent event reported as abandoned),
//! and dropping the last handle (a close, blocking where the runtime allows it, else in the
//! background). Each waits for the handlers, bounded by `handler_shutdown_timeout` when
//! closing.

use std::sync::atomic::Ordering;
use tracing::Instrument;

use tokio::sync::oneshot;
use tokio::time::Instant;

use std::sync::Arc;

use super::client::{BufferedProducerClient, Core};
use super::command::Command;
use super::partitions::PartitionHandle;
use super::report::{in_handler, Backlog};
use super::routing::resolve;
use super::EnqueueOptions;
use crate::error::{Error, ErrorKind, Result};

/// Waits for `done` (a partition's close, answered once its last report was handled); false
/// when the partition's handler call has been running for `timeout`, counted from `started`
/// for a call that began earlier.
async fn handled_in_time(
    done: oneshot::Receiver<()>,
    reporter: &Backlog,
    started: Instant,
    timeout: std::time::Duration,
) -> bool {
    // While no handler call runs, look again this often (only while closing).
    let idle_check = timeout.min(std::time::Duration::from_millis(100));
    tokio::pin!(done);
    loop {
        let deadline = match reporter.busy_since() {
            Some(since) => since.max(started) + timeout,
            None => Instant::now() + idle_check,
        };
        tokio::select! {
            _ = &mut done => return true,
            _ = tokio::time::sleep_until(deadline) => {
                let stuck = reporter
                    .busy_since()
                    .is_some_and(|since| Instant::now() >= since.max(started) + timeout);
                if stuck {
                    return false;
                }
            }
        }
    }
}

impl Drop for Core {
    /// The last handle is gone without a (blocking) close: the actors send what is still
    /// buffered, report it, and stop, in the background, for as long as the runtime runs.
    /// (They are told here rather than by their queues' senders going away, because threads
    /// may still hold a copy of the partition list; see `SeenPartitions`.)
    fn drop(&mut self) {
        self.partitions.close_all();
    }
}

impl Drop for BufferedProducerClient {
    /// Dropping the last handle of a producer that still buffers events closes it: on a
    /// multi-thread tokio runtime, outside the producer's handlers and not while a panic
    /// unwinds, it blocks the dropping
    /// thread (with `block_in_place`, so other tasks go on) until every buffered event is sent
    /// and reported, as `close` would. Elsewhere the actors do the same in the background
    /// while the runtime runs; what a runtime shutdown cuts off is counted and logged at error
    /// level by the actors.
    fn drop(&mut self) {
        if Arc::strong_count(&self.core) != 1
            || self.is_closed()
            || self.total_buffered_event_count() == 0
            || in_handler()
            || std::thread::panicking()
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            tracing::warn!(
                buffered = self.total_buffered_event_count(),
                "the last handle of a buffered producer was dropped without close() on a current-thread runtime; its events are sent in the background while the runtime runs"
            );
            return;
        }
        let producer = BufferedProducerClient {
            core: self.core.clone(),
        };
        tracing::warn!(
            buffered = producer.total_buffered_event_count(),
            "the last handle of a buffered producer was dropped without close(); closing it now (call close() to choose when)"
        );
        // A runtime that is shutting down, or a LocalSet, cannot block here: then the
        // background path above applies (its refusal is a panic, caught here).
        let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tokio::task::block_in_place(|| runtime.block_on(producer.close()))
        }));
        match closed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "closing the dropped producer failed"),
            Err(_) => tracing::warn!(
                "could not block to close the dropped producer; it closes in the background"
            ),
        }
    }
}

impl BufferedProducerClient {
    /// Sends everything buffered now, without waiting out `max_wait_time`, and returns once
    /// each of those events has had its handler call. Enqueues may go on meanwhile; events
    /// enqueued after the call started (including events a failure handler re-enqueues while
    /// it runs) are not waited for: loop on `flush` while
    /// [`total_buffered_event_count`](Self::total_buffered_event_count) is above zero to
    /// settle those too.
    ///
    /// It waits for the handlers, however long they take: to bound it, run it under
    /// `tokio::time::timeout` (it is cancel-safe: dropping it changes nothing but the wait).
    pub async fn flush(&self) -> Result<()> {
        let flush = async {
            if self.is_closed() {
                return Err(Self::closed_error());
            }
            self.barrier(Command::Flush).await;
            Ok(())
        };
        let telemetry = &self.core.settings.telemetry;
        telemetry
            .operation("flush", flush)
            .instrument(tracing::info_span!("flush"))
            .await
    }

    /// Flushes one partition: sends what is buffered for it now and returns once each of
    /// those events has had its handler call. Other partitions are not touched.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] when the event hub has no such partition,
    /// [`ErrorKind::Closed`] after close.
    pub async fn flush_partition(&self, partition_id: &str) -> Result<()> {
        let partition = self.partition(partition_id).await?;
        self.barrier_on(std::slice::from_ref(&partition), Command::Flush)
            .await;
        Ok(())
    }

    /// Flushes the partition that events with this partition key go to (see
    /// [`flush_partition`](Self::flush_partition)).
    pub async fn flush_key(&self, partition_key: &str) -> Result<()> {
        let id = self.partition_for_key(partition_key).await?;
        self.flush_partition(&id).await
    }

    /// The partition events with this partition key go to (by the partitioner in force).
    pub async fn partition_for_key(&self, partition_key: &str) -> Result<String> {
        if self.is_closed() {
            return Err(Self::closed_error());
        }
        let set = self.partitions().await?;
        let options = EnqueueOptions::default().with_partition_key(partition_key);
        match resolve(&set, &options, &*self.core.partitioner)? {
            Some((partition, _)) => Ok(partition.shared.id.clone()),
            None => Err(Error::new(
                ErrorKind::InvalidArgument,
                "the partition key is empty",
            )),
        }
    }

    /// Reports every buffered event that is not being sent yet to the failure handler as
    /// [`ErrorKind::Abandoned`] (their outcomes too), and returns once that is done. Batches
    /// already being sent go on and are reported as usual. The producer stays open: events
    /// enqueued after the call are kept.
    pub async fn clear(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Self::closed_error());
        }
        self.barrier(Command::Clear).await;
        Ok(())
    }

    /// Resumes a partition the ordering guard paused
    /// ([`pause_partition_on_failure`](super::BufferedProducerOptions::pause_partition_on_failure)):
    /// enqueues to it are taken again. Returns whether it was paused.
    pub async fn resume_partition(&self, partition_id: &str) -> Result<bool> {
        let partition = self.partition(partition_id).await?;
        Ok(partition.shared.paused.swap(false, Ordering::SeqCst))
    }

    /// Whether the ordering guard paused the partition (false for a partition not known).
    pub fn is_partition_paused(&self, partition_id: &str) -> bool {
        self.current_partitions()
            .get(partition_id)
            .is_some_and(|p| p.shared.is_paused())
    }

    async fn partition(&self, partition_id: &str) -> Result<Arc<PartitionHandle>> {
        if self.is_closed() {
            return Err(Self::closed_error());
        }
        let set = self.partitions().await?;
        set.get(partition_id).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "partition '{partition_id}' does not exist; the event hub's partitions are {:?}",
                    set.ids()
                ),
            )
            .for_partition(partition_id)
        })
    }

    async fn barrier(&self, command: impl Fn(oneshot::Sender<()>) -> Command) {
        let set = self.current_partitions();
        self.barrier_on(&set.partitions, command).await;
    }

    /// Sends `command` to each partition and waits for every answer.
    async fn barrier_on(
        &self,
        partitions: &[Arc<PartitionHandle>],
        command: impl Fn(oneshot::Sender<()>) -> Command,
    ) {
        let mut waits = Vec::new();
        for partition in partitions {
            let (ack, done) = oneshot::channel();
            if partition.shared.inbox.push_command(command(ack)).is_ok() {
                waits.push(done);
            }
        }
        for done in waits {
            let _ = done.await;
        }
    }

    /// Flushes, then stops the actors and closes the connection. Enqueues after it fail with
    /// [`ErrorKind::Closed`]. Calling it again waits for the first call and returns.
    ///
    /// Returns once every event enqueued before it had its handler call: sends are bounded by
    /// the retry policy (a service that stopped answering makes them fail, and they are
    /// reported as failures), and closing the connection waits for the service at most the
    /// try timeout (never more than 5 s). A handler call that does not return holds close up
    /// for at most
    /// [`handler_shutdown_timeout`](crate::BufferedProducerOptions::handler_shutdown_timeout); close
    /// then returns an error of kind [`ErrorKind::Timeout`] (see that option for what happens
    /// to the events of that partition). To stop within a grace period of your own, use
    /// [`close_within`](Self::close_within).
    pub async fn close(&self) -> Result<()> {
        self.shut_down(false, None).await
    }

    /// Closes as [`close`](Self::close) does, within `grace`: what is not published when
    /// `grace` has passed is abandoned as [`close_abandoning`](Self::close_abandoning) does
    /// (unsent events reported with [`ErrorKind::Abandoned`]; batches cut off mid-send say
    /// they may have been published), and the connection closes in the background. For a
    /// service that must stop within its own grace period (a Kubernetes
    /// `terminationGracePeriodSeconds`, say) with every event still reported.
    ///
    /// Returns once every event enqueued before it had its handler call (handler calls are
    /// still waited for, up to
    /// [`handler_shutdown_timeout`](crate::BufferedProducerOptions::handler_shutdown_timeout)).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] when `grace` passed before everything was published (the
    /// handlers were told which events were abandoned), or a handler call was stuck.
    pub async fn close_within(&self, grace: std::time::Duration) -> Result<()> {
        self.shut_down(false, Some(Instant::now() + grace)).await
    }

    /// Stops at once: every event not yet published is reported to the failure handler with
    /// an [`ErrorKind::Abandoned`] error (batches cut off mid-send say they may have been
    /// published). Then closes the connection in the background, without waiting for the
    /// service. Returns once every event had its handler call, or with an error of kind
    /// [`ErrorKind::Timeout`] after a handler call stuck for
    /// [`handler_shutdown_timeout`](crate::BufferedProducerOptions::handler_shutdown_timeout).
    pub async fn close_abandoning(&self) -> Result<()> {
        self.shut_down(true, None).await
    }

    async fn shut_down(&self, abandon: bool, deadline: Option<Instant>) -> Result<()> {
        let telemetry = &self.core.settings.telemetry;
        telemetry
            .operation("close", self.shut_down_untraced(abandon, deadline))
            .instrument(tracing::info_span!("close", abandon))
            .await
    }

    async fn shut_down_untraced(&self, abandon: bool, deadline: Option<Instant>) -> Result<()> {
        let _serial = self.core.close_lock.lock().await;
        let first = !self.core.closed.swap(true, Ordering::SeqCst);
        let ended = if first || abandon {
            self.close_partitions(abandon, deadline).await
        } else {
            Ended::default()
        };
        let stuck = ended.stuck;
        if abandon || ended.cut_off {
            // Closing politely waits for the service's answers; abandoning must not wait for
            // a service that stopped answering. The connection closes in the background.
            let sender = self.core.settings.sender.clone();
            tokio::spawn(async move { sender.close().await });
        } else {
            self.core.settings.sender.close().await;
        }
        if ended.cut_off && stuck.is_empty() {
            return Err(Error::new(
                ErrorKind::Timeout,
                "close_within: the grace period ended before everything was published; what was not published was reported as abandoned",
            ));
        }
        if stuck.is_empty() {
            return Ok(());
        }
        let timeout = self.core.options.handler_shutdown_timeout;
        tracing::warn!(partitions = ?stuck, ?timeout, "close stopped waiting for stuck handlers");
        Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "close stopped waiting for the handler of partition(s) {stuck:?}: a handler call did not return within handler_shutdown_timeout ({timeout:?}); their events not yet published were abandoned, and their outcomes not yet reported go to the handler if the stuck call returns"
            ),
        ))
    }

    /// Tells every partition to close (or abandon) and waits until each has had its events
    /// sent and reported, giving up on a partition whose handler call stays stuck for
    /// `handler_shutdown_timeout`. A partition still closing at `deadline` is told to abandon
    /// what it holds. Says which partitions were given up on, and whether any was cut off.
    async fn close_partitions(&self, abandon: bool, deadline: Option<Instant>) -> Ended {
        let set = self.current_partitions();
        let started = Instant::now();
        let timeout = self.core.options.handler_shutdown_timeout;
        let mut waits = Vec::new();
        for partition in &set.partitions {
            let (ack, done) = oneshot::channel();
            if partition
                .shared
                .inbox
                .push_command(Command::Close { abandon, done: ack })
                .is_ok()
            {
                let partition = partition.clone();
                waits.push(async move {
                    let reporter = &partition.shared.reporter;
                    let handled = handled_in_time(done, reporter, started, timeout);
                    tokio::pin!(handled);
                    let mut cut_off = false;
                    let in_time = match deadline {
                        None => handled.await,
                        Some(deadline) => tokio::select! {
                            biased;
                            in_time = &mut handled => in_time,
                            _ = tokio::time::sleep_until(deadline) => {
                                // The actor abandons what it holds, cuts its sends off and
                                // reports them; the reports are still waited for.
                                cut_off = true;
                                partition.shared.give_up.notify_one();
                                handled.await
                            }
                        },
                    };
                    if !in_time {
                        partition.shared.give_up.notify_one();
                    }
                    (cut_off, (!in_time).then(|| partition.shared.id.clone()))
                });
            }
        }
        let mut ended = Ended::default();
        for (cut_off, stuck) in futures_util::future::join_all(waits).await {
            ended.cut_off |= cut_off;
            ended.stuck.extend(stuck);
        }
        ended
    }
}

/// How the partitions' close ended.
#[derive(Debug, Default)]
struct Ended {
    /// Partitions whose handler call stayed stuck.
    stuck: Vec<String>,
    /// Whether the deadline of `close_within` cut a partition off.
    cut_off: bool,
}
