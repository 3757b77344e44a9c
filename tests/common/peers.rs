//! Real third-party peers: Postfix `smtp-sink` and a throwaway Postfix instance
//! (`../shared/peers/postfix-instance.sh`).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Waits until `addr` greets with 220 (optionally after a PROXY header).
pub fn wait_smtp(addr: SocketAddr, proxy: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if proxy {
                let _ = s.write_all(
                    format!("PROXY TCP4 127.0.0.1 127.0.0.1 1 {}\r\n", addr.port()).as_bytes(),
                );
            }
            let mut line = String::new();
            if BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("220") {
                let _ = s.write_all(b"QUIT\r\n");
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `smtp-sink` dumping every message into its own file.
pub struct SmtpSink {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl SmtpSink {
    /// Starts `smtp-sink -d DIR/%M. IP:PORT 256` (as `nobody` when root).
    pub fn start(ip: &str) -> SmtpSink {
        let port = super::free_port(ip);
        Self::start_at(format!("{ip}:{port}").parse().expect("addr"))
    }

    /// Starts a sink on exactly `addr` (e.g. to bring a killed member back on its port).
    pub fn start_at(addr: SocketAddr) -> SmtpSink {
        let dir = super::shared_tempdir();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let mut cmd = Command::new("smtp-sink");
        if super::is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let template = format!("{}/%M.", dir.path().display());
        let child = cmd
            .args(["-d", &template, &addr.to_string(), "256"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn smtp-sink");
        assert!(wait_smtp(addr, false), "smtp-sink on {addr} did not greet");
        SmtpSink { addr, dir, child }
    }

    /// Message files written so far.
    pub fn files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// Number of messages dumped.
    pub fn count(&self) -> usize {
        self.files().len()
    }

    /// Waits (bounded) until at least `n` messages are dumped; returns the count then.
    pub fn wait_count(&self, n: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let count = self.count();
            if count >= n || Instant::now() >= deadline {
                return count;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The contents of every dumped message.
    pub fn messages(&self) -> Vec<String> {
        self.files()
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    /// Stops the sink at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Path of the shared peer script.
pub fn postfix_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/postfix-instance.sh")
}

/// A throwaway Postfix MTA relaying everything to `relay` (see `postfix-instance.sh`).
pub struct PostfixInstance {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl PostfixInstance {
    /// Starts one on 127.0.0.1 (with `proxy`: expecting a PROXY header).
    pub fn start(relay: SocketAddr, proxy: bool) -> PostfixInstance {
        Self::start_with_files(relay, proxy, &[])
    }

    /// Like [`PostfixInstance::start`], with `files` (name, contents) placed in
    /// its directory first, e.g. `tls.crt` and `tls.key`, which the script keeps.
    pub fn start_with_files(
        relay: SocketAddr,
        proxy: bool,
        files: &[(&str, &[u8])],
    ) -> PostfixInstance {
        let dir = super::shared_tempdir();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("write postfix file");
        }
        let port = super::free_port("127.0.0.1");
        let mut cmd = Command::new("bash");
        cmd.arg(postfix_script())
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .arg(relay.port().to_string());
        if proxy {
            cmd.arg("proxy");
        }
        let out = cmd.output().expect("run postfix-instance.sh");
        assert!(
            out.status.success(),
            "postfix-instance.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        PostfixInstance {
            addr: format!("127.0.0.1:{port}").parse().expect("addr"),
            dir,
        }
    }

    /// The Postfix log.
    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for PostfixInstance {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(postfix_script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// One message to `server` with `swaks` (sender@source.test to
/// rcpt@example.com, plus `extra` arguments), bounded to 60 s: its
/// transcript and whether swaks succeeded.
pub fn swaks(server: SocketAddr, extra: &[&str]) -> (String, bool) {
    let (out, killed) = super::run_bounded(
        Command::new("swaks")
            .args([
                "--server",
                &server.to_string(),
                "--from",
                "sender@source.test",
                "--to",
                "rcpt@example.com",
                "--timeout",
                "20",
            ])
            .args(extra),
        Duration::from_secs(60),
    );
    assert!(!killed, "swaks did not finish within 60 s");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.success())
}
