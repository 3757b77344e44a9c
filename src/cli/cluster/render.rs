//! The text `mxgate cluster ...` prints for each answer of the daemon (and
//! the identifier file `export` writes). Values from the daemon are escaped
//! one by one ([`escape`]); the caller escapes the whole text again with
//! its line breaks kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cluster::status::{ClusterStatus, Replication, render_replication, render_text};
use crate::text::escape;

/// How to print the daemon's answer.
pub(super) enum Output {
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

/// The text for `value`, the daemon's answer; `Export` also writes the file.
pub(super) fn render(value: &serde_json::Value, output: Output) -> Result<String, String> {
    let raw = |key: &str| value[key].as_str().unwrap_or_default().to_string();
    let text = |key: &str| escape(value[key].as_str().unwrap_or_default()).into_owned();
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
        Output::Policy => format!("# policy version {}\n{}", value["version"], raw("text")),
        Output::Export(out) => {
            write_private(&out, &raw("text"))
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
                let ips = escape(&ips.join(", ")).into_owned();
                message.push_str(&format!("; joins allowed only from {ips}"));
            }
            message
        }
        Output::Left if value["told"] == serde_json::Value::Bool(false) => format!(
            "{} left the cluster WITHOUT telling {} (--force); the local database stays as last synchronised; \
             if that master returns, run `mxgate cluster delete {}` on it",
            text("left"),
            match text("master") {
                name if name.is_empty() => "the master (none known)".to_owned(),
                name => format!("master {name}"),
            },
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
        Output::Promoted => {
            let names = |key: &str| {
                value[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|n| escape(n.as_str().unwrap_or("?")).into_owned())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let previous = match text("previous") {
                p if p.is_empty() => "none".to_string(),
                p => p,
            };
            let mut out = format!(
                "{} is now the master at epoch {} of {} voting backends; previous master {previous}",
                text("master"),
                value["epoch"],
                value["backends"]
            );
            if !names("removed").is_empty() {
                out.push_str(&format!(
                    "\n--force: kept {}; removed {} (their certificates are refused; what they committed after this node last heard from them is lost)",
                    names("kept"),
                    names("removed")
                ));
            }
            out
        }
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
                                escape(b["name"].as_str().unwrap_or("?")),
                                escape(b["address"].as_str().unwrap_or("?"))
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
            "joined cluster {} as a frontend (device {}, uuid {}); master {}; the cluster's state up to log index {} held in memory only; \
             it follows {}; add more with `mxgate cluster add-backend HOST[:PORT]`",
            text("cluster_id"),
            text("device_id"),
            text("uuid"),
            text("master"),
            value["entries"],
            text("master")
        ),
        Output::Joined => format!(
            "joined cluster {} as CID {} (device {}, uuid {}); master {}; the cluster's state up to log index {} taken over (the engine makes this node a voting backend once it has caught up)",
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
