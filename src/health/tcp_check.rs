//! The TCP check (a connect within the time limit, then close) and the
//! connect every other check starts with.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::HostPort;

/// Connects to `addr` within `limit`, with TCP_NODELAY; a host name is
/// resolved by the system resolver. The error is the check's failure reason.
pub async fn connect(addr: &HostPort, limit: Duration) -> Result<TcpStream, String> {
    let connect = async {
        match addr.ip() {
            Some(ip) => TcpStream::connect(SocketAddr::new(ip, addr.port)).await,
            None => TcpStream::connect((addr.host.as_str(), addr.port)).await,
        }
    };
    let stream = match timeout(limit, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("connect to {addr} failed: {e}")),
        Err(_) => {
            return Err(format!(
                "connect to {addr}: no answer within {}",
                crate::config::format_duration(&limit)
            ));
        }
    };
    // Checks write a handful of small commands: no Nagle delay on them.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The TCP check: passes when the connect succeeds within `limit`.
pub async fn check(addr: &HostPort, limit: Duration) -> Result<(), String> {
    connect(addr, limit).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(addr: SocketAddr) -> HostPort {
        HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    #[tokio::test]
    async fn connect_passes_and_refused_fails() {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let open = listener.local_addr().map(hp);
        let Ok(open) = open else { panic!("addr") };
        assert_eq!(check(&open, Duration::from_secs(2)).await, Ok(()));
        drop(listener);
        let err = check(&open, Duration::from_secs(2)).await;
        assert!(
            err.as_ref()
                .is_err_and(|e| e.starts_with(&format!("connect to {open} failed"))),
            "{err:?}"
        );
    }
}
