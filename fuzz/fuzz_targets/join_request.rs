//! Fuzzes a `POST /join` body through `join::parse_request`, the one
//! function the master runs on it before anything else: no panic. An
//! accepted request passes each `check-config` rule again (name, advertise
//! address, upstreams), its parsed address is the one sent, and it
//! re-encodes the way `cluster join` sends it to a body that parses to the
//! same. A refusal names the field at fault (or says the body is no JSON
//! object) and is one line without control characters.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mxgate::cluster::join::{JoinInvalid, MAX_CSR_PEM, MAX_VERSION, parse_request};
use mxgate::config;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(valid) => {
            let r = &valid.request;
            assert!(config::check_name(&r.name).is_ok(), "{r:?}");
            assert_eq!(config::parse_socket(&r.address), Ok(valid.advertise));
            assert!(!valid.advertise.ip().is_unspecified() && valid.advertise.port() != 0);
            if let Some(u) = &r.smtp_upstream {
                assert!(config::parse_host_port(u).is_ok(), "{u:?}");
            }
            if let Some(u) = &r.gina_upstream {
                assert!(config::parse_gina(u).is_ok(), "{u:?}");
            }
            assert!(r.csr_pem.len() <= MAX_CSR_PEM);
            assert!(!r.version.is_empty() && r.version.len() <= MAX_VERSION);
            let body = serde_json::to_vec(r).expect("a request encodes");
            assert_eq!(parse_request(&body), Ok(valid));
        }
        Err(e) => {
            if let JoinInvalid::Field { field, .. } = &e {
                assert!(e.to_string().contains(&format!("field {field} (")), "{e}");
            }
            let text = e.to_string();
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
    }
});
