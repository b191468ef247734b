//! Through a real HTTP proxy (Debian's tinyproxy): TLS to the emulator tunnelled with CONNECT,
//! with and without proxy authentication, a refused proxy credential as a clear error, and
//! hosts on the no-proxy list reached directly.

use eventhubs_buffered::{ProducerClientOptions, ProxyOptions};

use crate::prelude::*;

async fn tls_emulator() -> Emulator {
    Emulator::builder()
        .hub(HUB, 4)
        .tls(true)
        .start()
        .await
        .expect("emulator")
}

/// A producer for `localhost` (the emulator certificate's name) through `proxy`.
fn through(emulator: &Emulator, proxy: ProxyOptions) -> (BufferedProducerClient, Recorder) {
    let connection_string = emulator.connection_string();
    assert!(
        connection_string.contains("sb://localhost:"),
        "{connection_string}"
    );
    let client = ProducerClientOptions::default()
        .with_trusted_root_certificate_pem(emulator.ca_certificate_pem().expect("ca"))
        .with_retry_options(fast_retries().with_max_retries(1))
        .with_proxy(proxy);
    producer_for(
        &connection_string,
        fast_options().with_client_options(client),
    )
}

async fn publishes(producer: BufferedProducerClient, recorder: &Recorder, emulator: &Emulator) {
    let bodies = enqueue_spread(&producer, "tunnelled", 20).await;
    bounded("close", BOUND, producer.close())
        .await
        .expect("close");
    recorder.assert_exactly_once(&bodies);
    assert_eq!(stored_all(emulator).len(), 20);
}

#[tokio::test]
async fn tls_through_a_proxy_reaches_the_service() {
    let Some(tinyproxy) = Tinyproxy::start(None) else {
        return;
    };
    let emulator = tls_emulator().await;
    let proxy = ProxyOptions::new(&tinyproxy.url()).expect("proxy url");
    let (producer, recorder) = through(&emulator, proxy.clone());
    publishes(producer, &recorder, &emulator).await;
    // The way in is the proxy: without it, the same producer cannot connect.
    drop(tinyproxy);
    let (producer, _recorder) = through(&emulator, proxy);
    let refused = refused_enqueue(&producer).await;
    assert_eq!(refused.error().kind(), ErrorKind::ConnectionFailed);
    assert!(
        refused.error().to_string().contains("HTTP proxy"),
        "{refused}"
    );
    bounded("close", BOUND, producer.close()).await.ok();
}

#[tokio::test]
async fn a_proxy_that_asks_for_credentials_gets_them() {
    let Some(tinyproxy) = Tinyproxy::start(Some(("ingest", "s3cret-pass"))) else {
        return;
    };
    let emulator = tls_emulator().await;
    let proxy = ProxyOptions::new(&tinyproxy.url())
        .expect("proxy url")
        .with_basic_auth("ingest", "s3cret-pass");
    let (producer, recorder) = through(&emulator, proxy);
    assert!(!format!("{:?}", producer.options()).contains("s3cret-pass"));
    publishes(producer, &recorder, &emulator).await;
}

#[tokio::test]
async fn a_refused_proxy_credential_is_a_clear_error_without_the_secret() {
    let Some(tinyproxy) = Tinyproxy::start(Some(("ingest", "s3cret-pass"))) else {
        return;
    };
    let emulator = tls_emulator().await;
    for proxy in [
        ProxyOptions::new(&tinyproxy.url())
            .expect("proxy url")
            .with_basic_auth("ingest", "wrong-pass"),
        ProxyOptions::new(&tinyproxy.url()).expect("proxy url"),
    ] {
        let (producer, _recorder) = through(&emulator, proxy);
        let refused = refused_enqueue(&producer).await;
        let error = refused.error();
        assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
        let text = error.to_string();
        assert!(text.contains("proxy credentials"), "{text}");
        assert!(
            !text.contains("wrong-pass") && !text.contains("s3cret"),
            "{text}"
        );
        bounded("close", BOUND, producer.close()).await.ok();
    }
    assert!(stored_all(&emulator).is_empty());
}

#[tokio::test]
async fn hosts_on_the_no_proxy_list_are_reached_directly() {
    let emulator = tls_emulator().await;
    // A proxy that is not there: only a direct connection can succeed.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let proxy = ProxyOptions::new(&format!("http://127.0.0.1:{closed_port}"))
        .expect("proxy url")
        .with_no_proxy("example.org, localhost");
    let (producer, recorder) = through(&emulator, proxy);
    publishes(producer, &recorder, &emulator).await;
}
