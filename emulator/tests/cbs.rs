//! `$cbs` put-token over real AMQP: replies, token checks, and what a token allows a link to do.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use eventhubs_emulator::sas::{generate_sas_token, SasKey};
use eventhubs_emulator::Emulator;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::messaging::{AmqpValue, Body, MessageId};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Uuid, Value};

const HOUR: Duration = Duration::from_secs(3600);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn put_token_properties(
    audience: &str,
    token_type: SimpleValue,
) -> Vec<(&'static str, SimpleValue)> {
    vec![
        ("operation", SimpleValue::String("put-token".into())),
        ("type", token_type),
        ("name", SimpleValue::String(audience.into())),
    ]
}

fn token_body(token: &str) -> Body<Value> {
    Body::Value(AmqpValue(Value::String(token.into())))
}

fn sas_type() -> SimpleValue {
    SimpleValue::String(SAS_TOKEN_TYPE.into())
}

/// Sends a put-token with the given message id and returns the reply's correlation id.
async fn correlation_of(message_id: MessageId) -> Option<MessageId> {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("hub");
    let token = emulator.sas_token(&audience, HOUR);
    let request = request_message(
        Some(message_id),
        Some("$cbs-replies"),
        &put_token_properties(&audience, sas_type()),
        token_body(&token),
    );
    let reply = client.exchange("$cbs", request).await;
    assert_eq!(
        app_property(&reply, "status-code"),
        Some(SimpleValue::Int(202))
    );
    reply.properties.and_then(|p| p.correlation_id)
}

#[tokio::test]
async fn valid_sas_token_is_accepted_with_int_202() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("hub");
    // `request` panics unless status-code is an AMQP int.
    let reply = client.put_sas(&emulator, &audience, HOUR).await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.description.as_deref(), Some("Accepted"));
    assert_eq!(reply.condition, None);
    // No content: fe2o3 writes an empty body as an amqp-value null.
    assert!(
        matches!(
            reply.body,
            Body::Empty | Body::Value(AmqpValue(Value::Null))
        ),
        "no content, got {:?}",
        reply.body
    );
}

#[tokio::test]
async fn correlation_id_keeps_a_ulong_message_id() {
    let id = MessageId::Ulong(0xDEAD_BEEF_0000_0001);
    assert_eq!(correlation_of(id.clone()).await, Some(id));
}

#[tokio::test]
async fn correlation_id_keeps_a_string_message_id() {
    let id = MessageId::String("cbs-request-7".into());
    assert_eq!(correlation_of(id.clone()).await, Some(id));
}

#[tokio::test]
async fn correlation_id_keeps_a_uuid_message_id() {
    let id = MessageId::Uuid(Uuid::from([
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ]));
    assert_eq!(correlation_of(id.clone()).await, Some(id));
}

#[tokio::test]
async fn token_type_may_be_string_symbol_or_binary() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("hub");
    let token = emulator.sas_token(&audience, HOUR);
    let encodings = [
        SimpleValue::String(SAS_TOKEN_TYPE.into()),
        SimpleValue::Symbol(Symbol::from(SAS_TOKEN_TYPE)),
        SimpleValue::Binary(Binary::from(SAS_TOKEN_TYPE.as_bytes().to_vec())),
    ];
    for token_type in encodings {
        let reply = client
            .put_token(&audience, &token, token_type.clone())
            .await;
        assert_eq!(
            reply.status, 202,
            "type as {token_type:?}: {:?}",
            reply.description
        );
    }
}

#[tokio::test]
async fn token_signed_with_another_key_is_unauthorized() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("hub");
    let (key_name, _) = emulator.shared_access_key();
    let wrong = SasKey {
        name: key_name.to_string(),
        key: "not-the-emulator-key".into(),
    };
    let token = generate_sas_token(&audience, &wrong, unix_now() + 3600);
    let reply = client.put_token(&audience, &token, sas_type()).await;
    assert_refused_as_the_service(
        &reply,
        "InvalidSignature: The token has an invalid signature.",
    );
}

#[tokio::test]
async fn token_with_a_tampered_signature_is_unauthorized() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("hub");
    let token = emulator.sas_token(&audience, HOUR);
    // Replace the signature with another well-formed one (base64 of 32 zero bytes).
    let start = token.find("sig=").expect("sig") + 4;
    let end = start + token[start..].find('&').expect("field after sig");
    let tampered = format!(
        "{}{}{}",
        &token[..start],
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D",
        &token[end..]
    );
    assert_ne!(tampered, token);
    let reply = client.put_token(&audience, &tampered, sas_type()).await;
    assert_refused_as_the_service(
        &reply,
        "InvalidSignature: The token has an invalid signature.",
    );
}

#[tokio::test]
async fn expired_token_is_unauthorized() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("hub");
    let (name, key) = emulator.shared_access_key();
    let key = SasKey {
        name: name.to_string(),
        key: key.to_string(),
    };
    // 2023-11-14 22:13:20 UTC: the service writes the expiry in this form.
    let token = generate_sas_token(&audience, &key, 1_700_000_000);
    let reply = client.put_token(&audience, &token, sas_type()).await;
    assert_refused_as_the_service(
        &reply,
        "ExpiredToken: The token is expired. Expiration time: '2023-11-14 22:13:20Z'",
    );
}

#[tokio::test]
async fn token_signed_by_an_unknown_key_name_has_an_invalid_issuer() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("hub");
    let stranger = SasKey {
        name: "NoSuchPolicy".into(),
        key: "whatever".into(),
    };
    let token = generate_sas_token(&audience, &stranger, unix_now() + 3600);
    let reply = client.put_token(&audience, &token, sas_type()).await;
    assert_refused_as_the_service(&reply, "InvalidIssuer: Token issuer is invalid.");
}

/// The service refuses a token with 401, `com.microsoft:auth-failed` and a description that
/// starts with a reason code (recordings of Microsoft's Python client, and the texts its users
/// report).
fn assert_refused_as_the_service(reply: &Reply, description: &str) {
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.condition.as_deref(),
        Some("com.microsoft:auth-failed")
    );
    assert_eq!(reply.description.as_deref(), Some(description));
}

#[tokio::test]
async fn token_for_another_hub_is_unauthorized() {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .hub("other", 2)
        .start()
        .await
        .expect("emulator starts");
    let mut client = TestClient::connect(&emulator).await;
    let token = emulator.sas_token(&client.audience("other"), HOUR);
    let reply = client
        .put_token(&client.audience("hub"), &token, sas_type())
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.condition.as_deref(),
        Some("com.microsoft:auth-failed")
    );
    let description = reply.description.unwrap_or_default();
    assert!(description.starts_with("InvalidAudience:"), "{description}");
}

#[tokio::test]
async fn audience_naming_an_unknown_hub_is_not_found() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("nohub");
    let reply = client.put_sas(&emulator, &audience, HOUR).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.condition.as_deref(), Some("amqp:not-found"));
}

#[tokio::test]
async fn jwt_is_accepted_by_default() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("hub");
    let reply = client
        .put_token(
            &audience,
            "eyJhbGciOiJub25lIn0.e30.",
            SimpleValue::String("jwt".into()),
        )
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.description);
    let mut sender = client.sender("hub/Partitions/0").await;
    send_events(&mut sender, "jwt", 1).await;
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 1);
}

#[tokio::test]
async fn jwt_is_refused_when_not_accepted() {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .accept_jwt(false)
        .start()
        .await
        .expect("emulator starts");
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("hub");
    let reply = client
        .put_token(
            &audience,
            "eyJhbGciOiJub25lIn0.e30.",
            SimpleValue::String("jwt".into()),
        )
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.condition.as_deref(),
        Some("com.microsoft:auth-failed")
    );
}

#[tokio::test]
async fn reply_without_reply_to_arrives_on_the_cbs_receiving_link() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    // As Microsoft's Python client: the receiving link's source and target are both $cbs, and
    // requests carry no reply-to.
    let mut requests = Sender::attach(&mut client.session, "py-cbs-sender", "$cbs")
        .await
        .expect("request link");
    let mut replies = Receiver::builder()
        .name("py-cbs-receiver")
        .source("$cbs")
        .target("$cbs")
        .attach(&mut client.session)
        .await
        .expect("reply link");
    let audience = client.audience("hub");
    let token = emulator.sas_token(&audience, HOUR);
    let id = MessageId::Uuid(Uuid::from([7; 16]));
    let request = request_message(
        Some(id.clone()),
        None,
        &put_token_properties(&audience, sas_type()),
        token_body(&token),
    );
    let outcome = tokio::time::timeout(STEP, requests.send(request))
        .await
        .expect("sent in time")
        .expect("sent");
    assert_eq!(rejected_with(&outcome), None);
    let reply = recv_one(&mut replies).await;
    assert_eq!(
        app_property(&reply, "status-code"),
        Some(SimpleValue::Int(202))
    );
    assert_eq!(reply.properties.and_then(|p| p.correlation_id), Some(id));
}

#[tokio::test]
async fn partition_link_before_put_token_is_refused_unauthorized() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let attach = try_sender(&mut client, "early", "hub/Partitions/0").await;
    assert_eq!(sender_refused(attach).await, "amqp:unauthorized-access");
    assert_eq!(emulator.counters().deliveries, 0);
}

#[tokio::test]
async fn send_on_a_refused_link_fails_with_unauthorized_access() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    // fe2o3's attach succeeds (the emulator completes it before detaching); the send reports
    // the detach's error.
    let mut sender = try_sender(&mut client, "early", "hub/Partitions/0")
        .await
        .expect("the attach itself completes");
    let error = tokio::time::timeout(STEP, sender.send(event("x", 0, None)))
        .await
        .expect("send answered in time")
        .expect_err("the link is refused");
    assert_eq!(
        send_error_condition(&error).as_deref(),
        Some("amqp:unauthorized-access"),
        "{error:?}"
    );
    assert_eq!(emulator.total_event_count("hub").unwrap(), 0);
}

#[tokio::test]
async fn partition_link_after_put_token_attaches_and_sends() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    client.authorize(&emulator, "hub/Partitions/0").await;
    let mut sender = client.sender("hub/Partitions/0").await;
    send_events(&mut sender, "authorized", 2).await;
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 2);
}

#[tokio::test]
async fn token_for_one_partition_does_not_cover_another() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    client.authorize(&emulator, "hub/Partitions/0").await;
    let attach = try_sender(&mut client, "elsewhere", "hub/Partitions/1").await;
    assert_eq!(sender_refused(attach).await, "amqp:unauthorized-access");
}

#[tokio::test]
async fn producer_link_closes_unauthorized_when_its_token_expires() {
    let emulator = emulator().await;
    let mut client = TestClient::connect(&emulator).await;
    let audience = client.audience("hub");
    let reply = client
        .put_sas(&emulator, &audience, Duration::from_secs(2))
        .await;
    assert_eq!(reply.status, 202);
    let mut sender = client.sender("hub/Partitions/0").await;
    send_events(&mut sender, "before-expiry", 1).await;
    // The emulator ends the link itself once the token runs out (about 2 s of real time).
    assert_eq!(
        sender_ended_with(&mut sender).await,
        "amqp:unauthorized-access"
    );
}

#[tokio::test]
async fn renewed_token_keeps_the_producer_link_open() {
    let emulator = emulator().await;
    let mut renewing = TestClient::connect(&emulator).await;
    let mut witness = TestClient::connect(&emulator).await;
    let audience = renewing.audience("hub");
    let reply = renewing
        .put_sas(&emulator, &audience, Duration::from_secs(2))
        .await;
    assert_eq!(reply.status, 202);
    // The witness connection's token runs out over a second after the first token of the
    // renewing connection (SAS expiries are whole seconds), so its link ending proves that the
    // renewing link's expiry check has run, without sleeping.
    let reply = witness
        .put_sas(&emulator, &audience, Duration::from_secs(4))
        .await;
    assert_eq!(reply.status, 202);
    let mut sender = renewing.sender("hub/Partitions/0").await;
    let mut expiring = witness.sender("hub/Partitions/1").await;
    let reply = renewing.put_sas(&emulator, &audience, HOUR).await;
    assert_eq!(reply.status, 202);

    assert_eq!(
        sender_ended_with(&mut expiring).await,
        "amqp:unauthorized-access"
    );
    send_events(&mut sender, "after-renewal", 2).await;
    assert_eq!(emulator.event_count("hub", "0").unwrap(), 2);
}

#[tokio::test]
async fn namespace_audience_authorizes_every_hub() {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .hub("other", 2)
        .start()
        .await
        .expect("emulator starts");
    let mut client = TestClient::connect(&emulator).await;
    let namespace = format!("sb://{}/", client.host());
    let reply = client.put_sas(&emulator, &namespace, HOUR).await;
    assert_eq!(reply.status, 202, "{:?}", reply.description);
    let mut to_hub = client.sender("hub/Partitions/3").await;
    let mut to_other = client.sender("other/Partitions/1").await;
    send_events(&mut to_hub, "hub", 1).await;
    send_events(&mut to_other, "other", 1).await;
    let mut consumer = client
        .receiver(
            "other/ConsumerGroups/$Default/Partitions/1",
            Some("amqp.annotation.x-opt-offset > '-1'"),
        )
        .await;
    assert_eq!(data_body(&recv_one(&mut consumer).await), b"other0");
    assert_eq!(emulator.event_count("hub", "3").unwrap(), 1);
}

#[tokio::test]
async fn links_attach_without_tokens_when_authorization_is_off() {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .require_authorization(false)
        .start()
        .await
        .expect("emulator starts");
    let mut client = TestClient::connect(&emulator).await;
    let mut sender = client.sender("hub/Partitions/2").await;
    send_events(&mut sender, "open", 1).await;
    let mut receiver = client
        .receiver(
            "hub/ConsumerGroups/$Default/Partitions/2",
            Some("amqp.annotation.x-opt-offset > '-1'"),
        )
        .await;
    let message = recv_one(&mut receiver).await;
    assert_eq!(data_body(&message), b"open0");
    let read = client.read("com.microsoft:eventhub", "hub", None).await;
    assert_eq!(read.status, 200);
}
