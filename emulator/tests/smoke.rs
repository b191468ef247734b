mod common;
use common::*;

#[tokio::test]
async fn smoke() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    client.authorize(&emulator, "hub").await;
    let mut sender = client.sender("hub/Partitions/1").await;
    let outcome = sender.send(batch(vec![event("a", 0, None), event("b", 1, None)], None)).await.unwrap();
    assert_eq!(rejection(&outcome), None);
    assert_eq!(emulator.event_count("hub", "1").unwrap(), 2);
}
