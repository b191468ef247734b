//! `eventhubs-emulator`: serves a local Event Hubs-compatible AMQP endpoint until Ctrl-C or
//! SIGTERM, after printing one line with its connection string.

use std::process::ExitCode;

use eventhubs_emulator::{Emulator, EmulatorBuilder};

const USAGE: &str = "\
usage: eventhubs-emulator [--port N] [--hub NAME:PARTITIONS]... [--max-message-size BYTES]
                          [--tls] [--key-name NAME] [--key KEY] [--no-auth] [--reject-jwt]
                          [--consumer-group NAME]... [--max-events-per-partition N]
                          [--idle-timeout-ms N]

  --port N                 TCP port on 127.0.0.1 (default 5672; 0 picks a free one)
  --hub NAME:PARTITIONS    an event hub (repeatable; default hub:4)
  --max-message-size N     max-message-size of producer links in bytes (default 1048576)
  --tls                    serve amqps with a certificate made at start (its CA is printed)
  --key-name, --key        the shared access key that signs valid tokens
  --no-auth                let links attach without a $cbs put-token
  --reject-jwt             refuse JWT tokens (accepted unverified by default)
  --consumer-group NAME    a consumer group besides $Default (repeatable)
  --max-events-per-partition N
                           keep about N events per partition, dropping the oldest
                           (default: keep every event)
  --idle-timeout-ms N      idle timeout announced to clients; a connection silent for longer
                           is dropped (default 120000, as the service; 0: never)";

/// Parses the command line into a builder; the error names the flag that was wrong.
fn parse_args(args: &[String]) -> Result<EmulatorBuilder, String> {
    let mut builder = Emulator::builder().port(5672);
    let mut key_name = None;
    let mut key = None;
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let mut value = |name: &str| {
            iter.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        builder = match flag.as_str() {
            "--port" => {
                let v = value("--port")?;
                builder.port(
                    v.parse()
                        .map_err(|_| format!("--port: '{v}' is not a port number"))?,
                )
            }
            "--hub" => {
                let v = value("--hub")?;
                let (name, count) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--hub: '{v}' is not NAME:PARTITIONS"))?;
                let count = count
                    .parse()
                    .map_err(|_| format!("--hub: '{count}' is not a partition count"))?;
                builder.hub(name, count)
            }
            "--max-message-size" => {
                let v = value("--max-message-size")?;
                builder.max_message_size(
                    v.parse()
                        .map_err(|_| format!("--max-message-size: '{v}' is not a byte count"))?,
                )
            }
            "--tls" => builder.tls(true),
            "--key-name" => {
                key_name = Some(value("--key-name")?);
                builder
            }
            "--key" => {
                key = Some(value("--key")?);
                builder
            }
            "--no-auth" => builder.require_authorization(false),
            "--reject-jwt" => builder.accept_jwt(false),
            "--consumer-group" => builder.consumer_group(value("--consumer-group")?),
            "--max-events-per-partition" => {
                let v = value("--max-events-per-partition")?;
                builder.max_events_per_partition(v.parse().map_err(|_| {
                    format!("--max-events-per-partition: '{v}' is not an event count")
                })?)
            }
            "--idle-timeout-ms" => {
                let v = value("--idle-timeout-ms")?;
                let ms: u32 = v.parse().map_err(|_| {
                    format!("--idle-timeout-ms: '{v}' is not a number of milliseconds")
                })?;
                builder.idle_timeout(std::time::Duration::from_millis(u64::from(ms)))
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown flag '{other}'")),
        };
    }
    if key_name.is_some() || key.is_some() {
        builder = builder.shared_access_key(
            key_name.unwrap_or_else(|| eventhubs_emulator::DEFAULT_KEY_NAME.to_string()),
            key.unwrap_or_else(|| eventhubs_emulator::DEFAULT_KEY.to_string()),
        );
    }
    Ok(builder)
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let builder = match parse_args(&args) {
        Ok(builder) => builder,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("eventhubs-emulator: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let stop = shutdown_signal();
    let emulator = match builder.start().await {
        Ok(emulator) => emulator,
        Err(e) => {
            eprintln!("eventhubs-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(pem) = emulator.ca_certificate_pem() {
        eprintln!("TLS certificate authority (trust it in your client):\n{pem}");
    }
    println!(
        "EVENTHUBS_CONNECTION_STRING={}",
        emulator.connection_string()
    );
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

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn good_flags_parse() {
        assert!(parse_args(&args(&[
            "--port", "0", "--hub", "a:2", "--hub", "b:3", "--tls"
        ]))
        .is_ok());
        assert!(parse_args(&args(&["--key-name", "k", "--key", "v", "--no-auth"])).is_ok());
    }

    #[test]
    fn bad_flags_name_the_problem() {
        let err = |a: &[&str]| parse_args(&args(a)).err().unwrap_or_default();
        assert!(err(&["--port", "x"]).contains("--port"));
        assert!(err(&["--hub", "nocount"]).contains("NAME:PARTITIONS"));
        assert!(err(&["--hub", "h:many"]).contains("partition count"));
        assert!(err(&["--bogus"]).contains("--bogus"));
        assert!(err(&["--max-message-size"]).contains("needs a value"));
    }
}
