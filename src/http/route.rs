//! The member order of one client connection, cached across its requests.
//!
//! A GINA request's order depends only on the client's address, the address
//! it reached (both fixed for a connection), the routing snapshot (fixed for
//! a connection, see [`super::server`]) and member health. So each
//! connection keeps the last order it computed and reuses it while the
//! member table's health generation is unchanged and no passive back-off
//! has run out since ([`MemberTable::generation`],
//! [`MemberTable::next_backoff_end`]). A member marked failed, an active
//! check result, a back-off ended early by a success: each changes the
//! generation, so the next request routes afresh. With `affinity = "none"`
//! the order follows the members' load and is computed for every request.
//! The sticky cookie is applied per request on top of the cached order.
//!
//! [`MemberTable::generation`]: crate::routing::MemberTable::generation
//! [`MemberTable::next_backoff_end`]: crate::routing::MemberTable::next_backoff_end

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use super::HttpContext;
use super::upstream::MemberUpstream;
use crate::config::Affinity;
use crate::routing::Service;

/// One member a request may go to.
#[derive(Debug)]
pub struct Candidate {
    /// The member's name.
    pub name: Arc<str>,
    /// Its portal (`None` if this snapshot has none for it).
    pub upstream: Option<Arc<MemberUpstream>>,
}

/// Candidates in the order to try them.
pub type Order = Arc<[Candidate]>;

/// One connection's cached order (see the module docs).
#[derive(Debug, Default)]
pub struct RouteCache {
    slot: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    generation: u64,
    /// A back-off ending then may let a member back in.
    until: Option<Instant>,
    order: Order,
}

impl RouteCache {
    /// An empty cache.
    pub fn new() -> Self {
        RouteCache::default()
    }

    /// The order for a request from `client` to `dest` on this connection.
    pub fn order(&self, ctx: &HttpContext, client: IpAddr, dest: IpAddr) -> Order {
        let cacheable = ctx.router.policy().routing.affinity != Affinity::None;
        // Read before routing: a change while routing leaves an older
        // generation in the cache, so the next request routes again.
        let generation = ctx.members.generation();
        if cacheable {
            let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = slot.as_ref()
                && c.generation == generation
                && c.until.is_none_or(|until| Instant::now() < until)
            {
                return c.order.clone();
            }
        }
        let until = ctx.members.next_backoff_end(Service::Gina);
        let route = ctx.router.route_http(&ctx.members, client, Some(dest));
        let order: Order = route
            .order
            .into_iter()
            .map(|r| Candidate {
                upstream: ctx.upstreams.member(&r.member).cloned(),
                name: Arc::from(r.member),
            })
            .collect();
        if cacheable {
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
                generation,
                until,
                order: order.clone(),
            });
        }
        order
    }
}
