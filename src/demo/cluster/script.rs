//! The commands `mxgate demo --cluster` runs and prints: the real `mxgate`
//! CLI as child processes, each shown as a shell line with its output
//! ([`Cli::narrate`]), and the block of commands to try ([`try_block`]).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

use super::nodes::{Nodes, SPECS, Spec};
use super::say;
use crate::text::escape_lines;

/// How long one CLI command may take (a join derives a key, a change
/// waits for a majority: seconds at most).
const COMMAND_WITHIN: Duration = Duration::from_secs(60);

/// The `mxgate` CLI: spawned as `exe`, shown as `shown` (what the user typed).
pub struct Cli {
    /// The binary run (this process's own).
    pub exe: PathBuf,
    /// How the binary is named in printed commands.
    pub shown: String,
}

impl Cli {
    /// `mxgate ARGS -c CONFIG` as a copy-pasteable shell line.
    pub fn line(&self, args: &[&str], config: &Path) -> String {
        let mut words = vec![quote(&self.shown)];
        words.extend(args.iter().map(|a| quote(a)));
        words.push("-c".into());
        words.push(quote(&config.to_string_lossy()));
        words.join(" ")
    }

    /// Runs `mxgate ARGS -c CONFIG`; its output (bounded by [`COMMAND_WITHIN`]).
    pub async fn run(&self, args: &[&str], config: &Path) -> anyhow::Result<Output> {
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(COMMAND_WITHIN, command.output())
            .await
            .with_context(|| format!("`{}` took longer than 60 s", self.line(args, config)))?
            .with_context(|| format!("cannot run {}", self.exe.display()))
    }

    /// Runs the command on `node`, printing it as `NODE$ LINE` and its
    /// output indented; fails (with its error output) when it fails.
    pub async fn narrate(&self, node: &str, args: &[&str], config: &Path) -> anyhow::Result<()> {
        let line = self.line(args, config);
        say(&format!("{node}$ {line}"));
        let out = self.run(args, config).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        for l in text.lines().chain(err.lines()) {
            say(&format!("    {}", escape_lines(l)));
        }
        if !out.status.success() {
            bail!("`{line}` failed ({})", out.status);
        }
        Ok(())
    }

    /// Runs the command and parses its JSON output; `None` when it fails.
    pub async fn json(&self, args: &[&str], config: &Path) -> Option<serde_json::Value> {
        let out = self.run(args, config).await.ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }
}

/// `word` quoted for a POSIX shell when it needs to be.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:+=@,%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What the Try block needs to know.
pub struct TryFacts<'a> {
    /// The nodes, running.
    pub nodes: &'a Nodes,
    /// The demo's directory.
    pub dir: &'a Path,
    /// The second policy file.
    pub policy2: &'a Path,
    /// The client address whose route changes.
    pub client: &'a str,
    /// Its first choice now, which the second policy takes out of ingress.
    pub first: &'a str,
    /// Seconds since the demo started.
    pub took: f64,
}

/// The commands to try, with what each shows; the last line says how to stop.
pub fn try_block(cli: &Cli, facts: &TryFacts<'_>) -> String {
    let config = |name: &str| {
        facts
            .nodes
            .get(name)
            .map(|n| n.config.clone())
            .unwrap_or_default()
    };
    let master_pid = facts.nodes.get("gw1").map(|n| n.pid).unwrap_or_default();
    let fe = SPECS[3];
    let mut out = format!(
        "\nThe cluster is up ({:.1} s). Try, in another terminal:\n\n\
         \x20 # Who is master, and every member in sync (STATE A), as each node sees it:\n",
        facts.took
    );
    for spec in &SPECS {
        out += &format!(
            "  {}\n",
            cli.line(&["cluster", "status"], &config(spec.name))
        );
    }
    out += &format!(
        "\n  # A policy change made on gw2 (a backend: it forwards it to the master), replicated to\n\
         \x20 # every node within a second or two: {policy2} takes {first},\n\
         \x20 # the first choice for client {client}, out of ingress. Then ask the frontend:\n\
         \x20 {apply}\n\
         \x20 {explain}\n\n\
         \x20 # Mail through the frontend: it routes to a member's sink (the sink logs it below):\n\
         \x20 swaks --server {smtp} --from alice@example.org --to bob@example.com\n\
         \x20 # and the GINA portal through it (a member's built-in web page):\n\
         \x20 curl -s http://{http}/portal\n\n\
         \x20 # The master (gw1) crashes:\n\
         \x20 kill -9 {master_pid}\n\
         \x20 # gw2 and gw3 hear no heartbeat for 3 s, and one of them is elected master within\n\
         \x20 # about 5-6 s, with no command (this terminal says when). Then:\n\
         \x20 {status2}\n\
         \x20 # gw1 shows ERROR: no contact; changes go on with 2 of 3 backends, the frontend\n\
         \x20 # follows gw2 or gw3 and mail keeps flowing (the sinks run in this process).\n\n\
         \x20 # Each node's log, and its metrics:\n\
         \x20 tail -f {dir}/*/mxgate.log\n\
         \x20 curl -s http://{metrics}/metrics | grep ^mxgate_cluster\n\n\
         Ctrl-C stops all four nodes and removes {dir}.\n",
        policy2 = quote(&facts.policy2.to_string_lossy()),
        first = facts.first,
        client = facts.client,
        apply = cli.line(
            &[
                "cluster",
                "policy",
                "apply",
                &facts.policy2.to_string_lossy()
            ],
            &config("gw2")
        ),
        explain = cli.line(
            &["route", "explain", "--client", facts.client],
            &config(fe.name)
        ),
        smtp = fe.smtp(),
        http = fe.http(),
        status2 = cli.line(&["cluster", "status"], &config("gw2")),
        dir = quote(&facts.dir.to_string_lossy()),
        metrics = SPECS[1].metrics(),
    );
    out
}

/// The line that says where node `spec` runs.
pub fn started_line(spec: &Spec, pid: u32, log: &Path) -> String {
    let sink = match spec.role {
        super::nodes::Role::Backend => format!(
            ", member MTA {} {} and portal {}",
            spec.sink,
            spec.sink_addr(),
            spec.web_addr()
        ),
        super::nodes::Role::Frontend => String::new(),
    };
    format!(
        "  {} (pid {pid}): SMTP {}, GINA {}, control plane {}, metrics {}{sink}, log {}",
        spec.name,
        spec.smtp(),
        spec.http(),
        spec.cluster(),
        spec.metrics(),
        quote(&log.to_string_lossy()),
    )
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quote_leaves_plain_words_and_quotes_the_rest_for_sh() {
        assert_eq!(
            quote("/tmp/mxgate-cluster-demo-7/gw1/mxgate.toml"),
            "/tmp/mxgate-cluster-demo-7/gw1/mxgate.toml"
        );
        assert_eq!(quote("127.71.0.1:7025"), "127.71.0.1:7025");
        assert_eq!(quote("/tmp/my dir"), "'/tmp/my dir'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(x)"), "'$(x)'");
    }
}
