//! Loader tests: the shipped examples, defaults, rendering, and table-driven
//! broken files asserting the line and key path of every expected error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A minimal valid `mxgate.toml` pointing at `cluster.toml` next to it.
const NODE: &str = r#"[node]
name = "gw1"
data_dir = "data"
policy = "cluster.toml"

[[smtp]]
name = "in"
listen = "127.0.0.1:2525"
"#;

/// A minimal valid policy with two members.
const POLICY: &str = r#"[members.gw1]
smtp = "10.0.0.1:25"
inject_to = ["gw2"]

[members.gw2]
smtp = "10.0.0.2:25"
"#;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(node: &str, policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mxgate.toml"), node).unwrap();
        std::fs::write(dir.path().join("cluster.toml"), policy).unwrap();
        Files { dir }
    }
    fn node(&self) -> PathBuf {
        self.dir.path().join("mxgate.toml")
    }
    fn policy(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }
}

/// `(case name, file contents, expected (line, key, message fragment))`.
type Case<'a> = (&'a str, &'a str, &'a [(usize, &'a str, &'a str)]);

/// `(file name, line, key)` of every error, in reported order.
fn found(errors: &ConfigErrors) -> Vec<(String, Option<usize>, String)> {
    errors
        .0
        .iter()
        .map(|e| {
            let file = e.file.file_name().unwrap().to_string_lossy().into_owned();
            (file, e.line, e.key.clone())
        })
        .collect()
}

/// Asserts exactly these `(line, key, message fragment)` errors, in order.
fn assert_errors(name: &str, errors: &ConfigErrors, file: &str, want: &[(usize, &str, &str)]) {
    let got = found(errors);
    let expected: Vec<_> = want
        .iter()
        .map(|(l, k, _)| (file.to_string(), Some(*l), k.to_string()))
        .collect();
    assert_eq!(got, expected, "case {name}:\n{errors}");
    for (e, (_, _, fragment)) in errors.0.iter().zip(want) {
        assert!(
            e.message.contains(fragment),
            "case {name}: {:?} lacks {fragment:?}",
            e.message
        );
    }
}

#[test]
fn example_files_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let config = load(&dir.join("mxgate.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.node.name, "gw1");
    assert_eq!(config.node.policy, dir.join("cluster.toml"));
    assert_eq!(config.smtp.len(), 1);
    assert_eq!(config.http.len(), 1);
    assert!(config.cluster.is_some());
    assert_eq!(config.policy.members.len(), 2);
    assert!(load_policy(&dir.join("cluster.toml")).is_ok());
}

#[test]
fn defaults_are_filled_in() {
    let f = Files::new(NODE, POLICY);
    let c = load(&f.node()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.node.data_dir, f.dir.path().join("data"));
    let s = &c.smtp[0];
    assert_eq!(s.hostname, "gw1");
    assert_eq!(s.max_message_size, 50 << 20);
    assert_eq!(
        (s.max_sessions, s.max_sessions_per_client, s.max_recipients),
        (10_000, 50, 1000)
    );
    assert_eq!(s.bare_lf, BareLf::Reject);
    assert_eq!(s.greet_delay, Duration::ZERO);
    assert_eq!(
        (s.command_timeout, s.data_timeout, s.min_data_rate),
        (Duration::from_secs(300), Duration::from_secs(180), 500)
    );
    assert!(!s.proxy_protocol && !s.require_tls && s.trusted_proxies.is_empty());
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
    assert!(c.local.is_none() && c.metrics.is_none() && c.cluster.is_none() && c.http.is_empty());
    let p = &c.policy;
    assert_eq!(p.routing.affinity, Affinity::SourceDestination);
    assert_eq!(
        (
            p.routing.client_prefix_v4,
            p.routing.client_prefix_v6,
            p.routing.max_attempts
        ),
        (32, 64, 3)
    );
    assert!(p.upstream.xclient);
    assert_eq!(p.upstream.proxy_protocol, ProxyProtocol::Off);
    assert_eq!(p.upstream.tls, UpstreamTls::Opportunistic);
    assert_eq!(p.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(p.upstream.greeting_timeout, Duration::from_secs(30));
    assert_eq!(p.upstream.command_timeout, Duration::from_secs(300));
    assert_eq!(p.upstream.data_timeout, Duration::from_secs(600));
    assert_eq!(p.upstream.backoff, Duration::from_secs(10));
    assert_eq!(
        (p.health.interval, p.health.rise, p.health.fall),
        (Duration::from_secs(5), 2, 3)
    );
    assert_eq!(
        p.health.timeout,
        Duration::from_secs(5),
        "timeout defaults to the interval"
    );
    assert_eq!(
        (
            p.health.smtp_check,
            p.health.gina_check,
            p.health.http_path.as_str(),
            p.health.starttls
        ),
        (SmtpCheck::Smtp, GinaCheck::Http, "/", false)
    );
    assert_eq!(p.dns.interval, Duration::from_secs(300));
    assert_eq!(p.dns, DnsPolicy::default());
    assert_eq!(p.lft.threshold, 10 << 20);
    let gw1 = p.member("gw1").unwrap();
    assert_eq!((gw1.weight, gw1.ingress), (100, true));
    assert!(gw1.lft_sync_to.is_empty() && gw1.addresses.is_empty());
    assert_eq!(gw1.smtp.as_ref().unwrap().to_string(), "10.0.0.1:25");
}

#[test]
fn members_sorted_and_values_parsed() {
    let policy = r#"[members.zeta]
smtp = "[2001:db8::1]:25"
addresses = ["2001:db8::/64"]
weight = 0
[members.alpha]
smtp = "mta.example.com:10025"
gina = "https://alpha.example.com:8443"
addresses = ["10.0.0.7", "192.0.2.0/24"]
"#;
    let f = Files::new(NODE, policy);
    let p = load_policy(&f.policy()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = p.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert_eq!(p.members[0].addresses[0].to_string(), "10.0.0.7/32");
    assert_eq!(p.members[1].smtp.as_ref().unwrap().host, "2001:db8::1");
    assert_eq!(p.members[1].weight, 0);
}

#[test]
fn render_is_valid_toml_with_readable_units() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let config = load(&dir.join("mxgate.toml")).unwrap_or_else(|e| panic!("{e}"));
    let text = render_effective(&config);
    let parsed: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for key in ["node", "smtp", "http", "local", "cluster", "metrics", "log"] {
        assert!(parsed.contains_key(key), "{key} missing:\n{text}");
    }
    for key in ["routing", "upstream", "health", "dns", "lft", "members"] {
        assert!(parsed.contains_key(key), "{key} missing:\n{text}");
    }
    assert!(text.contains("max_message_size = \"50MiB\""), "{text}");
    assert!(text.contains("threshold = \"10MiB\""), "{text}");
    assert!(text.contains("[members.gw2]"), "{text}");
    assert!(text.contains("command_timeout = \"5m\""), "{text}");
    for line in [
        "smtp_check = \"smtp\"",
        "gina_check = \"http\"",
        "http_path = \"/\"",
        "starttls = false",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}

#[test]
fn broken_policies() {
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("unknown top-level key", "[routnig]\naffinity = \"none\"\n",
         &[(1, "routnig", "did you mean `routing`")]),
        ("node key in the policy", "[log]\nlevel = \"info\"\n",
         &[(1, "log", "belongs in mxgate.toml")]),
        ("unknown member key", "[members.gw1]\nsmtp = \"10.0.0.1:25\"\nadresses = [\"10.0.0.1\"]\n",
         &[(3, "members.gw1.adresses", "did you mean `addresses`")]),
        ("unknown dotted key", "[upstream]\nxclinet.on = true\n",
         &[(2, "upstream.xclinet", "did you mean `xclient`")]),
        ("table where a value belongs", "[upstream]\ntls.mode = \"none\"\n",
         &[(2, "upstream.tls", "invalid type")]),
        ("dangling inject_to", "[members.gw1]\ninject_to = [\"gw9\"]\n",
         &[(2, "members.gw1.inject_to", "\"gw9\" is not a member")]),
        ("self injection", "[members.gw1]\ninject_to = [\"gw1\"]\n",
         &[(2, "members.gw1.inject_to", "cannot inject into itself")]),
        ("lft_sync_to outside inject_to",
         "[members.gw1]\ninject_to = [\"gw2\"]\nlft_sync_to = [\"gw3\"]\n[members.gw2]\n[members.gw3]\n",
         &[(3, "members.gw1.lft_sync_to", "\"gw3\" is not in inject_to [\"gw2\"]")]),
        ("overlapping addresses",
         "[members.gw1]\naddresses = [\"10.0.0.1\"]\n[members.gw2]\naddresses = [\"192.0.2.1\",\n  \"10.0.0.0/24\"]\n",
         &[(5, "members.gw2.addresses", "10.0.0.0/24 (line 5) overlaps 10.0.0.1/32 of members.gw1.addresses (line 2)")]),
        ("bad enum", "[routing]\naffinity = \"sticky\"\n",
         &[(2, "routing.affinity", "expected one of \"source-destination\", \"source\", \"none\"")]),
        ("ranges",
         "[routing]\nclient_prefix_v4 = 33\nclient_prefix_v6 = 129\nmax_attempts = 0\n[health]\nrise = 0\nfall = -1\n",
         &[(2, "routing.client_prefix_v4", "between 0 and 32"), (3, "routing.client_prefix_v6", "between 0 and 128"),
           (4, "routing.max_attempts", "between 1 and"), (6, "health.rise", "between 1"), (7, "health.fall", "between 1")]),
        ("bad units", "[lft]\nthreshold = \"10MB\"\n[health]\ninterval = \"5\"\n[dns]\ninterval = \"soon\"\n",
         &[(2, "lft.threshold", "ambiguous unit"), (4, "health.interval", "missing unit"), (6, "dns.interval", "not a duration")]),
        ("bad health keys",
         "[upstream]\ntls = \"none\"\n[health]\nsmtp_check = \"ping\"\ngina_check = \"smtp\"\nhttp_path = \"health\"\ntimeout = \"0s\"\nstarttls = true\n",
         &[(4, "health.smtp_check", "expected one of \"smtp\", \"tcp\", \"none\""),
           (5, "health.gina_check", "expected one of \"http\", \"tcp\", \"none\""),
           (6, "health.http_path", "must start with \"/\""), (7, "health.timeout", "greater than 0"),
           (8, "health.starttls", "needs [upstream] tls")]),
        ("bad http path", "[health]\nhttp_path = \"/a b\"\n", &[(2, "health.http_path", "not a valid request path")]),
        ("zero timeout", "[upstream]\nconnect_timeout = \"0s\"\n",
         &[(2, "upstream.connect_timeout", "greater than 0")]),
        ("type error", "[members.gw1]\nweight = \"heavy\"\n",
         &[(2, "members.gw1.weight", "expected an integer")]),
        ("bad upstreams", "[members.gw1]\nsmtp = \"2001:db8::1:25\"\ngina = \"ftp://gina:80\"\n[members.gw2]\nsmtp = \"mta\"\n",
         &[(2, "members.gw1.smtp", "brackets"), (3, "members.gw1.gina", "https://host:port"), (5, "members.gw2.smtp", "missing port")]),
        ("bad dns", "[dns]\ndomains = [\"exa mple.com\"]\nnameservers = [\"9.9.9.9\"]\n",
         &[(2, "dns.domains", "not a domain"), (3, "dns.nameservers", "IP:PORT")]),
        ("bad dns probe", "[dns]\ntimeout = \"0s\"\nattempts = 0\nsmtp_probe_port = 70000\nprobe_timeout = \"later\"\n",
         &[(2, "dns.timeout", "greater than 0"), (3, "dns.attempts", "between 1 and 10"),
           (4, "dns.smtp_probe_port", "between 1 and 65535"), (5, "dns.probe_timeout", "not a duration")]),
        ("bad client lookup timeout", "[dns]\nclient_lookup_timeout = \"0s\"\n",
         &[(2, "dns.client_lookup_timeout", "greater than 0")]),
        ("long client lookup timeout", "[dns]\nclient_lookup_timeout = \"2m\"\n",
         &[(2, "dns.client_lookup_timeout", "at most 1m")]),
        ("bad member name", "[members.\"gw 1\"]\n", &[(1, "members.gw 1", "not a valid name")]),
        ("syntax error", "[routing]\naffinity = \"none\"\nmax_attempts = \n",
         &[(3, "routing.max_attempts", "TOML syntax error")]),
        ("members not tables", "members = [\"gw1\"]\n", &[(1, "members", "[members.NAME]")]),
    ];
    for (name, text, want) in cases {
        let f = Files::new(NODE, text);
        let errors = load_policy(&f.policy())
            .err()
            .unwrap_or_else(|| panic!("case {name} loaded"));
        assert_errors(name, &errors, "cluster.toml", want);
    }
}

#[test]
fn broken_node_files() {
    let head = "[node]\nname = \"gw1\"\npolicy = \"cluster.toml\"\n";
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("missing listen", "[[smtp]]\nname = \"in\"\n", &[(4, "smtp[0].listen", "missing")]),
        ("missing name", "[[smtp]]\nlisten = \"127.0.0.1:25\"\n", &[(4, "smtp[0].name", "missing")]),
        ("host name as listen", "[[smtp]]\nname = \"in\"\nlisten = \"localhost:25\"\n",
         &[(6, "smtp[0].listen", "IP:PORT")]),
        ("duplicate names and addresses",
         "[[smtp]]\nname = \"in\"\nlisten = \"127.0.0.1:25\"\n[[http]]\nname = \"in\"\nlisten = \"127.0.0.1:25\"\n",
         &[(8, "http[0].name", "duplicate listener name \"in\", already used by smtp[0].name (line 5)"),
           (9, "http[0].listen", "already used by smtp[0].listen (line 6)")]),
        ("tls half pair", "[[smtp]]\nname = \"in\"\nlisten = \"127.0.0.1:25\"\ntls_key = \"cluster.toml\"\n",
         &[(7, "smtp[0].tls_key", "tls_key is set but tls_cert is not")]),
        ("missing tls file",
         "[[smtp]]\nname = \"in\"\nlisten = \"127.0.0.1:25\"\ntls_cert = \"nope.pem\"\ntls_key = \"cluster.toml\"\n",
         &[(7, "smtp[0].tls_cert", "cannot read")]),
        ("smtp checks",
         "[[smtp]]\nname = \"in\"\nlisten = \"127.0.0.1:25\"\nproxy_protocol = true\nrequire_tls = true\nbare_lf = \"fix\"\nmax_message_size = \"big\"\nmax_sessions = 0\ngreet_delay = \"1 minute\"\ntrusted_proxies = [\"10.0.0.0/33\"]\nmin_data_rate = -1\n",
         &[(7, "smtp[0].proxy_protocol", "needs trusted_proxies"), (8, "smtp[0].require_tls", "needs tls_cert"),
           (9, "smtp[0].bare_lf", "\"reject\", \"normalize\""), (10, "smtp[0].max_message_size", "not a size"),
           (11, "smtp[0].max_sessions", "at least 1"), (12, "smtp[0].greet_delay", "unknown unit"),
           (13, "smtp[0].trusted_proxies", "CIDR"), (14, "smtp[0].min_data_rate", "at least 0")]),
        ("http checks",
         "[[http]]\nname = \"gina\"\nlisten = \"127.0.0.1:0\"\nmax_body_size = 0\nsticky_cookie = \"a b\"\n[[http]]\nname = \"gina2\"\nlisten = \"127.0.0.1:0\"\nmax_body_size = \"lots\"\n",
         &[(7, "http[0].max_body_size", "greater than 0"), (8, "http[0].sticky_cookie", "not a valid cookie name"),
           (12, "http[1].max_body_size", "not a size")]),
        ("smtp as a table", "[smtp]\nname = \"in\"\nlisten = \"127.0.0.1:25\"\n",
         &[(4, "smtp", "write [[smtp]]")]),
        ("unknown keys everywhere",
         "[[smtp]]\nname = \"in\"\nlisten = \"127.0.0.1:25\"\nmax_size = 5\n[log]\nlevle = \"debug\"\n[routing]\n",
         &[(7, "smtp[0].max_size", "valid keys: name, listen"), (9, "log.levle", "did you mean `level`"),
           (10, "routing", "belongs in the policy file")]),
        ("cluster wildcard", "[[smtp]]\nname = \"in\"\nlisten = \"127.0.0.1:25\"\n[cluster]\nlisten = \"0.0.0.0:7025\"\n",
         &[(7, "cluster.advertise", "set advertise")]),
        ("log and local", "[[smtp]]\nname = \"in\"\nlisten = \"127.0.0.1:25\"\n[log]\nformat = \"xml\"\n[local]\ngina_upstream = \"gina\"\n[metrics]\n",
         &[(8, "log.format", "\"text\", \"json\""), (10, "local.gina_upstream", "missing port"), (11, "metrics.listen", "missing")]),
    ];
    for (name, text, want) in cases {
        let f = Files::new(&format!("{head}{text}"), POLICY);
        let errors = load(&f.node())
            .err()
            .unwrap_or_else(|| panic!("case {name} loaded"));
        assert_errors(name, &errors, "mxgate.toml", want);
    }
}

#[test]
fn missing_policy_names_node_policy() {
    let f = Files::new(NODE, POLICY);
    std::fs::remove_file(f.policy()).unwrap();
    let errors = load(&f.node()).unwrap_err();
    assert_errors(
        "missing policy",
        &errors,
        "mxgate.toml",
        &[(4, "node.policy", "cannot read policy file")],
    );
}

#[test]
fn many_problems_in_both_files_are_all_reported() {
    let node = r#"[node]
name = "gw1"
policy = "cluster.toml"
colour = "blue"

[[smtp]]
name = "in"
listen = "127.0.0.1:99999"
bare_lf = "maybe"
"#;
    let policy = r#"[routing]
affinity = "random"
client_prefix_v4 = 40
wat = 1

[members.gw1]
addresses = ["10.0.0.0/8"]
inject_to = ["gw1", "gw2", "ghost"]
lft_sync_to = ["gw3"]

[members.gw2]
addresses = ["10.1.2.3"]
weight = -5

[members.gw3]
"#;
    let f = Files::new(node, policy);
    let errors = load(&f.node()).unwrap_err();
    let got = found(&errors);
    let want: Vec<(&str, usize, &str)> = vec![
        ("mxgate.toml", 4, "node.colour"),
        ("mxgate.toml", 8, "smtp[0].listen"),
        ("mxgate.toml", 9, "smtp[0].bare_lf"),
        ("cluster.toml", 2, "routing.affinity"),
        ("cluster.toml", 3, "routing.client_prefix_v4"),
        ("cluster.toml", 4, "routing.wat"),
        ("cluster.toml", 8, "members.gw1.inject_to"),
        ("cluster.toml", 8, "members.gw1.inject_to"),
        ("cluster.toml", 9, "members.gw1.lft_sync_to"),
        ("cluster.toml", 12, "members.gw2.addresses"),
        ("cluster.toml", 13, "members.gw2.weight"),
    ];
    let want: Vec<_> = want
        .into_iter()
        .map(|(f, l, k)| (f.to_string(), Some(l), k.to_string()))
        .collect();
    assert_eq!(got, want, "\n{errors}");
    let text = errors.to_string();
    assert!(text.contains("cluster.toml:9: members.gw1.lft_sync_to: \"gw3\" is not in inject_to [\"gw1\", \"gw2\", \"ghost\"]"), "{text}");
    assert!(
        text.contains("itself") && text.contains("\"ghost\" is not a member"),
        "{text}"
    );
}

#[test]
fn units() {
    for (text, bytes) in [
        ("0", 0),
        ("512", 512),
        ("512B", 512),
        ("4KiB", 4096),
        ("50MiB", 50 << 20),
        ("1GiB", 1 << 30),
        ("10 MiB", 10 << 20),
    ] {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    for bad in [
        "",
        "MiB",
        "-1",
        "1.5MiB",
        "10MB",
        "10 parsecs",
        "99999999999GiB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
    for (text, ms) in [
        ("250ms", 250),
        ("5s", 5000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("0s", 0),
    ] {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(ms)),
            "{text}"
        );
    }
    for bad in ["", "5", "s", "5 sec", "1h30m", "-5s", "5S", "1.5s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn text_entry_points_match_the_file_ones() {
    let f = Files::new(NODE, POLICY);
    let node = load_node_str(&f.node(), NODE).unwrap();
    assert_eq!(node.name, load_node(&f.node()).unwrap().name);
    assert_eq!(node.policy, f.policy());
    let policy = load_policy_str(&f.policy(), POLICY).unwrap();
    assert_eq!(
        policy.members.len(),
        load_policy(&f.policy()).unwrap().members.len()
    );
    let broken = "[routing]\naffinity = \"sticky\"\n";
    let f = Files::new(NODE, broken);
    let by_path = load_policy(&f.policy()).unwrap_err().0;
    assert_eq!(load_policy_str(&f.policy(), broken).unwrap_err().0, by_path);
}

/// Found by fuzzing: tracing-subscriber panicked on a log filter with a blank
/// before a non-ASCII directive; blanks around directives are now trimmed.
#[test]
fn log_level_directives_are_trimmed() {
    for (level, want) in [
        ("info, é=debug", Some("info,é=debug")),
        (" mxgate=debug ,info", Some("mxgate=debug,info")),
        ("  é", Some("é")),
        ("info,[x{", None),
    ] {
        let f = Files::new(&format!("{NODE}\n[log]\nlevel = {level:?}\n"), POLICY);
        match (load(&f.node()), want) {
            (Ok(c), Some(want)) => assert_eq!(c.log.level, want),
            (Err(e), None) => assert!(e.to_string().contains("log.level"), "{e}"),
            (got, _) => panic!("{level:?}: {:?}", got.map(|c| c.log.level)),
        }
    }
}

/// Found by fuzzing: errors outside any key had an empty key path.
#[test]
fn errors_outside_keys_still_name_a_key() {
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("syntax error before any table", "# comment \u{0}\n", &[(1, "(top level)", "TOML syntax error")]),
        ("junk line", "[routing]\n!!!\n", &[(2, "routing", "TOML syntax error")]),
        ("empty key", "\"\" = 1\n", &[(1, "\"\"", "unknown key")]),
        ("empty key in a table", "[routing]\n\"\" = 1\n", &[(2, "routing.\"\"", "unknown key")]),
    ];
    for (name, text, want) in cases {
        let errors = load_policy_str(Path::new("cluster.toml"), text)
            .err()
            .unwrap_or_else(|| panic!("case {name} loaded"));
        assert_errors(name, &errors, "cluster.toml", want);
    }
}

/// Every error of a failed load names the file, a key and a line inside it.
fn check_errors(errors: &ConfigErrors, file: &Path, text: &str) -> Result<(), TestCaseError> {
    prop_assert!(!errors.0.is_empty());
    let lines = text.split('\n').count();
    for e in &errors.0 {
        prop_assert_eq!(&e.file, file);
        prop_assert!(!e.key.is_empty(), "no key: {:?}", e);
        prop_assert!(!e.message.trim().is_empty(), "no message: {:?}", e);
        if let Some(line) = e.line {
            prop_assert!(
                (1..=lines).contains(&line),
                "line {} of {}: {:?}",
                line,
                lines,
                e
            );
        }
    }
    Ok(())
}

/// TOML-ish text: headers, keys of both files, values of every kind, junk.
fn toml_like() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "[node]",
        "[[smtp]]",
        "[[http]]",
        "[routing]",
        "[upstream]",
        "[members.gw1]",
        "[members.\"\"]",
        "[health]",
        "[lft]",
        "[dns]",
        "[log]",
        "name = \"in\"",
        "listen = \"127.0.0.1:25\"",
        "weight = 0",
        "max_attempts = -1",
        "threshold = \"10MiB\"",
        "threshold = 99999999999999999999",
        "inject_to = [\"gw1\", 1]",
        "interval = \"0s\"",
        "smtp = \"[::1]:25\"",
        "addresses = [\"10.0.0.0/8\", \"10.0.0.1\"]",
        "a.b.c = {x = 1}",
        "= 1",
        "\"\" = 1",
        "x = [[]]",
        "tls_key = \"k\"",
        "bare_lf = \"x\"",
        "#",
        "\u{0}",
        "\"",
        "[",
        "]",
        "'''",
        "key = '''",
        "\r",
        "1979-05-27T07:32:00Z",
        "inf",
        "nan",
    ]);
    prop::collection::vec(
        prop_oneof![piece.prop_map(str::to_string), "\\PC{0,8}"],
        0..16,
    )
    .prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof!["\\PC{0,200}", toml_like()]) {
        let node = Path::new("/nonexistent/mxgate.toml");
        let policy = Path::new("/nonexistent/cluster.toml");
        if let Err(errors) = load_node_str(node, &text) {
            check_errors(&errors, node, &text)?;
        }
        if let Err(errors) = load_policy_str(policy, &text) {
            check_errors(&errors, policy, &text)?;
        }
    }
}

proptest! {
    #[test]
    fn durations_round_trip(ms in 0u64..1_000_000_000) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(&d)), Ok(d));
    }

    #[test]
    fn sizes_round_trip(n in 0u64..(1 << 40)) {
        let text = units::format_size(n).unwrap_or_else(|| n.to_string());
        prop_assert_eq!(parse_size(&text), Ok(n));
    }
}
