//! A real dnsmasq serving test zones on a 127.x address and a free port,
//! started and killed by the test (nothing from the system: no resolv.conf,
//! no hosts file, no configuration file).

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq.
pub struct Dnsmasq {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    child: Child,
}

impl Dnsmasq {
    /// Starts dnsmasq on `ip` and a free port with `records`
    /// (`--mx-host=...`, `--host-record=...`, `--ptr-record=...`, `--local=/zone/`...).
    pub fn start(ip: &str, records: &[String]) -> Dnsmasq {
        let port = super::free_port(ip);
        let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--pid-file=",
            "--log-facility=-",
            &format!("--listen-address={ip}"),
            &format!("--port={port}"),
        ]);
        if super::is_root() {
            cmd.args(["--user=root"]);
        }
        cmd.args(records);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("MXGATE_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn dnsmasq");
        let mut me = Dnsmasq { addr, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return me;
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("dnsmasq exited at start ({status}); args: {records:?}");
            }
            assert!(Instant::now() < deadline, "dnsmasq on {addr} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
