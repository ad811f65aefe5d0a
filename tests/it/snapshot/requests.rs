//! Asking for a snapshot, and what sdl refuses (issue 16): `sdl snapshot db.t` on a running
//! service is taken and written for every row (documents, `/status`, metrics); with the service
//! stopped it is queued as a request file the next start takes; a table without a usable key is
//! refused with exit code 2 naming it, by the command and by `snapshot = "initial"` before
//! anything is relayed, and by the service when a queued request's table is gone by the time it
//! takes it (visibly, and the relay goes on); an empty table's snapshot finishes with no
//! document; `snapshot_rows_per_second` holds the rate; and the default, `snapshot = "never"`,
//! writes no snapshot document.

use std::time::{Duration, SystemTime};

use mongodb::bson::{doc, Document};
use mysql_async::prelude::Queryable;

use crate::support::snapshot::{
    assert_ids_unique, assert_offset_reaches, assert_snapshot_documents_well_formed,
    assert_tables_equal, count_documents, millis_since_epoch, rebuild_interleaved, request_files,
    run_sdl_snapshot, select_keyed, snapshot_id_millis, snapshot_table, try_status,
    wait_everything_forwarded, wait_snapshot_idle, wait_snapshot_status, wait_with_sdl,
};
use crate::support::{all_documents, Relay, RelayBuilder};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Short intervals, and chunks of 100 rows.
fn relay_with_short_intervals() -> RelayBuilder {
    Relay::builder().settings(&[
        ("source", "snapshot_chunk_rows = 100"),
        ("source", "heartbeat_interval = \"500ms\""),
        ("wal", "group_commit_delay = \"1ms\""),
        ("sink", "connect_timeout = \"1s\""),
        ("sink", "retry_max_delay = \"1s\""),
    ])
}

/// `CREATE TABLE app.<table>` with an integer key and `rows` rows (non-ASCII text, decimals,
/// NULLs).
fn table_with_rows(table: &str, rows: u32) -> Vec<String> {
    let mut statements = vec![format!(
        "CREATE TABLE app.{table} (id INT PRIMARY KEY, label VARCHAR(64) NOT NULL, \
         amount DECIMAL(10,2), note TEXT) ENGINE=InnoDB"
    )];
    if rows > 0 {
        let values: Vec<String> = (1..=rows)
            .map(|i| {
                let note = match i % 5 {
                    0 => "NULL".to_string(),
                    _ => format!("'note {i} ✓'"),
                };
                format!("({i}, 'row-{i}-é', {}.{:02}, {note})", i * 3, i % 100)
            })
            .collect();
        statements.push(format!(
            "INSERT INTO app.{table} VALUES {}",
            values.join(",")
        ));
    }
    statements
}

async fn run_sql(relay: &Relay, statements: &[String]) {
    let mut conn = relay.conn().await;
    for statement in statements {
        conn.query_drop(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    conn.disconnect().await.unwrap();
}

/// The id of the snapshot a request file names (`<id>.json`).
fn request_id(file: &std::path::Path) -> String {
    file.file_stem().unwrap().to_str().unwrap().to_string()
}

async fn snapshot_documents_of(relay: &Relay, table: &str) -> u64 {
    count_documents(&relay.mongo, doc! { "op": "snapshot", "meta.tbl": table }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_snapshot_on_a_running_service_writes_every_row_of_a_table_created_after_start() {
    const ROWS: u32 = 250;
    let test_started = SystemTime::now();
    let relay = relay_with_short_intervals().following().await;
    run_sql(&relay, &table_with_rows("later", ROWS)).await;
    relay.wait_caught_up(TIMEOUT).await;

    let (code, output) = run_sdl_snapshot(&relay.sdl, &["app.later"]).await;
    assert_eq!(code, Some(0), "sdl snapshot app.later:\n{output}");
    let said = output.to_lowercase();
    assert!(
        said.contains("took") || said.contains("taken"),
        "sdl snapshot says the running service took the request:\n{output}"
    );
    wait_with_sdl(
        &relay.sdl,
        "a snapshot document for every row of app.later",
        TIMEOUT,
        || async { (snapshot_documents_of(&relay, "later").await == ROWS as u64).then_some(()) },
    )
    .await;
    let idle = wait_snapshot_idle(&relay.sdl, TIMEOUT).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    wait_everything_forwarded(&relay.sdl, &position, TIMEOUT).await;
    assert_eq!(
        relay.sdl.metric("sdl_snapshot_rows_total"),
        ROWS as f64,
        "{idle}"
    );
    assert!(relay.sdl.metric("sdl_snapshot_chunks_total") >= 3.0);
    assert_eq!(relay.sdl.metric("sdl_snapshot_tables_remaining"), 0.0);
    assert!(
        request_files(&relay.sdl).is_empty(),
        "the service deletes a request it took: {:?}",
        request_files(&relay.sdl)
    );

    let docs = all_documents(&relay.mongo).await;
    assert_ids_unique(&docs);
    let per_snapshot = assert_snapshot_documents_well_formed(&docs, "app", "later", &["id"]);
    let ids: Vec<&String> = per_snapshot.keys().collect();
    assert_eq!(ids.len(), 1, "one snapshot: {per_snapshot:?}");
    let requested_at = snapshot_id_millis(ids[0]);
    assert!(
        millis_since_epoch(test_started) - 1000 <= requested_at
            && requested_at <= millis_since_epoch(SystemTime::now()),
        "snapshot id {} is the time sdl snapshot asked for it",
        ids[0]
    );
    let mut conn = relay.conn().await;
    let source = select_keyed(&mut conn, "app.later", &["id"]).await;
    conn.disconnect().await.unwrap();
    assert_tables_equal(
        &source,
        &snapshot_table(&docs, "app", "later", &["id"], ids[0]),
        "app.later as its snapshot documents hold it",
    );
    assert_eq!(
        try_status(&relay.sdl).unwrap()["snapshot"]["rows_written"],
        ROWS,
        "/status snapshot.rows_written"
    );
    assert_offset_reaches(&relay.mongo, &position, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_snapshot_refuses_a_table_without_a_usable_key_naming_it() {
    let relay = relay_with_short_intervals()
        .sql(&[
            "CREATE TABLE app.nokey (a INT, b VARCHAR(10)) ENGINE=InnoDB",
            "INSERT INTO app.nokey VALUES (1, 'x'), (1, 'x')",
            // A UNIQUE key over a nullable column does not tell rows apart either.
            "CREATE TABLE app.nullable_unique (email VARCHAR(64) NULL, n INT, UNIQUE KEY (email)) ENGINE=InnoDB",
            "INSERT INTO app.nullable_unique VALUES (NULL, 1), (NULL, 2)",
        ])
        .following()
        .await;
    for table in ["app.nokey", "app.nullable_unique"] {
        let (code, output) = run_sdl_snapshot(&relay.sdl, &[table]).await;
        assert_eq!(code, Some(2), "sdl snapshot {table}:\n{output}");
        assert!(
            output.contains(table),
            "the refusal names {table}:\n{output}"
        );
    }
    assert!(
        request_files(&relay.sdl).is_empty(),
        "a refused request is not queued: {:?}",
        request_files(&relay.sdl)
    );
    let (code, output) = run_sdl_snapshot(&relay.sdl, &["app.no_such_table"]).await;
    assert_eq!(code, Some(2), "sdl snapshot app.no_such_table:\n{output}");
    assert!(output.contains("app.no_such_table"), "{output}");
    assert_eq!(
        count_documents(&relay.mongo, doc! { "op": "snapshot" }).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_snapshot_with_the_service_stopped_is_taken_at_the_next_start() {
    const ROWS: u32 = 150;
    let mut relay = relay_with_short_intervals().following().await;
    run_sql(&relay, &table_with_rows("t", ROWS)).await;
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    // Changes while sdl is stopped: the stream relays them before the snapshot's images.
    run_sql(
        &relay,
        &[
            "UPDATE app.t SET amount = amount + 1, note = 'changed while stopped' WHERE id <= 20"
                .to_string(),
            "DELETE FROM app.t WHERE id BETWEEN 21 AND 30".to_string(),
            "INSERT INTO app.t VALUES (1000, 'added while stopped', NULL, NULL)".to_string(),
        ],
    )
    .await;

    let (code, output) = run_sdl_snapshot(&relay.sdl, &["app.t"]).await;
    assert_eq!(
        code,
        Some(0),
        "sdl snapshot app.t with sdl stopped:\n{output}"
    );
    let queued = request_files(&relay.sdl);
    assert_eq!(queued.len(), 1, "one request file queued: {queued:?}");
    let id = request_id(&queued[0]);
    snapshot_id_millis(&id);

    relay.sdl.start();
    wait_with_sdl(
        &relay.sdl,
        "the request file taken (deleted)",
        TIMEOUT,
        || async { request_files(&relay.sdl).is_empty().then_some(()) },
    )
    .await;
    wait_snapshot_idle(&relay.sdl, TIMEOUT).await;
    let position = relay.mariadb.gtid_binlog_pos().await;
    wait_everything_forwarded(&relay.sdl, &position, TIMEOUT).await;

    let docs = all_documents(&relay.mongo).await;
    assert_ids_unique(&docs);
    let per_snapshot = assert_snapshot_documents_well_formed(&docs, "app", "t", &["id"]);
    assert_eq!(
        per_snapshot.keys().collect::<Vec<_>>(),
        vec![&id],
        "the one snapshot is the queued request's"
    );
    let mut conn = relay.conn().await;
    let source = select_keyed(&mut conn, "app.t", &["id"]).await;
    conn.disconnect().await.unwrap();
    // The stream catches up with the changes made while sdl was stopped as the snapshot starts:
    // a row they touched may be left to its change documents (changed in its chunk's window);
    // every other row is in the snapshot, and every image is the row as it is now.
    let snapshot = snapshot_table(&docs, "app", "t", &["id"], &id);
    for (key, image) in &snapshot {
        assert_eq!(
            source.get(key),
            Some(image),
            "the snapshot's image (right) of app.t row {key:?} is the row as it is"
        );
    }
    for (key, row) in &source {
        let untouched = (31..=ROWS as i64).contains(&row["id"].parse::<i64>().unwrap());
        assert!(
            !untouched || snapshot.contains_key(key),
            "app.t row {key:?}, unchanged since it was created, is in the snapshot"
        );
    }
    assert_tables_equal(
        &source,
        &rebuild_interleaved(&docs, "app", "t", &["id"]),
        "app.t rebuilt from its changes with the snapshot images at their meta.position",
    );
    assert_offset_reaches(&relay.mongo, &position, Duration::from_secs(15)).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_snapshot_with_a_keyless_table_exits_2_before_relaying_anything() {
    let mut relay = relay_with_short_intervals()
        .sql(&[
            "CREATE TABLE app.good (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
            "INSERT INTO app.good VALUES (1, 1), (2, 2)",
            "CREATE TABLE app.nokey (a INT, b VARCHAR(10)) ENGINE=InnoDB",
            "INSERT INTO app.nokey VALUES (1, 'x')",
        ])
        // From the oldest binlog: relaying anything before the check would write documents.
        .start_from("earliest")
        .setting("source", "snapshot = \"initial\"")
        .stopped()
        .await;
    relay.sdl.start();
    let status = relay.sdl.wait_exit(TIMEOUT);
    let logs = relay.sdl.logs();
    assert_eq!(status.code(), Some(2), "exit status {status}:\n{logs}");
    assert!(
        logs.contains("app.nokey"),
        "the refusal names app.nokey:\n{logs}"
    );
    assert_eq!(
        count_documents(&relay.mongo, doc! {}).await,
        0,
        "nothing relayed"
    );
    let offsets = relay
        .mongo
        .db()
        .await
        .collection::<Document>("binlog_offsets")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(offsets, 0, "no offset saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_an_empty_table_finishes_with_no_documents() {
    let mut statements = table_with_rows("empty", 0);
    statements.extend(table_with_rows("other", 20));
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    let relay = relay_with_short_intervals()
        .sql(&statements)
        .setting("source", "snapshot = \"initial\"")
        .setting("source", "snapshot_tables = [\"app.empty\"]")
        .following()
        .await;
    wait_with_sdl(
        &relay.sdl,
        "the initial snapshot of the empty app.empty to finish",
        TIMEOUT,
        || async {
            let snapshot = try_status(&relay.sdl)?["snapshot"].clone();
            (relay.sdl.logs().contains("snapshot of app.empty:")
                && snapshot["state"] == "idle"
                && snapshot["tables_left"] == 0)
                .then_some(())
        },
    )
    .await;

    // Asked for again on the running service: taken, finished, nothing written.
    let (code, output) = run_sdl_snapshot(&relay.sdl, &["app.empty"]).await;
    assert_eq!(code, Some(0), "sdl snapshot app.empty:\n{output}");
    wait_with_sdl(
        &relay.sdl,
        "the requested snapshot of app.empty to finish",
        TIMEOUT,
        || async {
            let snapshot = try_status(&relay.sdl)?["snapshot"].clone();
            (request_files(&relay.sdl).is_empty()
                && snapshot["state"] == "idle"
                && snapshot["tables_left"] == 0)
                .then_some(())
        },
    )
    .await;
    // The stream goes on, and MongoDB's offset reaches the source's position (no snapshot left
    // in the position it saves).
    run_sql(
        &relay,
        &["INSERT INTO app.other VALUES (100, 'after', NULL, NULL)".to_string()],
    )
    .await;
    relay.wait_caught_up(TIMEOUT).await;
    assert_eq!(
        count_documents(&relay.mongo, doc! { "op": "snapshot" }).await,
        0,
        "an empty table, and a table outside snapshot_tables, give no snapshot document"
    );
    assert_eq!(relay.sdl.metric("sdl_snapshot_rows_total"), 0.0);
    assert_eq!(relay.sdl.metric("sdl_snapshot_tables_remaining"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_never_is_the_default_and_writes_no_snapshot_document() {
    let statements = table_with_rows("existing", 50);
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    let relay = relay_with_short_intervals()
        .sql(&statements)
        .following()
        .await;
    run_sql(
        &relay,
        &["UPDATE app.existing SET amount = 0 WHERE id = 7".to_string()],
    )
    .await;
    relay.wait_caught_up(TIMEOUT).await;
    let docs = all_documents(&relay.mongo).await;
    let ops: Vec<&str> = docs.iter().map(|d| d.get_str("op").unwrap()).collect();
    assert_eq!(ops, vec!["update"], "only the change is relayed");
    let snapshot = try_status(&relay.sdl).unwrap()["snapshot"].clone();
    assert_eq!(snapshot["state"], "idle", "{snapshot}");
    assert!(snapshot["id"].is_null(), "{snapshot}");
    assert_eq!(snapshot["tables_left"], 0, "{snapshot}");
    assert_eq!(relay.sdl.metric("sdl_snapshot_rows_total"), 0.0);
}

/// A request that was good when queued but is bad when the service takes it (its table dropped
/// meanwhile) is refused without stopping the relay: an ERROR naming the table, `/status`
/// `snapshot.refused`, the file renamed `<id>.json.refused` with the reason beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_bad_when_taken_is_refused_visibly_and_the_relay_goes_on() {
    let mut relay = relay_with_short_intervals()
        .sql(&["CREATE TABLE app.gone (id INT PRIMARY KEY) ENGINE=InnoDB"])
        .stopped()
        .await;
    let (code, output) = run_sdl_snapshot(&relay.sdl, &["app.gone"]).await;
    assert_eq!(code, Some(0), "sdl snapshot app.gone:\n{output}");
    let queued = request_files(&relay.sdl);
    assert_eq!(queued.len(), 1, "{queued:?}");
    run_sql(&relay, &["DROP TABLE app.gone".to_string()]).await;

    relay.sdl.start();
    relay.sdl.wait_following().await;
    let refused = wait_with_sdl(
        &relay.sdl,
        "/status snapshot.refused naming app.gone",
        TIMEOUT,
        || async {
            let refused = try_status(&relay.sdl)?["snapshot"]["refused"].clone();
            let names_it = refused.as_array()?.iter().any(|r| {
                r["table"] == "app.gone" && r["reason"].as_str().is_some_and(|s| !s.is_empty())
            });
            names_it.then_some(refused)
        },
    )
    .await;
    let logs = relay.sdl.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("ERROR") && l.contains("sdl::snapshot") && l.contains("app.gone")),
        "an ERROR on sdl::snapshot names app.gone:\n{logs}"
    );
    let renamed = queued[0].with_extension("json.refused");
    assert!(
        renamed.exists() && !queued[0].exists(),
        "the request file is renamed {}: {refused}",
        renamed.display()
    );
    let reason = std::path::PathBuf::from(format!("{}.reason", renamed.display()));
    assert!(
        std::fs::read_to_string(&reason).is_ok_and(|r| !r.trim().is_empty()),
        "the reason is written beside it ({})",
        reason.display()
    );

    // The relay goes on.
    run_sql(
        &relay,
        &[
            "CREATE TABLE app.after (id INT PRIMARY KEY) ENGINE=InnoDB".to_string(),
            "INSERT INTO app.after VALUES (1)".to_string(),
        ],
    )
    .await;
    relay.wait_caught_up(TIMEOUT).await;
    let snapshot = wait_snapshot_idle(&relay.sdl, TIMEOUT).await;
    assert_eq!(
        count_documents(&relay.mongo, doc! { "op": "snapshot" }).await,
        0,
        "{snapshot}"
    );
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// Seconds since midnight of the UTC timestamp that starts an sdl log line holding `needle`.
fn log_time_of(logs: &str, needle: &str) -> f64 {
    let line = logs
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{logs}"));
    // `2026-11-27T19:06:37.296168Z ...`
    let clock = &line[11..line.find('Z').unwrap()];
    let parts: Vec<f64> = clock.split(':').map(|p| p.parse().unwrap()).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

/// `snapshot_rows_per_second` holds the snapshot's average rate (a token bucket between chunks,
/// `/status` state `throttled` while it waits): 600 rows at 200 rows/s take seconds, not the
/// fraction of a second they take unlimited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rows_per_second_limit_holds_the_snapshot_rate() {
    const ROWS: u32 = 600;
    const RATE: u32 = 200;
    let statements = table_with_rows("paced", ROWS);
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    let relay = relay_with_short_intervals()
        .sql(&statements)
        .settings(&[
            ("source", "snapshot = \"initial\""),
            ("source", "snapshot_tables = [\"app.paced\"]"),
            ("source", "snapshot_rows_per_second = 200"),
        ])
        .following()
        .await;
    wait_snapshot_status(&relay.sdl, "state throttled", TIMEOUT, |s| {
        s["state"] == "throttled"
    })
    .await;
    wait_snapshot_idle(&relay.sdl, TIMEOUT).await;
    let logs = relay.sdl.logs();
    let mut elapsed = log_time_of(&logs, "snapshot of app.paced: done")
        - log_time_of(&logs, "snapshot of app.paced: starting");
    if elapsed < 0.0 {
        elapsed += 86_400.0; // across midnight
    }
    // At most a chunk and a second's worth of rows may go ahead of the rate.
    let at_least = (ROWS - 100 - RATE) as f64 / RATE as f64;
    assert!(
        elapsed >= at_least,
        "{ROWS} rows at {RATE} rows/s took {elapsed:.2} s, under {at_least:.2} s:\n{logs}"
    );
    assert_eq!(
        count_documents(&relay.mongo, doc! { "op": "snapshot" }).await,
        ROWS as u64
    );
    eprintln!("{ROWS} rows at {RATE} rows/s took {elapsed:.2} s");
}
