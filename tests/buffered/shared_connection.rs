//! A buffered producer built on the application's own `ProducerClient`: one connection for
//! both, and closing the buffered producer leaves the client's connection to the client.

use eventhubs_buffered::{ProducerClient, SendEventOptions};

use crate::prelude::*;

fn client(emulator: &Emulator) -> ProducerClient {
    ProducerClient::from_connection_string(
        &emulator.connection_string(),
        None,
        eventhubs_buffered::ProducerClientOptions::default().with_retry_options(fast_retries()),
    )
    .expect("client")
}

async fn send_own_batch(client: &ProducerClient, body: &str) {
    client
        .send_events(
            vec![event(body)],
            SendEventOptions::default().with_partition_id("0"),
        )
        .await
        .expect("the client's own batch");
}

#[tokio::test]
async fn a_buffered_producer_and_a_batch_sender_share_one_connection() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let recorder = Recorder::default();
    let buffered = BufferedProducerClient::from_producer(client.clone())
        .options(fast_options())
        .handler(recorder.clone())
        .build()
        .expect("builds");
    assert_eq!(buffered.eventhub_name(), HUB);
    send_own_batch(&client, "batch-1").await;
    let bodies = enqueue_spread(&buffered, "buffered", 40).await;
    bounded("flush", BOUND, buffered.flush()).await.unwrap();
    send_own_batch(&client, "batch-2").await;
    assert_eq!(emulator.connection_count(), 1, "one connection for both");
    recorder.assert_exactly_once(&bodies);

    // Closing the buffered producer leaves the client's connection open.
    bounded("close", BOUND, buffered.close()).await.unwrap();
    assert!(!client.is_closed());
    send_own_batch(&client, "batch-3").await;
    assert_eq!(emulator.connection_count(), 1);
    let mut own: Vec<String> = stored(&emulator, "0")
        .into_iter()
        .filter(|b| b.starts_with("batch-"))
        .collect();
    own.sort();
    assert_eq!(own, vec!["batch-1", "batch-2", "batch-3"]);
    assert_eq!(stored_all(&emulator).len(), 43);
    client.close().await;
}

#[tokio::test]
async fn idempotent_retries_are_refused_on_a_shared_client() {
    let emulator = emulator().await;
    let error = BufferedProducerClient::from_producer(client(&emulator))
        .options(fast_options().with_idempotent_retries(true))
        .on_send_failed(|_| async {})
        .build()
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    assert!(
        error.to_string().contains("enable_idempotent_retries"),
        "{error}"
    );
}
