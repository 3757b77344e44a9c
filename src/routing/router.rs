//! [`Router`]: from (client, destination, live member table) to a [`Route`].
//!
//! Built once per policy snapshot (a reload builds a new one). A decision
//! takes the member table's lock once, walks the members in policy order,
//! sorts each into the candidate order or the excluded list with a reason,
//! then sorts the candidates (SPEC section 5). It allocates only the result
//! vectors and their names.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::time::Instant;

use super::explain::{Excluded, ExtensionsReport, MemberExtensions, Ranked, Route, Verdict};
use super::hash::{AffinityKey, client_prefix, member_hash, rank_cmp, rendezvous_score};
use super::service::Service;
use super::table::{Down, MemberState, MemberStatus, MemberTable};
use crate::config::{Affinity, Member, Policy};
use crate::smtp::proto::Extensions;

/// Routing over one policy snapshot.
#[derive(Debug)]
pub struct Router {
    policy: Arc<Policy>,
    /// Every member's `addresses`, with the member's index in `policy.members`.
    /// Config validation guarantees no overlap, so the first match is the only one.
    sources: Vec<(IpNet, usize)>,
    /// Indices into `policy.members`, sorted by name, for lookups by name.
    by_name: Vec<usize>,
}

/// Why a member is not a candidate.
enum Exclusion<'a> {
    NotIngress,
    NotInInjectTo(&'a str),
    NoSmtp,
    NoGina,
    Drained,
    Down(Down<'a>),
}

impl fmt::Display for Exclusion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::NotIngress => f.write_str("not ingress"),
            Exclusion::NotInInjectTo(source) => write!(f, "not in {source}'s inject_to"),
            Exclusion::NoSmtp => f.write_str("no smtp upstream"),
            Exclusion::NoGina => f.write_str("no gina upstream"),
            Exclusion::Drained => f.write_str("weight 0 (drained)"),
            Exclusion::Down(down) => write!(f, "down: {down}"),
        }
    }
}

impl Router {
    /// Prepares routing for `policy` (address index for source members).
    pub fn new(policy: Arc<Policy>) -> Self {
        let sources = policy
            .members
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.addresses.iter().map(move |net| (canonical_net(*net), i)))
            .collect();
        let mut by_name: Vec<usize> = (0..policy.members.len()).collect();
        by_name.sort_by(|&a, &b| policy.members[a].name.cmp(&policy.members[b].name));
        Router {
            policy,
            sources,
            by_name,
        }
    }

    /// The policy this router routes by.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The member whose `addresses` contain `client`.
    pub fn source_member(&self, client: IpAddr) -> Option<&str> {
        self.source_index(client)
            .map(|i| self.policy.members[i].name.as_str())
    }

    /// Orders the candidates for a session from `client` to `dest`.
    pub fn route(&self, table: &MemberTable, client: IpAddr, dest: Option<IpAddr>) -> Route {
        self.route_at(table, client, dest, Instant::now())
    }

    /// Orders the candidates for a GINA (HTTP) request from `client` to
    /// `dest`: the same rendezvous order and health as a public SMTP session
    /// (a client that is a member is still routed as public: there is no
    /// injection over HTTP), over the `ingress` members with a `gina` upstream.
    pub fn route_http(&self, table: &MemberTable, client: IpAddr, dest: Option<IpAddr>) -> Route {
        self.decide(table, client, dest, None, Service::Gina, Instant::now())
    }

    /// Health and sessions of every policy member, in policy order, for
    /// `mxgate status` (unlike [`MemberTable::snapshot`], members the table has
    /// never seen are listed too).
    pub fn status(&self, table: &MemberTable) -> Vec<MemberStatus> {
        self.policy
            .members
            .iter()
            .map(|m| MemberStatus {
                name: m.name.clone(),
                health: table.health(&m.name),
                active_sessions: table.active_sessions(&m.name),
            })
            .collect()
    }

    /// The optional extensions to offer a client at `client`: those every
    /// candidate of its session offers (the healthy ingress members, or the
    /// healthy members of its `inject_to`), a member whose extensions are
    /// not yet known counting as offering none; none without candidates.
    pub fn extensions(&self, table: &MemberTable, client: IpAddr) -> Extensions {
        self.offer(table, self.source_index(client))
    }

    /// [`Router::extensions`] for a public client (not a member): what the
    /// SMTP listeners advertise to the internet.
    pub fn public_extensions(&self, table: &MemberTable) -> Extensions {
        self.offer(table, None)
    }

    fn offer(&self, table: &MemberTable, source: Option<usize>) -> Extensions {
        let mut offered = None;
        self.each_candidate(table, source, |_, known| {
            offered = Some(
                offered
                    .unwrap_or(Extensions::ALL)
                    .and(known.unwrap_or_default()),
            );
        });
        offered.unwrap_or_default()
    }

    /// [`Router::extensions`] with each candidate's own, for `route explain`.
    pub fn explain_extensions(&self, table: &MemberTable, client: IpAddr) -> ExtensionsReport {
        let mut members = Vec::new();
        self.each_candidate(table, self.source_index(client), |m, offers| {
            members.push(MemberExtensions {
                member: m.name.clone(),
                offers,
            });
        });
        ExtensionsReport {
            offered: self.extensions(table, client),
            members,
        }
    }

    /// Calls `visit` with each SMTP candidate for a session from the
    /// member at index `source` (`None`: public) and what it offers.
    fn each_candidate(
        &self,
        table: &MemberTable,
        source: Option<usize>,
        mut visit: impl FnMut(&Member, Option<Extensions>),
    ) {
        let source = source.map(|i| &self.policy.members[i]);
        let now = Instant::now();
        table.with_states(|states| {
            for m in &self.policy.members {
                let state = states.get(m.name.as_str());
                if exclusion(m, source, Service::Smtp, state, now).is_none() {
                    visit(m, state.and_then(MemberState::extensions));
                }
            }
        });
    }

    /// [`Router::route`] at a given time (tests drive the clock).
    pub(super) fn route_at(
        &self,
        table: &MemberTable,
        client: IpAddr,
        dest: Option<IpAddr>,
        now: Instant,
    ) -> Route {
        let source = self.source_index(client).map(|i| &self.policy.members[i]);
        self.decide(table, client, dest, source, Service::Smtp, now)
    }

    /// The decision shared by SMTP and HTTP: eligibility for `source` and
    /// the `service` needed (SMTP sessions need `smtp`, GINA requests `gina`),
    /// that service's health, then rendezvous order (or load for `none`).
    fn decide(
        &self,
        table: &MemberTable,
        client: IpAddr,
        dest: Option<IpAddr>,
        source: Option<&Member>,
        service: Service,
        now: Instant,
    ) -> Route {
        let routing = &self.policy.routing;
        let members = &self.policy.members;
        let key = AffinityKey::new(routing, client, dest);

        let mut order = Vec::with_capacity(members.len());
        let mut excluded = Vec::new();
        table.with_states(|states| {
            for m in members {
                let state = states.get(m.name.as_str());
                match exclusion(m, source, service, state, now) {
                    Some(why) => excluded.push(Excluded {
                        member: m.name.clone(),
                        reason: why.to_string(),
                    }),
                    None => order.push(Ranked {
                        member: m.name.clone(),
                        score: rendezvous_score(member_hash(key.as_bytes(), &m.name), m.weight),
                        healthy: true,
                    }),
                }
            }
            order.sort_by(|a, b| rank_cmp(&a.member, a.score, &b.member, b.score));
            if routing.affinity == Affinity::None {
                self.order_by_load(&mut order, states);
            }
        });

        let verdict = match source {
            Some(s) if s.inject_to.is_empty() => Verdict::InjectionDenied,
            _ if order.is_empty() => Verdict::Unavailable,
            _ => Verdict::Route,
        };
        Route {
            source_member: source.map(|s| s.name.clone()),
            order,
            excluded,
            verdict,
            client,
            client_prefix: client_prefix(routing, client),
            dest,
            affinity: routing.affinity,
            key,
            extensions: None,
        }
    }

    /// Affinity `none`: re-sorts `order` (already in rendezvous order) by
    /// active sessions per unit of weight, fewest first. The sort is stable,
    /// so equally loaded members stay in rendezvous order.
    fn order_by_load(&self, order: &mut [Ranked], states: &HashMap<String, MemberState>) {
        for r in order.iter_mut() {
            let active = states.get(r.member.as_str()).map_or(0, MemberState::active);
            let weight = self.member(&r.member).map_or(0, |m| m.weight);
            // Candidates have weight > 0; `active` stays far below 2^53.
            // `0.0 - x` rather than `-x`: an idle member scores 0, not -0.
            r.score = 0.0 - active as f64 / f64::from(weight.max(1));
        }
        order.sort_by(|a, b| b.score.total_cmp(&a.score));
    }

    fn member(&self, name: &str) -> Option<&Member> {
        let members = &self.policy.members;
        self.by_name
            .binary_search_by(|&i| members[i].name.as_str().cmp(name))
            .ok()
            .map(|pos| &members[self.by_name[pos]])
    }

    fn source_index(&self, client: IpAddr) -> Option<usize> {
        let client = client.to_canonical();
        self.sources
            .iter()
            .find(|(net, _)| net.contains(&client))
            .map(|&(_, i)| i)
    }
}

/// Why `m` is no candidate for a session from `source` (`None`: public), or
/// `None` when it is one. Eligibility first, then configuration, then health.
fn exclusion<'a>(
    m: &Member,
    source: Option<&'a Member>,
    service: Service,
    state: Option<&'a MemberState>,
    now: Instant,
) -> Option<Exclusion<'a>> {
    match source {
        None if !m.ingress => return Some(Exclusion::NotIngress),
        Some(s) if !s.inject_to.contains(&m.name) => {
            return Some(Exclusion::NotInInjectTo(&s.name));
        }
        _ => {}
    }
    match service {
        Service::Smtp if m.smtp.is_none() => return Some(Exclusion::NoSmtp),
        Service::Gina if m.gina.is_none() => return Some(Exclusion::NoGina),
        _ => {}
    }
    if m.weight == 0 {
        return Some(Exclusion::Drained);
    }
    state
        .and_then(|s| s.service_down_at(service, now))
        .map(Exclusion::Down)
}

/// An `addresses` entry with IPv4-mapped IPv6 networks written as IPv4, to
/// match canonical client addresses.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new_assert(IpAddr::V4(v4), v6.prefix_len() - 96),
            None => net,
        },
        _ => net,
    }
}
