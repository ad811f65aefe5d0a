//! Which tables a snapshot reads and by which key, on a real MariaDB: `source.snapshot_tables`
//! patterns and the default (views and system schemas left out), the key chosen (primary key,
//! composite, NOT NULL unique) or the refusal (no key, a nullable unique key); `sdl snapshot`
//! refusing a keyless or unknown table with exit 2 and queuing good ones; `sdl check` naming a
//! keyless table when `source.snapshot = "initial"`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use mysql_async::prelude::Queryable;
use sdl::source::snapshot::requests::{pending, refused, requests_dir};
use sdl::source::snapshot::select::{resolve_tables, snapshot_key};
use sdl::source::SourceError;

use crate::support::{free_port, run_sdl_with_output, MariaDb};

/// Tables of every kind the selection must tell apart.
async fn create_schema(mariadb: &MariaDb) {
    let mut root = mariadb.root_conn().await;
    for statement in [
        "CREATE DATABASE shop",
        "CREATE TABLE app.orders (id INT PRIMARY KEY, total INT)",
        "CREATE TABLE app.lines (order_id INT, line INT, qty INT, PRIMARY KEY (order_id, line))",
        // No primary key; `a_email` allows NULL, `b_code` is NOT NULL: b_code is the key.
        "CREATE TABLE app.customers (email VARCHAR(50) NULL, code VARCHAR(20) NOT NULL, \
         name TEXT, UNIQUE KEY a_email (email), UNIQUE KEY b_code (code))",
        "CREATE TABLE app.events (at DATETIME, what TEXT)",
        "CREATE TABLE app.contacts (phone VARCHAR(20) NULL, UNIQUE KEY (phone))",
        "CREATE VIEW app.big_orders AS SELECT * FROM app.orders WHERE total > 100",
        "CREATE TABLE shop.invoices (id BIGINT PRIMARY KEY)",
        "CREATE TABLE shop.invoice_lines (id BIGINT PRIMARY KEY)",
    ] {
        root.query_drop(statement).await.unwrap();
    }
    root.disconnect().await.unwrap();
}

async fn sdl_conn(mariadb: &MariaDb) -> mysql_async::Conn {
    mysql_async::Conn::from_url(mariadb.sdl_url().as_str())
        .await
        .unwrap()
}

fn names(tables: Vec<(String, String)>) -> Vec<String> {
    tables
        .into_iter()
        .map(|(d, t)| format!("{d}.{t}"))
        .collect()
}

fn patterns(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_and_keys_are_selected_from_the_source() {
    let mariadb = MariaDb::start().await;
    create_schema(&mariadb).await;
    let mut conn = sdl_conn(&mariadb).await;

    // The default: every base table, sorted, without the view and the system schemas.
    let all = names(resolve_tables(&mut conn, &[]).await.unwrap());
    assert_eq!(
        all,
        [
            "app.contacts",
            "app.customers",
            "app.events",
            "app.lines",
            "app.orders",
            "shop.invoice_lines",
            "shop.invoices"
        ]
    );
    let picked = resolve_tables(&mut conn, &patterns(&["shop.*", "app.orders", "app.ord*"]))
        .await
        .unwrap();
    assert_eq!(
        names(picked),
        ["app.orders", "shop.invoice_lines", "shop.invoices"]
    );
    assert_eq!(
        names(
            resolve_tables(&mut conn, &patterns(&["*.invoice*"]))
                .await
                .unwrap()
        ),
        ["shop.invoice_lines", "shop.invoices"]
    );
    // `*.*` is every user table too; a system schema only when named.
    assert_eq!(
        names(
            resolve_tables(&mut conn, &patterns(&["*.*"]))
                .await
                .unwrap()
        ),
        all
    );
    let system = names(
        resolve_tables(&mut conn, &patterns(&["mysql.*"]))
            .await
            .unwrap(),
    );
    assert!(
        system.contains(&"mysql.user".to_string())
            || system.contains(&"mysql.global_priv".to_string()),
        "{system:?}"
    );

    for (pattern, expected) in [
        ("app.nope", "cannot snapshot app.nope: no such table"),
        ("App.orders", "cannot snapshot App.orders: no such table"),
        (
            "app.big_orders",
            "cannot snapshot app.big_orders: it is a view",
        ),
        (
            "nope.*",
            "cannot snapshot nope.*: the pattern matches no table",
        ),
    ] {
        let err = resolve_tables(&mut conn, &patterns(&["app.orders", pattern]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SourceError::SnapshotRefused { .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with(expected), "{pattern}: {err}");
    }

    assert_eq!(
        snapshot_key(&mut conn, "app", "orders").await.unwrap(),
        ["id"]
    );
    assert_eq!(
        snapshot_key(&mut conn, "app", "lines").await.unwrap(),
        ["order_id", "line"]
    );
    assert_eq!(
        snapshot_key(&mut conn, "app", "customers").await.unwrap(),
        ["code"]
    );
    for (table, expected) in [
        ("events", "it has no primary key and no UNIQUE key"),
        (
            "contacts",
            "it has no primary key, and its UNIQUE key(s) `phone` allow NULL",
        ),
    ] {
        let err = snapshot_key(&mut conn, "app", table).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, SourceError::SnapshotRefused { table: t, .. } if *t == format!("app.{table}")),
            "{err:?}"
        );
        assert!(
            text.starts_with(&format!("cannot snapshot app.{table}: {expected}")),
            "{text}"
        );
        assert!(
            text.contains("add a primary key") && text.contains("source.snapshot_tables"),
            "{text}"
        );
    }
    let err = snapshot_key(&mut conn, "app", "big_orders")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("it is a view"), "{err}");
    let err = snapshot_key(&mut conn, "app", "gone").await.unwrap_err();
    assert!(err.to_string().contains("no such table"), "{err}");
    conn.disconnect().await.unwrap();
}

/// A config for `mariadb` (or, with `None`, a source nothing listens on) with its WAL in `dir`.
fn write_config(dir: &Path, source_url: &str, source_extra: &str) -> PathBuf {
    let config = format!(
        "[source]\nurl = \"{source_url}\"\nserver_id = 4242\nconnect_timeout = \"2s\"\n{source_extra}\n\
         [wal]\ndir = \"{}\"\n\
         [sink]\nurl = \"mongodb://127.0.0.1:{}/?replicaSet=rs0\"\nconnect_timeout = \"1s\"\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\n",
        dir.join("wal").display(),
        free_port(),
        free_port()
    );
    let path = dir.join("sdl.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs `sdl` with `args` and `--config <config>`: (exit code, stdout, stderr).
fn sdl(args: &[&str], config: &Path) -> (i32, String, String) {
    let mut args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    args.extend([OsStr::new("--config"), config.as_os_str()]);
    run_sdl_with_output(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_snapshot_refuses_bad_tables_and_queues_good_ones() {
    let mariadb = MariaDb::start().await;
    create_schema(&mariadb).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mariadb.sdl_url(), "");
    let wal = dir.path().join("wal");

    let (code, out, err) = sdl(&["snapshot", "app.orders", "app.events"], &config);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("cannot snapshot app.events: it has no primary key"),
        "{err}"
    );
    assert!(err.contains("add a primary key"), "{err}");
    // `app.*` holds two keyless tables: both are named.
    let (code, _, err) = sdl(&["snapshot", "app.*"], &config);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("app.events") && err.contains("app.contacts"),
        "{err}"
    );
    let (code, _, err) = sdl(&["snapshot", "app.nope"], &config);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot snapshot app.nope: no such table"),
        "{err}"
    );
    let (code, _, err) = sdl(&["snapshot", "orders"], &config);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`orders` is not a table pattern"), "{err}");
    let (code, _, err) = sdl(&["snapshot"], &config);
    assert_eq!(code, 2, "{err}");
    assert!(
        pending(&wal).unwrap().is_empty(),
        "nothing queued by a refused command"
    );

    let (code, out, err) = sdl(&["snapshot", "app.orders", "shop.*"], &config);
    assert_eq!(code, 0, "{out}\n{err}");
    let queued = pending(&wal).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].tables, ["app.orders", "shop.*"]);
    assert!(
        out.contains(&format!("snapshot {} queued: 3 table(s)", queued[0].id)),
        "{out}"
    );
    assert!(out.contains("starts with the next `sdl run`"), "{out}");
    let file = requests_dir(&wal).join(format!("{}.json", queued[0].id));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(json["id"], queued[0].id.as_str());
    assert_eq!(json["tables"], serde_json::json!(["app.orders", "shop.*"]));
}

/// Plays a running service's part for `wal`: holds the lock a running sdl holds on the WAL's `db`
/// file, and calls `take` with the first request file that appears (within 20 s). Returns the
/// lock (held until dropped) and the thread (true once it found a request).
fn play_service(
    wal: &Path,
    take: impl FnOnce(&Path) + Send + 'static,
) -> (std::fs::File, std::thread::JoinHandle<bool>) {
    std::fs::create_dir_all(wal).unwrap();
    let db = std::fs::File::create(wal.join("db")).unwrap();
    db.lock().unwrap();
    let requests = requests_dir(wal);
    let service = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Some(file) = std::fs::read_dir(&requests).ok().and_then(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|x| x == "json"))
            }) {
                take(&file);
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    });
    (db, service)
}

#[test]
fn sdl_snapshot_queues_unchecked_when_the_source_is_down_and_waits_for_a_running_service() {
    let dir = tempfile::tempdir().unwrap();
    let down = format!("mysql://sdl:pw@127.0.0.1:{}", free_port());
    let config = write_config(dir.path(), &down, "");
    let wal = dir.path().join("wal");
    let (lock, service) = play_service(&wal, |file| std::fs::remove_file(file).unwrap());
    let (code, out, err) = sdl(&["snapshot", "app.orders"], &config);
    assert!(service.join().unwrap(), "the request file never appeared");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("the tables were not checked"), "{err}");
    assert!(
        out.contains("queued: 1 table(s) or pattern(s) (app.orders), not checked"),
        "{out}"
    );
    assert!(out.contains("taken by the running service"), "{out}");
    drop(lock);

    // A request the running service refuses (it checks the tables itself): exit 2 with its reason.
    let wal_dir = wal.clone();
    let (lock, service) = play_service(&wal, move |file| {
        let id = file.file_stem().unwrap().to_str().unwrap().to_string();
        refused(
            &wal_dir,
            &id,
            "cannot snapshot app.orders: no such table on the source",
        )
        .unwrap();
    });
    let (code, out, err) = sdl(&["snapshot", "app.orders"], &config);
    assert!(service.join().unwrap(), "the request file never appeared");
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("the running service refused snapshot") && err.contains("no such table"),
        "{err}"
    );
    drop(lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_check_names_a_keyless_table_of_an_initial_snapshot() {
    let mariadb = MariaDb::start().await;
    create_schema(&mariadb).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &mariadb.sdl_url(),
        "snapshot = \"initial\"\nsnapshot_tables = [\"app.orders\", \"app.events\", \"shop.*\"]",
    );
    let (code, out, err) = sdl(&["check"], &config);
    assert_eq!(code, 1, "{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.contains("source: initial snapshot"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("FAIL"), "{out}");
    assert!(
        line.contains("cannot snapshot app.events: it has no primary key"),
        "{out}"
    );

    let config = write_config(
        dir.path(),
        &mariadb.sdl_url(),
        "snapshot = \"initial\"\nsnapshot_tables = [\"app.orders\", \"shop.*\"]",
    );
    let (_, out, _) = sdl(&["check"], &config);
    let line = out
        .lines()
        .find(|l| l.contains("source: initial snapshot"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("PASS"), "{out}");
    assert!(line.contains("snapshot: 3 tables selected"), "{out}");
    // With snapshot = "never" there is no such line.
    let config = write_config(dir.path(), &mariadb.sdl_url(), "");
    let (_, out, _) = sdl(&["check"], &config);
    assert!(!out.contains("initial snapshot"), "{out}");
}
