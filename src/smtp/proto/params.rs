//! MAIL and RCPT parameters a client may use, checked against what its
//! session was offered: SIZE and BODY always; SMTPUTF8 (RFC 6531) and
//! RET, ENVID, NOTIFY, ORCPT (RFC 3461 DSN) only when offered. Values are
//! checked here and then relayed verbatim; a refusal says which parameter
//! is wrong ([`ParamError`], mapped to its reply in one place).

use super::caps::{Extensions, xtext_decode};
use super::command::Param;
use super::reply::Reply;

/// Longest `ENVID` value (RFC 3461 4.4: 100 characters).
const MAX_ENVID: usize = 100;
/// Longest `ORCPT` value (RFC 3461 4.2: 500 characters).
const MAX_ORCPT: usize = 500;

/// Why a parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// Not a parameter of an extension this session offers (`555 5.5.4`).
    #[error("unsupported {0} parameter")]
    Unsupported(&'static str),
    /// A known parameter with a bad value or given twice (`501 5.5.4`).
    #[error("{0}")]
    Invalid(&'static str),
}

impl From<&ParamError> for Reply {
    fn from(err: &ParamError) -> Reply {
        match err {
            ParamError::Unsupported(verb) => Reply::new(
                555,
                "5.5.4",
                &format!("Error: unsupported {verb} parameter"),
            ),
            ParamError::Invalid(what) => Reply::new(501, "5.5.4", &format!("Error: {what}")),
        }
    }
}

/// Checks a MAIL command's parameters (SIZE's numeric value is checked by
/// the caller, which also compares it with the size limit).
pub fn check_mail(params: &[Param], offered: Extensions) -> Result<(), ParamError> {
    check_unique(params)?;
    for param in params {
        let value = param.value.as_deref();
        match param.keyword.as_str() {
            "SIZE" => {}
            "BODY" => match value.map(str::to_ascii_uppercase).as_deref() {
                Some("7BIT" | "8BITMIME") => {}
                _ => return Err(ParamError::Invalid("BODY must be 7BIT or 8BITMIME")),
            },
            "SMTPUTF8" if offered.smtputf8 => {
                if value.is_some() {
                    return Err(ParamError::Invalid("SMTPUTF8 takes no value"));
                }
            }
            "RET" if offered.dsn => match value.map(str::to_ascii_uppercase).as_deref() {
                Some("FULL" | "HDRS") => {}
                _ => return Err(ParamError::Invalid("RET must be FULL or HDRS")),
            },
            "ENVID" if offered.dsn => {
                let ok = value.is_some_and(|v| v.len() <= MAX_ENVID && is_xtext(v));
                if !ok {
                    return Err(ParamError::Invalid(
                        "ENVID must be xtext of at most 100 characters",
                    ));
                }
            }
            _ => return Err(ParamError::Unsupported("MAIL")),
        }
    }
    Ok(())
}

/// Checks a RCPT command's parameters.
pub fn check_rcpt(params: &[Param], offered: Extensions) -> Result<(), ParamError> {
    check_unique(params)?;
    for param in params {
        let value = param.value.as_deref();
        match param.keyword.as_str() {
            "NOTIFY" if offered.dsn => {
                if !value.is_some_and(is_notify) {
                    return Err(ParamError::Invalid(
                        "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
                    ));
                }
            }
            "ORCPT" if offered.dsn => {
                if !value.is_some_and(|v| v.len() <= MAX_ORCPT && is_orcpt(v, offered)) {
                    return Err(ParamError::Invalid(
                        "ORCPT must be addr-type;xtext of at most 500 characters",
                    ));
                }
            }
            _ => return Err(ParamError::Unsupported("RCPT")),
        }
    }
    Ok(())
}

/// RFC 3461: no parameter may be given twice (keywords are upper-cased).
fn check_unique(params: &[Param]) -> Result<(), ParamError> {
    for (i, param) in params.iter().enumerate() {
        if params[..i].iter().any(|p| p.keyword == param.keyword) {
            return Err(ParamError::Invalid("a parameter is given twice"));
        }
    }
    Ok(())
}

/// Printable ASCII other than `+` and `=`, and `+XX` hex escapes (RFC 3461 4).
fn is_xtext(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (b'!'..=b'~').contains(&b) && b != b'=')
        && xtext_decode(value).is_some()
}

/// `NEVER`, or a comma list of `SUCCESS`, `FAILURE`, `DELAY`, each once.
fn is_notify(value: &str) -> bool {
    let upper = value.to_ascii_uppercase();
    if upper == "NEVER" {
        return true;
    }
    let words: Vec<&str> = upper.split(',').collect();
    words
        .iter()
        .enumerate()
        .all(|(i, w)| matches!(*w, "SUCCESS" | "FAILURE" | "DELAY") && !words[..i].contains(w))
}

/// `addr-type ";" xtext`, the type an atom (`rfc822`, `utf-8`); with
/// SMTPUTF8 offered, a `utf-8` address may hold UTF-8 as is (RFC 6533).
fn is_orcpt(value: &str, offered: Extensions) -> bool {
    let Some((kind, address)) = value.split_once(';') else {
        return false;
    };
    let atom = !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let utf8 = offered.smtputf8
        && kind.eq_ignore_ascii_case("utf-8")
        && !address.is_empty()
        && address
            .chars()
            .all(|c| !c.is_control() && c != ' ' && c != '=');
    atom && !address.is_empty() && (is_xtext(address) || utf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_params() -> impl Strategy<Value = Vec<Param>> {
        let keyword = prop::sample::select(vec![
            "SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "NOTIFY", "ORCPT", "AUTH", "X-1",
        ]);
        let value = prop::option::of("[ -~\u{e4}\u{f6}+;,=]{0,120}");
        prop::collection::vec((keyword, value), 0..4).prop_map(|list| {
            list.into_iter()
                .map(|(k, v)| Param {
                    keyword: k.to_owned(),
                    value: v,
                })
                .collect()
        })
    }

    proptest! {
        /// Any parameters: a one-line 501 or 555 reply or acceptance; what
        /// is accepted with nothing offered is accepted with everything.
        #[test]
        fn any_parameters_get_a_precise_answer(params in any_params(), rcpt in any::<bool>()) {
            let check = |offered| if rcpt { check_rcpt(&params, offered) } else { check_mail(&params, offered) };
            for offered in [NONE, Extensions::ALL] {
                if let Err(err) = check(offered) {
                    let reply = Reply::from(&err);
                    prop_assert!(matches!(reply.code(), 501 | 555));
                    prop_assert_eq!(reply.as_bytes().iter().filter(|&&b| b == b'\n').count(), 1);
                }
            }
            if check(NONE).is_ok() {
                prop_assert!(check(Extensions::ALL).is_ok());
            }
        }
    }

    fn params(list: &[(&str, Option<&str>)]) -> Vec<Param> {
        list.iter()
            .map(|(k, v)| Param {
                keyword: k.to_string(),
                value: v.map(str::to_owned),
            })
            .collect()
    }

    const NONE: Extensions = Extensions {
        smtputf8: false,
        chunking: false,
        dsn: false,
    };

    #[test]
    fn mail_parameters_follow_what_was_offered() {
        let all = Extensions::ALL;
        let dsn = params(&[("RET", Some("hdrs")), ("ENVID", Some("QQ314159+2Bx"))]);
        assert_eq!(check_mail(&dsn, all), Ok(()));
        assert_eq!(check_mail(&dsn, NONE), Err(ParamError::Unsupported("MAIL")));
        let utf8 = params(&[("SMTPUTF8", None), ("BODY", Some("8bitmime"))]);
        assert_eq!(check_mail(&utf8, all), Ok(()));
        assert_eq!(
            check_mail(&utf8, NONE),
            Err(ParamError::Unsupported("MAIL"))
        );
        for bad in [
            params(&[("RET", Some("ALL"))]),
            params(&[("RET", None)]),
            params(&[("ENVID", Some("a=b"))]),
            params(&[("ENVID", Some("bad+zz"))]),
            params(&[("ENVID", Some(&"x".repeat(101)))]),
            params(&[("SMTPUTF8", Some("yes"))]),
            params(&[("BODY", Some("BINARYMIME"))]),
            params(&[("RET", Some("FULL")), ("RET", Some("HDRS"))]),
        ] {
            assert!(
                matches!(check_mail(&bad, all), Err(ParamError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_mail(&params(&[("AUTH", Some("<>"))]), all),
            Err(ParamError::Unsupported("MAIL"))
        );
    }

    #[test]
    fn rcpt_parameters_follow_what_was_offered() {
        let all = Extensions::ALL;
        let ok = params(&[
            ("NOTIFY", Some("success,Failure,DELAY")),
            ("ORCPT", Some("rfc822;j+C3+B6ran@example.org")),
        ]);
        assert_eq!(check_rcpt(&ok, all), Ok(()));
        assert_eq!(check_rcpt(&ok, NONE), Err(ParamError::Unsupported("RCPT")));
        let utf8 = params(&[("ORCPT", Some("utf-8;jöran@exämple.org"))]);
        assert_eq!(check_rcpt(&utf8, all), Ok(()));
        let no_utf8 = Extensions {
            smtputf8: false,
            ..all
        };
        assert!(check_rcpt(&utf8, no_utf8).is_err());
        for bad in [
            params(&[("NOTIFY", Some("NEVER,SUCCESS"))]),
            params(&[("NOTIFY", Some("SUCCESS,SUCCESS"))]),
            params(&[("NOTIFY", Some("ALWAYS"))]),
            params(&[("NOTIFY", None)]),
            params(&[("ORCPT", Some("rfc822"))]),
            params(&[("ORCPT", Some(";a@b"))]),
            params(&[("ORCPT", Some("rfc822;"))]),
            params(&[("ORCPT", Some(&format!("rfc822;{}", "a".repeat(500))))]),
        ] {
            assert!(
                matches!(check_rcpt(&bad, all), Err(ParamError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_rcpt(&params(&[("NOTIFY", Some("NEVER"))]), all),
            Ok(())
        );
    }
}
