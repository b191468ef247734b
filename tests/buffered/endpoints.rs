//! Where the producer connects: IPv6 addresses in the connection string and as a custom
//! endpoint, and TLS through a custom endpoint, with the certificate checked against the
//! namespace rather than the address connected to.

use std::net::{IpAddr, Ipv6Addr};

use eventhubs_buffered::ProducerClientOptions;

use crate::prelude::*;

async fn ipv6_emulator() -> Emulator {
    Emulator::builder()
        .hub(HUB, 2)
        .address(IpAddr::V6(Ipv6Addr::LOCALHOST))
        .start()
        .await
        .expect("the emulator listens on [::1]")
}

/// Publishes one event through `producer` and checks the emulator stored it.
async fn publishes_one(producer: BufferedProducerClient, recorder: &Recorder, emulator: &Emulator) {
    producer
        .enqueue_event(event("over there"), to("1"))
        .await
        .expect("enqueue");
    bounded("close", BOUND, producer.close())
        .await
        .expect("close");
    assert_eq!(recorder.succeeded(), vec!["over there"]);
    assert_eq!(stored(emulator, "1"), vec!["over there"]);
}

#[tokio::test]
async fn an_ipv6_endpoint_in_the_connection_string_is_reached() {
    let emulator = ipv6_emulator().await;
    let connection_string = emulator.connection_string();
    assert!(
        connection_string.contains("sb://[::1]:"),
        "{connection_string}"
    );
    let (producer, recorder) = producer_for(&connection_string, fast_options());
    publishes_one(producer, &recorder, &emulator).await;
}

#[tokio::test]
async fn an_ipv6_custom_endpoint_is_reached_for_a_named_namespace() {
    let emulator = ipv6_emulator().await;
    let (name, key) = emulator.shared_access_key();
    let connection_string = format!(
        "Endpoint=sb://my-namespace.example;SharedAccessKeyName={name};SharedAccessKey={key};UseDevelopmentEmulator=true;EntityPath={HUB}"
    );
    let endpoint = format!("[::1]:{}", emulator.local_addr().port());
    let options = fast_options()
        .with_client_options(ProducerClientOptions::default().with_custom_endpoint(endpoint));
    let (producer, recorder) = producer_for(&connection_string, options);
    assert_eq!(producer.fully_qualified_namespace(), "my-namespace.example");
    publishes_one(producer, &recorder, &emulator).await;
}

fn tls_producer(emulator: &Emulator, namespace: &str) -> (BufferedProducerClient, Recorder) {
    let (name, key) = emulator.shared_access_key();
    let connection_string = format!(
        "Endpoint=sb://{namespace};SharedAccessKeyName={name};SharedAccessKey={key};EntityPath={HUB}"
    );
    // TLS to an address: only the namespace can be checked against the certificate.
    let client = ProducerClientOptions::default()
        .with_custom_endpoint(format!("127.0.0.1:{}", emulator.local_addr().port()))
        .with_trusted_root_certificate_pem(emulator.ca_certificate_pem().expect("ca"))
        .with_retry_options(fast_retries().with_max_retries(0));
    producer_for(
        &connection_string,
        fast_options().with_client_options(client),
    )
}

#[tokio::test]
async fn tls_through_a_custom_endpoint_checks_the_certificate_against_the_namespace() {
    let emulator = Emulator::builder()
        .hub(HUB, 2)
        .tls(true)
        .start()
        .await
        .expect("emulator");
    // The emulator's certificate names `localhost`.
    let (producer, recorder) = tls_producer(&emulator, "localhost");
    publishes_one(producer, &recorder, &emulator).await;

    let (producer, _recorder) = tls_producer(&emulator, "another-namespace.example");
    let refused = refused_enqueue(&producer).await;
    assert_eq!(refused.error().kind(), ErrorKind::Tls, "{refused}");
    bounded("close", BOUND, producer.close()).await.ok();
}
