//! The probe: every [`PROBE_EVERY`], each node asks every other member
//! `GET /hello` and records the answer ([`Contact`]): when it last
//! answered, how far it applied the state, its version and protocol, and
//! its clock against this one. `cluster status` is made from these and the
//! engine's progress; a member that stops answering shows as in error
//! within a few seconds.
//!
//! A peer that refuses this node's certificate as revoked means this node
//! was removed (deleted, or left out by `promote --force`): it stops its
//! engine and says how to rejoin. A backend stands for election only after
//! a round that reached a majority of the voters (a pre-vote of sorts): a
//! node removed while it was down learns that before it could disturb the
//! cluster, and a node cut off does not raise its epoch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::api::{Hello, PROTOCOL};
use super::node::ClusterNode;
use super::server::{Reply, to_reply};
use super::{ClusterError, time};

/// How often every node asks every other member how it is.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe waits for its answer.
const PROBE_WAIT: Duration = Duration::from_millis(1500);

/// What this node last heard from another member.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    /// Unix time of the last answer.
    pub at: Option<u64>,
    /// The last failure, cleared by the next answer.
    pub error: Option<String>,
    /// The last answer.
    pub hello: Option<Hello>,
    /// Its clock minus this node's, in milliseconds.
    pub clock_offset_ms: Option<i64>,
    /// Unix time since when it has been behind this node's applied state.
    pub behind_since: Option<u64>,
}

/// `GET /hello`.
pub fn serve_hello(node: &ClusterNode) -> Reply {
    to_reply(&hello(node))
}

/// This node's [`Hello`].
pub fn hello(node: &ClusterNode) -> Hello {
    let leader = node.leader();
    let last_index = node
        .raft()
        .and_then(|r| r.metrics().last_log_index)
        .unwrap_or(0);
    Hello {
        name: node.name.clone(),
        epoch: node.epoch(),
        master: leader.as_ref().map(|l| l.name.clone()).unwrap_or_default(),
        master_address: leader.map(|l| l.address).unwrap_or_default(),
        applied: node.replica().index(),
        last_index,
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: PROTOCOL,
        uptime: node.started.elapsed().as_secs(),
        clock_ms: time::now_ms(),
    }
}

/// Probes every other member until `token` is cancelled.
pub async fn run(node: Arc<ClusterNode>, token: CancellationToken) {
    loop {
        round(&node).await;
        if let Some(engine) = node.raft() {
            // Like Raft's pre-vote: a backend stands for election only
            // while it reaches a majority of the voters, so one that is cut
            // off does not raise its epoch and depose the master on return.
            engine
                .raft()
                .runtime_config()
                .elect(reaches_majority(&node));
        }
        export_metrics(&node);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

/// Whether the last round reached a majority of the voting backends (this
/// node included).
pub fn reaches_majority(node: &ClusterNode) -> bool {
    let (reachable, voters, _) = super::propose::reach(node, None);
    reachable * 2 > voters
}

async fn round(node: &Arc<ClusterNode>) {
    // The certificate this round's calls present: a refusal of it says
    // nothing about a certificate the node took since (a join that
    // completed while a call was under way).
    let presented = certificate(node);
    let replica = node.replica();
    let mut calls = tokio::task::JoinSet::new();
    for member in replica.state.live_members().filter(|m| m.name != node.name) {
        let node = node.clone();
        let (name, address) = (member.name.clone(), member.address.clone());
        calls.spawn(async move {
            let sent = Instant::now();
            let sent_ms = time::now_ms();
            let answer = node
                .call(&address, "GET", "/hello", None::<&()>, PROBE_WAIT)
                .await
                .and_then(|a| a.json::<Hello>(&name));
            let rtt = sent.elapsed();
            (name, answer, sent_ms, rtt)
        });
    }
    while let Some(Ok((name, answer, sent_ms, rtt))) = calls.join_next().await {
        if let Err(ClusterError::Revoked { peer }) = &answer {
            if certificate(node) == presented {
                removed(node, &name, peer).await;
            }
            return;
        }
        record(node, &name, answer, sent_ms, rtt);
    }
}

/// The certificate this node presents now, if it has one.
fn certificate(node: &ClusterNode) -> Option<String> {
    node.clustered().ok().map(|(_, local)| local.cert_pem)
}

fn record(
    node: &ClusterNode,
    name: &str,
    answer: super::Result<Hello>,
    sent_ms: u64,
    rtt: Duration,
) {
    let applied_here = node.replica().index();
    let Ok(mut contacts) = node.contacts.lock() else {
        return;
    };
    let contact = contacts.entry(name.to_string()).or_default();
    match answer {
        Ok(hello) => {
            let now = time::now();
            let midpoint = sent_ms + u64::try_from(rtt.as_millis() / 2).unwrap_or(0);
            contact.clock_offset_ms = Some(clamp_i64(hello.clock_ms) - clamp_i64(midpoint));
            contact.behind_since = match (hello.applied < applied_here, contact.behind_since) {
                (false, _) => None,
                (true, Some(since)) => Some(since),
                (true, None) => Some(now),
            };
            node.saw_epoch(hello.epoch);
            contact.at = Some(now);
            contact.error = None;
            contact.hello = Some(hello);
        }
        Err(e) => contact.error = Some(e.to_string()),
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A peer refuses this node's certificate as revoked: this node was
/// removed from the cluster.
async fn removed(node: &Arc<ClusterNode>, name: &str, peer: &str) {
    let why = format!(
        "removed from the cluster: {name} ({peer}) refuses this node's certificate (it was deleted, or left out by `cluster promote --force`); \
         to take part again run `mxgate cluster leave --force`, then join with a new identifier"
    );
    warn!(reason = %why, "this node is no longer in the cluster; its engine stops");
    node.stop_engine().await;
    if let Err(e) = node.detach_once(&why) {
        error!(error = %e, "cannot record that this node was removed");
    }
}

/// `mxgate_cluster_epoch` and `mxgate_cluster_replication_lag_seconds`.
fn export_metrics(node: &ClusterNode) {
    crate::metrics::cluster_epoch(node.epoch());
    let now = time::now();
    let contacts = node.contacts.lock().map(|c| c.clone()).unwrap_or_default();
    for (name, contact) in contacts {
        let lag = contact
            .behind_since
            .map_or(0, |since| now.saturating_sub(since));
        crate::metrics::cluster_replication_lag(&name, lag);
    }
    crate::metrics::cluster_replication_lag(&node.name, 0);
}

/// `cluster sync --master HOST[:PORT]`: asks that node which master it
/// follows. The engine finds the master by itself; this shows whom a node
/// that this one cannot reach otherwise follows.
pub async fn sync(node: &Arc<ClusterNode>, target: &str) -> super::Result<Hello> {
    node.member()?;
    let hello: Hello = node
        .call(
            target,
            "GET",
            "/hello",
            None::<&()>,
            Duration::from_secs(10),
        )
        .await?
        .json(target)?;
    if hello.master.is_empty() {
        return Err(ClusterError::Invalid(format!(
            "{target} knows no master now (an election may be under way); try again in a few seconds"
        )));
    }
    node.saw_epoch(hello.epoch);
    Ok(hello)
}
