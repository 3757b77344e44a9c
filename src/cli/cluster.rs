//! `mxgate cluster ...`: argument definitions and the client side of each
//! command (read files and passwords, ask the daemon through
//! [`super::call`], print the answer).
//! Everything printed but `--json` is escaped ([`crate::text`]): each value
//! from the daemon on its own ([`render`]), then the whole text, line breaks
//! kept.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::Exit;
use super::call::{ANSWER_WITHIN, call};
use super::output::{failed, print_error, print_raw, print_text};
use crate::admin::Request;
use crate::cluster::Role;
use crate::cluster::admin::ClusterRequest;

mod render;
use render::Output;

/// `mxgate cluster` subcommands (the `command` fields are the nested subcommands).
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make this node master of a new cluster; keeps its data (its policy becomes the cluster's).
    ///
    /// Makes the cluster's CA and this node's certificate (the key never
    /// leaves the node) and turns the node's policy file into version 1 of
    /// the replicated policy. The node routes as before.
    #[command(after_help = "Example:\n  mxgate cluster create -c /etc/mxgate/mxgate.toml")]
    Create,
    /// Identifiers: the file a new node needs to join (export, protect, rotate).
    #[command(
        after_help = "Example:\n  mxgate cluster identifier export --out clusterid.txt --password-file pw"
    )]
    Identifier {
        #[command(subcommand)]
        command: IdentifierCommand,
    },
    /// Join a cluster (wipes this node's cluster state; the master's wins).
    ///
    /// Run on the new node, its daemon running with a [cluster] section, with
    /// the identifier exported on the master. A backend takes over the
    /// cluster's state and votes once it has caught up; a frontend keeps no
    /// cluster database and follows the backends.
    #[command(
        after_help = "Example:\n  mxgate cluster join --identifier clusterid.txt --master 192.0.2.10:7025 --password-file pw"
    )]
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
    /// The members table: each node's role, state, replication lag and last contact.
    #[command(after_help = "Example:\n  mxgate cluster status --wide")]
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Show COMMENT and LOCATION too.
        #[arg(long)]
        wide: bool,
    },
    /// The last change each backend applied: who changed what, when.
    ///
    /// A change is named by its CSN: the master's term, the log index, the
    /// node it came from and the time.
    #[command(after_help = "Example:\n  mxgate cluster replication")]
    Replication {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// On the master: remove a member (its certificate is refused at once).
    #[command(after_help = "Example:\n  mxgate cluster delete gw3")]
    Delete {
        /// Name or cluster number.
        member: String,
    },
    /// Remove this node from the cluster; its database stays as last synchronised.
    #[command(after_help = "Example:\n  mxgate cluster leave")]
    Leave {
        /// Leave even when the master cannot be told (disaster recovery: the master is lost).
        #[arg(long)]
        force: bool,
    },
    /// The replicated policy (cluster.toml): apply a new one, show the current one.
    #[command(after_help = "Example:\n  mxgate cluster policy apply /etc/mxgate/cluster.toml")]
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Injection ACLs: the members a member may inject mail into.
    #[command(after_help = "Example:\n  mxgate cluster inject set gw1 --to gw2,gw3")]
    Inject {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// LFT sync targets: the members a member's large attachments are copied to.
    #[command(after_help = "Example:\n  mxgate cluster lft set gw1 --to gw2")]
    Lft {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Member details: a comment and a location shown by `cluster status --wide`.
    #[command(after_help = "Example:\n  mxgate cluster member set gw2 --location Zurich")]
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Make this backend the master now (a planned handover; epoch + 1).
    ///
    /// Not needed when the master dies: the backends elect a new one by
    /// themselves while a majority of them is up. Without --force the master
    /// checks that this node holds every change and hands over; --force is
    /// disaster recovery when a majority of the backends is lost for good.
    #[command(after_help = "Example (maintenance of the master):\n  mxgate cluster promote")]
    Promote {
        /// Master reachable: hand over without losing anything. Master lost:
        /// promote even without a majority of the backends.
        #[arg(long)]
        force: bool,
    },
    /// Follow the master that HOST[:PORT] names (only needed when no member is reachable).
    #[command(after_help = "Example:\n  mxgate cluster sync --master 192.0.2.11:7025")]
    Sync {
        /// A node's control-plane address, HOST[:PORT] (port 7025 by default).
        #[arg(long)]
        master: String,
    },
    /// Frontend: use one more backend (failover without a virtual IP); the master records it.
    #[command(after_help = "Example:\n  mxgate cluster add-backend 192.0.2.12:7025")]
    AddBackend {
        /// The backend's control-plane address, HOST[:PORT] (port 7025 by default).
        backend: String,
    },
    /// Frontend: leave the cluster and start again with an empty state.
    #[command(after_help = "Example:\n  mxgate cluster detach")]
    Detach,
}

/// `cluster identifier ...`.
#[derive(Debug, Subcommand)]
pub enum IdentifierCommand {
    /// Write clusterid.txt (CA certificate, master address, enrolment certificate and key).
    ///
    /// The key is encrypted with the password (PKCS#8, PBKDF2); the file is
    /// written with mode 0600. Anyone with the file and its password can
    /// join until you rotate.
    #[command(
        after_help = "Example:\n  mxgate cluster identifier export --out clusterid.txt --password-file pw --allow-ip 192.0.2.11"
    )]
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
    #[command(
        after_help = "Example:\n  mxgate cluster identifier protect --allow-ip 192.0.2.11 192.0.2.12"
    )]
    Protect {
        /// Allowed source addresses.
        #[arg(long, num_args = 1.., required_unless_present = "clear")]
        allow_ip: Vec<IpAddr>,
        /// Lift the limit.
        #[arg(long, conflicts_with = "allow_ip")]
        clear: bool,
    },
    /// Invalidate every identifier exported before.
    #[command(after_help = "Example:\n  mxgate cluster identifier rotate")]
    Rotate,
}

/// `cluster policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// On the master: validate and replicate a new policy.
    ///
    /// Done once a majority of the backends holds it; every node then
    /// applies it live.
    #[command(after_help = "Example:\n  mxgate cluster policy apply cluster.toml")]
    Apply {
        /// The cluster.toml to apply.
        file: PathBuf,
    },
    /// Print the replicated policy.
    #[command(after_help = "Example:\n  mxgate cluster policy show > cluster.toml")]
    Show,
}

/// `cluster inject set` / `cluster lft set`.
#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// On the master: set the list of MEMBER.
    #[command(after_help = "Example:\n  mxgate cluster inject set gw1 --to gw2,gw3")]
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
    #[command(
        after_help = "Example:\n  mxgate cluster member set gw2 --comment 'rack 4' --location Zurich"
    )]
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
        Ok((request, output)) => ask(config_path, request, output),
        Err(message) => {
            print_error(&format!("mxgate: {message}"));
            Exit::Usage.into()
        }
    }
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
            let parsed = crate::cluster::identifier::parse(&text).map_err(|e| {
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

/// Asks the daemon and prints its answer as `output` says.
fn ask(config_path: &Path, request: ClusterRequest, output: Output) -> ExitCode {
    let value = match call(config_path, &Request::Cluster(request), ANSWER_WITHIN) {
        Ok(value) => value,
        Err(error) => return failed(&error).into(),
    };
    let json = matches!(output, Output::Json);
    match render::render(&value, output) {
        Ok(text) if json => print_raw(text.trim_end()).into(),
        Ok(text) => print_text(&text).into(),
        Err(e) => {
            print_error(&format!("mxgate: {e}"));
            Exit::Failed.into()
        }
    }
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
