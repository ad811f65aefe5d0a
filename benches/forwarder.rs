//! Forwarder throughput against a raw `insert_many` baseline, measured in the same run on the same
//! server. Run by `scripts/bench` (which prints the machine first); prints Markdown table rows.
//!
//! 1. A throwaway MariaDB gets `BENCH_ROW_CHANGES` (default 50000) row changes from the test
//!    workload; a throwaway SecantusDB (one-node replica set, `--sync-on-commit`) is the sink.
//! 2. For each transaction mode, a fresh sdl relays the whole binlog into its own database; the
//!    rate is change documents / time from the first document's arrival to the offset naming the
//!    last GTID (the ingester runs alongside and is faster, so this is the forwarder's rate).
//! 3. Baseline: the very documents sdl wrote, read back, then `insert_many` into a fresh database
//!    of the same server in batches of `sink.batch_max_documents` (1000), with the same write
//!    concern (majority, journaled), by a plain driver loop.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::workload::{create_tables, Workload};
use common::{MariaDb, Mongo, Sdl};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::options::{Acknowledgment, WriteConcern};

const BATCH: usize = 1000;
const TIMEOUT: Duration = Duration::from_secs(1800);

struct Row {
    name: String,
    documents: u64,
    seconds: f64,
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
    let (mariadb, mut mongo) = tokio::join!(MariaDb::start(), Mongo::start());
    let mut conn = mariadb.root_conn().await;
    create_tables(&mut conn).await;
    let mut workload = Workload::new(2024);
    workload.run(&mut conn, target).await;
    let final_position = mariadb.gtid_binlog_pos().await;
    eprintln!(
        "workload: {} row changes in {} transactions",
        workload.row_changes, workload.transactions
    );

    let base_database = mongo.database.clone();
    let mut rows = Vec::new();
    for (mode, toml) in [
        ("on", "transactions = \"on\""),
        ("off", "transactions = \"off\""),
    ] {
        mongo.database = format!("{base_database}_tx_{mode}");
        rows.push(relay(&mariadb, &mongo, toml, &final_position, mode).await);
    }

    // The baseline, with the documents the last sdl run wrote.
    let client = mongo.client().await;
    let written: Vec<Document> = client
        .database(&mongo.database)
        .collection::<Document>("row_changes")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let target = client
        .database(&format!("{base_database}_baseline"))
        .collection::<Document>("row_changes");
    let concern = WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .build();
    let started = Instant::now();
    for chunk in written.chunks(BATCH) {
        target
            .insert_many(chunk)
            .write_concern(concern.clone())
            .await
            .unwrap();
    }
    let baseline = Row {
        name: "raw insert_many baseline (plain driver loop)".into(),
        documents: written.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
    };

    println!("| measurement | documents | seconds | docs/s | vs baseline |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {} | {:.2} | {:.0} | 1.00 |",
        baseline.name,
        baseline.documents,
        baseline.seconds,
        baseline.rate()
    );
    for row in &rows {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} |",
            row.name,
            row.documents,
            row.seconds,
            row.rate(),
            row.rate() / baseline.rate()
        );
    }
}

/// Relays the whole binlog with a fresh sdl and times the documents' arrival.
async fn relay(
    mariadb: &MariaDb,
    mongo: &Mongo,
    sink_toml: &str,
    final_position: &str,
    mode: &str,
) -> Row {
    let db = mongo.db().await;
    let changes = db.collection::<Document>("row_changes");
    let offsets = db.collection::<Document>("binlog_offsets");
    let mut sdl = Sdl::new_with(mariadb, mongo, "earliest", sink_toml);
    sdl.start();
    let deadline = Instant::now() + TIMEOUT;
    let poll = Duration::from_millis(10);
    while changes.count_documents(doc! {}).await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "no documents:\n{}", sdl.logs());
        tokio::time::sleep(poll).await;
    }
    let first = Instant::now();
    loop {
        let offset = offsets.find_one(doc! { "_id": "default" }).await.unwrap();
        if offset.and_then(|d| d.get_str("gtid").ok().map(String::from))
            == Some(final_position.to_string())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay timed out:\n{}",
            sdl.logs()
        );
        tokio::time::sleep(poll).await;
    }
    let seconds = first.elapsed().as_secs_f64();
    let documents = changes.count_documents(doc! {}).await.unwrap();
    assert!(sdl.terminate(Duration::from_secs(30)).success());
    Row {
        name: format!("sdl forwarder, transactions {mode}"),
        documents,
        seconds,
    }
}
