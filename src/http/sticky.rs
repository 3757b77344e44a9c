//! Cookie affinity (`sticky_cookie = NAME`), sans-IO.
//!
//! The cookie's value is the member's name. A request whose cookie names a
//! healthy candidate goes there first; any other value (unknown member,
//! member down, malformed) is ignored and the address order applies. The
//! response sets the cookie (`NAME=<member>; Path=/; HttpOnly`, plus
//! `Secure` on a TLS listener) unless the request already named that member.

use http::HeaderValue;
use http::header::{COOKIE, HeaderMap};

/// The value of cookie `name` in the request's `Cookie` header(s), if any.
/// HTTP/2 clients may send one `Cookie` header per cookie; all are searched.
pub fn find<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// The `Set-Cookie` value naming `member`.
pub fn set_cookie(name: &str, member: &str, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={member}; Path=/; HttpOnly{secure}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn finds_the_named_cookie() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["MXGATE_MEMBER=gw1"], Some("gw1")),
            (&["a=1; MXGATE_MEMBER=gw2; b=2"], Some("gw2")),
            (&["a=1", "MXGATE_MEMBER=gw3"], Some("gw3")),
            (&["XMXGATE_MEMBER=gw1; MXGATE_MEMBERX=gw2"], None),
            (&["MXGATE_MEMBER=\"gw4\""], Some("gw4")),
            (&["MXGATE_MEMBER"], None),
            (&["MXGATE_MEMBER="], Some("")),
        ];
        for (input, expected) in cases {
            assert_eq!(
                find(&headers(input), "MXGATE_MEMBER"),
                *expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn set_cookie_is_http_only_and_secure_on_tls() {
        let plain = set_cookie("M", "gw1", false).expect("value");
        assert_eq!(plain, "M=gw1; Path=/; HttpOnly");
        let tls = set_cookie("M", "gw1", true).expect("value");
        assert_eq!(tls, "M=gw1; Path=/; HttpOnly; Secure");
    }
}
