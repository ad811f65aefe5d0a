//! A reviewer's attacks on the snapshot's guarantees (issue 16), each a way the promise broke:
//!
//! - DDL that the stream reads between two chunk windows (while the snapshot is throttled), which
//!   no window sees: a table dropped must be refused visibly (ERROR, `/status` `refused`) while
//!   the relay goes on, not stop sdl with exit 2; a column added must be in every snapshot image
//!   placed after the `ALTER TABLE` (an image is the row's state at its place in the WAL).
//! - A table dropped under its chunk query (the query fails before the stream shows the DDL):
//!   refused visibly, the relay goes on.
//! - A key column's order changed under the snapshot (its collation): paging on past a key of
//!   the old order must not skip rows silently nor read rows twice; refusing the table is fine.
//!
//! And a suspicion checked and cleared: a chunk larger than a sink batch (split into several WAL
//! records, each saving the plan after its last row) under writes and a SIGKILL between its
//! records rebuilds the table exactly.

use std::time::Duration;

use mongodb::bson::Bson;
use mysql_async::prelude::Queryable;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::support::snapshot::{
    assert_ids_unique, assert_rebuilds_equal, select_keyed, snapshot_documents, status_number,
    try_status, wait_snapshot_done_and_forwarded, wait_snapshot_idle, wait_snapshot_status,
    wait_with_sdl,
};
use crate::support::{all_documents, Relay, RelayBuilder, Rng};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `app.<table> (id INT PRIMARY KEY, v INT NOT NULL)` for each of `tables`, with the rows
/// 1..=`rows` (`v` = `id`).
fn id_v_tables(tables: &[&str], rows: i64) -> Vec<String> {
    let values: Vec<String> = (1..=rows).map(|i| format!("({i}, {i})")).collect();
    tables
        .iter()
        .flat_map(|table| {
            [
                format!(
                    "CREATE TABLE app.{table} (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB"
                ),
                format!("INSERT INTO app.{table} VALUES {}", values.join(",")),
            ]
        })
        .collect()
}

/// Servers set up by `statements` and an sdl (short intervals) that snapshots `app.<table>` for
/// each of `tables`, in chunks of `chunk_rows` at `rows_per_second`.
fn snapshot_relay(
    statements: &[String],
    tables: &[&str],
    chunk_rows: u64,
    rows_per_second: u64,
) -> RelayBuilder {
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    let snapshot_tables = format!(
        "snapshot_tables = [{}]",
        tables
            .iter()
            .map(|t| format!("\"app.{t}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Relay::builder().sql(&statements).settings(&[
        ("source", "snapshot = \"initial\""),
        ("source", snapshot_tables.as_str()),
        ("source", &format!("snapshot_chunk_rows = {chunk_rows}")),
        (
            "source",
            &format!("snapshot_rows_per_second = {rows_per_second}"),
        ),
        ("source", "heartbeat_interval = \"500ms\""),
        ("wal", "group_commit_delay = \"1ms\""),
        ("sink", "connect_timeout = \"1s\""),
        ("sink", "retry_max_delay = \"1s\""),
    ])
}

/// Tables of 300 rows in chunks of 100 rows at 100 rows/s: about a second between chunk
/// windows, with the window itself a few milliseconds long.
fn throttled_relay(tables: &[&str]) -> RelayBuilder {
    snapshot_relay(&id_v_tables(tables, 300), tables, 100, 100)
}

/// Waits until the snapshot of `app.<table>` has placed its first chunk (100 rows) and waits,
/// throttled, for its next window.
async fn wait_throttled_after_first_chunk(relay: &Relay, table: &str) {
    let name = format!("app.{table}");
    wait_snapshot_status(
        &relay.sdl,
        &format!("the snapshot of {name} throttled after its first chunk"),
        TIMEOUT,
        |s| {
            s["table"] == name.as_str()
                && s["state"] == "throttled"
                && status_number(s, "rows_done") == 100
        },
    )
    .await;
}

async fn run_sql(relay: &Relay, statement: &str) {
    let mut conn = relay.conn().await;
    conn.query_drop(statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    conn.disconnect().await.unwrap();
}

/// Waits until `/status` `snapshot.refused` names `app.first`, then until the snapshot is over
/// and MongoDB caught up, and asserts that `app.second`, after it, is snapshotted whole.
async fn assert_first_refused_and_second_snapshotted_whole(relay: &Relay) {
    let refused = wait_with_sdl(
        &relay.sdl,
        "/status snapshot.refused naming app.first",
        TIMEOUT,
        || async {
            let refused = try_status(&relay.sdl)?["snapshot"]["refused"].clone();
            refused
                .as_array()?
                .iter()
                .any(|r| r["table"] == "app.first")
                .then_some(refused)
        },
    )
    .await;
    wait_snapshot_idle(&relay.sdl, TIMEOUT).await;
    relay.wait_caught_up(TIMEOUT).await;
    let docs = all_documents(&relay.mongo).await;
    assert_eq!(
        snapshot_documents(&docs, "app", "second").len(),
        300,
        "app.second, after the refused app.first, is snapshotted whole: {refused}"
    );
}

/// A table dropped while its snapshot waits between chunks: the next chunk's query finds no
/// table. sdl must refuse that table loudly and go on with the next one and the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_between_chunks_is_refused_and_the_relay_goes_on() {
    let mut relay = throttled_relay(&["first", "second"]).following().await;
    wait_throttled_after_first_chunk(&relay, "first").await;
    run_sql(&relay, "DROP TABLE app.first").await;
    assert_first_refused_and_second_snapshotted_whole(&relay).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// A column added while the snapshot waits between chunks: the stream reads the `ALTER TABLE`
/// outside any window, so nothing discards the table's description. Every image placed after
/// the `ALTER TABLE` (the whole third chunk, rows 201..=300, at least) must hold the new column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_between_chunks_is_in_every_later_snapshot_image() {
    let mut relay = throttled_relay(&["t"]).following().await;
    wait_throttled_after_first_chunk(&relay, "t").await;
    run_sql(
        &relay,
        "ALTER TABLE app.t ADD COLUMN extra INT NOT NULL DEFAULT 7",
    )
    .await;
    wait_snapshot_idle(&relay.sdl, TIMEOUT).await;
    relay.wait_caught_up(TIMEOUT).await;

    let docs = all_documents(&relay.mongo).await;
    let images = snapshot_documents(&docs, "app", "t");
    assert_eq!(images.len(), 300, "every row of app.t snapshotted once");
    let mut stale = Vec::new();
    for d in images {
        let after = d.get_document("after").unwrap();
        let id = match after.get("id") {
            Some(Bson::Int32(i)) => i64::from(*i),
            Some(Bson::Int64(i)) => *i,
            other => panic!("id {other:?}"),
        };
        if id > 200 && after.get("extra").is_none() {
            stale.push(id);
        }
    }
    assert!(
        stale.is_empty(),
        "{} snapshot images placed after `ALTER TABLE app.t ADD COLUMN extra` lack the column \
         (rows {:?}..): the chunk query still uses the table's shape from before the DDL",
        stale.len(),
        stale.iter().min()
    );
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// A table dropped while its chunk query runs (here: waits for the metadata lock of a `LOCK
/// TABLES ... WRITE` whose session then drops the table): the query fails with "no such table"
/// (and the stream reads the `DROP TABLE` inside the chunk's window). sdl must refuse that
/// table loudly and go on, not stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_under_its_chunk_query_is_refused_and_the_relay_goes_on() {
    let mut relay = throttled_relay(&["first", "second"]).following().await;
    wait_throttled_after_first_chunk(&relay, "first").await;
    let mut locker = relay.conn().await;
    locker
        .query_drop("LOCK TABLES app.first WRITE")
        .await
        .unwrap();
    let url = relay.mariadb.root_url();
    crate::support::wait_until(
        "sdl's chunk query of app.first waiting for the table's metadata lock",
        TIMEOUT,
        || {
            let url = url.clone();
            async move {
                let mut conn = mysql_async::Conn::from_url(url.as_str()).await.ok()?;
                let waiting: Option<u64> = conn
                    .query_first(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                         WHERE STATE = 'Waiting for table metadata lock' \
                         AND INFO LIKE '%first%'",
                    )
                    .await
                    .ok()?;
                conn.disconnect().await.ok()?;
                (waiting == Some(1)).then_some(())
            }
        },
    )
    .await;
    locker.query_drop("DROP TABLE app.first").await.unwrap();
    locker.query_drop("UNLOCK TABLES").await.unwrap();
    locker.disconnect().await.unwrap();
    assert_first_refused_and_second_snapshotted_whole(&relay).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// Chunks of 200 rows in sink batches of 30 documents: each chunk is 7 WAL records, each saving
/// the plan after its own last row. Under updates, deletes and inserts, with a SIGKILL while the
/// snapshot runs, the table rebuilt from its documents (strictly, in WAL order, and snapshot
/// first) equals `SELECT *`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_split_over_sink_batches_survive_sigkill_under_writes() {
    const ROWS: i64 = 2000;
    let mut relay = snapshot_relay(&id_v_tables(&["t"], ROWS), &["t"], 200, 1000)
        .setting("sink", "batch_max_documents = 30")
        .following()
        .await;

    let keep_going = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let url = relay.mariadb.root_url();
        let keep_going = keep_going.clone();
        async move {
            let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
            let mut rng = Rng::new(16);
            let mut next_id = ROWS + 1;
            let mut writes = 0u64;
            while keep_going.load(Ordering::SeqCst) {
                let id = 1 + rng.below(ROWS as u64) as i64;
                let statement = match rng.below(4) {
                    0 => format!("DELETE FROM app.t WHERE id = {id}"),
                    1 => {
                        next_id += 1;
                        format!("INSERT INTO app.t VALUES ({next_id}, 0)")
                    }
                    _ => format!("UPDATE app.t SET v = v + 1 WHERE id = {id}"),
                };
                conn.query_drop(statement).await.unwrap();
                writes += 1;
                // Pacing of the workload, not a wait for a condition.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            conn.disconnect().await.unwrap();
            writes
        }
    });
    wait_snapshot_status(
        &relay.sdl,
        "the snapshot of app.t past 600 rows",
        TIMEOUT,
        |s| status_number(s, "rows_done") >= 600,
    )
    .await;
    relay.sdl.kill();
    relay.sdl.start();
    wait_snapshot_idle(&relay.sdl, TIMEOUT).await;
    keep_going.store(false, Ordering::SeqCst);
    let writes = writer.await.unwrap();
    wait_snapshot_done_and_forwarded(&relay, TIMEOUT).await;

    let docs = all_documents(&relay.mongo).await;
    assert_ids_unique(&docs);
    let mut conn = relay.conn().await;
    let source = select_keyed(&mut conn, "app.t", &["id"]).await;
    conn.disconnect().await.unwrap();
    assert_rebuilds_equal(&source, &docs, "app", "t", &["id"]);
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    eprintln!(
        "{} snapshot documents, {writes} writes, one SIGKILL",
        snapshot_documents(&docs, "app", "t").len()
    );
}

/// The key's order changed under the snapshot: `ALTER TABLE ... MODIFY k ... COLLATE
/// utf8mb4_bin` on a case-insensitive text key between two chunks (as a charset or collation
/// migration does). The rows read so far are every key up to `after` in the *old* order; keyset
/// paging past `after` in the *new* order must still visit every other row (or the table must be
/// refused, or read again), never skip rows silently.
async fn snapshot_across_a_key_collation_change(after_upper_case: bool) {
    // Keys alternate upper and lower case: case-insensitive order interleaves them, binary
    // order puts every upper-case key before every lower-case one.
    let keys: Vec<String> = (0..300)
        .map(|i| {
            let letter = char::from(b'a' + (i / 12) as u8);
            // Key 100 (the first chunk's last, `after`) in the case asked for.
            let letter = if (i % 2 == 1) == after_upper_case {
                letter.to_ascii_uppercase()
            } else {
                letter
            };
            format!("{letter}{i:03}")
        })
        .collect();
    let values: Vec<String> = keys.iter().map(|k| format!("('{k}', 1)")).collect();
    let statements = [
        "CREATE TABLE app.t (k VARCHAR(10) COLLATE utf8mb4_general_ci NOT NULL PRIMARY KEY, \
         v INT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            .to_string(),
        format!("INSERT INTO app.t VALUES {}", values.join(",")),
    ];
    let mut relay = snapshot_relay(&statements, &["t"], 100, 100)
        .following()
        .await;
    wait_throttled_after_first_chunk(&relay, "t").await;
    run_sql(
        &relay,
        "ALTER TABLE app.t MODIFY k VARCHAR(10) COLLATE utf8mb4_bin NOT NULL",
    )
    .await;
    // The snapshot ends (idle) or refuses the table; either way it is over.
    wait_with_sdl(&relay.sdl, "the snapshot over", TIMEOUT, || async {
        let snapshot = try_status(&relay.sdl)?["snapshot"].clone();
        (snapshot["state"] == "idle").then_some(())
    })
    .await;
    relay.wait_caught_up(TIMEOUT).await;
    let refused = try_status(&relay.sdl).unwrap()["snapshot"]["refused"].clone();
    let docs = all_documents(&relay.mongo).await;
    let snapshotted: std::collections::BTreeSet<String> = snapshot_documents(&docs, "app", "t")
        .iter()
        .map(|d| {
            d.get_document("after")
                .unwrap()
                .get_str("k")
                .unwrap()
                .to_string()
        })
        .collect();
    let missing: Vec<&String> = keys.iter().filter(|k| !snapshotted.contains(*k)).collect();
    let refused_t = refused
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["table"] == "app.t"));
    eprintln!(
        "{} of {} rows snapshotted; refused: {refused}",
        snapshotted.len(),
        keys.len()
    );
    assert!(
        missing.is_empty() || refused_t,
        "{} rows of app.t never snapshotted and the table not refused (refused: {refused}); \
         missing: {missing:?}",
        missing.len()
    );
    let written = relay.sdl.metric("sdl_snapshot_rows_total");
    assert!(
        refused_t || written == keys.len() as f64,
        "{written} snapshot rows written for the {} rows of app.t: rows read twice into MongoDB",
        keys.len()
    );
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// `after` is lower case: in binary order every upper-case key not read yet sorts before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_collation_changed_between_chunks_skips_no_row() {
    snapshot_across_a_key_collation_change(false).await;
}

/// `after` is upper case: in binary order every lower-case key already read sorts after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_collation_changed_between_chunks_reads_no_row_twice() {
    snapshot_across_a_key_collation_change(true).await;
}
