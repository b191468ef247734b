//! The emulator's network path: one client connection fed the fuzzer's bytes, served by the
//! same code as a TCP client (frame wrapper, SASL, open, sessions, links, `$cbs`,
//! `$management`, producers, consumers), over an in-memory stream.
//!
//! Input: a first byte below 4 picks a valid prefix the emulator receives before the rest (0:
//! none, 1: up to the AMQP header after SASL, 2: up to `open`, 3: up to `begin`), so the
//! fuzzer spends its time past the handshake; any other first byte starts the raw bytes (a
//! recorded session starts with `AMQP`). The bytes go out one frame at a time, each after
//! the emulator has handled the previous one, as a client waiting for answers would send them.
//!
//! Checks: no panic in any of the emulator's tasks (libFuzzer's panic hook aborts on a panic in
//! any thread); once the client closes its side, the connection ends and unregisters; and the
//! same emulator then still serves a fresh valid client up to `open`.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use eventhubs_emulator::fuzzing::Harness;
use eventhubs_fuzz::{begin, descriptor, frames, handshake, units, AMQP_FRAME, AMQP_HEADER};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// How long (on the paused clock, so free) a connection may take to end after the client's EOF.
const END_WITHIN: Duration = Duration::from_secs(600);

fuzz_target!(|data: &[u8]| {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => panic!("no runtime: {error}"),
    };
    runtime.block_on(run(data));
});

fn prefixed(data: &[u8]) -> Vec<u8> {
    let Some((&choice, rest)) = data.split_first() else {
        return Vec::new();
    };
    let mut out = match choice {
        0 => Vec::new(),
        1 => {
            let mut h = handshake();
            // Up to and with the AMQP header: the fuzzer writes `open`.
            let end = h
                .windows(AMQP_HEADER.len())
                .position(|w| w == AMQP_HEADER)
                .map_or(h.len(), |at| at + AMQP_HEADER.len());
            h.truncate(end);
            h
        }
        2 => handshake(),
        3 => {
            let mut h = handshake();
            h.extend(begin(0));
            h
        }
        _ => return data.to_vec(),
    };
    out.extend_from_slice(rest);
    out
}

async fn run(data: &[u8]) {
    let harness = Arc::new(Harness::new());
    let input = prefixed(data);
    let served = talk(&harness, &input, false).await;
    assert!(
        served.ended,
        "the connection did not end after the client closed"
    );
    assert_eq!(
        harness.connection_count(),
        0,
        "a connection stayed registered"
    );

    // The emulator must still serve a well-behaved client.
    let check = talk(&harness, &handshake(), true).await;
    assert!(check.ended, "the check connection did not end");
    assert!(
        frames(&check.received)
            .iter()
            .any(|(kind, _, body)| *kind == AMQP_FRAME && descriptor(body) == Some(0x10)),
        "a valid client got no open after fuzz input"
    );
    assert_eq!(harness.connection_count(), 0);
}

struct Talk {
    ended: bool,
    received: Vec<u8>,
}

/// Sends `input` unit by unit to a new connection of `harness`, then closes the client side
/// (after waiting for the server's `open` when `wait_for_open`), and collects what came back.
async fn talk(harness: &Arc<Harness>, input: &[u8], wait_for_open: bool) -> Talk {
    let (client, server) = tokio::io::duplex(1 << 16);
    let serving = {
        let harness = harness.clone();
        tokio::spawn(async move {
            let _ = harness.serve_connection(server).await;
        })
    };
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let reading = tokio::spawn(async move { drain(&mut from_server).await });

    for unit in units(input) {
        if to_server.write_all(unit).await.is_err() {
            break;
        }
        // Sleeping on the paused clock returns once every task is idle: the emulator has
        // handled this unit (and answered it) before the next one arrives.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if wait_for_open {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = to_server.shutdown().await;
    let ended = tokio::time::timeout(END_WITHIN, serving).await.is_ok();
    drop(to_server);
    let received = tokio::time::timeout(END_WITHIN, reading)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Talk { ended, received }
}

/// Reads until the server ends the stream.
async fn drain(stream: &mut tokio::io::ReadHalf<DuplexStream>) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Only the start matters to the checks; keep memory bounded.
                if received.len() < 1 << 20 {
                    received.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
    received
}
