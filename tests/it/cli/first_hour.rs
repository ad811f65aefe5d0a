//! What a first-time operator hit (issue 13, item 7), one test per finding: `sdl wal` inspection
//! (refusing a directory that is not a WAL, a closed pipe, defaults, the change-document shape,
//! the WAL format version), `sdl check` (source.start, the WAL directory, the admin port, the
//! server id), signals during start-up, and messages without Rust debug forms.
//!
//! The `sdl wal` tests build a stopped service's WAL in-process (the sdl library's own types),
//! so they need no servers; the rest use the harness's real servers.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sdl::event::{Change, RowChange, RowOp, SourceTransaction, StatementChange, Table, Value};
use sdl_wal::Wal;

use crate::support;

/// Runs `sdl <args>` and returns (exit code, stdout, stderr).
fn sdl_cmd(args: &[&str]) -> (i32, String, String) {
    sdl_env(args, &[])
}

fn sdl_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A stopped service's WAL in `dir` with `n` records: record `i` (from 1) inserts row `id = i`
/// into `shop.items` (GTID `0-1-i`, committed at 2024-05-06T07:08:09Z + i s); the last record
/// also holds a DDL statement.
fn make_wal(dir: &Path, n: u64) {
    let wal: Wal<SourceTransaction> = Wal::open(dir).unwrap();
    let table = Arc::new(Table {
        database: "shop".into(),
        name: "items".into(),
        columns: vec!["id".into(), "name".into()],
        primary_key: vec![0],
    });
    for i in 1..=n {
        let mut changes = vec![Change::Row(RowChange {
            op: RowOp::Insert,
            table: table.clone(),
            file: "mariadb-bin.000001".into(),
            pos: 100 * i,
            before: None,
            after: Some(vec![Value::Int(i as i64), Value::Text(format!("item {i}"))]),
        })];
        if i == n {
            changes.push(Change::Statement(StatementChange {
                database: "shop".into(),
                statement: "ALTER TABLE items ADD COLUMN price INT".into(),
                file: "mariadb-bin.000001".into(),
                pos: 100 * i + 50,
            }));
        }
        let t = SourceTransaction {
            gtid: format!("0-1-{i}"),
            timestamp: 1_714_979_289 + i as u32,
            position_after: format!("0-1-{i}"),
            first_change: 0,
            ends_transaction: true,
            changes,
        };
        wal.append(&[t], format!("0-1-{i}").as_bytes()).unwrap();
    }
}

fn wal_dir_with(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_wal(&dir.path().join("wal"), n);
    dir
}

#[test]
fn wal_inspection_refuses_a_directory_that_is_not_a_wal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let path = dir.path().display().to_string();
    for command in ["stats", "list", "verify", "dump"] {
        let (code, stdout, stderr) = sdl_cmd(&["wal", command, "--dir", &path]);
        assert_ne!(code, 0, "{command}: {stdout}");
        assert!(
            stderr.contains("is not a WAL directory"),
            "{command}: {stderr}"
        );
    }
    // Nothing was created in it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["notes.txt"]);
    // A WAL directory is still read.
    let wal = wal_dir_with(1);
    let (code, stdout, stderr) = sdl_cmd(&[
        "wal",
        "stats",
        "--dir",
        &wal.path().join("wal").display().to_string(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("last sequence"), "{stdout}");
}

/// Runs `sdl wal <args>` with stdout into a pipe that is closed after the first line.
fn into_closed_pipe(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sdl"))
        .arg("wal")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    let _ = stdout.read(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap().code().unwrap_or(-1), stderr)
}

#[test]
fn wal_list_and_dump_into_a_closed_pipe_end_quietly() {
    // Enough output to overflow the pipe's buffer after the reader has gone.
    let wal = wal_dir_with(3000);
    let dir = wal.path().join("wal").display().to_string();
    for args in [
        &["list", "--limit", "3000", "--dir", &dir][..],
        &["dump", "--dir", &dir][..],
    ] {
        let (code, stderr) = into_closed_pipe(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn wal_dump_defaults_to_the_whole_wal_and_refuses_a_reversed_range() {
    let wal = wal_dir_with(4);
    let dir = wal.path().join("wal").display().to_string();
    let (code, stdout, stderr) = sdl_cmd(&["wal", "dump", "--dir", &dir]);
    assert_eq!(code, 0, "{stderr}");
    let ids: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["_id"].to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "\"default/0-1-1:0\"",
            "\"default/0-1-2:0\"",
            "\"default/0-1-3:0\"",
            "\"default/0-1-4:0\"",
            "\"default/0-1-4:1\""
        ]
    );
    let (code, stdout, _) = sdl_cmd(&["wal", "dump", "--dir", &dir, "--from", "3"]);
    assert_eq!((code, stdout.lines().count()), (0, 3), "{stdout}");
    let (code, stdout, _) = sdl_cmd(&["wal", "dump", "--dir", &dir, "--to", "1"]);
    assert_eq!((code, stdout.lines().count()), (0, 1), "{stdout}");

    // Beyond the WAL: nothing, said on stderr.
    let (code, stdout, stderr) = sdl_cmd(&["wal", "dump", "--dir", &dir, "--from", "7"]);
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    assert!(
        stderr.contains("nothing to dump: the WAL holds records 1 to 4"),
        "{stderr}"
    );
    let empty = tempfile::tempdir().unwrap();
    make_wal(&empty.path().join("wal"), 0);
    let (code, stdout, stderr) = sdl_cmd(&[
        "wal",
        "dump",
        "--dir",
        &empty.path().join("wal").display().to_string(),
    ]);
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    assert!(stderr.contains("nothing to dump"), "{stderr}");

    let (code, stdout, stderr) =
        sdl_cmd(&["wal", "dump", "--dir", &dir, "--from", "10", "--to", "5"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("--from 10 is after --to 5"), "{stderr}");
    // The options are explained in the help.
    let (_, help, _) = sdl_cmd(&["wal", "dump", "--help"]);
    assert!(help.contains("default: the oldest record"), "{help}");
}

#[test]
fn wal_list_shows_the_newest_records_with_last() {
    let wal = wal_dir_with(10);
    let dir = wal.path().join("wal").display().to_string();
    let (code, stdout, stderr) = sdl_cmd(&["wal", "list", "--dir", &dir, "--last", "3", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [8, 9, 10]);
    assert_eq!(entries[0]["time"], "2024-05-06T07:08:17Z");
}

#[test]
fn wal_show_and_dump_print_change_documents() {
    let wal = wal_dir_with(2);
    let dir = wal.path().join("wal").display().to_string();
    let (code, stdout, stderr) = sdl_cmd(&["wal", "dump", "--dir", &dir]);
    assert_eq!(code, 0, "{stderr}");
    let mut first: serde_json::Value =
        serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    // The content hash (docs/change-document.md): 32 hex digits, checked in the sink's tests.
    let hash = first.as_object_mut().unwrap().remove("hash").unwrap();
    assert!(
        hash.as_str()
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit())),
        "{hash}"
    );
    // The shape MongoDB holds (docs/change-document.md), in relaxed extended JSON; without
    // --config the `_id`s name the default source.name.
    assert_eq!(
        first,
        serde_json::json!({
            "_id": "default/0-1-1:0",
            "op": "insert",
            "ts": { "$date": "2024-05-06T07:08:10Z" },
            "meta": {
                "source": "default", "src": "default",
                "db": "shop", "tbl": "items", "pk": { "id": 1 }, "gtid": "0-1-1",
                "file": "mariadb-bin.000001", "pos": 100, "row": 0
            },
            "after": { "id": 1, "name": "item 1" }
        })
    );
    let ddl: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(ddl["op"], "ddl");
    assert_eq!(ddl["statement"], "ALTER TABLE items ADD COLUMN price INT");

    let (code, shown, stderr) = sdl_cmd(&["wal", "show", "2", "--dir", &dir]);
    assert_eq!(code, 0, "{stderr}");
    assert!(shown.contains("\"_id\": \"default/0-1-2:0\""), "{shown}");
    let (code, named, _) = sdl_cmd(&[
        "wal",
        "show",
        "2",
        "--dir",
        &dir,
        "--source-name",
        "shop-db",
    ]);
    assert_eq!(code, 0);
    assert!(named.contains("\"_id\": \"shop-db/0-1-2:0\""), "{named}");
    assert!(
        shown.contains("\"$date\": \"2024-05-06T07:08:11Z\""),
        "{shown}"
    );
    assert!(!shown.contains("\"Int\""), "{shown}");
    let (code, shown, _) = sdl_cmd(&["wal", "show", "2", "--json", "--dir", &dir]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["transaction"]["documents"][0]["after"]["id"], 2);
}

#[test]
fn wal_messages_have_no_rust_debug_forms() {
    let wal = wal_dir_with(3);
    let dir = wal.path().join("wal").display().to_string();
    let (code, _, stderr) = sdl_cmd(&["wal", "show", "9", "--dir", &dir]);
    assert_eq!(code, 1);
    assert!(stderr.contains("the WAL holds records 1 to 3"), "{stderr}");
    let empty = tempfile::tempdir().unwrap();
    make_wal(&empty.path().join("wal"), 0);
    let empty = empty.path().join("wal").display().to_string();
    let (_, stdout, _) = sdl_cmd(&["wal", "verify", "--dir", &empty]);
    assert!(
        stdout.starts_with("ok: ") && stdout.contains("no records"),
        "{stdout}"
    );
    let (_, _, stderr) = sdl_cmd(&["wal", "show", "1", "--dir", &empty]);
    for text in [&stdout, &stderr] {
        assert!(!text.contains("None") && !text.contains("Some("), "{text}");
    }
}

#[test]
fn wal_stats_names_the_record_format_version() {
    let wal = wal_dir_with(1);
    let dir = wal.path().join("wal").display().to_string();
    let format = <SourceTransaction as sdl_wal::Record>::FORMAT_VERSION;
    let (code, stdout, _) = sdl_cmd(&["wal", "stats", "--dir", &dir]);
    assert_eq!(code, 0);
    assert!(
        stdout.lines().any(|l| l.starts_with("wal format version")
            && l.split_whitespace().last() == Some(&format.to_string())),
        "{stdout}"
    );
    let (_, stdout, _) = sdl_cmd(&["wal", "stats", "--json", "--dir", &dir]);
    let stats: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats["wal_format"], format);
}

#[test]
fn wal_commands_say_where_the_wal_can_be() {
    let (code, _, stderr) = sdl_cmd(&["wal", "stats"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--admin HOST:PORT"), "{stderr}");
}

/// A config whose servers are not there (the checks that need them fail fast), with `wal_dir`
/// and `admin_listen`, and `extra_source` lines in `[source]`.
fn offline_config(dir: &Path, wal_dir: &Path, admin_listen: &str, extra_source: &str) -> String {
    let config = format!(
        "[source]\nurl = \"mysql://sdl:pw@127.0.0.1:{}\"\nserver_id = 4242\nconnect_timeout = \"2s\"\n{extra_source}\n\
         [wal]\ndir = \"{}\"\n[sink]\nurl = \"mongodb://127.0.0.1:{}/\"\nconnect_timeout = \"1s\"\n\
         [admin]\nlisten = \"{admin_listen}\"\n",
        support::free_port(),
        wal_dir.display(),
        support::free_port()
    );
    let path = dir.join("sdl.toml");
    std::fs::write(&path, config).unwrap();
    path.display().to_string()
}

fn check_line<'a>(table: &'a str, check: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(check))
        .unwrap_or_else(|| panic!("no `{check}` line in:\n{table}"))
}

#[test]
fn start_latest_is_a_config_error_listing_the_valid_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(
        dir.path(),
        &dir.path().join("wal"),
        "",
        "start = \"latest\"",
    );
    for command in ["check", "run"] {
        let (code, _, stderr) = sdl_cmd(&[command, "--config", &config]);
        assert_eq!(code, 2, "{command}: {stderr}");
        assert!(
            stderr.contains("source.start = `latest` is not a valid start")
                && stderr.contains("\"current\"")
                && stderr.contains("\"earliest\"")
                && stderr.contains("GTID position"),
            "{command}: {stderr}"
        );
    }
    assert!(!dir.path().join("wal").exists(), "nothing may be created");
}

#[test]
fn check_fails_on_a_wal_dir_that_cannot_be_written_and_a_taken_admin_port() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where wal.dir's parent should be: not creatable, even for root.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap().to_string();
    let config = offline_config(dir.path(), &blocker.join("wal"), &admin, "");
    let (code, table, stderr) = sdl_cmd(&["check", "--config", &config]);
    assert_eq!(code, 1, "{table}{stderr}");
    let wal = check_line(&table, "wal: directory writable");
    assert!(
        wal.starts_with("FAIL") && wal.contains("cannot be created"),
        "{table}"
    );
    let port = check_line(&table, "admin: listen address free");
    assert!(
        port.starts_with("FAIL") && port.contains(&admin) && port.contains("already in use"),
        "{table}"
    );
    assert!(
        table.contains("fix: set admin.listen to a free host:port"),
        "{table}"
    );

    // `sdl run` on the unwritable directory names the problem, not another sdl process.
    let (code, _, stderr) = sdl_cmd(&["run", "--config", &config]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot open the WAL directory") && !stderr.contains("another sdl"),
        "{stderr}"
    );
    assert!(!stderr.contains("Os {"), "{stderr}");

    // A writable place passes; so does a free port.
    drop(taken);
    let config = offline_config(dir.path(), &dir.path().join("wal"), &admin, "");
    let (_, table, _) = sdl_cmd(&["check", "--config", &config]);
    assert!(
        check_line(&table, "wal: directory writable").starts_with("PASS"),
        "{table}"
    );
    assert!(
        check_line(&table, "admin: listen address free").starts_with("PASS"),
        "{table}"
    );
}

#[test]
fn a_toml_error_names_line_and_column_on_one_readable_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sdl.toml");
    std::fs::write(&path, "[source]\nurl = \"mysql://a:b@h:1\"\nserver_id = \n").unwrap();
    let (code, _, stderr) = sdl_cmd(&["check", "--config", &path.display().to_string()]);
    assert_eq!(code, 2, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("sdl: error:"))
        .unwrap();
    assert!(line.contains("line 3, column 13: "), "{stderr}");
    assert!(!stderr.contains(" | "), "{stderr}");
}

#[test]
fn check_messages_carry_no_driver_dumps_or_filler() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(dir.path(), &dir.path().join("wal"), "", "");
    let (code, table, _) = sdl_cmd(&["check", "--config", &config]);
    assert_eq!(code, 1, "{table}");
    assert!(!table.contains("see the message"), "{table}");
    assert!(!table.contains("Topology: {"), "{table}");
    assert!(!table.contains("server response: None"), "{table}");
    assert!(
        !table.contains("Input/output error: Input/output error"),
        "{table}"
    );
    let sink = check_line(&table, "sink: reachable, login");
    assert!(sink.contains("Connection refused"), "{table}");
}

/// A connection attempt that hangs (the proxy accepts and never answers) keeps sdl in start-up
/// for `connect_timeout`; SIGINT, SIGTERM and SIGHUP each stop it at once, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_during_a_hanging_start_up_stop_sdl_with_a_log_line() {
    use crate::support::proxy::{Mode, Proxy};
    let proxy = Proxy::start(support::free_port()).await;
    proxy.set(Mode::Blackhole);
    for signal in ["INT", "TERM", "HUP"] {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[source]\nurl = \"mysql://sdl:pw@127.0.0.1:{}\"\nserver_id = 4242\nconnect_timeout = \"60s\"\n\
             [wal]\ndir = \"{}\"\n[sink]\nurl = \"mongodb://127.0.0.1:{}/\"\n[admin]\nlisten = \"\"\n",
            proxy.port,
            dir.path().join("wal").display(),
            support::free_port()
        );
        let mut sdl = support::Sdl::with_config(dir, &config);
        sdl.start();
        support::wait_until("sdl in start-up", Duration::from_secs(30), || async {
            sdl.logs().contains("WAL open").then_some(())
        })
        .await;
        sdl.send_signal(signal);
        let status = sdl.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "SIG{signal}:\n{}", sdl.logs());
        assert!(
            sdl.logs()
                .contains(&format!("SIG{signal} during start-up: stopping")),
            "SIG{signal}:\n{}",
            sdl.logs()
        );
    }
}

const TIMEOUT: Duration = Duration::from_secs(120);

/// `/status` says which position is which, and the WAL format version shows in `/status`, the
/// `sdl_build_info` metric, the start-up log and `sdl wal stats --admin` (which needs nothing
/// else); a MongoDB failure in `/status` carries no driver topology dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_its_positions_and_the_wal_format_shows_everywhere() {
    let Some((mariadb, mut mongo)) = support::start_servers_with_killable_mongo().await else {
        return;
    };
    let mut sdl = support::Sdl::with_settings(
        &mariadb,
        &mongo,
        "current",
        &[("sink", "connect_timeout = \"2s\"")],
    );
    sdl.start();
    sdl.wait_following().await;
    let format = <SourceTransaction as sdl_wal::Record>::FORMAT_VERSION;

    let status = sdl.status();
    let ingest = &status["ingest"];
    assert!(ingest["connection_start_position"].is_string(), "{status}");
    assert!(ingest.get("position").is_none(), "{status}");
    assert_eq!(ingest["current_position"], status["source"]["position"]);
    assert_eq!(status["build"]["wal_format"], format, "{status}");
    assert_eq!(status["build"]["version"], env!("CARGO_PKG_VERSION"));
    let (_, metrics) = sdl.admin_get("/metrics");
    let build = metrics
        .lines()
        .find(|l| l.starts_with("sdl_build_info{"))
        .unwrap_or_else(|| panic!("no sdl_build_info in:\n{metrics}"));
    assert!(
        build.contains(&format!("wal_format=\"{format}\""))
            && build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build.ends_with(" 1"),
        "{build}"
    );
    assert!(
        sdl.logs().contains(&format!("wal_format={format}")),
        "{}",
        sdl.logs()
    );
    // The flavor as its vendor writes it, not a Rust enum name.
    let logs = sdl.logs();
    assert!(
        logs.contains("flavor=MariaDB")
            && logs.contains("mode=auto")
            && logs.contains("start=current"),
        "{logs}"
    );

    // A second sdl on the same WAL: one sentence naming the lock, no debug form, said once.
    let (code, _, stderr) = sdl_cmd(&["run", "--config", &sdl.config_path.display().to_string()]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.matches("in use by another sdl process").count(),
        1,
        "{stderr}"
    );
    assert!(
        !stderr.contains("Os {") && !stderr.contains("WouldBlock"),
        "{stderr}"
    );

    let admin = sdl.admin_addr();
    let (code, stdout, stderr) = sdl_env(&["wal", "stats", "--admin", &admin], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wal format version"), "{stdout}");
    let (code, stdout, _) = sdl_cmd(&["wal", "list", "--admin", &admin, "--last", "1"]);
    assert_eq!(code, 0, "{stdout}");
    // `sdl check` beside the running service: its own WAL and admin port are not problems.
    let config = sdl.config_path.display().to_string();
    let (code, table, stderr) = sdl_cmd(&["check", "--config", &config]);
    assert_eq!(code, 0, "{table}{stderr}");
    let port = check_line(&table, "admin: listen address free");
    assert!(
        port.starts_with("PASS") && port.contains("this service's own"),
        "{table}"
    );
    let wal = check_line(&table, "wal: directory writable");
    assert!(wal.starts_with("PASS") && wal.contains("in use"), "{table}");

    // MongoDB goes away while a change waits: the error in /status is short.
    mongo.kill();
    let mut conn = mariadb.root_conn().await;
    use mysql_async::prelude::Queryable;
    conn.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let message = support::wait_until("a forwarder error in /status", TIMEOUT, || async {
        sdl.status()["forwarder"]["last_error"]["message"]
            .as_str()
            .map(String::from)
    })
    .await;
    assert!(!message.contains("Topology: {"), "{message}");
    assert!(!message.contains("server response: None"), "{message}");
}

/// Grants as the README had them (no REPLICATION MASTER ADMIN on MariaDB 10.5+): the server id
/// check says it cannot tell, with the grant; with the grant it sees a replica using the id; two
/// sdl with one id log an error that names `source.server_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_id_in_use_is_never_passed_and_its_error_names_the_key() {
    use mysql_async::prelude::Queryable;
    let (mariadb, mongo) = tokio::join!(support::MariaDb::start(), support::Mongo::start());
    let mut root = mariadb.root_conn().await;
    root.query_drop("CREATE USER 'oldgrants'@'%' IDENTIFIED BY 'old-pw'")
        .await
        .unwrap();
    root.query_drop(
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'oldgrants'@'%'",
    )
    .await
    .unwrap();
    let mut first = support::Sdl::new(&mariadb, &mongo, "current");
    first.start();
    first.wait_following().await;

    let second = support::Sdl::with_settings(
        &mariadb,
        &mongo,
        "current",
        &[("source", "name = \"second\"")],
    );
    let config = second.config_path.display().to_string();
    let (_, table, _) = sdl_cmd(&["check", "--config", &config]);
    let line = check_line(&table, "source: server_id unique");
    assert!(
        line.starts_with("WARN")
            && line.contains(
                "a replica with server_id 4242 is connected while this service is not running"
            ),
        "{table}"
    );

    let old = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{}:{}@", support::SDL_USER, support::SDL_PASSWORD),
        "oldgrants:old-pw@",
    );
    let old_config = second.dir().join("old.toml");
    std::fs::write(&old_config, old).unwrap();
    let (_, table, _) = sdl_cmd(&["check", "--config", &old_config.display().to_string()]);
    let line = check_line(&table, "source: server_id unique");
    assert!(
        line.starts_with("WARN") && line.contains("unknown"),
        "{table}"
    );
    assert!(table.contains("GRANT REPLICATION MASTER ADMIN"), "{table}");

    // Two sdl with one server id: the one pushed off stops (exit 5) naming the key to change.
    let mut second = second;
    second.start();
    support::wait_until("the same-server-id error", TIMEOUT, || async {
        [&first, &second]
            .iter()
            .any(|s| {
                s.logs().contains("source.server_id") && s.logs().contains("push each other off")
            })
            .then_some(())
    })
    .await;
}

/// A password from `source.password_file` that the source refuses is named as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_from_password_file_names_the_file() {
    let mariadb = support::MariaDb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("source-password");
    std::fs::write(&password_file, "wrong\n").unwrap();
    let config = offline_config(
        dir.path(),
        &dir.path().join("wal"),
        "",
        &format!("password_file = \"{}\"", password_file.display()),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("url = \"mysql://") {
                format!(
                    "url = \"mysql://{}@127.0.0.1:{}\"",
                    support::SDL_USER,
                    mariadb.port
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).unwrap();
    let (code, table, _) = sdl_cmd(&["check", "--config", &config]);
    assert_eq!(code, 1, "{table}");
    let login = check_line(&table, "source: reachable, login");
    assert!(
        login.starts_with("FAIL")
            && login.contains("refused the login")
            && login.contains(&format!(
                "source.password_file ({})",
                password_file.display()
            )),
        "{table}"
    );
    assert!(!login.contains("password in source.url"), "{table}");
}

#[test]
fn an_sdl_log_value_that_is_not_a_filter_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(dir.path(), &dir.path().join("wal"), "", "");
    let (code, _, stderr) = sdl_env(&["run", "--config", &config], &[("SDL_LOG", "verbose")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("SDL_LOG=\"verbose\" is not a log filter"),
        "{stderr}"
    );
    // And logging still works at info.
    assert!(stderr.contains("WAL open"), "{stderr}");
    let (_, _, stderr) = sdl_env(
        &["run", "--config", &config],
        &[("SDL_LOG", "info,sdl=debug")],
    );
    assert!(!stderr.contains("is not a log filter"), "{stderr}");
}

/// Rows written while the source had `binlog_row_metadata=MINIMAL` stop sdl with a message whose
/// way out works: setting FULL alone would fail on the same event; the message's
/// `source.column_names = "information_schema"` gets past it, and the row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_way_out_of_minimal_row_metadata_is_told_and_works() {
    use mysql_async::prelude::Queryable;
    let (mariadb, mongo) = tokio::join!(support::MariaDb::start(), support::Mongo::start());
    let mut root = mariadb.root_conn().await;
    root.query_drop("CREATE TABLE app.m (id INT PRIMARY KEY, name VARCHAR(40))")
        .await
        .unwrap();
    let mut sdl = support::Sdl::new(&mariadb, &mongo, "current");
    sdl.start();
    sdl.wait_following().await;
    root.query_drop("SET GLOBAL binlog_row_metadata = MINIMAL")
        .await
        .unwrap();
    let mut minimal = mariadb.root_conn().await;
    minimal
        .query_drop("INSERT INTO app.m VALUES (1, 'written under MINIMAL')")
        .await
        .unwrap();
    let status = sdl.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", sdl.logs());
    let logs = sdl.logs();
    assert!(
        logs.contains("source.column_names = \\\"information_schema\\\"")
            || logs.contains("source.column_names = \"information_schema\""),
        "{logs}"
    );
    assert!(
        logs.contains("restarting alone fails on this one again"),
        "{logs}"
    );

    // Follow the message: FULL from now on, and the opt-in for the events already written.
    root.query_drop("SET GLOBAL binlog_row_metadata = FULL")
        .await
        .unwrap();
    let config = std::fs::read_to_string(&sdl.config_path).unwrap().replace(
        "[source]\n",
        "[source]\ncolumn_names = \"information_schema\"\n",
    );
    std::fs::write(&sdl.config_path, config).unwrap();
    sdl.start();
    support::wait_for_offset(&mongo, &mariadb.gtid_binlog_pos().await, TIMEOUT, &sdl).await;
    let documents = support::change_documents(&mongo).await;
    let insert = documents
        .iter()
        .find(|d| d.get_str("op") == Ok("insert"))
        .unwrap_or_else(|| panic!("{documents:?}"));
    assert_eq!(
        insert.get_document("after").unwrap().get_str("name"),
        Ok("written under MINIMAL")
    );
}
