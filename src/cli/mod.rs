//! The `mxgate` command line: argument definitions (clap), one function per
//! command, and the exit codes ([`Exit`]). Commands that need the running
//! daemon ask it through [`call::call`], the one path to the admin socket.
//! Everything printed for people is escaped ([`output`]), so no value from a
//! peer or a file can forge a line.

pub mod call;
pub mod cluster;
mod commands;
pub mod manual;
mod output;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// How `mxgate` ends (sysexits where one fits). `mxgate dns check` ends
/// with the monitoring-plugin codes of its report instead (0 to 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// The daemon refused the request, or the command failed.
    Failed = 1,
    /// The arguments cannot be used (sysexits `EX_USAGE`), e.g. an unreadable password file.
    Usage = 64,
    /// The daemon cannot be reached (sysexits `EX_UNAVAILABLE`).
    Unavailable = 69,
    /// An internal error (sysexits `EX_SOFTWARE`).
    Software = 70,
    /// A configuration file is wrong (sysexits `EX_CONFIG`).
    Config = 78,
    /// The reader of stdout went away (`mxgate status | head -1`): 128 +
    /// SIGPIPE, what shells report for a program that SIGPIPE ended.
    Closed = crate::stdout::CLOSED_EXIT,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// What the top-level `--help` ends with: the words an operator meets
/// first, and where to start.
const TERMS: &str = "\
Terms:
  member  one mail gateway of the cluster (its MTA, its GINA portal); mxgate
          spreads sessions over the members, sticky by client and destination
  GINA    the members' secure-mail web portal (SEPPmail's GINA), proxied by
          mxgate to the same member as the client's mail
  LFT     Large File Transfer: big attachments of mail one member injects into
          another, kept by mxgate and copied only to the members chosen for them

Start with:
  mxgate demo                       two sink MTAs behind mxgate on 127.0.0.1
  mxgate demo --cluster             three backends and a frontend, clustered
  mxgate check-config -c FILE       validate a configuration

Every command takes -c FILE (default /etc/mxgate/mxgate.toml); the commands
that ask the daemon find it through the admin socket in that file's data_dir.
Manual pages: mxgate(8), mxgate.toml(5), mxgate-cluster.toml(5).";

/// The command line.
#[derive(Parser)]
#[command(
    name = "mxgate",
    version,
    about = "SMTP-aware front door for mail-gateway clusters",
    long_about = "SMTP-aware front door for mail-gateway clusters: it spreads SMTP \
        sessions and GINA web requests over the cluster's members with sticky \
        affinity, holds members injecting mail into each other to their ACLs, \
        watches SMTP, HTTP and DNS health, and runs the cluster's control plane.",
    after_help = TERMS
)]
pub struct Cli {
    /// Node configuration file (mxgate.toml).
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "/etc/mxgate/mxgate.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (SIGTERM drains, SIGHUP reloads, SIGUSR2 upgrades).
    ///
    /// Binds the listeners of mxgate.toml, routes sessions to the members of
    /// its policy file and serves until SIGTERM, which lets running sessions
    /// finish (drain_timeout). SIGHUP reloads both files; a broken file is
    /// refused and the running configuration stays. Under systemd it
    /// reports readiness and status (Type=notify) and takes the sockets of
    /// mxgate.socket.
    #[command(after_help = "Example:\n  mxgate serve -c /etc/mxgate/mxgate.toml")]
    Serve,
    /// Replace the running daemon by the binary now installed, without refusing a connection.
    ///
    /// The daemon starts the binary now installed at its path; the new
    /// process takes over the listening sockets and serves, the old one lets
    /// its sessions finish and exits. A new binary that refuses the
    /// configuration or fails to start changes nothing.
    #[command(after_help = "Example (after installing a new package):\n  mxgate upgrade")]
    Upgrade,
    /// Check mxgate.toml and the policy it names; print the effective configuration.
    ///
    /// Every error is listed with its file, line and key; certificates, keys
    /// and CA files are loaded as the daemon would. Exit 0 when both files
    /// are valid, 78 when not.
    #[command(after_help = "Example:\n  mxgate check-config -c /etc/mxgate/mxgate.toml")]
    CheckConfig,
    /// A local demo with nothing installed: sink MTAs and mxgate in front of them.
    ///
    /// Starts two built-in sink MTAs with web portals and mxgate in front
    /// of them on 127.0.0.1 (SMTP 2525, GINA 8080, metrics 9325), prints
    /// commands to try and logs every routing decision. With --cluster:
    /// three backends and a frontend on 127.71.0.1-4, clustered with the
    /// real commands, and a master to kill. Ctrl-C stops it.
    #[command(after_help = "Examples:\n  mxgate demo\n  mxgate demo --cluster")]
    Demo {
        /// Start three backend nodes and a frontend on 127.71.0.1-4 with
        /// built-in sink members, form a cluster with the real commands
        /// (create, identifier export, join), and print what to try.
        #[arg(long)]
        cluster: bool,
    },
    /// Listeners, members with their health, sessions, and the cluster summary.
    #[command(after_help = "Example:\n  mxgate status -c /etc/mxgate/mxgate.toml")]
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Which member a client's session would reach, and why.
    #[command(after_help = "Example:\n  mxgate route explain --client 203.0.113.7")]
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Check the MX and round-robin records of your domains and the SMTP servers they name.
    #[command(after_help = "Example:\n  mxgate dns check example.com")]
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// The LFT store: large attachments of injected mail and their copies to other members.
    #[command(after_help = "Example:\n  mxgate lft status")]
    Lft {
        #[command(subcommand)]
        command: LftCommand,
    },
    /// Create, join and run a cluster of mxgate nodes (over mutual TLS).
    ///
    /// Backends hold the replicated policy and elect a master that orders
    /// every change; frontends (for a DMZ) follow them. Every command asks the
    /// local daemon, so `mxgate serve` must run on this node.
    #[command(after_help = "Examples:\n  mxgate cluster create\n  mxgate cluster status")]
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Print the shell completion script for SHELL (the package installs bash's and zsh's).
    #[command(after_help = "Example:\n  mxgate completions bash > /etc/bash_completion.d/mxgate")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum LftCommand {
    /// Per target member: attachments pending, synced and failed, and the oldest pending.
    #[command(after_help = "Example:\n  mxgate lft status --json")]
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DnsCommand {
    /// Report on DOMAIN... (default: [dns] domains), run by the daemon.
    ///
    /// Looks up each domain's MX records and their addresses through [dns]
    /// nameservers, checks that they spread over the ingress members as
    /// intended, answer SMTP and have forward-confirmed reverse DNS, and
    /// ends with the codes of monitoring plugins: 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN (Nagios, Icinga, Checkmk).
    #[command(after_help = "Example:\n  mxgate dns check example.com example.org")]
    Check {
        /// Domains to check.
        domains: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Which member a session would reach, in order, and why.
    ///
    /// Asks the running daemon with its live health and policy: the members
    /// in the order a session from CLIENT to DEST would try them, each with
    /// its score, and every member left out with the reason.
    #[command(
        after_help = "Example:\n  mxgate route explain --client 203.0.113.7 --dest 192.0.2.25"
    )]
    Explain {
        /// Client address.
        #[arg(long)]
        client: IpAddr,
        /// Address the client reached (default: the listener's).
        #[arg(long)]
        dest: Option<IpAddr>,
        /// Listener whose address is the destination (default: the first).
        #[arg(long)]
        listener: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Prints what clap says instead of running a command: `--help` and
/// `--version` on stdout through [`output`] (so `mxgate --help | head -1`
/// ends quietly), a usage error on stderr with clap's code (2).
fn usage(said: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    use std::io::IsTerminal;
    match said.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let rendered = said.render();
            let text = if std::io::stdout().is_terminal() {
                rendered.ansi().to_string()
            } else {
                rendered.to_string()
            };
            match crate::stdout::write(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => output::write_failed(&error).into(),
            }
        }
        _ => {
            let _ = said.print();
            ExitCode::from(u8::try_from(said.exit_code()).unwrap_or(2))
        }
    }
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(refused) => return usage(&refused),
    };
    let config = cli.config.as_path();
    match cli.command {
        Command::Serve => commands::serve(config),
        Command::Upgrade => commands::upgrade(config),
        Command::CheckConfig => commands::check_config(config),
        Command::Demo { cluster: false } => commands::run_async(crate::demo::run()),
        Command::Demo { cluster: true } => commands::run_async(crate::demo::cluster::run()),
        Command::Status { json } => commands::status(config, json),
        Command::Route {
            command:
                RouteCommand::Explain {
                    client,
                    dest,
                    listener,
                    json,
                },
        } => commands::route_explain(config, (client, dest, listener), json),
        Command::Dns {
            command: DnsCommand::Check { domains, json },
        } => commands::dns_check(config, domains, json),
        Command::Lft {
            command: LftCommand::Status { json },
        } => commands::lft_status(config, json),
        Command::Cluster { command } => cluster::run(config, command),
        Command::Completions { shell } => manual::print_completions(shell),
    }
}
