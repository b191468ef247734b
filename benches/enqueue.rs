//! Cost of `enqueue_event` when the buffer has room, amortized over many events.
//!
//! `cargo bench --bench enqueue`
//!
//! The producer publishes to the in-process emulator; buffers are large enough that no
//! enqueue waits, and the actors encode and send in the background while the bench runs (so
//! the figure includes the contention a real caller sees on this machine).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, EnqueueOptions, EventData,
};
use eventhubs_emulator::Emulator;

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let emulator = runtime.block_on(async {
        Emulator::builder()
            .hub("hub", 4)
            .start()
            .await
            .expect("emulator")
    });
    let options = BufferedProducerOptions::default()
        .with_max_buffered_events_per_partition(1_000_000)
        .with_max_buffered_bytes(2 << 30);
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(options)
            .on_send_failed(|context| async move {
                panic!("send failed in the bench: {}", context.error)
            })
            .build()
            .expect("producer");
    runtime.block_on(producer.partition_ids()).expect("connect");
    let body = bytes::Bytes::from(vec![b'x'; 100]);

    let mut group = c.benchmark_group("enqueue");
    group.throughput(Throughput::Elements(1));
    for (name, options) in [
        ("automatic", EnqueueOptions::default()),
        (
            "partition key",
            EnqueueOptions::default().with_partition_key("device-42"),
        ),
        (
            "partition id",
            EnqueueOptions::default().with_partition_id("1"),
        ),
    ] {
        group.bench_function(format!("100 B event, {name}"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        producer
                            .enqueue_event(EventData::new(body.clone()), options.clone())
                            .await
                            .expect("enqueued");
                    }
                    let elapsed = start.elapsed();
                    // Keep the buffer from growing across samples; not timed.
                    producer.flush().await.expect("flush");
                    elapsed
                })
            })
        });
    }
    // The cost of asking for the outcome: the same enqueue, its outcome kept until the
    // iteration ends (and awaited then, outside the timing).
    group.bench_function("100 B event, automatic, with outcome", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut outcomes = Vec::with_capacity(iters as usize);
                let start = Instant::now();
                for _ in 0..iters {
                    outcomes.push(
                        producer
                            .enqueue_event_with_outcome(
                                EventData::new(body.clone()),
                                EnqueueOptions::default(),
                            )
                            .await
                            .expect("enqueued"),
                    );
                }
                let elapsed = start.elapsed();
                producer.flush().await.expect("flush");
                for outcome in outcomes {
                    outcome.await.expect("published");
                }
                elapsed
            })
        })
    });
    group.finish();
    runtime.block_on(producer.close()).expect("close");
}

criterion_group! {
    name = enqueue_benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(enqueue_benches);
