//! The Debian package (issue 19): the generated files under `packaging/`
//! are fresh; the `.deb` that `cargo deb` made holds what it should
//! (contents, control fields, conffiles, maintainer scripts, unit keys); and
//! once installed with `dpkg -i` its configuration checks, its units verify,
//! and the packaged binary serves port 25 on 127.77.0.1 as the user mxgate
//! with CAP_NET_BIND_SERVICE only, delivering to an smtp-sink.
//!
//! The package is `target/debian/mxgate_*.deb` (the newest), or the file
//! `MXGATE_DEB` names; `.ci/run` builds it once before the tests. Without
//! it, or without root for the install, a test prints why and skips; under
//! `CI=true` it fails.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::peers::SmtpSink;
use common::{eventually, require, require_root, run_bounded};

/// The address the packaged daemon listens on: a privileged port.
const LISTEN: &str = "127.77.0.1:25";

/// Regenerates the man pages and completions; rewrites and fails on stale ones.
#[test]
fn generated_files_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference =
        std::fs::read_to_string(root.join("docs/configuration.md")).expect("docs/configuration.md");
    let files = mxgate::cli::manual::generate(&reference).expect("generate manual pages");
    let mut stale = Vec::new();
    for file in &files {
        let path = root.join(file.path);
        if std::fs::read(&path).ok().as_deref() != Some(file.content.as_slice()) {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).expect("mkdir packaging");
            }
            std::fs::write(&path, &file.content).expect("write generated file");
            stale.push(file.path);
        }
    }
    assert!(
        stale.is_empty(),
        "regenerated {}; commit them",
        stale.join(", ")
    );
    let paths: Vec<&str> = files.iter().map(|f| f.path).collect();
    for expected in [
        "packaging/man/mxgate.8",
        "packaging/man/mxgate.toml.5",
        "packaging/man/mxgate-cluster.toml.5",
        "packaging/completions/mxgate.bash",
        "packaging/completions/_mxgate",
    ] {
        assert!(paths.contains(&expected), "{expected} is not generated");
    }
}

/// mxgate(8) names every subcommand, nested ones included, with its options.
#[test]
fn the_manual_page_covers_every_subcommand() {
    use clap::CommandFactory;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference =
        std::fs::read_to_string(root.join("docs/configuration.md")).expect("docs/configuration.md");
    let files = mxgate::cli::manual::generate(&reference).expect("generate manual pages");
    let page_of = |name: &str| {
        files
            .iter()
            .find(|f| f.path.ends_with(name))
            .map(|f| String::from_utf8_lossy(&f.content).into_owned())
            .unwrap_or_else(|| panic!("{name} is not generated"))
    };
    let page = page_of("/mxgate.8");
    fn walk(cmd: &clap::Command, path: &str, page: &str) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let path = format!("{path} {}", sub.get_name());
            if !sub.has_subcommands() {
                assert!(page.contains(&format!(".SS \"{path}\"")), "{path} missing");
            }
            for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
                if let Some(long) = arg.get_long().filter(|l| *l != "help") {
                    assert!(
                        page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                        "{path} --{long} missing"
                    );
                }
            }
            walk(sub, &path, page);
        }
    }
    walk(&mxgate::cli::Cli::command(), "mxgate", &page);
    for (page, key) in [
        ("/mxgate.toml.5", "[node] drain_timeout"),
        ("/mxgate-cluster.toml.5", "[members.NAME] inject_to"),
    ] {
        let text = page_of(page);
        assert!(text.contains(".SH DESCRIPTION"), "{page}");
        assert!(
            text.contains(&format!(".TP\n\\fB{key}\\fR")),
            "{page} lacks {key}"
        );
    }
}

/// What the `.deb` holds, before anything is installed.
#[test]
fn the_package_holds_the_binary_conffiles_units_and_manual_pages() {
    let Some(deb) = package() else { return };
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    for path in [
        "./usr/bin/mxgate",
        "./etc/mxgate/mxgate.toml",
        "./etc/mxgate/cluster.toml",
        "./usr/lib/systemd/system/mxgate.service",
        "./usr/lib/systemd/system/mxgate.socket",
        "./usr/share/man/man8/mxgate.8.gz",
        "./usr/share/man/man5/mxgate.toml.5.gz",
        "./usr/share/man/man5/mxgate-cluster.toml.5.gz",
        "./usr/share/bash-completion/completions/mxgate",
        "./usr/share/zsh/vendor-completions/_mxgate",
        "./usr/share/doc/mxgate/operations.md",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} is not in the package:\n{listing}"
        );
    }

    let field = |name: &str| text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)));
    assert_eq!(field("Package").trim(), "mxgate");
    assert!(field("Depends").contains("adduser"), "{}", field("Depends"));
    // Side by side with Postfix: no mail-transport-agent in any relation.
    for relation in ["Provides", "Conflicts", "Replaces", "Breaks"] {
        let value = field(relation);
        assert!(
            !value.contains("mail-transport-agent"),
            "{relation}: {value}"
        );
    }

    let control = tempfile::tempdir().expect("tempdir");
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    let conffiles = read(&control.path().join("conffiles"));
    for conffile in ["/etc/mxgate/mxgate.toml", "/etc/mxgate/cluster.toml"] {
        assert!(
            conffiles.lines().any(|l| l == conffile),
            "{conffile} is not a conffile: {conffiles}"
        );
    }
    let postinst = read(&control.path().join("postinst"));
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(
        postinst.contains("chmod 0750 /var/lib/mxgate"),
        "{postinst}"
    );
    // Installed, not enabled nor started: the operator sets the members
    // first. A unit is enabled again only when the operator had enabled it
    // (debhelper's "debian-installed" guard); nothing is started or restarted.
    for unit in ["mxgate.service", "mxgate.socket"] {
        let guard = format!("if deb-systemd-helper debian-installed {unit}; then");
        assert!(postinst.contains(&guard), "{postinst}");
    }
    assert_eq!(
        postinst.matches("deb-systemd-helper enable").count(),
        postinst
            .matches("deb-systemd-helper debian-installed")
            .count(),
        "{postinst}"
    );
    assert!(!postinst.contains("deb-systemd-invoke"), "{postinst}");

    let data = tempfile::tempdir().expect("tempdir");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(data.path()));
    let unit = read(&data.path().join("usr/lib/systemd/system/mxgate.service"));
    for key in [
        "Type=notify",
        "NotifyAccess=all",
        "User=mxgate",
        "Group=mxgate",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=mxgate",
        "ConfigurationDirectory=mxgate",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "LimitNOFILE=65536",
        "ExecStart=/usr/bin/mxgate serve -c /etc/mxgate/mxgate.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "TimeoutStopSec=60s",
    ] {
        assert!(unit.lines().any(|l| l == key), "mxgate.service lacks {key}");
    }
    let socket = read(&data.path().join("usr/lib/systemd/system/mxgate.socket"));
    for key in ["ListenStream=0.0.0.0:25", "Service=mxgate.service"] {
        assert!(
            socket.lines().any(|l| l == key),
            "mxgate.socket lacks {key}"
        );
    }
}

/// Installed: the user, the state directory, the packaged configuration
/// and the units.
#[test]
fn the_installed_package_checks_its_configuration_and_verifies_its_units() {
    if !installed() {
        return;
    }
    let check = run_bounded(
        Command::new("/usr/bin/mxgate").args(["check-config", "-c", "/etc/mxgate/mxgate.toml"]),
        Duration::from_secs(30),
    )
    .0;
    assert!(check.status.success(), "check-config: {}", describe(&check));

    let passwd = text(&run(Command::new("getent").args(["passwd", "mxgate"])));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.get(5), Some(&"/var/lib/mxgate"), "{passwd}");
    assert!(text(&run(Command::new("getent").args(["group", "mxgate"]))).starts_with("mxgate:"));
    let state = std::fs::metadata("/var/lib/mxgate").expect("/var/lib/mxgate");
    assert_eq!(state.mode() & 0o7777, 0o750, "/var/lib/mxgate mode");
    assert_eq!(state.uid(), id("-u"), "/var/lib/mxgate owner");
    assert_eq!(state.gid(), id("-g"), "/var/lib/mxgate group");

    // Neither enabled nor started by the package.
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/mxgate.service").exists());
    assert!(!Path::new("/etc/systemd/system/sockets.target.wants/mxgate.socket").exists());

    if !require("systemd-analyze") {
        return;
    }
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify");
    // The Documentation= pages are checked with man(1) when both are there
    // (minimal images often drop /usr/share/man).
    let man_pages = Path::new("/usr/share/man/man8/mxgate.8.gz").exists()
        && Command::new("sh")
            .args(["-c", "command -v man"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !man_pages {
        eprintln!("note: man(1) or the installed pages missing: systemd-analyze verify --man=no");
        verify.arg("--man=no");
    }
    let verified = run_bounded(
        verify.args([
            "/usr/lib/systemd/system/mxgate.service",
            "/usr/lib/systemd/system/mxgate.socket",
        ]),
        Duration::from_secs(60),
    )
    .0;
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "systemd-analyze verify: {}",
        describe(&verified)
    );
}

/// The packaged binary, as the user mxgate with only CAP_NET_BIND_SERVICE,
/// binds port 25 and delivers a message to an smtp-sink member.
#[test]
fn the_packaged_daemon_serves_port_25_as_mxgate_with_net_bind_service_only() {
    if !installed() || !require("setpriv") || !require("smtp-sink") || !require("swaks") {
        return;
    }
    let sink = SmtpSink::start("127.77.0.2");
    let dir = tempfile::Builder::new()
        .prefix("mxgate-pkg-")
        .tempdir()
        .expect("tempdir");
    let (uid, gid) = (id("-u"), id("-g"));
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).expect("chown data");
    std::fs::write(
        dir.path().join("cluster.toml"),
        common::without_client_names(&common::policy("", &[common::member("m1", sink.addr, "")])),
    )
    .expect("cluster.toml");
    let config = dir.path().join("mxgate.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"pkg\"\ndata_dir = \"{}\"\npolicy = \"cluster.toml\"\nworker_threads = 1\n\n\
             [[smtp]]\nname = \"inbound\"\nlisten = \"{LISTEN}\"\nhostname = \"mx.pkg.test\"\n",
            data.display()
        ),
    )
    .expect("mxgate.toml");

    let log = dir.path().join("mxgate.log");
    let mut daemon = Command::new("setpriv")
        .args([
            "--reuid=mxgate",
            "--regid=mxgate",
            "--init-groups",
            "--inh-caps=-all,+net_bind_service",
            "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service",
            "--",
            "/usr/bin/mxgate",
            "serve",
            "-c",
        ])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn setpriv mxgate serve");
    let daemon_guard = KillOnDrop(daemon.id());
    let addr: SocketAddr = LISTEN.parse().expect("addr");
    let greeted = common::peers::wait_smtp(addr, false);
    assert!(
        greeted,
        "no 220 from the packaged daemon on {LISTEN}; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // The process runs as mxgate with exactly CAP_NET_BIND_SERVICE.
    let status = read(Path::new(&format!("/proc/{}/status", daemon.id())));
    let line = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| l[key.len()..].split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let uid_text = uid.to_string();
    assert!(line("Uid:").iter().all(|u| *u == uid_text), "{status}");
    let net_bind_service = format!("{:016x}", 1u64 << 10);
    assert_eq!(line("CapEff:"), [net_bind_service.as_str()], "{status}");
    assert_eq!(line("CapBnd:"), [net_bind_service.as_str()], "{status}");

    let (swaks, killed) = run_bounded(
        Command::new("swaks").args([
            "--server",
            LISTEN,
            "--from",
            "sender@example.org",
            "--to",
            "rcpt@example.net",
            "--header",
            "Subject: packaged",
            "--body",
            "through the packaged mxgate",
        ]),
        Duration::from_secs(60),
    );
    assert!(
        !killed && swaks.status.success(),
        "swaks: {}",
        describe(&swaks)
    );
    assert_eq!(sink.wait_count(1, Duration::from_secs(10)), 1);
    assert!(
        sink.messages()
            .iter()
            .any(|m| m.contains("through the packaged mxgate"))
    );

    common::signal(daemon.id(), "TERM");
    let exited = eventually(Duration::from_secs(40), || {
        daemon.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "the packaged daemon did not exit after SIGTERM");
    drop(daemon_guard);
}

/// Kills a process left running by a failed assertion.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        common::signal(self.0, "KILL");
    }
}

/// The package to test, or `None` (skip; a failure under `CI=true`).
fn package() -> Option<PathBuf> {
    if !require("dpkg-deb") {
        return None;
    }
    let found = match std::env::var_os("MXGATE_DEB") {
        Some(path) => Some(PathBuf::from(path)),
        None => newest_deb(),
    };
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no target/debian/mxgate_*.deb under CI: .ci/run builds it before the tests"
        );
        eprintln!("SKIP: no target/debian/mxgate_*.deb; run `cargo deb` (or set MXGATE_DEB)");
    }
    found
}

/// The newest `mxgate_*.deb` in the target directory's `debian/`.
fn newest_deb() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::read_dir(target.join("debian"))
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.starts_with("mxgate_") && name.ends_with(".deb")
        })
        .max_by_key(|entry| entry.metadata().and_then(|m| m.modified()).ok())
        .map(|entry| entry.path())
}

/// Installs the package once per test run (`dpkg -i`); false: skip.
fn installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let Some(deb) = package() else { return false };
        if !require_root("installing the package with dpkg -i") || !require("dpkg") {
            return false;
        }
        let (output, killed) = run_bounded(
            Command::new("dpkg").arg("-i").arg(&deb),
            Duration::from_secs(300),
        );
        assert!(
            !killed && output.status.success(),
            "dpkg -i {}: {}",
            deb.display(),
            describe(&output)
        );
        true
    })
}

/// `id FLAG mxgate` as a number.
fn id(flag: &str) -> u32 {
    let output = run(Command::new("id").args([flag, "mxgate"]));
    text(&output)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("id {flag} mxgate: {e}"))
}

/// Runs a short command (bounded) and insists on success.
fn run(cmd: &mut Command) -> Output {
    let (output, killed) = run_bounded(cmd, Duration::from_secs(60));
    assert!(
        !killed && output.status.success(),
        "{cmd:?}: {}",
        describe(&output)
    );
    output
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
