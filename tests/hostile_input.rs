//! Wrong and hostile input, against the emulator over TCP loopback: malformed connection
//! strings, an unknown event hub, bad enqueue options, a size limit the service lowers while
//! the producer runs, handlers that panic, and enqueues racing close. Each must end in a
//! typed error naming what is wrong (never a secret), or in exactly one handler call per
//! event; never in a panic or a lost event.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use eventhubs_buffered::{
    BufferedProducerClient, CreateBatchOptions, EnqueueOptions, ErrorKind, EventData,
    ProducerClient, ProducerClientOptions, RetryOptions, SendEventOptions, SendFailedContext,
};
use eventhubs_emulator::{partition_index_for_key, FaultCondition, FaultScope};

/// A key that must never show in an error.
const KEY: &str = "TOPSECRET-key-0123456789+/abc=";

/// Retries that would wait 30 s: an answer well before that shows there were none.
fn slow_retries() -> RetryOptions {
    RetryOptions::default()
        .with_delay(Duration::from_secs(30))
        .with_max_delay(Duration::from_secs(60))
        .with_try_timeout(Duration::from_secs(5))
}

// ---------------------------------------------------------------------------------------------
// Connection strings
// ---------------------------------------------------------------------------------------------

/// Malformed connection strings, the kind of error each must give, and text the error must
/// contain to say what is wrong.
fn malformed() -> Vec<(String, ErrorKind, &'static str)> {
    use ErrorKind::{InvalidArgument as Arg, InvalidConnectionString as Cs};
    let ok = format!("Endpoint=sb://ns.example/;SharedAccessKeyName=send;SharedAccessKey={KEY}");
    vec![
        (String::new(), Cs, "`Endpoint` is missing"),
        ("   ".into(), Cs, "`Endpoint` is missing"),
        (";;;".into(), Cs, "`Endpoint` is missing"),
        // The key alone: it reads as an unknown key with an empty value.
        (KEY.into(), Cs, "`Endpoint` is missing"),
        (KEY.trim_end_matches('=').into(), Cs, "segment 1"),
        ("not a connection string".into(), Cs, "segment 1"),
        (
            format!("SharedAccessKeyName=send;SharedAccessKey={KEY};EntityPath=hub"),
            Cs,
            "`Endpoint` is missing",
        ),
        (
            format!("Endpoint=;SharedAccessKeyName=send;SharedAccessKey={KEY};EntityPath=hub"),
            Cs,
            "`Endpoint` is empty",
        ),
        (
            format!("Endpoint=ftp://ns.example;SharedAccessKeyName=send;SharedAccessKey={KEY};EntityPath=hub"),
            Cs,
            "`Endpoint` must start with",
        ),
        (
            format!("Endpoint=sb://ns.example:99999;SharedAccessKeyName=send;SharedAccessKey={KEY};EntityPath=hub"),
            Cs,
            "port",
        ),
        (
            format!("Endpoint=sb://ns.example/hub;SharedAccessKeyName=send;SharedAccessKey={KEY}"),
            Cs,
            "`Endpoint` must not have a path",
        ),
        (
            format!("Endpoint=sb://user:TOPSECRETPASS@ns.example;SharedAccessKeyName=send;SharedAccessKey={KEY};EntityPath=hub"),
            Cs,
            "`Endpoint` must be a host",
        ),
        (
            "Endpoint=sb://ns.example/;EntityPath=hub".into(),
            Cs,
            "credentials are missing",
        ),
        (
            format!("Endpoint=sb://ns.example/;SharedAccessKey={KEY};EntityPath=hub"),
            Cs,
            "`SharedAccessKeyName`",
        ),
        (
            "Endpoint=sb://ns.example/;SharedAccessKeyName=send;EntityPath=hub".into(),
            Cs,
            "`SharedAccessKey`",
        ),
        (
            "Endpoint=sb://ns.example/;SharedAccessKeyName=send;SharedAccessKey=;EntityPath=hub"
                .into(),
            Cs,
            "`SharedAccessKey` is empty",
        ),
        (
            format!("{ok};SharedAccessKey={KEY};EntityPath=hub"),
            Cs,
            "`SharedAccessKey` appears more than once",
        ),
        (
            format!("{ok};EntityPath="),
            Cs,
            "`EntityPath` is empty",
        ),
        (
            format!("{ok};EntityPath=hub;UseDevelopmentEmulator=maybe"),
            Cs,
            "`UseDevelopmentEmulator` must be `true` or `false`",
        ),
        (
            format!("{ok};EntityPath=hub;{}", KEY.trim_end_matches('=')),
            Cs,
            "segment 5",
        ),
        (
            format!("{ok};SharedAccessSignature=SharedAccessSignature sr=x&sig={KEY}&se=1;EntityPath=hub"),
            Cs,
            "not both",
        ),
        // Well formed, but no event hub named anywhere.
        (ok.clone(), Arg, "no event hub name"),
        // Malformed shared access signatures.
        (
            format!("Endpoint=sb://ns.example/;SharedAccessSignature={KEY};EntityPath=hub"),
            Cs,
            "`SharedAccessSignature`",
        ),
        (
            format!("Endpoint=sb://ns.example/;SharedAccessSignature=SharedAccessSignature sr=x&sig={KEY};EntityPath=hub"),
            Cs,
            "`se`",
        ),
        (
            "Endpoint=sb://ns.example/;SharedAccessSignature=SharedAccessSignature sr=x&se=1;EntityPath=hub"
                .into(),
            Cs,
            "`sig`",
        ),
        (
            format!("Endpoint=sb://ns.example/;SharedAccessSignature=SharedAccessSignature sr=x&sig={KEY}&se=soon;EntityPath=hub"),
            Cs,
            "`se`",
        ),
    ]
}

fn assert_names_the_fault(
    what: &str,
    input: &str,
    err: &eventhubs_buffered::Error,
    kind: ErrorKind,
    says: &str,
) {
    let shown = format!("{err} {err:?}");
    assert_eq!(err.kind(), kind, "{what} {input:?}: {err}");
    assert!(!err.is_transient(), "{what} {input:?}: {err}");
    assert!(
        shown.contains(says),
        "{what} {input:?}: {err} should say {says:?}"
    );
    assert!(
        !shown.contains("TOPSECRET"),
        "{what} {input:?}: the error shows the secret: {shown}"
    );
}

#[test]
fn every_malformed_connection_string_is_a_typed_error_naming_the_fault_and_not_the_key() {
    for (input, kind, says) in malformed() {
        let err =
            ProducerClient::from_connection_string(&input, None, ProducerClientOptions::default())
                .expect_err(&input);
        assert_names_the_fault("ProducerClient", &input, &err, kind, says);

        let err = BufferedProducerClient::from_connection_string(&input, None)
            .on_send_failed(|_| async {})
            .build()
            .expect_err(&input);
        assert_names_the_fault("BufferedProducerClient", &input, &err, kind, says);
    }
}

#[test]
fn absurd_connection_strings_fail_fast_without_panicking() {
    let long_key = "k".repeat(1 << 20);
    let cases = [
        format!("Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey={long_key}"),
        ";".repeat(1 << 20),
        "=".repeat(1 << 16),
        "Endpoint=sb://\u{0}\u{7f}/;SharedAccessKeyName=n;SharedAccessKey=k;EntityPath=hub".into(),
        "Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey=k;EntityPath=hub\u{202e}"
            .into(),
        "Endpoint=sb://[::1;SharedAccessKeyName=n;SharedAccessKey=k;EntityPath=hub".into(),
        "Endpoint=sb://ñ.example:0;SharedAccessKeyName=n;SharedAccessKey=k;EntityPath=hub".into(),
    ];
    for input in &cases {
        let started = Instant::now();
        let result =
            ProducerClient::from_connection_string(input, None, ProducerClientOptions::default());
        assert!(started.elapsed() < Duration::from_secs(1));
        if let Err(err) = result {
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::InvalidConnectionString | ErrorKind::InvalidArgument
                ),
                "{err}"
            );
            assert!(err.to_string().len() < 1000, "the error echoes the input");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown event hub
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_event_hub_fails_enqueue_not_found_at_once() {
    let emulator = emulator().await;
    let recorder = Recorder::default();
    let producer = BufferedProducerClient::from_connection_string(
        &emulator.namespace_connection_string(),
        Some("no-such-hub"),
    )
    .options(fast_options().with_retry_options(slow_retries()))
    .handler(recorder.clone())
    .build()
    .expect("builds: the hub is only checked on first use");
    let started = Instant::now();
    let err = bounded(
        "enqueue to an unknown hub",
        Duration::from_secs(20),
        producer.enqueue_event(event("x"), auto()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!err.error().is_transient());
    assert!(started.elapsed() < Duration::from_secs(10), "not retried");
    // Nothing was taken, so nothing is reported; each way in says the same.
    assert_eq!(producer.total_buffered_event_count(), 0);
    let refused = producer
        .try_enqueue_event(event("y"), to("0"))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::NotFound);
    assert_eq!(refused.into_event().body().as_ref(), b"y");
    assert_eq!(
        producer.partition_ids().await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.handled(), 0);
    assert_eq!(emulator.counters().deliveries, 0);
}

// ---------------------------------------------------------------------------------------------
// Enqueue options
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_enqueue_options_are_named_and_the_event_comes_back() {
    let emulator = emulator().await;
    let (producer, recorder) = producer_with(&emulator, fast_options());
    let cases: Vec<(EnqueueOptions, &str)> = vec![
        (
            EnqueueOptions::default()
                .with_partition_id("0")
                .with_partition_key("k"),
            "not both",
        ),
        (keyed(&"é".repeat(129)), "129 characters; at most 128"),
        (to(""), "partition id is empty"),
        (to("4"), "'4' does not exist"),
        (to("-1"), "'-1' does not exist"),
        (to(" 0"), "' 0' does not exist"),
        (to("zero"), "'zero' does not exist"),
    ];
    for (options, says) in &cases {
        let err = producer
            .enqueue_event(event("x"), options.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{options:?}: {err}");
        assert!(err.to_string().contains(says), "{err} should say {says:?}");
        let err = producer
            .enqueue_events(vec![event("a"), event("b")], options.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let refused = producer
            .try_enqueue_event(event("back"), options.clone())
            .await
            .unwrap_err();
        assert!(!refused.is_full());
        assert!(refused.to_string().contains(says), "{refused}");
        assert_eq!(refused.into_event().body().as_ref(), b"back");
    }
    assert_eq!(producer.total_buffered_event_count(), 0);

    // The limits themselves are accepted: 128 characters (256 bytes of UTF-8), and an empty
    // key is no key.
    let longest = "é".repeat(128);
    producer
        .enqueue_event(event("longest-key"), keyed(&longest))
        .await
        .unwrap();
    producer
        .enqueue_event(event("empty-key"), keyed(""))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    let partition = partition_index_for_key(&longest, 4).to_string();
    assert!(stored(&emulator, &partition).contains(&"longest-key".to_string()));
    let mut succeeded = recorder.succeeded();
    succeeded.sort();
    assert_eq!(succeeded, vec!["empty-key", "longest-key"]);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// A size limit lowered while the producer runs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_size_limit_is_learned_and_only_events_over_it_fail() {
    let emulator = emulator().await;
    // A long max_wait_time: batches are only sealed when full, on flush or on close.
    let options = fast_options()
        .with_max_wait_time(Some(Duration::from_secs(30)))
        .with_send_when_idle(false);
    let (producer, recorder) = producer_with(&emulator, options);
    producer
        .enqueue_event(event("warm-up"), to("2"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();

    // The service now takes deliveries of at most 4 KiB; the link announced 1 MiB.
    emulator.faults().set_max_message_size(4096);
    let mut expected = vec!["warm-up".to_string()];
    for i in 0..40 {
        // Mostly 500-byte events; one of 6000 bytes, fine for the old limit, not the new.
        let body = if i == 17 {
            format!("huge-{i}-{}", "h".repeat(6000))
        } else {
            format!("e{i:02}-{}", "x".repeat(500))
        };
        producer
            .enqueue_event(event(body.clone()), to("2"))
            .await
            .unwrap();
        expected.push(body);
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    recorder.assert_exactly_once(&expected);
    let failed = recorder.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].0.starts_with("huge-17-"));
    assert_eq!(failed[0].1, ErrorKind::MessageTooLarge);
    let message = &recorder.failure_messages()[&failed[0].0];
    assert!(message.contains("4096"), "names the new limit: {message}");
    // Everything else is stored, in enqueue order.
    let published: Vec<String> = expected
        .iter()
        .filter(|b| !b.starts_with("huge-"))
        .cloned()
        .collect();
    assert_eq!(stored(&emulator, "2"), published);
    // The refused batch was the only refusal, and later batches are built for the new limit.
    assert_eq!(emulator.counters().rejected, 1);
    let before = emulator.counters().deliveries;
    for i in 0..16 {
        producer
            .enqueue_event(event(format!("later-{i:02}-{}", "y".repeat(500))), to("2"))
            .await
            .unwrap();
    }
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    assert_eq!(
        emulator.counters().rejected,
        1,
        "no refusal after the limit is learned"
    );
    assert!(
        emulator.counters().deliveries - before >= 2,
        "split to fit 4 KiB"
    );
    assert_eq!(recorder.failed().len(), 1);
    bounded("close", BOUND, producer.close()).await.unwrap();
}

#[tokio::test]
async fn producer_client_learns_a_lowered_size_limit_after_a_refusal() {
    let emulator = emulator().await;
    let producer = ProducerClient::from_connection_string(
        &emulator.connection_string(),
        None,
        ProducerClientOptions::default().with_retry_options(fast_retries()),
    )
    .unwrap();
    let options = || CreateBatchOptions::default().with_partition_id("1");
    let mut batch = producer.create_batch(options()).await.unwrap();
    assert_eq!(batch.max_size_in_bytes(), 1024 * 1024);
    for _ in 0..10 {
        batch.try_add(EventData::from(vec![b'z'; 1000])).unwrap();
    }
    emulator.faults().set_max_message_size(2048);
    let err = producer.send_batch(batch).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge, "{err}");
    assert!(!err.is_transient());
    assert_eq!(emulator.counters().rejected, 1, "not retried");
    // The next batch is made for the limit the service takes now.
    let mut batch = producer.create_batch(options()).await.unwrap();
    assert_eq!(batch.max_size_in_bytes(), 2048);
    batch.try_add(EventData::from(vec![b'z'; 1000])).unwrap();
    assert!(batch.try_add(EventData::from(vec![b'z'; 1100])).is_err());
    producer.send_batch(batch).await.unwrap();
    producer
        .send_events(
            vec![EventData::from("small")],
            SendEventOptions::default().with_partition_id("1"),
        )
        .await
        .unwrap();
    assert_eq!(emulator.event_count("hub", "1").unwrap(), 2);
    producer.close().await;
}

// ---------------------------------------------------------------------------------------------
// Handlers that panic
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_panicking_failure_handler_does_not_stop_the_producer() {
    let emulator = emulator().await;
    let failures = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(fast_options())
            .on_send_succeeded({
                let seen = seen.clone();
                move |context| {
                    seen.lock()
                        .unwrap()
                        .extend(context.event_data().map(|e| (body_text(e), true)));
                    async {}
                }
            })
            .on_send_failed({
                let failures = failures.clone();
                let seen = seen.clone();
                move |context: SendFailedContext| {
                    let n = failures.fetch_add(1, Ordering::SeqCst);
                    seen.lock()
                        .unwrap()
                        .extend(context.event_data().map(|e| (body_text(e), false)));
                    // The first call panics before its future exists, the second inside it.
                    assert!(n != 0, "a failure handler bug (expected by this test)");
                    async move {
                        if n == 1 {
                            panic!("another failure handler bug (expected by this test)");
                        }
                    }
                }
            })
            .build()
            .unwrap();
    let scope = FaultScope::partition(HUB, "0");
    for round in 0..3 {
        emulator
            .faults()
            .reject_next(1, FaultCondition::ArgumentError, scope.clone());
        producer
            .enqueue_event(event(format!("rejected-{round}")), to("0"))
            .await
            .unwrap();
        bounded("flush", BOUND, producer.flush()).await.unwrap();
        producer
            .enqueue_event(event(format!("fine-{round}")), to("0"))
            .await
            .unwrap();
        producer
            .enqueue_event(event(format!("elsewhere-{round}")), auto())
            .await
            .unwrap();
        bounded("flush", BOUND, producer.flush()).await.unwrap();
    }
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        3,
        "called for every failure"
    );
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let mut expected: Vec<(String, bool)> = (0..3)
        .flat_map(|r| {
            [
                (format!("rejected-{r}"), false),
                (format!("fine-{r}"), true),
                (format!("elsewhere-{r}"), true),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(emulator.total_event_count(HUB).unwrap(), 6);
}

// ---------------------------------------------------------------------------------------------
// Enqueues racing close
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_racing_close_are_either_refused_or_reported_once() {
    let emulator = emulator().await;
    let (producer, recorder) = producer_with(&emulator, fast_options());
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let producer = producer.clone();
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let body = format!("t{t}-{i}");
                let options = if i % 2 == 0 { auto() } else { keyed(&body) };
                let result = if i % 3 == 0 {
                    producer
                        .try_enqueue_event(event(body.clone()), options)
                        .await
                        .map_err(|e| (!e.is_full()).then(|| e.kind()))
                } else {
                    producer
                        .enqueue_event(event(body.clone()), options)
                        .await
                        .map_err(|e| Some(e.kind()))
                };
                match result {
                    Ok(_) => accepted.lock().unwrap().push(body),
                    Err(Some(ErrorKind::Closed)) => return i,
                    Err(None) => {} // full: try the next one
                    Err(other) => panic!("{body}: unexpected {other:?}"),
                }
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            unreachable!()
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    bounded("close", BOUND, producer.close()).await.unwrap();
    for task in tasks {
        let tried = bounded("an enqueuer stops", BOUND, task).await.unwrap();
        assert!(tried > 0);
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(!accepted.is_empty());
    // Every accepted event had its handler call before close returned, and was stored.
    recorder.assert_exactly_once(&accepted);
    assert_eq!(recorder.succeeded().len(), accepted.len());
    assert_eq!(stored_all(&emulator).len(), accepted.len());
}

#[tokio::test]
async fn a_requeue_from_a_handler_during_close_is_refused_and_hands_the_events_back() {
    let emulator = emulator().await;
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let producer =
        BufferedProducerClient::from_connection_string(&emulator.connection_string(), None)
            .options(
                fast_options()
                    .with_max_wait_time(Some(Duration::from_secs(30)))
                    .with_send_when_idle(false),
            )
            .on_send_failed({
                let outcomes = outcomes.clone();
                move |context: SendFailedContext| {
                    let outcomes = outcomes.clone();
                    async move {
                        let outcome = match context.requeue().await {
                            Ok(_) => Ok(()),
                            Err(refused) => {
                                let kind = refused.error().kind();
                                let keys: Vec<Option<String>> = refused
                                    .events()
                                    .iter()
                                    .map(|e| e.partition_key().map(str::to_string))
                                    .collect();
                                let bodies: Vec<String> = refused
                                    .events()
                                    .iter()
                                    .map(|e| body_text(&e.event))
                                    .collect();
                                Err((kind, bodies, keys))
                            }
                        };
                        outcomes.lock().unwrap().push(outcome);
                    }
                }
            })
            .build()
            .unwrap();
    emulator.faults().reject_next(
        1,
        FaultCondition::ArgumentError,
        FaultScope::partition(HUB, "3"),
    );
    producer
        .enqueue_event(event("refused-a"), to("3"))
        .await
        .unwrap();
    producer
        .enqueue_event(event("refused-b"), to("3"))
        .await
        .unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(
        outcomes,
        vec![Err((
            ErrorKind::Closed,
            vec!["refused-a".to_string(), "refused-b".to_string()],
            vec![None, None]
        ))],
        "the handler gets the events back, none is lost"
    );
    assert_eq!(producer.total_buffered_event_count(), 0);
}
