//! Writes seed inputs for the fuzz targets into `corpus/<target>/`, from real sessions with the
//! emulator: the bytes real clients send (the workspace's `ProducerClient`, and a client built
//! on fe2o3-amqp that covers what `ProducerClient` does not: JWT put-token, consumer links with
//! filters and epochs, idempotent producers, SASL PLAIN), recorded by a proxy in front of the
//! emulator; the frames, transfer payloads and requests found in them; and the connection
//! strings, filters and addresses of the tests.
//!
//! Run from `fuzz/`: `cargo run --example record_seeds`. Tokens in the recordings are valid for
//! 50 years, so replayed sessions stay authorized.

#[allow(dead_code, unused_imports)]
#[path = "../../emulator/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventhubs_buffered::{EventData, ProducerClient, ProducerClientOptions, SendEventOptions};
use eventhubs_emulator::{Emulator, BATCH_MESSAGE_FORMAT};
use eventhubs_fuzz::{descriptor, frames, AMQP_FRAME};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{AmqpValue, Body, Message, MessageAnnotations, MessageId};
use fe2o3_amqp::types::performatives::Transfer;
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Symbol, Value};
use fe2o3_amqp::{Connection, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FIFTY_YEARS: Duration = Duration::from_secs(50 * 365 * 24 * 3600);
const STEP: Duration = Duration::from_secs(10);

/// Client-to-emulator bytes of each finished connection through the proxy.
type Recordings = Arc<Mutex<Vec<Vec<u8>>>>;

/// A TCP proxy in front of `upstream` that records what clients send.
async fn proxy(upstream: std::net::SocketAddr) -> (u16, Recordings) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
    let port = listener.local_addr().expect("proxy address").port();
    let recordings: Recordings = Arc::default();
    let done = recordings.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let done = done.clone();
            tokio::spawn(async move {
                let server = TcpStream::connect(upstream).await.expect("upstream");
                let (mut client_rd, mut client_wr) = client.into_split();
                let (mut server_rd, mut server_wr) = server.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
                    let _ = client_wr.shutdown().await;
                });
                let mut recorded = Vec::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match client_rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            recorded.extend_from_slice(&buf[..n]);
                            if server_wr.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = server_wr.shutdown().await;
                let _ = back.await;
                done.lock().expect("recordings").push(recorded);
            });
        }
    });
    (port, recordings)
}

async fn wait_for_recordings(recordings: &Recordings, count: usize) -> Vec<Vec<u8>> {
    for _ in 0..500 {
        if recordings.lock().expect("recordings").len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    recordings.lock().expect("recordings").clone()
}

/// A session of the workspace's `ProducerClient`: properties, then sends to a partition, by
/// key and routed by the service.
async fn producer_client_session(emulator: &Emulator, port: u16) {
    let (key_name, key) = emulator.shared_access_key();
    let connection_string = format!(
        "Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName={key_name};SharedAccessKey={key};\
         UseDevelopmentEmulator=true;EntityPath=hub"
    );
    let options = ProducerClientOptions::default().with_token_validity(FIFTY_YEARS);
    let producer =
        ProducerClient::from_connection_string(&connection_string, None, options).expect("client");
    producer
        .eventhub_properties()
        .await
        .expect("hub properties");
    producer
        .partition_properties("0")
        .await
        .expect("partition properties");
    let event = EventData::from("hello")
        .with_property("count", 7i64)
        .with_property("ok", true)
        .with_property("name", "sensor")
        .with_message_id("m-1")
        .with_content_type("text/plain");
    producer
        .send_events(
            vec![event, EventData::from("second")],
            SendEventOptions::default().with_partition_id("1"),
        )
        .await
        .expect("send to a partition");
    producer
        .send_events(
            vec![EventData::from("keyed")],
            SendEventOptions::default().with_partition_key("key-7"),
        )
        .await
        .expect("send by key");
    producer
        .send_events(vec![EventData::from("routed")], SendEventOptions::default())
        .await
        .expect("send routed");
    producer.close().await;
}

/// Sends a request on `$cbs`/`$management` links and waits for its reply.
async fn request(
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    node: &str,
    id: u64,
    properties: &[(&str, SimpleValue)],
    body: Body<Value>,
) {
    let reply_to = format!("{node}-replies-{id}");
    let mut sender = Sender::attach(session, format!("{node}-sender-{id}"), node)
        .await
        .expect("request link");
    let mut receiver = Receiver::builder()
        .name(format!("{node}-receiver-{id}"))
        .source(node)
        .target(reply_to.as_str())
        .attach(session)
        .await
        .expect("reply link");
    let message = common::request_message(
        Some(MessageId::Ulong(id)),
        Some(&reply_to),
        properties,
        body,
    );
    sender.send(message).await.expect("request sent");
    let reply: fe2o3_amqp::Delivery<Body<Value>> = tokio::time::timeout(STEP, receiver.recv())
        .await
        .expect("reply in time")
        .expect("reply");
    receiver.accept(&reply).await.expect("settle");
    let _ = sender.close().await;
    let _ = receiver.close().await;
}

/// A session of a client on fe2o3-amqp: JWT put-token, a consumer with a filter, an epoch and
/// runtime metrics, an idempotent producer sending a batch, a management READ, a plain send.
async fn fe2o3_session(port: u16) {
    let url = format!("amqp://127.0.0.1:{port}");
    let mut connection = Connection::builder()
        .container_id("seed-recorder")
        .sasl_profile(SaslProfile::Anonymous)
        .open(url.as_str())
        .await
        .expect("connection");
    let mut session = Session::begin(&mut connection).await.expect("session");
    let audience = format!("sb://127.0.0.1:{port}/hub");
    request(
        &mut session,
        "$cbs",
        1,
        &[
            ("operation", SimpleValue::String("put-token".into())),
            ("type", SimpleValue::String("jwt".into())),
            ("name", SimpleValue::String(audience)),
        ],
        Body::Value(AmqpValue(Value::String("header.payload.signature".into()))),
    )
    .await;

    let mut properties = OrderedMap::new();
    properties.insert(Symbol::from("com.microsoft:epoch"), Value::Long(3));
    let mut consumer = common::receiver_builder(
        "hub/ConsumerGroups/$Default/Partitions/1",
        Some("amqp.annotation.x-opt-offset > '-1'"),
    )
    .properties(properties)
    .add_desired_capabilities(Symbol::from("com.microsoft:enable-receiver-runtime-metric"))
    .attach(&mut session)
    .await
    .expect("consumer");
    let delivery: fe2o3_amqp::Delivery<Body<Value>> = tokio::time::timeout(STEP, consumer.recv())
        .await
        .expect("event in time")
        .expect("event");
    consumer.accept(&delivery).await.expect("settle event");
    let _ = consumer.close().await;

    let mut requested = OrderedMap::new();
    for name in [
        "com.microsoft:producer-id",
        "com.microsoft:producer-epoch",
        "com.microsoft:producer-sequence-number",
    ] {
        requested.insert(Symbol::from(name), Value::Null);
    }
    let mut idempotent = Sender::builder()
        .name("idempotent")
        .target("hub/Partitions/2")
        .add_desired_capabilities(Symbol::from("com.microsoft:idempotent-producer"))
        .properties(requested)
        .attach(&mut session)
        .await
        .expect("idempotent producer");
    let events = (0..2)
        .map(|sequence| {
            let mut event = common::event(&format!("idem-{sequence}"), sequence, None);
            event.message_annotations = Some(
                MessageAnnotations::builder()
                    .insert(
                        OwnedKey::Symbol(Symbol::from("com.microsoft:producer-sequence-number")),
                        Value::Int(sequence as i32),
                    )
                    .build(),
            );
            event
        })
        .collect();
    idempotent
        .send(common::batch(events, None))
        .await
        .expect("idempotent batch");
    let _ = idempotent.close().await;

    request(
        &mut session,
        "$management",
        2,
        &[
            ("operation", SimpleValue::String("READ".into())),
            ("name", SimpleValue::String("hub".into())),
            (
                "type",
                SimpleValue::String("com.microsoft:partition".into()),
            ),
            ("partition", SimpleValue::String("2".into())),
        ],
        Body::Empty,
    )
    .await;

    let mut plain = Sender::attach(&mut session, "plain", "hub")
        .await
        .expect("hub sender");
    plain
        .send(common::event("plain", 9, Some("key-9")))
        .await
        .expect("plain send");
    plain
        .send(common::batch(
            vec![common::event("b0", 0, None), common::event("b1", 1, None)],
            Some("key-3"),
        ))
        .await
        .expect("batch send");
    let _ = plain.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
}

/// SASL PLAIN and a SAS put-token with a bad signature, then a refused producer link.
async fn refused_session(port: u16) {
    let url = format!("amqp://127.0.0.1:{port}");
    let mut connection = Connection::builder()
        .container_id("seed-recorder-plain")
        .sasl_profile(SaslProfile::Plain {
            username: "user".into(),
            password: "password".into(),
        })
        .open(url.as_str())
        .await
        .expect("connection");
    let mut session = Session::begin(&mut connection).await.expect("session");
    request(
        &mut session,
        "$cbs",
        1,
        &[
            ("operation", SimpleValue::String("put-token".into())),
            ("type", SimpleValue::String("servicebus.windows.net:sastoken".into())),
            ("name", SimpleValue::String(format!("sb://127.0.0.1:{port}/hub"))),
        ],
        Body::Value(AmqpValue(Value::String(
            "SharedAccessSignature sr=sb%3a%2f%2f127.0.0.1%2fhub&sig=AAAA&se=4102444800&skn=RootManageSharedAccessKey"
                .into(),
        ))),
    )
    .await;
    let _ = Sender::attach(&mut session, "refused", "hub/Partitions/0").await;
    let _ = session.end().await;
    let _ = connection.close().await;
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

/// The performative and the payload of a transfer frame's body.
fn split_transfer(body: &[u8]) -> Option<(Transfer, &[u8])> {
    let len = 3 + match body.get(3)? {
        0x45 => 1,
        0xc0 => 2 + usize::from(*body.get(4)?),
        0xd0 => 5 + u32::from_be_bytes(body.get(4..8)?.try_into().ok()?) as usize,
        _ => return None,
    };
    let transfer = serde_amqp::from_slice::<Transfer>(body.get(..len)?).ok()?;
    Some((transfer, body.get(len..)?))
}

fn operation(payload: &[u8]) -> Option<String> {
    let message = eventhubs_emulator_decode(payload)?;
    match message.application_properties?.0.get("operation")? {
        SimpleValue::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn eventhubs_emulator_decode(payload: &[u8]) -> Option<Message<Body<Value>>> {
    use fe2o3_amqp::types::messaging::message::DecodeIntoMessage;
    Body::<Value>::decode_message_from_reader(serde_amqp::read::SliceReader::new(payload)).ok()
}

fn seeds_from_recordings(corpus: &Path, recordings: &[Vec<u8>]) {
    for (index, recording) in recordings.iter().enumerate() {
        write(
            &corpus.join("emulator_wire"),
            &format!("session-{index}"),
            recording,
        );
        for (number, (kind, _, body)) in frames(recording).into_iter().enumerate() {
            if kind != AMQP_FRAME {
                continue;
            }
            match descriptor(body) {
                Some(0x12) => {
                    for options in [0u8, 1] {
                        let mut seed = vec![options];
                        seed.extend_from_slice(body);
                        write(
                            &corpus.join("emulator_attach"),
                            &format!("session-{index}-frame-{number}-{options}"),
                            &seed,
                        );
                    }
                }
                Some(0x14) => {
                    let Some((transfer, payload)) = split_transfer(body) else {
                        continue;
                    };
                    if transfer.more {
                        continue;
                    }
                    let name = format!("session-{index}-frame-{number}");
                    match operation(payload).as_deref() {
                        Some(op) => {
                            let node = u8::from(op != "put-token");
                            let mut seed = vec![node];
                            seed.extend_from_slice(payload);
                            write(&corpus.join("emulator_request"), &name, &seed);
                        }
                        None => {
                            let batch = transfer.message_format == Some(BATCH_MESSAGE_FORMAT);
                            for (link, options) in [(0u8, 0u8), (1, 0), (1, 8), (0, 16)] {
                                let options = options | u8::from(batch) | (link << 1);
                                let mut seed = vec![options];
                                seed.extend_from_slice(payload);
                                write(
                                    &corpus.join("emulator_delivery"),
                                    &format!("{name}-{options}"),
                                    &seed,
                                );
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn text_seeds(corpus: &Path, emulator: &Emulator) {
    let key = "Xq3kT9vP2mW8rL5nB7cJ4hF6dS1aG0eYzU+oI/wK=";
    let sas = "SharedAccessSignature sr=sb%3a%2f%2fns.servicebus.windows.net%2fhub&sig=Qm9vU2VjcmV0U2ln%3D&se=1700000000&skn=send";
    let strings = [
        format!("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={key};EntityPath=hub"),
        format!("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessSignature={sas}"),
        format!("endpoint = amqps://ns.example:5671 ; sharedaccesskeyname = n ; sharedaccesskey = {key} ; ;"),
        "Endpoint=sb://[::1]:5672;SharedAccessKeyName=n;SharedAccessKey=k;UseDevelopmentEmulator=true".to_string(),
        "Endpoint=ns.example:65535/;SharedAccessKeyName=n;SharedAccessKey=k;Unknown=x;EntityPath=a=b".to_string(),
        "Endpoint=https://ns.example/;SharedAccessKeyName=n;SharedAccessKey=k;UseDevelopmentEmulator=FALSE".to_string(),
        "Endpoint=sb://ns.example/hub;SharedAccessKeyName=n;SharedAccessKey=k".to_string(),
        "Endpoint=sb://ns.example/;SharedAccessKeyName=n;SharedAccessKey=k;TOPSECRET".to_string(),
        "Endpoint=sb://ns.example/;=TOPSECRET;SharedAccessKeyName=n".to_string(),
        "Endpoint=sb://ns.example/;SharedAccessKey=k;SharedAccessKey=k2".to_string(),
        emulator.connection_string(),
        emulator.namespace_connection_string(),
    ];
    for (index, s) in strings.iter().enumerate() {
        write(
            &corpus.join("connection_string"),
            &format!("seed-{index}"),
            s.as_bytes(),
        );
    }
    let texts = [
        "amqp.annotation.x-opt-offset > '-1'",
        "amqp.annotation.x-opt-offset >= 12345",
        "amqp.annotation.x-opt-offset > '@latest'",
        "amqp.annotation.x-opt-sequence-number>='7'",
        "  AMQP.Annotation.X-Opt-Enqueued-Time\t>\t'1700000000000'  ",
        "amqp.annotation.x-opt-offset > '12",
        "hub/ConsumerGroups/$Default/Partitions/1",
        "amqps://ns.servicebus.windows.net/hub/Partitions/3",
        "/hub/$management",
        "$cbs",
        "sb://127.0.0.1:1234/hub/consumergroups/cg/",
    ];
    for (index, s) in texts.iter().enumerate() {
        write(
            &corpus.join("emulator_filter"),
            &format!("seed-{index}"),
            s.as_bytes(),
        );
    }
}

/// Seeds the targets cannot get from recordings: encoded messages and signed-request shapes.
fn built_seeds(corpus: &Path) {
    let plain = common::encode(common::event("built", 1, Some("key")));
    let batch = common::batch(
        vec![common::event("x", 0, None), common::event("y", 1, None)],
        None,
    );
    let batch = serde_amqp::to_vec(&Serializable(batch.message)).expect("batch encodes");
    for (name, options, payload) in [("plain", 0u8, &plain), ("batch", 1, &batch)] {
        let mut seed = vec![options];
        seed.extend_from_slice(payload);
        write(
            &corpus.join("emulator_delivery"),
            &format!("built-{name}"),
            &seed,
        );
    }
    for options in [2u8, 3] {
        let mut seed = vec![options];
        seed.extend((0u8..64).map(|i| i.wrapping_mul(37)));
        write(
            &corpus.join("emulator_request"),
            &format!("signed-{options}"),
            &seed,
        );
    }
    // Valid-prefix modes of the wire target, each followed by a `close`.
    for choice in 0u8..4 {
        let mut seed = vec![choice];
        match choice {
            0 => seed.extend(eventhubs_fuzz::handshake()),
            1 => seed.extend(eventhubs_fuzz::open()),
            _ => {}
        }
        seed.extend(eventhubs_fuzz::close());
        write(
            &corpus.join("emulator_wire"),
            &format!("prefix-{choice}"),
            &seed,
        );
    }
}

#[tokio::main]
async fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .start()
        .await
        .expect("emulator");
    let (port, recordings) = proxy(emulator.local_addr()).await;

    producer_client_session(&emulator, port).await;
    wait_for_recordings(&recordings, 1).await;
    fe2o3_session(port).await;
    wait_for_recordings(&recordings, 2).await;
    refused_session(port).await;
    let recorded = wait_for_recordings(&recordings, 3).await;

    seeds_from_recordings(&corpus, &recorded);
    text_seeds(&corpus, &emulator);
    built_seeds(&corpus);
    println!(
        "recorded {} sessions ({} bytes) into {}",
        recorded.len(),
        recorded.iter().map(Vec::len).sum::<usize>(),
        corpus.display()
    );
    emulator.shutdown().await;
}
