//! `sdl check`: every preflight check as a pass/fail table with the fix for each failure, against
//! a well-configured pair of servers and against a badly configured source.

use std::ffi::OsStr;

use crate::support;
use crate::support::{free_port, run_sdl_with_output, MariaDb, Mongo, Sdl, SDL_PASSWORD};
use mysql_async::prelude::Queryable;

fn sdl_check(config: &std::path::Path) -> (i32, String, String) {
    run_sdl_with_output(&[
        OsStr::new("check"),
        OsStr::new("--config"),
        config.as_os_str(),
    ])
}

fn line<'a>(table: &'a str, check: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(check))
        .unwrap_or_else(|| panic!("no `{check}` line in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_setup_passes_every_check() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let sdl = Sdl::new(&mariadb, &mongo, "current");
    let (code, table, stderr) = sdl_check(&sdl.config_path);
    assert_eq!(code, 0, "{table}\n{stderr}");
    for check in [
        "wal: directory writable",
        "admin: listen address free",
        "source: reachable, login",
        "source: encryption",
        "source: log_bin",
        "source: binlog_format",
        "source: binlog_row_image",
        "source: binlog_row_metadata",
        "source: privileges",
        "source: server_id unique",
        "source: binlog retention",
        "sink: reachable, login",
        "sink: encryption",
        "sink: transactions",
        "sink: write concern",
    ] {
        assert!(line(&table, check).starts_with("PASS"), "{check}:\n{table}");
    }
    assert!(!table.contains(SDL_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_source_fails_with_a_fix_for_each_problem() {
    let mariadb =
        MariaDb::start_with(&["--binlog-format=MIXED", "--binlog-expire-logs-seconds=3600"]).await;
    let mut root = mariadb.root_conn().await;
    // A user that can replicate but lacks REPLICATION CLIENT.
    root.query_drop("CREATE USER 'weak'@'%' IDENTIFIED BY 'weak-pw'")
        .await
        .unwrap();
    root.query_drop("GRANT REPLICATION SLAVE, SELECT ON *.* TO 'weak'@'%'")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[source]\nurl = \"mysql://weak:weak-pw@127.0.0.1:{}\"\nserver_id = 1\nconnect_timeout = \"3s\"\n\
         [wal]\ndir = \"{}\"\n[sink]\nurl = \"mongodb://127.0.0.1:{}/?replicaSet=rs0\"\nconnect_timeout = \"2s\"\n",
        mariadb.port,
        dir.path().join("wal").display(),
        free_port()
    );
    let path = dir.path().join("sdl.toml");
    std::fs::write(&path, config).unwrap();
    let (code, table, stderr) = sdl_check(&path);
    assert_eq!(code, 1, "{table}\n{stderr}");
    assert!(
        line(&table, "source: reachable, login").starts_with("PASS"),
        "{table}"
    );
    let format = line(&table, "source: binlog_format");
    assert!(
        format.starts_with("FAIL") && format.contains("MIXED"),
        "{table}"
    );
    assert!(table.contains("fix: Set binlog_format=ROW"), "{table}");
    let privileges = line(&table, "source: privileges");
    assert!(
        privileges.starts_with("FAIL") && privileges.contains("REPLICATION CLIENT"),
        "{table}"
    );
    assert!(
        line(&table, "source: server_id unique").starts_with("FAIL"),
        "{table}"
    );
    let retention = line(&table, "source: binlog retention");
    assert!(
        retention.starts_with("WARN") && retention.contains("0.0 days"),
        "{table}"
    );
    assert!(
        table.contains("binlog_expire_logs_seconds = 1209600"),
        "{table}"
    );
    assert!(
        line(&table, "sink: reachable, login").starts_with("FAIL"),
        "{table}"
    );
    assert!(stderr.contains("preflight check(s) failed"), "{stderr}");

    // `sdl run` runs the same checks and refuses to start.
    let (code, stderr) = support::run_sdl(&["run", "--config", &path.display().to_string()]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("preflight check `source: binlog_format` failed"),
        "{stderr}"
    );
}
