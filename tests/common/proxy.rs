//! A TCP fault proxy on loopback between a client and the emulator, for network faults the
//! emulator cannot make itself: resets (of live connections, or of a new connection at a
//! chosen stage of its handshake), black holes, connections cut after some bytes, one-way loss
//! (the service's answers stop reaching the client while the client's frames still arrive),
//! and delay.
//!
//! Each connection is one task that forwards both directions, so that a reset can end both
//! sockets at once with an RST (linger 0), as a middlebox or a crashed peer does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use eventhubs_emulator::Emulator;

/// A point in a new connection's handshake, named by the client's frame that reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The client's AMQP open, right after SASL succeeded.
    Open,
    /// The client's first transfer: the `$cbs` put-token request.
    PutToken,
    /// The client's third attach: its first entity link, after the two `$cbs` links.
    EntityAttach,
}

impl Stage {
    /// The performative's descriptor code and which occurrence of it marks the stage.
    fn frame(self) -> (u8, u32) {
        match self {
            Stage::Open => (0x10, 1),
            Stage::PutToken => (0x14, 1),
            Stage::EntityAttach => (0x12, 3),
        }
    }
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to emulator.
    Up,
    /// Emulator to client.
    Down,
}

#[derive(Default)]
struct Switches {
    /// Connections of a generation below this swallow every byte (black hole).
    black_hole_before: AtomicU64,
    black_hole_new: AtomicBool,
    /// Connections of a generation below this drop what the emulator sends.
    drop_down_before: AtomicU64,
    drop_down_new: AtomicBool,
    /// Reset the next new connections when the client reaches this stage (count, stage).
    reset_at: Mutex<Option<(u32, Stage)>>,
    /// Cut new connections after this many bytes in one direction.
    cut_after: Mutex<Option<(Direction, u64)>>,
    delay_ms: AtomicU64,
    resets: AtomicU64,
}

/// The fault proxy. Connections are forwarded normally until a switch says otherwise.
pub struct Proxy {
    pub port: u16,
    generation: Arc<AtomicU64>,
    switches: Arc<Switches>,
    /// Bumped to reset every connection open now.
    reset_all: watch::Sender<u64>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let generation = Arc::new(AtomicU64::new(0));
        let switches = Arc::new(Switches::default());
        let (reset_all, reset_rx) = watch::channel(0u64);
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let generation = generation.clone();
            let switches = switches.clone();
            let tasks = tasks.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(target).await else {
                        continue;
                    };
                    let mine = generation.fetch_add(1, Ordering::SeqCst);
                    let plan = Plan::for_new(mine, &switches);
                    let forward = forward(
                        client,
                        server,
                        mine,
                        plan,
                        switches.clone(),
                        reset_rx.clone(),
                    );
                    tasks.lock().unwrap().push(tokio::spawn(forward));
                }
            })
        };
        tasks.lock().unwrap().push(accept);
        Proxy {
            port,
            generation,
            switches,
            reset_all,
            tasks,
        }
    }

    /// The emulator's connection string, pointed at this proxy.
    pub fn connection_string(&self, emulator: &Emulator) -> String {
        let port = emulator.local_addr().port();
        emulator
            .connection_string()
            .replace(&format!(":{port}"), &format!(":{}", self.port))
    }

    /// How many connections the proxy has accepted.
    pub fn accepted(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// How many connections the proxy has reset.
    pub fn resets(&self) -> u64 {
        self.switches.resets.load(Ordering::SeqCst)
    }

    /// Every connection open now stops carrying bytes (both ways), and stays open.
    pub fn black_hole(&self) {
        self.switches
            .black_hole_before
            .fetch_max(self.accepted(), Ordering::SeqCst);
    }

    /// Connections opened from now on are black-holed from their first byte.
    pub fn black_hole_new(&self) {
        self.switches.black_hole_new.store(true, Ordering::SeqCst);
    }

    /// Resets (RST) every connection open now, both ways.
    pub fn reset(&self) {
        self.reset_all.send_modify(|n| *n += 1);
    }

    /// The next `count` new connections are reset when the client reaches `stage`.
    pub fn reset_new_at(&self, stage: Stage, count: u32) {
        *self.switches.reset_at.lock().unwrap() = Some((count, stage));
    }

    /// What the emulator sends on the connections open now is dropped (the client's frames
    /// still arrive): acknowledgements lost one way.
    pub fn drop_answers(&self) {
        self.switches
            .drop_down_before
            .fetch_max(self.accepted(), Ordering::SeqCst);
    }

    /// Answers on connections opened from now on are dropped too.
    pub fn drop_answers_new(&self, enabled: bool) {
        self.switches.drop_down_new.store(enabled, Ordering::SeqCst);
    }

    /// New connections are reset after `bytes` have passed in `direction`; None stops it.
    pub fn cut_new_after(&self, cut: Option<(Direction, u64)>) {
        *self.switches.cut_after.lock().unwrap() = cut;
    }

    /// Every chunk waits this long before it is forwarded (all connections, both ways).
    pub fn delay(&self, delay: Duration) {
        self.switches
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Back to plain forwarding for new connections and chunks.
    pub fn heal(&self) {
        self.switches.black_hole_new.store(false, Ordering::SeqCst);
        self.switches.drop_down_new.store(false, Ordering::SeqCst);
        *self.switches.reset_at.lock().unwrap() = None;
        *self.switches.cut_after.lock().unwrap() = None;
        self.switches.delay_ms.store(0, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// What a connection was told when it was accepted.
struct Plan {
    reset_at: Option<Stage>,
    cut_after: Option<(Direction, u64)>,
}

impl Plan {
    fn for_new(generation: u64, switches: &Switches) -> Plan {
        if switches.black_hole_new.load(Ordering::SeqCst) {
            switches
                .black_hole_before
                .fetch_max(generation + 1, Ordering::SeqCst);
        }
        if switches.drop_down_new.load(Ordering::SeqCst) {
            switches
                .drop_down_before
                .fetch_max(generation + 1, Ordering::SeqCst);
        }
        let reset_at = {
            let mut armed = switches.reset_at.lock().unwrap();
            match armed.as_mut() {
                Some((left, stage)) if *left > 0 => {
                    *left -= 1;
                    Some(*stage)
                }
                _ => None,
            }
        };
        Plan {
            reset_at,
            cut_after: *switches.cut_after.lock().unwrap(),
        }
    }
}

/// Forwards one connection both ways until either side ends or a fault ends it.
async fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    generation: u64,
    plan: Plan,
    switches: Arc<Switches>,
    mut reset_all: watch::Receiver<u64>,
) {
    reset_all.mark_unchanged();
    let mut frames = FrameCounter::default();
    let mut passed = [0u64; 2];
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    let reset = loop {
        let (direction, n) = tokio::select! {
            read = client.read(&mut up) => match read {
                Ok(0) | Err(_) => break false,
                Ok(n) => (Direction::Up, n),
            },
            read = server.read(&mut down) => match read {
                Ok(0) | Err(_) => break false,
                Ok(n) => (Direction::Down, n),
            },
            _ = reset_all.changed() => break true,
        };
        let chunk = match direction {
            Direction::Up => &up[..n],
            Direction::Down => &down[..n],
        };
        if direction == Direction::Up {
            if let Some(stage) = plan.reset_at {
                let (code, nth) = stage.frame();
                if frames.reaches(chunk, code, nth) {
                    break true;
                }
            }
        }
        let slot = usize::from(direction == Direction::Down);
        passed[slot] += n as u64;
        if let Some((cut_direction, limit)) = plan.cut_after {
            if cut_direction == direction && passed[slot] > limit {
                break true;
            }
        }
        if generation < switches.black_hole_before.load(Ordering::SeqCst) {
            continue;
        }
        if direction == Direction::Down
            && generation < switches.drop_down_before.load(Ordering::SeqCst)
        {
            continue;
        }
        let delay = switches.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let written = match direction {
            Direction::Up => server.write_all(chunk).await,
            Direction::Down => client.write_all(chunk).await,
        };
        if written.is_err() {
            break false;
        }
    };
    if reset {
        switches.resets.fetch_add(1, Ordering::SeqCst);
        // Linger 0: closing sends an RST instead of a FIN, on both sides.
        #[allow(deprecated)]
        {
            let _ = client.set_linger(Some(Duration::ZERO));
            let _ = server.set_linger(Some(Duration::ZERO));
        }
    }
}

/// Follows the AMQP frames a client sends (protocol headers, then length-prefixed frames) and
/// counts each performative by its descriptor code.
#[derive(Default)]
struct FrameCounter {
    pending: Vec<u8>,
    seen: std::collections::HashMap<u8, u32>,
}

impl FrameCounter {
    /// Takes `chunk`; true once the `nth` frame with descriptor `code` is in it or before.
    fn reaches(&mut self, chunk: &[u8], code: u8, nth: u32) -> bool {
        self.pending.extend_from_slice(chunk);
        loop {
            if self.pending.starts_with(b"AMQP") {
                if self.pending.len() < 8 {
                    break;
                }
                self.pending.drain(..8);
                continue;
            }
            if self.pending.len() < 8 {
                break;
            }
            let size = u32::from_be_bytes([
                self.pending[0],
                self.pending[1],
                self.pending[2],
                self.pending[3],
            ]) as usize;
            if size < 8 || self.pending.len() < size {
                break;
            }
            let body_start = usize::from(self.pending[4]) * 4;
            let body = &self.pending[body_start.min(size)..size];
            // A described performative: 0x00, then the code as smallulong (0x53 <code>).
            if body.len() >= 3 && body[0] == 0x00 && body[1] == 0x53 {
                *self.seen.entry(body[2]).or_default() += 1;
            }
            self.pending.drain(..size);
        }
        self.seen.get(&code).copied().unwrap_or(0) >= nth
    }
}
