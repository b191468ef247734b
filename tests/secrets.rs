//! Secrets never show: a full session (connect, put-token, send, token renewal, a refused
//! renewal, a retried send, a reconnect, a wrong key, a ready-made signature, TLS) runs with
//! every `tracing` event and span field and every `log` record captured at TRACE, from every
//! crate (ours, the emulator's, fe2o3-amqp's, rustls's), and the capture is searched for the
//! keys and for any SAS token or signature. `Debug` and `Display` of everything that holds or
//! meets a secret are searched too. And TLS: on by default, certificates always verified.
//!
//! fe2o3-amqp logs every frame at TRACE (the `$cbs` put-token carries the token) only when its
//! optional `tracing` or `log` feature is enabled; this crate does not enable them, which the
//! session proves by capturing no frame. An application that enables them itself should
//! filter `fe2o3_amqp` below TRACE (see the README).

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use eventhubs_buffered::auth::{SharedAccessKey, SharedAccessSignature};
use eventhubs_buffered::{
    BufferedProducerClient, BufferedProducerOptions, ConnectionString, ErrorKind, EventData,
    ProducerClient, ProducerClientOptions, RetryOptions, SendEventOptions,
};
use eventhubs_emulator::{Emulator, FaultCondition, FaultScope};

const KEY_NAME: &str = "send-policy";
/// The namespace key of the session's emulators: it must never show.
const KEY: &str = "S3cr3t-Session-Key-Value-0123456789abcdef=";

// ---------------------------------------------------------------------------------------------
// Capturing everything
// ---------------------------------------------------------------------------------------------

/// Everything logged in this test process, as text.
fn captured() -> &'static Arc<Mutex<String>> {
    static CAPTURED: OnceLock<Arc<Mutex<String>>> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let out = Arc::new(Mutex::new(String::new()));
        tracing::subscriber::set_global_default(Capture::new(out.clone()))
            .expect("no other subscriber in this test binary");
        log::set_boxed_logger(Box::new(LogCapture { out: out.clone() }))
            .expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        out
    })
}

/// Panics if `text` shows a key or any part of a SAS token.
fn assert_no_secret(what: &str, text: &str, extra: &[&str]) {
    let mut secrets = vec![
        KEY.to_string(),
        KEY.trim_end_matches('=').to_string(),
        "sig=".to_string(),
        "SharedAccessSignature sr".to_string(),
    ];
    secrets.extend(extra.iter().map(|s| s.to_string()));
    for secret in &secrets {
        if let Some(at) = text.find(secret.as_str()) {
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!(
                "{what} shows a secret ({secret:?}) in: {}",
                &text[start..end]
            );
        }
    }
}

async fn emulator_with_key(tls: bool) -> Emulator {
    Emulator::builder()
        .hub(HUB, 2)
        .shared_access_key(KEY_NAME, KEY)
        .tls(tls)
        .start()
        .await
        .expect("emulator starts")
}

fn session_retries() -> RetryOptions {
    RetryOptions::default()
        .with_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50))
        .with_try_timeout(Duration::from_secs(2))
}

// ---------------------------------------------------------------------------------------------
// The session
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_logs_no_key_and_no_token() {
    let out = captured().clone();
    let emulator = emulator_with_key(false).await;
    // 3-second tokens: renewed after 1.5 s.
    let client_options = ProducerClientOptions::default()
        .with_retry_options(session_retries())
        .with_token_validity(Duration::from_secs(3));
    let options = BufferedProducerOptions::default()
        .with_max_wait_time(Some(Duration::from_millis(20)))
        .with_client_options(client_options.clone());
    let (producer, recorder) = producer_with(&emulator, options.clone());
    let mut expected = Vec::new();
    let mut send = |round: &str| {
        let producer = producer.clone();
        let bodies: Vec<String> = (0..4).map(|i| format!("{round}-{i}")).collect();
        expected.extend(bodies.clone());
        async move {
            for (i, body) in bodies.into_iter().enumerate() {
                producer
                    .enqueue_event(event(body), to(&(i % 2).to_string()))
                    .await
                    .expect("enqueue");
            }
            bounded("flush", BOUND, producer.flush())
                .await
                .expect("flush");
        }
    };

    send("connect").await;
    // A retried send: the retry is logged with its error.
    emulator.faults().reject_next(
        1,
        FaultCondition::InternalError,
        FaultScope::partition(HUB, "0"),
    );
    send("retried").await;
    // The first renewal (at 1.5 s) is refused, and logged; the next one goes through.
    emulator
        .faults()
        .reject_tokens_for(Duration::from_millis(1800));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send("renewed").await;
    // A lost connection: reconnect, put-token again.
    emulator.faults().close_connections();
    send("reconnected").await;
    bounded("close", BOUND, producer.close())
        .await
        .expect("close");
    recorder.assert_exactly_once(&expected);
    assert_eq!(recorder.failed(), vec![]);

    // A wrong key: refused, and the error is logged by the application.
    let wrong = emulator
        .connection_string()
        .replace(KEY, "Wr0ng-Key-Value-That-Must-Not-Show");
    let (bad, _) = producer_for(&wrong, options.clone());
    let err = bad.enqueue_event(event("x"), auto()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    tracing::error!(error = %err, debug = ?err, "the application logs the error");
    bounded("close", BOUND, bad.close()).await.unwrap();

    // A ready-made signature in the connection string.
    let token = emulator.sas_token("amqp://127.0.0.1/hub", Duration::from_secs(600));
    let signature = token
        .split('&')
        .find_map(|f| f.strip_prefix("sig="))
        .expect("sig")
        .to_string();
    let with_signature = format!(
        "Endpoint={};SharedAccessSignature={token};UseDevelopmentEmulator=true;EntityPath=hub",
        emulator.endpoint()
    );
    let client =
        ProducerClient::from_connection_string(&with_signature, None, client_options.clone())
            .expect("client");
    client
        .send_events(
            vec![EventData::from("signed")],
            SendEventOptions::default().with_partition_id("1"),
        )
        .await
        .expect("sent with a ready-made signature");
    tracing::info!(client = ?client, "the application logs the client");
    client.close().await;

    // TLS, so that rustls logs too.
    let secure = emulator_with_key(true).await;
    let tls_options =
        options
            .clone()
            .with_client_options(client_options.with_trusted_root_certificate_pem(
                secure.ca_certificate_pem().expect("ca").to_string(),
            ));
    let (producer, recorder) = producer_with(&secure, tls_options);
    producer
        .enqueue_event(event("secure"), to("0"))
        .await
        .unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.succeeded(), vec!["secure"]);

    let text = out.lock().unwrap().clone();
    // The capture is real: it holds what the session must have logged.
    for expected in [
        "connection opened",
        "token renewal failed",
        "com.microsoft:auth-failed",
        "retry",
        "messaging.batch.message_count",
        "the application logs the error",
        "eventhubs_emulator",
    ] {
        assert!(
            text.contains(expected),
            "the capture lacks {expected:?}; it has {} lines:\n{}",
            text.lines().count(),
            text.lines().take(40).collect::<Vec<_>>().join("\n")
        );
    }
    assert!(
        text.contains("LOG "),
        "rustls's log records are captured too"
    );
    assert_no_secret(
        "the logs",
        &text,
        &[
            &signature,
            "Wr0ng-Key-Value-That-Must-Not-Show",
            &token[token.len() / 2..],
        ],
    );
    // fe2o3-amqp logs nothing (its frame logging is off), so no put-token frame is logged.
    assert!(!text.contains(" fe2o3_amqp::"), "fe2o3-amqp logs");
}

// ---------------------------------------------------------------------------------------------
// Debug and Display
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn debug_and_display_never_show_a_secret() {
    let with_key = format!(
        "Endpoint=sb://ns.example/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY};EntityPath=hub"
    );
    let signature_value = "SharedAccessSignature sr=amqps%3a%2f%2fns.example%2fhub&sig=Q2xvc2VseUd1YXJkZWRTaWduYXR1cmU%3D&se=4102444800&skn=send";
    let with_signature =
        format!("Endpoint=sb://ns.example/;SharedAccessSignature={signature_value};EntityPath=hub");
    let extra = ["Q2xvc2VseUd1YXJkZWRTaWduYXR1cmU"];
    let mut shown = Vec::new();

    for cs in [&with_key, &with_signature] {
        let parsed = ConnectionString::parse(cs).expect("parses");
        shown.push(format!("{parsed:?} {parsed:#?}"));
        let client =
            ProducerClient::from_connection_string(cs, None, ProducerClientOptions::default())
                .expect("client");
        shown.push(format!("{client:?} {client:#?}"));
        let builder = BufferedProducerClient::from_connection_string(cs, None)
            .options(BufferedProducerOptions::default())
            .on_send_failed(|_| async {});
        shown.push(format!("{builder:?}"));
        let producer = builder.build().expect("producer");
        shown.push(format!("{producer:?} {:?}", producer.options()));
        // Errors met along the way: an event hub that differs, a closed producer.
        let err = BufferedProducerClient::from_connection_string(cs, Some("other"))
            .on_send_failed(|_| async {})
            .build()
            .unwrap_err();
        shown.push(format!("{err} {err:?}"));
        producer.close().await.unwrap();
        let refused = producer
            .try_enqueue_event(EventData::from("x"), Default::default())
            .await
            .unwrap_err();
        shown.push(format!("{refused} {refused:?}"));
    }
    let key = SharedAccessKey::new(KEY_NAME, KEY).unwrap();
    shown.push(format!("{key:?} {key:#?}"));
    let sas = SharedAccessSignature::parse(signature_value).unwrap();
    shown.push(format!("{sas:?} {sas:#?}"));
    // A made token is the secret itself: only its Debug wrapper types must hide it.
    let token = eventhubs_buffered::auth::sas::generate_sas_token("amqps://ns/hub", &key, 1);
    assert!(
        token.contains("sig="),
        "a real token, so the check below means something"
    );
    for text in &shown {
        assert!(text.len() > 10, "{text}");
        assert_no_secret("Debug/Display", text, &extra);
    }
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_normal_connection_string_requires_tls() {
    // The emulator speaks plain AMQP; without UseDevelopmentEmulator=true the client insists
    // on TLS, so the handshake fails, and is not retried.
    let emulator = emulator_with_key(false).await;
    let without_flag = emulator
        .connection_string()
        .replace("UseDevelopmentEmulator=true;", "");
    assert_ne!(without_flag, emulator.connection_string());
    let retry = RetryOptions::default()
        .with_delay(Duration::from_secs(30))
        .with_max_delay(Duration::from_secs(30))
        .with_try_timeout(Duration::from_secs(5));
    let (producer, recorder) = producer_for(
        &without_flag,
        BufferedProducerOptions::default().with_retry_options(retry),
    );
    let started = Instant::now();
    let err = bounded(
        "enqueue without TLS on the other side",
        Duration::from_secs(20),
        producer.enqueue_event(event("x"), auto()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "not retried");
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.handled(), 0);
    assert_eq!(emulator.counters().deliveries, 0);
}

#[tokio::test]
async fn an_untrusted_or_misnamed_certificate_is_refused() {
    let secure = emulator_with_key(true).await;
    let other = emulator_with_key(true).await;
    let cs = secure.connection_string();
    assert!(!cs.contains("UseDevelopmentEmulator"));
    let retry = RetryOptions::default()
        .with_delay(Duration::from_secs(30))
        .with_max_delay(Duration::from_secs(30))
        .with_try_timeout(Duration::from_secs(5));
    let base = ProducerClientOptions::default().with_retry_options(retry);
    let trusting = |pem: &str| {
        BufferedProducerOptions::default()
            .with_client_options(base.clone().with_trusted_root_certificate_pem(pem))
    };
    let cases = [
        (
            "no extra root",
            cs.clone(),
            BufferedProducerOptions::default().with_client_options(base.clone()),
        ),
        (
            "another emulator's root",
            cs.clone(),
            trusting(other.ca_certificate_pem().unwrap()),
        ),
        (
            // The right root, but the certificate names localhost, not this namespace.
            "a certificate for another name",
            cs.replace("sb://localhost:", "sb://127.0.0.2:"),
            trusting(secure.ca_certificate_pem().unwrap()),
        ),
    ];
    for (what, connection_string, options) in cases {
        let options = if what == "a certificate for another name" {
            let mut options = options;
            options.client.custom_endpoint =
                Some(format!("127.0.0.1:{}", secure.local_addr().port()));
            options
        } else {
            options
        };
        let (producer, _) = producer_for(&connection_string, options);
        let started = Instant::now();
        let err = bounded(what, Duration::from_secs(20), producer.partition_ids())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{what}: {err}");
        assert!(!err.is_transient());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not retried"
        );
        bounded("close", BOUND, producer.close()).await.unwrap();
    }
    assert_eq!(secure.counters().deliveries, 0);

    // Trusting its root explicitly is what makes it work.
    let (producer, recorder) = producer_for(&cs, trusting(secure.ca_certificate_pem().unwrap()));
    producer
        .enqueue_event(event("trusted"), to("1"))
        .await
        .unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.succeeded(), vec!["trusted"]);
}

#[test]
fn the_library_has_no_way_to_skip_certificate_verification() {
    // rustls can only skip verification through its `dangerous()` API or a custom verifier;
    // the library uses neither, so no option or code path can turn verification off.
    let mut sources = Vec::new();
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push(path);
            }
        }
    }
    assert!(sources.len() > 10);
    for path in sources {
        let text = std::fs::read_to_string(&path).expect("read");
        for forbidden in [
            "dangerous(",
            "ServerCertVerifier",
            "danger::",
            "NoCertificateVerification",
            "danger_accept_invalid",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}",
                path.display()
            );
        }
    }
}
