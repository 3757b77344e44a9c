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
use super::upstream::{MemberUpstream, Upstreams};
use crate::config::Affinity;
use crate::routing::{MemberTable, Router, Service};

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
        self.order_with(&ctx.router, &ctx.members, &ctx.upstreams, client, dest)
    }

    fn order_with(
        &self,
        router: &Router,
        members: &MemberTable,
        upstreams: &Upstreams,
        client: IpAddr,
        dest: IpAddr,
    ) -> Order {
        let cacheable = router.policy().routing.affinity != Affinity::None;
        // Read before routing: a change while routing leaves an older
        // generation in the cache, so the next request routes again.
        let generation = members.generation();
        if cacheable {
            let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = slot.as_ref()
                && c.generation == generation
                && c.until.is_none_or(|until| Instant::now() < until)
            {
                return c.order.clone();
            }
        }
        let until = members.next_backoff_end(Service::Gina);
        let route = router.route_http(members, client, Some(dest));
        let order: Order = route
            .order
            .into_iter()
            .map(|r| Candidate {
                upstream: upstreams.member(&r.member).cloned(),
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    const POLICY: &str = r#"
[routing]
affinity = "source-destination"

[members.a]
gina = "127.0.0.1:18081"

[members.b]
gina = "127.0.0.1:18082"
"#;

    fn names(order: &Order) -> Vec<String> {
        order.iter().map(|c| c.name.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_cached_order_follows_health_and_back_off() {
        let policy =
            crate::config::load_policy_str(Path::new("cluster.toml"), POLICY).expect("policy");
        let upstreams = Upstreams::new(&policy).expect("upstreams");
        let router = Router::new(Arc::new(policy));
        let table = MemberTable::new();
        let cache = RouteCache::new();
        let client: IpAddr = "127.0.0.9".parse().expect("ip");
        let dest: IpAddr = "127.0.0.1".parse().expect("ip");
        let route = |t: &MemberTable| cache.order_with(&router, t, &upstreams, client, dest);

        let first = route(&table);
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|c| c.upstream.is_some()));
        // Unchanged health: the same order, not routed again.
        assert!(Arc::ptr_eq(&first, &route(&table)));

        // The first member fails: the next request no longer gets it.
        let failed = first[0].name.to_string();
        table.mark_service_failed(&failed, Service::Gina, "refused", Duration::from_secs(10));
        let second = route(&table);
        assert_eq!(names(&second), vec![first[1].name.to_string()]);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(Arc::ptr_eq(&second, &route(&table)));

        // Its back-off runs out: back first, without any other event.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(names(&route(&table)), names(&first));

        // A success that ends a back-off early is seen at once too.
        table.mark_service_failed(&failed, Service::Gina, "refused", Duration::from_secs(60));
        assert_eq!(route(&table).len(), 1);
        table.mark_service_ok(&failed, Service::Gina);
        assert_eq!(names(&route(&table)), names(&first));
    }
}
