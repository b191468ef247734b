//! ProducerClient against the emulator over TCP loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventhubs_buffered::{
    CreateBatchOptions, ErrorKind, EventData, ProducerClient, ProducerClientOptions, PropertyValue,
    RetryOptions, SendEventOptions,
};
use eventhubs_emulator::{partition_index_for_key, Emulator, FaultCondition, FaultScope, Value};

async fn emulator() -> Emulator {
    Emulator::builder()
        .hub("hub", 4)
        .start()
        .await
        .expect("emulator starts")
}

fn fast_retries() -> ProducerClientOptions {
    ProducerClientOptions::default().with_retry_options(
        RetryOptions::default()
            .with_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(50))
            .with_try_timeout(Duration::from_secs(5)),
    )
}

fn client(emulator: &Emulator, options: ProducerClientOptions) -> ProducerClient {
    ProducerClient::from_connection_string(&emulator.connection_string(), None, options)
        .expect("client")
}

#[tokio::test]
async fn reads_hub_and_partition_properties() {
    let emulator = emulator().await;
    let producer = client(&emulator, fast_retries());
    let props = producer.eventhub_properties().await.expect("properties");
    assert_eq!(props.name, "hub");
    assert_eq!(props.partition_ids, vec!["0", "1", "2", "3"]);
    assert_eq!(producer.partition_ids().await.expect("ids").len(), 4);
    let p = producer.partition_properties("2").await.expect("partition");
    assert_eq!(p.id, "2");
    assert!(p.is_empty);
    assert_eq!(p.last_enqueued_sequence_number, -1);
    producer
        .send_events(
            vec![EventData::from("x")],
            SendEventOptions::default().with_partition_id("2"),
        )
        .await
        .expect("send");
    let p = producer.partition_properties("2").await.expect("partition");
    assert!(!p.is_empty);
    assert_eq!(p.last_enqueued_sequence_number, 0);
    let err = producer.partition_properties("9").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    producer.close().await;
}

#[tokio::test]
async fn sent_events_read_back_byte_for_byte() {
    let emulator = emulator().await;
    let producer = client(&emulator, fast_retries());
    let event = EventData::from("hello")
        .with_property("count", 7i64)
        .with_property("ok", true)
        .with_property("name", "sensor")
        .with_message_id("m-1")
        .with_content_type("text/plain");
    producer
        .send_events(
            vec![event.clone(), EventData::from("second")],
            SendEventOptions::default().with_partition_id("1"),
        )
        .await
        .expect("send");
    let stored = emulator.events("hub", "1").expect("events");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].body().expect("body").as_ref(), b"hello");
    assert_eq!(
        stored[0].property("count").expect("decode"),
        Some(Value::Long(7))
    );
    assert_eq!(
        stored[0].property("ok").expect("decode"),
        Some(Value::Bool(true))
    );
    assert_eq!(
        stored[0].property("name").expect("decode"),
        Some(Value::String("sensor".into()))
    );
    let message = stored[0].message().expect("decode");
    let properties = message.properties.expect("properties");
    assert_eq!(
        format!("{:?}", properties.message_id),
        "Some(String(\"m-1\"))"
    );
    assert_eq!(stored[1].body().expect("body").as_ref(), b"second");
    assert_eq!(stored[0].sequence_number, 0);
    assert_eq!(stored[1].sequence_number, 1);
    let _ = PropertyValue::Bool(true);
    producer.close().await;
}

#[tokio::test]
async fn keyed_batches_land_where_the_hash_says_with_the_key_stamped() {
    let emulator = emulator().await;
    let producer = client(&emulator, fast_retries());
    for key in ["alphabet", "TheBestParitionEver", "device-42", "k"] {
        let events = (0..5)
            .map(|i| EventData::from(format!("{key}-{i}")))
            .collect();
        producer
            .send_events(events, SendEventOptions::default().with_partition_key(key))
            .await
            .expect("send");
        let partition = partition_index_for_key(key, 4).to_string();
        let stored = emulator.events("hub", &partition).expect("events");
        let mine: Vec<_> = stored
            .iter()
            .filter(|e| e.partition_key().expect("decode").as_deref() == Some(key))
            .map(|e| String::from_utf8(e.body().expect("body").to_vec()).expect("utf8"))
            .collect();
        let expected: Vec<_> = (0..5).map(|i| format!("{key}-{i}")).collect();
        assert_eq!(mine, expected, "key {key} in partition {partition}");
    }
    producer.close().await;
}

#[tokio::test]
async fn a_batch_filled_to_its_maximum_is_accepted() {
    let emulator = emulator().await;
    let producer = client(&emulator, fast_retries());
    let mut batch = producer
        .create_batch(CreateBatchOptions::default().with_partition_id("0"))
        .await
        .expect("batch");
    assert_eq!(batch.max_size_in_bytes(), 1024 * 1024);
    let mut added = 0;
    while batch.try_add(EventData::from(vec![b'e'; 100])).is_ok() {
        added += 1;
    }
    // Top it up with smaller events until not even one byte more fits.
    while batch.try_add(EventData::from(vec![])).is_ok() {
        added += 1;
    }
    assert!(
        batch.size_in_bytes() > batch.max_size_in_bytes() - 10,
        "{}",
        batch.size_in_bytes()
    );
    producer
        .send_batch(batch)
        .await
        .expect("a full batch is accepted");
    assert_eq!(emulator.event_count("hub", "0").expect("count"), added);
    producer.close().await;
}

#[tokio::test]
async fn an_event_too_large_for_any_batch_fails_before_the_wire() {
    let emulator = Emulator::builder()
        .hub("hub", 1)
        .max_message_size(4096)
        .start()
        .await
        .expect("emulator");
    let producer = client(&emulator, fast_retries());
    let err = producer
        .send_events(
            vec![EventData::from(vec![0u8; 5000])],
            SendEventOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
    assert_eq!(emulator.counters().deliveries, 0);
    let mut batch = producer
        .create_batch(CreateBatchOptions::default())
        .await
        .expect("batch");
    assert_eq!(batch.max_size_in_bytes(), 4096);
    let refused = batch.try_add(EventData::from(vec![0u8; 5000])).unwrap_err();
    assert!(refused.is_too_large_for_any_batch());
    assert_eq!(refused.to_error().kind(), ErrorKind::MessageTooLarge);
    let err = producer
        .create_batch(CreateBatchOptions::default().with_max_size_in_bytes(5000))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    producer.close().await;
}

#[tokio::test]
async fn a_rejected_token_is_unauthorized_without_retries() {
    let emulator = emulator().await;
    let wrong = emulator
        .connection_string()
        .replace(emulator.shared_access_key().1, "not-the-key");
    let options = ProducerClientOptions::default().with_retry_options(
        RetryOptions::default()
            .with_delay(Duration::from_secs(30))
            .with_max_delay(Duration::from_secs(60)),
    );
    let producer = ProducerClient::from_connection_string(&wrong, None, options).expect("client");
    let started = Instant::now();
    let err = producer
        .send_events(vec![EventData::from("x")], SendEventOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    // The emulator refuses the token as the service does; the client maps the service's
    // condition to Unauthorized and keeps it.
    assert_eq!(err.condition(), Some("com.microsoft:auth-failed"), "{err}");
    assert!(err.to_string().contains("InvalidSignature"), "{err}");
    assert!(!err.to_string().contains("not-the-key"));
    // A retry would have waited 30 s first.
    assert!(started.elapsed() < Duration::from_secs(20));
    producer.close().await;
}

#[tokio::test]
async fn an_unknown_hub_is_not_found() {
    let emulator = emulator().await;
    let producer = ProducerClient::from_connection_string(
        &emulator.namespace_connection_string(),
        Some("nope"),
        fast_retries(),
    )
    .expect("client");
    let err = producer
        .send_events(vec![EventData::from("x")], SendEventOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = producer.eventhub_properties().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    producer.close().await;
}

#[tokio::test]
async fn server_busy_twice_is_sent_on_the_third_try() {
    let emulator = emulator().await;
    let producer = client(&emulator, fast_retries());
    emulator.faults().reject_next(
        2,
        FaultCondition::ServerBusy,
        FaultScope::partition("hub", "0"),
    );
    producer
        .send_events(
            vec![EventData::from("x")],
            SendEventOptions::default().with_partition_id("0"),
        )
        .await
        .expect("sent on the third try");
    let counters = emulator.counters();
    assert_eq!(counters.deliveries, 3);
    assert_eq!(counters.rejected, 2);
    assert_eq!(emulator.event_count("hub", "0").expect("count"), 1);
    producer.close().await;
}

#[tokio::test]
async fn a_non_transient_rejection_is_tried_once() {
    let emulator = emulator().await;
    let producer = client(&emulator, fast_retries());
    emulator
        .faults()
        .reject_next(1, FaultCondition::ResourceLimitExceeded, FaultScope::Any);
    let err = producer
        .send_events(
            vec![EventData::from("x")],
            SendEventOptions::default().with_partition_id("0"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
    assert_eq!(err.condition(), Some("amqp:resource-limit-exceeded"));
    assert_eq!(emulator.counters().deliveries, 1);
    producer.close().await;
}

#[tokio::test]
async fn retries_end_after_max_retries() {
    let emulator = emulator().await;
    let producer = client(&emulator, fast_retries());
    emulator
        .faults()
        .reject_next(10, FaultCondition::InternalError, FaultScope::Any);
    let err = producer
        .send_events(
            vec![EventData::from("x")],
            SendEventOptions::default().with_partition_id("0"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServiceError);
    assert_eq!(emulator.counters().deliveries, 4, "1 try + 3 retries");
    producer.close().await;
}

#[tokio::test]
async fn a_dropped_connection_is_reopened_by_the_next_send() {
    let emulator = emulator().await;
    let producer = client(&emulator, fast_retries());
    let one = SendEventOptions::default().with_partition_id("3");
    producer
        .send_events(vec![EventData::from("a")], one.clone())
        .await
        .expect("first");
    assert_eq!(emulator.faults().drop_connections(), 1);
    producer
        .send_events(vec![EventData::from("b")], one.clone())
        .await
        .expect("after a drop");
    assert_eq!(emulator.faults().close_connections(), 1);
    producer
        .send_events(vec![EventData::from("c")], one)
        .await
        .expect("after a forced close");
    assert_eq!(emulator.event_count("hub", "3").expect("count"), 3);
    producer.close().await;
}

#[tokio::test]
async fn sending_goes_on_after_an_idle_period_longer_than_the_services_idle_timeout() {
    // The service drops a connection that stays silent past the idle timeout it announces; the
    // emulator does too. fe2o3 sends empty frames at the announced period, which races the
    // drop: the second send must work whether the connection was kept or has to be reopened.
    let idle = Duration::from_millis(300);
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .idle_timeout(idle)
        .start()
        .await
        .expect("emulator");
    let producer = client(&emulator, fast_retries());
    let one = SendEventOptions::default().with_partition_id("1");
    producer
        .send_events(vec![EventData::from("before")], one.clone())
        .await
        .expect("first");
    // Three idle timeouts without a send (a real wait: the idle timer is the emulator's, on
    // the other end of a TCP connection).
    tokio::time::sleep(idle * 3).await;
    producer
        .send_events(vec![EventData::from("after")], one)
        .await
        .expect("after the idle period");
    assert_eq!(emulator.event_count("hub", "1").expect("count"), 2);
    producer.close().await;
}

#[tokio::test]
async fn a_detached_link_is_attached_again() {
    let emulator = emulator().await;
    let producer = client(&emulator, fast_retries());
    let one = SendEventOptions::default().with_partition_id("2");
    producer
        .send_events(vec![EventData::from("a")], one.clone())
        .await
        .expect("first");
    assert!(
        emulator
            .faults()
            .detach_senders("hub", Some("2"), FaultCondition::DetachForced)
            >= 1
    );
    producer
        .send_events(vec![EventData::from("b")], one)
        .await
        .expect("after a detach");
    assert_eq!(emulator.event_count("hub", "2").expect("count"), 2);
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_renewed_while_sending_goes_on() {
    let emulator = emulator().await;
    let producer = client(
        &emulator,
        fast_retries().with_token_validity(Duration::from_secs(2)),
    );
    let one = SendEventOptions::default().with_partition_id("0");
    producer
        .send_events(vec![EventData::from("a")], one.clone())
        .await
        .expect("first");
    // The emulator closes links whose token expires; the client renews at half-life. Real time
    // must pass because token expiry is wall-clock time in the emulator.
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        producer
            .send_events(vec![EventData::from(format!("e{i}"))], one.clone())
            .await
            .expect("still authorized");
    }
    assert_eq!(emulator.event_count("hub", "0").expect("count"), 5);
    // No link was lost to an expired token: every send went out on the first try.
    assert_eq!(emulator.counters().deliveries, 5);
    producer.close().await;
}

#[tokio::test]
async fn several_deliveries_are_in_flight_on_one_link_at_once() {
    let emulator = emulator().await;
    let producer = client(
        &emulator,
        ProducerClientOptions::default()
            .with_retry_options(RetryOptions::default().with_try_timeout(Duration::from_secs(30))),
    );
    let one = SendEventOptions::default().with_partition_id("1");
    producer
        .send_events(vec![EventData::from("warm-up")], one.clone())
        .await
        .expect("attach");
    emulator.faults().withhold_next(5, FaultScope::Any);
    let sends: Vec<_> = (0..5)
        .map(|i| {
            let producer = producer.clone();
            let one = one.clone();
            tokio::spawn(async move {
                producer
                    .send_events(vec![EventData::from(format!("e{i}"))], one)
                    .await
            })
        })
        .collect();
    // All five reach the emulator while none has an answer: they are in flight together.
    let deadline = Instant::now() + Duration::from_secs(10);
    while emulator.event_count("hub", "1").expect("count") < 6 {
        assert!(
            Instant::now() < deadline,
            "the five deliveries were not in flight together"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sends.iter().all(|s| !s.is_finished()));
    for send in sends {
        send.abort();
    }
    producer.close().await;
}

#[tokio::test]
async fn tls_against_the_emulators_certificate() {
    let emulator = Emulator::builder()
        .hub("hub", 2)
        .tls(true)
        .start()
        .await
        .expect("emulator");
    let pem = emulator.ca_certificate_pem().expect("ca").to_string();
    let cs = emulator.connection_string();
    assert!(!cs.contains("UseDevelopmentEmulator"));
    let untrusting =
        ProducerClient::from_connection_string(&cs, None, fast_retries()).expect("client");
    let err = untrusting.partition_ids().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    let producer = ProducerClient::from_connection_string(
        &cs,
        None,
        fast_retries().with_trusted_root_certificate_pem(pem),
    )
    .expect("client");
    assert_eq!(producer.partition_ids().await.expect("ids"), vec!["0", "1"]);
    producer
        .send_events(vec![EventData::from("secure")], SendEventOptions::default())
        .await
        .expect("send over TLS");
    assert_eq!(emulator.total_event_count("hub").expect("count"), 1);
    producer.close().await;
}

#[tokio::test]
async fn a_custom_endpoint_is_where_the_client_connects() {
    let emulator = emulator().await;
    let cs = format!(
        "Endpoint=sb://my-namespace.example;SharedAccessKeyName={};SharedAccessKey={};UseDevelopmentEmulator=true;EntityPath=hub",
        emulator.shared_access_key().0,
        emulator.shared_access_key().1
    );
    let options =
        fast_retries().with_custom_endpoint(format!("127.0.0.1:{}", emulator.local_addr().port()));
    let producer = ProducerClient::from_connection_string(&cs, None, options).expect("client");
    assert_eq!(producer.fully_qualified_namespace(), "my-namespace.example");
    producer
        .send_events(
            vec![EventData::from("via custom endpoint")],
            SendEventOptions::default(),
        )
        .await
        .expect("send");
    assert_eq!(emulator.total_event_count("hub").expect("count"), 1);
    producer.close().await;
}

#[tokio::test]
async fn close_is_clean_and_final() {
    let emulator = emulator().await;
    let producer = client(&emulator, fast_retries());
    producer
        .send_events(vec![EventData::from("x")], SendEventOptions::default())
        .await
        .expect("send");
    assert_eq!(emulator.connection_count(), 1);
    producer.close().await;
    assert!(producer.is_closed());
    let err = producer
        .send_events(vec![EventData::from("y")], SendEventOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    let deadline = Instant::now() + Duration::from_secs(5);
    while emulator.connection_count() > 0 {
        assert!(Instant::now() < deadline, "the connection did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = Arc::new(());
}

/// A stand-in for an azure_identity credential: hands out a fixed JWT-shaped token.
#[derive(Debug)]
struct FixedTokenCredential {
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FixedTokenCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        assert_eq!(scopes, ["https://eventhubs.azure.net/.default"]);
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let expires =
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1);
        Ok(azure_core::credentials::AccessToken::new(
            "eyJhbGciOiJub25lIn0.e30.",
            expires,
        ))
    }
}

#[tokio::test]
async fn a_token_credential_is_asked_for_the_event_hubs_scope() {
    let emulator = emulator().await;
    let credential = Arc::new(FixedTokenCredential {
        calls: Default::default(),
    });
    let plain =
        fast_retries().with_custom_endpoint(format!("127.0.0.1:{}", emulator.local_addr().port()));
    let producer =
        ProducerClient::new("127.0.0.1", "hub", credential.clone(), plain).expect("client");
    // ProducerClient::new always uses TLS: against the plain emulator the handshake fails,
    // which shows a credential client never falls back to plain AMQP.
    let err = producer.partition_ids().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Tls | ErrorKind::ConnectionLost),
        "{err}"
    );
    producer.close().await;

    let tls = Emulator::builder()
        .hub("hub", 2)
        .tls(true)
        .start()
        .await
        .expect("emulator");
    let options = fast_retries()
        .with_custom_endpoint(format!("localhost:{}", tls.local_addr().port()))
        .with_trusted_root_certificate_pem(tls.ca_certificate_pem().expect("ca"));
    let producer =
        ProducerClient::new("localhost", "hub", credential.clone(), options).expect("client");
    producer
        .send_events(
            vec![EventData::from("with a JWT")],
            SendEventOptions::default(),
        )
        .await
        .expect("the emulator accepts JWTs unverified");
    assert!(credential.calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(tls.total_event_count("hub").expect("count"), 1);
    producer.close().await;
}

#[tokio::test]
async fn a_refused_jwt_is_unauthorized() {
    let emulator = Emulator::builder()
        .hub("hub", 1)
        .tls(true)
        .accept_jwt(false)
        .start()
        .await
        .expect("emulator");
    let options = fast_retries()
        .with_custom_endpoint(format!("localhost:{}", emulator.local_addr().port()))
        .with_trusted_root_certificate_pem(emulator.ca_certificate_pem().expect("ca"));
    let credential = Arc::new(FixedTokenCredential {
        calls: Default::default(),
    });
    let producer = ProducerClient::new("localhost", "hub", credential, options).expect("client");
    let err = producer
        .send_events(vec![EventData::from("x")], SendEventOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    producer.close().await;
}
