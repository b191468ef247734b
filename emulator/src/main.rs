//! `eventhubs-emulator`: serves a local Event Hubs-compatible AMQP endpoint until Ctrl-C or
//! SIGTERM. On start it prints its version (standard error) and its connection strings
//! (standard output, one `NAME=value` line each).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use eventhubs_emulator::{Emulator, EmulatorBuilder, DEFAULT_KEY, DEFAULT_KEY_NAME};

/// A local Azure Event Hubs-compatible AMQP 1.0 broker: no Docker, no Azure.
#[derive(Debug, Parser)]
#[command(name = "eventhubs-emulator", version, about, long_about = None)]
struct Cli {
    /// TCP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 5672)]
    port: u16,

    /// An event hub, as NAME:PARTITIONS (repeatable; default hub:4 when no hub is given).
    #[arg(long = "hub", value_name = "NAME:PARTITIONS", value_parser = parse_hub)]
    hubs: Vec<(String, usize)>,

    /// Microsoft's emulator configuration file (Config.json): its hubs and consumer groups,
    /// and Microsoft's documented key unless --key is given.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Prints the hubs, partitions and consumer groups that would be served, and exits.
    #[arg(long)]
    print_config: bool,

    /// max-message-size announced on producer links, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = eventhubs_emulator::DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size: u64,

    /// Serve amqps with a certificate authority made at start (printed on standard error).
    #[arg(long)]
    tls: bool,

    /// Also serve AMQP over WebSockets on this port (ws, or wss with --tls; path
    /// /$servicebus/websocket, subprotocol AMQPWSB10; 0 picks a free one).
    #[arg(long, value_name = "PORT")]
    websocket_port: Option<u16>,

    /// Name of the shared access key that signs valid tokens.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_KEY_NAME)]
    key_name: String,

    /// The shared access key itself.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,

    /// Let links attach without a $cbs put-token.
    #[arg(long)]
    no_auth: bool,

    /// Refuse JWT tokens (they are accepted unverified otherwise).
    #[arg(long)]
    reject_jwt: bool,

    /// A consumer group of every hub besides $Default (repeatable).
    #[arg(long = "consumer-group", value_name = "NAME")]
    consumer_groups: Vec<String>,

    /// Keep about N events per partition, dropping the oldest (default: keep every event).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_events_per_partition: Option<u64>,

    /// Idle timeout announced to clients; a connection silent for longer is dropped (0: never).
    #[arg(long, value_name = "MS", default_value_t = 120_000)]
    idle_timeout_ms: u32,
}

/// `NAME:PARTITIONS`, e.g. `telemetry:8`.
fn parse_hub(text: &str) -> Result<(String, usize), String> {
    let (name, count) = text
        .split_once(':')
        .ok_or_else(|| format!("'{text}' is not NAME:PARTITIONS"))?;
    let count = count
        .parse()
        .map_err(|_| format!("'{count}' is not a partition count"))?;
    Ok((name.to_string(), count))
}

impl Cli {
    /// The emulator this command line asks for.
    fn builder(&self) -> Result<EmulatorBuilder, String> {
        let mut builder = Emulator::builder()
            .port(self.port)
            .max_message_size(self.max_message_size)
            .tls(self.tls)
            .require_authorization(!self.no_auth)
            .accept_jwt(!self.reject_jwt)
            .idle_timeout(Duration::from_millis(u64::from(self.idle_timeout_ms)));
        if let Some(key) = &self.key {
            builder = builder.shared_access_key(&self.key_name, key);
        } else if self.key_name != DEFAULT_KEY_NAME {
            builder = builder.shared_access_key(&self.key_name, DEFAULT_KEY);
        }
        if let Some(path) = &self.config {
            let json = std::fs::read_to_string(path)
                .map_err(|e| format!("--config: cannot read {}: {e}", path.display()))?;
            builder = builder
                .microsoft_config(&json)
                .map_err(|e| format!("--config {}: {e}", path.display()))?;
        }
        for (name, partitions) in &self.hubs {
            builder = builder.hub(name, *partitions);
        }
        for group in &self.consumer_groups {
            builder = builder.consumer_group(group);
        }
        if let Some(port) = self.websocket_port {
            builder = builder.websocket_port(port);
        }
        if let Some(events) = self.max_events_per_partition {
            builder =
                builder.max_events_per_partition(usize::try_from(events).unwrap_or(usize::MAX));
        }
        Ok(builder)
    }
}

/// Starts listening for Ctrl-C and SIGTERM at once and returns a future that ends on either.
/// The handlers are installed before the connection string is printed: a supervisor that sends
/// SIGTERM as soon as it has read that line must get a clean stop, not the default kill.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (Ok(mut only), Err(_)) | (Err(_), Ok(mut only)) => {
                    only.recv().await;
                }
                (Err(_), Err(_)) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let builder = match cli.builder() {
        Ok(builder) => builder,
        Err(message) => {
            eprintln!("eventhubs-emulator: {message}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        return match builder.effective_config() {
            Ok(config) => {
                print!("{config}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("eventhubs-emulator: {e}");
                ExitCode::from(2)
            }
        };
    }
    let stop = shutdown_signal();
    let emulator = match builder.start().await {
        Ok(emulator) => emulator,
        Err(e) => {
            eprintln!("eventhubs-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "eventhubs-emulator {} serving {}",
        env!("CARGO_PKG_VERSION"),
        emulator.endpoint()
    );
    if let Some(pem) = emulator.ca_certificate_pem() {
        eprintln!("TLS certificate authority (trust it in your client):\n{pem}");
    }
    println!(
        "EVENTHUBS_CONNECTION_STRING={}",
        emulator.connection_string()
    );
    println!(
        "EVENTHUBS_NAMESPACE_CONNECTION_STRING={}",
        emulator.namespace_connection_string()
    );
    if let Some(connection_string) = emulator.websocket_connection_string() {
        eprintln!(
            "AMQP over WebSockets on {}/$servicebus/websocket",
            emulator.websocket_endpoint().unwrap_or_default()
        );
        println!("EVENTHUBS_WEBSOCKET_CONNECTION_STRING={connection_string}");
    }
    stop.await;
    let counters = emulator.counters();
    eprintln!(
        "eventhubs-emulator: stopping; {} deliveries, {} events stored, {} rejected, {} duplicates dropped",
        counters.deliveries, counters.events_stored, counters.rejected, counters.duplicates_dropped
    );
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("eventhubs-emulator").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn good_flags_parse() {
        let cli = parse(&["--port", "0", "--hub", "a:2", "--hub", "b:3", "--tls"]).unwrap();
        assert_eq!(cli.websocket_port, None);
        let cli_ws = parse(&["--websocket-port", "8080"]).unwrap();
        assert_eq!(cli_ws.websocket_port, Some(8080));
        assert_eq!(cli.hubs, vec![("a".into(), 2), ("b".into(), 3)]);
        assert!(cli.builder().is_ok());
        assert!(parse(&["--key-name", "k", "--key", "v", "--no-auth"]).is_ok());
    }

    #[test]
    fn bad_flags_name_the_problem() {
        let err = |a: &[&str]| parse(a).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(&["--port", "x"]).contains("--port"));
        assert!(err(&["--hub", "nocount"]).contains("NAME:PARTITIONS"));
        assert!(err(&["--hub", "h:many"]).contains("partition count"));
        assert!(err(&["--bogus"]).contains("--bogus"));
        assert!(err(&["--max-message-size"]).contains("--max-message-size"));
        assert!(err(&["--max-events-per-partition", "0"]).contains("--max-events-per-partition"));
    }
}
