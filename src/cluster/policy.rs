//! The replicated policy: validation, the effective routing policy of a
//! clustered node, and the edits `cluster inject set` / `cluster lft set`.
//!
//! Effective policy = the replicated `cluster.toml` + every joined node that
//! is not deleted as a member. A `[members.NAME]` entry for a joined node
//! configures it (addresses, inject_to, weight, ...); its `smtp`/`gina`
//! default to the upstreams the node advertised from its `[local]` section.

use std::path::{Path, PathBuf};

use super::engine::state::ClusterState;
use super::{ClusterError, MemberRecord, Result};
use crate::config::{self, Member, Policy};

/// The name replicated policy text is reported under in errors.
pub fn source_name(local: &Path) -> PathBuf {
    let mut name = local.as_os_str().to_owned();
    name.push(" (replicated)");
    PathBuf::from(name)
}

/// Validates `text` as a policy; the errors, one per line, otherwise.
pub fn validate(name: &Path, text: &str) -> Result<Policy> {
    config::load_policy_str(name, text).map_err(|errors| {
        ClusterError::Invalid(format!(
            "{errors}\npolicy refused, nothing was changed; fix the lines above and apply again"
        ))
    })
}

/// The effective routing policy of the replicated `state`.
pub fn effective(state: &ClusterState, local_policy: &Path) -> Result<Policy> {
    let text = state
        .policy
        .as_ref()
        .map(|p| p.text.as_str())
        .unwrap_or_default();
    let mut policy = validate(&source_name(local_policy), text)?;
    merge_members(&mut policy, state.backends());
    Ok(policy)
}

/// Adds the joined backends to `policy` as members (frontends relay to the
/// members; they are none themselves).
pub fn merge_members<'a>(policy: &mut Policy, backends: impl Iterator<Item = &'a MemberRecord>) {
    for record in backends.filter(|m| !m.deleted && m.role == super::Role::Backend) {
        let smtp = record
            .smtp_upstream
            .as_deref()
            .and_then(|s| config::parse_host_port(s).ok());
        match policy.members.iter_mut().find(|m| m.name == record.name) {
            Some(member) => {
                if member.smtp.is_none() {
                    member.smtp = smtp;
                }
                if member.gina.is_none() {
                    member.gina = record.gina_upstream.clone();
                }
                if record.comment.is_some() {
                    member.comment = record.comment.clone();
                }
                if record.location.is_some() {
                    member.location = record.location.clone();
                }
            }
            None => policy.members.push(Member {
                name: record.name.clone(),
                smtp,
                gina: record.gina_upstream.clone(),
                weight: 100,
                ingress: true,
                addresses: Vec::new(),
                inject_to: Vec::new(),
                lft_sync_to: Vec::new(),
                comment: record.comment.clone(),
                location: record.location.clone(),
            }),
        }
    }
    policy.members.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Which list of a member an edit sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKey {
    /// `inject_to`.
    InjectTo,
    /// `lft_sync_to`.
    LftSyncTo,
}

impl ListKey {
    fn key(self) -> &'static str {
        match self {
            ListKey::InjectTo => "inject_to",
            ListKey::LftSyncTo => "lft_sync_to",
        }
    }
}

/// Sets `members.MEMBER.<list> = targets` in the policy text. Joined nodes
/// named here get a `[members.NAME]` table if they have none, so the file
/// stays valid on its own. `known` are the joined nodes' names.
pub fn set_list(
    text: &str,
    member: &str,
    list: ListKey,
    targets: &[String],
    known: &[String],
) -> Result<String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| {
        ClusterError::Invalid(format!("the replicated policy is not valid TOML: {e}"))
    })?;
    let static_names: Vec<String> = doc
        .get("members")
        .and_then(|m| m.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    let exists = |n: &str| static_names.iter().any(|s| s == n) || known.iter().any(|k| k == n);
    for name in std::iter::once(member).chain(targets.iter().map(String::as_str)) {
        if !exists(name) {
            let mut all: Vec<&String> = static_names.iter().chain(known.iter()).collect();
            all.sort();
            all.dedup();
            return Err(ClusterError::Invalid(format!(
                "{name:?} is not a member (members: {}); nothing was changed",
                all.iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let members = doc
        .entry("members")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| ClusterError::Invalid("`members` in the policy is not a table".into()))?;
    for name in std::iter::once(member).chain(targets.iter().map(String::as_str)) {
        members
            .entry(name.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    let entry = members
        .get_mut(member)
        .and_then(|v| v.as_table_mut())
        .ok_or_else(|| ClusterError::Invalid(format!("members.{member} is not a table")))?;
    entry.insert(
        list.key().to_string(),
        toml::Value::Array(targets.iter().cloned().map(toml::Value::String).collect()),
    );
    toml::to_string(&doc).map_err(|e| ClusterError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests;
