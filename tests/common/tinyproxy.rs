//! A real HTTP proxy for the tests: Debian's `tinyproxy`, started on a free loopback port with
//! a configuration of the test's choosing (optionally basic authentication), and stopped when
//! dropped. `.ci/run` installs it; where it is absent, [`Tinyproxy::start`] says so and the test
//! that asked for it returns early.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Tinyproxy {
    child: Child,
    port: u16,
    _config: tempfile_path::TempPath,
}

mod tempfile_path {
    /// A file removed when dropped.
    pub struct TempPath(pub std::path::PathBuf);

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Tinyproxy {
    /// Starts tinyproxy, with `basic_auth` (user, password) required when given. None, with a
    /// message on stderr, when the binary is not installed.
    pub fn start(basic_auth: Option<(&str, &str)>) -> Option<Self> {
        if Command::new("tinyproxy").arg("-v").output().is_err() {
            eprintln!("SKIPPED: tinyproxy is not installed (apt-get install tinyproxy; .ci/run installs it)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let path =
            std::env::temp_dir().join(format!("tinyproxy-{}-{port}.conf", std::process::id()));
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\nLogLevel Warning\n"
        );
        if let Some((user, password)) = basic_auth {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .expect("write the tinyproxy configuration");
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy starts");
        let proxy = Self {
            child,
            port,
            _config: tempfile_path::TempPath(path),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tinyproxy did not listen on {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(proxy)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
