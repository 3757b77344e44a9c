//! `cluster.toml` -> [`Policy`]: routing, upstream, health, DNS and LFT
//! settings with defaults, and the members with their cross-checks
//! (dangling names, self-injection, `lft_sync_to` within `inject_to`,
//! overlapping `addresses`).

use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::file::{
    FileDns, FileHealth, FileLft, FileMember, FileRouting, FileUpstream, node_schema, policy_schema,
};
use super::source::{Ctx, check_keys, parse};
use super::types::*;
use super::units;

/// Builds the policy; `None` when the file is not valid TOML. Other errors
/// are recorded in `ctx` and a best-effort policy is still returned.
pub(super) fn build(ctx: &mut Ctx, text: &str, dir: &Path) -> Option<Policy> {
    let mut tree = parse(ctx, text)?;
    check_keys(
        ctx,
        &mut tree,
        &policy_schema(),
        ("mxgate.toml", &node_schema()),
    );
    let tree = tree;

    let r: FileRouting = table(ctx, &tree, "routing");
    let routing = RoutingPolicy {
        affinity: ctx.choice(
            &r.affinity,
            "routing.affinity",
            &[
                ("source-destination", Affinity::SourceDestination),
                ("source", Affinity::Source),
                ("none", Affinity::None),
            ],
            Affinity::SourceDestination,
        ),
        client_prefix_v4: small(ctx.int(
            &r.client_prefix_v4,
            "routing.client_prefix_v4",
            0..=32,
            32,
        )),
        client_prefix_v6: small(ctx.int(
            &r.client_prefix_v6,
            "routing.client_prefix_v6",
            0..=128,
            64,
        )),
        max_attempts: count(ctx.int(&r.max_attempts, "routing.max_attempts", 1..=1000, 3)),
    };

    let u: FileUpstream = table(ctx, &tree, "upstream");
    let secs = Duration::from_secs;
    let upstream = UpstreamPolicy {
        xclient: u.xclient.as_ref().is_none_or(|v| *v.get_ref()),
        proxy_protocol: ctx.choice(
            &u.proxy_protocol,
            "upstream.proxy_protocol",
            &[
                ("off", ProxyProtocol::Off),
                ("v1", ProxyProtocol::V1),
                ("v2", ProxyProtocol::V2),
            ],
            ProxyProtocol::Off,
        ),
        tls: ctx.choice(
            &u.tls,
            "upstream.tls",
            &[
                ("none", UpstreamTls::None),
                ("opportunistic", UpstreamTls::Opportunistic),
                ("required", UpstreamTls::Required),
            ],
            UpstreamTls::Opportunistic,
        ),
        connect_timeout: ctx.positive_duration(
            &u.connect_timeout,
            "upstream.connect_timeout",
            secs(5),
        ),
        greeting_timeout: ctx.positive_duration(
            &u.greeting_timeout,
            "upstream.greeting_timeout",
            secs(30),
        ),
        command_timeout: ctx.positive_duration(
            &u.command_timeout,
            "upstream.command_timeout",
            secs(300),
        ),
        data_timeout: ctx.positive_duration(&u.data_timeout, "upstream.data_timeout", secs(600)),
        backoff: ctx.duration(&u.backoff, "upstream.backoff", secs(10)),
        tls_ca_file: u.tls_ca_file.as_ref().and_then(|v| {
            let path = dir.join(v.get_ref());
            match std::fs::File::open(&path) {
                Ok(_) => Some(path),
                Err(e) => {
                    ctx.at(
                        v,
                        "upstream.tls_ca_file",
                        format!("cannot open {}: {e}", path.display()),
                    );
                    None
                }
            }
        }),
        tls_insecure_skip_verify: u
            .tls_insecure_skip_verify
            .as_ref()
            .is_some_and(|v| *v.get_ref()),
    };

    let h: FileHealth = table(ctx, &tree, "health");
    let interval = ctx.positive_duration(&h.interval, "health.interval", secs(5));
    let health = HealthPolicy {
        interval,
        rise: count(ctx.int(&h.rise, "health.rise", 1..=1000, 2)),
        fall: count(ctx.int(&h.fall, "health.fall", 1..=1000, 3)),
        timeout: ctx.positive_duration(&h.timeout, "health.timeout", interval),
        smtp_check: ctx.choice(
            &h.smtp_check,
            "health.smtp_check",
            &[
                ("smtp", SmtpCheck::Smtp),
                ("tcp", SmtpCheck::Tcp),
                ("none", SmtpCheck::None),
            ],
            SmtpCheck::Smtp,
        ),
        gina_check: ctx.choice(
            &h.gina_check,
            "health.gina_check",
            &[
                ("http", GinaCheck::Http),
                ("tcp", GinaCheck::Tcp),
                ("none", GinaCheck::None),
            ],
            GinaCheck::Http,
        ),
        http_path: h
            .http_path
            .as_ref()
            .and_then(|v| ctx.parse(v, "health.http_path", units::check_http_path))
            .unwrap_or_else(|| "/".to_owned()),
        starttls: h.starttls.as_ref().is_some_and(|v| *v.get_ref()),
    };
    if let Some(v) = h.starttls.as_ref().filter(|v| *v.get_ref())
        && upstream.tls == UpstreamTls::None
    {
        ctx.at(
            v,
            "health.starttls",
            "needs [upstream] tls = \"opportunistic\" or \"required\" (its TLS settings are used); it is \"none\"",
        );
    }

    let d: FileDns = table(ctx, &tree, "dns");
    let dns = DnsPolicy {
        domains: (d.domains.iter().flatten())
            .filter_map(|v| {
                ctx.parse(v, "dns.domains", |t| {
                    units::check_domain(t).map(|()| t.to_string())
                })
            })
            .collect(),
        nameservers: (d.nameservers.iter().flatten())
            .filter_map(|v| ctx.parse(v, "dns.nameservers", units::parse_socket))
            .collect(),
        interval: ctx.positive_duration(&d.interval, "dns.interval", secs(300)),
        timeout: ctx.positive_duration(&d.timeout, "dns.timeout", secs(5)),
        attempts: count(ctx.int(&d.attempts, "dns.attempts", 1..=10, 2)),
        smtp_probe_port: u16::try_from(ctx.int(
            &d.smtp_probe_port,
            "dns.smtp_probe_port",
            1..=65535,
            25,
        ))
        .unwrap_or(25),
        probe_timeout: ctx.positive_duration(&d.probe_timeout, "dns.probe_timeout", secs(10)),
        client_lookup_timeout: client_lookup_timeout(ctx, &d),
        client_names: d.client_names.as_ref().is_none_or(|v| *v.get_ref()),
    };

    let l: FileLft = table(ctx, &tree, "lft");
    let lft = LftPolicy {
        threshold: ctx.size(&l.threshold, "lft.threshold", 10 << 20),
        max_message_size: ctx.size(&l.max_message_size, "lft.max_message_size", 64 << 20),
    };

    let members = members(ctx, &tree);
    Some(Policy {
        routing,
        upstream,
        health,
        dns,
        lft,
        members,
    })
}

fn table<T: DeserializeOwned + Default>(ctx: &mut Ctx, tree: &DeTable<'_>, key: &str) -> T {
    tree.get(key)
        .and_then(|v| ctx.section(tree, v))
        .unwrap_or_default()
}

/// Range-checked by the caller already.
fn small(n: i64) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// All `[members.NAME]`, sorted by name, cross-checked.
fn members(ctx: &mut Ctx, tree: &DeTable<'_>) -> Vec<Member> {
    let mut files: Vec<(Spanned<String>, FileMember)> = Vec::new();
    match tree.get("members") {
        None => {}
        Some(v) => match v.get_ref() {
            DeValue::Table(entries) => {
                for (name, value) in entries.iter() {
                    let key = format!("members.{}", name.get_ref());
                    if let Err(m) = units::check_name(name.get_ref()) {
                        ctx.at(name, &key, m);
                    }
                    let file = ctx.section(tree, value).unwrap_or_default();
                    files.push((Spanned::new(name.span(), name.get_ref().to_string()), file));
                }
            }
            _ => ctx.at(
                v,
                "members",
                "expected tables, one per member: [members.NAME]",
            ),
        },
    }
    files.sort_by(|a, b| a.0.get_ref().cmp(b.0.get_ref()));
    let names: Vec<&str> = files.iter().map(|(n, _)| n.get_ref().as_str()).collect();

    let mut members = Vec::new();
    let mut all_addresses: Vec<(String, IpNet, usize)> = Vec::new();
    for (name, f) in &files {
        let name = name.get_ref();
        let k = |field: &str| format!("members.{name}.{field}");
        let smtp = f
            .smtp
            .as_ref()
            .and_then(|v| ctx.parse(v, &k("smtp"), units::parse_host_port));
        let gina = f.gina.as_ref().and_then(|v| {
            ctx.parse(v, &k("gina"), |t| {
                units::check_gina(t).map(|()| t.to_string())
            })
        });
        let weight = count(ctx.int(&f.weight, &k("weight"), 0..=i64::from(u32::MAX), 100));
        let mut addresses = Vec::new();
        for v in f.addresses.iter().flatten() {
            let Some(net) = ctx.parse(v, &k("addresses"), units::parse_net) else {
                continue;
            };
            let line = ctx.line(v.span().start);
            for (other, other_net, other_line) in &all_addresses {
                if other != name && overlaps(net, *other_net) {
                    let message = format!(
                        "{net} (line {line}) overlaps {other_net} of members.{other}.addresses (line {other_line}); a source address must identify one member"
                    );
                    ctx.at(v, &k("addresses"), message);
                }
            }
            all_addresses.push((name.clone(), net, line));
            addresses.push(net);
        }
        let inject_to = targets(ctx, &f.inject_to, &k("inject_to"), |ctx, v, t| {
            if t == name {
                ctx.at(
                    v,
                    &k("inject_to"),
                    format!("{t:?} is this member itself; a member cannot inject into itself"),
                );
            } else if !names.contains(&t) {
                ctx.at(
                    v,
                    &k("inject_to"),
                    format!("{t:?} is not a member (members: {})", quoted(&names)),
                );
            }
        });
        let lft_sync_to = targets(ctx, &f.lft_sync_to, &k("lft_sync_to"), |ctx, v, t| {
            if !inject_to.iter().any(|i| i == t) {
                let mut message = format!("{t:?} is not in inject_to [{}]", quoted(&inject_to));
                if !names.contains(&t) {
                    message.push_str(&format!(
                        " and is not a member (members: {})",
                        quoted(&names)
                    ));
                }
                ctx.at(v, &k("lft_sync_to"), message);
            }
        });
        members.push(Member {
            name: name.clone(),
            smtp,
            gina,
            weight,
            ingress: f.ingress.as_ref().is_none_or(|v| *v.get_ref()),
            addresses,
            inject_to,
            lft_sync_to,
            comment: f.comment.as_ref().map(|v| v.get_ref().clone()),
            location: f.location.as_ref().map(|v| v.get_ref().clone()),
        });
    }
    members
}

/// A list of member names: duplicates are reported, `check` does the rest.
fn targets(
    ctx: &mut Ctx,
    list: &Option<Vec<Spanned<String>>>,
    key: &str,
    mut check: impl FnMut(&mut Ctx, &Spanned<String>, &str),
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in list.iter().flatten() {
        let t = v.get_ref();
        if out.contains(t) {
            ctx.at(v, key, format!("{t:?} is listed twice"));
            continue;
        }
        check(ctx, v, t);
        out.push(t.clone());
    }
    out
}

fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn quoted<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(|n| format!("{:?}", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `[dns] client_lookup_timeout`: more than 0, at most a minute (a session
/// waits that long at its first MAIL when the name servers do not answer).
fn client_lookup_timeout(ctx: &mut Ctx, d: &FileDns) -> Duration {
    const KEY: &str = "dns.client_lookup_timeout";
    let default = Duration::from_secs(2);
    let timeout = ctx.positive_duration(&d.client_lookup_timeout, KEY, default);
    match &d.client_lookup_timeout {
        Some(v) if timeout > Duration::from_secs(60) => {
            ctx.at(v, KEY, "must be at most 1m");
            default
        }
        _ => timeout,
    }
}
