//! A bare AMQP peer over TCP that frames everything itself, for what fe2o3 cannot do or show:
//! malformed input, abrupt disconnects, oversized transfers, and the remote attach's fields.

use super::STEP;
use eventhubs_emulator::Emulator;
use fe2o3_amqp::types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Source, Target, TargetArchetype};
use fe2o3_amqp::types::performatives::{
    Attach, Begin, ChannelMax, MaxFrameSize, Open, Performative, Transfer,
};
use fe2o3_amqp::types::primitives::{Array, Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const SASL_HEADER: &[u8; 8] = b"AMQP\x03\x01\x00\x00";
pub const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x01\x00\x00";
const FRAME_AMQP: u8 = 0;
const FRAME_SASL: u8 = 1;

/// One frame: the 8-byte header (doff 2) and the body.
pub fn frame(frame_type: u8, channel: u16, body: &[u8]) -> Vec<u8> {
    let size = u32::try_from(8 + body.len()).expect("frame size");
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.push(2);
    out.push(frame_type);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub struct RawConnection {
    pub stream: TcpStream,
}

impl RawConnection {
    pub async fn tcp(emulator: &Emulator) -> Self {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(emulator.local_addr()))
            .await
            .expect("connect in time")
            .expect("connect");
        Self { stream }
    }

    /// TCP, SASL ANONYMOUS, open, and a session on channel 0.
    pub async fn handshake(emulator: &Emulator) -> Self {
        let mut raw = Self::tcp(emulator).await;
        raw.sasl_anonymous().await;
        raw.open().await;
        raw.begin().await;
        raw
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn read_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0; n];
        match tokio::time::timeout(STEP, self.stream.read_exact(&mut buf))
            .await
            .expect("read in time")
        {
            Ok(_) => Some(buf),
            Err(_) => None,
        }
    }

    /// Reads the emulator's protocol header and checks it is `expected`.
    pub async fn expect_header(&mut self, expected: &[u8; 8]) {
        let header = self.read_exact(8).await.expect("a protocol header");
        assert_eq!(&header, expected, "protocol header");
    }

    /// The next frame as (type, channel, body); None at end of stream.
    pub async fn read_frame(&mut self) -> Option<(u8, u16, Vec<u8>)> {
        let size =
            u32::from_be_bytes(self.read_exact(4).await?.try_into().expect("4 bytes")) as usize;
        assert!(size >= 8, "frame size {size} below the header size");
        let rest = self.read_exact(size - 4).await?;
        let body_start = usize::from(rest[0]) * 4 - 4;
        let channel = u16::from_be_bytes([rest[2], rest[3]]);
        Some((rest[1], channel, rest[body_start..].to_vec()))
    }

    pub async fn sasl_anonymous(&mut self) {
        self.write(SASL_HEADER).await;
        let header = self.read_exact(8).await.expect("SASL header back");
        assert_eq!(&header, SASL_HEADER);
        let (frame_type, _, _mechanisms) = self.read_frame().await.expect("sasl-mechanisms");
        assert_eq!(frame_type, FRAME_SASL);
        let init = SaslInit {
            mechanism: Symbol::from("ANONYMOUS"),
            initial_response: None,
            hostname: None,
        };
        let body = serde_amqp::to_vec(&init).expect("encode sasl-init");
        self.write(&frame(FRAME_SASL, 0, &body)).await;
        let (frame_type, _, body) = self.read_frame().await.expect("sasl-outcome");
        assert_eq!(frame_type, FRAME_SASL);
        let outcome: SaslOutcome = serde_amqp::from_slice(&body).expect("decode sasl-outcome");
        assert!(
            matches!(outcome.code, SaslCode::Ok),
            "SASL outcome {:?}",
            outcome.code
        );
    }

    /// The AMQP header and an open without an idle timeout; returns the emulator's open.
    pub async fn open(&mut self) -> Open {
        self.write(AMQP_HEADER).await;
        let header = self.read_exact(8).await.expect("AMQP header back");
        assert_eq!(&header, AMQP_HEADER);
        let open = Open {
            container_id: "raw-test".into(),
            hostname: None,
            max_frame_size: MaxFrameSize(65536),
            channel_max: ChannelMax(16),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.send(Performative::Open(open), &[]).await;
        match self.next_performative().await {
            Some(Performative::Open(open)) => open,
            other => panic!("expected open, got {other:?}"),
        }
    }

    /// Begins a session on channel 0; returns the emulator's begin.
    pub async fn begin(&mut self) -> Begin {
        let begin = Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: 65536,
            outgoing_window: 65536,
            handle_max: Handle(1024),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.send(Performative::Begin(begin), &[]).await;
        match self.next_performative().await {
            Some(Performative::Begin(begin)) => begin,
            other => panic!("expected begin, got {other:?}"),
        }
    }

    /// Sends a performative (and a transfer's payload) on channel 0.
    pub async fn send(&mut self, performative: Performative, payload: &[u8]) {
        let mut body = serde_amqp::to_vec(&performative).expect("encode performative");
        body.extend_from_slice(payload);
        self.write(&frame(FRAME_AMQP, 0, &body)).await;
    }

    /// The next performative, skipping empty (heartbeat) frames; None at end of stream.
    pub async fn next_performative(&mut self) -> Option<Performative> {
        loop {
            let (frame_type, _, body) = self.read_frame().await?;
            assert_eq!(frame_type, FRAME_AMQP, "an AMQP frame");
            if body.is_empty() {
                continue;
            }
            return Some(serde_amqp::from_slice(&body).expect("decode performative"));
        }
    }

    /// Skips performatives until `pick` returns something; panics at end of stream.
    pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(Performative) -> Option<T>) -> T {
        loop {
            let performative = self
                .next_performative()
                .await
                .expect("the stream ended first");
            if let Some(found) = pick(performative) {
                return found;
            }
        }
    }

    /// Reads (and drops) whatever the emulator still sends until it closes the stream.
    /// Returns false when it is still open after [`STEP`].
    pub async fn closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let drained = tokio::time::timeout(STEP, async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        drained.is_ok()
    }
}

/// A sender's attach to `address` (the client sends, the emulator receives).
pub fn sender_attach(name: &str, handle: u32, address: &str) -> Attach {
    Attach {
        name: name.to_string(),
        handle: Handle(handle),
        role: Role::Sender,
        snd_settle_mode: SenderSettleMode::Mixed,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: Some(Box::new(
            Source::builder().address(format!("{name}-source")).build(),
        )),
        target: Some(Box::new(TargetArchetype::Target(
            Target::builder().address(address.to_string()).build(),
        ))),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: Some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// A receiver's attach from `address` (the emulator sends, the client receives).
pub fn receiver_attach(name: &str, handle: u32, address: &str) -> Attach {
    Attach {
        name: name.to_string(),
        handle: Handle(handle),
        role: Role::Receiver,
        snd_settle_mode: SenderSettleMode::Mixed,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: Some(Box::new(
            Source::builder().address(address.to_string()).build(),
        )),
        target: Some(Box::new(TargetArchetype::Target(
            Target::builder().address(format!("{name}-target")).build(),
        ))),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: None,
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// The first transfer of a single-frame, unsettled delivery.
pub fn transfer(handle: u32, delivery_id: u32) -> Transfer {
    Transfer {
        handle: Handle(handle),
        delivery_id: Some(delivery_id),
        delivery_tag: Some(Binary::from(delivery_id.to_be_bytes().to_vec())),
        message_format: Some(0),
        settled: Some(false),
        more: false,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    }
}

/// Whether the capabilities list the symbol.
pub fn has_capability(capabilities: &Option<Array<Symbol>>, name: &str) -> bool {
    capabilities
        .as_ref()
        .is_some_and(|c| c.0.iter().any(|s| s.as_str() == name))
}
