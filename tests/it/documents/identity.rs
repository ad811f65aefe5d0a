//! A change's identity includes its source (issue 12, items 1 and 7 on the sink side), against
//! real MariaDB and SecantusDB servers:
//! - two sources with the same GTIDs into one database lose nothing;
//! - a source whose history was reset under the same `source.name` is refused at start;
//! - a reused change `_id` with other content stops forwarding instead of counting as applied;
//! - a batch half-written by an sdl with the old `<gtid>:<ordinal>` ids is completed once;
//! - a batch too large for one MongoDB transaction is split and arrives once;
//! - a `mongodb+srv://` name that does not resolve is retried, a malformed URL is exit 2.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{change_documents, wait_until, MariaDb, Mongo, Sdl};
use mongodb::bson::{doc, Document};
use mysql_async::prelude::Queryable;

const TIMEOUT: Duration = Duration::from_secs(120);

async fn create_table(mariadb: &MariaDb) -> mysql_async::Conn {
    let mut conn = mariadb.root_conn().await;
    conn.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40))")
        .await
        .unwrap();
    conn
}

/// Waits until the offset document of `source` names `position`.
async fn wait_for_source_offset(mongo: &Mongo, source: &str, position: &str, sdl: &Sdl) {
    let offsets = mongo.db().await.collection::<Document>("binlog_offsets");
    wait_until(
        &format!(
            "offset of {source} at {position}; sdl logs:\n{}",
            sdl.logs()
        ),
        TIMEOUT,
        || {
            let offsets = offsets.clone();
            async move {
                let d = offsets.find_one(doc! { "_id": source }).await.ok()??;
                (d.get_str("gtid").ok()? == position).then_some(())
            }
        },
    )
    .await;
}

fn sdl_named(mariadb: &MariaDb, mongo: &Mongo, name: &str, sink: &[&str]) -> Sdl {
    let source_line = format!("name = \"{name}\"");
    let mut settings = vec![("source", source_line.as_str())];
    settings.extend(sink.iter().map(|l| ("sink", *l)));
    Sdl::with_settings(mariadb, mongo, "current", &settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_with_the_same_gtids_into_one_database_each_arrive_whole() {
    // Both servers have the stock gtid_domain_id=0 and server_id=1: their GTIDs are the same.
    let (east_db, west_db, mongo) =
        tokio::join!(MariaDb::start(), MariaDb::start(), Mongo::start());
    let mut east_conn = create_table(&east_db).await;
    let mut west_conn = create_table(&west_db).await;
    let mut east = sdl_named(&east_db, &mongo, "east", &[]);
    let mut west = sdl_named(&west_db, &mongo, "west", &[]);
    east.start();
    west.start();
    east.wait_following().await;
    west.wait_following().await;
    for i in 1..=2 {
        for (conn, name) in [(&mut east_conn, "east"), (&mut west_conn, "west")] {
            conn.query_drop(format!("INSERT INTO app.t VALUES ({i}, '{name}-{i}')"))
                .await
                .unwrap();
        }
    }
    let (east_pos, west_pos) = (
        east_db.gtid_binlog_pos().await,
        west_db.gtid_binlog_pos().await,
    );
    assert_eq!(east_pos, west_pos, "the test needs the same GTIDs on both");
    wait_for_source_offset(&mongo, "east", &east_pos, &east).await;
    wait_for_source_offset(&mongo, "west", &west_pos, &west).await;

    let docs = change_documents(&mongo).await;
    let mut arrived: BTreeMap<(String, i64), String> = BTreeMap::new();
    for d in docs.iter().filter(|d| d.get_str("op") == Ok("insert")) {
        let source = d.get_document("meta").unwrap().get_str("source").unwrap();
        let after = d.get_document("after").unwrap();
        assert_eq!(
            d.get_str("_id").unwrap(),
            format!(
                "{source}/{}:{}",
                d.get_document("meta").unwrap().get_str("gtid").unwrap(),
                d.get_document("meta").unwrap().get_i64("row").unwrap()
            )
        );
        let previous = arrived.insert(
            (source.to_string(), after.get_i64("id").unwrap()),
            after.get_str("v").unwrap().to_string(),
        );
        assert!(previous.is_none(), "a change arrived twice: {d}");
    }
    let expected: BTreeMap<(String, i64), String> = [
        (("east".to_string(), 1), "east-1".to_string()),
        (("east".to_string(), 2), "east-2".to_string()),
        (("west".to_string(), 1), "west-1".to_string()),
        (("west".to_string(), 2), "west-2".to_string()),
    ]
    .into();
    assert_eq!(arrived, expected, "every row of both sources, once");
    for sdl in [&mut east, &mut west] {
        assert!(sdl.is_running(), "sdl exited:\n{}", sdl.logs());
        assert!(!sdl.logs().contains("already applied"), "{}", sdl.logs());
        assert!(sdl.terminate(Duration::from_secs(30)).success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_reset_under_the_same_name_is_refused_at_start() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let (mut sdl, mut conn, relayed) = relay_three_rows_then_stop(&mariadb, &mongo).await;

    // The server's history starts again: its GTIDs go backwards.
    conn.query_drop("RESET MASTER").await.unwrap();
    conn.query_drop("INSERT INTO app.t VALUES (10, 'after reset')")
        .await
        .unwrap();
    let current = mariadb.gtid_binlog_pos().await;
    assert_eq!(current, "0-1-1");

    refused_with_the_wal_and_without(&mut sdl, ["the WAL", "MongoDB's offset"], |what| {
        vec![
            format!("{what} is at {relayed}"),
            format!("current position (`gtid_binlog_pos`) is {current}"),
            "RESET MASTER".into(),
        ]
    });
    nothing_of_the_new_history_arrived(&mongo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_source_whose_gtids_passed_the_relayed_ones_is_refused_at_start() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let (mut sdl, mut conn, relayed) = relay_three_rows_then_stop(&mariadb, &mongo).await;

    // A new history that has already gone further than the relayed one: its GTIDs alone look
    // like a continuation, and resuming after the relayed GTID would skip its first changes.
    conn.query_drop("RESET MASTER").await.unwrap();
    for i in 10..30 {
        conn.query_drop(format!("INSERT INTO app.t VALUES ({i}, 'after reset')"))
            .await
            .unwrap();
    }
    let relayed_seq: u64 = relayed.rsplit('-').next().unwrap().parse().unwrap();
    let current = mariadb.gtid_binlog_pos().await;
    let current_seq: u64 = current.rsplit('-').next().unwrap().parse().unwrap();
    assert!(current_seq > relayed_seq, "{current} vs {relayed}");

    refused_with_the_wal_and_without(&mut sdl, ["the WAL", "MongoDB"], |what| {
        vec![
            format!("{what} is at transaction {relayed} read at mariadb-bin.000001:"),
            format!("current position (`gtid_binlog_pos`) is {current}"),
        ]
    });
    nothing_of_the_new_history_arrived(&mongo).await;
}

/// sdl relays three rows (`'before'`) under source.name `default` and stops cleanly; returns it,
/// a root connection and the source position relayed.
async fn relay_three_rows_then_stop(
    mariadb: &MariaDb,
    mongo: &Mongo,
) -> (Sdl, mysql_async::Conn, String) {
    let (mut sdl, conn, relayed) = relay_three_rows_while_running(mariadb, mongo).await;
    assert!(sdl.terminate(Duration::from_secs(30)).success());
    (sdl, conn, relayed)
}

/// Starts `sdl` on its WAL, then on a new WAL (resuming from MongoDB's offset): each start exits
/// 4 with the refusal, naming what was relayed (`reference[0]`, then `reference[1]`), the
/// source's position and the fix; `needles(reference)` are the case's own words.
fn refused_with_the_wal_and_without(
    sdl: &mut Sdl,
    reference: [&str; 2],
    needles: impl Fn(&str) -> Vec<String>,
) {
    for (what, lose_wal) in [(reference[0], false), (reference[1], true)] {
        if lose_wal {
            // A new WAL directory resumes from MongoDB's offset: refused just the same.
            std::fs::remove_dir_all(sdl.wal_dir()).unwrap();
        }
        sdl.start();
        let status = sdl.wait_exit(TIMEOUT);
        let logs = sdl.logs();
        assert_eq!(status.code(), Some(4), "{logs}");
        let last = logs.lines().rev().take(5).collect::<Vec<_>>().join("\n");
        let common = [
            "does not contain what sdl already relayed under source.name `default`".to_string(),
            "new source.name".to_string(),
        ];
        for needle in common.iter().chain(needles(what).iter()) {
            assert!(
                last.contains(needle.as_str()),
                "`{needle}` missing from:\n{logs}"
            );
        }
    }
}

/// Nothing of the reset server's new history (`'after reset'` rows) was taken for the old one.
async fn nothing_of_the_new_history_arrived(mongo: &Mongo) {
    let docs = change_documents(mongo).await;
    assert!(
        docs.iter().all(|d| d
            .get_document("after")
            .map_or(true, |a| a.get_str("v") != Ok("after reset"))),
        "{docs:?}"
    );
}

async fn a_reused_change_id_stops_forwarding(transactions: &str) {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut conn = create_table(&mariadb).await;
    let mode = format!("transactions = \"{transactions}\"");
    let mut sdl = sdl_named(&mariadb, &mongo, "default", &[&mode]);
    sdl.start();
    sdl.wait_following().await;
    conn.query_drop("INSERT INTO app.t VALUES (1, 'one')")
        .await
        .unwrap();
    let before = mariadb.gtid_binlog_pos().await;
    wait_for_source_offset(&mongo, "default", &before, &sdl).await;

    // Another change already holds the id the next one will get (a reused GTID); planted under
    // the `<gtid>:<ordinal>` id an older sdl gave too, which it then took for "already applied".
    let seq: u64 = before.rsplit('-').next().unwrap().parse().unwrap();
    let next_gtid = format!("0-1-{}", seq + 1);
    let id = format!("default/{next_gtid}:0");
    let changes = mongo.db().await.collection::<Document>("row_changes");
    for planted in [id.clone(), format!("{next_gtid}:0")] {
        changes
            .insert_one(doc! {
                "_id": planted, "op": "insert",
                "meta": { "source": "default", "db": "app", "tbl": "t", "gtid": &next_gtid,
                          "row": 0_i64, "file": "mariadb-bin.000001", "pos": 4_i64 },
                "after": { "id": 99, "v": "another change" },
                "hash": "00000000000000000000000000000000",
            })
            .await
            .unwrap();
    }
    conn.query_drop("INSERT INTO app.t VALUES (2, 'two')")
        .await
        .unwrap();
    assert_eq!(mariadb.gtid_binlog_pos().await, next_gtid);

    let status = sdl.wait_exit(TIMEOUT);
    let logs = sdl.logs();
    assert_eq!(status.code(), Some(1), "{logs}");
    for needle in [
        format!("change {id} is already in MongoDB as a different change"),
        "hash 00000000000000000000000000000000".to_string(),
        format!("GTID {next_gtid}, ordinal 0, insert on app.t"),
        "source.name".to_string(),
    ] {
        assert!(logs.contains(&needle), "`{needle}` missing from:\n{logs}");
    }
    assert!(!logs.contains("already applied"), "{logs}");
    // The stored document is untouched, and the offset did not move over the change.
    let stored = changes
        .find_one(doc! { "_id": &id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.get_document("after").unwrap().get_str("v").unwrap(),
        "another change"
    );
    let offset = mongo
        .find_by_id("binlog_offsets", "default")
        .await
        .expect("the offset document");
    assert_eq!(offset.get_str("gtid").unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_change_id_with_other_content_stops_with_transactions() {
    a_reused_change_id_stops_forwarding("on").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_change_id_with_other_content_stops_without_transactions() {
    a_reused_change_id_stops_forwarding("off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_half_written_with_old_ids_is_completed_without_duplicates() {
    use sdl::event::SourceTransaction;
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut sdl = super::batch_staged_by_a_run_that_died(&mariadb, &mongo).await;

    // Make it what an sdl with `<gtid>:<ordinal>` ids leaves: a staging entry without `id_form`, and part of the
    // batch inserted with `<gtid>:<ordinal>` ids.
    let db = mongo.db().await;
    let staging = db.collection::<Document>("row_changes_staging");
    let entry = staging
        .find_one(doc! { "status": "pending" })
        .await
        .unwrap()
        .expect("a pending staging entry");
    staging
        .update_one(
            doc! { "_id": entry.get_str("_id").unwrap() },
            doc! { "$unset": { "id_form": "" } },
        )
        .await
        .unwrap();
    let (first, last) = (
        entry.get_i64("first_seq").unwrap(),
        entry.get_i64("last_seq").unwrap(),
    );
    let legacy: Vec<Document> = {
        let wal: sdl_wal::Wal<SourceTransaction> = sdl_wal::Wal::open(sdl.wal_dir()).unwrap();
        let records = wal.read_from(first as u64, 100, usize::MAX).unwrap();
        records
            .iter()
            .filter(|s| s.seq <= last as u64)
            .flat_map(|s| sdl::sink::document::transaction_documents("default", &s.record))
            .map(|mut d| {
                d.remove("hash");
                let meta = d.get_document_mut("meta").unwrap();
                meta.remove("source");
                let id = format!(
                    "{}:{}",
                    meta.get_str("gtid").unwrap(),
                    meta.get_i64("row").unwrap()
                );
                d.insert("_id", id);
                d
            })
            .collect()
    };
    assert_eq!(legacy.len(), 4);
    let changes = db.collection::<Document>("row_changes");
    changes.insert_many(&legacy[..2]).await.unwrap();

    sdl.start();
    let position = mariadb.gtid_binlog_pos().await;
    wait_for_source_offset(&mongo, "default", &position, &sdl).await;
    let docs = change_documents(&mongo).await;
    let mut per_change: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for d in &docs {
        let meta = d.get_document("meta").unwrap();
        *per_change
            .entry((
                meta.get_str("gtid").unwrap().to_string(),
                meta.get_i64("row").unwrap(),
            ))
            .or_default() += 1;
    }
    assert_eq!(per_change.len(), 4, "{docs:?}");
    assert!(
        per_change.values().all(|&n| n == 1),
        "a change twice: {per_change:?}"
    );
    assert!(
        docs.iter()
            .all(|d| d.get_str("_id").unwrap().starts_with("default/")),
        "{docs:?}"
    );
    assert!(
        sdl.logs().contains("removed the old-id copies"),
        "{}",
        sdl.logs()
    );
    assert!(sdl.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_large_for_one_transaction_is_split_and_arrives_once() {
    // SecantusDB refuses a transaction whose writes exceed a share of its cache
    // (TransactionTooLargeForCache, 313): with 64 MB of cache, about 5 MB.
    let (mariadb, mut mongo) = tokio::join!(
        MariaDb::start(),
        Mongo::start_with(&["--cache-size", "64M"])
    );
    if mongo.is_external() {
        eprintln!("skipped: needs a SecantusDB started with a small cache");
        return;
    }
    let mut conn = mariadb.root_conn().await;
    conn.query_drop("CREATE TABLE app.big (id INT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    let mut sdl = Sdl::new_with(
        &mariadb,
        &mongo,
        "current",
        "batch_max_bytes = 16777216\nretry_max_delay = \"1s\"\nconnect_timeout = \"1s\"",
    );
    sdl.start();
    sdl.wait_following().await;
    assert!(sdl.terminate(Duration::from_secs(30)).success());
    // 32 transactions of 256 KB, read into the WAL while MongoDB is away, then forwarded in
    // batches of up to sink.batch_max_bytes (16 MiB); then one 7 MB transaction (one WAL record:
    // the ingester splits only transactions over half of sink.batch_max_bytes).
    mongo.kill();
    for i in 0..32 {
        conn.query_drop(format!(
            "INSERT INTO app.big VALUES ({i}, REPEAT('x', 262144))"
        ))
        .await
        .unwrap();
    }
    conn.query_drop(
        "INSERT INTO app.big SELECT 1000 + seq, REPEAT('y', 262144) FROM app.seq_1_to_28",
    )
    .await
    .unwrap();
    let position = mariadb.gtid_binlog_pos().await;
    sdl.start();
    wait_until("sdl following again", TIMEOUT, || async {
        (sdl.logs().matches("following the binlog").count() >= 2).then_some(())
    })
    .await;
    sdl.wait_wal_holds(&position, TIMEOUT).await;
    mongo.restart().await;
    wait_for_source_offset(&mongo, "default", &position, &sdl).await;
    let logs = sdl.logs();
    assert!(sdl.is_running(), "sdl exited:\n{logs}");
    assert!(
        logs.contains("cannot commit this batch in one transaction: committing it in two halves"),
        "{logs}"
    );
    assert!(
        logs.contains("cannot commit this one WAL record in one transaction"),
        "{logs}"
    );
    let docs = change_documents(&mongo).await;
    let mut ids: Vec<i64> = docs
        .iter()
        .filter(|d| d.get_document("meta").unwrap().get_str("tbl") == Ok("big"))
        .map(|d| d.get_document("after").unwrap().get_i64("id").unwrap())
        .collect();
    ids.sort_unstable();
    let expected: Vec<i64> = (0..32).chain(1001..=1028).collect();
    assert_eq!(ids, expected, "every row once");
    for line in logs.lines().filter(|l| l.contains("in one transaction")) {
        eprintln!("{}", &line[..line.len().min(400)]);
    }
    assert!(sdl.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_srv_name_that_does_not_resolve_is_retried_not_a_bad_url() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut sdl = Sdl::new(&mariadb, &mongo, "current");
    sdl.start();
    sdl.wait_following().await;
    assert!(sdl.terminate(Duration::from_secs(30)).success());

    // The WAL has a position: sdl follows the binlog and keeps trying MongoDB, saying why.
    let config = std::fs::read_to_string(&sdl.config_path).unwrap();
    let srv = config.replace(
        mongo.uri(),
        "mongodb+srv://sdl-test-cluster.invalid/?retryWrites=true",
    );
    assert_ne!(srv, config);
    std::fs::write(&sdl.config_path, &srv).unwrap();
    sdl.start();
    let deadline = Instant::now() + TIMEOUT;
    while sdl.logs().matches("DNS lookup failed").count() < 2 {
        assert!(sdl.is_running(), "sdl exited:\n{}", sdl.logs());
        assert!(Instant::now() < deadline, "no retries:\n{}", sdl.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = sdl.logs();
    assert!(sdl.is_running(), "sdl exited:\n{logs}");
    assert!(
        !logs.contains("not a usable MongoDB connection string"),
        "{logs}"
    );
    assert!(logs.contains("sdl-test-cluster.invalid"), "{logs}");
    assert!(sdl.terminate(Duration::from_secs(30)).success());

    // A connection string that is wrong whatever DNS says is a configuration error.
    let bad = config.replace(mongo.uri(), "mongodb://127.0.0.1:notaport/");
    std::fs::write(&sdl.config_path, &bad).unwrap();
    let (code, stderr) =
        support::run_sdl(&["run", "--config", &sdl.config_path.display().to_string()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("sink.url"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_reset_while_sdl_is_connected_stops_it_with_exit_4() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let (mut sdl, mut conn, relayed) = relay_three_rows_while_running(&mariadb, &mongo).await;

    // The history starts again under the running sdl. Before, the stream went on receiving
    // heartbeats and nothing else, and sdl waited silently for good.
    conn.query_drop("RESET MASTER").await.unwrap();
    conn.query_drop("INSERT INTO app.t VALUES (10, 'after reset')")
        .await
        .unwrap();
    let status = sdl.wait_exit(TIMEOUT);
    let logs = sdl.logs();
    assert_eq!(status.code(), Some(4), "{logs}");
    let last = logs.lines().rev().take(5).collect::<Vec<_>>().join("\n");
    for needle in [
        "the source's GTID history no longer contains what sdl has read".to_string(),
        format!("sdl is at {relayed}"),
        "(`gtid_binlog_pos`) is now 0-1-1".to_string(),
        "RESET MASTER".to_string(),
        "new source.name".to_string(),
    ] {
        assert!(last.contains(&needle), "`{needle}` missing from:\n{logs}");
    }
    nothing_of_the_new_history_arrived(&mongo).await;

    // Started again, the start-up check refuses the same server the same way.
    refused_with_the_wal_and_without(&mut sdl, ["the WAL", "MongoDB's offset"], |what| {
        vec![format!("{what} is at {relayed}")]
    });
    nothing_of_the_new_history_arrived(&mongo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_reset_past_the_relayed_gtids_while_sdl_is_connected_is_never_waited_on() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let (mut sdl, mut conn, relayed) = relay_three_rows_while_running(&mariadb, &mongo).await;

    // A new history whose GTIDs are already past the relayed ones, in one round trip: by GTIDs
    // alone it looks like a continuation that the stream has not delivered yet.
    conn.query_drop(
        "RESET MASTER; SET GLOBAL gtid_binlog_state = '0-1-100'; \
         INSERT INTO app.t VALUES (10, 'after reset')",
    )
    .await
    .unwrap();
    assert_eq!(mariadb.gtid_binlog_pos().await, "0-1-101");
    let status = sdl.wait_exit(TIMEOUT);
    let logs = sdl.logs();
    eprintln!("sdl stopped with {:?}", status.code());
    // sdl stops, loudly: exit 1 naming both positions (the stream sends only heartbeats while
    // the server is past it), or exit 4 if a check fell between the reset and the new GTIDs.
    match status.code() {
        Some(1) => {
            for needle in [
                format!("has sent nothing past {relayed}"),
                "moved on to 0-1-101 (`gtid_binlog_pos`)".to_string(),
                "RESET MASTER".to_string(),
            ] {
                assert!(logs.contains(&needle), "`{needle}` missing from:\n{logs}");
            }
            // Started again (as systemd does after exit 1), the start-up check looks the last
            // relayed transaction up where it was read and refuses the new history.
            refused_with_the_wal_and_without(&mut sdl, ["the WAL", "MongoDB"], |what| {
                vec![format!(
                    "{what} is at transaction {relayed} read at mariadb-bin.000001:"
                )]
            });
        }
        Some(4) => assert!(
            logs.contains("no longer contains what sdl has read"),
            "{logs}"
        ),
        other => panic!("sdl ended with {other:?}:\n{logs}"),
    }
    nothing_of_the_new_history_arrived(&mongo).await;
}

/// sdl relays three rows (`'before'`) under source.name `default` and keeps running; returns it,
/// a root connection and the source position relayed.
async fn relay_three_rows_while_running(
    mariadb: &MariaDb,
    mongo: &Mongo,
) -> (Sdl, mysql_async::Conn, String) {
    let mut conn = create_table(mariadb).await;
    let mut sdl = Sdl::new(mariadb, mongo, "current");
    sdl.start();
    sdl.wait_following().await;
    for i in 1..=3 {
        conn.query_drop(format!("INSERT INTO app.t VALUES ({i}, 'before')"))
            .await
            .unwrap();
    }
    let relayed = mariadb.gtid_binlog_pos().await;
    wait_for_source_offset(mongo, "default", &relayed, &sdl).await;
    (sdl, conn, relayed)
}
