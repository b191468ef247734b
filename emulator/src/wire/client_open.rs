//! What each client announced in its AMQP `open`: its container id, the host name it asked
//! for, and its properties (product, version, platform, user agent, ...). Read from the first
//! bytes a connection receives, below fe2o3 (which keeps the peer's `open` to itself), and
//! kept by the namespace for tests that check what a client says about itself.

use std::sync::Arc;

use fe2o3_amqp_types::performatives::Open;
use fe2o3_amqp_types::primitives::Value;

use crate::connection::ClientOpen;

/// What a client's `open` says, as the emulator keeps it.
fn client_open(open: Open) -> ClientOpen {
    let properties = open
        .properties
        .map(|fields| {
            fields
                .into_iter()
                .filter_map(|(name, value)| match value {
                    Value::String(text) => Some((name.0, text)),
                    Value::Symbol(symbol) => Some((name.0, symbol.0)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    ClientOpen {
        container_id: open.container_id,
        hostname: open.hostname,
        properties,
        websocket: false,
    }
}

/// Where a connection's `open` goes once it is read.
pub(crate) type OpenSink = Arc<dyn Fn(ClientOpen) + Send + Sync>;

/// The most a connection may send before its `open` (headers, SASL frames): past it, the
/// sniffer gives up rather than hold the bytes.
const MAX_PREFIX: usize = 64 * 1024;

/// Watches the start of a connection's inbound bytes for its `open` frame.
pub(crate) struct OpenSniffer {
    seen: Vec<u8>,
    sink: OpenSink,
}

impl std::fmt::Debug for OpenSniffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSniffer")
            .field("seen", &self.seen.len())
            .finish()
    }
}

/// What the bytes so far tell.
enum Found {
    /// The `open`, decoded (or not decodable: then nothing is recorded).
    Open(Option<Box<Open>>),
    /// Not yet: more bytes are needed.
    NotYet,
    /// It will not come (malformed prefix, or the first AMQP frame is not an `open`).
    Never,
}

impl OpenSniffer {
    pub(crate) fn new(sink: OpenSink) -> Self {
        Self {
            seen: Vec::new(),
            sink,
        }
    }

    /// Takes newly received bytes; true once the sniffer is done (recorded, or gave up).
    pub(crate) fn take(&mut self, bytes: &[u8]) -> bool {
        self.seen.extend_from_slice(bytes);
        match find_open(&self.seen) {
            Found::Open(open) => {
                if let Some(open) = open {
                    (self.sink)(client_open(*open));
                }
                true
            }
            Found::Never => true,
            Found::NotYet => self.seen.len() > MAX_PREFIX,
        }
    }
}

/// Walks protocol headers and frames from the start of a connection to its first AMQP frame.
fn find_open(mut bytes: &[u8]) -> Found {
    loop {
        if bytes.len() < 8 {
            return Found::NotYet;
        }
        if &bytes[..4] == b"AMQP" {
            bytes = &bytes[8..];
            continue;
        }
        let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let data_offset = usize::from(bytes[4]) * 4;
        let frame_type = bytes[5];
        if size < 8 || data_offset < 8 || data_offset > size {
            return Found::Never;
        }
        if bytes.len() < size {
            return Found::NotYet;
        }
        if frame_type == 0x00 {
            let body = &bytes[data_offset..size];
            return match body.get(..3) {
                // A described list with the `open` descriptor (0x00 0x53 0x10).
                Some([0x00, 0x53, 0x10]) => {
                    Found::Open(serde_amqp::from_slice(body).ok().map(Box::new))
                }
                _ => Found::Never,
            };
        }
        bytes = &bytes[size..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::definitions::Fields;
    use fe2o3_amqp_types::primitives::Symbol;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    fn frame(frame_type: u8, body: &[u8]) -> Vec<u8> {
        let size = (8 + body.len()) as u32;
        let mut out = size.to_be_bytes().to_vec();
        out.extend_from_slice(&[2, frame_type, 0, 0]);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn the_open_after_sasl_is_recorded_whatever_the_chunks() {
        let mut properties = Fields::new();
        properties.insert(Symbol::from("user-agent"), Value::String("test/1.0".into()));
        properties.insert(Symbol::from("product"), Value::Symbol(Symbol::from("p")));
        properties.insert(Symbol::from("count"), Value::Uint(3));
        let open = Open {
            container_id: "client-7".into(),
            hostname: Some("ns.example".into()),
            max_frame_size: Default::default(),
            channel_max: Default::default(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: Some(properties),
        };
        let mut stream = b"AMQP\x03\x01\x00\x00".to_vec();
        stream.extend(frame(0x01, &[0x00, 0x53, 0x41, 0x45]));
        stream.extend(b"AMQP\x00\x01\x00\x00");
        stream.extend(frame(0x00, &serde_amqp::to_vec(&open).unwrap()));
        for chunk in [1, 3, 7, stream.len()] {
            let recorded = Arc::new(Mutex::new(Vec::new()));
            let sink = recorded.clone();
            let mut sniffer = OpenSniffer::new(Arc::new(move |o| sink.lock().unwrap().push(o)));
            let mut done = false;
            for piece in stream.chunks(chunk) {
                assert!(!done, "done before the open was whole");
                done = sniffer.take(piece);
            }
            assert!(done);
            let recorded = recorded.lock().unwrap();
            assert_eq!(recorded.len(), 1, "chunks of {chunk}");
            assert_eq!(recorded[0].container_id, "client-7");
            assert_eq!(recorded[0].hostname.as_deref(), Some("ns.example"));
            assert_eq!(
                recorded[0].properties,
                BTreeMap::from([
                    ("product".to_string(), "p".to_string()),
                    ("user-agent".to_string(), "test/1.0".to_string()),
                ])
            );
        }
    }

    #[test]
    fn garbage_or_another_first_frame_is_given_up_on() {
        let never = |bytes: &[u8]| {
            let mut sniffer = OpenSniffer::new(Arc::new(|_| panic!("nothing to record")));
            sniffer.take(bytes)
        };
        assert!(never(&[0, 0, 0, 4, 2, 0, 0, 0]));
        assert!(never(&frame(0x00, &[0x00, 0x53, 0x11, 0x45])));
        assert!(!never(b"AMQP\x00\x01\x00\x00\x00\x00"));
    }
}
