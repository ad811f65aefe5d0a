//! When no server of `source.url` can be followed: retry or stop, and with which error.

use super::*;

fn two_servers() -> SourceConfig {
    let toml = r#"
[source]
url = ["mysql://sdl:pw@db1:3306", "mysql://sdl:pw@db2:3306"]
server_id = 4242
[wal]
dir = "/tmp/x"
[sink]
url = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
"#;
    crate::config::Config::parse(std::path::Path::new("t.toml"), toml)
        .unwrap()
        .source
}

fn diverged() -> Refusal {
    Refusal::Diverged {
        missing: "0-1-99..0-1-100".into(),
        errant: "0-2-99..0-2-120".into(),
    }
}

#[test]
fn every_server_diverged_is_definite_and_names_the_gtids() {
    let e = no_server_error(
        &two_servers(),
        Some("0-1-100"),
        vec![(0, diverged()), (1, Refusal::Purged("domain 0".into()))],
    );
    assert!(matches!(e, SourceError::SourceDiverged { .. }), "{e}");
    let text = e.to_string();
    for needle in [
        "0-1-99..0-1-100",
        "0-2-99..0-2-120",
        "server 1 (mysql://sdl:***@db1:3306)",
        "lossy failover is refused",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from {text}");
    }
    assert!(!text.contains(":pw@"), "{text}");
}

#[test]
fn a_server_that_may_come_back_or_catch_up_keeps_sdl_retrying() {
    for other in [
        Refusal::Unreachable(SourceError::Transient("refused".into())),
        Refusal::Behind("domain 0 is at 0-1-90, behind 0-1-100 relayed".into()),
        Refusal::NoReplicaUpdates("log_slave_updates is OFF".into()),
    ] {
        let e = no_server_error(
            &two_servers(),
            Some("0-1-100"),
            vec![(0, other), (1, diverged())],
        );
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("0-2-99..0-2-120"), "{e}");
    }
}

#[test]
fn purged_everywhere_is_exit_3_and_settings_errors_are_the_first_servers_own() {
    let purged = no_server_error(
        &two_servers(),
        Some("0-1-100"),
        vec![
            (0, Refusal::Purged("a".into())),
            (1, Refusal::Purged("b".into())),
        ],
    );
    assert!(
        matches!(purged, SourceError::BinlogUnavailable { .. }),
        "{purged}"
    );
    let setting = || SourceError::Setting {
        setting: "binlog_format",
        actual: "STATEMENT".into(),
        required: "ROW",
        fix: "set it",
    };
    let unusable = no_server_error(
        &two_servers(),
        None,
        vec![
            (0, Refusal::Unusable(setting())),
            (1, Refusal::Unusable(setting())),
        ],
    );
    assert!(
        matches!(unusable, SourceError::Setting { .. }),
        "{unusable}"
    );
}

#[test]
fn a_large_transaction_sdl_stopped_inside_must_be_on_the_server_too() {
    // The WAL holds 0-1-100 and the first 500 changes of 0-1-101 (some may be in MongoDB): a
    // replica with 0-1-100 only lacks the rest of that transaction.
    let point = ResumePoint::parse(Flavor::Mariadb, "0-1-100; partial 0-1-101:500").unwrap();
    let Position::Mariadb(held) = relayed_through(&point) else {
        panic!("a MariaDB position");
    };
    assert_eq!(held.to_string(), "0-1-101");
    let lacks_it = parse_binlog_state("0-1-100").unwrap();
    assert!(matches!(
        mariadb_continuation(&held, &lacks_it),
        Continuation::Behind { .. }
    ));
    let moved_on = parse_binlog_state("0-1-100,0-2-101").unwrap();
    assert!(matches!(
        mariadb_continuation(&held, &moved_on),
        Continuation::Diverged { .. }
    ));
    let has_it = parse_binlog_state("0-1-101").unwrap();
    assert!(matches!(
        mariadb_continuation(&held, &has_it),
        Continuation::Contains
    ));
    // The stream still starts before it.
    assert_eq!(point.position.to_string(), "0-1-100");

    let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    let point = ResumePoint::parse(
        Flavor::Mysql,
        &format!("{uuid}:1-100; partial {uuid}:101:500"),
    )
    .unwrap();
    let Position::Mysql(held) = relayed_through(&point) else {
        panic!("a MySQL GTID set");
    };
    assert_eq!(held.to_string(), format!("{uuid}:1-101"));
    let lacks_it = crate::gtid::MysqlGtidSet::parse(&format!("{uuid}:1-100")).unwrap();
    assert!(!matches!(
        mysql_continuation(&held, &lacks_it),
        Continuation::Contains
    ));
}
