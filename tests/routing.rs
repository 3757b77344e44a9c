//! Routing through the real daemon: stickiness, failover of only the failed
//! member's clients, affinity modes, weights and ingress.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::peers::SmtpSink;
use common::{
    Client, FakeMta, Mxgate, fakes, member, order_of, policy, policy_with, require, send_tagged,
    tag_of, tagged_body,
};

fn ip(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

/// One session from `client`: EHLO, one message tagged with the client's address, QUIT.
fn send_from(gw: &Mxgate, client: IpAddr) {
    send_tagged(client, gw.smtp_addr(), &client.to_string());
}

fn members_of(fakes: &[FakeMta], extra: &[(&str, &str)]) -> Vec<String> {
    fakes
        .iter()
        .map(|f| {
            let lines = extra
                .iter()
                .find(|(n, _)| *n == f.name)
                .map_or("", |(_, l)| *l);
            member(&f.name, f.addr, lines)
        })
        .collect()
}

/// For every client tag: how many messages each fake received from it.
fn deliveries(fakes: &[FakeMta]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for f in fakes {
        for m in f.messages() {
            let tag = tag_of(&m.data).unwrap_or_else(|| "untagged".into());
            *out.entry(tag)
                .or_default()
                .entry(f.name.clone())
                .or_default() += 1;
        }
    }
    out
}

/// The members the messages of `client` landed on, with counts.
fn landed(fakes: &[FakeMta], client: IpAddr) -> BTreeMap<String, usize> {
    deliveries(fakes)
        .remove(&client.to_string())
        .unwrap_or_default()
}

#[test]
fn sixty_clients_stick_to_their_explained_first_choice() {
    let fakes = fakes(&["gw1", "gw2", "gw3"]);
    let gw = Mxgate::start(&policy("", &members_of(&fakes, &[])));
    let clients: Vec<IpAddr> = (1..=60).map(|i| ip(1, 0, i)).collect();
    for _ in 0..3 {
        for &c in &clients {
            send_from(&gw, c);
        }
    }
    let got = deliveries(&fakes);
    let mut per_member: BTreeMap<String, usize> = BTreeMap::new();
    for &c in &clients {
        let members = got.get(&c.to_string()).cloned().unwrap_or_default();
        assert_eq!(
            members.len(),
            1,
            "client {c} landed on several members: {members:?}"
        );
        let (name, count) = members.iter().next().expect("one member");
        assert_eq!(
            *count, 3,
            "client {c}: {count} messages on {name}, expected 3"
        );
        let first = gw.first_choice(c).expect("first choice");
        assert_eq!(
            name, &first,
            "client {c} landed on {name}, route explain says {first}"
        );
        *per_member.entry(name.clone()).or_default() += 1;
    }
    eprintln!("clients per member: {per_member:?}");
    for f in &fakes {
        assert!(
            per_member.get(&f.name).copied().unwrap_or(0) > 0,
            "{} got no clients: {per_member:?}",
            f.name
        );
    }
    assert_eq!(
        got.values()
            .map(|m| m.values().sum::<usize>())
            .sum::<usize>(),
        180
    );
}

#[test]
fn killed_member_moves_only_its_own_clients_and_they_come_back() {
    let fakes = fakes(&["gw1", "gw2", "gw3"]);
    let text = policy_with("", &[("backoff", "\"1s\"")], &members_of(&fakes, &[]));
    let gw = Mxgate::start(&text);
    let clients: Vec<IpAddr> = (1..=30).map(|i| ip(1, 1, i)).collect();
    let orders: BTreeMap<IpAddr, Vec<String>> = clients
        .iter()
        .map(|&c| (c, order_of(&gw.explain(c))))
        .collect();
    for &c in &clients {
        send_from(&gw, c);
    }
    let before: BTreeMap<IpAddr, String> = clients
        .iter()
        .map(|&c| {
            let members = landed(&fakes, c);
            assert_eq!(members.len(), 1, "{c}: {members:?}");
            let name = members.keys().next().expect("member").clone();
            assert_eq!(name, orders[&c][0], "{c} is not on its first choice");
            (c, name)
        })
        .collect();

    // Kill the member with the most clients.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in before.values() {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let victim = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(n, _)| (*n).to_owned())
        .expect("victim");
    let victim_fake = fakes
        .iter()
        .find(|f| f.name == victim)
        .expect("victim fake");
    let victim_addr = victim_fake.addr;
    victim_fake.kill();
    let victims: Vec<IpAddr> = clients
        .iter()
        .copied()
        .filter(|c| before[c] == victim)
        .collect();
    assert!(!victims.is_empty());

    for &c in &clients {
        send_from(&gw, c);
    }
    for &c in &clients {
        let members = landed(&fakes, c);
        if before[&c] == victim {
            let second = &orders[&c][1];
            assert_eq!(
                members.get(second),
                Some(&1),
                "{c} (client of killed {victim}) should land on its second choice {second}: {members:?}"
            );
        } else {
            assert_eq!(
                members.len(),
                1,
                "{c} (client of {}) moved: {members:?}",
                before[&c]
            );
            assert_eq!(
                members.get(&before[&c]),
                Some(&2),
                "{c} should stay on {}: {members:?}",
                before[&c]
            );
        }
    }
    assert!(
        gw.wait_log(&format!("member={victim}"), Duration::from_secs(1))
            .is_some(),
        "the failure of {victim} should be logged"
    );

    // Bring the member back on the same address (smtp-sink binds with
    // SO_REUSEADDR); after the 1 s back-off, explain lists it again and its
    // clients come back.
    if !require("smtp-sink") {
        return;
    }
    let sink = SmtpSink::start_at(victim_addr);
    let probe = victims[0];
    assert!(
        common::eventually(Duration::from_secs(10), || order_of(&gw.explain(probe))
            .first()
            == Some(&victim)),
        "route explain for {probe} should list {victim} first again after the back-off: {}",
        gw.explain(probe)
    );
    for &c in &clients {
        send_from(&gw, c);
    }
    let tags: Vec<String> = sink
        .messages()
        .iter()
        .filter_map(|m| tag_of(m.as_bytes()))
        .collect();
    let expected: BTreeSet<String> = victims.iter().map(ToString::to_string).collect();
    assert_eq!(
        tags.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "exactly the clients of {victim} should come back to it"
    );
    assert_eq!(tags.len(), victims.len());
    for &c in &clients {
        if before[&c] != victim {
            assert_eq!(
                landed(&fakes, c).get(&before[&c]),
                Some(&3),
                "{c} should still be on {}",
                before[&c]
            );
        }
    }
}

#[test]
fn affinity_source_groups_a_slash_24() {
    let fakes = fakes(&["gw1", "gw2", "gw3"]);
    let routing = "affinity = \"source\"\nclient_prefix_v4 = 24";
    let gw = Mxgate::start(&policy(routing, &members_of(&fakes, &[])));
    let mut firsts = BTreeSet::new();
    for net in 0..6u8 {
        let group: Vec<IpAddr> = (1..=8).map(|h| ip(2, net, h * 29)).collect();
        let explained = gw.explain(group[0]);
        assert_eq!(
            explained["client_prefix"],
            format!("127.2.{net}.0/24"),
            "{explained}"
        );
        let first = explained["order"][0]["member"]
            .as_str()
            .expect("first")
            .to_owned();
        for &c in &group {
            send_from(&gw, c);
            assert_eq!(gw.first_choice(c).as_deref(), Some(first.as_str()), "{c}");
        }
        for &c in &group {
            let members = landed(&fakes, c);
            assert_eq!(
                members.keys().collect::<Vec<_>>(),
                vec![&first],
                "{c} in 127.2.{net}.0/24: {members:?}"
            );
        }
        firsts.insert(first);
    }
    eprintln!("/24 groups landed on {firsts:?}");
    assert!(
        firsts.len() > 1,
        "six /24 groups all on one member: {firsts:?}"
    );
}

#[test]
fn affinity_none_spreads_concurrent_sessions_of_one_client() {
    let fakes = fakes(&["gw1", "gw2", "gw3"]);
    let gw = Mxgate::start(&policy("affinity = \"none\"", &members_of(&fakes, &[])));
    let client = ip(3, 0, 1);
    // Three sessions at once, each holding its member connection after RCPT.
    let mut sessions: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::greeted_from(client, gw.smtp_addr());
            assert!(c.cmd("EHLO client.example").ok());
            let r = c.cmd("MAIL FROM:<s@source.test>");
            assert!(r.ok(), "MAIL: {r}");
            let r = c.cmd("RCPT TO:<r@example.com>");
            assert!(r.ok(), "RCPT: {r}");
            c
        })
        .collect();
    let status = gw.status();
    let active: Vec<u64> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["active_sessions"].as_u64().expect("active"))
        .collect();
    assert_eq!(
        active,
        vec![1, 1, 1],
        "one active session per member: {status}"
    );
    for (i, c) in sessions.iter_mut().enumerate() {
        let r = c.cmd("DATA");
        assert_eq!(r.code, 354);
        c.send(tagged_body(&format!("s{i}")).as_bytes());
        c.send(b"\r\n.\r\n");
        let r = c.reply();
        assert!(r.ok(), "end of data: {r}");
        assert_eq!(c.cmd("QUIT").code, 221);
    }
    let got = deliveries(&fakes);
    let members: BTreeSet<String> = got.values().flat_map(|m| m.keys().cloned()).collect();
    assert_eq!(
        members.len(),
        3,
        "three concurrent sessions should reach three members: {got:?}"
    );

    // Sessions in sequence from many clients also spread (ties keep the rendezvous order).
    for i in 1..=12 {
        send_from(&gw, ip(3, 1, i));
    }
    for f in &fakes {
        assert!(
            f.messages().len() > 1,
            "{} got only {} messages",
            f.name,
            f.messages().len()
        );
    }
    // The member connection (which holds the count) closes just after the
    // client's QUIT is answered.
    assert!(
        common::eventually(Duration::from_secs(10), || {
            gw.status()["members"]
                .as_array()
                .expect("members")
                .iter()
                .all(|m| m["active_sessions"] == 0)
        }),
        "no member session should stay counted after QUIT"
    );
}

#[test]
fn drained_and_non_ingress_members_get_no_public_sessions() {
    let fakes = fakes(&["gw1", "gw2", "gw3", "gw4"]);
    let extra = [("gw1", "weight = 0"), ("gw2", "ingress = false")];
    let gw = Mxgate::start(&policy("", &members_of(&fakes, &extra)));
    let clients: Vec<IpAddr> = (1..=30).map(|i| ip(4, 0, i)).collect();
    for &c in &clients {
        send_from(&gw, c);
    }
    assert_eq!(fakes[0].connections(), 0, "drained gw1 was connected to");
    assert_eq!(
        fakes[1].connections(),
        0,
        "non-ingress gw2 was connected to"
    );
    assert_eq!(fakes[2].messages().len() + fakes[3].messages().len(), 30);
    assert!(
        !fakes[2].messages().is_empty() && !fakes[3].messages().is_empty(),
        "gw3 and gw4 should share"
    );

    let e = gw.explain(clients[0]);
    let order = order_of(&e);
    assert!(!order.iter().any(|m| m == "gw1" || m == "gw2"), "{e}");
    let reason = |name: &str| {
        e["excluded"]
            .as_array()
            .expect("excluded")
            .iter()
            .find(|x| x["member"] == name)
            .and_then(|x| x["reason"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(reason("gw1").as_deref(), Some("weight 0 (drained)"), "{e}");
    assert_eq!(reason("gw2").as_deref(), Some("not ingress"), "{e}");
}
