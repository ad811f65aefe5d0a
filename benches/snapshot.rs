//! The snapshot benchmark (issue 16): how fast sdl reads an existing table into its WAL and into
//! MongoDB (`source.snapshot = "initial"`), against a plain `SELECT *` of the same table through
//! `mysql_async` in the same run on the same servers, and the peak memory of sdl while it does.
//! Throwaway servers (MariaDB, SecantusDB as a one-node replica set with `--sync-on-commit`) and
//! the release build of sdl (or `SDL_TEST_BINARY`). Run by `scripts/bench snapshot [--rows N]`,
//! which prints the machine first; prints a Markdown table, progress to stderr
//! (`# snapshot: ...`).
//!
//! Sizes (environment): `SDL_BENCH_SNAPSHOT_ROWS` (default 1000000) rows in the table;
//! `SDL_BENCH_RUNS` (default 3) runs, each a baseline and an sdl; the table prints every run and
//! the medians.
//!
//! The table `app.bench_snapshot` has the columns of the other benchmarks' `bench_rows` (INT key,
//! three VARCHARs, INT, DECIMAL, DATETIME, DATETIME(6) NULL: about 100 bytes a row) and is loaded
//! once, before any sdl runs, by `INSERT ... SELECT` from MariaDB's sequence engine (100,000 rows
//! a statement); then the server's caches are warmed by one untimed `SELECT *`. Each run:
//! 1. **Baseline**: `SELECT * FROM app.bench_snapshot` through `mysql_async` (text protocol,
//!    streamed row by row: every row counted, every value taken out of it), timed from the query
//!    to the last row.
//! 2. **Diagnostic, sdl's read pattern without sdl**: the same table as keyset chunks
//!    (`SELECT * ... WHERE id > ? ORDER BY id LIMIT 10000`, sdl's default `snapshot_chunk_rows`)
//!    through `mysql_async`'s binary protocol (prepared statements, as sdl reads), every value
//!    taken out, and `@@GLOBAL.gtid_binlog_pos` read after each chunk (sdl's high watermark).
//!    It tells the cost of paging and of the protocol apart from the cost of sdl itself.
//! 3. **sdl**: a fresh sdl (new WAL, its own MongoDB database, `source.start = "current"`, so no
//!    row comes through the stream) with `source.snapshot = "initial"` and
//!    `source.snapshot_tables = ["app.bench_snapshot"]`, every other snapshot setting at its
//!    default. Timed from the `sdl run` spawn: into the WAL until `/status` `snapshot.state` is
//!    `idle` and `sdl_snapshot_rows_total` is N; end to end until `sdl_documents_written_total`
//!    is N (then MongoDB is asked once how many `op: "snapshot"` documents it holds: exactly N,
//!    or the run fails). Polled every 20 ms; also printed: into the WAL from the first snapshot
//!    row seen in the WAL (`sdl_snapshot_rows_total` > 0), without sdl's start-up. Peak RSS: `VmHWM` of the sdl process at the end; the
//!    highest `VmRSS` seen while it ran is printed beside it. The database is dropped afterwards.
//!
//! 4. **Diagnostic, sdl into the WAL with MongoDB frozen**: another fresh sdl, the same
//!    settings; as soon as its first snapshot row is in the WAL SecantusDB is stopped (SIGSTOP),
//!    so the forwarder and the store take no CPU, and the rest of the table is timed into the
//!    WAL (rows after the first poll that saw one, to `idle`). Then SecantusDB is resumed, that
//!    sdl killed and its database dropped. It tells sdl's own snapshot path apart from the
//!    machine it shares with the store.
//!
//! The ratios are sdl's rows/s over the baseline's of the same run (goal: ≥ 0.7 into the WAL);
//! the goal for peak RSS is < 200 MiB at 1,000,000 rows.

// The integration tests' harness: the benchmarks use a few of its helpers.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::{MariaDb, Mongo, Sdl};
use mongodb::bson::{doc, Document};
use mysql_async::prelude::Queryable;
use support::rows::TABLE_DDL;
use support::{counter, cpu_seconds, env_u64, proc_mib, Admin};

const TABLE: &str = "app.bench_snapshot";
/// sdl's default `source.snapshot_chunk_rows`, for the chunked diagnostic.
const CHUNK_ROWS: u64 = 10_000;
const POLL: Duration = Duration::from_millis(20);
const LONG: Duration = Duration::from_secs(3600);
/// Rows per `INSERT ... SELECT` of the load.
const LOAD_STATEMENT_ROWS: u64 = 100_000;
/// The table and its indexes stay in memory for both readers.
const MARIADB_ARGS: &[&str] = &["--innodb-buffer-pool-size=512M"];
const PEAK_RSS_GOAL_MIB: f64 = 200.0;
const RATIO_GOAL: f64 = 0.7;

fn progress(text: &str) {
    eprintln!("# snapshot: {text}");
}

/// One run: the baseline and sdl, in seconds, and sdl's memory.
struct Run {
    select_seconds: f64,
    select_bytes: u64,
    chunked_seconds: f64,
    /// Rows/s into the WAL with MongoDB frozen (the diagnostic).
    frozen_rows_per_second: f64,
    sdl: SdlRun,
}

/// Keyset chunks of `CHUNK_ROWS` through the binary protocol, with the high-watermark query
/// after each: sdl's read pattern without sdl. Returns the seconds from the first chunk's query
/// to the last chunk's watermark.
async fn select_chunked(mariadb: &MariaDb, rows: u64) -> f64 {
    let mut conn = mariadb.root_conn().await;
    let first = conn
        .prep(format!(
            "SELECT * FROM {TABLE} ORDER BY id LIMIT {CHUNK_ROWS}"
        ))
        .await
        .unwrap();
    let after = conn
        .prep(format!(
            "SELECT * FROM {TABLE} WHERE id > ? ORDER BY id LIMIT {CHUNK_ROWS}"
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let mut seen = 0u64;
    let mut last: Option<i64> = None;
    loop {
        let mut result = match last {
            None => conn.exec_iter(&first, ()).await.unwrap(),
            Some(key) => conn.exec_iter(&after, (key,)).await.unwrap(),
        };
        let mut in_chunk = 0u64;
        let mut key = last;
        result
            .for_each(|row| {
                in_chunk += 1;
                let values = row.unwrap();
                if let Some(mysql_async::Value::Int(id)) = values.first() {
                    key = Some(*id);
                }
                std::hint::black_box(values);
            })
            .await
            .unwrap();
        drop(result);
        let _watermark: Option<String> = conn
            .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
            .await
            .unwrap();
        seen += in_chunk;
        if in_chunk < CHUNK_ROWS {
            break;
        }
        last = key;
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(seen, rows, "rows of the keyset chunks of {TABLE}");
    conn.disconnect().await.unwrap();
    seconds
}

/// One sdl snapshot of the table, timed from the `sdl run` spawn.
struct SdlRun {
    wal_seconds: f64,
    /// Into the WAL from the first poll that saw a snapshot row in it.
    wal_from_first_row_seconds: f64,
    /// CPU seconds of sdl and of SecantusDB (forwarding meanwhile) from the spawn until the
    /// snapshot was in the WAL.
    sdl_cpu_into_wal: Option<f64>,
    mongo_cpu_into_wal: Option<f64>,
    end_to_end_seconds: f64,
    /// `VmHWM` at the end.
    peak_rss_mib: Option<f64>,
    /// The highest `VmRSS` sampled while it ran.
    max_rss_seen_mib: Option<f64>,
    chunks: u64,
    discarded: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env_u64("SDL_BENCH_SNAPSHOT_ROWS", 1_000_000).max(1);
    let runs = env_u64("SDL_BENCH_RUNS", 3).max(1);
    let started = Instant::now();

    progress(&format!("starting MariaDB and SecantusDB ({rows} rows)"));
    let (mariadb, mongo) = tokio::join!(MariaDb::start_with(MARIADB_ARGS), Mongo::start());
    let loaded = Instant::now();
    load_table(&mariadb, rows).await;
    progress(&format!(
        "{rows} rows loaded in {:.1} s",
        loaded.elapsed().as_secs_f64()
    ));
    // Warm the buffer pool once, so that neither reader pays for the first read from disk.
    select_all(&mariadb, rows).await;

    let mut results = Vec::new();
    for run in 1..=runs {
        progress(&format!("run {run}/{runs}: baseline SELECT *"));
        let (select_seconds, select_bytes) = select_all(&mariadb, rows).await;
        progress(&format!(
            "run {run}/{runs}: SELECT * {:.2} s; sdl snapshot",
            select_seconds
        ));
        let chunked_seconds = select_chunked(&mariadb, rows).await;
        let sdl = snapshot_run(&mariadb, &mongo, rows, run).await;
        let frozen_rows_per_second = frozen_run(&mariadb, &mongo, rows, run).await;
        progress(&format!(
            "run {run}/{runs}: sdl into the WAL {:.2} s, end to end {:.2} s, peak RSS {}",
            sdl.wal_seconds,
            sdl.end_to_end_seconds,
            mib(sdl.peak_rss_mib)
        ));
        results.push(Run {
            select_seconds,
            select_bytes,
            chunked_seconds,
            frozen_rows_per_second,
            sdl,
        });
    }

    println!(
        "sizes: SDL_BENCH_SNAPSHOT_ROWS={rows} SDL_BENCH_RUNS={runs}; table {TABLE} (the columns \
         of benches/support/rows.rs); whole run {:.0} s",
        started.elapsed().as_secs_f64()
    );
    print_results(rows, &results);
}

/// Creates the table and fills it with `rows` rows, `LOAD_STATEMENT_ROWS` per statement.
async fn load_table(mariadb: &MariaDb, rows: u64) {
    let mut conn = mariadb.root_conn().await;
    conn.query_drop(format!("CREATE TABLE {TABLE} {TABLE_DDL}"))
        .await
        .unwrap();
    let mut first = 1;
    while first <= rows {
        let last = (first + LOAD_STATEMENT_ROWS - 1).min(rows);
        // The values `support::rows::insert_statement` writes for the same ids.
        conn.query_drop(format!(
            "INSERT INTO {TABLE} (id, customer, email, status, quantity, price, created_at, \
             updated_at) SELECT seq, CONCAT('customer ', seq), CONCAT('user', seq, '@example.com'), \
             ELT(seq MOD 4 + 1, 'new', 'paid', 'shipped', 'cancelled'), seq MOD 97, \
             (seq MOD 10000) + (seq MOD 100) / 100, '2024-01-01 00:00:00' + INTERVAL seq SECOND, \
             IF(seq MOD 3 = 0, NOW(6), NULL) FROM app.seq_{first}_to_{last}"
        ))
        .await
        .unwrap();
        first = last + 1;
    }
    let count: Option<u64> = conn
        .query_first(format!("SELECT COUNT(*) FROM {TABLE}"))
        .await
        .unwrap();
    assert_eq!(count, Some(rows), "rows loaded into {TABLE}");
    conn.disconnect().await.unwrap();
}

/// The baseline: `SELECT *` streamed through `mysql_async`, every value taken out of its row.
/// Returns (seconds from the query to the last row, bytes of the values).
async fn select_all(mariadb: &MariaDb, rows: u64) -> (f64, u64) {
    let mut conn = mariadb.root_conn().await;
    let started = Instant::now();
    let mut seen = 0u64;
    let mut bytes = 0u64;
    let mut result = conn
        .query_iter(format!("SELECT * FROM {TABLE}"))
        .await
        .unwrap();
    result
        .for_each(|row| {
            seen += 1;
            for value in row.unwrap() {
                bytes += match value {
                    mysql_async::Value::Bytes(b) => b.len() as u64,
                    mysql_async::Value::NULL => 0,
                    _ => 8,
                };
            }
        })
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(seen, rows, "rows of SELECT * FROM {TABLE}");
    conn.disconnect().await.unwrap();
    (seconds, bytes)
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// A fresh sdl (not started) that snapshots the table into the MongoDB database `database`
/// (`source.start = "current"`, every other snapshot setting at its default), with its admin
/// endpoint.
fn snapshot_sdl(mariadb: &MariaDb, mongo: &Mongo, database: &str) -> (Sdl, Admin) {
    let database_line = format!("database = \"{database}\"");
    let tables = format!("snapshot_tables = [\"{TABLE}\"]");
    let sdl = Sdl::with_settings(
        mariadb,
        mongo,
        "current",
        &[
            ("source", "snapshot = \"initial\""),
            ("source", &tables),
            ("sink", &database_line),
        ],
    );
    let admin = Admin::new(sdl.admin_addr());
    (sdl, admin)
}

/// An sdl like [`snapshot_run`]'s whose store is frozen from its first snapshot row on: rows/s
/// of the rest of the table into the WAL.
async fn frozen_run(mariadb: &MariaDb, mongo: &Mongo, rows: u64, run: u64) -> f64 {
    let Some(mongo_pid) = mongo.pid() else {
        return f64::NAN;
    };
    let database = format!("{}_frozen{run}", mongo.database);
    let (mut sdl, admin) = snapshot_sdl(mariadb, mongo, &database);
    sdl.start();
    let spawned = Instant::now();
    let mut frozen: Option<(Instant, u64)> = None;
    let rate = loop {
        let metrics = admin.metrics().await;
        let snapshot_rows = counter(&metrics, "sdl_snapshot_rows_total");
        if frozen.is_none() && snapshot_rows > 0 {
            signal(mongo_pid, "STOP");
            frozen = Some((Instant::now(), snapshot_rows));
        }
        if let Some((at, first)) = frozen {
            let idle = snapshot_rows >= rows
                && admin
                    .status()
                    .await
                    .is_some_and(|s| s["snapshot"]["state"] == "idle");
            if idle {
                break (rows - first) as f64 / at.elapsed().as_secs_f64();
            }
        }
        if !sdl.is_running() || spawned.elapsed() > LONG {
            if frozen.is_some() {
                signal(mongo_pid, "CONT");
            }
            panic!(
                "sdl stopped or took too long (frozen run {run}):\n{}",
                sdl.logs()
            );
        }
        tokio::time::sleep(POLL).await;
    };
    signal(mongo_pid, "CONT");
    sdl.kill();
    mongo
        .client()
        .await
        .database(&database)
        .drop()
        .await
        .unwrap();
    rate
}

/// One sdl snapshot of the table into a database of its own (dropped afterwards).
async fn snapshot_run(mariadb: &MariaDb, mongo: &Mongo, rows: u64, run: u64) -> SdlRun {
    let database = format!("{}_snapshot{run}", mongo.database);
    let (mut sdl, admin) = snapshot_sdl(mariadb, mongo, &database);
    let mongo_cpu_before = mongo.pid().and_then(cpu_seconds);
    sdl.start();
    let spawned = Instant::now();
    let pid = sdl.pid();
    let mut max_rss: Option<f64> = None;
    let mut into_wal: Option<f64> = None;
    let mut first_row: Option<f64> = None;
    let mut cpu_into_wal = (None, None);
    let end_to_end = loop {
        let metrics = admin.metrics().await;
        let now = spawned.elapsed().as_secs_f64();
        if let Some(rss) = pid.and_then(|p| proc_mib(p, "VmRSS")) {
            max_rss = Some(max_rss.map_or(rss, |m: f64| m.max(rss)));
        }
        let snapshot_rows = counter(&metrics, "sdl_snapshot_rows_total");
        if first_row.is_none() && snapshot_rows > 0 {
            first_row = Some(now);
        }
        if into_wal.is_none() && snapshot_rows >= rows {
            let status = admin.status().await;
            let state = status
                .as_ref()
                .and_then(|s| s["snapshot"]["state"].as_str().map(str::to_owned));
            if state.as_deref() == Some("idle") {
                into_wal = Some(now);
                let mongo_cpu = mongo.pid().and_then(cpu_seconds);
                cpu_into_wal = (
                    pid.and_then(cpu_seconds),
                    mongo_cpu
                        .zip(mongo_cpu_before)
                        .map(|(after, before)| after - before),
                );
            }
        }
        if into_wal.is_some() && counter(&metrics, "sdl_documents_written_total") >= rows {
            break now;
        }
        assert!(
            sdl.is_running() && spawned.elapsed() < LONG,
            "sdl stopped or took too long (run {run}):\n{}",
            sdl.logs()
        );
        tokio::time::sleep(POLL).await;
    };
    let metrics = admin.metrics().await;
    let peak = pid.and_then(|p| proc_mib(p, "VmHWM"));
    let status = sdl.terminate(Duration::from_secs(60));
    assert!(status.success(), "sdl's SIGTERM: {status}\n{}", sdl.logs());

    let db = mongo.client().await.database(&database);
    let changes = db.collection::<Document>("row_changes");
    let snapshot_documents = changes
        .count_documents(doc! { "op": "snapshot" })
        .await
        .unwrap();
    assert_eq!(
        snapshot_documents, rows,
        "snapshot documents in MongoDB after run {run}"
    );
    let all = changes.count_documents(doc! {}).await.unwrap();
    assert_eq!(
        all, rows,
        "documents other than the snapshot's in run {run}"
    );
    db.drop().await.unwrap();
    SdlRun {
        wal_seconds: into_wal.unwrap(),
        wal_from_first_row_seconds: into_wal.unwrap() - first_row.unwrap_or(0.0),
        sdl_cpu_into_wal: cpu_into_wal.0,
        mongo_cpu_into_wal: cpu_into_wal.1,
        end_to_end_seconds: end_to_end,
        peak_rss_mib: peak,
        max_rss_seen_mib: max_rss,
        chunks: counter(&metrics, "sdl_snapshot_chunks_total"),
        discarded: counter(&metrics, "sdl_snapshot_chunks_discarded_total"),
    }
}

fn mib(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |v| format!("{v:.0} MiB"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn print_results(rows: u64, results: &[Run]) {
    let rate = move |seconds: f64| rows as f64 / seconds;
    let whole = |v: f64| format!("{v:.0}");
    let ratio = |v: f64| format!("{v:.2}");
    let tenths = |v: f64| format!("{v:.1}");
    type Measure<'a> = (
        &'a str,
        Box<dyn Fn(&Run) -> Option<f64>>,
        &'a dyn Fn(f64) -> String,
    );
    let measures: Vec<Measure> = vec![
        (
            "SELECT * through mysql_async (text protocol, streamed): rows/s",
            Box::new(move |r: &Run| Some(rate(r.select_seconds))),
            &whole,
        ),
        (
            "diagnostic: keyset chunks of 10,000 through mysql_async (binary protocol) + watermark query: rows/s",
            Box::new(move |r: &Run| Some(rate(r.chunked_seconds))),
            &whole,
        ),
        (
            "sdl snapshot into the WAL, from the `sdl run` spawn: rows/s",
            Box::new(move |r: &Run| Some(rate(r.sdl.wal_seconds))),
            &whole,
        ),
        (
            "**ratio: sdl into the WAL / the plain SELECT** (goal ≥ 0.7)",
            Box::new(|r: &Run| Some(r.select_seconds / r.sdl.wal_seconds)),
            &ratio,
        ),
        (
            "sdl into the WAL from its first snapshot row (no start-up): rows/s",
            Box::new(move |r: &Run| Some(rate(r.sdl.wal_from_first_row_seconds))),
            &whole,
        ),
        (
            "ratio: sdl into the WAL from its first row / SELECT *",
            Box::new(|r: &Run| Some(r.select_seconds / r.sdl.wal_from_first_row_seconds)),
            &ratio,
        ),
        (
            "ratio: sdl into the WAL / keyset chunks (diagnostic)",
            Box::new(|r: &Run| Some(r.chunked_seconds / r.sdl.wal_seconds)),
            &ratio,
        ),
        (
            "diagnostic: sdl into the WAL with MongoDB frozen (SIGSTOP after the first row): rows/s",
            Box::new(|r: &Run| Some(r.frozen_rows_per_second).filter(|v| v.is_finite())),
            &whole,
        ),
        (
            "ratio: sdl into the WAL with MongoDB frozen / plain SELECT",
            Box::new(move |r: &Run| {
                Some(r.frozen_rows_per_second / rate(r.select_seconds)).filter(|v| v.is_finite())
            }),
            &ratio,
        ),
        (
            "CPU seconds until the snapshot was in the WAL: sdl",
            Box::new(|r: &Run| r.sdl.sdl_cpu_into_wal),
            &tenths,
        ),
        (
            "CPU seconds until the snapshot was in the WAL: SecantusDB (the forwarder's writes meanwhile)",
            Box::new(|r: &Run| r.sdl.mongo_cpu_into_wal),
            &tenths,
        ),
        (
            "sdl end to end (every snapshot document in MongoDB): rows/s",
            Box::new(move |r: &Run| Some(rate(r.sdl.end_to_end_seconds))),
            &whole,
        ),
        (
            "ratio: sdl end to end / SELECT *",
            Box::new(|r: &Run| Some(r.select_seconds / r.sdl.end_to_end_seconds)),
            &ratio,
        ),
        (
            "**sdl peak RSS (VmHWM), MiB** (goal < 200)",
            Box::new(|r: &Run| r.sdl.peak_rss_mib),
            &whole,
        ),
        (
            "highest VmRSS sampled, MiB",
            Box::new(|r: &Run| r.sdl.max_rss_seen_mib),
            &whole,
        ),
        (
            "chunks (discarded)",
            Box::new(|r: &Run| Some(r.sdl.chunks as f64)),
            &whole,
        ),
    ];
    println!();
    let runs: Vec<String> = (1..=results.len()).map(|i| format!("run {i}")).collect();
    println!(
        "| measurement ({rows} rows) | {} | median |",
        runs.join(" | ")
    );
    println!("| --- |{} ---: |", " ---: |".repeat(results.len()));
    let mut medians = Vec::new();
    for (name, measure, show) in &measures {
        let values: Vec<Option<f64>> = results.iter().map(measure).collect();
        let cells: Vec<String> = values
            .iter()
            .map(|v| v.map_or("n/a".into(), show))
            .collect();
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        let med = (!present.is_empty()).then(|| median(present));
        medians.push((*name, med));
        let mut cells = cells.join(" | ");
        if *name == "chunks (discarded)" {
            let discarded: Vec<String> = results
                .iter()
                .map(|r| format!("{} ({})", r.sdl.chunks, r.sdl.discarded))
                .collect();
            cells = discarded.join(" | ");
        }
        println!("| {name} | {cells} | {} |", med.map_or("n/a".into(), show));
    }
    let median_of = |prefix: &str| {
        medians
            .iter()
            .find(|(name, _)| name.starts_with(prefix))
            .and_then(|(_, m)| *m)
    };
    let wal_ratio = median_of("**ratio: sdl into the WAL").unwrap_or(0.0);
    let peak = median_of("**sdl peak RSS");
    let bytes = median(results.iter().map(|r| r.select_bytes as f64).collect());
    println!();
    println!(
        "{rows} rows, {:.0} bytes of values a row as SELECT returns them; goals (medians): ratio \
         into the WAL {} ({wal_ratio:.2}, goal ≥ {RATIO_GOAL}), peak RSS {} ({}, goal < \
         {PEAK_RSS_GOAL_MIB:.0} MiB)",
        bytes / rows as f64,
        if wal_ratio >= RATIO_GOAL {
            "met"
        } else {
            "NOT met"
        },
        match peak {
            Some(p) if p < PEAK_RSS_GOAL_MIB => "met",
            Some(_) => "NOT met",
            None => "not measured",
        },
        mib(peak)
    );
}
