//! `reject_tokens_for`: put-tokens refused for a while.

use super::*;

#[tokio::test]
async fn reject_tokens_for_answers_401_during_the_period_and_202_after() {
    let emulator = emulator().await;
    let mut client = TestClient::connect_addr(emulator.local_addr()).await;
    let period = Duration::from_millis(800);
    let start = Instant::now();
    emulator.faults().reject_tokens_for(period);

    let reply = put_valid_token(&mut client, &emulator).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.condition.as_deref(),
        Some("com.microsoft:auth-failed")
    );

    // Ask again until accepted; the first acceptance must not come before the period ends.
    let accepted_after = timeout(period + STEP, async {
        loop {
            let reply = put_valid_token(&mut client, &emulator).await;
            if reply.status == 202 {
                return start.elapsed();
            }
            assert_eq!(reply.status, 401, "{:?}", reply.description);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("tokens are accepted again after the period");
    assert!(
        accepted_after >= period,
        "accepted after {accepted_after:?}, inside the {period:?} period"
    );
}

#[tokio::test]
async fn reject_tokens_for_zero_ends_the_rejection_at_once() {
    let emulator = emulator().await;
    let mut client = TestClient::connect_addr(emulator.local_addr()).await;
    let faults = emulator.faults();
    faults.reject_tokens_for(Duration::from_secs(3600));
    assert_eq!(put_valid_token(&mut client, &emulator).await.status, 401);

    faults.reject_tokens_for(Duration::ZERO);
    assert_eq!(put_valid_token(&mut client, &emulator).await.status, 202);
}

#[tokio::test]
async fn reject_tokens_for_leaves_links_unauthorized() {
    let emulator = emulator().await;
    let mut client = TestClient::connect_addr(emulator.local_addr()).await;
    emulator
        .faults()
        .reject_tokens_for(Duration::from_secs(3600));
    assert_eq!(put_valid_token(&mut client, &emulator).await.status, 401);

    // The emulator refuses the link by completing the attach and detaching at once with the
    // error; fe2o3 reports that either as a failed attach or as a detach right after it.
    let attached = timeout(
        STEP,
        Sender::attach(&mut client.session, "unauthorized", "hub/Partitions/0"),
    )
    .await
    .expect("attach ends in time");
    let condition = match attached {
        Err(fe2o3_amqp::link::SenderAttachError::RemoteClosedWithError(e)) => {
            condition_symbol(&e.condition)
        }
        Err(other) => panic!("unexpected attach error {other:?}"),
        Ok(mut sender) => {
            let error = timeout(STEP, sender.on_detach())
                .await
                .expect("the refused link is detached in time");
            detach_condition(&error)
        }
    };
    assert_eq!(condition, "amqp:unauthorized-access");
}
