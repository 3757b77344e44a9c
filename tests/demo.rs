//! `mxgate demo`: it starts with nothing installed, prints what to try, and
//! what it prints works: a message through SMTP reaches a sink, the GINA
//! page comes from a member. Its log shows every routing decision and every
//! proxied web request, and not the members' health checks.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::Duration;

use common::client::send_one;
use common::{Logs, eventually, signal};

/// The demo's fixed addresses (SPEC 3).
const SMTP: &str = "127.0.0.1:2525";
const HTTP: &str = "127.0.0.1:8080";

/// A running `mxgate demo`, interrupted when dropped.
struct Demo {
    child: Child,
    logs: Logs,
    /// What it printed up to its "Ctrl-C" line.
    banner: String,
}

impl Demo {
    fn start() -> Demo {
        let (child, logs, lines) = common::spawn_streaming(&["demo"]);
        let mut printed = Vec::new();
        let within = Duration::from_secs(30);
        if !common::read_until(&lines, &mut printed, "Ctrl-C stops the demo", within) {
            panic!("no banner within 30 s; log:\n{}", log_text(&logs));
        }
        Demo {
            child,
            logs,
            banner: printed.join("\n"),
        }
    }

    /// The configuration file the banner's `status -c` line names.
    fn config(&self) -> String {
        let line = self
            .banner
            .lines()
            .find(|l| l.contains(" status -c "))
            .expect("a status line");
        line.split(" status -c ")
            .nth(1)
            .expect("a file")
            .trim()
            .to_owned()
    }

    fn lines(&self, needle: &str) -> Vec<String> {
        let lines = self.logs.0.lock().expect("log lock");
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_text(logs: &Logs) -> String {
    logs.0.lock().expect("log lock").join("\n")
}

/// `GET path` on the GINA listener; the response body.
fn get(path: &str) -> String {
    let mut stream = TcpStream::connect(HTTP).expect("connect to GINA");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

/// Both members' GINA portals have been checked and are up.
fn gina_checked(config: &str) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_mxgate"))
        .args(["status", "--json", "-c", config])
        .output()
        .expect("run mxgate status");
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    let members = status["members"].as_array().cloned().unwrap_or_default();
    members.len() == 2
        && members.iter().all(|m| {
            m["gina_health"]["healthy"] == true && !m["gina_health"]["last_check"].is_null()
        })
}

#[test]
fn the_demo_does_what_it_prints_and_logs_decisions_not_health_checks() {
    let mut demo = Demo::start();
    for shown in [
        "swaks --server 127.0.0.1:2525",
        "curl -si http://127.0.0.1:8080/portal",
    ] {
        assert!(
            demo.banner.contains(shown),
            "{shown} missing:\n{}",
            demo.banner
        );
    }
    let config = demo.config();
    assert!(
        eventually(Duration::from_secs(30), || gina_checked(&config)),
        "the GINA health checks did not run; log:\n{}",
        log_text(&demo.logs)
    );

    let reply = send_one(
        common::ip("127.0.0.1"),
        SMTP.parse().expect("addr"),
        "hello",
    );
    assert!(reply.ok(), "{reply:?}");
    let page = get("/portal");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("GINA portal of member sink"), "{page}");

    let logged = |needle: &str, count: usize| {
        eventually(Duration::from_secs(10), || {
            demo.lines(needle).len() >= count
        })
    };
    assert!(
        logged("sink accepted a message", 1),
        "{}",
        log_text(&demo.logs)
    );
    let route = demo.lines("mxgate::route");
    assert_eq!(
        route.len(),
        1,
        "one routing decision, logged:\n{}",
        log_text(&demo.logs)
    );
    assert!(
        route[0].contains("member=sink") && route[0].contains("order="),
        "{route:?}"
    );
    assert!(logged("http request", 1), "{}", log_text(&demo.logs));
    let answered = demo.lines("web member answered");
    assert_eq!(
        answered.len(),
        1,
        "only the proxied request is logged, no health check:\n{}",
        log_text(&demo.logs)
    );

    signal(demo.child.id(), "INT");
    let exited = eventually(Duration::from_secs(15), || {
        matches!(demo.child.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "the demo did not stop on Ctrl-C");
    let status = demo.child.wait().expect("exit status");
    assert!(status.success(), "{status}");
    assert!(
        !std::path::Path::new(&config).exists(),
        "the demo left {config} behind"
    );
}
