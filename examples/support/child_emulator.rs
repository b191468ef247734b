//! An emulator in a child process: the example's own binary, started again with
//! `--child-emulator`, so that what an example measures in its own process (memory, CPU) is the
//! producer alone. The parent controls it through the child's stdin, one command a line:
//! `delay MS` (answer every delivery that late), `stored` (how many events the hub holds).
//! Each command is answered with one line on the child's stdout.
//!
//! Shared by examples that `#[path]`-include it; not an example of its own.

use std::process::Stdio;

use eventhubs_emulator::Emulator;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const FLAG: &str = "--child-emulator";

/// The child's side: when this process was started as the child, serves until its stdin
/// closes and returns true (the caller then exits); otherwise returns false at once.
pub fn serve_if_child() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(FLAG) {
        return false;
    }
    let partitions: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(4);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("child emulator: no runtime: {e}");
            return true;
        }
    };
    if let Err(e) = runtime.block_on(serve(partitions)) {
        eprintln!("child emulator: {e}");
    }
    true
}

async fn serve(partitions: usize) -> Result<(), BoxError> {
    // Only the newest events are kept: the child's memory stays small over long runs.
    let emulator = Emulator::builder()
        .hub("hub", partitions)
        .max_events_per_partition(10_000)
        .start()
        .await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("{}\n", emulator.connection_string()).as_bytes())
        .await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        let answer = match (
            words.next(),
            words.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some("delay"), Some(ms)) => {
                emulator
                    .faults()
                    .delay_dispositions(std::time::Duration::from_millis(ms));
                "ok".to_string()
            }
            (Some("stored"), _) => emulator.counters().events_stored.to_string(),
            _ => format!("unknown command '{line}'"),
        };
        out.write_all(format!("{answer}\n").as_bytes()).await?;
        out.flush().await?;
    }
    emulator.shutdown().await;
    Ok(())
}

/// The parent's handle on the child emulator.
pub struct ChildEmulator {
    child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
    connection_string: String,
}

impl ChildEmulator {
    /// Starts the child with one event hub `hub` of `partitions` partitions.
    pub async fn start(partitions: usize) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(FLAG)
            .arg(partitions.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut answers = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let connection_string = answers
            .next_line()
            .await?
            .ok_or("the child emulator did not start")?;
        Ok(Self {
            child,
            stdin,
            answers,
            connection_string,
        })
    }

    /// The connection string of its event hub.
    pub fn connection_string(&self) -> &str {
        &self.connection_string
    }

    /// Sends one command and returns the child's answer.
    pub async fn command(&mut self, line: &str) -> Result<String, BoxError> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(self
            .answers
            .next_line()
            .await?
            .ok_or("the child emulator ended")?)
    }

    /// Answers every delivery `ms` milliseconds late (0: at once).
    pub async fn delay_dispositions(&mut self, ms: u64) -> Result<(), BoxError> {
        self.command(&format!("delay {ms}")).await.map(|_| ())
    }

    /// Stops the child (closing its stdin ends it).
    pub async fn stop(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait()).await;
    }
}
