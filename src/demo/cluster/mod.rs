//! `mxgate demo --cluster`: a cluster on 127.71.0.1-4 with nothing to
//! configure. Starts a built-in sink MTA and web member per backend in
//! this process, writes each node's configuration into a temporary directory, runs
//! `mxgate serve` for gw1, gw2, gw3 (backends) and fe1 (frontend) as child
//! processes ([`nodes`]), forms the cluster with the real commands and
//! prints them with their output, then the commands to try ([`script`]).
//! It narrates what the nodes do (one ends, a new master is elected) until
//! Ctrl-C, SIGTERM or SIGHUP, then stops every node and removes the
//! directory.

mod nodes;
mod script;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};

use super::{sink, web};
use crate::config::LogFormat;
use crate::logging;
use nodes::{Nodes, Role, SPECS};
use script::{Cli, TryFacts, quote};

/// The client whose route the second policy changes.
const CLIENT: &str = "192.0.2.7";
/// How long the members have to show in sync after the joins.
const SYNC_WITHIN: Duration = Duration::from_secs(30);
/// How long the demo watches for a new master after the master ended.
const ELECTION_WATCH: Duration = Duration::from_secs(30);
/// How often the demo looks at its nodes.
const TICK: Duration = Duration::from_millis(250);

/// Prints one line of the demo's narrative on stdout (the one place it
/// prints). The demo runs on when nobody reads its stdout.
fn say(text: &str) {
    let _ = crate::stdout::write_lines(text);
}

/// Runs the cluster demo until Ctrl-C (or SIGTERM, SIGHUP).
pub async fn run() -> anyhow::Result<()> {
    logging::init(LogFormat::Text, "info");
    let started = Instant::now();
    nodes::check_free()?;
    let dir = std::env::temp_dir().join(format!("mxgate-cluster-demo-{}", std::process::id()));
    if dir.to_str().is_none() {
        bail!(
            "the temporary directory {} is not UTF-8; set TMPDIR",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _cleanup = RemoveDir(dir.clone());
    let cli = Cli {
        exe: std::env::current_exe().context("cannot find this program's own binary")?,
        shown: std::env::args().next().unwrap_or_else(|| "mxgate".into()),
    };
    let mut nodes = Nodes::default();
    let outcome = demo(&cli, &dir, &mut nodes, started).await;
    nodes.stop().await;
    if outcome.is_ok() {
        say(&format!(
            "All four nodes stopped; {} removed.",
            quote(&dir.to_string_lossy())
        ));
    }
    outcome
}

/// Everything between the start and the stop of the nodes.
async fn demo(cli: &Cli, dir: &Path, nodes: &mut Nodes, started: Instant) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    say(&format!(
        "mxgate cluster demo: backends gw1, gw2, gw3 and frontend fe1 on 127.71.0.1-4, in {}\n",
        quote(&dir.to_string_lossy())
    ));
    let formed = async {
        start_nodes(cli, dir, nodes).await?;
        say("\nForming the cluster with the real commands:\n");
        form(cli, dir, nodes).await
    };
    let first = tokio::select! {
        first = formed => first?,
        () = signals.recv() => return Ok(()),
    };
    let policy2 = write_policy2(dir, &first)?;
    let facts = TryFacts {
        nodes,
        dir,
        policy2: &policy2,
        client: CLIENT,
        first: &first,
        took: started.elapsed().as_secs_f64(),
    };
    say(&script::try_block(cli, &facts));
    watch(cli, nodes, &mut signals).await;
    say("\nStopping the nodes...");
    Ok(())
}

/// Starts the sinks and the four nodes; waits until each answers.
async fn start_nodes(cli: &Cli, dir: &Path, nodes: &mut Nodes) -> anyhow::Result<()> {
    for spec in SPECS.iter().filter(|s| s.role == Role::Backend) {
        sink::start_on(spec.sink, spec.sink_addr())
            .await
            .with_context(|| format!("cannot start {} on {}", spec.sink, spec.sink_addr()))?;
        web::start_on(spec.name, spec.web_addr())
            .await
            .with_context(|| format!("cannot start a web member on {}", spec.web_addr()))?;
    }
    for spec in SPECS {
        let config = nodes::write_config(dir, &spec)?;
        nodes.spawn(&cli.exe, spec, config)?;
    }
    for (index, spec) in SPECS.iter().enumerate() {
        nodes.wait_ready(&cli.exe, index).await?;
        if let Some(node) = nodes.get(spec.name) {
            say(&script::started_line(spec, node.pid, &node.log));
        }
    }
    Ok(())
}

/// create, identifier export, the joins, the frontend's backends; waits
/// until every member is in sync and shows the status and a route. The
/// first choice for [`CLIENT`] on the frontend.
async fn form(cli: &Cli, dir: &Path, nodes: &Nodes) -> anyhow::Result<String> {
    let config = |name: &str| {
        nodes
            .get(name)
            .map(|n| n.config.clone())
            .unwrap_or_default()
    };
    let (gw1, fe1) = (config("gw1"), config("fe1"));
    let id = dir.join("clusterid.txt").to_string_lossy().into_owned();
    let password = write_password(dir)?;
    let master = SPECS[0].cluster().to_string();
    cli.narrate("gw1", &["cluster", "create"], &gw1).await?;
    let export = ["cluster", "identifier", "export", "--out", &id];
    let with_pw = [&export[..], &["--password-file", &password]].concat();
    cli.narrate("gw1", &with_pw, &gw1).await?;
    let join = ["cluster", "join", "--identifier", &id, "--master", &master];
    let join = [&join[..], &["--password-file", &password]].concat();
    for name in ["gw2", "gw3"] {
        cli.narrate(name, &join, &config(name)).await?;
    }
    let join_fe = [&join[..], &["--role", "frontend"]].concat();
    cli.narrate("fe1", &join_fe, &fe1).await?;
    // gw2 and gw3 admit fe1's certificate once the change adding it reached them.
    wait_in_sync(cli, &gw1).await?;
    for backend in &SPECS[1..3] {
        let address = backend.cluster().to_string();
        cli.narrate("fe1", &["cluster", "add-backend", &address], &fe1)
            .await?;
    }
    wait_in_sync(cli, &gw1).await?;
    cli.narrate("gw1", &["cluster", "status"], &gw1).await?;
    cli.narrate("fe1", &["route", "explain", "--client", CLIENT], &fe1)
        .await?;
    let route = cli
        .json(&["route", "explain", "--client", CLIENT, "--json"], &fe1)
        .await;
    route
        .as_ref()
        .and_then(|r| r["order"][0]["member"].as_str())
        .map(str::to_owned)
        .context("the frontend names no first choice")
}

/// Polls `cluster status --json` on gw1 until its four members are in
/// state A with all their entries (bounded by [`SYNC_WITHIN`]).
async fn wait_in_sync(cli: &Cli, config: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + SYNC_WITHIN;
    loop {
        let status = cli.json(&["cluster", "status", "--json"], config).await;
        let members = status
            .as_ref()
            .and_then(|s| s["members"].as_array().cloned())
            .unwrap_or_default();
        let synced = members.len() == SPECS.len()
            && members
                .iter()
                .all(|m| m["state"] == "A" && m["local_entries"] == m["remote_entries"]);
        if synced {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the members were not in sync within {}s (see the logs in {})",
                SYNC_WITHIN.as_secs(),
                config
                    .parent()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(TICK).await;
    }
}

/// A random password for the identifier, in `DIR/password` (mode 0600).
fn write_password(dir: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("password");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{}", uuid::Uuid::new_v4().simple())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_string_lossy().into_owned())
}

/// `DIR/policy-2.toml`: the policy of now with `first` out of ingress.
fn write_policy2(dir: &Path, first: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("policy-2.toml");
    let text = format!(
        "{}\n# Policy 2: {first} takes no more public sessions; the other members share them.\n\
         [members.{first}]\ningress = false\ncomment = \"out of ingress by policy-2.toml\"\n",
        nodes::base_policy()
    );
    nodes::write(&path, &text)?;
    Ok(path)
}

/// Narrates what happens to the nodes until a stop signal: a node that
/// ends, and the master the others then elect.
async fn watch(cli: &Cli, nodes: &mut Nodes, signals: &mut Signals) {
    let mut master = String::from("gw1");
    let mut election: Option<(String, Instant)> = None;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            () = signals.recv() => return,
            _ = tick.tick() => {}
        }
        for (spec, pid, status) in nodes.reap() {
            say(&format!("\n{} (pid {pid}) ended: {status}.", spec.name));
            if spec.name == master {
                say("  It was the master: the other backends elect a new one by themselves.");
                election = Some((master.clone(), Instant::now()));
            }
        }
        if let Some((dead, since)) = &election {
            if let Some((new, epoch)) = elected(cli, nodes, dead).await {
                say(&format!(
                    "{new} is the master now (epoch {epoch}), {:.1} s after {dead} ended.",
                    since.elapsed().as_secs_f64()
                ));
                master = new;
                election = None;
            } else if since.elapsed() > ELECTION_WATCH {
                say(&format!(
                    "No new master {}s after {dead} ended: are fewer than two backends running?",
                    ELECTION_WATCH.as_secs()
                ));
                election = None;
            }
        }
    }
}

/// The master a running backend other than `dead` names, with its epoch.
async fn elected(cli: &Cli, nodes: &Nodes, dead: &str) -> Option<(String, u64)> {
    let alive = nodes
        .running
        .iter()
        .filter(|n| n.ended.is_none() && n.spec.role == Role::Backend && n.spec.name != dead);
    for node in alive {
        let status = cli
            .json(&["cluster", "status", "--json"], &node.config)
            .await?;
        let master = status["master"].as_str().unwrap_or_default();
        if !master.is_empty() && master != dead {
            return Some((master.to_owned(), status["epoch"].as_u64().unwrap_or(0)));
        }
    }
    None
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed) all stop the demo.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        let on = |kind| signal(kind).context("cannot handle signals");
        Ok(Signals {
            interrupt: on(SignalKind::interrupt())?,
            terminate: on(SignalKind::terminate())?,
            hangup: on(SignalKind::hangup())?,
        })
    }

    /// Returns at the next of the three.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

/// Removes the demo's directory when dropped (every exit path).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
