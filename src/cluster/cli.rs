//! `mxgate cluster ...`: argument definitions and the client side of each
//! command (read files and passwords, ask the daemon, print the answer).

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::Role;
use super::admin::ClusterRequest;
use super::status::{ClusterStatus, Replication, render_replication, render_text};
use crate::admin::{self, Request};
use crate::config;

/// `mxgate cluster` subcommands (the `command` fields are the nested subcommands).
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make this node master of a new cluster; keeps its data (its policy becomes the cluster's).
    Create,
    /// Identifiers: the file a new node needs to join.
    Identifier {
        #[command(subcommand)]
        command: IdentifierCommand,
    },
    /// Join a cluster (wipes this node's cluster state; the master's wins).
    Join {
        /// The identifier file exported on the master.
        #[arg(long)]
        identifier: PathBuf,
        /// The master's control-plane address, HOST[:PORT] (port 7025 by default).
        #[arg(long)]
        master: String,
        /// Role of this node.
        #[arg(long, value_enum, default_value = "backend")]
        role: RoleArg,
        /// File holding the identifier's password (default: ask on the terminal).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// The members table.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Show COMMENT and LOCATION too.
        #[arg(long)]
        wide: bool,
    },
    /// Last CSN per backend: who changed what, when.
    Replication {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// On the master: remove a member (its certificate is refused at once).
    Delete {
        /// Name or cluster number.
        member: String,
    },
    /// Remove this node from the cluster; its database stays as last synchronised.
    Leave {
        /// Leave even when the master cannot be told (disaster recovery: the master is lost).
        #[arg(long)]
        force: bool,
    },
    /// The replicated policy (cluster.toml).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Injection ACLs.
    Inject {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// LFT sync targets.
    Lft {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Member details.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Make this backend the master (epoch + 1); refuses while the master is reachable.
    Promote {
        /// Master reachable: hand over without losing anything. Master lost:
        /// promote even without a majority of the backends.
        #[arg(long)]
        force: bool,
    },
    /// Follow the master that HOST[:PORT] names (only needed when no member is reachable).
    Sync {
        /// A node's control-plane address, HOST[:PORT] (port 7025 by default).
        #[arg(long)]
        master: String,
    },
    /// Frontend: use one more backend (failover without a virtual IP); the master records it.
    AddBackend {
        /// The backend's control-plane address, HOST[:PORT] (port 7025 by default).
        backend: String,
    },
    /// Frontend: leave the cluster and start again with an empty state.
    Detach,
}

/// `cluster identifier ...`.
#[derive(Debug, Subcommand)]
pub enum IdentifierCommand {
    /// Write clusterid.txt (CA certificate, master address, enrolment certificate and key).
    Export {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// File holding the password (default: ask on the terminal).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Also limit joins to these source addresses.
        #[arg(long, num_args = 1..)]
        allow_ip: Vec<IpAddr>,
        /// Write the key unencrypted (anyone with the file can join).
        #[arg(long)]
        insecure_no_password: bool,
    },
    /// Limit joins to source addresses (applies to identifiers exported before too).
    Protect {
        /// Allowed source addresses.
        #[arg(long, num_args = 1.., required_unless_present = "clear")]
        allow_ip: Vec<IpAddr>,
        /// Lift the limit.
        #[arg(long, conflicts_with = "allow_ip")]
        clear: bool,
    },
    /// Invalidate every identifier exported before.
    Rotate,
}

/// `cluster policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// On the master: validate and replicate a new policy.
    Apply {
        /// The cluster.toml to apply.
        file: PathBuf,
    },
    /// Print the replicated policy.
    Show,
}

/// `cluster inject set` / `cluster lft set`.
#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// On the master: set the list of MEMBER.
    Set {
        /// The member.
        member: String,
        /// Targets, comma-separated (empty: none).
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        to: Vec<String>,
    },
}

/// `cluster member ...`.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// On the master: set a member's comment and location (empty text removes).
    Set {
        /// Name or cluster number.
        member: String,
        /// Free text.
        #[arg(long)]
        comment: Option<String>,
        /// Free text.
        #[arg(long)]
        location: Option<String>,
    },
}

/// `--role`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// Full member with the replicated database.
    Backend,
    /// No cluster database on disk; follows its backends (for a DMZ).
    Frontend,
}

/// Runs one `mxgate cluster` command against the daemon of `config_path`.
pub fn run(config_path: &Path, command: ClusterCommand) -> ExitCode {
    match build(command) {
        Ok((request, output)) => call(config_path, request, output),
        Err(message) => {
            eprintln!("mxgate: {message}");
            ExitCode::from(64)
        }
    }
}

/// How to print the daemon's answer.
enum Output {
    Json,
    Status { wide: bool },
    Replication,
    Done,
    Policy,
    Export(PathBuf),
    Created,
    Joined,
    Left,
    Promoted,
    Synced,
    BackendAdded,
    Detached,
}

fn build(command: ClusterCommand) -> Result<(ClusterRequest, Output), String> {
    use ClusterCommand as C;
    Ok(match command {
        C::Create => (ClusterRequest::Create, Output::Created),
        C::Identifier { command } => match command {
            IdentifierCommand::Export {
                out,
                password_file,
                allow_ip,
                insecure_no_password,
            } => {
                let password = match (password_file, insecure_no_password) {
                    (Some(_), true) => {
                        return Err(
                            "give either --password-file or --insecure-no-password, not both"
                                .into(),
                        );
                    }
                    (Some(file), false) => Some(read_password_file(&file)?),
                    (None, true) => None,
                    (None, false) => {
                        let first = prompt("Password for the identifier: ")?;
                        let second = prompt("Repeat the password: ")?;
                        if first != second {
                            return Err("the passwords differ; run the command again".into());
                        }
                        Some(first)
                    }
                };
                (
                    ClusterRequest::IdentifierExport {
                        password,
                        insecure_no_password,
                        allow_ip,
                    },
                    Output::Export(out),
                )
            }
            IdentifierCommand::Protect { allow_ip, clear } => (
                ClusterRequest::IdentifierProtect { allow_ip, clear },
                Output::Done,
            ),
            IdentifierCommand::Rotate => (ClusterRequest::IdentifierRotate, Output::Done),
        },
        C::Join {
            identifier,
            master,
            role,
            password_file,
        } => {
            let text = std::fs::read_to_string(&identifier)
                .map_err(|e| format!("cannot read the identifier {}: {e}", identifier.display()))?;
            let parsed = super::identifier::parse(&text).map_err(|e| {
                format!(
                    "{}: {e}; export a new one on the master",
                    identifier.display()
                )
            })?;
            let password = match password_file {
                Some(file) => Some(read_password_file(&file)?),
                None if parsed.encrypted() => Some(prompt("Password for the identifier: ")?),
                None => None,
            };
            let role = match role {
                RoleArg::Backend => Role::Backend,
                RoleArg::Frontend => Role::Frontend,
            };
            (
                ClusterRequest::Join {
                    identifier: text,
                    password,
                    master,
                    role,
                },
                Output::Joined,
            )
        }
        C::Status { json, wide } => (
            ClusterRequest::Status,
            if json {
                Output::Json
            } else {
                Output::Status { wide }
            },
        ),
        C::Replication { json } => (
            ClusterRequest::Replication,
            if json {
                Output::Json
            } else {
                Output::Replication
            },
        ),
        C::Delete { member } => (ClusterRequest::Delete { member }, Output::Done),
        C::Leave { force } => (ClusterRequest::Leave { force }, Output::Left),
        C::Policy { command } => match command {
            PolicyCommand::Apply { file } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                (
                    ClusterRequest::PolicyApply {
                        name: file.display().to_string(),
                        text,
                    },
                    Output::Done,
                )
            }
            PolicyCommand::Show => (ClusterRequest::PolicyShow, Output::Policy),
        },
        C::Inject {
            command: ListCommand::Set { member, to },
        } => (ClusterRequest::InjectSet { member, to }, Output::Done),
        C::Lft {
            command: ListCommand::Set { member, to },
        } => (ClusterRequest::LftSet { member, to }, Output::Done),
        C::Promote { force } => (ClusterRequest::Promote { force }, Output::Promoted),
        C::Sync { master } => (ClusterRequest::Sync { master }, Output::Synced),
        C::AddBackend { backend } => (ClusterRequest::AddBackend { backend }, Output::BackendAdded),
        C::Detach => (ClusterRequest::Detach, Output::Detached),
        C::Member {
            command:
                MemberCommand::Set {
                    member,
                    comment,
                    location,
                },
        } => (
            ClusterRequest::MemberSet {
                member,
                comment,
                location,
            },
            Output::Done,
        ),
    })
}

fn call(config_path: &Path, request: ClusterRequest, output: Output) -> ExitCode {
    let socket = match config::load_node(config_path) {
        Ok(node) => node.admin_socket(),
        Err(errors) => {
            eprintln!(
                "{errors}\nmxgate: cannot read {} to find the daemon; pass the daemon's file with -c",
                config_path.display()
            );
            return ExitCode::from(78);
        }
    };
    let value = match admin::request(&socket, &Request::Cluster(request)) {
        Ok(value) => value,
        Err(admin::ClientError::Refused(error)) => {
            eprintln!("mxgate: {error}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("mxgate: {e}");
            return ExitCode::from(69);
        }
    };
    match render(&value, output) {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mxgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render(value: &serde_json::Value, output: Output) -> Result<String, String> {
    let text = |key: &str| value[key].as_str().unwrap_or_default().to_string();
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(value).map_err(|e| e.to_string())?,
        Output::Status { wide } => {
            let status: ClusterStatus =
                serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
            render_text(&status, wide)
        }
        Output::Replication => {
            let r: Replication =
                serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
            render_replication(&r)
        }
        Output::Done => {
            let csn = &value["csn"];
            format!(
                "{} (change {}.{} committed)",
                text("done"),
                csn["epoch"],
                csn["seq"]
            )
        }
        Output::Policy => format!("# policy version {}\n{}", value["version"], text("text")),
        Output::Export(out) => {
            write_private(&out, &text("text"))
                .map_err(|e| format!("cannot write {}: {e}; the identifier is still valid, export again to another path", out.display()))?;
            let mut message = format!(
                "identifier written to {} (generation {}, key {})",
                out.display(),
                value["generation"],
                if value["encrypted"] == serde_json::Value::Bool(true) {
                    "encrypted with the password"
                } else {
                    "NOT encrypted: anyone with the file can join"
                }
            );
            if let Some(ips) = value["allowed_ips"].as_array().filter(|a| !a.is_empty()) {
                let ips: Vec<&str> = ips.iter().filter_map(|v| v.as_str()).collect();
                message.push_str(&format!("; joins allowed only from {}", ips.join(", ")));
            }
            message
        }
        Output::Left if value["told"] == serde_json::Value::Bool(false) => format!(
            "{} left the cluster WITHOUT telling master {} (--force); the local database stays as last synchronised; \
             if that master returns, run `mxgate cluster delete {}` on it",
            text("left"),
            text("master"),
            text("left")
        ),
        Output::Left => format!(
            "{} left the cluster; master {} was told and no longer accepts its certificate; the local database stays as last synchronised",
            text("left"),
            text("master")
        ),
        Output::Created => format!(
            "cluster {} created; {} is its master (CID 1) at {}\npolicy: {}\nnext: mxgate cluster identifier export --out clusterid.txt",
            text("cluster_id"),
            text("master"),
            text("address"),
            text("policy_from")
        ),
        Output::Promoted => format!(
            "{} is now the master at epoch {} (change {}.{} committed); previous master {}; {}",
            text("master"),
            value["epoch"],
            value["epoch"],
            value["seq"],
            text("previous"),
            if value["handover"] == serde_json::Value::Bool(true) {
                "it handed over: nothing was lost".to_string()
            } else {
                format!(
                    "promised by {} of {} backends",
                    value["promises"].as_array().map_or(0, Vec::len),
                    value["backends"]
                )
            }
        ),
        Output::Synced => format!(
            "following master {} ({}) of epoch {}",
            text("master"),
            text("master_address"),
            value["epoch"]
        ),
        Output::BackendAdded => format!(
            "{} {} now follows {} (in this order; the master recorded it)",
            text("frontend"),
            text("label"),
            value["backends"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .map(|b| {
                            format!(
                                "{} ({})",
                                b["name"].as_str().unwrap_or("?"),
                                b["address"].as_str().unwrap_or("?")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        ),
        Output::Detached if value["told"] == serde_json::Value::Bool(false) => format!(
            "{} detached WITHOUT telling the master (unreachable); run `mxgate cluster delete {}` on the master; \
             this node holds no cluster state any more and routes by its own policy file",
            text("detached"),
            text("detached")
        ),
        Output::Detached => format!(
            "{} detached: the master was told; this node holds no cluster state any more and routes by its own policy file",
            text("detached")
        ),
        Output::Joined if value["cid"] == 0 => format!(
            "joined cluster {} as a frontend (device {}, uuid {}); master {}; {} change-log entries held in memory only; \
             it follows {}; add more with `mxgate cluster add-backend HOST[:PORT]`",
            text("cluster_id"),
            text("device_id"),
            text("uuid"),
            text("master"),
            value["entries"],
            text("master")
        ),
        Output::Joined => format!(
            "joined cluster {} as CID {} (device {}, uuid {}); master {}; {} change-log entries taken over",
            text("cluster_id"),
            value["cid"],
            text("device_id"),
            text("uuid"),
            text("master"),
            value["entries"]
        ),
    })
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: set it before writing.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}

/// The password in a file; one trailing newline is ignored.
pub fn read_password_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(format!("the password file {} is empty", path.display()));
    }
    Ok(text.to_string())
}

/// Asks on the terminal with echo off (`stty -echo`).
fn prompt(question: &str) -> Result<String, String> {
    let no_tty =
        |_| "no terminal to ask for the password on; give --password-file FILE".to_string();
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_tty)?;
    let handle = tty.try_clone().map_err(no_tty)?;
    let stty = |arg: &str| {
        if let Ok(input) = handle.try_clone() {
            let _ = std::process::Command::new("stty")
                .arg(arg)
                .stdin(input)
                .status();
        }
    };
    stty("-echo");
    let _ = tty.write_all(question.as_bytes());
    let mut line = String::new();
    let read = tty
        .try_clone()
        .map(|t| BufReader::new(t).read_line(&mut line));
    stty("echo");
    let _ = tty.write_all(b"\n");
    read.map_err(no_tty)?.map_err(|e| e.to_string())?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
}
