//! Property tests of the routing invariants (SPEC section 5): determinism,
//! minimal disruption when members leave, fail or join, weights respected,
//! client prefixes grouping clients.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::tests::{member, policy, policy_as_given};
use super::*;
use crate::config::{Affinity, Member, Policy};

/// 2 to 7 members with distinct names and weights 1..=1000.
fn members() -> impl Strategy<Value = Vec<Member>> {
    prop::collection::btree_set("[a-z][a-z0-9-]{0,8}", 2..8).prop_flat_map(
        |names: BTreeSet<String>| {
            let n = names.len();
            prop::collection::vec(1u32..=1000, n).prop_map(move |weights| {
                names
                    .iter()
                    .zip(weights)
                    .map(|(name, w)| member(name, w))
                    .collect()
            })
        },
    )
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from_bits(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from_bits(a))),
    ]
}

/// Sessions: (client, destination).
fn sessions() -> impl Strategy<Value = Vec<(IpAddr, Option<IpAddr>)>> {
    prop::collection::vec((addr(), prop::option::of(addr())), 1..150)
}

fn affinity() -> impl Strategy<Value = Affinity> {
    prop_oneof![Just(Affinity::SourceDestination), Just(Affinity::Source)]
}

fn order(router: &Router, table: &MemberTable, s: (IpAddr, Option<IpAddr>)) -> Vec<String> {
    router
        .route(table, s.0, s.1)
        .order
        .into_iter()
        .map(|r| r.member)
        .collect()
}

fn without(order: &[String], name: &str) -> Vec<String> {
    order.iter().filter(|m| *m != name).cloned().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Same inputs, same order: across calls, across routers, and whatever
    /// order the policy lists the members in.
    #[test]
    fn determinism(ms in members(), aff in affinity(), sessions in sessions()) {
        let table = MemberTable::new();
        let a = Router::new(policy(aff, ms.clone()));
        let mut reversed = ms;
        reversed.reverse();
        let b = Router::new(policy_as_given(aff, reversed));
        for s in sessions {
            let first = a.route(&table, s.0, s.1);
            prop_assert_eq!(&first, &a.route(&table, s.0, s.1));
            prop_assert_eq!(&first.order, &b.route(&table, s.0, s.1).order);
        }
    }

    /// Removing or marking down one member moves only its own clients, and
    /// the rest of every order is untouched; they come back when it recovers.
    #[test]
    fn minimal_disruption_on_leave_and_failure(
        ms in members(), aff in affinity(), sessions in sessions(), pick in any::<prop::sample::Index>(),
    ) {
        let gone = ms[pick.index(ms.len())].name.clone();
        let table = MemberTable::new();
        let full = Router::new(policy(aff, ms.clone()));
        let rest: Vec<Member> = ms.iter().filter(|m| m.name != gone).cloned().collect();
        let reduced = Router::new(policy(aff, rest));
        let before: Vec<Vec<String>> = sessions.iter().map(|s| order(&full, &table, *s)).collect();

        for (s, old) in sessions.iter().zip(&before) {
            let new = order(&reduced, &table, *s);
            if old[0] != gone {
                prop_assert_eq!(&new[0], &old[0], "a client of another member moved");
            }
            prop_assert_eq!(&new, &without(old, &gone));
        }

        table.mark_failed(&gone, "connect refused", Duration::from_secs(3600));
        for (s, old) in sessions.iter().zip(&before) {
            prop_assert_eq!(order(&full, &table, *s), without(old, &gone));
        }
        table.mark_ok(&gone);
        for (s, old) in sessions.iter().zip(&before) {
            prop_assert_eq!(&order(&full, &table, *s), old, "did not come back after recovery");
        }
    }

    /// Adding a member only moves clients onto the new member.
    #[test]
    fn minimal_disruption_on_join(
        ms in members(), aff in affinity(), sessions in sessions(), weight in 1u32..=1000,
    ) {
        let table = MemberTable::new();
        let old = Router::new(policy(aff, ms.clone()));
        let mut grown = ms;
        grown.push(member("NEW", weight));
        let new = Router::new(policy(aff, grown));
        for s in sessions {
            let before = order(&old, &table, s);
            let after = order(&new, &table, s);
            prop_assert!(after[0] == before[0] || after[0] == "NEW");
            prop_assert_eq!(without(&after, "NEW"), before);
        }
    }

    /// With `client_prefix_v4 = 24` / `client_prefix_v6 = 64`, every client
    /// of one prefix gets the same order.
    #[test]
    fn prefixes_group_clients(
        ms in members(), aff in affinity(), base4 in any::<u32>(), base6 in any::<u128>(),
        lows in prop::collection::vec(any::<u64>(), 32), dest in prop::option::of(addr()),
    ) {
        let table = MemberTable::new();
        let mut p: Policy = (*policy(aff, ms)).clone();
        p.routing.client_prefix_v4 = 24;
        p.routing.client_prefix_v6 = 64;
        let router = Router::new(Arc::new(p));

        let net4 = base4 & 0xffff_ff00;
        let want = order(&router, &table, (IpAddr::V4(Ipv4Addr::from_bits(net4)), dest));
        for host in 0..=255u32 {
            let c = IpAddr::V4(Ipv4Addr::from_bits(net4 | host));
            prop_assert_eq!(&order(&router, &table, (c, dest)), &want);
            let mapped = IpAddr::V6(Ipv4Addr::from_bits(net4 | host).to_ipv6_mapped());
            prop_assert_eq!(&order(&router, &table, (mapped, dest)), &want);
        }
        let net6 = base6 & !u128::from(u64::MAX);
        let want = order(&router, &table, (IpAddr::V6(Ipv6Addr::from_bits(net6)), dest));
        for low in lows {
            let c = IpAddr::V6(Ipv6Addr::from_bits(net6 | u128::from(low)));
            prop_assert_eq!(&order(&router, &table, (c, dest)), &want);
        }
    }
}

/// Each member's share of first choices over 20000 deterministic clients.
fn shares(ms: Vec<Member>) -> Vec<(String, f64)> {
    const CLIENTS: u32 = 20_000;
    let router = Router::new(policy(Affinity::Source, ms));
    let table = MemberTable::new();
    let members = &router.policy().members;
    let mut counts = vec![0u32; members.len()];
    for i in 0..CLIENTS {
        let client = IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + i));
        let route = router.route(&table, client, None);
        let first = route.first_choice().unwrap();
        let idx = members.iter().position(|m| m.name == first).unwrap();
        counts[idx] += 1;
    }
    members
        .iter()
        .zip(counts)
        .map(|(m, c)| (m.name.clone(), f64::from(c) / f64::from(CLIENTS)))
        .collect()
}

#[test]
fn weights_100_200_100_give_25_50_25() {
    let got = shares(vec![
        member("gw1", 100),
        member("gw2", 200),
        member("gw3", 100),
    ]);
    for ((name, share), want) in got.iter().zip([0.25, 0.5, 0.25]) {
        assert!((share - want).abs() <= 0.03, "{name}: {share} vs {want}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// First-choice shares follow the weights within 3 percentage points.
    #[test]
    fn weights_are_respected(weights in prop::collection::vec(1u32..=1000, 2..=4)) {
        let ms: Vec<Member> = weights.iter().enumerate().map(|(i, w)| member(&format!("m{i}"), *w)).collect();
        let total: u32 = weights.iter().sum();
        for ((name, share), w) in shares(ms).iter().zip(&weights) {
            let want = f64::from(*w) / f64::from(total);
            prop_assert!((share - want).abs() <= 0.03, "{}: {} vs {}", name, share, want);
        }
    }
}
