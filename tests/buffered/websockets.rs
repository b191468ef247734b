//! AMQP over WebSockets (`TransportType::AmqpWebSockets`) to the emulator's WebSocket port:
//! `ws://` for a development emulator and `wss://` with TLS; sends, flush and close, a new
//! connection after a cut one, idempotent retries over lost acknowledgements, and the way
//! through a real HTTP proxy (tinyproxy) with and without its credentials.

use eventhubs_buffered::{ProducerClientOptions, ProxyOptions, TransportType};

use crate::prelude::*;

async fn websocket_emulator(tls: bool) -> Emulator {
    Emulator::builder()
        .hub(HUB, 4)
        .tls(tls)
        .websocket(true)
        .start()
        .await
        .expect("emulator")
}

/// `options` set to the WebSocket transport, trusting the emulator's CA when it has one.
fn over_websockets(
    emulator: &Emulator,
    options: BufferedProducerOptions,
) -> BufferedProducerOptions {
    let mut client = options
        .client
        .clone()
        .with_transport(TransportType::AmqpWebSockets);
    if let Some(ca) = emulator.ca_certificate_pem() {
        client = client.with_trusted_root_certificate_pem(ca);
    }
    options.with_client_options(client)
}

/// A producer on the emulator's WebSocket connection string.
fn websocket_producer(
    emulator: &Emulator,
    options: BufferedProducerOptions,
) -> (BufferedProducerClient, Recorder) {
    let connection_string = emulator
        .websocket_connection_string()
        .expect("a WebSocket port");
    producer_for(&connection_string, over_websockets(emulator, options))
}

/// Every connection the emulator saw came through its WebSocket port.
fn assert_only_websocket_connections(emulator: &Emulator) {
    let opens = emulator.client_opens();
    assert!(!opens.is_empty(), "no connection was opened");
    assert!(
        opens.iter().all(|open| open.websocket),
        "a connection came over plain AMQP: {opens:?}"
    );
}

async fn sends_flushes_and_closes(tls: bool) {
    let emulator = websocket_emulator(tls).await;
    let (producer, recorder) = websocket_producer(&emulator, fast_options());
    let first = enqueue_spread(&producer, "ws", 40).await;
    bounded("flush", BOUND, producer.flush())
        .await
        .expect("flush");
    recorder.assert_exactly_once(&first);
    // An event larger than an AMQP frame travels in several frames and messages.
    let large = "x".repeat(200_000);
    producer
        .enqueue_event(event(large.clone()), to("2"))
        .await
        .expect("enqueue");
    bounded("close", BOUND, producer.close())
        .await
        .expect("close");
    assert_eq!(recorder.succeeded_in().len(), 41);
    let stored = stored_all(&emulator);
    assert_eq!(stored.len(), 41);
    assert!(stored.contains(&large));
    assert_only_websocket_connections(&emulator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_flushes_and_closes_over_ws() {
    sends_flushes_and_closes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_flushes_and_closes_over_wss() {
    sends_flushes_and_closes(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_websocket_connection_is_replaced_and_nothing_is_lost_or_doubled() {
    let emulator = websocket_emulator(true).await;
    let (producer, recorder) = websocket_producer(&emulator, reconnecting_options());
    let mut bodies = enqueue_spread(&producer, "before", 12).await;
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    lose_connections(&emulator, Faults::drop_connections).await;
    bodies.extend(enqueue_spread(&producer, "after-drop", 12).await);
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    lose_connections(&emulator, Faults::close_connections).await;
    bodies.extend(enqueue_spread(&producer, "after-close", 12).await);
    bounded("close", BOUND, producer.close()).await.unwrap();

    recorder.assert_exactly_once(&bodies);
    assert_eq!(stored_once(&emulator).len(), bodies.len());
    assert_eq!(producer.metrics().reconnects, 2);
    assert_eq!(
        emulator.client_opens().len(),
        3,
        "a new connection after each loss"
    );
    assert_only_websocket_connections(&emulator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_over_websockets_store_lost_acknowledgements_once() {
    let emulator = websocket_emulator(false).await;
    let options = fast_options()
        .with_idempotent_retries(true)
        .with_retry_options(fast_retries().with_try_timeout(Duration::from_millis(500)));
    let (producer, recorder) = websocket_producer(&emulator, options);
    // Attach first, so the withheld deliveries are batches of events.
    producer
        .enqueue_event(event("warmup"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    emulator
        .faults()
        .withhold_next(2, FaultScope::partition(HUB, "0"));
    let mut bodies = vec!["warmup".to_string()];
    for round in 0..3 {
        for i in 0..10 {
            let body = format!("r{round}-{i}");
            producer
                .enqueue_event(event(body.clone()), to("0"))
                .await
                .unwrap();
            bodies.push(body);
        }
        bounded("flush", BOUND * 2, producer.flush()).await.unwrap();
    }
    bounded("close", BOUND, producer.close()).await.unwrap();

    recorder.assert_exactly_once(&bodies);
    assert_eq!(stored(&emulator, "0"), bodies, "each once, in order");
    // Each withheld delivery was stored, and its resent copy dropped as a duplicate.
    assert!(
        emulator.counters().duplicates_dropped >= 2,
        "the resent batches reached the service: {:?}",
        emulator.counters()
    );
    assert_only_websocket_connections(&emulator);
}

/// A `wss://` producer whose connection goes through `proxy`.
fn through_proxy(emulator: &Emulator, proxy: ProxyOptions) -> (BufferedProducerClient, Recorder) {
    let options = fast_options().with_retry_options(fast_retries().with_max_retries(1));
    let options = over_websockets(emulator, options);
    let client = options.client.clone().with_proxy(proxy);
    websocket_producer(emulator, options.with_client_options(client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_a_proxy_with_and_without_credentials() {
    for credentials in [None, Some(("ingest", "s3cret-pass"))] {
        let Some(tinyproxy) = Tinyproxy::start(credentials) else {
            return;
        };
        let emulator = websocket_emulator(true).await;
        let mut proxy = ProxyOptions::new(&tinyproxy.url()).expect("proxy url");
        if let Some((user, password)) = credentials {
            proxy = proxy.with_basic_auth(user, password);
        }
        let (producer, recorder) = through_proxy(&emulator, proxy.clone());
        let bodies = enqueue_spread(&producer, "tunnelled", 20).await;
        bounded("close", BOUND, producer.close())
            .await
            .expect("close");
        recorder.assert_exactly_once(&bodies);
        assert_eq!(stored_all(&emulator).len(), 20);
        assert_only_websocket_connections(&emulator);

        // The proxy is the way in: without it the same producer cannot connect.
        drop(tinyproxy);
        let (producer, _recorder) = through_proxy(&emulator, proxy);
        let refused = refused_enqueue(&producer).await;
        assert_eq!(refused.error().kind(), ErrorKind::ConnectionFailed);
        bounded("close", BOUND, producer.close()).await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_proxy_credential_over_websockets_is_a_clear_error() {
    let Some(tinyproxy) = Tinyproxy::start(Some(("ingest", "s3cret-pass"))) else {
        return;
    };
    let emulator = websocket_emulator(true).await;
    let proxy = ProxyOptions::new(&tinyproxy.url())
        .expect("proxy url")
        .with_basic_auth("ingest", "wrong-pass");
    let (producer, _recorder) = through_proxy(&emulator, proxy);
    let refused = refused_enqueue(&producer).await;
    let error = refused.error();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
    assert!(error.to_string().contains("proxy credentials"), "{error}");
    assert!(!error.to_string().contains("wrong-pass"), "{error}");
    bounded("close", BOUND, producer.close()).await.ok();
    assert!(stored_all(&emulator).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_transport_on_an_amqp_port_fails_with_the_upgrade_named() {
    let emulator = websocket_emulator(false).await;
    // The AMQP port's connection string with the WebSocket transport: the upgrade goes to a
    // port that speaks AMQP, which answers no HTTP.
    let options = fast_options().with_retry_options(fast_retries().with_max_retries(0));
    let (producer, _recorder) = producer_for(
        &emulator.connection_string(),
        over_websockets(&emulator, options),
    );
    let refused = refused_enqueue(&producer).await;
    let error = refused.error();
    assert!(error.to_string().contains("WebSocket upgrade"), "{error}");
    assert!(
        error.to_string().contains("/$servicebus/websocket"),
        "{error}"
    );
    bounded("close", BOUND, producer.close()).await.ok();
}

#[tokio::test]
async fn the_websocket_transport_is_an_option_of_the_client() {
    assert_eq!(
        ProducerClientOptions::default().transport,
        TransportType::AmqpTcp
    );
    let options = ProducerClientOptions::default().with_transport(TransportType::AmqpWebSockets);
    assert_eq!(options.transport, TransportType::AmqpWebSockets);
}
