//! Helpers shared by the fuzz targets and the seed recorder: AMQP frames built with
//! fe2o3-amqp's own types, and splitting a byte stream into the units a peer sends.

use fe2o3_amqp_types::definitions::Handle;
use fe2o3_amqp_types::performatives::{Begin, Close, MaxFrameSize, Open};
use fe2o3_amqp_types::primitives::Symbol;
use fe2o3_amqp_types::sasl::SaslInit;

/// The protocol header that starts SASL.
pub const SASL_HEADER: &[u8; 8] = b"AMQP\x03\x01\x00\x00";
/// The protocol header that starts AMQP proper.
pub const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x01\x00\x00";
/// Frame type of AMQP frames.
pub const AMQP_FRAME: u8 = 0;
/// Frame type of SASL frames.
pub const SASL_FRAME: u8 = 1;

/// A frame: the 8-byte header (size, data offset 2, type, channel) and `body`.
pub fn frame(frame_type: u8, channel: u16, body: &[u8]) -> Vec<u8> {
    let size = u32::try_from(8 + body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.push(2);
    out.push(frame_type);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_amqp::to_vec(value).unwrap_or_default()
}

/// `sasl-init` choosing ANONYMOUS.
pub fn sasl_init() -> Vec<u8> {
    frame(
        SASL_FRAME,
        0,
        &encode(&SaslInit {
            mechanism: Symbol::from("ANONYMOUS"),
            initial_response: None,
            hostname: Some("localhost".into()),
        }),
    )
}

/// `open` from a client.
pub fn open() -> Vec<u8> {
    frame(
        AMQP_FRAME,
        0,
        &encode(&Open {
            container_id: "fuzz-client".into(),
            hostname: Some("localhost".into()),
            max_frame_size: MaxFrameSize::from(65536),
            channel_max: Default::default(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }),
    )
}

/// `begin` of a session on `channel`.
pub fn begin(channel: u16) -> Vec<u8> {
    frame(
        AMQP_FRAME,
        channel,
        &encode(&Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: 5000,
            outgoing_window: 5000,
            handle_max: Handle::from(255),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }),
    )
}

/// `close` without an error.
pub fn close() -> Vec<u8> {
    frame(AMQP_FRAME, 0, &encode(&Close { error: None }))
}

/// What a client sends to get to an open connection: SASL header, `sasl-init`, AMQP header,
/// `open`.
pub fn handshake() -> Vec<u8> {
    let mut out = SASL_HEADER.to_vec();
    out.extend(sasl_init());
    out.extend_from_slice(AMQP_HEADER);
    out.extend(open());
    out
}

/// Splits a byte stream into the units a peer would send one at a time: protocol headers
/// (8 bytes) and frames (by their size field; a size that does not fit ends the stream).
pub fn units(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = if data.starts_with(b"AMQP") {
            8
        } else if let Some(size) = data.get(..4) {
            let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
            size.max(4)
        } else {
            data.len()
        };
        let len = len.min(data.len());
        out.push(&data[..len]);
        data = &data[len..];
    }
    out
}

/// The frames of a byte stream a peer sent, as (frame type, channel, body); protocol headers
/// are skipped and a truncated or malformed tail ends the list.
pub fn frames(data: &[u8]) -> Vec<(u8, u16, &[u8])> {
    units(data)
        .into_iter()
        .filter(|unit| !unit.starts_with(b"AMQP") && unit.len() >= 8)
        .filter_map(|unit| {
            let offset = usize::from(unit[4]) * 4;
            let channel = u16::from_be_bytes([unit[6], unit[7]]);
            Some((unit[5], channel, unit.get(offset..)?))
        })
        .collect()
}

/// The descriptor code of a performative body (`0x00 0x53 code`), if it has that shape.
pub fn descriptor(body: &[u8]) -> Option<u8> {
    match body {
        [0x00, 0x53, code, ..] => Some(*code),
        _ => None,
    }
}
