//! Bad input of every kind named in the walking-skeleton issue gives a one-paragraph error that
//! names the problem and the fix, a non-zero exit, no panic and no password.

use crate::support::{free_port, run_sdl, MariaDb, Mongo, SDL_PASSWORD};

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("sdl.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn config(source_url: &str, sink_url: &str, wal: &std::path::Path) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:{}"

[source]
url = "{source_url}"
server_id = 4242
connect_timeout = "3s"

[wal]
dir = "{}"

[sink]
url = "{sink_url}"
connect_timeout = "3s"
"#,
        // The admin endpoint is up before the start-up checks: tests running at once must not
        // share the default port. (First: tests append keys to [sink], the last section.)
        free_port(),
        wal.display(),
    )
}

/// Runs `sdl run` and checks the exit code and that stderr says `expected` (and stays clean).
fn assert_fails(config_path: &str, code: i32, expected: &[&str]) -> String {
    let (status, stderr) = run_sdl(&["run", "--config", config_path]);
    assert_eq!(status, Some(code), "exit code; stderr:\n{stderr}");
    let error_line = stderr
        .lines()
        .find(|l| l.starts_with("sdl: error:"))
        .unwrap_or_else(|| panic!("no `sdl: error:` line in:\n{stderr}"));
    for needle in expected {
        assert!(
            error_line.contains(needle),
            "`{needle}` missing from: {error_line}"
        );
    }
    assert!(!stderr.contains("panicked"), "panic in:\n{stderr}");
    assert!(
        !stderr.contains("stack backtrace"),
        "backtrace in:\n{stderr}"
    );
    assert!(
        !stderr.contains(SDL_PASSWORD),
        "password leaked in:\n{stderr}"
    );
    error_line.to_string()
}

#[test]
fn missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml").display().to_string();
    assert_fails(
        &path,
        2,
        &["cannot read the config file", "nope.toml", "--config"],
    );
}

#[test]
fn malformed_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[source\nurl = ");
    assert_fails(&path, 2, &["is not valid", "line 1"]);
}

#[test]
fn unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        "mysql://u:p@127.0.0.1:1",
        "mongodb://127.0.0.1:1",
        &dir.path().join("wal"),
    )
    .replace("[wal]", "[wal]\nretention = \"1h\"");
    let path = write_config(&dir, &text);
    assert_fails(&path, 2, &["unknown field `retention`", "deploy/sdl.toml"]);
}

#[test]
fn missing_section() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[source]\nurl = \"mysql://u:p@h:1\"\nserver_id = 1\n[wal]\ndir = \"/tmp/x\"\n";
    let path = write_config(&dir, text);
    assert_fails(&path, 2, &["missing field `sink`"]);
}

#[test]
fn malformed_urls() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let path = write_config(&dir, &config("postgres://x", "mongodb://127.0.0.1:1", &wal));
    assert_fails(
        &path,
        2,
        &[
            "source.url",
            "mysql:// URL with user, password, host and port",
        ],
    );
    let path = write_config(&dir, &config("mysql://u:p@127.0.0.1:1", "http://x", &wal));
    assert_fails(&path, 2, &["sink.url", "mongodb://"]);
}

#[test]
fn unreachable_source() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mysql://sdl:{SDL_PASSWORD}@127.0.0.1:{}", free_port());
    let path = write_config(
        &dir,
        &config(&url, "mongodb://127.0.0.1:1", &dir.path().join("wal")),
    );
    assert_fails(
        &path,
        1,
        &[
            "cannot reach the source database",
            "sdl:***@127.0.0.1",
            "host and port",
        ],
    );
}

#[tokio::test]
async fn wrong_credentials_and_unreachable_sink_and_standalone_sink() {
    let (mariadb, standalone) =
        tokio::join!(MariaDb::start(), Mongo::start_with(&["--standalone"]));
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");

    let wrong = format!("mysql://sdl:not-{SDL_PASSWORD}@127.0.0.1:{}", mariadb.port);
    let path = write_config(&dir, &config(&wrong, "mongodb://127.0.0.1:1", &wal));
    assert_fails(&path, 1, &["refused the login", "user and password"]);

    let dead_sink = format!("mongodb://127.0.0.1:{}/?replicaSet=rs0", free_port());
    let path = write_config(&dir, &config(&mariadb.sdl_url(), &dead_sink, &wal));
    assert_fails(&path, 1, &["cannot reach MongoDB", "sink.url"]);

    // `sink.transactions = "on"` refuses a standalone server ("auto" and "off" accept it).
    // The [sink] section comes last, so the key can be appended.
    let on = config(&mariadb.sdl_url(), standalone.uri(), &wal) + "transactions = \"on\"\n";
    let path = write_config(&dir, &on);
    assert_fails(
        &path,
        1,
        &[
            "does not support transactions",
            "replica set",
            "sink.transactions",
        ],
    );
}

/// Starts a MariaDB with `server_arg` and checks that `sdl run` refuses it with `expected`.
async fn refuses_source_setting(server_arg: &str, expected: &[&str]) {
    let mariadb = MariaDb::start_with(&[server_arg]).await;
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let path = write_config(
        &dir,
        &config(&mariadb.sdl_url(), "mongodb://127.0.0.1:1", &wal),
    );
    assert_fails(&path, 1, expected);
}

#[tokio::test]
async fn binlog_off() {
    refuses_source_setting("--skip-log-bin", &["log_bin is OFF", "--log-bin"]).await;
}

#[tokio::test]
async fn binlog_not_row() {
    refuses_source_setting(
        "--binlog-format=STATEMENT",
        &["binlog_format is STATEMENT", "binlog_format=ROW"],
    )
    .await;
}

#[tokio::test]
async fn row_metadata_minimal() {
    refuses_source_setting(
        "--binlog-row-metadata=MINIMAL",
        &["binlog_row_metadata is MINIMAL", "column names"],
    )
    .await;
}
