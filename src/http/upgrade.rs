//! Protocol upgrades (WebSocket and any other `Upgrade`) passed through.
//!
//! The request went to the member with `Upgrade` and `Connection: upgrade`;
//! when the member answers `101`, that answer goes to the client and both
//! connections are handed over by hyper. From then on the bytes are copied
//! both ways unchanged until either side closes, or the drain is aborted.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, info};

use super::server::Trackers;
use crate::shutdown::Shutdown;

/// Copies between the client's and the member's upgraded connections in a
/// task tracked for the drain.
pub fn splice(
    tasks: &Trackers,
    shutdown: Shutdown,
    client: OnUpgrade,
    member: OnUpgrade,
    member_name: String,
) {
    tasks.spawn(async move {
        let (client, member) = match tokio::try_join!(client, member) {
            Ok(pair) => pair,
            Err(e) => {
                debug!(member = %member_name, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut member = TokioIo::new(member);
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut member) => match copied {
                Ok((up, down)) => info!(member = %member_name, bytes_to_member = up, bytes_to_client = down, "upgraded connection closed"),
                Err(e) => debug!(member = %member_name, error = %e, "upgraded connection ended"),
            },
            _ = shutdown.aborted() => debug!(member = %member_name, "upgraded connection ended by shutdown"),
        }
    });
}
