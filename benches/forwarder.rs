//! Forwarder throughput against a raw `insert_many` baseline, measured in the same run on the same
//! server. Run by `scripts/bench` (which prints the machine first); prints a Markdown table.
//!
//! For each transaction mode, on a fresh MariaDB and a fresh SecantusDB (one-node replica set,
//! `--sync-on-commit`):
//! 1. sdl starts and follows the binlog; then MongoDB is killed, and `BENCH_ROW_CHANGES` (default
//!    50000) row changes of the test workload are written to MariaDB. sdl's ingester reads them
//!    all into the WAL (MariaDB's binlog dump thread reports it has sent everything) while its
//!    forwarder waits with the circuit breaker open (`sink.retry_max_delay = "100ms"`).
//! 2. MongoDB is started again. The forwarder's rate is the change documents committed after its
//!    first commit divided by the time from that commit to the offset naming the last GTID: only
//!    the forwarder (WAL → MongoDB) is measured, not the ingester.
//! 3. Baseline: the very documents sdl wrote, read back and `insert_many`-ed into a fresh database
//!    of the same server in batches of 1000 (`sink.batch_max_documents`), with sdl's write
//!    concern (majority, journaled), by a plain driver loop, into a collection with the same
//!    secondary indexes sdl's has (`ts`, `meta.db/tbl/pk`). A diagnostic row repeats it without
//!    them.
//!
//! CPU columns: user + system CPU of sdl (for the baselines: the benchmark process, the client)
//! and of the MongoDB server in the measured window, per document.
//!
//! Also measured: the whole relay (binlog → WAL → MongoDB) on an already written binlog, and
//! diagnostics by plain driver loops with the same documents: one transaction per batch around
//! the insert_many alone, and with sdl's bookkeeping (offset findAndModify, staging writes) added
//! (both into collections with sdl's indexes).

// The integration tests' harness: the benchmarks use a few of its helpers.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::workload::{create_tables, Workload};
use common::{MariaDb, Mongo, Sdl};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mysql_async::prelude::Queryable;

use support::BATCH;
const TIMEOUT: Duration = Duration::from_secs(1800);

struct Row {
    name: String,
    documents: u64,
    seconds: f64,
    /// CPU seconds of sdl and of the MongoDB server in the measured window, when known.
    cpu: Option<(f64, f64)>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.documents as f64 / self.seconds
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let target: u64 = std::env::var("BENCH_ROW_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let mut rows = Vec::new();
    let mut baseline = None;
    let mut diagnostics = Vec::new();
    for mode in ["on", "off"] {
        let (row, base, diag) = forwarder_only(target, mode).await;
        rows.push(row);
        diagnostics.extend(diag);
        if mode == "on" {
            baseline = Some(base);
        }
    }
    rows.push(whole_relay(target).await);
    rows.extend(diagnostics);
    let baseline = baseline.unwrap();

    println!(
        "| measurement | documents | seconds | docs/s | vs baseline | sdl CPU µs/doc | server CPU µs/doc |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in std::iter::once(&baseline).chain(&rows) {
        let per_doc = |seconds: f64| format!("{:.1}", seconds * 1e6 / row.documents as f64);
        let (sdl_cpu, server_cpu) = match row.cpu {
            Some((sdl, server)) => (per_doc(sdl), per_doc(server)),
            None => (String::new(), String::new()),
        };
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {sdl_cpu} | {server_cpu} |",
            row.name,
            row.documents,
            row.seconds,
            row.rate(),
            row.rate() / baseline.rate()
        );
    }
}

/// The forwarder alone: the WAL is filled while MongoDB is down, then drained. Also returns the
/// baseline measured on the same server with the documents sdl wrote.
async fn forwarder_only(target: u64, mode: &str) -> (Row, Row, Vec<Row>) {
    let (mariadb, mut mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut conn = mariadb.root_conn().await;
    create_tables(&mut conn).await;
    let mut sdl = Sdl::new_with(
        &mariadb,
        &mongo,
        "current",
        &format!("transactions = \"{mode}\"\nretry_max_delay = \"100ms\""),
    );
    sdl.start();
    wait_for(&sdl, "following the binlog", || async {
        sdl.logs().contains("following the binlog")
    })
    .await;
    mongo.kill();
    let mut workload = Workload::new(2024);
    workload.run(&mut conn, target).await;
    let final_position = mariadb.gtid_binlog_pos().await;
    wait_for(&sdl, "the binlog sent to sdl", || async {
        let mut c = mariadb.root_conn().await;
        let states: Vec<String> = c
            .query("SELECT STATE FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'")
            .await
            .unwrap();
        c.disconnect().await.unwrap();
        states.iter().any(|s| s.contains("has sent all binlog"))
    })
    .await;
    // The ingester appends what it received within its group-commit delay (5 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    mongo.restart().await;

    let db = mongo.db().await;
    let changes = db.collection::<Document>("row_changes");
    let offsets = db.collection::<Document>("binlog_offsets");
    let offset = || async {
        offsets
            .find_one(doc! { "_id": "default" })
            .await
            .ok()
            .flatten()
            .and_then(|d| d.get_str("gtid").ok().map(String::from))
    };
    wait_for(&sdl, "the first commit", || async {
        offset().await.is_some()
    })
    .await;
    let started = Instant::now();
    let cpu_before = cpu_of(&sdl, &mongo);
    let before = changes.count_documents(doc! {}).await.unwrap();
    wait_for(&sdl, "the last commit", || async {
        offset().await.as_deref() == Some(final_position.as_str())
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_used(cpu_before, cpu_of(&sdl, &mongo));
    let documents = changes.count_documents(doc! {}).await.unwrap();
    assert!(sdl.terminate(Duration::from_secs(30)).success());
    let row = Row {
        name: format!("sdl forwarder (WAL → MongoDB), transactions {mode}"),
        documents: documents - before,
        seconds,
        cpu,
    };

    let written: Vec<Document> = changes
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let client = mongo.client().await;
    let target = client
        .database(&format!("{}_baseline", mongo.database))
        .collection::<Document>("row_changes");
    // The same secondary indexes as sdl's collection: the same work for the server.
    support::create_change_indexes(&target).await;
    let cpu_before = cpu_of_self_and(&mongo);
    let seconds = support::insert_many_baseline(&target, &written).await;
    let baseline = Row {
        name: "raw insert_many baseline (plain driver loop, batches of 1000, sdl's indexes)".into(),
        documents: written.len() as u64,
        seconds,
        cpu: cpu_used(cpu_before, cpu_of_self_and(&mongo)),
    };
    let mut diagnostics = Vec::new();
    if mode == "on" {
        let bare = client
            .database(&format!("{}_bare", mongo.database))
            .collection::<Document>("row_changes");
        let cpu_before = cpu_of_self_and(&mongo);
        let seconds = support::insert_many_baseline(&bare, &written).await;
        diagnostics.push(Row {
            name: "diagnostic: the raw baseline into a collection without secondary indexes".into(),
            documents: written.len() as u64,
            seconds,
            cpu: cpu_used(cpu_before, cpu_of_self_and(&mongo)),
        });
        diagnostics.extend(transaction_diagnostics(&mongo, &written).await);
    }
    (row, baseline, diagnostics)
}

/// The same documents in sdl's shapes of transaction, by plain driver loops: where the time goes.
async fn transaction_diagnostics(mongo: &Mongo, written: &[Document]) -> Vec<Row> {
    let client = mongo.client().await;
    let raw: Vec<RawDocumentBuf> = written
        .iter()
        .map(|d| RawDocumentBuf::from_document(d).unwrap())
        .collect();
    let mut session = client.start_session().await.unwrap();
    let mut rows = Vec::new();
    for (name, with_bookkeeping) in [
        ("diagnostic: insert_many, one transaction per batch", false),
        (
            "diagnostic: same + offset findAndModify + 2 staging writes in the transaction",
            true,
        ),
    ] {
        let db = client.database(&format!("{}_diag_{}", mongo.database, rows.len()));
        let changes = db.collection::<RawDocumentBuf>("row_changes");
        support::create_change_indexes(&changes).await;
        let offsets = db.collection::<Document>("binlog_offsets");
        let staging = db.collection::<Document>("row_changes_staging");
        let started = Instant::now();
        let cpu_before = cpu_of_self_and(mongo);
        for (n, chunk) in raw.chunks(BATCH).enumerate() {
            let n = n as i64;
            session.start_transaction().await.unwrap();
            if with_bookkeeping {
                offsets
                    .find_one_and_update(
                        doc! { "_id": "default" },
                        doc! { "$set": { "wal_seq": n } },
                    )
                    .upsert(true)
                    .session(&mut session)
                    .await
                    .unwrap();
            }
            changes
                .insert_many(chunk)
                .session(&mut session)
                .await
                .unwrap();
            if with_bookkeeping {
                staging
                    .update_one(
                        doc! { "_id": n },
                        doc! { "$set": { "status": "committed" } },
                    )
                    .session(&mut session)
                    .await
                    .unwrap();
                staging
                    .replace_one(doc! { "_id": n + 1 }, doc! { "status": "pending" })
                    .upsert(true)
                    .session(&mut session)
                    .await
                    .unwrap();
            }
            session.commit_transaction().await.unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        rows.push(Row {
            name: name.into(),
            documents: raw.len() as u64,
            seconds,
            cpu: cpu_used(cpu_before, cpu_of_self_and(mongo)),
        });
    }
    rows
}

/// The whole relay on a binlog written beforehand: binlog → WAL → MongoDB, transactions on.
async fn whole_relay(target: u64) -> Row {
    let (mariadb, mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut conn = mariadb.root_conn().await;
    create_tables(&mut conn).await;
    let mut workload = Workload::new(2024);
    workload.run(&mut conn, target).await;
    let final_position = mariadb.gtid_binlog_pos().await;
    let db = mongo.db().await;
    let changes = db.collection::<Document>("row_changes");
    let offsets = db.collection::<Document>("binlog_offsets");
    let mut sdl = Sdl::new_with(&mariadb, &mongo, "earliest", "transactions = \"on\"");
    sdl.start();
    wait_for(&sdl, "the first commit", || async {
        offsets
            .find_one(doc! { "_id": "default" })
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    let started = Instant::now();
    let cpu_before = cpu_of(&sdl, &mongo);
    let before = changes.count_documents(doc! {}).await.unwrap();
    wait_for(&sdl, "the last commit", || async {
        offsets
            .find_one(doc! { "_id": "default" })
            .await
            .ok()
            .flatten()
            .and_then(|d| d.get_str("gtid").ok().map(String::from))
            == Some(final_position.clone())
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_used(cpu_before, cpu_of(&sdl, &mongo));
    let documents = changes.count_documents(doc! {}).await.unwrap();
    assert!(sdl.terminate(Duration::from_secs(30)).success());
    Row {
        name: "whole relay (binlog → WAL → MongoDB), transactions on".into(),
        documents: documents - before,
        seconds,
        cpu,
    }
}

/// CPU seconds used so far by sdl and by the MongoDB server (None for an external server).
fn cpu_of(sdl: &Sdl, mongo: &Mongo) -> Option<(f64, f64)> {
    Some((
        support::cpu_seconds(sdl.pid()?)?,
        support::cpu_seconds(mongo.pid()?)?,
    ))
}

/// The same for the baselines, whose client is this process.
fn cpu_of_self_and(mongo: &Mongo) -> Option<(f64, f64)> {
    Some((
        support::cpu_seconds(std::process::id())?,
        support::cpu_seconds(mongo.pid()?)?,
    ))
}

fn cpu_used(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> Option<(f64, f64)> {
    let ((a0, b0), (a1, b1)) = (before?, after?);
    Some((a1 - a0, b1 - b0))
}

/// Polls `check` every 10 ms until it holds (panics with sdl's logs after 30 min).
async fn wait_for<F, Fut>(sdl: &Sdl, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + TIMEOUT;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            sdl.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
