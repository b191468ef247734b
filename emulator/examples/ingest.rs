//! Measures how fast the emulator accepts and stores events arriving in full batches.
//!
//! `cargo run -p eventhubs-emulator --release --example ingest -- [--seconds N] [--partitions N]
//! [--in-flight N] [--event-size BYTES]`
//!
//! One fe2o3-amqp client connection sends full 1 MiB batches of `event-size`-byte events to
//! every partition, `in-flight` unsettled batches per partition link. The batch is encoded once
//! and sent again and again, so the client spends as little CPU as it can; the figure is the
//! emulator's (both run on this machine's cores). Prints events/s and MB/s, with the median of
//! one-second windows.

use std::time::{Duration, Instant};

use eventhubs_emulator::{Emulator, BATCH_MESSAGE_FORMAT};
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Batch, Body, Data, Message, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sendable, Session};
use futures_util::stream::{FuturesUnordered, StreamExt};

const MAX_MESSAGE_SIZE: usize = 1024 * 1024;

struct Args {
    seconds: u64,
    partitions: usize,
    in_flight: usize,
    event_size: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 5,
        partitions: 4,
        in_flight: 4,
        event_size: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: '{value}' is not a number"))?;
        match flag.as_str() {
            "--seconds" => args.seconds = n.max(1),
            "--partitions" => args.partitions = (n as usize).max(1),
            "--in-flight" => args.in_flight = (n as usize).max(1),
            "--event-size" => args.event_size = (n as usize).max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// A batch of as many `event_size`-byte events as fit in 1 MiB, and how many that is.
fn full_batch(event_size: usize) -> (Sendable<Body<Value>>, usize) {
    let event = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: None,
        application_properties: None,
        body: Data(Binary::from(vec![b'x'; event_size])),
        footer: None,
    };
    let encoded = serde_amqp::to_vec(&Serializable(event)).expect("encode event");
    let per_event = encoded.len() + 3 + if encoded.len() < 256 { 2 } else { 5 };
    let count = (MAX_MESSAGE_SIZE - 64) / per_event;
    let sections: Batch<Data> = (0..count)
        .map(|_| Data(Binary::from(encoded.clone())))
        .collect();
    let envelope = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: None,
        application_properties: None,
        body: Body::<Value>::Data(sections),
        footer: None,
    };
    let sendable = Sendable::builder()
        .message(envelope)
        .message_format(BATCH_MESSAGE_FORMAT)
        .build();
    (sendable, count)
}

async fn authorize(session: &mut fe2o3_amqp::session::SessionHandle<()>, emulator: &Emulator) {
    let mut sender = Sender::attach(session, "cbs-sender", "$cbs")
        .await
        .expect("cbs sender");
    let mut receiver = Receiver::builder()
        .name("cbs-receiver")
        .source("$cbs")
        .target("cbs-replies")
        .attach(session)
        .await
        .expect("cbs receiver");
    let audience = format!("sb://{}/hub", emulator.local_addr());
    let token = emulator.sas_token(&audience, Duration::from_secs(3600));
    let props = ApplicationProperties::builder()
        .insert("operation", SimpleValue::String("put-token".into()))
        .insert(
            "type",
            SimpleValue::String("servicebus.windows.net:sastoken".into()),
        )
        .insert("name", SimpleValue::String(audience))
        .build();
    let request = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            reply_to: Some("cbs-replies".into()),
            ..Default::default()
        }),
        application_properties: Some(props),
        body: Body::Value(AmqpValue(Value::String(token))),
        footer: None,
    };
    sender.send(request).await.expect("put-token sent");
    let reply: fe2o3_amqp::link::delivery::Delivery<Body<Value>> =
        receiver.recv().await.expect("put-token reply");
    receiver.accept(&reply).await.expect("settle");
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ingest: {e}");
            std::process::exit(2);
        }
    };
    let emulator = Emulator::builder()
        .hub("hub", args.partitions)
        .start()
        .await
        .expect("emulator starts");
    let url = format!("amqp://{}", emulator.local_addr());
    let mut connection = Connection::builder()
        .container_id("ingest-bench")
        .sasl_profile(SaslProfile::Anonymous)
        .open(url.as_str())
        .await
        .expect("connect");
    let mut session = Session::begin(&mut connection).await.expect("session");
    authorize(&mut session, &emulator).await;

    let (batch, events_per_batch) = full_batch(args.event_size);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for p in 0..args.partitions {
        let mut sender =
            Sender::attach(&mut session, format!("p{p}"), format!("hub/Partitions/{p}"))
                .await
                .expect("sender");
        let batch = batch.clone();
        let in_flight = args.in_flight;
        tasks.push(tokio::spawn(async move {
            let mut pending = FuturesUnordered::new();
            while Instant::now() < deadline {
                while pending.len() < in_flight {
                    pending.push(sender.send_batchable_ref(&batch).await.expect("send"));
                }
                pending.next().await.expect("pending").expect("accepted");
            }
            while let Some(outcome) = pending.next().await {
                outcome.expect("accepted");
            }
            let _ = sender.close().await;
        }));
    }

    let start = Instant::now();
    let mut windows = Vec::new();
    let mut last = 0u64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stored = emulator.counters().events_stored;
        windows.push(stored - last);
        last = stored;
    }
    for task in tasks {
        task.await.expect("sender task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let counters = emulator.counters();
    windows.sort_unstable();
    let median = windows.get(windows.len() / 2).copied().unwrap_or_default();
    let bytes_per_event = args.event_size as f64;
    println!(
        "ingest: {} partitions, {} in flight each, {} events of {} B per batch",
        args.partitions, args.in_flight, events_per_batch, args.event_size
    );
    println!(
        "stored {} events in {:.2} s: {:.0} events/s overall, median 1 s window {} events/s ({:.0} MB/s of event bodies)",
        counters.events_stored,
        elapsed,
        counters.events_stored as f64 / elapsed,
        median,
        median as f64 * bytes_per_event / 1e6
    );
    let _ = session.end().await;
    let _ = connection.close().await;
    emulator.shutdown().await;
}
