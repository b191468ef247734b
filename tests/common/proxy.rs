//! A TCP proxy on loopback between a client and the emulator, for faults the emulator cannot
//! make itself: connections that go silent (black holes) and new connections refused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use eventhubs_emulator::Emulator;

/// A TCP proxy on loopback in front of the emulator. `black_hole` makes it swallow every byte
/// of the connections open now, in both directions, without closing them: the client sees a
/// peer that stops answering (a dead NAT entry, a pulled cable), not a closed connection.
/// Connections opened later are forwarded normally unless `black_hole_new` is set too.
pub struct Proxy {
    pub port: u16,
    /// Generation of black-holed connections: connections of a generation below it swallow.
    cut_before: Arc<std::sync::atomic::AtomicU64>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    refuse_new: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let cut_before = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let refuse_new = Arc::new(AtomicBool::new(false));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let cut_before = cut_before.clone();
            let generation = generation.clone();
            let refuse_new = refuse_new.clone();
            let tasks = tasks.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(target).await else {
                        continue;
                    };
                    // A black-holed new connection: its generation is cut already.
                    let mine = generation.fetch_add(1, Ordering::SeqCst);
                    if refuse_new.load(Ordering::SeqCst) {
                        cut_before.fetch_max(mine + 1, Ordering::SeqCst);
                    }
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(client_read, server_write, mine, cut_before.clone());
                    let down = pump(server_read, client_write, mine, cut_before.clone());
                    let mut tasks = tasks.lock().unwrap();
                    tasks.push(tokio::spawn(up));
                    tasks.push(tokio::spawn(down));
                }
            })
        };
        tasks.lock().unwrap().push(accept);
        Proxy {
            port,
            cut_before,
            generation,
            refuse_new,
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

    /// Every connection open now stops carrying bytes (both ways), and stays open.
    pub fn black_hole(&self) {
        self.cut_before
            .fetch_max(self.generation.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Connections opened from now on are black-holed from their first byte.
    pub fn black_hole_new(&self) {
        self.refuse_new.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    generation: u64,
    cut_before: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if generation < cut_before.load(Ordering::SeqCst) {
            continue; // swallowed
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
