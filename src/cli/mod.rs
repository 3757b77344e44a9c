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
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The command line.
#[derive(Parser)]
#[command(
    name = "mxgate",
    version,
    about = "SMTP-aware front door for mail-gateway clusters"
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
    Serve,
    /// Replace the running daemon by the binary now installed at its path,
    /// without refusing a connection: the new process takes over the
    /// listening sockets, the old one lets its sessions finish and exits.
    Upgrade,
    /// Validate mxgate.toml and the policy it names; print the effective configuration.
    CheckConfig,
    /// Self-contained local demo: two sink MTAs and mxgate in front of them.
    Demo {
        /// Start three backend nodes and a frontend on 127.71.0.1-4 with built-in sink members, form a cluster with the real commands, and print what to try.
        #[arg(long)]
        cluster: bool,
    },
    /// Listeners, members with health, sessions.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Routing questions.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// DNS checks (exit codes of monitoring plugins: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// The LFT attachment store (SPEC section 9).
    Lft {
        #[command(subcommand)]
        command: LftCommand,
    },
    /// The cluster control plane (SPEC section 8).
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Print the shell completion script for SHELL (the package installs bash's and zsh's).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum LftCommand {
    /// Per target: pending, synced, failed, oldest pending.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DnsCommand {
    /// MX / round-robin report of DOMAIN... (default: [dns] domains), run by the daemon.
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

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
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
