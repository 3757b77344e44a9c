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

/// The key block of an identifier's text.
fn key_info(pem: &str) -> Document {
    Document::from_pem(pem).map(|(_, doc)| doc).unwrap()
}

#[test]
fn new_keys_use_pbkdf2_sha256_600000_and_aes256cbc_with_random_salt_and_iv() {
    let (key, _) = identity::new_key_and_csr("enrolment").unwrap();
    let a = encrypt_key(&key, "pw").unwrap();
    let b = encrypt_key(&key, "pw").unwrap();
    let (da, db) = (key_info(&a), key_info(&b));
    let (ia, ib) = (
        EncryptedPrivateKeyInfo::from_der(da.as_bytes()).unwrap(),
        EncryptedPrivateKeyInfo::from_der(db.as_bytes()).unwrap(),
    );
    fn params<'a>(info: &EncryptedPrivateKeyInfo<'a>) -> pbes2::Parameters<'a> {
        match &info.encryption_algorithm {
            EncryptionScheme::Pbes2(p) => p.clone(),
            other => panic!("not PBES2: {other:?}"),
        }
    }
    fn pbkdf2<'a>(p: &pbes2::Parameters<'a>) -> pbes2::Pbkdf2Params<'a> {
        match &p.kdf {
            pbes2::Kdf::Pbkdf2(k) => *k,
            other => panic!("not PBKDF2: {other:?}"),
        }
    }
    let (pa, pb) = (params(&ia), params(&ib));
    let (ka, kb) = (pbkdf2(&pa), pbkdf2(&pb));
    assert_eq!(ka.iteration_count, 600_000);
    assert_eq!(ka.prf, pbes2::Pbkdf2Prf::HmacWithSha256);
    assert_eq!(ka.salt.len(), 16);
    assert_ne!(ka.salt, kb.salt, "the salt must be random");
    match (&pa.encryption, &pb.encryption) {
        (
            pbes2::EncryptionScheme::Aes256Cbc { iv: x },
            pbes2::EncryptionScheme::Aes256Cbc { iv: y },
        ) => {
            assert_ne!(x, y, "the IV must be random")
        }
        other => panic!("not AES-256-CBC: {other:?}"),
    }
    assert_eq!(
        decrypt_key(&a, "pw").unwrap(),
        decrypt_key(&b, "pw").unwrap()
    );
}

#[test]
fn identifiers_exported_with_scrypt_are_still_read() {
    // Exported by mxgate before the switch to PBKDF2 (scrypt log2 N = 15,
    // r = 8, p = 1) with the password "old-s3cret".
    let text = include_str!("scrypt_identifier.txt");
    let id = parse(text).unwrap();
    assert!(id.encrypted());
    let info = key_info(&id.key_pem);
    let info = EncryptedPrivateKeyInfo::from_der(info.as_bytes()).unwrap();
    assert!(matches!(
        &info.encryption_algorithm,
        EncryptionScheme::Pbes2(p) if matches!(p.kdf, pbes2::Kdf::Scrypt(_))
    ));
    let key = id.key(Some("old-s3cret")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    // The key is the one of the enrolment certificate: TLS accepts the pair.
    crate::tls::mutual::client_config(&id.ca_cert_pem, &id.cert_pem, &key).unwrap();
    assert!(matches!(
        id.key(Some("wrong")).unwrap_err(),
        ClusterError::Password
    ));
}

/// `pem` with its KDF parameters changed by `change` (the ciphertext kept).
fn with_kdf(pem: &str, change: impl FnOnce(&mut pbes2::Kdf<'_>)) -> String {
    use pkcs8::der::Encode;
    let doc = key_info(pem);
    let mut info = EncryptedPrivateKeyInfo::from_der(doc.as_bytes()).unwrap();
    let EncryptionScheme::Pbes2(params) = &mut info.encryption_algorithm else {
        panic!("not PBES2");
    };
    change(&mut params.kdf);
    let der = info.to_der().unwrap();
    Document::from_der(&der)
        .unwrap()
        .to_pem(ENCRYPTED, LineEnding::LF)
        .unwrap()
}

#[test]
fn keys_asking_for_too_much_work_are_refused_before_any_is_done() {
    let (key, _) = identity::new_key_and_csr("enrolment").unwrap();
    let pem = encrypt_key_with(&key, "pw", 1000).unwrap();
    assert!(decrypt_key(&pem, "pw").is_ok());
    let costly = with_kdf(&pem, |kdf| {
        if let pbes2::Kdf::Pbkdf2(p) = kdf {
            p.iteration_count = u32::MAX;
        }
    });
    let started = std::time::Instant::now();
    let err = decrypt_key(&costly, "pw").unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert!(
        matches!(&err, ClusterError::Identifier(m) if m.contains("iterations")),
        "{err}"
    );

    let old = parse(include_str!("scrypt_identifier.txt")).unwrap();
    for (log_n, r, p) in [(30, 8, 1), (15, 1000, 1), (15, 8, 1000)] {
        let costly = with_kdf(&old.key_pem, |kdf| {
            if let pbes2::Kdf::Scrypt(s) = kdf {
                s.cost_parameter = 1 << log_n;
                s.block_size = r;
                s.parallelization = p;
            }
        });
        let err = decrypt_key(&costly, "old-s3cret").unwrap_err();
        assert!(
            matches!(&err, ClusterError::Identifier(m) if m.contains("scrypt")),
            "{err}"
        );
    }
}
