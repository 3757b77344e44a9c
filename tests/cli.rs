//! The command line: check-config, status, route explain, and SIGHUP reload.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{
    Behavior, Client, FakeMta, Mxgate, member, policy, receivers, shared_tempdir, tagged_body,
};

fn mxgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mxgate"))
        .args(args)
        .output()
        .expect("run mxgate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_accepts_the_repository_examples() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mxgate.toml");
    let out = mxgate(&["check-config", "-c", config.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "check-config failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    let effective = text(&out.stdout);
    assert!(
        effective.contains("[members.gw1]") && effective.contains("[members.gw2]"),
        "{effective}"
    );
}

const BROKEN_NODE: &str = r#"[node]
name = "t"
data_dir = "data"
policy = "cluster.toml"
colour = "blue"

[[smtp]]
name = "inbound"
listen = "127.0.0.1:0"
"#;

const BROKEN_POLICY: &str = r#"[routing]
affinity = "source"
stickyness = 3

[members.gw1]
smtp = "127.0.0.1:10025"
addresses = ["127.0.5.0/24"]
inject_to = ["gw2", "gw9"]

[members.gw2]
smtp = "127.0.0.1:10026"
addresses = ["127.0.5.7"]
inject_to = ["gw1"]
lft_sync_to = ["gw3"]

[members.gw3]
smtp = "127.0.0.1:10027"
"#;

#[test]
fn check_config_lists_every_error_with_file_line_and_key() {
    let dir = shared_tempdir();
    let node = dir.path().join("mxgate.toml");
    let cluster = dir.path().join("cluster.toml");
    std::fs::write(&node, BROKEN_NODE).expect("write");
    std::fs::write(&cluster, BROKEN_POLICY).expect("write");
    let out = mxgate(&["check-config", "-c", node.to_str().expect("path")]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "exit code; stderr: {}",
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    let (n, c) = (node.display(), cluster.display());
    let expected = [
        (format!("{n}:5: node.colour:"), "unknown key"),
        (format!("{c}:3: routing.stickyness:"), "unknown key"),
        (format!("{c}:8: members.gw1.inject_to:"), "gw9"),
        (format!("{c}:12: members.gw2.addresses:"), "overlaps"),
        (format!("{c}:14: members.gw2.lft_sync_to:"), "gw3"),
    ];
    for (prefix, what) in &expected {
        let line = stderr.lines().find(|l| l.starts_with(prefix.as_str()));
        let line =
            line.unwrap_or_else(|| panic!("no error line starting {prefix:?} in:\n{stderr}"));
        assert!(line.contains(what), "{line:?} should mention {what:?}");
    }
    let errors = stderr
        .lines()
        .filter(|l| l.starts_with(&*n.to_string()) || l.starts_with(&*c.to_string()))
        .count();
    assert_eq!(
        errors,
        expected.len(),
        "exactly the expected errors:\n{stderr}"
    );
}

fn two_fake_gateway() -> (Mxgate, FakeMta, FakeMta) {
    let a = FakeMta::start("gw1", Behavior::Normal);
    let b = FakeMta::start("gw2", Behavior::Normal);
    let gw = Mxgate::start(&policy(
        "",
        &[member("gw1", a.addr, ""), member("gw2", b.addr, "")],
    ));
    (gw, a, b)
}

#[test]
fn status_reports_listeners_and_members_and_the_socket_is_private() {
    let (gw, a, _b) = two_fake_gateway();
    let sock = gw.data_dir().join("admin.sock");
    let mode = std::fs::metadata(&sock)
        .expect("admin.sock")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "admin socket mode {mode:o}");

    let status = gw.status();
    let listener = &status["listeners"][0];
    assert_eq!(listener["name"], "inbound", "{status}");
    assert_eq!(listener["listen"], gw.smtp_addr().to_string(), "{status}");
    assert_ne!(gw.smtp_addr().port(), 0);
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 2, "{status}");
    for (m, fake) in members.iter().zip(["gw1", "gw2"]) {
        assert_eq!(m["name"], fake, "{status}");
        assert_eq!(m["healthy"], true, "{status}");
    }

    let out = gw.cli(&["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let header = table
        .lines()
        .find(|l| l.starts_with("MEMBER"))
        .unwrap_or_else(|| panic!("no member header:\n{table}"));
    assert!(
        header.contains("HEALTH") && header.contains("WEIGHT"),
        "{header}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("LISTENER") && l.contains("ADDRESS")),
        "{table}"
    );
    assert!(
        table.contains(&gw.smtp_addr().to_string()),
        "bound address missing:\n{table}"
    );
    let row = |name: &str, table: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(str::to_owned)
    };
    assert!(
        row("gw1", &table).expect("gw1 row").contains(" up "),
        "{table}"
    );

    // A member that fails shows as down, with the reason, in both forms:
    // a client whose first choice is gw1 sends while gw1 is dead.
    let client = (1..=50u8)
        .map(|h| std::net::IpAddr::from([127, 0, 9, h]))
        .find(|&c| gw.first_choice(c).as_deref() == Some("gw1"))
        .expect("some client prefers gw1");
    a.kill();
    let mut c = Client::greeted_from(client, gw.smtp_addr());
    assert!(c.cmd("EHLO x").ok());
    let r = c.send_mail("s@source.test", &["r@example.com"], "Subject: x\r\n\r\nx");
    assert!(r.ok(), "failover to gw2: {r}");
    let status = gw.status();
    let m = &status["members"][0];
    assert_eq!(m["healthy"], false, "{status}");
    assert!(
        m["reason"].as_str().is_some_and(|r| r.contains("connect")),
        "{status}"
    );
    assert_eq!(status["members"][1]["healthy"], true, "{status}");
    let table = text(&gw.cli(&["status"]).stdout);
    assert!(
        row("gw1", &table).expect("gw1 row").contains("DOWN"),
        "{table}"
    );
}

#[test]
fn route_explain_json_and_text() {
    let (gw, _a, _b) = two_fake_gateway();
    let client = "127.0.9.2";
    let e = gw.explain(client.parse().expect("ip"));
    assert_eq!(e["source_member"], serde_json::Value::Null, "{e}");
    let order = e["order"].as_array().expect("order");
    assert_eq!(order.len(), 2, "{e}");
    for r in order {
        assert!(
            r["member"].is_string() && r["score"].is_f64() && r["healthy"].is_boolean(),
            "{e}"
        );
    }
    assert!(
        order[0]["score"].as_f64() >= order[1]["score"].as_f64(),
        "{e}"
    );
    assert!(
        e["excluded"].as_array().expect("excluded").is_empty(),
        "{e}"
    );
    let first = order[0]["member"].as_str().expect("first");

    let out = gw.cli(&["route", "explain", "--client", client]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rendered = text(&out.stdout);
    assert!(
        rendered.contains(&format!("first choice {first}")),
        "text should name {first}:\n{rendered}"
    );
    assert!(rendered.contains("source:   public"), "{rendered}");

    // Excluded members carry a reason.
    let fake = FakeMta::start("gw3", Behavior::Normal);
    let gw2 = Mxgate::start(&policy(
        "",
        &[
            member("gw1", fake.addr, ""),
            member("gw2", fake.addr, "ingress = false"),
        ],
    ));
    let e = gw2.explain(client.parse().expect("ip"));
    let excluded = e["excluded"].as_array().expect("excluded");
    assert_eq!(excluded.len(), 1, "{e}");
    assert_eq!(excluded[0]["member"], "gw2", "{e}");
    assert_eq!(excluded[0]["reason"], "not ingress", "{e}");
}

#[test]
fn status_without_a_running_daemon_says_what_to_do() {
    let dir = shared_tempdir();
    let node = dir.path().join("mxgate.toml");
    std::fs::write(
        &node,
        "[node]\nname = \"idle\"\ndata_dir = \"data\"\npolicy = \"cluster.toml\"\n\n[[smtp]]\nname = \"inbound\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("cluster.toml"), "").expect("write");
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["route", "explain", "--client", "127.0.0.1"],
    ] {
        let mut full = args.clone();
        full.extend(["-c", node.to_str().expect("path")]);
        let out = mxgate(&full);
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} against no daemon succeeded"
        );
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed to stdout: {}",
            text(&out.stdout)
        );
        assert!(
            stderr.contains("mxgate serve") && stderr.contains("-c"),
            "{args:?} should say what to do: {stderr}"
        );
    }

    let out = mxgate(&["status", "-c", "/nonexistent/mxgate.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("cannot read /nonexistent/mxgate.toml") && stderr.contains("-c"),
        "should say what to do: {stderr}"
    );

    // A file that was read but is invalid is reported as invalid, with its
    // errors, not as unreadable.
    let invalid = dir.path().join("invalid.toml");
    std::fs::write(&invalid, BROKEN_NODE).expect("write");
    let out = mxgate(&["status", "-c", invalid.to_str().expect("path")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("node.colour")
            && stderr.contains(&format!("{} is invalid", invalid.display()))
            && !stderr.contains("cannot read"),
        "{stderr}"
    );
}

/// `check-config` names both files the way the first was given: relative
/// stays relative (no `./` of its own), absolute stays absolute.
#[test]
fn check_config_prints_paths_as_given() {
    let dir = shared_tempdir();
    std::fs::write(
        dir.path().join("mxgate.toml"),
        "[node]\nname = \"paths\"\ndata_dir = \"data\"\npolicy = \"cluster.toml\"\n\n[[smtp]]\nname = \"inbound\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("cluster.toml"), "").expect("write");
    let relative = Command::new(env!("CARGO_BIN_EXE_mxgate"))
        .args(["check-config", "-c", "mxgate.toml"])
        .current_dir(dir.path())
        .output()
        .expect("run mxgate");
    let stderr = text(&relative.stderr);
    assert!(
        stderr.contains("mxgate: mxgate.toml and cluster.toml are valid"),
        "{stderr}"
    );
    let absolute = dir.path().join("mxgate.toml");
    let out = mxgate(&["check-config", "-c", absolute.to_str().expect("path")]);
    let stderr = text(&out.stderr);
    let policy = dir.path().join("cluster.toml");
    assert!(
        stderr.contains(&format!(
            "{} and {} are valid",
            absolute.display(),
            policy.display()
        )),
        "{stderr}"
    );
}

/// One message tagged `tag` from 127.0.9.9.
fn send(gw: &Mxgate, tag: &str) {
    common::send_tagged("127.0.9.9".parse().expect("ip"), gw.smtp_addr(), tag);
}

fn member_names(gw: &Mxgate) -> Vec<String> {
    gw.status()["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn sighup_reload_applies_a_new_policy_and_refuses_a_broken_one() {
    let (a, b, c) = (
        FakeMta::start("gw1", Behavior::Normal),
        FakeMta::start("gw2", Behavior::Normal),
        FakeMta::start("gw3", Behavior::Normal),
    );
    let all = [&a, &b, &c];
    let gw = Mxgate::start(&policy(
        "",
        &[
            member("gw1", a.addr, ""),
            member("gw2", b.addr, "ingress = false"),
        ],
    ));
    assert_eq!(member_names(&gw), vec!["gw1", "gw2"]);
    send(&gw, "before");
    assert_eq!(receivers(all.iter().copied(), "before"), vec!["gw1"]);

    // A session in flight across the reload keeps going.
    let mut inflight = Client::greeted_from("127.0.9.10".parse().expect("ip"), gw.smtp_addr());
    assert!(inflight.cmd("EHLO x").ok());
    assert!(inflight.cmd("MAIL FROM:<s@source.test>").ok());

    // New policy: only gw3 takes public sessions.
    let new_policy = policy(
        "",
        &[
            member("gw1", a.addr, "ingress = false"),
            member("gw2", b.addr, "ingress = false"),
            member("gw3", c.addr, ""),
        ],
    );
    gw.reload_policy(&new_policy);
    assert!(
        gw.wait_log("configuration reloaded", Duration::from_secs(5))
            .is_some(),
        "{:?}",
        gw.logs()
    );
    assert_eq!(member_names(&gw), vec!["gw1", "gw2", "gw3"]);
    send(&gw, "after");
    assert_eq!(receivers(all.iter().copied(), "after"), vec!["gw3"]);
    assert_eq!(
        gw.first_choice("127.0.9.9".parse().expect("ip")).as_deref(),
        Some("gw3")
    );

    assert!(inflight.cmd("RCPT TO:<r@example.com>").ok());
    assert_eq!(inflight.cmd("DATA").code, 354);
    inflight.send(tagged_body("inflight").as_bytes());
    inflight.send(b"\r\n.\r\n");
    let r = inflight.reply();
    assert!(r.ok(), "in-flight session after reload: {r}");
    assert_eq!(
        receivers(all.iter().copied(), "inflight"),
        vec!["gw1"],
        "the in-flight session keeps its member"
    );

    // A broken file is refused; the running configuration stays.
    let broken = format!(
        "{new_policy}\n[members.gw4]\nsmtp = \"127.0.0.1:1\"\nbogus = 1\ninject_to = [\"nobody\"]\n"
    );
    gw.reload_policy(&broken);
    let refused = gw
        .wait_log("reload refused", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no refusal logged: {:?}", gw.logs()));
    eprintln!("{refused}");
    // The refusal is one multi-line log record: its error lines may reach the
    // log reader a moment after its first line.
    for key in ["members.gw4.bogus", "members.gw4.inject_to"] {
        assert!(
            gw.wait_log(key, Duration::from_secs(5)).is_some(),
            "the refusal should list {key}:\n{}",
            gw.logs().join("\n")
        );
    }
    assert_eq!(member_names(&gw), vec!["gw1", "gw2", "gw3"]);
    send(&gw, "after broken");
    assert_eq!(receivers(all.iter().copied(), "after broken"), vec!["gw3"]);

    // mxgate.toml is reloaded too: an unparsable node file is refused the same way.
    let node = std::fs::read_to_string(gw.config_path()).expect("read");
    std::fs::write(gw.config_path(), format!("{node}\n[[smtp]\n")).expect("write");
    let before = gw
        .logs()
        .iter()
        .filter(|l| l.contains("reload refused"))
        .count();
    common::signal(gw.pid(), "HUP");
    assert!(
        gw.wait_logs("reload refused", before + 1, Duration::from_secs(10))
            .is_some(),
        "{:?}",
        gw.logs()
    );
    send(&gw, "after broken node");
    assert_eq!(
        receivers(all.iter().copied(), "after broken node"),
        vec!["gw3"]
    );
}
