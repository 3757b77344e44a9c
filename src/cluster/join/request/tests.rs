//! `parse_request`: good requests pass and round-trip; each field's rule
//! refuses, naming the field.

use serde_json::json;

use super::*;
use crate::cluster::identity;

fn csr() -> String {
    identity::new_key_and_csr("gw2")
        .map(|(_, csr)| csr)
        .unwrap()
}

fn good(csr: &str) -> Value {
    json!({
        "name": "gw2",
        "role": "backend",
        "csr_pem": csr,
        "address": "127.0.0.2:7025",
        "smtp_upstream": "127.0.0.1:10025",
        "gina_upstream": "https://gina.example.com:8443",
        "version": "0.1.0",
    })
}

fn parse_value(v: &Value) -> Result<ValidJoin, JoinInvalid> {
    parse_request(&serde_json::to_vec(v).unwrap())
}

#[test]
fn a_good_request_passes_and_round_trips() {
    let csr = csr();
    let valid = parse_value(&good(&csr)).unwrap();
    assert_eq!(valid.request.name, "gw2");
    assert_eq!(valid.request.role, Role::Backend);
    assert_eq!(valid.advertise, "127.0.0.2:7025".parse().unwrap());
    // What `cluster join` sends parses back to itself.
    let again = parse_request(&serde_json::to_vec(&valid.request).unwrap()).unwrap();
    assert_eq!(again, valid);
    // Optional upstreams may be absent or null; unknown keys are ignored.
    let mut v = good(&csr);
    v["smtp_upstream"] = Value::Null;
    v.as_object_mut().unwrap().remove("gina_upstream");
    v["from_a_newer_version"] = json!([1, 2]);
    let valid = parse_value(&v).unwrap();
    assert_eq!(valid.request.smtp_upstream, None);
    assert_eq!(valid.request.gina_upstream, None);
    v["role"] = json!("frontend");
    v["address"] = json!("[::1]:7025");
    v["version"] = json!("1.2.3-rc.1+build_5");
    assert!(parse_value(&v).is_ok());
}

#[test]
fn names_check_config_refuses_are_refused() {
    let csr = csr();
    for name in [
        "",
        "x y",
        "../../../../tmp/adv-pwn",
        "bk\"} 9\nFAKE_LINE",
        "-x",
        "a\u{1b}[2J",
    ] {
        let mut v = good(&csr);
        v["name"] = json!(name);
        let err = parse_value(&v).unwrap_err();
        assert_eq!(err.field(), Some(JoinField::Name), "{name:?}: {err}");
        // The same message check-config gives, the name quoted and escaped.
        let rule = crate::config::check_name(name).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&rule), "{text}");
        assert!(text.contains("field name ([node] name)"), "{text}");
        assert!(!text.chars().any(crate::text::needs_escape), "{text:?}");
    }
}

#[test]
fn every_field_is_checked() {
    let csr = csr();
    let mut tampered = csr.clone();
    // A byte inside the base64 of the signature (before the END line).
    let at = tampered.rfind("-----END").unwrap() - 6;
    let byte = if &tampered[at..=at] == "A" { "B" } else { "A" };
    tampered.replace_range(at..=at, byte);
    let cases: Vec<(&str, Value, JoinField, &str)> = vec![
        (
            "name",
            json!(7),
            JoinField::Name,
            "expected a string, found a number",
        ),
        ("name", Value::Null, JoinField::Name, "missing"),
        ("role", json!("master"), JoinField::Role, "is not a role"),
        ("role", json!("Backend"), JoinField::Role, "is not a role"),
        (
            "csr_pem",
            json!("not a csr"),
            JoinField::CsrPem,
            "certificate request",
        ),
        (
            "csr_pem",
            json!(tampered),
            JoinField::CsrPem,
            "certificate request",
        ),
        (
            "csr_pem",
            json!("x".repeat(MAX_CSR_PEM + 1)),
            JoinField::CsrPem,
            "bytes",
        ),
        (
            "address",
            json!("gw2.example.com:7025"),
            JoinField::Address,
            "IP:PORT",
        ),
        (
            "address",
            json!("0.0.0.0:7025"),
            JoinField::Address,
            "cannot|can reach",
        ),
        (
            "address",
            json!("127.0.0.2:0"),
            JoinField::Address,
            "can reach",
        ),
        (
            "address",
            json!("127.0.0.2:7025\n"),
            JoinField::Address,
            "IP:PORT",
        ),
        (
            "smtp_upstream",
            json!("x y:25"),
            JoinField::SmtpUpstream,
            "host name",
        ),
        (
            "smtp_upstream",
            json!("127.0.0.1"),
            JoinField::SmtpUpstream,
            "missing port",
        ),
        (
            "gina_upstream",
            json!("ftp://x:21"),
            JoinField::GinaUpstream,
            "expected",
        ),
        (
            "gina_upstream",
            json!(["a"]),
            JoinField::GinaUpstream,
            "found an array",
        ),
        ("version", json!(""), JoinField::Version, "not a version"),
        (
            "version",
            json!("0.1.0\nFAKE"),
            JoinField::Version,
            "not a version",
        ),
        (
            "version",
            json!("1".repeat(MAX_VERSION + 1)),
            JoinField::Version,
            "not a version",
        ),
    ];
    for (key, value, field, want) in cases {
        let mut v = good(&csr);
        v[key] = value.clone();
        let err = parse_value(&v).unwrap_err();
        assert_eq!(err.field(), Some(field), "{key} = {value}: {err}");
        let text = err.to_string();
        assert!(
            want.split('|').any(|w| text.contains(w)),
            "{key} = {value}: {want:?} not in {text:?}"
        );
        assert!(!text.chars().any(crate::text::needs_escape), "{text:?}");
    }
}

#[test]
fn bodies_that_are_not_objects_are_malformed() {
    for body in [
        &b""[..],
        b"[]",
        b"null",
        b"\"gw2\"",
        b"{",
        b"{\"name\": \"gw2\"} x",
        b"\xff",
    ] {
        let err = parse_request(body).unwrap_err();
        assert!(matches!(err, JoinInvalid::Malformed(_)), "{body:?}: {err}");
        assert_eq!(err.field(), None);
    }
}
