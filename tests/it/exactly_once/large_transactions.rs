//! Transactions larger than one sink batch: the ingester splits them into bounded WAL records
//! (fragments), the forwarder commits them in several batches, and a restart inside one (from the
//! WAL, or from MongoDB's offset with a new WAL) reads it again and drops what is already saved.
//! Every check is document by document against the source.

use std::process::Command;
use std::time::Duration;

use crate::support::{wait_until, Relay, RelayBuilder, Sdl};
use bson::{doc, Document};
use mysql_async::prelude::Queryable;
use serde_json::Value as Json;

const TIMEOUT: Duration = Duration::from_secs(240);
const BATCH_DOCUMENTS: usize = 500;

/// A relay into `app.big` with sink batches of [`BATCH_DOCUMENTS`]; exactly once is checked
/// document by document on `app.big`.
fn big_table_relay() -> RelayBuilder {
    Relay::builder()
        .sql(&["CREATE TABLE app.big (id INT PRIMARY KEY, v VARCHAR(200), n BIGINT)"])
        .compare("big", "id")
        .setting("sink", "batch_max_documents = 500")
}

/// One transaction of `rows` inserts, then updates of every fifth row, an update of one row's
/// primary key, and deletes of every seventh row. Returns its GTID.
async fn large_transaction(conn: &mut mysql_async::Conn, first_id: u64, rows: u64) -> String {
    let last_id = first_id + rows - 1;
    conn.query_drop(format!(
        "BEGIN;
         INSERT INTO app.big SELECT seq, CONCAT('row-', seq, '-', REPEAT('x', 100)), seq * 7
           FROM app.seq_{first_id}_to_{last_id};
         UPDATE app.big SET n = -n WHERE id BETWEEN {first_id} AND {last_id} AND id % 5 = 0;
         UPDATE app.big SET id = id + 100000000 WHERE id = {first_id} + 1;
         DELETE FROM app.big WHERE id BETWEEN {first_id} AND {last_id} AND id % 7 = 0;
         COMMIT;"
    ))
    .await
    .unwrap();
    let gtid: String = conn
        .query_first("SELECT @@last_gtid")
        .await
        .unwrap()
        .unwrap();
    gtid
}

/// The changes [`large_transaction`] makes, for `rows` starting at id 1.
fn changes_of_large_transaction(rows: u64) -> u64 {
    rows + rows / 5 + 1 + rows / 7
}

/// Runs `sdl wal <args>` and returns its standard output (it must succeed).
fn sdl_wal(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sdl"))
        .arg("wal")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdl wal {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every WAL record of a stopped sdl, decoded (`sdl wal show --json`): gtid, position_after,
/// first_change, ends_transaction and the record's change documents.
fn wal_records(sdl: &Sdl) -> Vec<Json> {
    let dir = sdl.wal_dir().display().to_string();
    let stats: Json = serde_json::from_str(&sdl_wal(&["stats", "--json", "--dir", &dir])).unwrap();
    let (first, last) = (
        stats["first_seq"].as_u64().unwrap(),
        stats["last_seq"].as_u64().unwrap(),
    );
    (first..=last)
        .map(|seq| {
            let mut record: Json = serde_json::from_str(&sdl_wal(&[
                "show",
                &seq.to_string(),
                "--json",
                "--dir",
                &dir,
            ]))
            .unwrap();
            record["transaction"].take()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_travels_in_bounded_records_and_resumes_from_a_partial_offset() {
    let mut relay = big_table_relay().following().await;
    let mut conn = relay.conn().await;

    conn.query_drop("INSERT INTO app.big VALUES (-1, 'before', 1)")
        .await
        .unwrap();
    let position_before = relay.mariadb.gtid_binlog_pos().await;
    let rows = 20_000;
    let gtid = large_transaction(&mut conn, 1, rows).await;
    let expected = 1 + changes_of_large_transaction(rows);
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    relay.assert_exactly_once(expected).await;

    // In the WAL the transaction is a run of bounded records, ordinals continuing from one to
    // the next, only the last one ending it.
    let fragments: Vec<Json> = wal_records(&relay.sdl)
        .into_iter()
        .filter(|r| r["gtid"] == gtid.as_str())
        .collect();
    let changes = changes_of_large_transaction(rows);
    assert!(fragments.len() > 1, "the transaction was not split");
    let mut next_ordinal = 0;
    for (i, fragment) in fragments.iter().enumerate() {
        let count = fragment["documents"].as_array().unwrap().len() as u64;
        // A fragment is cut once it reaches the limit; one rows event (a few hundred rows at most
        // here) may take it past.
        let last = i + 1 == fragments.len();
        let limit = BATCH_DOCUMENTS as u64;
        assert!(count <= 2 * limit, "fragment {i} holds {count} changes");
        assert!(last || count >= limit, "fragment {i} holds {count} changes");
        assert_eq!(fragment["first_change"], next_ordinal, "fragment {i}");
        next_ordinal += count;
        assert_eq!(fragment["ends_transaction"], last, "fragment {i}");
        let position = fragment["position_after"].as_str().unwrap();
        if !last {
            assert_eq!(
                position,
                format!("{position_before}; partial {gtid}:{next_ordinal}")
            );
        }
    }
    assert_eq!(next_ordinal, changes);

    // The WAL is lost after MongoDB received only part of the transaction: MongoDB's offset says
    // where inside it to resume, and a new WAL starts there.
    let db = relay.mongo.db().await;
    let saved = 7_777;
    let partial = format!("{position_before}; partial {gtid}:{saved}");
    db.collection::<Document>("binlog_offsets")
        .update_one(
            doc! { "_id": "default" },
            doc! { "$set": { "gtid": &partial, "wal_id": "a-lost-wal", "wal_seq": 1_i64 } },
        )
        .await
        .unwrap();
    let removed = db
        .collection::<Document>("row_changes")
        .delete_many(doc! { "meta.gtid": &gtid, "meta.row": { "$gte": saved as i64 } })
        .await
        .unwrap()
        .deleted_count;
    assert_eq!(removed, changes - saved);
    std::fs::remove_dir_all(relay.sdl.wal_dir()).unwrap();
    relay.sdl.start();
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    let logs = relay.sdl.logs();
    assert!(
        logs.contains("continuing from MongoDB's position"),
        "{logs}"
    );
    assert!(
        logs.contains("resuming inside a large transaction"),
        "{logs}"
    );
    relay.assert_exactly_once(expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_inside_a_large_transaction_neither_loses_nor_repeats_a_change() {
    // With MongoDB down, the WAL fills to wal.max_bytes partway through the transaction and the
    // ingester pauses there: the WAL then ends inside it.
    let mut relay = big_table_relay()
        .settings(&[
            ("wal", "max_bytes = 1048576"),
            ("sink", "connect_timeout = \"1s\""),
        ])
        .following()
        .await;
    if !relay.can_kill_mongo() {
        return;
    }
    let mut conn = relay.conn().await;
    relay.mongo.kill();
    let rows = 30_000;
    let gtid = large_transaction(&mut conn, 1, rows).await;
    wait_until(
        "the ingester to pause inside the transaction",
        TIMEOUT,
        || async {
            relay
                .sdl
                .logs()
                .contains("WAL full (wal.max_bytes): pausing")
                .then_some(())
        },
    )
    .await;
    relay.sdl.kill();
    let records = wal_records(&relay.sdl);
    let last = records.last().unwrap();
    assert_eq!(last["gtid"], gtid.as_str());
    assert_eq!(
        last["ends_transaction"], false,
        "the WAL should end inside the transaction"
    );

    relay.mongo.restart().await;
    relay.sdl.start();
    relay.wait_caught_up(TIMEOUT).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    assert!(relay
        .sdl
        .logs()
        .contains("resuming inside a large transaction"));
    relay
        .assert_exactly_once(changes_of_large_transaction(rows))
        .await;
}
