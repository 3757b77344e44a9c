//! What `mxgate status` and `mxgate route explain` report.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::daemon::Gateway;
use crate::routing::Route;

/// `mxgate status --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Node name.
    pub node: String,
    /// mxgate version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// `standalone` (clustering comes with the cluster control plane).
    pub mode: String,
    /// Listeners: SMTP first, then GINA HTTP (`kind`).
    pub listeners: Vec<ListenerStatus>,
    /// Members with health.
    pub members: Vec<MemberStatus>,
}

/// One listener in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// Name.
    pub name: String,
    /// Bound address.
    pub listen: String,
    /// Sessions open now.
    pub active_sessions: u64,
    /// Sessions since start.
    pub sessions_total: u64,
    /// `smtp`, or `http` for a GINA listener (sessions are its connections).
    #[serde(default = "smtp_kind")]
    pub kind: String,
}

fn smtp_kind() -> String {
    "smtp".to_owned()
}

/// One member in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Name.
    pub name: String,
    /// SMTP upstream.
    pub smtp: Option<String>,
    /// Weight.
    pub weight: u32,
    /// Takes public sessions.
    pub ingress: bool,
    /// Usable for routing now.
    pub healthy: bool,
    /// Why not, or the last failure.
    pub reason: Option<String>,
    /// Sessions relayed to it now.
    pub active_sessions: u64,
}

/// Collects the status of the running daemon.
pub fn collect(gateway: &Gateway) -> Status {
    let snapshot = gateway.snapshot();
    let config = &snapshot.config;
    let listeners = config
        .smtp
        .iter()
        .map(|l| (&l.name, l.listen, "smtp"))
        .chain(config.http.iter().map(|l| (&l.name, l.listen, "http")))
        .map(|(name, listen, kind)| {
            let (active, total) = gateway.active_sessions(name);
            ListenerStatus {
                name: name.clone(),
                listen: gateway.bound_addr(name).unwrap_or(listen).to_string(),
                active_sessions: active,
                sessions_total: total,
                kind: kind.to_owned(),
            }
        })
        .collect();
    let members = config
        .policy
        .members
        .iter()
        .map(|m| {
            let health = gateway.members.health(&m.name);
            MemberStatus {
                name: m.name.clone(),
                smtp: m.smtp.as_ref().map(ToString::to_string),
                weight: m.weight,
                ingress: m.ingress,
                healthy: health.healthy,
                reason: health.reason,
                active_sessions: gateway.members.active_sessions(&m.name),
            }
        })
        .collect();
    Status {
        node: config.node.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_s: gateway.started.elapsed().as_secs(),
        mode: "standalone".to_owned(),
        listeners,
        members,
    }
}

/// Routes `client` as a session on `listener` (default: the first SMTP
/// listener) would be routed; on a GINA listener, as its HTTP requests are.
pub fn explain(
    gateway: &Gateway,
    client: IpAddr,
    dest: Option<IpAddr>,
    listener: Option<&str>,
) -> Result<Route, String> {
    let snapshot = gateway.snapshot();
    let dest = match dest {
        Some(dest) => dest,
        None => {
            let name = match listener {
                Some(name) => name.to_owned(),
                None => snapshot
                    .config
                    .smtp
                    .first()
                    .map(|l| l.name.clone())
                    .ok_or("no SMTP listener configured; give --dest")?,
            };
            let addr = gateway
                .bound_addr(&name)
                .ok_or_else(|| format!("no listener named {name:?}"))?;
            if addr.ip().is_unspecified() {
                return Err(format!(
                    "listener {name} listens on {}, so the destination depends on the address a client reaches; give --dest",
                    addr.ip()
                ));
            }
            addr.ip()
        }
    };
    // A GINA listener routes like a public session over members with a `gina` upstream.
    let is_http = listener.is_some_and(|name| snapshot.config.http.iter().any(|l| l.name == name));
    if is_http {
        return Ok(snapshot
            .router
            .route_http(&gateway.members, client, Some(dest)));
    }
    Ok(snapshot.router.route(&gateway.members, client, Some(dest)))
}

/// Text form of `status`.
pub fn render_text(status: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} (mxgate {}), {}, up {}s",
        status.node, status.version, status.mode, status.uptime_s
    );
    let _ = writeln!(
        out,
        "\nLISTENER         ADDRESS                  ACTIVE    TOTAL  KIND"
    );
    for l in &status.listeners {
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:>6} {:>8}  {}",
            l.name, l.listen, l.active_sessions, l.sessions_total, l.kind
        );
    }
    let _ = writeln!(
        out,
        "\nMEMBER           SMTP                     WEIGHT INGRESS HEALTH  ACTIVE  REASON"
    );
    for m in &status.members {
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:>6} {:<7} {:<7} {:>6}  {}",
            m.name,
            m.smtp.as_deref().unwrap_or("-"),
            m.weight,
            if m.ingress { "yes" } else { "no" },
            if m.healthy { "up" } else { "DOWN" },
            m.active_sessions,
            m.reason.as_deref().unwrap_or("")
        );
    }
    out
}
