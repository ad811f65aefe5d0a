//! The WAL bytes one change costs, measured the way an operator would (`sdl wal stats --json`
//! while MongoDB is away, so nothing is acknowledged or pruned), for the capacity model in
//! docs/operations.md ("Capacity"). The test prints what it measured and fails when a typical row
//! costs more than the model assumes, so the model cannot silently go stale.

use std::time::Duration;

use crate::support::Relay;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mysql_async::prelude::Queryable;

const TIMEOUT: Duration = Duration::from_secs(120);

/// The WAL bytes per change that docs/operations.md ("Capacity") assumes for a typical row (a
/// single-row transaction: its GTID, position, table and file names, and both row images of an
/// update) — what the model's worked example multiplies with.
const MODEL_BYTES_PER_CHANGE: f64 = 400.0;

/// `(bytes, disk_bytes)` of the WAL, from `sdl wal stats --json` against the running sdl.
fn wal_bytes(config: &std::path::Path) -> (f64, f64) {
    let config = config.display().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sdl"))
        .args(["wal", "stats", "--json", "--config", &config])
        .output()
        .expect("run sdl wal stats");
    assert!(out.status.success(), "{out:?}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        stats["unacked_bytes"].as_f64().unwrap(),
        stats["disk_bytes"].as_f64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_bytes_per_change_of_a_typical_row_are_within_the_capacity_model() {
    let mut relay = Relay::builder()
        .sql(&[
            "CREATE TABLE app.orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, \
                amount DECIMAL(10,2) NOT NULL, status VARCHAR(16) NOT NULL, \
                note VARCHAR(100), created_at DATETIME(6) NOT NULL) ENGINE=InnoDB",
        ])
        .sink_toml("connect_timeout = \"2s\"\nretry_max_delay = \"1s\"")
        .following()
        .await;
    if !relay.can_kill_mongo() {
        return;
    }
    // MongoDB away: every change stays unacknowledged in the WAL, none is pruned.
    relay.mongo.kill();
    let config = relay.sdl.config_path.clone();
    let mut conn = relay.conn().await;
    let row = |id: u64| {
        format!(
            "({id}, {}, {}.{:02}, 'new', 'order {id} for customer {}, deliver by noon', \
             '2026-11-27 10:{:02}:{:02}.{:06}')",
            id % 1000,
            id % 10_000,
            id % 100,
            id % 1000,
            id % 60,
            (id * 7) % 60,
            id * 13 % 1_000_000
        )
    };
    let mut measured = Vec::new();
    let kinds: [(&str, u64); 3] = [
        ("single-row insert", 3000),
        ("single-row update (both images)", 3000),
        ("insert in a 100-row transaction", 3000),
    ];
    for (kind, changes) in kinds {
        let before = wal_bytes(&config);
        for i in 0..changes {
            let sql = match kind {
                "single-row insert" => format!("INSERT INTO app.orders VALUES {}", row(i + 1)),
                "single-row update (both images)" => format!(
                    "UPDATE app.orders SET status = 'paid', amount = amount + 1 WHERE id = {}",
                    i + 1
                ),
                _ if i % 100 == 0 => {
                    let rows: Vec<String> = (0..100).map(|j| row(100_000 + i + j)).collect();
                    format!("INSERT INTO app.orders VALUES {}", rows.join(","))
                }
                _ => continue,
            };
            conn.query_drop(&sql).await.unwrap();
        }
        let position = relay.mariadb.gtid_binlog_pos().await;
        relay.sdl.wait_wal_holds(&position, TIMEOUT).await;
        let after = wal_bytes(&config);
        let per_change = (after.0 - before.0) / changes as f64;
        let disk_per_change = (after.1 - before.1) / changes as f64;
        eprintln!(
            "{kind}: {per_change:.0} WAL bytes per change ({disk_per_change:.0} bytes on disk) over {changes} changes"
        );
        measured.push((kind, per_change));
    }
    // MongoDB back: what the forwarder sends per change (the staging entries record each batch's
    // documents and BSON bytes).
    relay.mongo.restart().await;
    relay.wait_caught_up(TIMEOUT).await;
    let staging: Vec<Document> = relay
        .mongo
        .db()
        .await
        .collection::<Document>("row_changes_staging")
        .find(doc! { "status": "committed" })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let (documents, bytes) = staging.iter().fold((0, 0), |(n, b), e| {
        (
            n + e.get_i64("count").unwrap(),
            b + e.get_i64("bytes").unwrap(),
        )
    });
    assert_eq!(documents, 9000, "{staging:?}");
    eprintln!(
        "MongoDB: {} BSON bytes per change document on average, {} batches for {documents} documents",
        bytes / documents,
        staging.len()
    );
    for (kind, per_change) in measured {
        assert!(
            per_change > 0.0 && per_change <= MODEL_BYTES_PER_CHANGE,
            "{kind}: {per_change:.0} WAL bytes per change, over the capacity model's {MODEL_BYTES_PER_CHANGE}: update docs/operations.md (\"Capacity\") and this bound"
        );
    }
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}
