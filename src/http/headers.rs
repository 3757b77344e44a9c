//! Request and response header rewriting for the GINA proxy (sans-IO).
//!
//! Hop-by-hop headers (RFC 9110 section 7.6.1) are removed in both
//! directions: `Connection` and every header it names, `Proxy-Connection`,
//! `Keep-Alive`, `TE`, `Transfer-Encoding` and `Upgrade`. An upgrade request
//! (WebSocket) keeps `Upgrade` and a `Connection: upgrade`, since the member
//! must see them to switch protocols; so does its `101` answer.
//!
//! Towards the member, [`add_forwarded`] records the client:
//! `X-Forwarded-For` gets the client appended to any list already present,
//! `Forwarded` (RFC 7239) gets one element appended
//! (`for=...;host=...;proto=...`), `X-Forwarded-Proto` and
//! `X-Forwarded-Host` are set (replacing what a client sent: mxgate is the
//! edge, so only it knows them), and `Via` gets `<version> mxgate` appended.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `Keep-Alive`.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection` (non-standard, sent by old clients).
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a request asks to switch protocols (HTTP/1.1 `Upgrade`, e.g. WebSocket).
pub fn is_upgrade_request(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && method != Method::CONNECT
        && headers.contains_key(header::UPGRADE)
        && connection_has(headers, "upgrade")
}

/// Whether any `Connection` header lists `option` (case-insensitive).
fn connection_has(headers: &HeaderMap, option: &str) -> bool {
    connection_options(headers).any(|o| o.eq_ignore_ascii_case(option))
}

fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|o| !o.is_empty())
}

/// Removes the hop-by-hop headers (RFC 9110 section 7.6.1), including every
/// header named in `Connection`. With `keep_upgrade`, `Upgrade` stays and
/// `Connection` becomes exactly `upgrade`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names finds the fixed ones present: most messages
    // carry none or only `Connection`, and removing what is absent would
    // cost a lookup each.
    let mut present = [false; 6];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_name(name) {
            present[i] = true;
        }
    }
    // Options that are fixed hop-by-hop names are handled below; a
    // `Connection` that holds only one of them (`keep-alive` from most
    // servers) needs no splitting.
    let only_fixed = || {
        headers.get_all(header::CONNECTION).iter().all(|v| {
            v.to_str()
                .is_ok_and(|v| hop_by_hop_index(v.trim()).is_some())
        })
    };
    if present[CONNECTION_INDEX] && !only_fixed() {
        let named: Vec<HeaderName> = connection_options(headers)
            .filter(|o| hop_by_hop_index(o).is_none())
            .filter_map(|o| HeaderName::from_bytes(o.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present[i] && !(keep_upgrade && i == UPGRADE_INDEX) {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The headers that are always hop-by-hop (a `static`: a `const` array
/// would be built and dropped at every use).
static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::UPGRADE,
    header::TE,
    header::TRANSFER_ENCODING,
    KEEP_ALIVE,
    PROXY_CONNECTION,
];
const CONNECTION_INDEX: usize = 0;
const UPGRADE_INDEX: usize = 1;

/// The position in [`HOP_BY_HOP`] of a header name (lower case), if it is
/// there: one comparison by length and bytes, for every header of every
/// message.
fn hop_by_hop_name(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "upgrade" => Some(1),
        "te" => Some(2),
        "transfer-encoding" => Some(3),
        "keep-alive" => Some(4),
        "proxy-connection" => Some(5),
        _ => None,
    }
}

/// The position in [`HOP_BY_HOP`] of `name` (any case), if it is there.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    HOP_BY_HOP
        .iter()
        .position(|h| h.as_str().eq_ignore_ascii_case(name))
}

/// What the member is told about the client.
#[derive(Debug, Clone, Copy)]
pub struct ForwardInfo<'a> {
    /// The client's address.
    pub client: IpAddr,
    /// `https` on a TLS listener, else `http`.
    pub proto: &'static str,
    /// The host the client asked for (`Host` or the HTTP/2 `:authority`).
    pub host: Option<&'a str>,
    /// The client's protocol version, for `Via`.
    pub version: Version,
}

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`,
/// `Forwarded` (appended) and `Via` (appended) for a request going to a member.
pub fn add_forwarded(headers: &mut HeaderMap, info: &ForwardInfo<'_>) {
    let host = info.host.and_then(|h| HeaderValue::from_str(h).ok());
    ConnForward::new(info.client, info.proto).apply(headers, host.as_ref(), info.version);
}

/// The forwarding headers of one client connection: the client and the
/// protocol are the same for all its requests, and so is the host, usually.
/// Their values are made once; a request that already carries a list
/// (`X-Forwarded-For`, `Forwarded`, `Via` from a proxy in front) gets it
/// extended as [`add_forwarded`] describes.
#[derive(Debug)]
pub struct ConnForward {
    client: IpAddr,
    proto: &'static str,
    /// `X-Forwarded-For` of a request that had none: the client.
    xff: Option<HeaderValue>,
    /// The `Forwarded` element of the last host seen, with that host.
    element: Mutex<Option<(Option<HeaderValue>, Option<HeaderValue>)>>,
}

impl ConnForward {
    /// The values for a connection from `client` over `proto` (`http`, `https`).
    pub fn new(client: IpAddr, proto: &'static str) -> Self {
        let client = client.to_canonical();
        ConnForward {
            client,
            proto,
            xff: HeaderValue::from_str(&client.to_string()).ok(),
            element: Mutex::new(None),
        }
    }

    /// Adds the forwarding headers to a request for `host` (`Host` or
    /// `:authority`; one that is not visible ASCII counts as none) in HTTP
    /// `version`.
    pub fn apply(&self, headers: &mut HeaderMap, host: Option<&HeaderValue>, version: Version) {
        let host = host.filter(|h| h.to_str().is_ok());
        // Room for the five headers at once rather than growing step by step.
        headers.reserve(5);
        match headers.entry(X_FORWARDED_FOR) {
            Entry::Vacant(slot) => {
                if let Some(xff) = &self.xff {
                    slot.insert(xff.clone());
                }
            }
            Entry::Occupied(_) => {
                let xff = match joined(headers, &X_FORWARDED_FOR) {
                    Some(prior) => format!("{prior}, {}", self.client),
                    None => self.client.to_string(),
                };
                set(headers, X_FORWARDED_FOR, &xff);
            }
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        match host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }

        let element = self.element(host);
        match headers.entry(header::FORWARDED) {
            Entry::Vacant(slot) => {
                if let Some(element) = element {
                    slot.insert(element);
                }
            }
            Entry::Occupied(slot) => match element.as_ref().and_then(|e| e.to_str().ok()) {
                Some(element) => {
                    let forwarded = match joined(headers, &header::FORWARDED) {
                        Some(prior) => format!("{prior}, {element}"),
                        None => element.to_owned(),
                    };
                    set(headers, header::FORWARDED, &forwarded);
                }
                None => {
                    slot.remove_entry_mult();
                }
            },
        }

        let (version, via) = match version {
            Version::HTTP_09 => ("0.9", "0.9 mxgate"),
            Version::HTTP_10 => ("1.0", "1.0 mxgate"),
            Version::HTTP_2 => ("2", "2 mxgate"),
            Version::HTTP_3 => ("3", "3 mxgate"),
            _ => ("1.1", "1.1 mxgate"),
        };
        match headers.entry(header::VIA) {
            Entry::Vacant(slot) => {
                slot.insert(HeaderValue::from_static(via));
            }
            Entry::Occupied(_) => {
                let via = match joined(headers, &header::VIA) {
                    Some(prior) => format!("{prior}, {version} mxgate"),
                    None => format!("{version} mxgate"),
                };
                set(headers, header::VIA, &via);
            }
        }
    }

    /// This connection's `Forwarded` element for `host`
    /// (`for=...;host=...;proto=...`), made once per host.
    fn element(&self, host: Option<&HeaderValue>) -> Option<HeaderValue> {
        let mut last = self.element.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((h, element)) = last.as_ref()
            && h.as_ref() == host
        {
            return element.clone();
        }
        let mut element = String::with_capacity(64);
        match self.client {
            IpAddr::V4(v4) => {
                let _ = write!(element, "for={v4}");
            }
            IpAddr::V6(v6) => {
                let _ = write!(element, "for=\"[{v6}]\"");
            }
        }
        if let Some(host) = host.and_then(|h| h.to_str().ok()) {
            element.push_str(";host=");
            push_token_or_quoted(&mut element, host);
        }
        element.push_str(";proto=");
        element.push_str(self.proto);
        let element = HeaderValue::from_str(&element).ok();
        // A copy: `host` shares the request's read buffer (8 KB, hyper's),
        // which a clone would keep alive as long as the connection.
        let host = host.and_then(|h| HeaderValue::from_bytes(h.as_bytes()).ok());
        *last = Some((host, element.clone()));
        element
    }
}

/// Every value of `name` joined with `, ` (one list), or `None` when absent
/// or not visible ASCII.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = v.to_str().ok()?.trim();
        if v.is_empty() {
            continue;
        }
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(v);
            }
            None => out = Some(v.to_owned()),
        }
    }
    out
}

/// Replaces `name` with `value`; a value that is not a valid header value
/// (cannot come from a parsed request) removes it.
fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// RFC 7239 values are tokens or quoted strings; a host with a port (`:`)
/// or brackets needs quoting.
fn push_token_or_quoted(out: &mut String, value: &str) {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !value.is_empty() && value.chars().all(token) {
        out.push_str(value);
    } else {
        out.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_match_the_table() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_name(name), Some(i), "{name}");
            assert_eq!(
                hop_by_hop_index(&name.as_str().to_ascii_uppercase()),
                Some(i)
            );
        }
        assert_eq!(hop_by_hop_name(&header::HOST), None);
        assert_eq!(hop_by_hop_name(&X_FORWARDED_FOR), None);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut n: Vec<String> = h.keys().map(|k| k.as_str().to_owned()).collect();
        n.sort();
        n
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, &'a [&'a str]);
        let cases: &[Case] = &[
            (
                &[
                    ("connection", "keep-alive"),
                    ("keep-alive", "timeout=5"),
                    ("host", "a"),
                ],
                false,
                &["host"],
            ),
            (
                &[
                    ("connection", "close, X-Secret"),
                    ("x-secret", "1"),
                    ("x-other", "2"),
                ],
                false,
                &["x-other"],
            ),
            (
                &[
                    ("connection", "x-a"),
                    ("connection", " X-B "),
                    ("x-a", "1"),
                    ("x-b", "2"),
                    ("x-c", "3"),
                ],
                false,
                &["x-c"],
            ),
            (
                &[
                    ("te", "trailers"),
                    ("transfer-encoding", "chunked"),
                    ("proxy-connection", "keep-alive"),
                    ("accept", "*/*"),
                ],
                false,
                &["accept"],
            ),
            (
                &[("upgrade", "websocket"), ("accept", "*/*")],
                false,
                &["accept"],
            ),
            (
                &[
                    ("connection", "Upgrade, x-a"),
                    ("upgrade", "websocket"),
                    ("x-a", "1"),
                ],
                true,
                &["connection", "upgrade"],
            ),
            (
                &[("connection", "close,,  "), ("host", "h")],
                false,
                &["host"],
            ),
        ];
        for (input, keep_upgrade, expected) in cases {
            let mut h = map(input);
            remove_hop_by_hop(&mut h, *keep_upgrade);
            assert_eq!(names(&h), *expected, "{input:?}");
            if *keep_upgrade {
                assert_eq!(h[header::CONNECTION], "upgrade");
            }
        }
    }

    #[test]
    fn upgrade_requests_are_recognised() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(is_upgrade_request(&Method::GET, Version::HTTP_11, &ws));
        assert!(!is_upgrade_request(&Method::GET, Version::HTTP_10, &ws));
        assert!(!is_upgrade_request(&Method::GET, Version::HTTP_2, &ws));
        let no_conn = map(&[("upgrade", "websocket")]);
        assert!(!is_upgrade_request(
            &Method::GET,
            Version::HTTP_11,
            &no_conn
        ));
        let no_upgrade = map(&[("connection", "upgrade")]);
        assert!(!is_upgrade_request(
            &Method::GET,
            Version::HTTP_11,
            &no_upgrade
        ));
    }

    fn info(client: &str, host: Option<&'static str>) -> ForwardInfo<'static> {
        ForwardInfo {
            client: client.parse().expect("ip"),
            proto: "https",
            host,
            version: Version::HTTP_11,
        }
    }

    #[test]
    fn forwarded_headers_are_added_and_appended() {
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static str,
            Option<&'static str>,
            &'static [(&'static str, &'static str)],
        );
        let cases: &[Case] = &[
            (
                &[],
                "192.0.2.7",
                Some("portal.example.com"),
                &[
                    ("x-forwarded-for", "192.0.2.7"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "portal.example.com"),
                    (
                        "forwarded",
                        "for=192.0.2.7;host=portal.example.com;proto=https",
                    ),
                    ("via", "1.1 mxgate"),
                ],
            ),
            (
                &[
                    ("x-forwarded-for", "10.0.0.1"),
                    ("x-forwarded-for", "10.0.0.2"),
                    ("forwarded", "for=10.0.0.1"),
                    ("x-forwarded-proto", "http"),
                    ("x-forwarded-host", "evil"),
                ],
                "192.0.2.7",
                None,
                &[
                    ("x-forwarded-for", "10.0.0.1, 10.0.0.2, 192.0.2.7"),
                    ("x-forwarded-proto", "https"),
                    ("forwarded", "for=10.0.0.1, for=192.0.2.7;proto=https"),
                ],
            ),
            (
                &[],
                "2001:db8::1",
                Some("portal.example.com:8443"),
                &[
                    ("x-forwarded-for", "2001:db8::1"),
                    (
                        "forwarded",
                        "for=\"[2001:db8::1]\";host=\"portal.example.com:8443\";proto=https",
                    ),
                ],
            ),
            (
                &[("via", "1.0 squid")],
                "::ffff:192.0.2.9",
                None,
                &[
                    ("x-forwarded-for", "192.0.2.9"),
                    ("forwarded", "for=192.0.2.9;proto=https"),
                    ("via", "1.0 squid, 1.1 mxgate"),
                ],
            ),
        ];
        for (input, client, host, expected) in cases {
            let mut h = map(input);
            add_forwarded(&mut h, &info(client, *host));
            for (name, value) in *expected {
                let got: Vec<_> = h.get_all(*name).iter().collect();
                assert_eq!(got.len(), 1, "{name} in {input:?}");
                assert_eq!(got[0], *value, "{name} in {input:?}");
            }
            if host.is_none() {
                assert!(!h.contains_key("x-forwarded-host"), "{input:?}");
            }
        }
    }

    #[test]
    fn connection_values_follow_the_host_of_each_request() {
        let conn = ConnForward::new("::ffff:192.0.2.7".parse().expect("ip"), "http");
        let hosts = [
            Some("a.example"),
            Some("a.example"),
            Some("b.example:8080"),
            None,
        ];
        for host in hosts {
            let value = host.map(|h| HeaderValue::from_str(h).expect("host"));
            let mut h = map(&[("forwarded", "for=10.0.0.1")]);
            conn.apply(&mut h, value.as_ref(), Version::HTTP_11);
            let mut plain = HeaderMap::new();
            conn.apply(&mut plain, value.as_ref(), Version::HTTP_11);
            let element = match host {
                Some(host) if host.contains(':') => {
                    format!("for=192.0.2.7;host=\"{host}\";proto=http")
                }
                Some(host) => format!("for=192.0.2.7;host={host};proto=http"),
                None => "for=192.0.2.7;proto=http".to_owned(),
            };
            assert_eq!(plain[header::FORWARDED], element.as_str(), "{host:?}");
            assert_eq!(
                h[header::FORWARDED],
                format!("for=10.0.0.1, {element}").as_str(),
                "{host:?}"
            );
            assert_eq!(plain[X_FORWARDED_FOR], "192.0.2.7");
            assert_eq!(plain.get(X_FORWARDED_HOST), value.as_ref());
        }
    }

    #[test]
    fn via_names_the_client_protocol_version() {
        let mut h = HeaderMap::new();
        let mut i = info("192.0.2.1", None);
        i.version = Version::HTTP_2;
        add_forwarded(&mut h, &i);
        assert_eq!(h[header::VIA], "2 mxgate");
    }
}
