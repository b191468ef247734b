//! The builder: options and handlers checked at build, and errors a bad endpoint or key gives at the first enqueue.

use crate::prelude::*;

const OFFLINE: &str = "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true;EntityPath=hub";

fn build_error(options: BufferedProducerOptions) -> eventhubs_buffered::Error {
    BufferedProducerClient::from_connection_string(OFFLINE, None)
        .options(options)
        .handler(Recorder::default())
        .build()
        .expect_err("the options are refused")
}

#[test]
fn build_requires_a_failure_handler() {
    let err = BufferedProducerClient::from_connection_string(OFFLINE, None)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("failure handler"), "{err}");
    assert!(err.to_string().contains("on_send_failed"), "{err}");

    // A success closure alone is not enough.
    let err = BufferedProducerClient::from_connection_string(OFFLINE, None)
        .on_send_succeeded(|_| async {})
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("failure handler"), "{err}");

    // A handler and closures together are refused, whichever closure it is.
    for err in [
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .handler(Recorder::default())
            .on_send_failed(|_| async {})
            .build()
            .unwrap_err(),
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .on_send_succeeded(|_| async {})
            .handler(Recorder::default())
            .build()
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("not both"), "{err}");
    }

    // Each valid way builds.
    assert!(
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .on_send_failed(|_| async {})
            .build()
            .is_ok()
    );
    assert!(
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .on_send_succeeded(|_| async {})
            .on_send_failed(|_| async {})
            .build()
            .is_ok()
    );
    assert!(
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .handler(Recorder::default())
            .build()
            .is_ok()
    );
}

#[test]
fn build_names_every_option_out_of_range() {
    let d = BufferedProducerOptions::default;
    let cases: Vec<(BufferedProducerOptions, &str)> = vec![
        (
            d().with_max_wait_time(Some(Duration::ZERO)),
            "max_wait_time",
        ),
        (
            d().with_max_wait_time(Some(Duration::from_secs(3601))),
            "max_wait_time",
        ),
        (
            d().with_max_buffered_events_per_partition(0),
            "max_buffered_events_per_partition",
        ),
        (
            d().with_max_buffered_events_per_partition(1_000_001),
            "max_buffered_events_per_partition",
        ),
        (
            d().with_max_concurrent_sends_per_partition(0),
            "max_concurrent_sends_per_partition",
        ),
        (
            d().with_max_concurrent_sends_per_partition(101),
            "max_concurrent_sends_per_partition",
        ),
        (d().with_max_concurrent_sends(0), "max_concurrent_sends"),
        (d().with_max_buffered_bytes(65535), "max_buffered_bytes"),
        (d().with_max_buffered_bytes(0), "max_buffered_bytes"),
        (
            d().with_partition_refresh_interval(Duration::from_millis(999)),
            "partition_refresh_interval",
        ),
        (
            d().with_retry_options(RetryOptions::default().with_max_retries(101)),
            "max_retries",
        ),
        (
            d().with_retry_options(RetryOptions::default().with_delay(Duration::ZERO)),
            "delay",
        ),
        (
            d().with_retry_options(RetryOptions::default().with_try_timeout(Duration::ZERO)),
            "try_timeout",
        ),
        (
            d().with_retry_options(
                RetryOptions::default()
                    .with_delay(Duration::from_secs(2))
                    .with_max_delay(Duration::from_secs(1)),
            ),
            "max_delay",
        ),
    ];
    for (options, field) in cases {
        let err = build_error(options.clone());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{options:?}");
        assert!(
            err.to_string().contains(field),
            "'{err}' should name {field}"
        );
    }

    // The bounds themselves are accepted.
    for options in [
        d().with_max_concurrent_sends_per_partition(1),
        d().with_max_concurrent_sends_per_partition(100),
        d().with_max_buffered_events_per_partition(1),
        d().with_max_buffered_bytes(65536),
        d().with_max_wait_time(None),
        d().with_max_wait_time(Some(Duration::from_secs(3600))),
        d().with_partition_refresh_interval(Duration::from_secs(1)),
    ] {
        BufferedProducerClient::from_connection_string(OFFLINE, None)
            .options(options.clone())
            .handler(Recorder::default())
            .build()
            .unwrap_or_else(|e| panic!("{options:?} refused: {e}"));
    }
}

#[test]
fn build_checks_the_event_hub_name() {
    let err = BufferedProducerClient::from_connection_string(OFFLINE, Some("other"))
        .handler(Recorder::default())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("other"), "{err}");

    // The same name (in any case) is fine; a name without EntityPath is used.
    let same = BufferedProducerClient::from_connection_string(OFFLINE, Some("HUB"))
        .handler(Recorder::default())
        .build()
        .expect("same hub");
    assert_eq!(same.eventhub_name(), "hub");
    let namespace_only = OFFLINE.trim_end_matches("EntityPath=hub");
    let named = BufferedProducerClient::from_connection_string(namespace_only, Some("orders"))
        .handler(Recorder::default())
        .build()
        .expect("named hub");
    assert_eq!(named.eventhub_name(), "orders");
    let err = BufferedProducerClient::from_connection_string(namespace_only, None)
        .handler(Recorder::default())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn a_wrong_key_makes_enqueue_fail_unauthorized_at_once() {
    let emulator = emulator().await;
    let wrong = emulator
        .connection_string()
        .replace(emulator.shared_access_key().1, "not-the-key");
    // Retries would wait 30 s: an answer well before shows there were none.
    let options = fast_options().with_retry_options(
        RetryOptions::default()
            .with_delay(Duration::from_secs(30))
            .with_max_delay(Duration::from_secs(60))
            .with_try_timeout(Duration::from_secs(5)),
    );
    let recorder = Recorder::default();
    let producer = BufferedProducerClient::from_connection_string(&wrong, None)
        .options(options)
        .handler(recorder.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = bounded(
        "enqueue with a wrong key",
        Duration::from_secs(20),
        producer.enqueue_event(event("x"), auto()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!err.to_string().contains("not-the-key"));
    // Nothing is buffered; a later enqueue tries again and fails the same way.
    assert_eq!(producer.total_buffered_event_count(), 0);
    let err = bounded(
        "second enqueue",
        Duration::from_secs(20),
        producer.enqueue_event(event("y"), to("0")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    let err = bounded(
        "try_enqueue",
        Duration::from_secs(20),
        producer.try_enqueue_event(event("z"), auto()),
    )
    .await
    .unwrap_err();
    assert_eq!(Some(err.kind()), Some(ErrorKind::Unauthorized));
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.handled(), 0);
    assert_eq!(emulator.counters().deliveries, 0);
}

#[tokio::test]
async fn an_endpoint_where_nothing_listens_fails_within_the_retry_bound() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cs = format!(
        "Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true;EntityPath=hub"
    );
    let retry = RetryOptions::default()
        .with_max_retries(3)
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_try_timeout(Duration::from_secs(1));
    // Four tries of at most 1 s each, and three pauses of at most 50 ms.
    let bound = Duration::from_secs(4) + Duration::from_millis(150);
    let producer = BufferedProducerClient::from_connection_string(&cs, None)
        .options(fast_options().with_retry_options(retry))
        .on_send_failed(|_| async {})
        .build()
        .unwrap();
    let started = Instant::now();
    let err = bounded(
        "enqueue to nowhere",
        bound + Duration::from_secs(5),
        producer.enqueue_event(event("x"), auto()),
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::ConnectionFailed, "{err}");
    assert_eq!(
        err.into_event().body().as_ref(),
        b"x",
        "the event comes back"
    );
    assert!(
        elapsed < bound,
        "{elapsed:?} is beyond the retry bound {bound:?}"
    );
    assert_eq!(producer.total_buffered_event_count(), 0);
    let err = bounded(
        "partition_ids",
        bound + Duration::from_secs(5),
        producer.partition_ids(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionFailed);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn a_host_that_does_not_resolve_fails_at_once_naming_it_and_is_not_retried() {
    // `.invalid` never resolves (RFC 2606).
    let cs = "Endpoint=sb://no-such-namespace.invalid;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=hub";
    let retry = RetryOptions::default().with_delay(Duration::from_secs(5));
    let producer = BufferedProducerClient::from_connection_string(cs, None)
        .options(fast_options().with_retry_options(retry))
        .on_send_failed(|_| async {})
        .build()
        .unwrap();
    let started = Instant::now();
    let err = bounded(
        "enqueue to a name that does not resolve",
        Duration::from_secs(30),
        producer.enqueue_event(event("x"), auto()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostNotFound, "{err}");
    assert!(!err.error().is_transient());
    assert!(
        err.to_string().contains("no-such-namespace.invalid"),
        "names the host: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried (a retry would pause 5 s first)"
    );
    assert_eq!(err.into_event().body().as_ref(), b"x");
}

#[tokio::test]
async fn tls_to_a_plain_amqp_port_hints_at_the_development_emulator_flag() {
    let emulator = emulator().await;
    // The emulator's own connection string without `UseDevelopmentEmulator=true`: TLS to a
    // port that speaks plain AMQP.
    let cs = emulator
        .connection_string()
        .replace("UseDevelopmentEmulator=true;", "");
    assert!(!cs.contains("UseDevelopmentEmulator"));
    let retry = RetryOptions::default().with_max_retries(0);
    let producer = BufferedProducerClient::from_connection_string(&cs, None)
        .options(fast_options().with_retry_options(retry))
        .on_send_failed(|_| async {})
        .build()
        .unwrap();
    let err = bounded(
        "enqueue over TLS to a plain port",
        BOUND,
        producer.enqueue_event(event("x"), auto()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(
        err.to_string().contains("UseDevelopmentEmulator=true"),
        "{err}"
    );
}
