//! `mxgate.toml` -> node settings: listeners, `[local]`, `[cluster]`,
//! `[metrics]`, `[log]`, with defaults filled in and every problem recorded.
//!
//! Relative paths are resolved against the file's directory. The policy is
//! loaded separately ([`super::policy`]); this step only finds its path.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::file::{
    FileCluster, FileHttp, FileLocal, FileLog, FileMetrics, FileNode, FileSmtp, node_schema,
    policy_schema,
};
use super::source::{Ctx, check_keys, parse};
use super::types::*;
use super::units;

/// Everything from `mxgate.toml`; the policy is attached by [`super::load`].
pub(super) struct NodeFile {
    pub node: NodeConfig,
    pub smtp: Vec<SmtpListener>,
    pub http: Vec<HttpListener>,
    pub local: Option<LocalConfig>,
    pub cluster: Option<ClusterConfig>,
    pub metrics: Option<MetricsConfig>,
    pub log: LogConfig,
    /// Where `[node] policy` was written, for errors about the policy file.
    pub policy_span: Option<Range<usize>>,
}

/// Builds the node settings; `None` only when the file is not valid TOML.
pub(super) fn build(ctx: &mut Ctx, text: &str, dir: &Path) -> Option<NodeFile> {
    let mut tree = parse(ctx, text)?;
    check_keys(
        ctx,
        &mut tree,
        &node_schema(),
        ("the policy file (cluster.toml)", &policy_schema()),
    );
    let tree = tree;

    let node: FileNode = table(ctx, &tree, "node").unwrap_or_default();
    let name = match &node.name {
        Some(v) => ctx.parse(v, "node.name", |t| {
            units::check_name(t).map(|()| t.to_string())
        }),
        None => None,
    }
    .unwrap_or_else(default_node_name);
    let node_config = NodeConfig {
        name,
        data_dir: Ctx::path(&node.data_dir, dir, "/var/lib/mxgate"),
        policy: Ctx::path(&node.policy, dir, "/etc/mxgate/cluster.toml"),
        drain_timeout: ctx.positive_duration(
            &node.drain_timeout,
            "node.drain_timeout",
            Duration::from_secs(30),
        ),
        worker_threads: usize::try_from(ctx.int(
            &node.worker_threads,
            "node.worker_threads",
            0..=1024,
            0,
        ))
        .unwrap_or(0),
    };

    let mut listeners = Listeners::default();
    let smtp = tables::<FileSmtp>(ctx, &tree, "smtp")
        .into_iter()
        .filter_map(|(i, span, f)| smtp(ctx, &mut listeners, i, span, f, &node_config.name, dir))
        .collect();
    let http = tables::<FileHttp>(ctx, &tree, "http")
        .into_iter()
        .filter_map(|(i, span, f)| http(ctx, &mut listeners, i, span, f, dir))
        .collect();
    if listeners.names.is_empty() && !tree.contains_key("smtp") && !tree.contains_key("http") {
        ctx.error(
            None,
            "smtp",
            "no listeners: add at least one [[smtp]] table with name and listen",
        );
    }

    let local = table::<FileLocal>(ctx, &tree, "local").map(|f| LocalConfig {
        smtp_upstream: f
            .smtp_upstream
            .as_ref()
            .and_then(|v| ctx.parse(v, "local.smtp_upstream", units::parse_host_port)),
        gina_upstream: f.gina_upstream.as_ref().and_then(|v| {
            ctx.parse(v, "local.gina_upstream", |t| {
                units::check_gina(t).map(|()| t.to_string())
            })
        }),
    });
    let cluster = table::<FileCluster>(ctx, &tree, "cluster")
        .and_then(|f| cluster(ctx, &mut listeners, &tree, f));
    let metrics = table::<FileMetrics>(ctx, &tree, "metrics").and_then(|f| {
        let span = tree.get("metrics").map(|v| v.span());
        let listen = required_socket(ctx, &mut listeners, &f.listen, span, "metrics.listen")?;
        Some(MetricsConfig { listen })
    });
    let log_file: FileLog = table(ctx, &tree, "log").unwrap_or_default();
    let log = LogConfig {
        format: ctx.choice(
            &log_file.format,
            "log.format",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        ),
        level: match &log_file.level {
            Some(v) => ctx
                .parse(v, "log.level", |t| {
                    let t = trim_directives(t);
                    tracing_subscriber::EnvFilter::builder()
                        .parse(&t)
                        .map(|_| t.clone())
                        .map_err(|e| {
                            format!(
                                "{t:?} is not a log filter ({e}); e.g. \"info\" or \"mxgate=debug\""
                            )
                        })
                })
                .unwrap_or_else(|| "info".into()),
            None => "info".into(),
        },
    };

    Some(NodeFile {
        node: node_config,
        smtp,
        http,
        local,
        cluster,
        metrics,
        log,
        policy_span: node.policy.as_ref().map(Spanned::span),
    })
}

/// The host name, or `mxgate` when it cannot be read.
fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| units::check_name(h).is_ok())
        .unwrap_or_else(|| "mxgate".into())
}

/// One optional table.
fn table<T: DeserializeOwned>(ctx: &mut Ctx, tree: &DeTable<'_>, key: &str) -> Option<T> {
    tree.get(key).and_then(|v| ctx.section(tree, v))
}

/// An array of tables (`[[key]]`): index, header span and contents of each good one.
fn tables<T: DeserializeOwned>(
    ctx: &mut Ctx,
    tree: &DeTable<'_>,
    key: &str,
) -> Vec<(usize, Range<usize>, T)> {
    match tree.get(key) {
        None => Vec::new(),
        Some(v) => match v.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| ctx.section(tree, item).map(|t| (i, item.span(), t)))
                .collect(),
            _ => {
                ctx.at(
                    v,
                    key,
                    format!("expected an array of tables: write [[{key}]], not [{key}]"),
                );
                Vec::new()
            }
        },
    }
}

/// Names and addresses already taken, to catch duplicates across all listeners.
#[derive(Default)]
struct Listeners {
    names: Vec<(String, String, usize)>,
    addresses: Vec<(SocketAddr, String, usize)>,
}

fn name(
    ctx: &mut Ctx,
    seen: &mut Listeners,
    v: &Option<Spanned<String>>,
    span: &Range<usize>,
    key: &str,
) -> Option<String> {
    let Some(v) = v else {
        ctx.error(
            Some(span.clone()),
            key,
            "missing; every listener needs a name",
        );
        return None;
    };
    let name = ctx.parse(v, key, |t| units::check_name(t).map(|()| t.to_string()))?;
    let line = ctx.line(v.span().start);
    if let Some((_, other, other_line)) = seen.names.iter().find(|(n, _, _)| *n == name) {
        let message = format!(
            "duplicate listener name {name:?}, already used by {other} (line {other_line})"
        );
        ctx.at(v, key, message);
    } else {
        seen.names.push((name.clone(), key.to_string(), line));
    }
    Some(name)
}

fn required_socket(
    ctx: &mut Ctx,
    seen: &mut Listeners,
    v: &Option<Spanned<String>>,
    span: Option<Range<usize>>,
    key: &str,
) -> Option<SocketAddr> {
    let Some(v) = v else {
        ctx.error(
            span,
            key,
            "missing; set the address to listen on, e.g. \"0.0.0.0:25\"",
        );
        return None;
    };
    let addr = ctx.parse(v, key, units::parse_socket)?;
    let line = ctx.line(v.span().start);
    // Port 0 (the system picks a free port) never collides.
    if let Some((_, other, other_line)) = seen
        .addresses
        .iter()
        .find(|(a, _, _)| *a == addr && addr.port() != 0)
    {
        let message = format!("{addr} is already used by {other} (line {other_line})");
        ctx.at(v, key, message);
    } else {
        seen.addresses.push((addr, key.to_string(), line));
    }
    Some(addr)
}

/// `tls_cert` and `tls_key`: both or neither, and both readable.
fn tls_pair(
    ctx: &mut Ctx,
    cert: &Option<Spanned<String>>,
    key: &Option<Spanned<String>>,
    prefix: &str,
    dir: &Path,
) -> (Option<PathBuf>, Option<PathBuf>) {
    let mut file = |v: &Option<Spanned<String>>, name: &str, other: &str, other_set: bool| {
        let v = v.as_ref()?;
        let key = format!("{prefix}.{name}");
        if !other_set {
            ctx.at(
                v,
                &key,
                format!("{name} is set but {other} is not; set both or neither"),
            );
        }
        let path = dir.join(v.get_ref());
        if let Err(e) = std::fs::File::open(&path) {
            ctx.at(v, &key, format!("cannot read {}: {e}", path.display()));
        }
        Some(path)
    };
    let c = file(cert, "tls_cert", "tls_key", key.is_some());
    let k = file(key, "tls_key", "tls_cert", cert.is_some());
    (c, k)
}

fn smtp(
    ctx: &mut Ctx,
    seen: &mut Listeners,
    i: usize,
    span: Range<usize>,
    f: FileSmtp,
    node_name: &str,
    dir: &Path,
) -> Option<SmtpListener> {
    let p = format!("smtp[{i}]");
    let k = |name: &str| format!("{p}.{name}");
    let name = name(ctx, seen, &f.name, &span, &k("name"));
    let listen = required_socket(ctx, seen, &f.listen, Some(span.clone()), &k("listen"));
    let hostname = match &f.hostname {
        Some(v) => ctx.parse(v, &k("hostname"), |t| {
            units::check_domain(t).map(|()| t.to_string())
        }),
        None => Some(node_name.to_string()),
    };
    let trusted_proxies: Vec<_> = (f.trusted_proxies.iter().flatten())
        .filter_map(|v| ctx.parse(v, &k("trusted_proxies"), units::parse_net))
        .collect();
    let proxy_protocol = f.proxy_protocol.as_ref().is_some_and(|v| *v.get_ref());
    if let Some(v) = f
        .proxy_protocol
        .as_ref()
        .filter(|_| proxy_protocol && trusted_proxies.is_empty())
    {
        ctx.at(v, &k("proxy_protocol"), "proxy_protocol = true needs trusted_proxies (the load balancers allowed to send PROXY headers)");
    }
    let (tls_cert, tls_key) = tls_pair(ctx, &f.tls_cert, &f.tls_key, &p, dir);
    let require_tls = f.require_tls.as_ref().is_some_and(|v| *v.get_ref());
    if let Some(v) = f
        .require_tls
        .as_ref()
        .filter(|_| require_tls && tls_cert.is_none())
    {
        ctx.at(
            v,
            &k("require_tls"),
            "require_tls = true needs tls_cert and tls_key (STARTTLS must be offered)",
        );
    }
    let max_message_size = ctx.size(&f.max_message_size, &k("max_message_size"), 50 << 20);
    if let Some(v) = f
        .max_message_size
        .as_ref()
        .filter(|_| max_message_size == 0)
    {
        ctx.at(v, &k("max_message_size"), "must be greater than 0");
    }
    let mut count = |v: &Option<Spanned<i64>>, key: &str, default: i64| {
        usize::try_from(ctx.int(v, &k(key), 1..=i64::MAX, default)).unwrap_or(usize::MAX)
    };
    let max_sessions = count(&f.max_sessions, "max_sessions", 10_000);
    let max_sessions_per_client = count(&f.max_sessions_per_client, "max_sessions_per_client", 50);
    let max_recipients = count(&f.max_recipients, "max_recipients", 1000);
    let max_errors = count(&f.max_errors, "max_errors", 20);
    let bare_lf = ctx.choice(
        &f.bare_lf,
        &k("bare_lf"),
        &[("reject", BareLf::Reject), ("normalize", BareLf::Normalize)],
        BareLf::Reject,
    );
    let greet_delay = ctx.duration(&f.greet_delay, &k("greet_delay"), Duration::ZERO);
    let command_timeout = ctx.positive_duration(
        &f.command_timeout,
        &k("command_timeout"),
        Duration::from_secs(300),
    );
    let data_timeout = ctx.positive_duration(
        &f.data_timeout,
        &k("data_timeout"),
        Duration::from_secs(180),
    );
    // Postfix's smtpd_min_data_rate default; 0 turns the rate off.
    let min_data_rate = ctx.int(&f.min_data_rate, &k("min_data_rate"), 0..=i64::MAX, 500);
    let min_data_rate = u64::try_from(min_data_rate).unwrap_or(0);

    Some(SmtpListener {
        name: name?,
        listen: listen?,
        hostname: hostname?,
        proxy_protocol,
        trusted_proxies,
        tls_cert,
        tls_key,
        require_tls,
        max_message_size,
        max_sessions,
        max_sessions_per_client,
        max_recipients,
        bare_lf,
        greet_delay,
        command_timeout,
        data_timeout,
        min_data_rate,
        max_errors,
    })
}

fn http(
    ctx: &mut Ctx,
    seen: &mut Listeners,
    i: usize,
    span: Range<usize>,
    f: FileHttp,
    dir: &Path,
) -> Option<HttpListener> {
    let p = format!("http[{i}]");
    let k = |name: &str| format!("{p}.{name}");
    let name = name(ctx, seen, &f.name, &span, &k("name"));
    let listen = required_socket(ctx, seen, &f.listen, Some(span.clone()), &k("listen"));
    let (tls_cert, tls_key) = tls_pair(ctx, &f.tls_cert, &f.tls_key, &p, dir);
    let upstream_timeout = ctx.positive_duration(
        &f.upstream_timeout,
        &k("upstream_timeout"),
        Duration::from_secs(60),
    );
    let sticky_cookie = f.sticky_cookie.as_ref().and_then(|v| {
        ctx.parse(v, &k("sticky_cookie"), |t| {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if !t.is_empty() && t.chars().all(token) {
                Ok(t.to_string())
            } else {
                Err(format!("{t:?} is not a valid cookie name"))
            }
        })
    });
    let max_body_size = ctx.size(&f.max_body_size, &k("max_body_size"), 100 << 20);
    if let Some(v) = f.max_body_size.as_ref().filter(|_| max_body_size == 0) {
        ctx.at(v, &k("max_body_size"), "must be greater than 0");
    }
    Some(HttpListener {
        name: name?,
        listen: listen?,
        tls_cert,
        tls_key,
        upstream_timeout,
        sticky_cookie,
        max_body_size,
    })
}

fn cluster(
    ctx: &mut Ctx,
    seen: &mut Listeners,
    tree: &DeTable<'_>,
    f: FileCluster,
) -> Option<ClusterConfig> {
    let span = tree.get("cluster").map(|v| v.span());
    let listen = required_socket(ctx, seen, &f.listen, span.clone(), "cluster.listen");
    let advertise = match &f.advertise {
        Some(v) => {
            let a = ctx.parse(v, "cluster.advertise", units::parse_socket)?;
            if a.ip().is_unspecified() || a.port() == 0 {
                ctx.at(
                    v,
                    "cluster.advertise",
                    format!("{a} is not an address other nodes can reach"),
                );
            }
            a
        }
        None => {
            let l = listen?;
            if l.ip().is_unspecified() {
                let message = format!(
                    "missing; listen ({l}) is a wildcard address, so set advertise to the address other nodes reach this node at"
                );
                ctx.error(span, "cluster.advertise", message);
            }
            l
        }
    };
    Some(ClusterConfig {
        listen: listen?,
        advertise,
    })
}

/// Trims every directive of a filter. tracing-subscriber 0.3 slices each
/// directive at offsets taken from its trimmed copy: leading blanks shift
/// them into the middle of a UTF-8 sequence (a panic, found by fuzzing) or
/// off the target name. Trimmed, the offsets agree.
pub fn trim_directives(filter: &str) -> String {
    filter
        .split(',')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(",")
}
