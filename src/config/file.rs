//! The files as written: serde `File*` structs, one per table.
//!
//! Every key is optional here and keeps its span (`Spanned`) so that the
//! build step in [`super::node`] and [`super::policy`] can fill defaults and
//! report semantic errors with a line. Values with a syntax of their own
//! (durations, addresses, enums) stay strings until then, so that one bad
//! value does not hide the next. Each table is deserialized on its own, and
//! unknown keys were already reported and removed by [`super::source`]; the
//! `deny_unknown_fields` below is the safety net.

use serde::Deserialize;
use toml::Spanned;

type S<T> = Option<Spanned<T>>;
type List = Option<Vec<Spanned<String>>>;

/// `[node]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [node]")]
pub(super) struct FileNode {
    pub name: S<String>,
    pub data_dir: S<String>,
    pub policy: S<String>,
    pub drain_timeout: S<String>,
    pub worker_threads: S<i64>,
}

/// One `[[smtp]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [[smtp]]")]
pub(super) struct FileSmtp {
    pub name: S<String>,
    pub listen: S<String>,
    pub hostname: S<String>,
    pub proxy_protocol: S<bool>,
    pub trusted_proxies: List,
    pub tls_cert: S<String>,
    pub tls_key: S<String>,
    pub require_tls: S<bool>,
    pub max_message_size: S<RawSize>,
    pub max_sessions: S<i64>,
    pub max_sessions_per_client: S<i64>,
    pub max_recipients: S<i64>,
    pub bare_lf: S<String>,
    pub greet_delay: S<String>,
    pub command_timeout: S<String>,
    pub data_timeout: S<String>,
    pub min_data_rate: S<i64>,
    pub max_errors: S<i64>,
}

/// One `[[http]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [[http]]")]
pub(super) struct FileHttp {
    pub name: S<String>,
    pub listen: S<String>,
    pub tls_cert: S<String>,
    pub tls_key: S<String>,
    pub upstream_timeout: S<String>,
    pub sticky_cookie: S<String>,
    pub max_body_size: S<RawSize>,
}

/// `[local]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [local]")]
pub(super) struct FileLocal {
    pub smtp_upstream: S<String>,
    pub gina_upstream: S<String>,
}

/// `[cluster]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [cluster]")]
pub(super) struct FileCluster {
    pub listen: S<String>,
    pub advertise: S<String>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [metrics]")]
pub(super) struct FileMetrics {
    pub listen: S<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [log]")]
pub(super) struct FileLog {
    pub format: S<String>,
    pub level: S<String>,
}

/// `[routing]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [routing]")]
pub(super) struct FileRouting {
    pub affinity: S<String>,
    pub client_prefix_v4: S<i64>,
    pub client_prefix_v6: S<i64>,
    pub max_attempts: S<i64>,
}

/// `[upstream]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [upstream]")]
pub(super) struct FileUpstream {
    pub xclient: S<bool>,
    pub proxy_protocol: S<String>,
    pub tls: S<String>,
    pub connect_timeout: S<String>,
    pub greeting_timeout: S<String>,
    pub command_timeout: S<String>,
    pub data_timeout: S<String>,
    pub backoff: S<String>,
    pub tls_ca_file: S<String>,
    pub tls_insecure_skip_verify: S<bool>,
}

/// `[health]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [health]")]
pub(super) struct FileHealth {
    pub interval: S<String>,
    pub rise: S<i64>,
    pub fall: S<i64>,
    pub timeout: S<String>,
    pub smtp_check: S<String>,
    pub gina_check: S<String>,
    pub http_path: S<String>,
    pub starttls: S<bool>,
}

/// `[dns]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [dns]")]
pub(super) struct FileDns {
    pub domains: List,
    pub nameservers: List,
    pub interval: S<String>,
    pub timeout: S<String>,
    pub attempts: S<i64>,
    pub smtp_probe_port: S<i64>,
    pub probe_timeout: S<String>,
    pub client_lookup_timeout: S<String>,
    pub client_names: S<bool>,
}

/// `[lft]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [lft]")]
pub(super) struct FileLft {
    pub threshold: S<RawSize>,
    pub max_message_size: S<RawSize>,
}

/// One `[members.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [members.NAME]")]
pub(super) struct FileMember {
    pub smtp: S<String>,
    pub gina: S<String>,
    pub weight: S<i64>,
    pub ingress: S<bool>,
    pub addresses: List,
    pub inject_to: List,
    pub lft_sync_to: List,
    pub comment: S<String>,
    pub location: S<String>,
}

/// A size as written: a byte count or a string such as `"50MiB"`.
#[derive(Debug, Clone)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl RawSize {
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            RawSize::Bytes(n) => {
                u64::try_from(*n).map_err(|_| format!("{n} is negative; a size is at least 0"))
            }
            RawSize::Text(t) => super::units::parse_size(t),
        }
    }
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte count or a size such as \"50MiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::custom("size is too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The shape of a top-level key, for the unknown-key walk.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    /// `[name]` with these keys.
    Table(&'static [&'static str]),
    /// `[[name]]` with these keys.
    Tables(&'static [&'static str]),
    /// `[name.ANY]` with these keys.
    Map(&'static [&'static str]),
}

/// Top-level keys of `mxgate.toml`.
pub(super) fn node_schema() -> Vec<(&'static str, Shape)> {
    vec![
        ("node", Shape::Table(fields::<FileNode>())),
        ("smtp", Shape::Tables(fields::<FileSmtp>())),
        ("http", Shape::Tables(fields::<FileHttp>())),
        ("local", Shape::Table(fields::<FileLocal>())),
        ("cluster", Shape::Table(fields::<FileCluster>())),
        ("metrics", Shape::Table(fields::<FileMetrics>())),
        ("log", Shape::Table(fields::<FileLog>())),
    ]
}

/// Top-level keys of `cluster.toml`.
pub(super) fn policy_schema() -> Vec<(&'static str, Shape)> {
    vec![
        ("routing", Shape::Table(fields::<FileRouting>())),
        ("upstream", Shape::Table(fields::<FileUpstream>())),
        ("health", Shape::Table(fields::<FileHealth>())),
        ("dns", Shape::Table(fields::<FileDns>())),
        ("lft", Shape::Table(fields::<FileLft>())),
        ("members", Shape::Map(fields::<FileMember>())),
    ]
}

/// The field names serde derived for `T`, so the key lists have one source.
fn fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(Captured(Some(fields))) => fields,
        _ => &[],
    }
}

/// A deserializer that only records the field list of the struct asked for.
struct FieldNames;

#[derive(Debug)]
struct Captured(Option<&'static [&'static str]>);

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field introspection")
    }
}

impl std::error::Error for Captured {}

impl serde::de::Error for Captured {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Captured(None)
    }
}

impl<'de> serde::Deserializer<'de> for FieldNames {
    type Error = Captured;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
        Err(Captured(None))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Captured> {
        Err(Captured(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}
