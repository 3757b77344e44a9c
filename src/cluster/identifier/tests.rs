use super::*;
use crate::cluster::identity;

fn sample(password: Option<&str>) -> (Identifier, String) {
    let (ca, ca_key) = identity::new_ca("c1").unwrap();
    let (key, csr) = identity::new_key_and_csr("enrolment").unwrap();
    let issued = identity::sign(
        &ca,
        &ca_key,
        &csr,
        "enrolment",
        &[],
        identity::Purpose::Enrolment { generation: 3 },
    )
    .unwrap();
    let key_pem = match password {
        Some(p) => encrypt_key(&key, p).unwrap(),
        None => key.clone(),
    };
    (
        Identifier {
            cluster_id: "c1".into(),
            master: "127.0.0.1:7025".into(),
            generation: 3,
            ca_cert_pem: ca,
            cert_pem: issued.cert_pem,
            key_pem,
        },
        key,
    )
}

#[test]
fn encrypted_round_trip_and_no_plain_key_in_the_file() {
    let (id, key) = sample(Some("s3cret"));
    let text = id.render();
    assert!(text.contains("BEGIN ENCRYPTED PRIVATE KEY"));
    assert!(!text.contains("BEGIN PRIVATE KEY"));
    let parsed = parse(&text).unwrap();
    assert_eq!(parsed, id);
    assert!(parsed.encrypted());
    let decrypted = parsed.key(Some("s3cret")).unwrap();
    // Same key material as the original (re-encoded the same way).
    let (_, a) = SecretDocument::from_pem(&decrypted).unwrap();
    let (_, b) = SecretDocument::from_pem(&key).unwrap();
    assert_eq!(a.as_bytes(), b.as_bytes());
}

#[test]
fn wrong_password_says_password() {
    let (id, _) = sample(Some("right"));
    let err = parse(&id.render()).unwrap().key(Some("wrong")).unwrap_err();
    assert!(matches!(err, ClusterError::Password));
    assert!(err.to_string().contains("password"), "{err}");
    let err = parse(&id.render()).unwrap().key(None).unwrap_err();
    assert!(err.to_string().contains("password"), "{err}");
}

#[test]
fn unencrypted_identifier_needs_no_password() {
    let (id, key) = sample(None);
    let parsed = parse(&id.render()).unwrap();
    assert!(!parsed.encrypted());
    assert_eq!(parsed.key(None).unwrap(), key);
}

#[test]
fn malformed_files_are_refused_with_the_reason() {
    let (id, _) = sample(None);
    let good = id.render();
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "expected 3 PEM blocks"),
        (
            good.replace("cluster-id: c1\n", ""),
            "cluster-id is missing",
        ),
        (
            good.replace("generation: 3", "generation: x"),
            "not a number",
        ),
        (good.replace("master: ", "mister: "), "unknown field"),
        (good.replace("-----END PRIVATE KEY-----", ""), "not closed"),
        (
            good.replace("cluster-id: c1\n", "cluster-id: c1\nnonsense\n"),
            "key: value",
        ),
        (
            format!(
                "cluster-id: a\nmaster: b\ngeneration: 1\n{}",
                id.ca_cert_pem
            ),
            "expected 3 PEM blocks",
        ),
    ];
    for (text, want) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
}
