//! Unit tests: fixed test vectors, verdicts, exclusion reasons, member table.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    Affinity, DnsPolicy, HealthPolicy, HostPort, LftPolicy, Member, Policy, ProxyProtocol,
    RoutingPolicy, UpstreamPolicy, UpstreamTls,
};

use super::hash::*;
use super::*;

pub(super) fn member(name: &str, weight: u32) -> Member {
    Member {
        name: name.to_owned(),
        smtp: Some(HostPort {
            host: "127.0.0.1".into(),
            port: 10025,
        }),
        gina: None,
        weight,
        ingress: true,
        addresses: Vec::new(),
        inject_to: Vec::new(),
        lft_sync_to: Vec::new(),
        comment: None,
        location: None,
    }
}

pub(super) fn policy(affinity: Affinity, mut members: Vec<Member>) -> Arc<Policy> {
    members.sort_by(|a, b| a.name.cmp(&b.name));
    policy_as_given(affinity, members)
}

/// A policy with members in the given order (config sorts them; routing must not care).
pub(super) fn policy_as_given(affinity: Affinity, members: Vec<Member>) -> Arc<Policy> {
    Arc::new(Policy {
        routing: RoutingPolicy {
            affinity,
            client_prefix_v4: 32,
            client_prefix_v6: 64,
            max_attempts: 3,
        },
        upstream: UpstreamPolicy {
            xclient: true,
            proxy_protocol: ProxyProtocol::Off,
            tls: UpstreamTls::Opportunistic,
            connect_timeout: Duration::from_secs(5),
            greeting_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            backoff: Duration::from_secs(10),
            tls_ca_file: None,
            tls_insecure_skip_verify: false,
        },
        health: HealthPolicy {
            interval: Duration::from_secs(5),
            rise: 2,
            fall: 3,
            timeout: Duration::from_secs(5),
            smtp_check: crate::config::SmtpCheck::Smtp,
            gina_check: crate::config::GinaCheck::Http,
            http_path: "/".to_owned(),
            starttls: false,
        },
        dns: DnsPolicy {
            domains: Vec::new(),
            nameservers: Vec::new(),
            interval: Duration::from_secs(300),
            ..DnsPolicy::default()
        },
        lft: LftPolicy {
            threshold: 10 << 20,
            max_message_size: 64 << 20,
        },
        members,
    })
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The four members of the test vectors.
fn vector_members() -> Vec<Member> {
    vec![
        member("gw1", 100),
        member("gw2", 100),
        member("gw3", 200),
        member("gw4", 50),
    ]
}

/// Test vectors with `client_prefix_v4 = 24`, `client_prefix_v6 = 64`.
/// (affinity, client, dest, key hex, [(member, hash, score bits)], order)
type Vector = (
    Affinity,
    &'static str,
    Option<&'static str>,
    &'static str,
    [(&'static str, u64, u64); 4],
    [&'static str; 4],
);

#[rustfmt::skip]
const VECTORS: &[Vector] = &[
    (Affinity::SourceDestination, "192.0.2.10", Some("198.51.100.25"), "04c000020004c6336419",
     [("gw1", 0x83eb_b72a_960d_eb65, 0x4062_dab8_8c36_d552), ("gw2", 0x5a61_91cc_1127_f355, 0x4058_0318_baa2_f6e8),
      ("gw3", 0x2b3c_c005_ab26_5cb1, 0x405c_1d2e_aaee_516b), ("gw4", 0x5458_3784_8949_c750, 0x4046_8461_7c7d_0aee)],
     ["gw1", "gw3", "gw2", "gw4"]),
    (Affinity::SourceDestination, "192.0.2.10", None, "04c000020000",
     [("gw1", 0x26d9_c81f_63a0_96e6, 0x404a_84d3_88ed_6988), ("gw2", 0x6d01_c947_910a_976e, 0x405d_4834_0118_474b),
      ("gw3", 0x985a_3061_f981_98c5, 0x4078_15eb_472d_4826), ("gw4", 0x059c_d297_35c1_68da, 0x402a_2d47_caf8_de16)],
     ["gw3", "gw2", "gw1", "gw4"]),
    (Affinity::SourceDestination, "2001:db8:1:2:3:4:5:6", Some("2001:db8::25"),
     "0620010db80001000200000000000000000620010db8000000000000000000000025",
     [("gw1", 0x6a51_ef86_67ac_eb88, 0x405c_734a_e4e6_bd5b), ("gw2", 0x3aec_e6fe_f46d_064b, 0x4051_04fc_8344_789c),
      ("gw3", 0xd2bd_ed9d_fba0_e966, 0x4090_1032_36a4_8e4f), ("gw4", 0xc197_3e7a_9fcc_313a, 0x4066_5dec_f24f_81f1)],
     ["gw3", "gw4", "gw1", "gw2"]),
    (Affinity::SourceDestination, "::ffff:203.0.113.7", Some("198.51.100.25"), "04cb00710004c6336419",
     [("gw1", 0x3a44_13ff_fcb0_4fe8, 0x4050_e3db_6dbc_4008), ("gw2", 0xfb16_fec0_d11b_6ab6, 0x40b4_2b80_74ed_7b7d),
      ("gw3", 0x87e2_ca52_13ba_0eca, 0x4073_bc67_6091_f54f), ("gw4", 0xdd43_9163_4c1b_0cbd, 0x4075_6e2c_0038_713e)],
     ["gw2", "gw4", "gw3", "gw1"]),
    (Affinity::Source, "192.0.2.10", Some("198.51.100.25"), "04c0000200",
     [("gw1", 0x50f7_16d5_73c4_8569, 0x4055_b79e_5ac5_0dd5), ("gw2", 0x49d1_131c_6201_4f16, 0x4054_1a61_63b2_aace),
      ("gw3", 0x4ad2_e505_6bec_7796, 0x4064_5313_c26d_80f0), ("gw4", 0xac89_ad67_f8cf_140b, 0x405f_ae47_177b_db50)],
     ["gw3", "gw4", "gw1", "gw2"]),
    (Affinity::Source, "2001:db8:1:2:3:4:5:6", Some("2001:db8::25"), "0620010db8000100020000000000000000",
     [("gw1", 0x9de3_1f40_48ef_9051, 0x4069_dd31_4f37_20c3), ("gw2", 0xabd4_1d31_1746_3b6c, 0x406f_5a7c_033a_5d3d),
      ("gw3", 0x3089_74e6_39d9_ae7a, 0x405e_119d_f260_cb73), ("gw4", 0x3125_0f00_2b40_4698, 0x403e_4ba9_64b1_ec38)],
     ["gw2", "gw1", "gw3", "gw4"]),
    (Affinity::Source, "10.0.0.1", Some("10.0.0.100"), "040a000000",
     [("gw1", 0x8a80_6160_9f04_b503, 0x4064_5936_37c8_41b6), ("gw2", 0x696a_cd00_5b38_2e43, 0x405c_2d49_1740_422d),
      ("gw3", 0x25a7_6353_90e0_2c41, 0x405a_15ff_993a_87fb), ("gw4", 0xf8e0_0cc3_2407_5f78, 0x409b_adb0_de82_fde4)],
     ["gw4", "gw1", "gw2", "gw3"]),
];

fn with_prefixes(p: &Policy, v4: u8, v6: u8) -> Arc<Policy> {
    let mut p = p.clone();
    p.routing.client_prefix_v4 = v4;
    p.routing.client_prefix_v6 = v6;
    Arc::new(p)
}

/// Changing the key encoding, the hash, the score or the order rule fails here:
/// that would break the cross-node, cross-version guarantee (SPEC section 5).
#[test]
fn test_vectors_are_stable() {
    for (affinity, client, dest, key_hex, hashes, order) in VECTORS {
        let p = with_prefixes(&policy(*affinity, vector_members()), 24, 64);
        let route =
            Router::new(Arc::clone(&p)).route(&MemberTable::new(), ip(client), dest.map(ip));
        assert_eq!(route.key.to_string(), *key_hex, "key of {client} {dest:?}");
        for (name, hash, score_bits) in hashes {
            let h = member_hash(route.key.as_bytes(), name);
            assert_eq!(h, *hash, "hash of {name} for {client}");
            let weight = p.member(name).unwrap().weight;
            assert_eq!(
                rendezvous_score(h, weight).to_bits(),
                *score_bits,
                "score of {name}"
            );
        }
        let got: Vec<&str> = route.order.iter().map(|r| r.member.as_str()).collect();
        assert_eq!(got, order, "order for {client} {dest:?}");
    }
}

#[test]
fn xxh3_matches_the_reference_implementation() {
    // XXH3-64 of the empty input with seed 0, from the xxHash reference.
    assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06_8005_38d3_94c2);
    // The streaming member hash equals the one-shot hash of the concatenation.
    let long = "m".repeat(300);
    for name in ["gw1", "", long.as_str()] {
        let key = [TAG_V4, 192, 0, 2, 0, TAG_NO_DEST];
        let mut input = key.to_vec();
        input.push(SEPARATOR);
        input.extend_from_slice(name.as_bytes());
        assert_eq!(member_hash(&key, name), xxhash_rust::xxh3::xxh3_64(&input));
    }
}

#[test]
fn key_encoding() {
    let p = with_prefixes(&policy(Affinity::SourceDestination, vec![]), 24, 48);
    let key = |c: &str, d: Option<&str>| AffinityKey::new(&p.routing, ip(c), d.map(ip)).to_string();
    assert_eq!(
        key("192.0.2.77", Some("198.51.100.1")),
        "04c000020004c6336401"
    );
    assert_eq!(key("192.0.2.77", None), "04c000020000");
    // IPv4-mapped client and destination count as IPv4.
    assert_eq!(
        key("::ffff:192.0.2.77", Some("::ffff:198.51.100.1")),
        "04c000020004c6336401"
    );
    assert_eq!(
        key("2001:db8:aaaa:bbbb::1", None),
        "0620010db8aaaa0000000000000000000000"
    );
    let src = with_prefixes(&policy(Affinity::Source, vec![]), 40, 200);
    let k = AffinityKey::new(&src.routing, ip("192.0.2.77"), Some(ip("198.51.100.1")));
    assert_eq!(
        k.as_bytes(),
        [TAG_V4, 192, 0, 2, 77],
        "prefix above 32 counts as 32"
    );
    let zero = with_prefixes(&policy(Affinity::Source, vec![]), 0, 0);
    assert_eq!(
        AffinityKey::new(&zero.routing, ip("192.0.2.77"), None).to_string(),
        "0400000000"
    );
    assert_eq!(
        client_prefix(&p.routing, ip("::ffff:10.1.2.3")).to_string(),
        "10.1.2.0/24"
    );
}

#[test]
fn unit_interval_is_strictly_inside_0_1() {
    assert_eq!(unit_interval(0), 2f64.powi(-54));
    assert_eq!(
        unit_interval(0x7ff),
        2f64.powi(-54),
        "only the top 53 bits count"
    );
    assert_eq!(unit_interval(0x800), 2f64.powi(-53));
    assert_eq!(unit_interval(u64::MAX), 1.0 - 2f64.powi(-53));
    assert!(rendezvous_score(u64::MAX, u32::MAX).is_finite());
    assert_eq!(rendezvous_score(0x1234_5678_9abc_def0, 0), 0.0);
}

#[test]
fn fixed_ln_agrees_with_std_within_one_ulp() {
    let close = |u: f64| {
        let (a, b) = (fixed_ln(u), u.ln());
        assert!(
            a.to_bits().abs_diff(b.to_bits()) <= 1,
            "ln({u:e}): {a:e} vs {b:e}"
        );
    };
    for u in [
        2f64.powi(-54),
        2f64.powi(-53),
        0.5,
        std::f64::consts::FRAC_1_SQRT_2,
        0.75,
        0.999_999,
        1.0 - 2f64.powi(-53),
    ] {
        close(u);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..100_000 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        close(unit_interval(x));
    }
    assert!(fixed_ln(0.0).is_nan() && fixed_ln(-1.0).is_nan());
}

#[test]
fn ties_break_by_name() {
    assert_eq!(rank_cmp("a", 1.0, "b", 1.0), std::cmp::Ordering::Less);
    assert_eq!(rank_cmp("b", 2.0, "a", 1.0), std::cmp::Ordering::Less);
}

// ---- verdicts and exclusion reasons ----

fn names(route: &Route) -> Vec<&str> {
    route.order.iter().map(|r| r.member.as_str()).collect()
}

fn reason<'a>(route: &'a Route, member: &str) -> &'a str {
    let e = route.excluded.iter().find(|e| e.member == member);
    e.map_or("(not excluded)", |e| e.reason.as_str())
}

/// gw1 (injects into gw2), gw2, gw3 (not ingress), gw4 (no smtp), gw5 (drained), gw6 (injects nowhere).
fn mixed() -> Arc<Policy> {
    let mut gw1 = member("gw1", 100);
    gw1.addresses = vec!["10.0.0.1/32".parse().unwrap()];
    gw1.inject_to = vec!["gw2".into()];
    let mut gw3 = member("gw3", 100);
    gw3.ingress = false;
    let mut gw4 = member("gw4", 100);
    gw4.smtp = None;
    let mut gw6 = member("gw6", 100);
    gw6.addresses = vec![
        "10.0.6.0/24".parse().unwrap(),
        "2001:db8:6::/48".parse().unwrap(),
    ];
    policy(
        Affinity::SourceDestination,
        vec![gw1, member("gw2", 100), gw3, gw4, member("gw5", 0), gw6],
    )
}

#[test]
fn public_route_excludes_with_reasons() {
    let table = MemberTable::new();
    let now = tokio::time::Instant::now();
    table.mark_failed_at(
        "gw6",
        Service::Smtp,
        "connect refused",
        Duration::from_secs(8),
        now,
    );
    let route = Router::new(mixed()).route_at(&table, ip("192.0.2.1"), None, now);
    assert_eq!(route.verdict, Verdict::Route);
    assert_eq!(route.source_member, None);
    let mut got = names(&route);
    got.sort();
    assert_eq!(got, ["gw1", "gw2"]);
    assert!(route.order.iter().all(|r| r.healthy));
    assert_eq!(reason(&route, "gw3"), "not ingress");
    assert_eq!(reason(&route, "gw4"), "no smtp upstream");
    assert_eq!(reason(&route, "gw5"), "weight 0 (drained)");
    assert_eq!(
        reason(&route, "gw6"),
        "down: connect refused (back-off 8s left)"
    );
    assert_eq!(route.first_choice(), Some(route.order[0].member.as_str()));
    assert_eq!(route.verdict.reply_code(), None);
}

#[test]
fn injection_is_confined_to_inject_to() {
    let router = Router::new(mixed());
    let table = MemberTable::new();
    let route = router.route(&table, ip("10.0.0.1"), Some(ip("192.0.2.25")));
    assert_eq!(route.source_member.as_deref(), Some("gw1"));
    assert_eq!(route.verdict, Verdict::Route);
    assert_eq!(names(&route), ["gw2"]);
    for other in ["gw1", "gw3", "gw4", "gw5", "gw6"] {
        assert_eq!(reason(&route, other), "not in gw1's inject_to");
    }
    // gw2 down: injection never falls back to the healthy ingress members.
    table.mark_failed("gw2", "421 shutting down", Duration::from_secs(30));
    let route = router.route(&table, ip("10.0.0.1"), None);
    assert_eq!(route.verdict, Verdict::Unavailable);
    assert!(route.order.is_empty());
    assert!(reason(&route, "gw2").starts_with("down: 421 shutting down (back-off "));
    assert_eq!(route.verdict.reply_code(), Some((451, "4.4.1")));
    assert!(
        route
            .render_text()
            .contains("verdict:  all candidates down (451 4.4.1)")
    );
}

#[test]
fn empty_inject_to_is_denied() {
    let router = Router::new(mixed());
    for client in ["10.0.6.77", "2001:db8:6:1::9", "::ffff:10.0.6.1"] {
        let route = router.route(&MemberTable::new(), ip(client), None);
        assert_eq!(route.source_member.as_deref(), Some("gw6"), "{client}");
        assert_eq!(route.verdict, Verdict::InjectionDenied);
        assert!(route.order.is_empty());
        assert_eq!(route.excluded.len(), 6);
        assert_eq!(reason(&route, "gw2"), "not in gw6's inject_to");
        assert_eq!(route.verdict.reply_code(), Some((550, "5.7.1")));
        let text = route.render_text();
        assert!(
            text.contains("injection denied: gw6 may inject nowhere (550 5.7.1)"),
            "{text}"
        );
    }
}

#[test]
fn source_member_lookup() {
    let router = Router::new(mixed());
    assert_eq!(router.source_member(ip("10.0.0.1")), Some("gw1"));
    assert_eq!(router.source_member(ip("::ffff:10.0.0.1")), Some("gw1"));
    assert_eq!(router.source_member(ip("10.0.6.255")), Some("gw6"));
    assert_eq!(router.source_member(ip("10.0.0.2")), None);
    assert_eq!(router.source_member(ip("2001:db8:7::1")), None);
    // An IPv4-mapped IPv6 network in `addresses` matches plain IPv4 clients.
    let mut gw = member("gw", 100);
    gw.addresses = vec!["::ffff:192.0.2.0/120".parse().unwrap()];
    let router = Router::new(policy(Affinity::Source, vec![gw]));
    assert_eq!(router.source_member(ip("192.0.2.9")), Some("gw"));
}

#[test]
fn public_unavailable_when_all_down_or_no_members() {
    let table = MemberTable::new();
    let router = Router::new(policy(
        Affinity::Source,
        vec![member("a", 1), member("b", 1)],
    ));
    table.mark_failed("a", "timeout", Duration::from_secs(5));
    table.mark_failed("b", "timeout", Duration::from_secs(5));
    let route = router.route(&table, ip("192.0.2.1"), None);
    assert_eq!(route.verdict, Verdict::Unavailable);
    assert!(
        route
            .render_text()
            .contains("all candidates down (451 4.4.1)")
    );

    let empty = Router::new(policy(Affinity::Source, vec![]));
    let route = empty.route(&table, ip("192.0.2.1"), None);
    assert_eq!(route.verdict, Verdict::Unavailable);
    assert!(
        route
            .render_text()
            .contains("no usable candidate (451 4.4.1)")
    );
}

#[test]
fn backoff_expires_and_mark_ok_clears() {
    let table = MemberTable::new();
    let router = Router::new(policy(
        Affinity::Source,
        vec![member("a", 1), member("b", 1)],
    ));
    let t0 = tokio::time::Instant::now();
    let client = ip("192.0.2.1");
    let before = router.route_at(&table, client, None, t0);

    table.mark_failed_at(
        "a",
        Service::Smtp,
        "connect refused",
        Duration::from_secs(10),
        t0,
    );
    let h = table.health_at("a", Service::Smtp, t0 + Duration::from_millis(500));
    assert!(!h.healthy);
    assert_eq!(
        h.reason.as_deref(),
        Some("connect refused (back-off 10s left)")
    );
    let down = router.route_at(&table, client, None, t0 + Duration::from_millis(9_500));
    assert_eq!(names(&down), ["b"]);
    assert_eq!(
        reason(&down, "a"),
        "down: connect refused (back-off 1s left)"
    );
    // A shorter back-off does not cut a longer one short.
    table.mark_failed_at("a", Service::Smtp, "421", Duration::from_secs(1), t0);
    assert!(
        !table
            .health_at("a", Service::Smtp, t0 + Duration::from_secs(5))
            .healthy
    );
    assert_eq!(
        table
            .health_at("a", Service::Smtp, t0 + Duration::from_secs(5))
            .reason
            .as_deref(),
        Some("421 (back-off 5s left)")
    );

    // Expired: healthy again, the last failure kept for status; same order as before.
    let later = t0 + Duration::from_secs(10);
    assert_eq!(
        table.health_at("a", Service::Smtp, later),
        MemberHealth {
            healthy: true,
            reason: Some("421".into())
        }
    );
    assert_eq!(
        router.route_at(&table, client, None, later).order,
        before.order
    );

    table.mark_failed_at(
        "a",
        Service::Smtp,
        "timeout",
        Duration::from_secs(60),
        later,
    );
    table.mark_ok("a");
    assert!(table.health("a").healthy);
    assert_eq!(
        table.health("never-seen"),
        MemberHealth {
            healthy: true,
            reason: None
        }
    );
}

#[test]
fn sessions_are_counted_and_released() {
    let table = MemberTable::new();
    let g1 = table.start_session("a");
    let g2 = table.start_session("a");
    let g3 = table.start_session("b");
    assert_eq!(table.active_sessions("a"), 2);
    assert_eq!(table.active_sessions("b"), 1);
    assert_eq!(table.active_sessions("c"), 0);
    drop(g1);
    assert_eq!(table.active_sessions("a"), 1);
    table.mark_failed("c", "refused", Duration::from_secs(3));
    let snap = table.snapshot();
    let rows: Vec<(&str, bool, u64)> = snap
        .iter()
        .map(|s| (s.name.as_str(), s.health.healthy, s.active_sessions))
        .collect();
    assert_eq!(rows, [("a", true, 1), ("b", true, 1), ("c", false, 0)]);
    drop((g2, g3));
    assert_eq!(table.active_sessions("a") + table.active_sessions("b"), 0);

    let router = Router::new(policy(
        Affinity::Source,
        vec![member("a", 1), member("z", 1)],
    ));
    let status = router.status(&table);
    assert_eq!(status.len(), 2);
    assert_eq!(
        (status[1].name.as_str(), status[1].health.healthy),
        ("z", true)
    );
}

#[test]
fn affinity_none_prefers_fewest_sessions_per_weight() {
    let table = MemberTable::new();
    let router = Router::new(policy(
        Affinity::None,
        vec![member("a", 100), member("b", 200), member("c", 100)],
    ));
    let client = ip("192.0.2.1");
    // Idle: ties everywhere, so the rendezvous order decides.
    let idle = router.route(&table, client, None);
    let sd = Router::new(policy(
        Affinity::SourceDestination,
        vec![member("a", 100), member("b", 200), member("c", 100)],
    ));
    assert_eq!(names(&idle), names(&sd.route(&table, client, None)));
    assert!(
        idle.order.iter().all(|r| r.score.to_bits() == 0),
        "idle scores are +0"
    );

    let _a = [table.start_session("a"), table.start_session("a")];
    let _b = [
        table.start_session("b"),
        table.start_session("b"),
        table.start_session("b"),
    ];
    // Loads: a 2/100, b 3/200, c 0/100.
    let route = router.route(&table, client, None);
    assert_eq!(names(&route), ["c", "b", "a"]);
    assert_eq!(route.order[1].score, -0.015);
    assert!(route.render_text().contains("affinity: none"));
}

#[test]
fn render_text_and_json() {
    let route = Router::new(mixed()).route(
        &MemberTable::new(),
        ip("192.0.2.1"),
        Some(ip("198.51.100.7")),
    );
    let text = route.render_text();
    for needle in [
        "client:   192.0.2.1 (group 192.0.2.1/32) -> 198.51.100.7",
        "affinity: source-destination",
        "source:   public (not a member)",
        "   1. ",
        "healthy",
        "gw3  not ingress",
        "verdict:  first choice ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let json = serde_json::to_value(&route).unwrap();
    assert!(json["source_member"].is_null());
    assert_eq!(json["order"][0]["member"], route.order[0].member.as_str());
    assert!(json["order"][0]["score"].is_f64());
    assert_eq!(json["order"][0]["healthy"], true);
    assert_eq!(json["excluded"][0]["member"], "gw3");
    assert_eq!(json["excluded"][0]["reason"], "not ingress");
    assert_eq!(json["verdict"], "route");
    assert_eq!(json["key"], route.key.to_string());
}

#[test]
fn http_routes_in_the_smtp_order_over_members_with_a_gina_upstream() {
    let gina = |mut m: Member| {
        m.gina = Some("127.0.0.1:8443".into());
        m
    };
    let mut injector = gina(member("inj", 100));
    injector.addresses = vec!["192.0.2.0/24".parse().expect("net")];
    injector.inject_to = vec!["a".into()];
    let mut not_ingress = gina(member("d", 100));
    not_ingress.ingress = false;
    let router = Router::new(policy(
        Affinity::SourceDestination,
        vec![
            gina(member("a", 100)),
            gina(member("b", 100)),
            member("c", 100),
            not_ingress,
            injector,
        ],
    ));
    let table = MemberTable::new();
    let dest = Some("198.51.100.1".parse().expect("ip"));
    for n in 1..=50u8 {
        let client: IpAddr = format!("203.0.113.{n}").parse().expect("ip");
        let smtp = router.route(&table, client, dest);
        let http = router.route_http(&table, client, dest);
        let names = |r: &Route| r.order.iter().map(|m| m.member.clone()).collect::<Vec<_>>();
        let smtp_gina: Vec<String> = names(&smtp).into_iter().filter(|m| m != "c").collect();
        assert_eq!(names(&http), smtp_gina, "client {client}");
        let reason = |r: &Route, m: &str| {
            r.excluded
                .iter()
                .find(|e| e.member == m)
                .map(|e| e.reason.clone())
        };
        assert_eq!(reason(&http, "c").as_deref(), Some("no gina upstream"));
        assert_eq!(reason(&http, "d").as_deref(), Some("not ingress"));
    }
    // A member's own address is routed as public over HTTP (no injection).
    let from_member: IpAddr = "192.0.2.5".parse().expect("ip");
    let http = router.route_http(&table, from_member, dest);
    assert_eq!(http.source_member, None);
    assert_eq!(http.verdict, Verdict::Route);
    assert_eq!(http.order.len(), 3);
    // Health is per service: a failed MTA leaves the SMTP order only, a
    // failed portal the HTTP order only.
    table.mark_failed("a", "connect refused", Duration::from_secs(30));
    let client: IpAddr = "203.0.113.1".parse().expect("ip");
    assert!(
        router
            .route(&table, client, dest)
            .order
            .iter()
            .all(|r| r.member != "a")
    );
    assert!(
        router
            .route_http(&table, from_member, dest)
            .order
            .iter()
            .any(|r| r.member == "a")
    );
    table.mark_service_failed(
        "b",
        Service::Gina,
        "connect refused",
        Duration::from_secs(30),
    );
    let http = router.route_http(&table, from_member, dest);
    assert!(http.order.iter().all(|r| r.member != "b"));
    assert!(
        router
            .route(&table, client, dest)
            .order
            .iter()
            .any(|r| r.member == "b")
    );
}
