use super::*;

fn record(name: &str, smtp: Option<&str>) -> MemberRecord {
    MemberRecord {
        smtp_upstream: smtp.map(str::to_owned),
        comment: Some("rack B".into()),
        ..MemberRecord::for_tests(name, 2)
    }
}

fn policy(text: &str) -> Policy {
    validate(Path::new("cluster.toml"), text).unwrap()
}

#[test]
fn joined_nodes_become_members_and_entries_configure_them() {
    let mut p = policy(
        "[members.static]\nsmtp = \"127.0.0.9:25\"\ninject_to = [\"gw2\"]\n[members.gw2]\nweight = 7\n",
    );
    let mut deleted = record("gone", Some("127.0.0.8:25"));
    deleted.deleted = true;
    merge_members(
        &mut p,
        [
            record("gw2", Some("127.0.0.2:25")),
            record("gw3", Some("127.0.0.3:25")),
            deleted,
        ]
        .iter(),
    );
    let names: Vec<_> = p.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["gw2", "gw3", "static"]);
    let gw2 = p.member("gw2").unwrap();
    assert_eq!(gw2.weight, 7);
    assert_eq!(gw2.smtp.as_ref().unwrap().to_string(), "127.0.0.2:25");
    assert_eq!(gw2.comment.as_deref(), Some("rack B"));
    let gw3 = p.member("gw3").unwrap();
    assert!(gw3.ingress);
    assert_eq!(gw3.weight, 100);
}

#[test]
fn set_list_adds_tables_for_joined_nodes_and_refuses_unknown_names() {
    let text = "[routing]\nmax_attempts = 2\n\n[members.static]\nsmtp = \"127.0.0.9:25\"\n";
    let known = vec!["gw1".to_string(), "gw2".to_string()];
    let out = set_list(
        text,
        "gw1",
        ListKey::InjectTo,
        &["gw2".into(), "static".into()],
        &known,
    )
    .unwrap();
    let p = policy(&out);
    assert_eq!(p.member("gw1").unwrap().inject_to, ["gw2", "static"]);
    assert!(p.member("gw2").is_some());
    assert_eq!(p.routing.max_attempts, 2);
    let out = set_list(&out, "gw1", ListKey::LftSyncTo, &["gw2".into()], &known).unwrap();
    assert_eq!(policy(&out).member("gw1").unwrap().lft_sync_to, ["gw2"]);
    let err = set_list(text, "gw1", ListKey::InjectTo, &["nope".into()], &known).unwrap_err();
    assert!(
        err.to_string().contains("\"nope\" is not a member"),
        "{err}"
    );
}

#[test]
fn invalid_policy_is_refused_with_file_line_and_key() {
    let err = validate(Path::new("x.toml"), "[routing]\nmax_attempts = 0\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("x.toml:2: routing.max_attempts"), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
}
