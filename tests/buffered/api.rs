//! The routing, flushing and stream API over the real protocol: the ordering guard, requeue
//! that keeps each event's routing, a custom partitioner, a stream that keeps flowing to free
//! partitions while one is stalled, and handlers written as plain structs and closures.

use std::sync::atomic::AtomicU64;

use eventhubs_buffered::{Partitioner, Routing};
use futures_util::stream;

use crate::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ordering_guard_refuses_after_a_failure_until_resumed() {
    let emulator = emulator().await;
    let options = fast_options()
        .with_pause_partition_on_failure(true)
        .with_retry_options(fast_retries().with_max_retries(0));
    let (producer, recorder) = producer_with(&emulator, options);
    let key = "account-9";
    let partition = producer.partition_for_key(key).await.unwrap();
    emulator.faults().reject_next(
        1,
        FaultCondition::ServerBusy,
        FaultScope::partition(HUB, partition.clone()),
    );
    let failed = producer
        .enqueue_event_with_outcome(event("step-1"), keyed(key))
        .await
        .unwrap();
    let error = bounded("the failure", BOUND, failed).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ServerBusy);
    wait_until("the partition is paused", BOUND, || {
        producer.is_partition_paused(&partition)
    })
    .await;
    // Later steps of the same key are refused, typed, naming the partition, event handed back.
    let refused = producer
        .enqueue_event(event("step-2"), keyed(key))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PartitionPaused);
    assert_eq!(refused.error().partition_id(), Some(partition.as_str()));
    assert_eq!(body_text(&refused.into_event()), "step-2");
    // By id too; automatic events avoid the paused partition.
    let refused = producer
        .enqueue_event(event("by-id"), to(&partition))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PartitionPaused);
    for i in 0..8 {
        producer
            .enqueue_event(event(format!("auto-{i}")), auto())
            .await
            .unwrap();
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert!(
        stored(&emulator, &partition).is_empty(),
        "nothing after the gap"
    );
    // Resumed: the key goes on, and consumers never saw a later step before the failed one.
    assert!(producer.resume_partition(&partition).await.unwrap());
    assert!(!producer.is_partition_paused(&partition));
    producer
        .enqueue_event(event("step-1-again"), keyed(key))
        .await
        .unwrap();
    producer
        .enqueue_event(event("step-2"), keyed(key))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(
        stored(&emulator, &partition),
        vec!["step-1-again", "step-2"]
    );
    assert_eq!(recorder.failed().len(), 1);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_handler_requeues_while_paused_and_keeps_the_order() {
    let emulator = emulator().await;
    let requeued = Arc::new(AtomicUsize::new(0));
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(
                fast_options()
                    .with_pause_partition_on_failure(true)
                    .with_retry_options(fast_retries().with_max_retries(0)),
            )
            .on_send_failed({
                let requeued = requeued.clone();
                move |context: SendFailedContext| {
                    let requeued = requeued.clone();
                    async move {
                        let partition = context.partition_id.clone();
                        let producer = context.producer().cloned().expect("open");
                        requeued.fetch_add(context.events.len(), Ordering::SeqCst);
                        // Requeue first (taken while paused), then resume: nothing overtakes.
                        context.requeue().await.expect("requeued while paused");
                        producer
                            .resume_partition(&partition)
                            .await
                            .expect("resumed");
                    }
                }
            })
            .build()
            .unwrap();
    emulator.faults().reject_next(
        1,
        FaultCondition::ServerBusy,
        FaultScope::partition(HUB, "2"),
    );
    for i in 0..5 {
        producer
            .enqueue_event(event(format!("r{i}")), to("2"))
            .await
            .unwrap();
    }
    wait_until("everything is stored", BOUND, || {
        emulator.event_count(HUB, "2").unwrap() == 5
    })
    .await;
    assert_eq!(stored(&emulator, "2"), vec!["r0", "r1", "r2", "r3", "r4"]);
    assert!(requeued.load(Ordering::SeqCst) >= 1);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_routes_automatic_events_again_and_keeps_keys_and_ids() {
    let emulator = emulator().await;
    let routes = Arc::new(Mutex::new(Vec::<(String, Routing)>::new()));
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(
                fast_options()
                    .with_send_when_idle(false)
                    .with_retry_options(fast_retries().with_max_retries(0)),
            )
            .on_send_failed({
                let routes = routes.clone();
                move |context: SendFailedContext| {
                    routes.lock().unwrap().extend(
                        context
                            .events
                            .iter()
                            .map(|e| (body_text(&e.event), e.routing.clone())),
                    );
                    async move {
                        context.requeue().await.expect("requeued");
                    }
                }
            })
            .build()
            .unwrap();
    // Every partition's first batch fails once; automatic events then leave the partition
    // that failed them (automatic routing avoids failing partitions).
    for p in 0..4 {
        emulator.faults().reject_next(
            1,
            FaultCondition::ServerBusy,
            FaultScope::partition(HUB, p.to_string()),
        );
    }
    let key_partition = producer.partition_for_key("k").await.unwrap();
    producer.enqueue_event(event("auto"), auto()).await.unwrap();
    producer
        .enqueue_event(event("keyed"), keyed("k"))
        .await
        .unwrap();
    producer
        .enqueue_event(event("pinned"), to("3"))
        .await
        .unwrap();
    wait_until("all three are stored", BOUND, || {
        emulator.total_event_count(HUB).unwrap() == 3
    })
    .await;
    let routes = routes.lock().unwrap().clone();
    let routing_of = |body: &str| {
        routes
            .iter()
            .find(|(b, _)| b == body)
            .map(|(_, r)| r.clone())
    };
    assert_eq!(routing_of("auto"), Some(Routing::Automatic));
    assert_eq!(routing_of("keyed"), Some(Routing::PartitionKey("k".into())));
    assert_eq!(routing_of("pinned"), Some(Routing::PartitionId));
    let placed = stored_once(&emulator);
    assert_eq!(placed["keyed"], key_partition, "the key kept its partition");
    assert_eq!(placed["pinned"], "3", "the id kept its partition");
    assert!(
        emulator
            .events(HUB, &placed["keyed"])
            .unwrap()
            .iter()
            .any(|e| e.partition_key().ok().flatten().as_deref() == Some("k")),
        "the key is still stamped"
    );
    bounded("close", BOUND, producer.close()).await.unwrap();
}

/// Sends "tenant-N" to partition N modulo the count.
struct ByTenant;

impl Partitioner for ByTenant {
    fn partition_index(&self, key: &str, partition_count: usize) -> usize {
        key.trim_start_matches("tenant-")
            .parse::<usize>()
            .unwrap_or(0)
            % partition_count
    }
}

#[tokio::test]
async fn a_custom_partitioner_places_keyed_events() {
    let emulator = emulator().await;
    let (producer, _recorder) = producer_with(&emulator, fast_options().with_partitioner(ByTenant));
    for tenant in 0..8 {
        producer
            .enqueue_event(
                event(format!("e{tenant}")),
                keyed(&format!("tenant-{tenant}")),
            )
            .await
            .unwrap();
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let placed = stored_once(&emulator);
    for tenant in 0..8 {
        assert_eq!(placed[&format!("e{tenant}")], (tenant % 4).to_string());
    }
    assert_eq!(producer.partition_for_key("tenant-6").await.unwrap(), "2");
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_keeps_flowing_to_free_partitions_while_one_is_stalled() {
    let emulator = emulator().await;
    let options = fast_options()
        .with_max_buffered_events_per_partition(10)
        .with_retry_options(fast_retries().with_try_timeout(Duration::from_secs(30)));
    let (producer, recorder) = producer_with(&emulator, options);
    producer.partition_ids().await.unwrap();
    // Partition 0 stops answering: its buffer fills and stays full.
    emulator
        .faults()
        .withhold_next(1000, FaultScope::partition(HUB, "0"));
    let items: Vec<(EventData, EnqueueOptions)> = (0..400)
        .map(|i| (event(format!("s{i}")), to(&(i % 4).to_string())))
        .collect();
    let streaming = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut items = stream::iter(items);
            producer.enqueue_stream(&mut items).await
        })
    };
    // The 300 events of partitions 1 to 3 all get through although partition 0 is stuck.
    wait_until("the free partitions get every event", BOUND, || {
        (1..4).all(|p| emulator.event_count(HUB, &p.to_string()).unwrap() == 100)
    })
    .await;
    assert!(
        !streaming.is_finished(),
        "partition 0's events are held back"
    );
    assert!(producer.buffered_event_count("0") <= 10);
    // Within each partition the stream's order holds.
    for p in 1..4 {
        let expected: Vec<String> = (0..400)
            .filter(|i| i % 4 == p)
            .map(|i| format!("s{i}"))
            .collect();
        assert_eq!(stored(&emulator, &p.to_string()), expected);
    }
    // Abandoning ends the stall: the held-back events come back in the stream's error.
    bounded("close_abandoning", BOUND, producer.close_abandoning())
        .await
        .unwrap();
    let stopped = bounded("the stream stops", BOUND, streaming)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(stopped.error().kind(), ErrorKind::Closed);
    let handed_back = stopped.enqueued() as usize;
    let returned = stopped.into_events().len();
    assert_eq!(
        handed_back + returned,
        400,
        "every item was either enqueued or handed back"
    );
    assert_eq!(
        recorder.handled(),
        handed_back,
        "every enqueued event reported"
    );
}

#[tokio::test]
async fn a_stream_that_ends_is_enqueued_whole() {
    let emulator = emulator().await;
    let (producer, recorder) = producer(&emulator);
    let mut items = stream::iter((0..1000).map(|i| {
        let options = match i % 3 {
            0 => auto(),
            1 => keyed(&format!("key-{}", i % 7)),
            _ => to("2"),
        };
        (event(format!("x{i}")), options)
    }));
    let enqueued = bounded("the stream", BOUND, producer.enqueue_stream(&mut items))
        .await
        .unwrap();
    assert_eq!(enqueued, 1000);
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(stored_once(&emulator).len(), 1000);
    assert_eq!(recorder.handled(), 1000);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

/// A handler as a struct with state, written with plain `async fn`s.
#[derive(Default)]
struct Tally {
    published: AtomicU64,
    failed: AtomicU64,
}

impl BufferedProducerHandler for Tally {
    async fn on_send_succeeded(&self, context: SendSucceededContext) {
        self.published
            .fetch_add(context.events.len() as u64, Ordering::Relaxed);
    }

    async fn on_send_failed(&self, context: SendFailedContext) {
        self.failed
            .fetch_add(context.events.len() as u64, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn struct_and_stateful_closure_handlers_need_no_macro() {
    let emulator = emulator().await;
    let tally = Arc::new(Tally::default());
    struct Shared(Arc<Tally>);
    impl BufferedProducerHandler for Shared {
        async fn on_send_succeeded(&self, context: SendSucceededContext) {
            self.0.on_send_succeeded(context).await;
        }
        async fn on_send_failed(&self, context: SendFailedContext) {
            self.0.on_send_failed(context).await;
        }
    }
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(fast_options())
            .handler(Shared(tally.clone()))
            .build()
            .unwrap();
    for i in 0..10 {
        producer
            .enqueue_event(event(format!("t{i}")), auto())
            .await
            .unwrap();
    }
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(tally.published.load(Ordering::Relaxed), 10);

    // A closure keeping state across calls.
    let batches = Arc::new(AtomicU64::new(0));
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(fast_options())
            .on_send_succeeded({
                let batches = batches.clone();
                move |_context| {
                    batches.fetch_add(1, Ordering::Relaxed);
                    async {}
                }
            })
            .on_send_failed(
                |context| async move { panic!("unexpected failure: {}", context.error) },
            )
            .build()
            .unwrap();
    producer.enqueue_event(event("one"), auto()).await.unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(batches.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_connection_says_which_client_it_is() {
    let emulator = emulator().await;
    let (producer, _recorder) =
        producer_with(&emulator, fast_options().with_identifier("orders-api"));
    producer
        .enqueue_event(event("hello"), to("0"))
        .await
        .unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    let opens = emulator.client_opens();
    assert_eq!(opens.len(), 1, "{opens:?}");
    let open = &opens[0];
    assert_eq!(open.container_id, "orders-api");
    assert_eq!(
        open.hostname.as_deref(),
        Some(producer.fully_qualified_namespace())
    );
    let version = env!("CARGO_PKG_VERSION");
    let platform = format!("{}; {}", std::env::consts::OS, std::env::consts::ARCH);
    let expected = [
        ("product", "eventhubs-buffered".to_string()),
        ("version", version.to_string()),
        ("platform", platform.clone()),
        ("framework", "Rust".to_string()),
        (
            "user-agent",
            format!("azsdk-rust-eventhubs-buffered/{version} ({platform})"),
        ),
    ];
    for (name, value) in expected {
        assert_eq!(open.properties.get(name), Some(&value), "{name}");
    }
}
