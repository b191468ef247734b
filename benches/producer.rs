//! Criterion benches of the lower layer: encoding events into a batch, and sending full
//! batches to the in-process emulator over loopback.
//!
//! `cargo bench --bench producer`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use eventhubs_buffered::{CreateBatchOptions, EventData, ProducerClient, ProducerClientOptions};
use eventhubs_emulator::Emulator;

const EVENT_SIZE: usize = 100;

fn event() -> EventData {
    EventData::from(vec![b'x'; EVENT_SIZE])
}

/// How many 100-byte events fill a 1 MiB batch.
fn events_per_full_batch(runtime: &tokio::runtime::Runtime, producer: &ProducerClient) -> u64 {
    runtime.block_on(async {
        let mut batch = producer
            .create_batch(CreateBatchOptions::default().with_partition_id("0"))
            .await
            .expect("batch");
        let mut n = 0;
        while batch.try_add(event()).is_ok() {
            n += 1;
        }
        n
    })
}

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
    let producer = ProducerClient::from_connection_string(
        &emulator.connection_string(),
        None,
        ProducerClientOptions::default(),
    )
    .expect("client");
    let per_batch = events_per_full_batch(&runtime, &producer);

    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(per_batch));
    group.bench_function("fill 1 MiB with 100 B events", |b| {
        b.iter_batched(
            || {
                runtime
                    .block_on(
                        producer.create_batch(CreateBatchOptions::default().with_partition_id("0")),
                    )
                    .expect("batch")
            },
            |mut batch| {
                while batch.try_add(event()).is_ok() {}
                batch
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("send");
    group.throughput(Throughput::Elements(per_batch));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("send_batch of a full 1 MiB batch", |b| {
        b.iter_batched(
            || {
                runtime.block_on(async {
                    let mut batch = producer
                        .create_batch(CreateBatchOptions::default().with_partition_id("0"))
                        .await
                        .expect("batch");
                    while batch.try_add(event()).is_ok() {}
                    batch
                })
            },
            |batch| runtime.block_on(producer.send_batch(batch)).expect("sent"),
            BatchSize::PerIteration,
        )
    });
    for in_flight in [1usize, 4] {
        group.throughput(Throughput::Elements(per_batch * in_flight as u64 * 4));
        group.bench_function(
            format!("4 partitions x {in_flight} batches in flight"),
            |b| {
                b.iter_batched(
                    || {
                        runtime.block_on(async {
                            let mut batches = Vec::new();
                            for p in 0..4 {
                                for _ in 0..in_flight {
                                    let mut batch = producer
                                        .create_batch(
                                            CreateBatchOptions::default()
                                                .with_partition_id(p.to_string()),
                                        )
                                        .await
                                        .expect("batch");
                                    while batch.try_add(event()).is_ok() {}
                                    batches.push(batch);
                                }
                            }
                            batches
                        })
                    },
                    |batches| {
                        runtime.block_on(async {
                            let sends = batches.into_iter().map(|batch| {
                                let producer = producer.clone();
                                tokio::spawn(async move { producer.send_batch(batch).await })
                            });
                            for send in futures_util::future::join_all(sends).await {
                                send.expect("task").expect("sent");
                            }
                        })
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
    runtime.block_on(producer.close());
}

criterion_group!(producer_benches, benches);
criterion_main!(producer_benches);
