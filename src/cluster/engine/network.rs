//! openraft's network over the control plane: every vote, append and
//! snapshot chunk is one request of the mutual-TLS HTTPS client
//! ([`crate::cluster::transport::send`]) to the peer's control-plane
//! listener, `POST /raft/vote`, `/raft/append` or `/raft/snapshot`, with
//! the node's own certificate; the peer's certificate must name the
//! address dialled. The body is openraft's request in JSON; the answer is
//! openraft's `Result` in JSON, so a refusal by the peer's engine comes
//! back typed ([`RemoteError`]). A peer that cannot be reached, or that
//! refuses this node's certificate, is [`Unreachable`]: openraft backs off
//! and tries again.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rustls::ClientConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Peer, Raft};
use crate::cluster::ClusterError;
use crate::cluster::api::{RaftRpc, Sender};
use crate::cluster::transport::{self, Outgoing, Route};

/// What every connection of the engine is made with: this node's client
/// identity, its advertise address, its name.
#[derive(Clone)]
pub struct Network {
    config: Arc<ClientConfig>,
    bind: IpAddr,
    name: String,
}

impl Network {
    /// The network of the node `name` with `config`, dialling from `bind`.
    pub fn new(config: Arc<ClientConfig>, bind: IpAddr, name: String) -> Network {
        Network { config, bind, name }
    }
}

impl RaftNetworkFactory<Raft> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &Peer) -> Connection {
        Connection {
            network: self.clone(),
            target,
            peer: node.clone(),
        }
    }
}

/// The engine's line to one peer.
pub struct Connection {
    network: Network,
    target: u64,
    peer: Peer,
}

type Failure<E> = RPCError<u64, Peer, E>;

impl Connection {
    async fn rpc<Req, Resp, E>(
        &self,
        rpc: RaftRpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Failure<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(request).map_err(|e| NetworkError::new(&e))?;
        let sender = Sender {
            epoch: 0,
            node: self.network.name.clone(),
            uptime: 0,
            master: None,
        };
        let outgoing = Outgoing {
            method: "POST",
            path: rpc.path(),
            content_type: "application/json",
            body: Bytes::from(body),
            headers: &[],
        };
        let route = Route {
            config: &self.network.config,
            bind: self.network.bind,
            target: &self.peer.address,
        };
        let answer = transport::send(route, &sender, outgoing, option.hard_ttl())
            .await
            .map_err(|e| Unreachable::new(&e))?;
        if answer.status != 200 {
            let refused = ClusterError::Refused {
                peer: self.peer.name.clone(),
                code: transport::refusal_code(&answer.body),
                reason: transport::error_text(&answer.body, answer.status),
            };
            return Err(Unreachable::new(&refused).into());
        }
        let result: Result<Resp, E> =
            serde_json::from_slice(&answer.body).map_err(|e| NetworkError::new(&e))?;
        result.map_err(|e| RemoteError::new_with_node(self.target, self.peer.clone(), e).into())
    }
}

impl RaftNetwork<Raft> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Raft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, Failure<RaftError<u64>>> {
        self.rpc(RaftRpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Raft>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, Failure<RaftError<u64, InstallSnapshotError>>> {
        self.rpc(RaftRpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, Failure<RaftError<u64>>> {
        self.rpc(RaftRpc::Vote, &rpc, &option).await
    }
}
