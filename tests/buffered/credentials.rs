//! Producers made from a namespace, a hub and a credential: a shared access key, and a shared
//! access signature the application replaces before it expires (or does not).

use eventhubs_buffered::auth::{SasCredential, SharedAccessKey};
use eventhubs_buffered::ProducerClientOptions;

use crate::prelude::*;

/// An emulator with TLS: credential constructors name a real namespace, so they use TLS.
async fn tls_emulator() -> Emulator {
    Emulator::builder()
        .hub(HUB, 2)
        .tls(true)
        .start()
        .await
        .expect("emulator")
}

/// Options that reach `emulator` for the namespace `localhost` (its certificate's name).
fn reaching(emulator: &Emulator) -> BufferedProducerOptions {
    fast_options().with_client_options(
        ProducerClientOptions::default()
            .with_custom_endpoint(format!("localhost:{}", emulator.local_addr().port()))
            .with_trusted_root_certificate_pem(emulator.ca_certificate_pem().expect("ca"))
            .with_retry_options(fast_retries()),
    )
}

fn build(
    builder: eventhubs_buffered::BufferedProducerBuilder,
    emulator: &Emulator,
) -> (BufferedProducerClient, Recorder) {
    let recorder = Recorder::default();
    let producer = builder
        .options(reaching(emulator))
        .handler(recorder.clone())
        .build()
        .expect("builds");
    (producer, recorder)
}

#[tokio::test]
async fn a_shared_access_key_signs_the_tokens() {
    let emulator = tls_emulator().await;
    let (name, key) = emulator.shared_access_key();
    let key = SharedAccessKey::new(name, key).expect("key");
    let (producer, recorder) = build(
        BufferedProducerClient::with_shared_access_key("localhost", HUB, key),
        &emulator,
    );
    producer
        .enqueue_event(event("signed here"), to("0"))
        .await
        .unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.succeeded(), vec!["signed here"]);
    assert_eq!(stored(&emulator, "0"), vec!["signed here"]);
}

/// Waits on the real clock until the Unix time is past `unix_seconds` (SAS expiry has one-
/// second resolution and the emulator checks it against the system clock).
async fn wait_past(unix_seconds: u64) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        if now > unix_seconds as f64 + 0.2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_signature_replaced_before_it_expires_keeps_the_producer_publishing() {
    let emulator = tls_emulator().await;
    let short = emulator.sas_token("sb://localhost/hub", Duration::from_secs(2));
    let credential = SasCredential::new(&short).expect("token");
    let first_expiry = credential.expires_at_unix();
    let (producer, recorder) = build(
        BufferedProducerClient::with_sas_credential("localhost", HUB, credential.clone()),
        &emulator,
    );
    producer
        .enqueue_event(event("before"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    credential
        .update(&emulator.sas_token("sb://localhost/hub", Duration::from_secs(3600)))
        .expect("update");
    // The first token's links would be detached at its expiry; the renewal put the new one.
    wait_past(first_expiry).await;
    producer
        .enqueue_event(event("after"), to("0"))
        .await
        .unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.succeeded(), vec!["before", "after"]);
    assert_eq!(stored(&emulator, "0"), vec!["before", "after"]);
}

#[tokio::test]
async fn a_signature_left_to_expire_fails_sends_as_unauthorized_naming_the_expiry() {
    let emulator = tls_emulator().await;
    let short = emulator.sas_token("sb://localhost/hub", Duration::from_secs(2));
    let credential = SasCredential::new(&short).expect("token");
    let expiry = credential.expires_at_unix();
    let (producer, recorder) = build(
        BufferedProducerClient::with_sas_credential("localhost", HUB, credential),
        &emulator,
    );
    producer
        .enqueue_event(event("in time"), to("0"))
        .await
        .unwrap();
    bounded("flush", BOUND, producer.flush()).await.unwrap();
    wait_past(expiry).await;
    producer
        .enqueue_event(event("too late"), to("0"))
        .await
        .unwrap();
    bounded("close", BOUND, producer.close()).await.unwrap();
    assert_eq!(recorder.succeeded(), vec!["in time"]);
    assert_eq!(
        recorder.failed(),
        vec![("too late".to_string(), ErrorKind::Unauthorized)]
    );
    let message = &recorder.failure_messages()["too late"];
    assert!(
        message.contains("expired at") && message.contains("UTC"),
        "{message}"
    );
    assert_eq!(stored(&emulator, "0"), vec!["in time"]);
}
