//! The binlog stream's hard cases (issue 12): events larger than the source's
//! `max_allowed_packet` and than one 16 MiB protocol packet, an event arriving slowly over a
//! throttled link, the kinds of error 1236 (another replica with sdl's server id, a source whose
//! history lacks sdl's position), row changes logged as statements, and a statement timeout on
//! the information_schema connection. Each against real servers.

use std::time::Duration;

use crate::support;
use crate::support::proxy::Proxy;
use crate::support::{change_documents, wait_for_offset, wait_until, MariaDb, Mongo, Rng, Sdl};
use bson::{doc, Bson, Document};
use mysql_async::prelude::Queryable;

const TIMEOUT: Duration = Duration::from_secs(120);

/// `id, a, b, c` of `app.blobs`.
type BlobRow = (i32, Vec<u8>, Vec<u8>, Vec<u8>);

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&rng.next().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// The binary value of column `column` in a change document's `image` (`before`/`after`).
fn binary<'a>(document: &'a Document, image: &str, column: &str) -> &'a [u8] {
    match document.get_document(image).unwrap().get(column) {
        Some(Bson::Binary(b)) => &b.bytes,
        other => panic!("{image}.{column} is not binary: {other:?}"),
    }
}

/// The size of the binlog event at `file:pos`.
async fn event_size(conn: &mut mysql_async::Conn, file: &str, pos: i64) -> i64 {
    let rows: Vec<mysql_async::Row> = conn
        .query(format!("SHOW BINLOG EVENTS IN '{file}' FROM {pos} LIMIT 1"))
        .await
        .unwrap();
    let end: i64 = rows[0].get("End_log_pos").unwrap();
    end - pos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_events_larger_than_max_allowed_packet_and_16_mib_arrive_byte_for_byte() {
    // A 4 MiB max_allowed_packet (which the client used to adopt as its own limit), and rows
    // events of up to 64 MiB, so that one UPDATE of three rows is one event of 18 MiB: more than
    // one 16 MiB packet of the protocol, while each change document stays under MongoDB's 16 MiB.
    let (mariadb, mongo) = tokio::join!(
        MariaDb::start_with(&[
            "--max-allowed-packet=4194304",
            "--binlog-row-event-max-size=67108864"
        ]),
        Mongo::start()
    );
    let mut conn = mariadb.root_conn().await;
    conn.query_drop(
        "CREATE TABLE app.blobs (id INT PRIMARY KEY, a LONGBLOB, b LONGBLOB, c LONGBLOB)",
    )
    .await
    .unwrap();
    let mut sdl = Sdl::new_with(&mariadb, &mongo, "current", "transactions = \"off\"");
    sdl.start();
    sdl.wait_following().await;

    // Three rows of 3 MiB (each INSERT a 3 MiB packet, under the 4 MiB limit).
    let mut rng = Rng::new(12);
    for id in 1..=3 {
        conn.exec_drop(
            "INSERT INTO app.blobs VALUES (?, ?, ?, ?)",
            (
                id,
                random_bytes(&mut rng, 1 << 20),
                random_bytes(&mut rng, 1 << 20),
                random_bytes(&mut rng, 1 << 20),
            ),
        )
        .await
        .unwrap();
    }
    // The issue's case: one 3 MiB row updated, a 6 MiB event.
    conn.query_drop("UPDATE app.blobs SET a = REVERSE(a) WHERE id = 1")
        .await
        .unwrap();
    // One event holding three rows' before and after images: 18 MiB.
    conn.query_drop("UPDATE app.blobs SET a = REVERSE(a), b = REVERSE(b), c = REVERSE(c)")
        .await
        .unwrap();
    wait_for_offset(&mongo, &mariadb.gtid_binlog_pos().await, TIMEOUT, &sdl).await;

    let docs: Vec<Document> = change_documents(&mongo)
        .await
        .into_iter()
        .filter(|d| d.get_document("meta").unwrap().get_str("tbl") == Ok("blobs"))
        .collect();
    assert_eq!(docs.len(), 3 + 1 + 3, "one document per row change");
    let single = docs[3].get_document("meta").unwrap();
    let size = event_size(
        &mut conn,
        single.get_str("file").unwrap(),
        single.get_i64("pos").unwrap(),
    )
    .await;
    assert!(
        size > 4 << 20,
        "the event is {size} bytes, meant to exceed max_allowed_packet"
    );
    let last = &docs[docs.len() - 3..];
    let meta = last[0].get_document("meta").unwrap();
    let (file, pos) = (meta.get_str("file").unwrap(), meta.get_i64("pos").unwrap());
    assert!(
        last.iter()
            .all(|d| d.get_document("meta").unwrap().get_i64("pos") == Ok(pos)),
        "the three rows of the last UPDATE come from one event"
    );
    let size = event_size(&mut conn, file, pos).await;
    assert!(
        size > 16 << 20,
        "the event is {size} bytes, meant to exceed 16 MiB"
    );
    // Byte for byte against the source, before and after images alike.
    let rows: Vec<BlobRow> = conn
        .query("SELECT id, a, b, c FROM app.blobs ORDER BY id")
        .await
        .unwrap();
    for (doc, (id, a, b, c)) in last.iter().zip(&rows) {
        assert_eq!(
            doc.get_document("after").unwrap().get_i64("id"),
            Ok(i64::from(*id))
        );
        for (column, value) in [("a", a), ("b", b), ("c", c)] {
            assert_eq!(
                binary(doc, "after", column),
                &value[..],
                "row {id} {column}"
            );
            let mut reversed = value.clone();
            reversed.reverse();
            assert_eq!(
                binary(doc, "before", column),
                &reversed[..],
                "row {id} {column}"
            );
        }
    }
    let logs = sdl.logs();
    assert!(!logs.contains("max_allowed_packet"), "{logs}");
    assert!(!logs.contains("binlog stream lost"), "{logs}");
    assert!(sdl.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_arriving_slowly_is_not_cut_by_the_liveness_timeout() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let proxy = Proxy::start(mariadb.port).await;
    let mut conn = mariadb.root_conn().await;
    conn.query_drop("CREATE TABLE app.slow (id INT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    let url = format!("url = \"{}\"", mariadb.sdl_url_via(proxy.port));
    // Presumed dead after 3 x 300 ms of silence; the event below takes about 3 s to arrive.
    let mut sdl = Sdl::with_settings(
        &mariadb,
        &mongo,
        "current",
        &[
            ("source", &url),
            ("source", "heartbeat_interval = \"300ms\""),
        ],
    );
    sdl.start();
    sdl.wait_following().await;

    proxy.throttle(1_000_000);
    let value = random_bytes(&mut Rng::new(5), 3 << 20);
    conn.exec_drop("INSERT INTO app.slow VALUES (1, ?)", (value.clone(),))
        .await
        .unwrap();
    wait_for_offset(
        &mongo,
        &mariadb.gtid_binlog_pos().await,
        Duration::from_secs(45),
        &sdl,
    )
    .await;
    proxy.throttle(0);

    let docs = change_documents(&mongo).await;
    let insert = docs
        .iter()
        .find(|d| d.get_document("meta").unwrap().get_str("tbl") == Ok("slow"))
        .expect("the insert arrived");
    assert_eq!(binary(insert, "after", "b"), &value[..]);
    let logs = sdl.logs();
    assert!(!logs.contains("presumed dead"), "{logs}");
    assert!(sdl.is_running(), "{logs}");

    // A silent connection is still found dead: the liveness timeout measures silence.
    proxy.set(support::proxy::Mode::Blackhole);
    wait_until("the silent connection to be noticed", TIMEOUT, || async {
        sdl.logs().contains("presumed dead").then_some(())
    })
    .await;
    proxy.set(support::proxy::Mode::Pass);
    assert!(sdl.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_with_the_same_server_id_stops_sdl_with_its_own_error() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut sdl = Sdl::new(&mariadb, &mongo, "current");
    sdl.start();
    sdl.wait_following().await;

    // A replica registering with sdl's server_id (4242): the source drops the older stream.
    let mut replica = mariadb.root_conn().await;
    replica
        .query_drop("SET @mariadb_slave_capability=4")
        .await
        .unwrap();
    let _stream = replica
        .get_binlog_stream(mysql_async::BinlogStreamRequest::new(4242))
        .await
        .unwrap();

    let status = sdl.wait_exit(TIMEOUT);
    let logs = sdl.logs();
    assert_eq!(status.code(), Some(5), "{logs}");
    assert!(
        logs.contains("another replica connected with the same server id (4242)"),
        "{logs}"
    );
    assert!(logs.contains("Set source.server_id"), "{logs}");
    assert!(!logs.contains("purged"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_whose_binlog_lacks_sdls_position_is_a_divergence_not_a_purge() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut conn = mariadb.root_conn().await;
    conn.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO app.t VALUES (1), (2)")
        .await
        .unwrap();
    // sdl believes it has relayed 1,000 transactions more than this server has in domain 0: as
    // after a failover to a replica that had not received them.
    let current = mariadb.gtid_binlog_pos().await;
    let seq: u64 = current.rsplit('-').next().unwrap().parse().unwrap();
    let ahead = format!("0-1-{}", seq + 1000);
    let mut sdl = Sdl::new(&mariadb, &mongo, &ahead);
    sdl.start();
    let status = sdl.wait_exit(TIMEOUT);
    let logs = sdl.logs();
    assert_eq!(status.code(), Some(4), "{logs}");
    assert!(
        logs.contains(&format!(
            "the source's binlog does not contain sdl's position (resuming after {ahead})"
        )),
        "{logs}"
    );
    assert!(logs.contains("failover"), "{logs}");
    assert!(!logs.contains("purged"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_change_logged_as_a_statement_stops_sdl_naming_its_gtid() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut conn = mariadb.root_conn().await;
    conn.query_drop("CREATE TABLE app.s (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    let mut sdl = Sdl::new(&mariadb, &mongo, "current");
    sdl.start();
    sdl.wait_following().await;

    // DDL from a STATEMENT-format session is still a `ddl` document.
    conn.query_drop("SET SESSION binlog_format = 'STATEMENT'")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE app.s2 (id INT PRIMARY KEY)")
        .await
        .unwrap();
    wait_for_offset(&mongo, &mariadb.gtid_binlog_pos().await, TIMEOUT, &sdl).await;
    let docs = change_documents(&mongo).await;
    assert!(
        docs.iter().any(|d| d.get_str("op") == Ok("ddl")
            && d.get_str("statement")
                .is_ok_and(|s| s.contains("CREATE TABLE app.s2"))),
        "{docs:?}"
    );

    // A row change the session logs as a statement (MIXED logs a deterministic INSERT so).
    conn.query_drop("SET SESSION binlog_format = 'MIXED'")
        .await
        .unwrap();
    conn.query_drop("/* from the app */ INSERT INTO app.s VALUES (1, 10)")
        .await
        .unwrap();
    let gtid: String = conn
        .query_first("SELECT @@last_gtid")
        .await
        .unwrap()
        .unwrap();
    let status = sdl.wait_exit(TIMEOUT);
    let logs = sdl.logs();
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(
        logs.contains(&format!(
            "transaction {gtid} holds a row change logged as a statement"
        )),
        "{logs}"
    );
    assert!(logs.contains("set binlog_format=ROW"), "{logs}");
    // Never a `ddl` document for it.
    let db = mongo.db().await;
    let inserts_as_ddl = db
        .collection::<Document>("row_changes")
        .count_documents(doc! { "op": "ddl", "statement": { "$regex": "INSERT" } })
        .await
        .unwrap();
    assert_eq!(inserts_as_ddl, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_on_the_information_schema_connection_is_retried() {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut conn = mariadb.root_conn().await;
    // New sessions (sdl's information_schema connection, opened on demand) wait 1 s for a lock.
    conn.query_drop("SET GLOBAL lock_wait_timeout = 1")
        .await
        .unwrap();
    let mut sdl = Sdl::new(&mariadb, &mongo, "current");
    sdl.start();
    sdl.wait_following().await;

    // While sdl is paused: a row in a table with a JSON column, then the table is replaced by a
    // CREATE TABLE ... SELECT that holds its metadata lock exclusively for a while. When sdl
    // reads the row, the lookup of the table's JSON columns waits for that lock and times out:
    // MariaDB reports it as a warning and an empty result.
    sdl.send_signal("STOP");
    conn.query_drop("CREATE TABLE app.k (id INT PRIMARY KEY, doc JSON)")
        .await
        .unwrap();
    conn.query_drop(r#"INSERT INTO app.k VALUES (1, '{"a": [1, 2]}')"#)
        .await
        .unwrap();
    conn.query_drop("DROP TABLE app.k").await.unwrap();
    let mut locker = mariadb.root_conn().await;
    let ctas = tokio::spawn(async move {
        locker
            .query_drop(
                r#"CREATE TABLE app.k (id INT PRIMARY KEY, doc JSON)
                   SELECT 2 AS id, '{"b": 1}' AS doc FROM DUAL WHERE SLEEP(6) = 0"#,
            )
            .await
            .unwrap();
    });
    wait_until(
        "the CREATE ... SELECT to hold its lock",
        TIMEOUT,
        || async {
            let mut c = mariadb.root_conn().await;
            let sleeping: Option<u64> = c
                .query_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE 'CREATE TABLE app.k%' AND STATE = 'User sleep'",
                )
                .await
                .unwrap();
            (sleeping == Some(1)).then_some(())
        },
    )
    .await;
    sdl.send_signal("CONT");
    ctas.await.unwrap();
    wait_for_offset(&mongo, &mariadb.gtid_binlog_pos().await, TIMEOUT, &sdl).await;

    let logs = sdl.logs();
    assert!(sdl.is_running(), "{logs}");
    assert!(logs.contains("Lock wait timeout exceeded"), "{logs}");
    let docs = change_documents(&mongo).await;
    let row = docs
        .iter()
        .find(|d| d.get_str("op") == Ok("insert"))
        .expect("the insert arrived");
    // The lookup was retried until the lock was gone: the JSON column was recognised, its value
    // is a document, not the text an empty lookup result would have left.
    assert_eq!(
        row.get_document("after").unwrap().get_document("doc"),
        Ok(&doc! { "a": [1_i64, 2_i64] }),
        "{row}"
    );
    assert!(sdl.terminate(Duration::from_secs(30)).success());
}
