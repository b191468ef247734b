//! Microsoft's own Python client (`azure-eventhub` from PyPI) against the emulator: management
//! reads, 1,000 events sent every way the client can, everything read back and checked by the
//! script; here we also check that every keyed event is stored where the service's hash says.
//!
//! The test makes a virtual environment under `target/interop-venv` on first use and installs
//! the pinned client from `tests/interop/requirements.txt`. Without `python3` it fails and says
//! so: it is never skipped silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use eventhubs_emulator::{partition_index_for_key, Emulator};

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("interop")
}

fn venv_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("interop-venv")
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The pinned requirements, as (name, version): `azure-eventhub==5.15.1` and what its
/// WebSocket transport needs.
fn pinned_requirements() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(interop_dir().join("requirements.txt")).expect("requirements.txt");
    let pins: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once("=="))
        .map(|(name, version)| (name.trim().to_string(), version.trim().to_string()))
        .collect();
    assert!(
        pins.iter().any(|(name, _)| name == "azure-eventhub"),
        "requirements.txt pins azure-eventhub"
    );
    pins
}

/// A Python with the pinned azure-eventhub, made once per test binary: the tests run in
/// parallel, and two `python -m venv` on one fresh directory trip over each other.
fn interop_python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(prepare_interop_python).clone()
}

/// Makes (or completes) the venv and installs the pinned client when it is missing.
fn prepare_interop_python() -> PathBuf {
    let python3 = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    if Command::new(&python3).arg("--version").output().is_err() {
        panic!(
            "the interop test needs Python 3 ('{python3}' was not found): install python3 with its venv \
             module, or set PYTHON to an interpreter"
        );
    }
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    if !python.exists() {
        // `--clear`: a venv left half-made by an interrupted run is made again.
        run(
            Command::new(&python3)
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
            "creating the venv",
        );
    }
    let pins = pinned_requirements();
    let names: Vec<&str> = pins.iter().map(|(name, _)| name.as_str()).collect();
    let probe = format!(
        "import importlib.metadata as m\nfor n in {names:?}:\n    try: print(n + '==' + m.version(n))\n    except Exception: print(n)"
    );
    let installed = Command::new(&python)
        .args(["-c", &probe])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let wanted: String = pins
        .iter()
        .map(|(name, version)| format!("{name}=={version}\n"))
        .collect();
    if installed != wanted {
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(interop_dir().join("requirements.txt")),
            "installing the pinned requirements",
        );
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_python_client_publishes_and_reads_back() {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .start()
        .await
        .expect("emulator starts");
    run_interop_script(&emulator, &[]).await;
    emulator.shutdown().await;
}

/// `TransportType.AmqpOverWebsocket` to the emulator's WebSocket port, `ws://` as with the
/// service's development emulator (`UseDevelopmentEmulator=true`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_python_client_works_over_websockets() {
    run_over_websockets(false).await;
}

/// The same over `wss://`, the client trusting the emulator's certificate authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_python_client_works_over_secure_websockets() {
    run_over_websockets(true).await;
}

async fn run_over_websockets(tls: bool) {
    let emulator = Emulator::builder()
        .hub("hub", 4)
        .tls(tls)
        .websocket(true)
        .start()
        .await
        .expect("emulator starts");
    let endpoint = emulator.websocket_endpoint().expect("a WebSocket port");
    let mut env = vec![
        ("INTEROP_TRANSPORT", "websocket".to_string()),
        ("INTEROP_CUSTOM_ENDPOINT", endpoint),
    ];
    let ca_file = venv_dir().join(format!("interop-ca-{}.pem", std::process::id()));
    if let Some(ca) = emulator.ca_certificate_pem() {
        std::fs::write(&ca_file, ca).expect("CA written");
        env.push(("INTEROP_CA_FILE", ca_file.to_string_lossy().into_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_interop_script(&emulator, &env).await;
    let _ = std::fs::remove_file(&ca_file);
    assert_every_open_was_websocket(&emulator);
    emulator.shutdown().await;
}

/// The WebSocket tests must not pass over plain AMQP: the emulator counts the connections of
/// each port.
fn assert_every_open_was_websocket(emulator: &Emulator) {
    let opens = emulator.client_opens();
    assert!(!opens.is_empty(), "no client opened a connection");
    assert!(
        opens.iter().all(|open| open.websocket),
        "a connection came over plain AMQP: {opens:?}"
    );
}

/// Runs the interop script against `emulator` with `env` added, and checks where the 1,000
/// events were stored and that Microsoft's client announced itself.
async fn run_interop_script(emulator: &Emulator, env: &[(&str, &str)]) {
    let python = tokio::task::spawn_blocking(interop_python)
        .await
        .expect("venv setup");
    let result_file = venv_dir().join(format!(
        "interop-result-{}-{}.json",
        std::process::id(),
        emulator.local_addr().port()
    ));

    let script = interop_dir().join("azure_eventhub_interop.py");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .env("EVENTHUBS_CONNECTION_STRING", emulator.connection_string())
        .env("INTEROP_RESULT_FILE", &result_file)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), child)
        .await
        .expect("the interop script finishes within 4 minutes")
        .expect("the interop script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the Python client's checks failed:\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(result_file.exists(), "the script wrote no summary");
    let _ = std::fs::remove_file(&result_file);

    // The script saw the events come back; here, where they are stored.
    let ids = emulator.partition_ids("hub").expect("partitions");
    let mut total = 0;
    let mut keyed = 0;
    for id in &ids {
        for event in emulator.events("hub", id).expect("events") {
            total += 1;
            if let Some(key) = event.partition_key().expect("decodes") {
                keyed += 1;
                let expected = partition_index_for_key(&key, ids.len()).to_string();
                assert_eq!(
                    &expected, id,
                    "event with key '{key}' stored in partition {id}"
                );
            }
        }
    }
    assert_eq!(total, 1000, "events stored");
    assert_eq!(keyed, 300, "keyed events stored");
    // What Microsoft's client says about itself in its `open`, as the emulator read it.
    let opens = emulator.client_opens();
    assert!(
        opens.iter().any(|open| open
            .properties
            .get("user-agent")
            .is_some_and(|agent| agent.starts_with("azsdk-python-eventhub"))),
        "no open announced Microsoft's Python client: {opens:?}"
    );
}

/// The drop-in recipe: the emulator binary started from a Config.json in Microsoft's format,
/// on Microsoft's emulator's port, and Microsoft's Python client using the connection string
/// Microsoft's emulator documents, sending to and reading from every configured hub and
/// consumer group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_client_uses_the_emulator_as_a_drop_in_for_microsofts() {
    let python = tokio::task::spawn_blocking(interop_python)
        .await
        .expect("venv setup");
    let config = venv_dir().join(format!("drop-in-config-{}.json", std::process::id()));
    std::fs::write(
        &config,
        r#"{
  "UserConfig": {
    "NamespaceConfig": [
      {
        "Type": "EventHub",
        "Name": "emulatorNs1",
        "Entities": [
          { "Name": "eh1", "PartitionCount": "2",
            "ConsumerGroups": [ { "Name": "cg1" }, { "Name": "cg2" } ] },
          { "Name": "eh2", "PartitionCount": "1", "ConsumerGroups": [] }
        ]
      }
    ],
    "LoggingConfig": { "Type": "File" }
  }
}"#,
    )
    .expect("write Config.json");
    // Microsoft's emulator's port: its connection string names no port.
    let mut emulator = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventhubs-emulator"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the emulator binary starts");
    let stdout = emulator.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the emulator prints its connection string in time")
        .expect("stdout is readable");
    assert!(
        first.is_some(),
        "the emulator did not start on port 5672 (is the port taken?)"
    );
    let connection_string = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
    let script = interop_dir().join("drop_in.py");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .env("EVENTHUBS_CONNECTION_STRING", connection_string)
        .env("DROP_IN_HUBS", "eh1=cg1,cg2;eh2=")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), child)
        .await
        .expect("the drop-in script finishes within 4 minutes")
        .expect("the drop-in script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    let _ = std::fs::remove_file(&config);
    assert!(
        output.status.success(),
        "Microsoft's client failed against the drop-in:\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in ["eh1 / $Default", "eh1 / cg1", "eh1 / cg2", "eh2 / $Default"] {
        assert!(
            stdout.contains(&format!("{line}: 20 of 20 read back")),
            "{line}: {stdout}"
        );
    }
}
