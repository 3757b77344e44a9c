//! `mxgate` command line: parses arguments, sets up logging, maps errors to exit codes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mxgate::admin::{self, Request};
use mxgate::config;
use mxgate::descriptors::Budget;
use mxgate::text::escape_lines;
use mxgate::{daemon, demo, logging};

/// The process allocator: mimalloc, whose per-thread free lists suit the
/// per-core event loops (glibc's malloc and free were about 15 % of the data
/// plane's instructions; docs/performance.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits: service unavailable (daemon not reachable).
const EX_UNAVAILABLE: u8 = 69;
/// sysexits: internal software error.
const EX_SOFTWARE: u8 = 70;

#[derive(Parser)]
#[command(
    name = "mxgate",
    version,
    about = "SMTP-aware front door for mail-gateway clusters"
)]
struct Cli {
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
    /// Run the daemon (SIGTERM drains, SIGHUP reloads).
    Serve,
    /// Validate mxgate.toml and the policy it names; print the effective configuration.
    CheckConfig,
    /// Self-contained local demo: two sink MTAs and mxgate in front of them.
    Demo,
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
        command: mxgate::cluster::cli::ClusterCommand,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => serve(&cli.config),
        Command::CheckConfig => check_config(&cli.config),
        Command::Demo => run_async(demo::run()),
        Command::Status { json } => admin_call(&cli.config, &Request::Status, json, |value| {
            serde_json::from_value::<admin::Status>(value.clone())
                .map(|status| admin::render_text(&status))
                .map_err(|e| e.to_string())
        }),
        Command::Route {
            command:
                RouteCommand::Explain {
                    client,
                    dest,
                    listener,
                    json,
                },
        } => {
            let request = Request::RouteExplain {
                client,
                dest,
                listener,
                text: !json,
            };
            admin_call(&cli.config, &request, json, |value| {
                value
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "expected the explanation text".to_owned())
            })
        }
        Command::Dns {
            command: DnsCommand::Check { domains, json },
        } => dns_check(&cli.config, domains, json),
        Command::Cluster { command } => mxgate::cluster::cli::run(&cli.config, command),
        Command::Lft {
            command: LftCommand::Status { json },
        } => admin_call(&cli.config, &Request::LftStatus, json, |value| {
            serde_json::from_value::<mxgate::lft::status::LftStatus>(value.clone())
                .map(|status| mxgate::lft::status::render_text(&status))
                .map_err(|e| e.to_string())
        }),
    }
}

/// `mxgate dns check`: the daemon runs the check; the exit code is the
/// report's (plugin codes); anything that prevents a report is UNKNOWN (3).
fn dns_check(path: &Path, domains: Vec<String>, json: bool) -> ExitCode {
    const UNKNOWN: u8 = 3;
    let unknown = |short: &str, detail: &str| {
        print_text(&format!("DNS UNKNOWN - {short}"));
        print_error(&format!("mxgate: {detail}"));
        ExitCode::from(UNKNOWN)
    };
    let socket = match config::load_node(path) {
        Ok(node) => node.admin_socket(),
        Err(errors) => {
            return unknown(
                &format!("cannot read {}", path.display()),
                &format!(
                    "{errors}\ncannot read {} to find the daemon; pass the daemon's file with -c",
                    path.display()
                ),
            );
        }
    };
    let request = Request::DnsCheck { domains };
    let value = match admin::request_within(&socket, &request, std::time::Duration::from_secs(300))
    {
        Ok(value) => value,
        Err(e @ admin::ClientError::Unreachable { .. }) => {
            return unknown(
                &format!("cannot reach the mxgate daemon at {}", socket.display()),
                &e.to_string(),
            );
        }
        Err(e) => return unknown(&e.to_string(), &e.to_string()),
    };
    let report: mxgate::dns::CheckReport = match serde_json::from_value(value.clone()) {
        Ok(report) => report,
        Err(e) => return unknown("bad answer from the daemon", &e.to_string()),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print_text(&mxgate::dns::render_text(&report));
    }
    ExitCode::from(report.exit_code)
}

/// Loads both files and checks that every certificate, key and CA file is usable.
fn load_checked(path: &Path) -> Result<config::Config, config::ConfigErrors> {
    let config = config::load(path)?;
    mxgate::tls::TlsSnapshot::load(&config)?;
    Ok(config)
}

fn serve(path: &Path) -> ExitCode {
    let config = match load_checked(path) {
        Ok(config) => config,
        Err(errors) => {
            print_error(&format!(
                "{errors}\nmxgate: configuration refused; fix the lines above and start again"
            ));
            return ExitCode::from(EX_CONFIG);
        }
    };
    logging::init(config.log.format, &config.log.level);
    run_async_on(daemon::serve(path), config.node.worker_threads)
}

fn check_config(path: &Path) -> ExitCode {
    match load_checked(path) {
        Ok(config) => {
            print!("{}", config::render_effective(&config));
            let workers = mxgate::workers::count(config.node.worker_threads);
            let limit = mxgate::descriptors::hard_limit();
            if let Some(warning) = Budget::plan(limit, &config, workers).warning() {
                print_error(&format!("mxgate: warning: {warning}"));
            }
            print_error(&format!(
                "mxgate: {} and {} are valid",
                path.display(),
                config.node.policy.display()
            ));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_error(&format!(
                "{errors}\nmxgate: {} error(s); fix them and run check-config again",
                errors.0.len()
            ));
            ExitCode::from(EX_CONFIG)
        }
    }
}

fn admin_call(
    path: &Path,
    request: &Request,
    json: bool,
    render: impl Fn(&serde_json::Value) -> Result<String, String>,
) -> ExitCode {
    let socket = match config::load_node(path) {
        Ok(node) => node.admin_socket(),
        Err(errors) => {
            print_error(&format!(
                "{errors}\nmxgate: cannot read {} to find the daemon; pass the daemon's file with -c",
                path.display()
            ));
            return ExitCode::from(EX_CONFIG);
        }
    };
    match admin::request(&socket, request) {
        Ok(value) if json => match serde_json::to_string_pretty(&value) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_error(&format!("mxgate: cannot render the daemon's answer: {e}"));
                ExitCode::from(EX_SOFTWARE)
            }
        },
        Ok(value) => match render(&value) {
            Ok(text) => {
                print_text(&text);
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_error(&format!("mxgate: cannot render the daemon's answer: {e}"));
                ExitCode::from(EX_SOFTWARE)
            }
        },
        Err(admin::ClientError::Refused(error)) => {
            print_error(&format!("mxgate: {error}"));
            ExitCode::FAILURE
        }
        Err(e) => {
            print_error(&format!("mxgate: {e}"));
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// Prints human-readable `text` on stdout with its control characters
/// escaped and its line breaks kept: each renderer escapes the values it
/// shows; this is the last guard, also for text the daemon rendered.
fn print_text(text: &str) {
    println!("{}", escape_lines(text.trim_end()));
}

/// Prints `text` on stderr escaped the same way (errors quote peers and files).
fn print_error(text: &str) {
    eprintln!("{}", escape_lines(text));
}

fn run_async(fut: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    run_async_on(fut, 0)
}

/// The runtime for `[node] worker_threads`: 1 is tokio's current-thread
/// runtime (one event loop: no cross-thread wake-ups or work stealing, the
/// cheapest per session and message; see docs/performance.md), N > 1 a
/// multi-thread runtime with N workers, 0 one worker per CPU.
fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Runtime::new(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn run_async_on(fut: impl Future<Output = anyhow::Result<()>>, worker_threads: usize) -> ExitCode {
    let runtime = match runtime(worker_threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            print_error(&format!("mxgate: cannot start the async runtime: {e}"));
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&format!("mxgate: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
