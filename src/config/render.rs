//! `check-config` output: the effective configuration as TOML, both files,
//! every default filled in, in the same shape as the files themselves.

use serde::Serialize;

use super::types::*;

/// The node part, in `mxgate.toml` order.
#[derive(Serialize)]
struct NodeView<'a> {
    node: &'a NodeConfig,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    smtp: &'a [SmtpListener],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    http: &'a [HttpListener],
    #[serde(skip_serializing_if = "Option::is_none")]
    local: &'a Option<LocalConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: &'a Option<ClusterConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: &'a Option<MetricsConfig>,
    log: &'a LogConfig,
}

/// The policy part, members keyed by name as in `cluster.toml`.
#[derive(Serialize)]
struct PolicyView<'a> {
    routing: &'a RoutingPolicy,
    upstream: &'a UpstreamPolicy,
    health: &'a HealthPolicy,
    dns: &'a DnsPolicy,
    lft: &'a LftPolicy,
    members: toml::Table,
}

pub(super) fn render(config: &Config) -> String {
    let node = NodeView {
        node: &config.node,
        smtp: &config.smtp,
        http: &config.http,
        local: &config.local,
        cluster: &config.cluster,
        metrics: &config.metrics,
        log: &config.log,
    };
    let policy = &config.policy;
    let mut members = toml::Table::new();
    for m in &policy.members {
        match toml::Table::try_from(m) {
            Ok(mut t) => {
                t.remove("name");
                members.insert(m.name.clone(), toml::Value::Table(t));
            }
            Err(e) => return format!("# cannot render member {}: {e}\n", m.name),
        }
    }
    let view = PolicyView {
        routing: &policy.routing,
        upstream: &policy.upstream,
        health: &policy.health,
        dns: &policy.dns,
        lft: &policy.lft,
        members,
    };
    let part = |what: &str, r: Result<String, toml::ser::Error>| match r {
        Ok(text) => text,
        Err(e) => format!("# cannot render {what}: {e}\n"),
    };
    format!(
        "# Effective node settings (mxgate.toml), defaults filled in.\n\n{}\n# Effective policy ({}), defaults filled in.\n\n{}",
        part("node settings", toml::to_string(&node)),
        config.node.policy.display().to_string().replace('\n', " "),
        part("policy", toml::to_string(&view)),
    )
}
