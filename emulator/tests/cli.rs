//! The `eventhubs-emulator` binary: its one line of output, serving clients as configured on the
//! command line, stopping on SIGTERM, and refusing bad flags.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use common::*;
use eventhubs_emulator::sas::SasKey;
use fe2o3_amqp::types::primitives::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

const BINARY: &str = env!("CARGO_BIN_EXE_eventhubs-emulator");
const PREFIX: &str = "EVENTHUBS_CONNECTION_STRING=";
const SERVE_ARGS: &[&str] = &[
    "--port",
    "0",
    "--hub",
    "hub:2",
    "--hub",
    "other:3",
    "--max-message-size",
    "2048",
];

/// A running emulator process. Dropping it kills the process (also when a test fails).
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The connection string the process printed (without the variable name).
    connection_string: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Running {
    /// Starts the binary and waits for its connection string line.
    async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BINARY)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut running = Self {
            child,
            stdout: BufReader::new(stdout).lines(),
            connection_string: String::new(),
        };
        let line = timeout(STEP, running.stdout.next_line())
            .await
            .expect("the connection string is printed in time")
            .expect("stdout is readable")
            .expect("the process prints a line");
        running.connection_string = line
            .strip_prefix(PREFIX)
            .unwrap_or_else(|| panic!("the line starts with {PREFIX}: {line}"))
            .to_string();
        running
    }

    /// A `Key=Value` field of the connection string.
    fn field(&self, name: &str) -> Option<&str> {
        self.connection_string
            .split(';')
            .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
    }

    fn addr(&self) -> SocketAddr {
        let endpoint = self.field("Endpoint").expect("an Endpoint field");
        let host_port = endpoint
            .strip_prefix("sb://")
            .unwrap_or_else(|| panic!("an sb:// endpoint: {endpoint}"))
            .trim_end_matches('/');
        host_port
            .parse()
            .unwrap_or_else(|e| panic!("the endpoint is IP:PORT ({host_port}): {e}"))
    }

    fn key(&self) -> SasKey {
        SasKey {
            name: self
                .field("SharedAccessKeyName")
                .expect("a key name")
                .to_string(),
            key: self.field("SharedAccessKey").expect("a key").to_string(),
        }
    }

    /// Sends SIGTERM (through `kill`, the test has no libc) and waits for the exit; returns the
    /// exit code, the stdout lines after the connection string, and what stderr got.
    async fn terminate(mut self) -> Exit {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
        let exit = timeout(STEP, self.child.wait())
            .await
            .expect("the process exits in time after SIGTERM")
            .expect("wait succeeds");
        let mut more_stdout = Vec::new();
        while let Some(line) = timeout(STEP, self.stdout.next_line())
            .await
            .expect("stdout ends in time")
            .expect("stdout is readable")
        {
            more_stdout.push(line);
        }
        let mut stderr = String::new();
        let mut pipe = self.child.stderr.take().expect("stderr is piped");
        timeout(STEP, pipe.read_to_string(&mut stderr))
            .await
            .expect("stderr ends in time")
            .expect("stderr is readable");
        Exit {
            code: exit.code(),
            more_stdout,
            stderr,
        }
    }
}

/// How a terminated process ended.
struct Exit {
    code: Option<i32>,
    /// Stdout lines after the connection string.
    more_stdout: Vec<String>,
    stderr: String,
}

/// Runs the binary to its end (bounded by [`STEP`]); returns exit code, stdout and stderr.
async fn run_to_end(args: &[&str]) -> (Option<i32>, String, String) {
    let child = Command::new(BINARY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A process that does not exit in time is killed when the timeout drops it.
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let output = timeout(STEP, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} exits in time"))
        .expect("output is readable");
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("utf-8 stdout"),
        String::from_utf8(output.stderr).expect("utf-8 stderr"),
    )
}

/// Connects to the process and authorizes the given hubs with the key it printed.
async fn client_for(running: &Running, hubs: &[&str]) -> TestClient {
    let mut client = TestClient::connect_addr(running.addr()).await;
    for hub in hubs {
        client.authorize_with_key(&running.key(), hub).await;
    }
    client
}

fn partition_count(reply: &Reply) -> i32 {
    assert_eq!(reply.status, 200, "READ failed: {:?}", reply.description);
    match reply_map(reply).get("partition_count") {
        Some(Value::Int(n)) => *n,
        other => panic!("partition_count must be an int, got {other:?}"),
    }
}

#[tokio::test]
async fn prints_its_connection_strings_and_its_version() {
    let running = Running::start(SERVE_ARGS).await;
    let addr = running.addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0, "--port 0 prints the port picked");
    assert_eq!(
        running.connection_string,
        format!(
            "Endpoint=sb://127.0.0.1:{};SharedAccessKeyName={};SharedAccessKey={};\
             UseDevelopmentEmulator=true;EntityPath=hub",
            addr.port(),
            eventhubs_emulator::DEFAULT_KEY_NAME,
            eventhubs_emulator::DEFAULT_KEY
        )
    );

    let exit = running.terminate().await;
    assert_eq!(exit.code, Some(0), "stderr: {}", exit.stderr);
    assert_eq!(
        exit.more_stdout,
        vec![format!(
            "EVENTHUBS_NAMESPACE_CONNECTION_STRING=Endpoint=sb://127.0.0.1:{};SharedAccessKeyName={};SharedAccessKey={};UseDevelopmentEmulator=true;",
            addr.port(),
            eventhubs_emulator::DEFAULT_KEY_NAME,
            eventhubs_emulator::DEFAULT_KEY
        )],
        "then the namespace's connection string, and nothing else"
    );
    assert!(
        exit.stderr.starts_with(&format!(
            "eventhubs-emulator {} serving",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        exit.stderr
    );
}

#[tokio::test]
async fn serves_the_hubs_given_on_the_command_line() {
    let running = Running::start(SERVE_ARGS).await;
    let mut client = client_for(&running, &["hub", "other"]).await;

    let hub = client.read("com.microsoft:eventhub", "hub", None).await;
    assert_eq!(partition_count(&hub), 2);
    let other = client.read("com.microsoft:eventhub", "other", None).await;
    assert_eq!(partition_count(&other), 3);
    let missing = client.read("com.microsoft:eventhub", "nohub", None).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn announces_the_max_message_size_given_on_the_command_line() {
    let running = Running::start(SERVE_ARGS).await;
    let mut client = client_for(&running, &["hub"]).await;
    let sender = client.sender("hub/Partitions/1").await;
    assert_eq!(sender.max_message_size(), Some(2048));
}

#[tokio::test]
async fn stores_events_and_exits_0_on_sigterm_reporting_its_counters() {
    let running = Running::start(SERVE_ARGS).await;
    let mut client = client_for(&running, &["other"]).await;
    let mut sender = client.sender("other/Partitions/2").await;
    let outcome = timeout(STEP, sender.send(event("from the cli test", 0, None)))
        .await
        .expect("outcome in time")
        .expect("send succeeds");
    assert_eq!(rejected_with(&outcome), None);

    let exit = running.terminate().await;
    assert_eq!(exit.code, Some(0), "stderr: {}", exit.stderr);
    assert!(
        exit.stderr
            .contains("1 deliveries, 1 events stored, 0 rejected, 0 duplicates dropped"),
        "stderr reports the counters: {}",
        exit.stderr
    );
}

#[tokio::test]
async fn sigterm_closes_connected_clients() {
    let running = Running::start(SERVE_ARGS).await;
    let mut client = client_for(&running, &["hub"]).await;
    let exit = running.terminate().await;
    assert_eq!(exit.code, Some(0), "stderr: {}", exit.stderr);

    let closed = timeout(STEP, client.connection.on_close())
        .await
        .expect("the client sees the connection end in time");
    match closed {
        Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(e)) => {
            assert_eq!(condition_symbol(&e.condition), "amqp:connection:forced")
        }
        other => panic!("expected a close with amqp:connection:forced, got {other:?}"),
    }
}

/// Asserts a refusal: the exit code, nothing on stdout, and stderr naming the problem.
async fn assert_refused(args: &[&str], expected_code: i32, names: &str) {
    let (code, stdout, stderr) = run_to_end(args).await;
    assert_eq!(code, Some(expected_code), "{args:?}: stderr {stderr}");
    assert_eq!(stdout, "", "{args:?} prints no connection string");
    assert!(
        stderr.contains(names),
        "{args:?}: stderr names the problem ({names}): {stderr}"
    );
}

#[tokio::test]
async fn port_that_is_not_a_number_is_refused() {
    assert_refused(&["--port", "x"], 2, "invalid value 'x' for '--port <PORT>'").await;
}

#[tokio::test]
async fn hub_without_a_partition_count_is_refused() {
    assert_refused(
        &["--port", "0", "--hub", "nocount"],
        2,
        "invalid value 'nocount' for '--hub <NAME:PARTITIONS>': 'nocount' is not NAME:PARTITIONS",
    )
    .await;
}

#[tokio::test]
async fn hub_with_zero_partitions_is_refused() {
    assert_refused(
        &["--port", "0", "--hub", "h:0"],
        1,
        "hub 'h' needs 1 to 2048 partitions, not 0",
    )
    .await;
}

#[tokio::test]
async fn unknown_flag_is_refused() {
    assert_refused(
        &["--port", "0", "--bogus"],
        2,
        "unexpected argument '--bogus'",
    )
    .await;
}

#[tokio::test]
async fn max_message_size_without_a_value_is_refused() {
    assert_refused(
        &["--port", "0", "--max-message-size"],
        2,
        "a value is required for '--max-message-size <BYTES>'",
    )
    .await;
}

#[tokio::test]
async fn refusals_print_the_usage() {
    let (_, _, stderr) = run_to_end(&["--bogus"]).await;
    assert!(stderr.contains("Usage: eventhubs-emulator"), "{stderr}");
}

#[tokio::test]
async fn help_describes_every_flag_and_exits_0() {
    let (code, stdout, stderr) = run_to_end(&["--help"]).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stdout.contains("Usage: eventhubs-emulator [OPTIONS]"),
        "{stdout}"
    );
    for flag in [
        "--port <PORT>",
        "--hub <NAME:PARTITIONS>",
        "--config <FILE>",
        "--print-config",
        "--max-message-size <BYTES>",
        "--tls",
        "--key-name <NAME>",
        "--key <KEY>",
        "--no-auth",
        "--reject-jwt",
        "--consumer-group <NAME>",
        "--max-events-per-partition <N>",
        "--idle-timeout-ms <MS>",
        "--help",
        "--version",
    ] {
        assert!(stdout.contains(flag), "--help describes {flag}: {stdout}");
    }
    assert_eq!(stderr, "");
}

#[tokio::test]
async fn version_prints_the_crate_version() {
    let (code, stdout, _) = run_to_end(&["--version"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.trim(),
        format!("eventhubs-emulator {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Microsoft's sample configuration: a namespace with two hubs, one with a consumer group.
const MICROSOFT_CONFIG: &str = r#"{
  "UserConfig": {
    "NamespaceConfig": [
      {
        "Type": "EventHub",
        "Name": "emulatorNs1",
        "Entities": [
          { "Name": "eh1", "PartitionCount": "2", "ConsumerGroups": [ { "Name": "cg1" } ] },
          { "Name": "eh2", "PartitionCount": "3", "ConsumerGroups": [] }
        ]
      }
    ],
    "LoggingConfig": { "Type": "File" }
  }
}"#;

fn config_file(name: &str, content: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("eventhubs-emulator-{}-{name}", std::process::id()));
    std::fs::write(&path, content).expect("write the config");
    path
}

#[tokio::test]
async fn print_config_shows_the_hubs_and_groups_of_a_config_file() {
    let path = config_file("print.json", MICROSOFT_CONFIG);
    let path = path.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = run_to_end(&["--config", path, "--print-config"]).await;
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(stdout.contains("address 127.0.0.1:5672"), "{stdout}");
    assert!(
        stdout.contains("hub eh1: 2 partitions; consumer groups $Default, cg1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hub eh2: 3 partitions; consumer groups $Default\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("SAS_KEY_VALUE"), "the key is not shown");
}

#[tokio::test]
async fn a_config_file_that_is_not_microsofts_format_is_refused() {
    let path = config_file(
        "bad.json",
        r#"{"UserConfig": {"NamespaceConfig": [{"Entities": [{"Name": "x", "PartitionCount": "many"}]}]}}"#,
    );
    let path = path.to_str().expect("utf-8 path");
    assert_refused(
        &["--config", path],
        2,
        "the PartitionCount of 'x' is not a number",
    )
    .await;
    assert_refused(
        &["--config", "/no/such/Config.json"],
        2,
        "--config: cannot read",
    )
    .await;
}

#[tokio::test]
async fn a_config_file_serves_microsofts_key_and_its_consumer_groups() {
    let path = config_file("serve.json", MICROSOFT_CONFIG);
    let path = path.to_str().expect("utf-8 path");
    let running = Running::start(&["--port", "0", "--config", path]).await;
    assert_eq!(running.field("SharedAccessKey"), Some("SAS_KEY_VALUE"));
    assert_eq!(running.field("EntityPath"), Some("eh1"));
    let mut client = client_for(&running, &["eh1", "eh2"]).await;
    assert_eq!(
        partition_count(&client.read("com.microsoft:eventhub", "eh2", None).await),
        3
    );
    // cg1 belongs to eh1 only: reads through it from eh2 are refused as the service does.
    let _ = client
        .receiver("eh1/ConsumerGroups/cg1/Partitions/0", None)
        .await;
    let refused = receiver_refused(
        fe2o3_amqp::link::Receiver::attach(
            &mut client.session,
            "cg1-on-eh2",
            "eh2/ConsumerGroups/cg1/Partitions/0",
        )
        .await,
    )
    .await;
    assert_eq!(refused, "amqp:not-found");
}

#[tokio::test]
async fn a_taken_port_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let (code, stdout, stderr) = run_to_end(&["--port", &port]).await;
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.starts_with("eventhubs-emulator: "), "{stderr}");
    drop(taken);
}

async fn next_line(running: &mut Running) -> String {
    timeout(STEP, running.stdout.next_line())
        .await
        .expect("a line in time")
        .expect("stdout is readable")
        .expect("a line")
}

#[tokio::test]
async fn serves_amqp_over_websockets_on_the_port_given() {
    let mut running = Running::start(&["--port", "0", "--websocket-port", "0"]).await;
    let namespace = next_line(&mut running).await;
    assert!(namespace.starts_with("EVENTHUBS_NAMESPACE_CONNECTION_STRING="));
    let websocket = next_line(&mut running).await;
    let websocket = websocket
        .strip_prefix("EVENTHUBS_WEBSOCKET_CONNECTION_STRING=Endpoint=sb://127.0.0.1:")
        .unwrap_or_else(|| panic!("the WebSocket connection string: {websocket}"));
    let port: u16 = websocket
        .split(';')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("a port: {websocket}"));
    assert_ne!(port, running.addr().port(), "a port of its own");
    assert!(websocket.ends_with(";UseDevelopmentEmulator=true;EntityPath=hub"));

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("TCP connects");
    let url = eventhubs_websocket::url(false, "127.0.0.1", Some(port));
    let upgraded = eventhubs_websocket::connect(tcp, &url)
        .await
        .expect("the upgrade succeeds");
    let connection = fe2o3_amqp::Connection::builder()
        .container_id("cli-websocket")
        .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Anonymous)
        .open_with_stream(upgraded)
        .await
        .expect("AMQP opens over the WebSocket");
    let mut client = TestClient::over(connection, &format!("127.0.0.1:{port}")).await;
    client.authorize_with_key(&running.key(), "hub").await;
    let mut sender = client.sender("hub/Partitions/0").await;
    send_events(&mut sender, "cli-ws", 2).await;
    let read = client
        .read("com.microsoft:partition", "hub", Some("0"))
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(
        reply_map(&read).get("last_enqueued_sequence_number"),
        Some(&Value::Long(1))
    );
    client.close().await;
    let exit = running.terminate().await;
    assert_eq!(exit.code, Some(0), "stderr: {}", exit.stderr);
}
