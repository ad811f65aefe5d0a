//! Secrets in statements (issue 12, item 11): passwords and password hashes that MariaDB writes
//! into the binlog with `CREATE USER`, `ALTER USER`, `SET PASSWORD` and `GRANT … IDENTIFIED BY`
//! never reach MongoDB, `/status`, `sdl wal dump`, the logs or the WAL on disk: the secret literal
//! becomes `'<redacted>'` and the rest of the statement is kept verbatim. `CHANGE MASTER … PASSWORD`
//! and `CREATE SERVER … PASSWORD` are run too (MariaDB does not binlog them; nothing may leak).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::Relay;
use mysql_async::prelude::Queryable;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Every plain password below contains this; hashes are listed in [`HASHES`].
const SECRET_MARK: &str = "S3cret";
const HASHES: &[&str] = &[
    "94BDCEBE19083CE2A1F959FD02F964C7AF4CFC29",
    "A3F61834D9AE45C2DFC9C4F8D07EC7675086AFB7",
];

/// (statement run on MariaDB, its `ddl` document's text; `None` when MariaDB does not binlog it)
const STATEMENTS: &[(&str, Option<&str>)] = &[
    (
        "CREATE USER 'u1'@'%' IDENTIFIED BY 'S3cret-create'",
        Some("CREATE USER 'u1'@'%' IDENTIFIED BY '<redacted>'"),
    ),
    (
        r#"ALTER USER 'u1'@'%' IDENTIFIED BY "S3cret-alter\"q""#,
        Some("ALTER USER 'u1'@'%' IDENTIFIED BY '<redacted>'"),
    ),
    (
        "CREATE USER u2 IDENTIFIED BY PASSWORD '*94BDCEBE19083CE2A1F959FD02F964C7AF4CFC29'",
        Some("CREATE USER u2 IDENTIFIED BY PASSWORD '<redacted>'"),
    ),
    (
        "CREATE USER u3 IDENTIFIED VIA mysql_native_password USING PASSWORD('S3cret-via'), \
         u4 IDENTIFIED BY 'S3cret-second-user'",
        Some(
            "CREATE USER u3 IDENTIFIED VIA mysql_native_password USING PASSWORD('<redacted>'), \
             u4 IDENTIFIED BY '<redacted>'",
        ),
    ),
    (
        "CREATE USER u5 IDENTIFIED WITH mysql_native_password AS \
         '*A3F61834D9AE45C2DFC9C4F8D07EC7675086AFB7'",
        Some("CREATE USER u5 IDENTIFIED WITH mysql_native_password AS '<redacted>'"),
    ),
    (
        // MariaDB binlogs this as SET PASSWORD FOR 'u1'@'%'='*<hash>'.
        "SET PASSWORD FOR u1 = PASSWORD('S3cret-set')",
        Some("SET PASSWORD FOR 'u1'@'%'='<redacted>'"),
    ),
    (
        "SET PASSWORD FOR u2 = '*A3F61834D9AE45C2DFC9C4F8D07EC7675086AFB7'",
        Some("SET PASSWORD FOR 'u2'@'%'='<redacted>'"),
    ),
    (
        "GRANT SELECT ON app.* TO u6 IDENTIFIED BY 'S3cret-grant'",
        Some("GRANT SELECT ON app.* TO u6 IDENTIFIED BY '<redacted>'"),
    ),
    (
        r"CREATE USER /* note */ u7 IDENTIFIED /* x */ BY 'S3cret\'-comment'",
        Some("CREATE USER /* note */ u7 IDENTIFIED /* x */ BY '<redacted>'"),
    ),
    (
        "cReAtE uSeR u8 iDeNtIfIeD bY 'S3cret-mixed-case'",
        Some("cReAtE uSeR u8 iDeNtIfIeD bY '<redacted>'"),
    ),
    (
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_USER='r', MASTER_PASSWORD='S3cret-master'",
        None,
    ),
    (
        "CREATE SERVER s1 FOREIGN DATA WRAPPER mysql \
         OPTIONS (HOST 'h', USER 'x', PASSWORD 'S3cret-server')",
        None,
    ),
];

fn assert_no_secret(place: &str, text: &str) {
    assert!(
        !text.contains(SECRET_MARK),
        "a password in {place}:\n{text}"
    );
    for hash in HASHES {
        assert!(!text.contains(hash), "a password hash in {place}:\n{text}");
    }
}

/// Every file under `dir`, as bytes, checked for the secrets.
fn assert_no_secret_in_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_secret_in_files(&path);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for secret in [SECRET_MARK].iter().chain(HASHES) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_in_user_and_replication_statements_are_redacted_everywhere() {
    let mut relay = Relay::builder().following().await;
    let mut conn = relay.conn().await;
    for (statement, _) in STATEMENTS {
        conn.query_drop(*statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    relay.wait_caught_up(TIMEOUT).await;

    let statements: Vec<String> = relay
        .documents()
        .await
        .iter()
        .filter(|d| d.get_str("op").unwrap() == "ddl")
        .map(|d| d.get_str("statement").unwrap().to_string())
        .collect();
    let expected: Vec<&str> = STATEMENTS.iter().filter_map(|(_, ddl)| *ddl).collect();
    assert_eq!(statements, expected);
    assert_no_secret("/status", &relay.sdl.status().to_string());

    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    assert_no_secret("sdl's logs", &relay.sdl.logs());
    let dump = Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(["wal", "dump", "--from", "1", "--to", "1000"])
        .arg("--dir")
        .arg(relay.sdl.wal_dir())
        .output()
        .unwrap();
    let dump_text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(
        dump_text.contains("IDENTIFIED BY '<redacted>'"),
        "the WAL no longer holds the statements: {dump_text}"
    );
    assert_no_secret("sdl wal dump", &dump_text);
    assert_no_secret_in_files(&relay.sdl.wal_dir());
}
