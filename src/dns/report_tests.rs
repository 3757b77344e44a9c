//! The status rules and the text form, on hand-made observations.

use super::*;
use crate::dns::render::render_text;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn addr(a: &str, answers: bool, ptr: PtrStatus) -> AddressReport {
    AddressReport {
        address: ip(a),
        family: "A".into(),
        ttl: 300,
        smtp: SmtpProbe {
            answers,
            banner: answers.then(|| "220 mx ESMTP".to_owned()),
            error: (!answers).then(|| "connect to port 25: Connection refused".to_owned()),
        },
        ptr: PtrReport {
            status: ptr,
            names: match ptr {
                PtrStatus::Missing | PtrStatus::Unknown => vec![],
                _ => vec![format!("host-{a}.example")],
            },
            ttl: Some(300),
            error: None,
        },
        members: vec![],
    }
}

fn mx(pref: u16, host: &str, addresses: Vec<AddressReport>) -> MxReport {
    MxReport {
        preference: pref,
        host: host.into(),
        ttl: Some(3600),
        role: MxRole::Primary,
        round_robin: false,
        lookup: Lookup::Ok,
        error: None,
        address_round_robin: false,
        addresses,
    }
}

fn unresolved(pref: u16, host: &str, e: QueryError) -> MxReport {
    let mut m = mx(pref, host, vec![]);
    m.lookup = Lookup::from(&e);
    m.error = Some(e.to_string());
    m
}

fn domain(mx: Vec<MxReport>) -> DomainReport {
    let mut d = DomainReport::empty("example.com");
    d.mx = mx;
    d
}

fn member(name: &str, smtp: &str, nets: &[&str]) -> IngressMember {
    IngressMember {
        name: name.into(),
        smtp_ips: vec![ip(smtp)],
        addresses: nets.iter().map(|n| n.parse().expect("net")).collect(),
    }
}

fn good(a: &str) -> AddressReport {
    addr(a, true, PtrStatus::Confirmed)
}

#[test]
fn rules_table() {
    use PtrStatus::*;
    let cases: Vec<(&str, DomainReport, Vec<IngressMember>, Status, &str)> = vec![
        (
            "all good",
            domain(vec![mx(10, "mx1", vec![good("192.0.2.1")])]),
            vec![],
            Status::Ok,
            "OK",
        ),
        (
            "nxdomain",
            DomainReport::mx_failed("example.com", &QueryError::NxDomain),
            vec![],
            Status::Critical,
            "domain does not exist (NXDOMAIN)",
        ),
        (
            "timeout",
            DomainReport::mx_failed("example.com", &QueryError::Timeout),
            vec![],
            Status::Unknown,
            "MX lookup failed: no answer from the name server (timeout)",
        ),
        (
            "servfail",
            DomainReport::mx_failed(
                "example.com",
                &QueryError::ServerError(hickory_resolver::proto::op::ResponseCode::ServFail),
            ),
            vec![],
            Status::Unknown,
            "MX lookup failed: name server answered Server Failure",
        ),
        (
            "no mx no address",
            {
                let mut d = domain(vec![]);
                d.mx_lookup = Lookup::Nodata;
                d
            },
            vec![],
            Status::Critical,
            "no MX and no address record",
        ),
        (
            "implicit mx",
            {
                let mut d = domain(vec![mx(0, "example.com", vec![good("192.0.2.1")])]);
                d.mx_lookup = Lookup::Nodata;
                d.implicit_mx = true;
                d
            },
            vec![],
            Status::Warning,
            "no MX record; mail goes to the domain's own address (implicit MX)",
        ),
        (
            "null mx",
            domain(vec![mx(0, ".", vec![])]),
            vec![],
            Status::Critical,
            "null MX: the domain accepts no mail (RFC 7505)",
        ),
        (
            "no host resolves",
            domain(vec![
                unresolved(10, "mx1", QueryError::NxDomain),
                unresolved(20, "mx2", QueryError::NoData("A/AAAA".into())),
            ]),
            vec![],
            Status::Critical,
            "no MX host resolves",
        ),
        (
            "hosts unanswered",
            domain(vec![unresolved(10, "mx1", QueryError::Timeout)]),
            vec![],
            Status::Unknown,
            "MX hosts could not be resolved: no answer from the name server (timeout)",
        ),
        (
            "one host does not resolve",
            domain(vec![
                mx(10, "mx1", vec![good("192.0.2.1")]),
                unresolved(20, "mx2", QueryError::NxDomain),
            ]),
            vec![],
            Status::Warning,
            "MX host mx2 does not resolve (NXDOMAIN)",
        ),
        (
            "nobody answers",
            domain(vec![
                mx(10, "mx1", vec![addr("192.0.2.1", false, Confirmed)]),
                mx(20, "mx2", vec![addr("192.0.2.2", false, Confirmed)]),
            ]),
            vec![],
            Status::Critical,
            "no MX host answers SMTP",
        ),
        (
            "one does not answer",
            domain(vec![mx(
                10,
                "mx1",
                vec![good("192.0.2.1"), addr("192.0.2.2", false, Confirmed)],
            )]),
            vec![],
            Status::Warning,
            "192.0.2.2 (mx1) does not answer SMTP: connect to port 25: Connection refused",
        ),
        (
            "missing ptr",
            domain(vec![mx(10, "mx1", vec![addr("192.0.2.1", true, Missing)])]),
            vec![],
            Status::Warning,
            "192.0.2.1 (mx1) has no PTR record",
        ),
        (
            "unconfirmed ptr",
            domain(vec![mx(
                10,
                "mx1",
                vec![addr("192.0.2.1", true, Unconfirmed)],
            )]),
            vec![],
            Status::Warning,
            "192.0.2.1 (mx1): PTR host-192.0.2.1.example does not resolve back to it",
        ),
        (
            "ptr unknown",
            domain(vec![mx(10, "mx1", vec![addr("192.0.2.1", true, Unknown)])]),
            vec![],
            Status::Unknown,
            "192.0.2.1 (mx1): PTR lookup failed: unknown",
        ),
        (
            "member not pointed at",
            domain(vec![mx(10, "mx1", vec![good("192.0.2.1")])]),
            vec![
                member("gw1", "192.0.2.1", &[]),
                member("gw2", "192.0.2.9", &[]),
                member("gw3", "10.0.0.3", &["192.0.2.64/26"]),
            ],
            Status::Warning,
            "no MX address points at ingress member(s) gw2, gw3",
        ),
    ];
    for (name, report, members, status, summary) in cases {
        let r = report.evaluate(&members);
        assert_eq!(r.status, status, "{name}: {:?}", r.problems);
        assert_eq!(r.summary, summary, "{name}");
    }
}

#[test]
fn roles_round_robin_and_members() {
    let d = domain(vec![
        mx(20, "backup", vec![good("192.0.2.9")]),
        mx(10, "mx2", vec![good("192.0.2.2"), good("192.0.2.3")]),
        mx(10, "mx1", vec![good("192.0.2.1")]),
    ])
    .evaluate(&[
        member("gw1", "192.0.2.1", &[]),
        member("gw2", "10.9.9.9", &["192.0.2.2/31"]),
    ]);
    let view: Vec<(u16, &str, MxRole, bool, bool)> =
        d.mx.iter()
            .map(|m| {
                (
                    m.preference,
                    m.host.as_str(),
                    m.role,
                    m.round_robin,
                    m.address_round_robin,
                )
            })
            .collect();
    assert_eq!(
        view,
        vec![
            (10, "mx1", MxRole::Primary, true, false),
            (10, "mx2", MxRole::Primary, true, true),
            (20, "backup", MxRole::Backup, false, false),
        ]
    );
    assert_eq!(d.mx[0].addresses[0].members, vec!["gw1"]);
    assert_eq!(d.mx[1].addresses[0].members, vec!["gw2"]);
    assert_eq!(d.mx[1].addresses[1].members, vec!["gw2"]);
    assert!(d.mx[2].addresses[0].members.is_empty());
    assert_eq!(d.status, Status::Ok);
    assert!(d.ingress_not_pointed_at.is_empty());
}

#[test]
fn worst_over_domains_and_summary_line() {
    let ok = domain(vec![mx(10, "mx1", vec![good("192.0.2.1")])]).evaluate(&[]);
    let mut down = domain(vec![mx(
        10,
        "mx1",
        vec![addr("192.0.2.1", false, PtrStatus::Confirmed)],
    )]);
    down.domain = "example.net".into();
    let down = down.evaluate(&[]);
    let mut silent = DomainReport::mx_failed("example.org", &QueryError::Timeout);
    silent.domain = "example.org".into();
    let silent = silent.evaluate(&[]);

    let r = CheckReport::new(vec![ok.clone(), down, silent.clone()], vec![], 0);
    assert_eq!(r.status, Status::Critical, "CRITICAL outranks UNKNOWN");
    assert_eq!(r.exit_code, 2);
    assert_eq!(
        r.summary,
        "DNS CRITICAL - example.com: OK; example.net: no MX host answers SMTP; example.org: MX lookup failed: no answer from the name server (timeout)"
    );
    let r = CheckReport::new(vec![ok.clone(), silent], vec![], 0);
    assert_eq!((r.status, r.exit_code), (Status::Unknown, 3));
    let r = CheckReport::new(vec![ok], vec![], 0);
    assert_eq!((r.status, r.exit_code), (Status::Ok, 0));
    assert_eq!(r.summary, "DNS OK - example.com: OK");
    let r = CheckReport::new(vec![], vec![], 0);
    assert_eq!(r.exit_code, 3);
    assert!(r.summary.starts_with("DNS UNKNOWN - no domain to check"));
}

#[test]
fn text_form() {
    let d = domain(vec![
        mx(
            10,
            "mx1.example.com",
            vec![
                good("192.0.2.1"),
                addr("192.0.2.2", true, PtrStatus::Missing),
            ],
        ),
        mx(
            20,
            "mx2.example.com",
            vec![addr("192.0.2.9", false, PtrStatus::Unconfirmed)],
        ),
    ])
    .evaluate(&[member("gw1", "192.0.2.1", &[])]);
    let text = render_text(&CheckReport::new(vec![d], vec!["127.0.0.1:53".into()], 0));
    let expected = "\
DNS WARNING - example.com: 192.0.2.9 (mx2.example.com) does not answer SMTP: connect to port 25: Connection refused (+2 more)
nameservers: 127.0.0.1:53

example.com: WARNING
  MX 10 mx1.example.com ttl 3600s: primary, round robin over 2 addresses
    A    192.0.2.1 ttl 300s; SMTP ok (220 mx ESMTP); PTR host-192.0.2.1.example confirmed; member gw1
    A    192.0.2.2 ttl 300s; SMTP ok (220 mx ESMTP); PTR missing; no member
  MX 20 mx2.example.com ttl 3600s: backup
    A    192.0.2.9 ttl 300s; SMTP FAILED (connect to port 25: Connection refused); PTR host-192.0.2.9.example NOT confirmed; no member
  WARNING: 192.0.2.9 (mx2.example.com) does not answer SMTP: connect to port 25: Connection refused
  WARNING: 192.0.2.2 (mx1.example.com) has no PTR record
  WARNING: 192.0.2.9 (mx2.example.com): PTR host-192.0.2.9.example does not resolve back to it
";
    assert_eq!(text, expected);
}

#[test]
fn json_shape_is_stable() {
    let d = domain(vec![mx(10, "mx1", vec![good("192.0.2.1")])]).evaluate(&[]);
    let v = serde_json::to_value(CheckReport::new(vec![d], vec![], 7)).expect("json");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        keys(&v),
        [
            "status",
            "exit_code",
            "summary",
            "checked_at",
            "nameservers",
            "domains"
        ]
    );
    let d = &v["domains"][0];
    assert_eq!(
        keys(d),
        [
            "domain",
            "status",
            "summary",
            "mx_lookup",
            "mx_error",
            "implicit_mx",
            "mx",
            "ingress_not_pointed_at",
            "problems"
        ]
    );
    assert_eq!(
        keys(&d["mx"][0]),
        [
            "preference",
            "host",
            "ttl",
            "role",
            "round_robin",
            "lookup",
            "error",
            "address_round_robin",
            "addresses"
        ]
    );
    assert_eq!(
        keys(&d["mx"][0]["addresses"][0]),
        ["address", "family", "ttl", "smtp", "ptr", "members"]
    );
    assert_eq!(v["status"], "OK");
    assert_eq!(d["mx"][0]["role"], "primary");
    assert_eq!(d["mx"][0]["addresses"][0]["ptr"]["status"], "confirmed");
}
