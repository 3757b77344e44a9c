//! Injection: sessions whose client is a member go only to that member's
//! `inject_to`, never elsewhere; public clients are routed normally.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use common::{Client, FakeMta, Mxgate, fakes, member, order_of, policy, receivers, send_tagged};

/// Six listeners on 127.0.6.1..6, so sessions reach different destinations.
fn listeners() -> String {
    (1..=6)
        .map(|i| format!("[[smtp]]\nname = \"l{i}\"\nlisten = \"127.0.6.{i}:0\"\nhostname = \"mx{i}.test\"\n\n"))
        .collect()
}

fn injection_gateway(fakes: &[FakeMta], gw1_extra: &str) -> Mxgate {
    let members = [
        member("gw1", fakes[0].addr, gw1_extra),
        member("gw2", fakes[1].addr, ""),
        member("gw3", fakes[2].addr, ""),
    ];
    Mxgate::start_with(&listeners(), &policy("client_prefix_v4 = 24", &members))
}

#[test]
fn member_injects_only_into_its_inject_to_and_public_clients_route_normally() {
    let fakes = fakes(&["gw1", "gw2", "gw3"]);
    let gw = injection_gateway(
        &fakes,
        "addresses = [\"127.0.5.1\", \"127.0.7.0/28\"]\ninject_to = [\"gw2\"]",
    );

    // The injecting member's sources: 127.0.5.1 and 127.0.7.1..14.
    let sources: Vec<IpAddr> = std::iter::once("127.0.5.1".parse().expect("ip"))
        .chain((1..=14).map(|h| format!("127.0.7.{h}").parse().expect("ip")))
        .collect();
    // With client_prefix_v4 = 24, public 127.0.5.2 shares 127.0.5.1's affinity
    // key: its public order shows where 127.0.5.1 would hash if it were public.
    let public_twin: IpAddr = "127.0.5.2".parse().expect("ip");
    let mut public_firsts = BTreeSet::new();
    for i in 1..=6 {
        let name = format!("l{i}");
        let addr = gw.smtp_addr_of(&name);
        let public = gw.explain_to(public_twin, Some(addr.ip()));
        assert_eq!(public["source_member"], serde_json::Value::Null, "{public}");
        let first = public["order"][0]["member"]
            .as_str()
            .expect("first")
            .to_owned();
        public_firsts.insert(first.clone());

        for (n, &src) in sources.iter().enumerate() {
            // Every source to l1; the rest only from a few, to keep the session count small.
            if i > 1 && n > 2 {
                continue;
            }
            let tag = format!("inject {src} -> {name}");
            send_tagged(src, addr, &tag);
            assert_eq!(receivers(&fakes, &tag), vec!["gw2"], "{tag}");
        }

        // Public clients (not in any addresses) reach their explained ingress member.
        for client in [
            public_twin,
            "127.0.8.1".parse().expect("ip"),
            "127.0.9.77".parse().expect("ip"),
        ] {
            let expected = gw.explain_to(client, Some(addr.ip()))["order"][0]["member"]
                .as_str()
                .expect("first")
                .to_owned();
            let tag = format!("public {client} -> {name}");
            send_tagged(client, addr, &tag);
            assert_eq!(receivers(&fakes, &tag), vec![expected.clone()], "{tag}");
            public_firsts.insert(expected);
        }
    }
    assert!(
        public_firsts.iter().any(|m| m != "gw2"),
        "test setup: public orders should put gw1 or gw3 first somewhere, got {public_firsts:?}"
    );
    assert!(
        public_firsts.len() >= 2,
        "public clients should reach several members: {public_firsts:?}"
    );

    let e = gw.explain("127.0.5.1".parse().expect("ip"));
    assert_eq!(e["source_member"], "gw1", "{e}");
    let order = order_of(&e);
    assert_eq!(order, vec!["gw2"], "{e}");
    let excluded: Vec<(String, String)> = e["excluded"]
        .as_array()
        .expect("excluded")
        .iter()
        .map(|x| {
            (
                x["member"].as_str().expect("m").to_owned(),
                x["reason"].as_str().expect("r").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        excluded,
        vec![
            ("gw1".to_owned(), "not in gw1's inject_to".to_owned()),
            ("gw3".to_owned(), "not in gw1's inject_to".to_owned())
        ],
        "{e}"
    );
    assert_eq!(
        gw.explain("127.0.7.9".parse().expect("ip"))["source_member"],
        "gw1"
    );
    assert_eq!(
        gw.explain("127.0.7.16".parse().expect("ip"))["source_member"],
        serde_json::Value::Null
    );
}

#[test]
fn empty_inject_to_denies_mail_with_550_and_reaches_nobody() {
    let fakes = fakes(&["gw1", "gw2", "gw3"]);
    let gw = injection_gateway(&fakes, "addresses = [\"127.0.5.1\"]\ninject_to = []");
    let mut c = Client::greeted_from("127.0.5.1".parse().expect("ip"), gw.smtp_addr());
    assert!(c.cmd("EHLO gw1.example").ok());
    let r = c.cmd("MAIL FROM:<s@source.test>");
    assert_eq!(r.code, 550, "MAIL: {r}");
    assert!(r.text.starts_with("550 5.7.1"), "MAIL: {r}");
    // The session goes on; a second attempt is denied the same way.
    assert!(c.cmd("RSET").ok());
    let r = c.cmd("MAIL FROM:<other@source.test>");
    assert!(r.text.starts_with("550 5.7.1"), "second MAIL: {r}");
    assert_eq!(c.cmd("QUIT").code, 221);

    let line = gw
        .wait_log("injection denied", Duration::from_secs(5))
        .expect("a denial log line");
    assert!(
        line.contains("127.0.5.1") && line.contains("gw1"),
        "denial line should name client and member: {line}"
    );
    for f in &fakes {
        assert_eq!(f.connections(), 0, "{} was connected to", f.name);
    }
    let e = gw.explain("127.0.5.1".parse().expect("ip"));
    assert_eq!(e["verdict"], "injection_denied", "{e}");
    assert_eq!(e["order"].as_array().map(Vec::len), Some(0), "{e}");
}

#[test]
fn injection_target_down_gives_451_and_never_falls_back() {
    let fakes = fakes(&["gw1", "gw2", "gw3"]);
    let gw = injection_gateway(&fakes, "addresses = [\"127.0.5.1\"]\ninject_to = [\"gw2\"]");
    fakes[1].kill();
    for attempt in 0..3 {
        let mut c = Client::greeted_from("127.0.5.1".parse().expect("ip"), gw.smtp_addr());
        assert!(c.cmd("EHLO gw1.example").ok());
        let r = c.cmd("MAIL FROM:<s@source.test>");
        assert!(
            r.text.starts_with("451 4.4.1"),
            "attempt {attempt}: MAIL: {r}"
        );
        assert_eq!(c.cmd("QUIT").code, 221);
    }
    assert_eq!(fakes[0].connections(), 0, "gw1 (the source) was used");
    assert_eq!(
        fakes[2].connections(),
        0,
        "gw3 (healthy ingress, not in inject_to) was used"
    );
    let e = gw.explain("127.0.5.1".parse().expect("ip"));
    assert_eq!(e["verdict"], "unavailable", "{e}");
    let gw2 = e["excluded"]
        .as_array()
        .expect("excluded")
        .iter()
        .find(|x| x["member"] == "gw2")
        .cloned()
        .expect("gw2 excluded");
    assert!(
        gw2["reason"]
            .as_str()
            .expect("reason")
            .starts_with("down: "),
        "{e}"
    );

    // Public clients are unaffected.
    let tag = "public while gw2 is down";
    send_tagged("127.0.8.8".parse().expect("ip"), gw.smtp_addr(), tag);
    let got = receivers(&fakes, tag);
    assert!(got == vec!["gw1"] || got == vec!["gw3"], "{got:?}");
}
