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
        smtp: Some(HostPort { host: "127.0.0.1".into(), port: 10025 }),
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
        routing: RoutingPolicy { affinity, client_prefix_v4: 32, client_prefix_v6: 64, max_attempts: 3 },
        upstream: UpstreamPolicy {
            xclient: true,
            proxy_protocol: ProxyProtocol::Off,
            tls: UpstreamTls::Opportunistic,
            connect_timeout: Duration::from_secs(5),
            greeting_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            backoff: Duration::from_secs(10),
        },
        health: HealthPolicy { interval: Duration::from_secs(5), rise: 2, fall: 3 },
        dns: DnsPolicy { domains: Vec::new(), nameservers: Vec::new(), interval: Duration::from_secs(300) },
        lft: LftPolicy { threshold: 10 << 20 },
        members,
    })
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The four members of the test vectors.
fn vector_members() -> Vec<Member> {
    vec![member("gw1", 100), member("gw2", 100), member("gw3", 200), member("gw4", 50)]
}

/// Test vectors with `client_prefix_v4 = 24`, `client_prefix_v6 = 64`.
/// (affinity, client, dest, key hex, [(member, hash, score bits)], order)
type Vector = (Affinity, &'static str, Option<&'static str>, &'static str, [(&'static str, u64, u64); 4], [&'static str; 4]);

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
        let route = Router::new(Arc::clone(&p)).route(&MemberTable::new(), ip(client), dest.map(ip));
        assert_eq!(route.key.to_string(), *key_hex, "key of {client} {dest:?}");
        for (name, hash, score_bits) in hashes {
            let h = member_hash(route.key.as_bytes(), name);
            assert_eq!(h, *hash, "hash of {name} for {client}");
            let weight = p.member(name).unwrap().weight;
            assert_eq!(rendezvous_score(h, weight).to_bits(), *score_bits, "score of {name}");
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
    assert_eq!(key("192.0.2.77", Some("198.51.100.1")), "04c000020004c6336401");
    assert_eq!(key("192.0.2.77", None), "04c000020000");
    // IPv4-mapped client and destination count as IPv4.
    assert_eq!(key("::ffff:192.0.2.77", Some("::ffff:198.51.100.1")), "04c000020004c6336401");
    assert_eq!(
        key("2001:db8:aaaa:bbbb::1", None),
        "0620010db8aaaa0000000000000000000000"
    );
    let src = with_prefixes(&policy(Affinity::Source, vec![]), 40, 200);
    let k = AffinityKey::new(&src.routing, ip("192.0.2.77"), Some(ip("198.51.100.1")));
    assert_eq!(k.as_bytes(), [TAG_V4, 192, 0, 2, 77], "prefix above 32 counts as 32");
    let zero = with_prefixes(&policy(Affinity::Source, vec![]), 0, 0);
    assert_eq!(AffinityKey::new(&zero.routing, ip("192.0.2.77"), None).to_string(), "0400000000");
    assert_eq!(client_prefix(&p.routing, ip("::ffff:10.1.2.3")).to_string(), "10.1.2.0/24");
}

#[test]
fn unit_interval_is_strictly_inside_0_1() {
    assert_eq!(unit_interval(0), 2f64.powi(-54));
    assert_eq!(unit_interval(0x7ff), 2f64.powi(-54), "only the top 53 bits count");
    assert_eq!(unit_interval(0x800), 2f64.powi(-53));
    assert_eq!(unit_interval(u64::MAX), 1.0 - 2f64.powi(-53));
    assert!(rendezvous_score(u64::MAX, u32::MAX).is_finite());
    assert_eq!(rendezvous_score(0x1234_5678_9abc_def0, 0), 0.0);
}

#[test]
fn fixed_ln_agrees_with_std_within_one_ulp() {
    let close = |u: f64| {
        let (a, b) = (fixed_ln(u), u.ln());
        assert!(a.to_bits().abs_diff(b.to_bits()) <= 1, "ln({u:e}): {a:e} vs {b:e}");
    };
    for u in [2f64.powi(-54), 2f64.powi(-53), 0.5, 0.70710678, 0.75, 0.999_999, 1.0 - 2f64.powi(-53)] {
        close(u);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..100_000 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        close(unit_interval(x));
    }
    assert!(fixed_ln(0.0).is_nan() && fixed_ln(-1.0).is_nan());
}

#[test]
fn ties_break_by_name() {
    assert_eq!(rank_cmp("a", 1.0, "b", 1.0), std::cmp::Ordering::Less);
    assert_eq!(rank_cmp("b", 2.0, "a", 1.0), std::cmp::Ordering::Less);
}
