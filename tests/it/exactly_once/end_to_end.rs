//! End-to-end: row changes travel MariaDB → sdl (WAL) → MongoDB exactly once, also across
//! SIGTERM and SIGKILL restarts of sdl in the middle of the workload.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::workload::Workload;
use crate::support::{wait_until, Relay};
use mongodb::bson::{doc, Document};

const ROW_CHANGES: u64 = 10_000;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_arrives_exactly_once() {
    // With start = "current", changes count once sdl has resolved and saved its position.
    let mut relay = Relay::builder().workload_tables().following().await;
    let mut conn = relay.conn().await;

    let mut workload = Workload::new(42);
    workload.run(&mut conn, ROW_CHANGES).await;
    relay.wait_caught_up(DRAIN_TIMEOUT).await;

    relay.assert_exactly_once(workload.row_changes).await;
    let sdl = &mut relay.sdl;
    assert!(sdl.is_running(), "sdl exited:\n{}", sdl.logs());
    assert!(sdl.terminate(Duration::from_secs(30)).success());
    eprintln!(
        "{} row changes in {} transactions arrived exactly once",
        workload.row_changes, workload.transactions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_during_the_workload_lose_and_duplicate_nothing() {
    // Start from the beginning of the binlog: the tables' DDL is relayed too.
    let mut relay = Relay::builder()
        .workload_tables()
        .start_from("earliest")
        .stopped()
        .await;
    relay.sdl.start();

    // The workload keeps writing until both restarts are done, so they happen mid-stream.
    let keep_going = Arc::new(AtomicBool::new(true));
    let workload_conn = relay.conn().await;
    let workload = tokio::spawn({
        let keep_going = keep_going.clone();
        async move {
            let mut conn = workload_conn;
            let mut workload = Workload::new(7);
            workload
                .run_while(&mut conn, ROW_CHANGES, &keep_going)
                .await;
            workload
        }
    });

    let changes = relay.mongo.db().await.collection::<Document>("row_changes");
    let count = || async { changes.count_documents(doc! {}).await.unwrap() };

    // SIGTERM once documents are flowing: a clean exit (0) within the shutdown timeout.
    wait_until("first documents", DRAIN_TIMEOUT, || async {
        assert!(
            !workload.is_finished() || count().await > 0,
            "workload ended early"
        );
        (count().await > 500).then_some(())
    })
    .await;
    let status = relay.sdl.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM exit status {status}:\n{}",
        relay.sdl.logs()
    );
    relay.sdl.start();

    // SIGKILL at a later point, mid-stream.
    let seen = count().await;
    wait_until("more documents", DRAIN_TIMEOUT, || async {
        assert!(!workload.is_finished(), "workload ended early");
        (count().await > seen + 2000).then_some(())
    })
    .await;
    relay.sdl.kill();
    relay.sdl.start();
    keep_going.store(false, Ordering::SeqCst);

    let workload = workload.await.unwrap();
    relay.wait_caught_up(DRAIN_TIMEOUT).await;
    relay.assert_exactly_once(workload.row_changes).await;
    let ddl = relay
        .documents()
        .await
        .into_iter()
        .filter(|d| d.get_str("op") == Ok("ddl"))
        .count();
    assert!(
        ddl >= 4,
        "CREATE statements are relayed as ddl documents (found {ddl})"
    );
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    eprintln!(
        "{} row changes in {} transactions arrived exactly once across a SIGTERM and a SIGKILL restart",
        workload.row_changes, workload.transactions
    );
}

/// The primary key in `meta.pk` follows the key's order, not the columns'; a session writing
/// partial row images (`binlog_row_image=MINIMAL`) gets documents with just the columns the
/// binlog holds, a column it lacks left out rather than NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_and_partial_row_images_are_kept() {
    use mysql_async::prelude::Queryable;
    let mut relay = Relay::builder()
        .sql(&["CREATE DATABASE IF NOT EXISTS app; \
                CREATE TABLE app.keyed (a INT, b VARCHAR(10), c INT, d INT, PRIMARY KEY (b, a))"])
        .following()
        .await;
    let mut conn = relay.conn().await;

    conn.query_drop("INSERT INTO app.keyed VALUES (1, 'x', 10, NULL)")
        .await
        .unwrap();
    conn.query_drop(
        "SET SESSION binlog_row_image = MINIMAL; \
         UPDATE app.keyed SET c = 11 WHERE a = 1 AND b = 'x'; \
         SET SESSION binlog_row_image = FULL",
    )
    .await
    .unwrap();
    relay.wait_caught_up(DRAIN_TIMEOUT).await;
    let documents = relay.documents().await;
    let rows: Vec<&Document> = documents
        .iter()
        .filter(|d| d.get_str("op") != Ok("ddl"))
        .collect();
    assert_eq!(rows.len(), 2, "{documents:?}");
    let (insert, update) = (rows[0], rows[1]);
    let pk = |d: &Document| {
        d.get_document("meta")
            .unwrap()
            .get_document("pk")
            .unwrap()
            .clone()
    };
    assert_eq!(pk(insert), doc! { "b": "x", "a": 1_i64 });
    let keys = |d: &Document| d.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&pk(insert)), ["b", "a"], "key order");
    assert_eq!(
        insert.get_document("after").unwrap(),
        &doc! { "a": 1_i64, "b": "x", "c": 10_i64, "d": null }
    );
    // The MINIMAL update: the key columns before, the changed column after.
    assert_eq!(update.get_str("op").unwrap(), "update");
    assert_eq!(
        update.get_document("before").unwrap(),
        &doc! { "a": 1_i64, "b": "x" }
    );
    assert_eq!(update.get_document("after").unwrap(), &doc! { "c": 11_i64 });
    // The key comes from the before image when the after image lacks it.
    assert_eq!(pk(update), doc! { "b": "x", "a": 1_i64 });
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}
