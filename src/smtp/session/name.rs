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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::client_name::{Lookup, NameLookup};
    use std::time::Instant;

    /// Name servers that never answer.
    struct Silent;

    impl NameLookup for Silent {
        fn reverse(&self, _: IpAddr) -> Lookup<'_, (String, u32)> {
            Box::pin(std::future::pending())
        }
        fn addresses<'a>(&'a self, _: &'a str) -> Lookup<'a, (IpAddr, u32)> {
            Box::pin(std::future::pending())
        }
    }

    fn silent() -> Arc<ClientNames> {
        Arc::new(ClientNames::with_lookup(
            Some(Arc::new(Silent)),
            Arc::new(Instant::now),
        ))
    }

    #[tokio::test]
    async fn a_session_that_ends_first_leaves_no_lookup_behind() {
        let names = silent();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let slot = NameSlot::start(Some(&names), ip);
        // The task holds the lookup (and so `names`) while it runs.
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&names), 2);
        drop(slot);
        let mut released = false;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if Arc::strong_count(&names) == 1 {
                released = true;
                break;
            }
        }
        assert!(released, "the aborted lookup still holds its state");
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded_and_the_answer_kept() {
        let names = silent();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let mut slot = NameSlot::start(Some(&names), ip);
        let bound = Duration::from_millis(300);
        let started = tokio::time::Instant::now();
        let name = slot.get(Some(&names), ip, bound).await;
        assert_eq!(name, ClientName::temp_unavailable());
        assert!(started.elapsed() <= bound + Duration::from_millis(10));
        // Asked again: the answer stands, no new wait.
        let again = tokio::time::Instant::now();
        assert_eq!(slot.get(Some(&names), ip, bound).await, name);
        assert_eq!(again.elapsed(), Duration::ZERO);
        assert_eq!(slot.settled().await, Some(&name));
        // Without a lookup service: [UNAVAILABLE], as before lookups existed.
        let mut none = NameSlot::start(None, ip);
        assert_eq!(none.get(None, ip, bound).await, ClientName::unavailable());
    }
}
