//! The client's host names for the member (XCLIENT `NAME`, `REVERSE_NAME`;
//! SPEC 4.3): the lookup ([`crate::dns::ClientNames`]) starts as the session
//! starts, runs as a task of its own beside the greeting and EHLO, and is
//! awaited only when a member connection needs the names (the first MAIL),
//! for at most `[dns] client_lookup_timeout`. The task is aborted when the
//! session ends without needing it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::AbortOnDropHandle;

use crate::dns::{ClientName, ClientNames};

/// The lookup of one session: not started, under way, or answered.
#[derive(Debug, Default)]
pub struct NameSlot {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Running(IpAddr, AbortOnDropHandle<ClientName>),
    Done(IpAddr, ClientName),
}

impl NameSlot {
    /// A slot whose lookup of `ip` starts now (none without `names`).
    pub fn start(names: Option<&Arc<ClientNames>>, ip: IpAddr) -> NameSlot {
        let state = match names {
            Some(names) => {
                State::Running(ip, AbortOnDropHandle::new(tokio::spawn(names.lookup(ip))))
            }
            None => State::Idle,
        };
        NameSlot { state }
    }

    /// The names of `ip`: the lookup's answer, awaited for at most `bound`
    /// (then `[TEMPUNAVAIL]`, and the lookup is dropped). A lookup of
    /// another address (the client changed by XCLIENT) starts afresh.
    /// Without `names` there is no lookup: `[UNAVAILABLE]`.
    pub async fn get(
        &mut self,
        names: Option<&Arc<ClientNames>>,
        ip: IpAddr,
        bound: Duration,
    ) -> ClientName {
        let Some(names) = names else {
            return ClientName::unavailable();
        };
        let state = std::mem::take(&mut self.state);
        let handle = match state {
            State::Done(done_ip, name) if done_ip == ip => {
                self.state = State::Done(ip, name.clone());
                return name;
            }
            State::Running(running_ip, handle) if running_ip == ip => handle,
            _ => AbortOnDropHandle::new(tokio::spawn(names.lookup(ip))),
        };
        // The lookup bounds itself; this bounds the wait should it not.
        let name = match tokio::time::timeout(bound, handle).await {
            Ok(Ok(name)) => name,
            Ok(Err(_)) | Err(_) => ClientName::temp_unavailable(),
        };
        self.state = State::Done(ip, name.clone());
        name
    }

    /// The answer when there is one by now, without waiting (the log line).
    pub async fn settled(&mut self) -> Option<&ClientName> {
        if let State::Running(ip, handle) = &mut self.state
            && handle.is_finished()
        {
            let ip = *ip;
            let name = handle
                .await
                .unwrap_or_else(|_| ClientName::temp_unavailable());
            self.state = State::Done(ip, name);
        }
        match &self.state {
            State::Done(_, name) => Some(name),
            _ => None,
        }
    }
}
