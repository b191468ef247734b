//! The byte stream under each AMQP connection.
//!
//! Two jobs sit here, below fe2o3-amqp:
//! - Outgoing performatives are padded with trailing `null` fields up to their full field count.
//!   AMQP lets a peer omit trailing nulls, and fe2o3 does, but Microsoft's Python client reads
//!   performative fields by position and fails on short lists (for `transfer` it even takes the
//!   payload from the wrong index). Padding is valid AMQP for every peer.
//! - A connection can be cut abruptly (no AMQP `close`), for the "drop TCP" fault.
//! - Incoming frames shorter than a frame header end the connection with an I/O error: fe2o3's
//!   frame decoders read the 4 header bytes after the size without checking that they exist,
//!   and panic on such a frame.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::client_open::{OpenSink, OpenSniffer};

/// Above this many bytes waiting for the socket, writes are refused until it drains.
const MAX_PENDING_OUTPUT: usize = 1 << 20;
const PROTOCOL_HEADER_LEN: usize = 8;
const FRAME_HEADER_LEN: usize = 8;

/// Full field counts of the performatives and SASL frames, by descriptor code.
fn full_field_count(descriptor: u8) -> Option<u8> {
    Some(match descriptor {
        0x10 => 10, // open
        0x11 => 8,  // begin
        0x12 => 14, // attach
        0x13 => 11, // flow
        0x14 => 11, // transfer
        0x15 => 6,  // disposition
        0x16 => 3,  // detach
        0x17 => 1,  // end
        0x18 => 1,  // close
        0x40 => 1,  // sasl-mechanisms
        0x42 => 1,  // sasl-challenge
        0x44 => 2,  // sasl-outcome
        _ => return None,
    })
}

/// A switch that cuts the connection: reads end and writes fail once it is thrown.
#[derive(Debug, Clone, Default)]
pub(crate) struct CutSwitch(Arc<AtomicBool>);

impl CutSwitch {
    pub(crate) fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_cut(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Wraps the transport of one connection (TCP or TLS).
#[derive(Debug)]
pub(crate) struct WireStream<S> {
    inner: S,
    unparsed: BytesMut,
    ready: BytesMut,
    cut: CutSwitch,
    inbound: InboundUnits,
    /// Reads the client's `open` from the first bytes, until it has (see `client_open.rs`).
    open: Option<OpenSniffer>,
}

/// Follows the unit boundaries (protocol headers and frames) of what the peer sends.
#[derive(Debug, Default)]
struct InboundUnits {
    /// Bytes of the current unit still to pass.
    skip: usize,
    /// The first bytes of the next unit, until four are known.
    head: [u8; 4],
    head_len: usize,
}

impl InboundUnits {
    /// Walks newly read bytes; fails at a frame whose size is below the frame header's.
    fn check(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (4 - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
            self.head_len += n;
            bytes = &bytes[n..];
            if self.head_len < 4 {
                break;
            }
            self.head_len = 0;
            if &self.head == b"AMQP" {
                self.skip = PROTOCOL_HEADER_LEN - 4;
                continue;
            }
            let size = u32::from_be_bytes(self.head) as usize;
            if size < FRAME_HEADER_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("frame size {size} is below the frame header size"),
                ));
            }
            self.skip = size - 4;
        }
        Ok(())
    }
}

impl<S> WireStream<S> {
    pub(crate) fn new(inner: S, cut: CutSwitch) -> Self {
        Self {
            inner,
            unparsed: BytesMut::new(),
            ready: BytesMut::new(),
            cut,
            inbound: InboundUnits::default(),
            open: None,
        }
    }

    /// Hands the client's `open`, once read, to `sink`.
    pub(crate) fn recording_open(mut self, sink: OpenSink) -> Self {
        self.open = Some(OpenSniffer::new(sink));
        self
    }

    /// Moves every complete unit (protocol header or frame) from `unparsed` to `ready`.
    fn process_unparsed(&mut self) {
        while let Some(len) = complete_unit_len(&self.unparsed) {
            let unit = self.unparsed.split_to(len);
            pad_frame(&unit, &mut self.ready);
        }
    }
}

/// Length of the first complete protocol header or frame in `buf`, if it is all there.
fn complete_unit_len(buf: &[u8]) -> Option<usize> {
    if buf.len() >= 4 && &buf[..4] == b"AMQP" {
        return (buf.len() >= PROTOCOL_HEADER_LEN).then_some(PROTOCOL_HEADER_LEN);
    }
    let size = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    // A size below the header length is not a frame; pass it on as it is and let the peer judge.
    let size = size.max(4);
    (buf.len() >= size).then_some(size)
}

/// Copies one unit to `out`, padding the performative's field list when it is a short one.
fn pad_frame(unit: &[u8], out: &mut BytesMut) {
    match padded(unit) {
        Some(frame) => out.extend_from_slice(&frame),
        None => out.extend_from_slice(unit),
    }
}

/// The padded frame, or None when the unit needs no change (or is not something we understand).
fn padded(unit: &[u8]) -> Option<Vec<u8>> {
    if unit.len() < FRAME_HEADER_LEN || unit.starts_with(b"AMQP") {
        return None;
    }
    let body_start = usize::from(unit[4]) * 4;
    let body = unit.get(body_start..)?;
    // Described type: 0x00, ulong descriptor (0x53 smallulong), then the list.
    if body.len() < 4 || body[0] != 0x00 || body[1] != 0x53 {
        return None;
    }
    let full = full_field_count(body[2])?;
    let (count, list_len) = match body[3] {
        0x45 => (0u32, 1usize),
        0xc0 => (u32::from(*body.get(5)?), 2 + usize::from(*body.get(4)?)),
        0xd0 => (
            u32::from_be_bytes(body.get(8..12)?.try_into().ok()?),
            5 + u32::from_be_bytes(body.get(4..8)?.try_into().ok()?) as usize,
        ),
        _ => return None,
    };
    if count >= u32::from(full) {
        return None;
    }
    let items = match body[3] {
        0x45 => &[][..],
        0xc0 => body.get(6..list_len + 3)?,
        _ => body.get(12..list_len + 3)?,
    };
    let rest = body.get(3 + list_len..)?;
    let missing = usize::from(full) - count as usize;

    let mut list = Vec::with_capacity(items.len() + missing + 9);
    let items_len = items.len() + missing;
    if items_len < 255 {
        list.put_u8(0xc0);
        list.put_u8((items_len + 1) as u8);
        list.put_u8(full);
    } else {
        list.put_u8(0xd0);
        list.put_u32((items_len + 4) as u32);
        list.put_u32(u32::from(full));
    }
    list.extend_from_slice(items);
    list.extend(std::iter::repeat_n(0x40u8, missing));

    let mut frame = Vec::with_capacity(body_start + 3 + list.len() + rest.len());
    frame.extend_from_slice(&unit[..body_start]);
    frame.extend_from_slice(&body[..3]);
    frame.extend_from_slice(&list);
    frame.extend_from_slice(rest);
    let size = u32::try_from(frame.len()).ok()?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Some(frame)
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection cut by fault injection",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for WireStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let received = &buf.filled()[before..];
                if let Some(sniffer) = &mut this.open {
                    if sniffer.take(received) {
                        this.open = None;
                    }
                }
                Poll::Ready(this.inbound.check(received))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> WireStream<S> {
    /// Writes as much of `ready` to the socket as it takes now.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.ready.has_remaining() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.ready) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.ready.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WireStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        if this.ready.len() >= MAX_PENDING_OUTPUT {
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.unparsed.extend_from_slice(buf);
        this.process_unparsed();
        // Push what we can now; the rest goes on flush or the next write.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.cut.is_cut() && this.poll_drain(cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(descriptor: u8, list: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 0, 0, 0, 2, 0, 0, 0, 0x00, 0x53, descriptor];
        f.extend_from_slice(list);
        f.extend_from_slice(payload);
        let size = f.len() as u32;
        f[..4].copy_from_slice(&size.to_be_bytes());
        f
    }

    #[test]
    fn short_flow_is_padded_to_eleven_fields() {
        // flow with 2 fields: next-incoming-id=1 (smalluint), incoming-window=5 (smalluint)
        let f = frame(0x13, &[0xc0, 5, 2, 0x52, 1, 0x52, 5], &[]);
        let p = padded(&f).expect("padded");
        assert_eq!(&p[11..14], &[0xc0, 1 + 4 + 9, 11]);
        assert_eq!(&p[14..18], &[0x52, 1, 0x52, 5]);
        assert!(p[18..].iter().all(|b| *b == 0x40));
        assert_eq!(p.len() - 18, 9);
        assert_eq!(
            u32::from_be_bytes(p[..4].try_into().unwrap()) as usize,
            p.len()
        );
    }

    #[test]
    fn transfer_payload_stays_after_the_padded_list() {
        let f = frame(0x14, &[0xc0, 3, 1, 0x43, 0x44], &[0xde, 0xad]);
        let p = padded(&f).expect("padded");
        assert_eq!(&p[p.len() - 2..], &[0xde, 0xad]);
        assert_eq!(p[13], 11);
    }

    #[test]
    fn empty_list_and_list32_are_handled() {
        let f = frame(0x17, &[0x45], &[]);
        let p = padded(&f).expect("padded");
        assert_eq!(&p[11..], &[0xc0, 2, 1, 0x40]);
        let f = frame(0x16, &[0xd0, 0, 0, 0, 5, 0, 0, 0, 1, 0x43], &[]);
        let p = padded(&f).expect("padded");
        assert_eq!(&p[11..], &[0xc0, 4, 3, 0x43, 0x40, 0x40]);
    }

    #[test]
    fn full_lists_headers_and_garbage_pass_unchanged() {
        assert!(padded(b"AMQP\x00\x01\x00\x00").is_none());
        let f = frame(0x18, &[0xc0, 2, 1, 0x40], &[]);
        assert!(padded(&f).is_none());
        assert!(padded(&[0, 0, 0, 8, 2, 0, 0, 0]).is_none());
        assert!(padded(&[0, 0, 0, 9, 9, 0, 0, 0, 1]).is_none());
    }

    #[test]
    fn inbound_frames_below_the_header_size_are_refused() {
        let mut units = InboundUnits::default();
        let open = frame(0x10, &[0x45], &[]);
        let mut stream = b"AMQP\x03\x01\x00\x00".to_vec();
        stream.extend_from_slice(&open);
        // An empty frame (a heartbeat) is the shortest valid one.
        stream.extend_from_slice(&[0, 0, 0, 8, 2, 0, 0, 0]);
        // Byte by byte, as reads may split anywhere.
        for byte in &stream {
            assert!(units.check(std::slice::from_ref(byte)).is_ok());
        }
        assert!(units.check(&[0, 0, 0, 5, 2]).is_err());
        assert!(InboundUnits::default().check(&[0, 0, 0, 0]).is_err());
    }

    #[test]
    fn units_are_split_at_frame_boundaries() {
        let f = frame(0x18, &[0x45], &[]);
        assert_eq!(complete_unit_len(&f[..5]), None);
        assert_eq!(complete_unit_len(&f), Some(f.len()));
        assert_eq!(complete_unit_len(b"AMQP\x03\x01\x00\x00rest"), Some(8));
    }
}
