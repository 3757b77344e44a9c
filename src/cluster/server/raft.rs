//! `POST /raft/vote`, `/raft/append` and `/raft/snapshot`: openraft's
//! requests from the other backends, handed to this node's engine. The
//! answer is the engine's `Result` in JSON, so a refusal by the engine
//! reaches the sender typed ([`crate::cluster::engine::network`]).

use std::sync::Arc;

use hyper::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Refusal, Reply, to_reply};
use crate::cluster::api::{RaftRpc, RefusalCode};
use crate::cluster::node::ClusterNode;
use crate::cluster::{MemberRecord, Role};

/// Hands `body` to the engine as `rpc` from `member`.
pub async fn serve(
    node: &Arc<ClusterNode>,
    member: &MemberRecord,
    rpc: RaftRpc,
    body: &[u8],
) -> Reply {
    if member.role != Role::Backend {
        return Err(Refusal::coded(
            StatusCode::FORBIDDEN,
            RefusalCode::NotMember,
            format!(
                "{} is a frontend; only backends take part in the engine",
                member.name
            ),
        ));
    }
    let engine = node.raft().ok_or_else(|| {
        Refusal::new(
            StatusCode::CONFLICT,
            format!(
                "{} runs no consensus engine (it is in no cluster, or no longer)",
                node.name
            ),
        )
    })?;
    let raft = engine.raft();
    match rpc {
        RaftRpc::Vote => reply(raft.vote(parse(body)?).await),
        RaftRpc::Append => reply(raft.append_entries(parse(body)?).await),
        RaftRpc::Snapshot => reply(raft.install_snapshot(parse(body)?).await),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        Refusal::coded(
            StatusCode::BAD_REQUEST,
            RefusalCode::BadRequest,
            format!("bad engine request: {e}"),
        )
    })
}

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Reply {
    to_reply(&result)
}
