//! The end-to-end benchmark (issue #7): catch-up throughput against raw baselines, steady-state
//! latency, peak memory and recovery time, each on throwaway servers (MariaDB, SecantusDB as a
//! one-node replica set with `--sync-on-commit`) and the release build of sdl. Run by
//! `scripts/bench e2e [--rows N]`, which prints the machine first; prints Markdown tables.
//!
//! Sizes (environment): `BENCH_ROWS` (default 1000000) row changes for the catch-up;
//! `BENCH_BIG_TXN_ROWS` (default `BENCH_ROWS`) rows in the single-transaction memory test;
//! `BENCH_RECOVERY_RECORDS` (default `BENCH_ROWS`) unacknowledged WAL records for the recovery
//! test; `BENCH_LATENCY_SECONDS` (default 30) per latency rate; `BENCH_LATENCY_RATES` (default
//! `2000,10000`) row changes/s. `BENCH_PHASES` (default `catchup,latency,bigtxn,recovery`) picks
//! phases (latency and bigtxn run on the catch-up's servers and need it).
//!
//! 1. **Catch-up** (table `app.bench_rows`: INT key, VARCHAR, INT, DECIMAL, DATETIME columns;
//!    `BENCH_ROWS` rows written as transactions of 1000 rows, four multi-row INSERTs each):
//!    - sdl "A" follows the empty table, MongoDB is killed and sdl A is frozen (SIGSTOP) while
//!      the rows are written, so they all sit in the binlog.
//!    - Raw decode baseline: a plain `mysql_async` binlog stream from the same GTID position that
//!      decodes every row of every ROWS event with `mysql_common` (`RowsEventData::rows`, every
//!      `BinlogRow` value) and does nothing else. Timed from the dump request to the last row.
//!    - Ingest alone: sdl A is resumed (SIGCONT) with MongoDB still down; timed until its WAL
//!      holds every transaction (`sdl_wal_appended_records_total` on /metrics).
//!    - sdl "B" (new WAL, MongoDB up, `source.start` = the position before the rows): the whole
//!      catch-up. Ingest: from /status saying "following" to the last WAL append; forward: from
//!      the first committed batch to the last (`sdl_documents_written_total`); end to end: from
//!      the `sdl run` spawn to the last document committed. Polled every 20 ms.
//!    - Raw insert_many baseline: the documents sdl B wrote, read back and inserted into a fresh
//!      collection of the same server with the same secondary indexes as sdl's, batches of 1000,
//!      majority + journaled, by a plain driver loop.
//! 2. **Latency** (sdl B, caught up): a paced writer commits a multi-row INSERT every 5 ms at each
//!    rate for `BENCH_LATENCY_SECONDS` and records when each commit returned; a reader polls sdl's
//!    offset document (committed in the same MongoDB transaction as the change documents) every
//!    2 ms and records when each transaction's GTID became visible. Latency = visible − commit.
//! 3. **Memory**: `VmHWM` (peak RSS) of sdl A (ingest alone), sdl B (catch-up), a fresh sdl B
//!    process while one INSERT ... SELECT of `BENCH_BIG_TXN_ROWS` rows (one transaction) goes
//!    through, and sdl C (recovery, below).
//! 4. **Recovery** (fresh servers): sdl C follows, MongoDB is killed, `BENCH_RECOVERY_RECORDS`
//!    single-row transactions are written (a server-side loop) and ingested into the WAL; sdl C is
//!    stopped, MongoDB started again, and sdl C started: time to /readyz 200, to the first batch
//!    committed, and to the last.

// The integration tests' harness: the benchmarks use a few of its helpers.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod common;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{MariaDb, Mongo, Sdl};
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;
use mysql_async::BinlogStreamRequest;
use support::rows::{insert_statement, write_rows, ROWS_PER_TRANSACTION, TABLE_DDL};
use support::{counter, cpu_seconds, env_u64, gtid_seq, log_offset, proc_mib, wait_for, Admin};

const POLL: Duration = Duration::from_millis(20);
const LONG: Duration = Duration::from_secs(3600);
/// MariaDB keeps a frozen sdl's binlog connection open (the dump thread blocks on a full socket).
const MARIADB_ARGS: &[&str] = &["--net-write-timeout=3600", "--innodb-buffer-pool-size=256M"];

fn progress(text: &str) {
    eprintln!("# e2e: {text}");
}

/// One throughput line: `amount` rows or documents in `seconds`, against a baseline rate.
struct Rate {
    name: String,
    amount: u64,
    seconds: f64,
    baseline: Option<f64>,
    goal: &'static str,
    /// CPU seconds the measured process used in the window (sdl, or the bench for baselines).
    cpu: Option<f64>,
}

impl Rate {
    fn rate(&self) -> f64 {
        self.amount as f64 / self.seconds
    }
}

struct Latency {
    target: u64,
    achieved: f64,
    transactions: usize,
    rows_per_transaction: u64,
    p50: f64,
    p99: f64,
    max: f64,
    resolution_ms: f64,
}

struct Memory {
    name: String,
    peak_mib: Option<f64>,
    note: String,
}

#[derive(Default)]
struct Report {
    rates: Vec<Rate>,
    latencies: Vec<Latency>,
    memory: Vec<Memory>,
    recovery: Vec<(String, String)>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env_u64("BENCH_ROWS", 1_000_000);
    let big_rows = env_u64("BENCH_BIG_TXN_ROWS", rows);
    let recovery_records = env_u64("BENCH_RECOVERY_RECORDS", rows);
    let latency_seconds = env_u64("BENCH_LATENCY_SECONDS", 30);
    let rates: Vec<u64> = std::env::var("BENCH_LATENCY_RATES")
        .unwrap_or_else(|_| "2000,10000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let phases =
        std::env::var("BENCH_PHASES").unwrap_or_else(|_| "catchup,latency,bigtxn,recovery".into());
    let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);
    let started = Instant::now();
    let mut report = Report::default();
    if phase("catchup") {
        let mut servers = catch_up(rows, &mut report).await;
        if phase("latency") {
            for rate in &rates {
                let row = latency(&servers, *rate, latency_seconds).await;
                report.latencies.push(row);
            }
            let pid = servers.sdl.pid().unwrap();
            report.memory.push(Memory {
                name: "catch-up, then the steady-state phases (same process)".into(),
                peak_mib: proc_mib(pid, "VmHWM"),
                note: format!(
                    "now {}",
                    proc_mib(pid, "VmRSS").map_or("?".into(), |m| format!("{m:.0} MiB"))
                ),
            });
        }
        if phase("bigtxn") {
            big_transaction(&mut servers, big_rows, &mut report).await;
        }
        drop(servers);
    }
    if phase("recovery") {
        recovery(recovery_records, &mut report).await;
    }
    print_report(
        &report,
        rows,
        big_rows,
        recovery_records,
        started.elapsed().as_secs_f64(),
    );
}

/// The catch-up's servers, kept for the phases that follow it (sdl B still running).
struct Servers {
    mariadb: MariaDb,
    mongo: Mongo,
    sdl: Sdl,
    admin: Admin,
}

async fn catch_up(rows: u64, report: &mut Report) -> Servers {
    progress(&format!("catch-up: starting servers ({rows} rows)"));
    let (mariadb, mut mongo) = tokio::join!(MariaDb::start_with(MARIADB_ARGS), Mongo::start());
    let mut conn = mariadb.root_conn().await;
    conn.query_drop(format!("CREATE TABLE app.bench_rows {TABLE_DDL}"))
        .await
        .unwrap();
    conn.query_drop(WARM_UP_DDL).await.unwrap();

    // sdl A follows the empty table, then loses MongoDB and is frozen while the rows are written.
    // It writes to a database of its own, dropped before sdl B starts.
    let database_a = format!("{}_a", mongo.database);
    let mut sdl_a = Sdl::with_settings(
        &mariadb,
        &mongo,
        "current",
        &[
            ("source", "heartbeat_interval = \"600s\""),
            ("sink", "retry_max_delay = \"1s\""),
            ("sink", &format!("database = \"{database_a}\"")),
        ],
    );
    sdl_a.start();
    let admin_a = Admin::new(sdl_a.admin_addr());
    wait_ready(&sdl_a, &admin_a).await;
    let documents_before = warm_up(&mut conn, &sdl_a, &admin_a).await;
    let start = mariadb.gtid_binlog_pos().await;
    let appended_before = counter(&admin_a.metrics().await, "sdl_wal_appended_records_total");
    mongo.kill();
    sdl_a.send_signal("STOP");
    progress("catch-up: writing the rows (sdl A frozen, MongoDB down)");
    let written = Instant::now();
    let transactions = write_rows(&mut conn, "app.bench_rows", 1, rows).await;
    let source_seconds = written.elapsed().as_secs_f64();
    let end = mariadb.gtid_binlog_pos().await;
    assert_eq!(gtid_seq(&end) - gtid_seq(&start), transactions);
    progress(&format!(
        "catch-up: {rows} rows in {transactions} transactions written in {source_seconds:.1} s"
    ));

    progress("catch-up: raw binlog decode baseline");
    let me = std::process::id();
    let cpu = cpu_seconds(me);
    let (decoded, decode_seconds) = raw_decode(&mariadb, &start, rows, Decoder::Raw).await;
    let cpu = cpu_seconds(me).zip(cpu).map(|(b, a)| b - a);
    assert_eq!(decoded, rows);
    let decode_rate = rows as f64 / decode_seconds;
    report.rates.push(Rate {
        name: "raw binlog decode (mysql_async stream + mysql_common rows, nothing else)".into(),
        amount: rows,
        seconds: decode_seconds,
        baseline: Some(decode_rate),
        goal: "",
        cpu,
    });
    progress("catch-up: diagnostic: sdl's decoder on the same stream");
    let cpu = cpu_seconds(me);
    let (decoded, seconds) = raw_decode(&mariadb, &start, rows, Decoder::Sdl).await;
    let cpu = cpu_seconds(me).zip(cpu).map(|(b, a)| b - a);
    assert_eq!(decoded, rows);
    report.rates.push(Rate {
        name:
            "diagnostic: same stream through sdl's TransactionAssembler (decode + convert, no WAL)"
                .into(),
        amount: rows,
        seconds,
        baseline: Some(decode_rate),
        goal: "",
        cpu,
    });

    progress("catch-up: sdl A ingests alone (MongoDB down)");
    let cpu = cpu_seconds(sdl_a.pid().unwrap());
    let resumed = Instant::now();
    sdl_a.send_signal("CONT");
    wait_for(
        "sdl A to append every transaction",
        POLL,
        LONG,
        || sdl_a.logs(),
        || async {
            counter(&admin_a.metrics().await, "sdl_wal_appended_records_total")
                >= appended_before + transactions
        },
    )
    .await;
    report.rates.push(Rate {
        name: "sdl ingest alone (binlog → WAL, MongoDB down)".into(),
        amount: rows,
        seconds: resumed.elapsed().as_secs_f64(),
        baseline: Some(decode_rate),
        goal: "≥ 0.8",
        cpu: cpu_seconds(sdl_a.pid().unwrap())
            .zip(cpu)
            .map(|(b, a)| b - a),
    });
    report.memory.push(Memory {
        name: "ingest alone (binlog → WAL, MongoDB down)".into(),
        peak_mib: proc_mib(sdl_a.pid().unwrap(), "VmHWM"),
        note: format!("{transactions} transactions of {ROWS_PER_TRANSACTION} rows"),
    });

    // Forward alone: MongoDB comes back and sdl A drains its WAL (the forwarder benchmark's
    // method, on this data): from its first committed batch to its last.
    progress("catch-up: sdl A forwards alone (MongoDB back)");
    mongo.restart().await;
    let pid_a = sdl_a.pid().unwrap();
    let mut first = None;
    let (cpu_start, last) = loop {
        let now = Instant::now();
        let documents = counter(&admin_a.metrics().await, "sdl_documents_written_total");
        if first.is_none() && documents > documents_before {
            first = Some((now, documents - documents_before, cpu_seconds(pid_a)));
        }
        if documents >= documents_before + rows {
            break (first.unwrap().2, now);
        }
        assert!(
            sdl_a.is_running() && resumed.elapsed() < LONG,
            "sdl A stopped or took too long:\n{}",
            sdl_a.logs()
        );
        tokio::time::sleep(POLL).await;
    };
    let (first_at, first_documents, _) = first.unwrap();
    let forward_alone = (
        rows - first_documents,
        (last - first_at).as_secs_f64(),
        cpu_seconds(pid_a).zip(cpu_start).map(|(b, a)| b - a),
    );
    report.memory.push(Memory {
        name: "ingest alone, then forward alone (deep WAL)".into(),
        peak_mib: proc_mib(pid_a, "VmHWM"),
        note: format!("{rows} rows; the WAL held all of them when forwarding began"),
    });
    sdl_a.terminate(Duration::from_secs(60));
    drop(sdl_a);
    mongo
        .client()
        .await
        .database(&database_a)
        .drop()
        .await
        .unwrap();

    progress("catch-up: sdl B from the position before the rows, MongoDB up");
    let mut sdl = Sdl::with_settings(&mariadb, &mongo, &start, &[]);
    let admin = Admin::new(sdl.admin_addr());
    let spawned = Instant::now();
    sdl.start();
    let mut following_at = None;
    let mut ingested_at = None;
    let mut ingest_cpu = None;
    let mut first_commit = None;
    let last_commit;
    loop {
        let now = Instant::now();
        let metrics = admin.metrics().await;
        if following_at.is_none() {
            let status = admin.status().await;
            if status.is_some_and(|s| s["ingest"]["state"] != "starting") {
                following_at = Some(now);
            }
        }
        if ingested_at.is_none()
            && counter(&metrics, "sdl_wal_appended_records_total") >= transactions
        {
            ingested_at = Some(now);
            ingest_cpu = sdl.pid().and_then(cpu_seconds);
        }
        let documents = counter(&metrics, "sdl_documents_written_total");
        if first_commit.is_none() && documents > 0 {
            first_commit = Some((now, documents));
        }
        if documents >= rows {
            last_commit = now;
            break;
        }
        assert!(
            sdl.is_running() && spawned.elapsed() < LONG,
            "sdl B stopped or took too long:\n{}",
            sdl.logs()
        );
        tokio::time::sleep(POLL).await;
    }
    let peak = proc_mib(sdl.pid().unwrap(), "VmHWM");
    let total_cpu = sdl.pid().and_then(cpu_seconds);
    let db = mongo.db().await;
    let changes = db.collection::<RawDocumentBuf>("row_changes");
    assert_eq!(changes.count_documents(doc! {}).await.unwrap(), rows);
    let offset = db
        .collection::<Document>("binlog_offsets")
        .find_one(doc! { "_id": "default" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(offset.get_str("gtid").unwrap(), end);

    // Without a "following" sample (too quick to see), the ingest is timed from the spawn.
    let ingest_from = following_at.unwrap_or(spawned);
    let ingest_seconds = (ingested_at.unwrap() - ingest_from).as_secs_f64();
    report.rates.push(Rate {
        name: "sdl ingest during catch-up (binlog → WAL, forwarder running)".into(),
        amount: rows,
        seconds: ingest_seconds,
        baseline: Some(decode_rate),
        goal: "≥ 0.8",
        cpu: ingest_cpu,
    });
    report.memory.push(Memory {
        name: "catch-up (binlog → WAL → MongoDB)".into(),
        peak_mib: peak,
        note: format!("{rows} rows"),
    });

    progress("catch-up: raw insert_many baseline");
    let documents: Vec<RawDocumentBuf> = changes
        .find(doc! {})
        .batch_size(10_000)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let client = mongo.client().await;
    let baseline_db = client.database(&format!("{}_baseline", mongo.database));
    let target = baseline_db.collection::<RawDocumentBuf>("row_changes");
    // The same secondary indexes sdl creates on its collection: the same work for the server.
    support::create_change_indexes(&target).await;
    let cpu = cpu_seconds(me);
    let insert_seconds = support::insert_many_baseline(&target, &documents).await;
    let cpu = cpu_seconds(me).zip(cpu).map(|(b, a)| b - a);
    let insert_rate = documents.len() as f64 / insert_seconds;
    drop(documents);
    baseline_db.drop().await.unwrap();
    report.rates.push(Rate {
        name: "raw insert_many (same documents, batches of 1000, majority + journaled)".into(),
        amount: rows,
        seconds: insert_seconds,
        baseline: Some(insert_rate),
        goal: "",
        cpu,
    });
    report.rates.push(Rate {
        name: "sdl forward alone (WAL → MongoDB, the WAL filled beforehand, after the first batch)"
            .into(),
        amount: forward_alone.0,
        seconds: forward_alone.1,
        baseline: Some(insert_rate),
        goal: "≥ 0.8",
        cpu: forward_alone.2,
    });
    let (first_at, first_documents) = first_commit.unwrap();
    report.rates.push(Rate {
        name: "sdl forward during catch-up (WAL → MongoDB, after the first batch)".into(),
        amount: rows - first_documents,
        seconds: (last_commit - first_at).as_secs_f64(),
        baseline: Some(insert_rate),
        goal: "≥ 0.8",
        cpu: None,
    });
    report.rates.push(Rate {
        name: "sdl end to end catch-up (spawn → last document committed)".into(),
        amount: rows,
        seconds: (last_commit - spawned).as_secs_f64(),
        baseline: Some(insert_rate),
        goal: "",
        cpu: total_cpu,
    });
    report.rates.push(Rate {
        name: "(source) writing the rows into MariaDB".into(),
        amount: rows,
        seconds: source_seconds,
        baseline: None,
        goal: "",
        cpu: None,
    });
    conn.disconnect().await.unwrap();
    Servers {
        mariadb,
        mongo,
        sdl,
        admin,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Decoder {
    /// `mysql_common` only: every value of every row decoded, nothing else.
    Raw,
    /// sdl's own decoder (`TransactionAssembler`: decode, convert, assemble transactions).
    Sdl,
}

/// The raw decode baseline: a plain binlog stream from `from` (a MariaDB GTID position) that
/// decodes every row of every ROWS event, until `rows` rows. Returns (rows, seconds).
async fn raw_decode(mariadb: &MariaDb, from: &str, rows: u64, decoder: Decoder) -> (u64, f64) {
    let mut conn = mysql_async::Conn::from_url(mariadb.sdl_url().as_str())
        .await
        .unwrap();
    // What sdl asks for too: GTID events, positioning by GTID.
    for statement in [
        "SET @mariadb_slave_capability=4".to_string(),
        format!("SET @slave_connect_state='{from}'"),
        "SET @slave_gtid_strict_mode=1".to_string(),
        "SET @slave_gtid_ignore_duplicates=0".to_string(),
    ] {
        conn.query_drop(statement).await.unwrap();
    }
    let started = Instant::now();
    // A server id of its own: MariaDB drops an older dump connection with the same id.
    let mut stream = conn
        .get_binlog_stream(BinlogStreamRequest::new(7777))
        .await
        .unwrap();
    let mut decoded = 0u64;
    let mut values = 0usize;
    let position = sdl::gtid::Position::parse(sdl::flavor::Flavor::Mariadb, from).unwrap();
    let mut assembler = sdl::source::decode::TransactionAssembler::new(position);
    while decoded < rows {
        let event = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("no binlog event for 60 s in the raw decode")
            .expect("binlog stream ended")
            .unwrap();
        if decoder == Decoder::Sdl {
            if let Some(transaction) = assembler.feed(&event).unwrap() {
                decoded += transaction.changes.len() as u64;
                values += 1;
            }
            continue;
        }
        if let Ok(Some(EventData::RowsEvent(data))) = event.read_data() {
            let tme = stream.get_tme(data.table_id()).expect("TABLE_MAP");
            for row in data.rows(tme) {
                let (before, after) = row.unwrap();
                for image in [before, after].into_iter().flatten() {
                    values += image.unwrap().len();
                }
                decoded += 1;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    assert!(values > 0);
    let _ = stream.close().await;
    (decoded, seconds)
}

/// A table whose one row proves the forwarder is past its start-up (reconciliation with
/// MongoDB) before MongoDB is killed.
const WARM_UP_DDL: &str = "CREATE TABLE app.bench_warm_up (id INT PRIMARY KEY) ENGINE=InnoDB";

/// Inserts a row and waits until sdl has committed it to MongoDB: sdl's forwarder stops (and sdl
/// exits) when MongoDB goes away during its start-up reconciliation, unlike later (a finding of
/// this benchmark). Returns sdl's documents written so far.
async fn warm_up(conn: &mut mysql_async::Conn, sdl: &Sdl, admin: &Admin) -> u64 {
    conn.query_drop("INSERT INTO app.bench_warm_up VALUES (1)")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let documents = counter(&admin.metrics().await, "sdl_documents_written_total");
        if documents > 0 {
            return documents;
        }
        assert!(
            Instant::now() < deadline,
            "the warm-up row never reached MongoDB:\n{}",
            sdl.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_ready(sdl: &Sdl, admin: &Admin) {
    wait_for(
        "/readyz",
        POLL,
        Duration::from_secs(180),
        || sdl.logs(),
        || admin.ready(),
    )
    .await;
}

/// Steady state at `rate` row changes/s: commit → visible in MongoDB, per transaction.
async fn latency(servers: &Servers, rate: u64, seconds: u64) -> Latency {
    const TICK: Duration = Duration::from_millis(5);
    const READ_EVERY: Duration = Duration::from_millis(2);
    progress(&format!("latency: {rate} row changes/s for {seconds} s"));
    let mut conn = servers.mariadb.root_conn().await;
    let table = format!("app.bench_live_{rate}");
    conn.query_drop(format!("CREATE TABLE {table} {TABLE_DDL}"))
        .await
        .unwrap();
    let db = servers.mongo.db().await;
    let offsets = db.collection::<Document>("binlog_offsets");
    let base = gtid_seq(&servers.mariadb.gtid_binlog_pos().await);
    // The DDL must be in MongoDB before timing starts.
    wait_for(
        "the CREATE TABLE in MongoDB",
        POLL,
        Duration::from_secs(60),
        || servers.sdl.logs(),
        || async {
            offsets
                .find_one(doc! { "_id": "default" })
                .await
                .ok()
                .flatten()
                .and_then(|d| d.get_str("gtid").ok().map(gtid_seq))
                == Some(base)
        },
    )
    .await;
    let rows_per_transaction = (rate * TICK.as_millis() as u64 / 1000).max(1);
    let transactions = (seconds * 1000 / TICK.as_millis() as u64) as usize;

    // The reader: when each transaction's GTID became visible (the offset document is committed
    // in the same MongoDB transaction as the change documents).
    let visible: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; transactions]));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (visible, done, offsets) = (visible.clone(), done.clone(), offsets.clone());
        tokio::spawn(async move {
            let mut seen = base;
            let mut polls = 0u64;
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let found = offsets.find_one(doc! { "_id": "default" }).await;
                let now = Instant::now();
                polls += 1;
                if let Some(seq) = found
                    .ok()
                    .flatten()
                    .and_then(|d| d.get_str("gtid").ok().map(gtid_seq))
                {
                    let mut visible = visible.lock().unwrap();
                    for s in seen + 1..=seq {
                        if let Some(slot) = visible.get_mut((s - base - 1) as usize) {
                            *slot = Some(now);
                        }
                    }
                    seen = seen.max(seq);
                    if seen >= base + visible.len() as u64 {
                        break;
                    }
                }
                tokio::time::sleep(READ_EVERY).await;
            }
            started.elapsed().as_secs_f64() * 1000.0 / polls.max(1) as f64
        })
    };

    let mut committed = Vec::with_capacity(transactions);
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for k in 0..transactions as u64 {
        ticks.tick().await;
        let sql = insert_statement(&table, 1 + k * rows_per_transaction, rows_per_transaction);
        conn.query_drop(sql).await.unwrap();
        committed.push(Instant::now());
    }
    let achieved =
        (transactions as u64 * rows_per_transaction) as f64 / started.elapsed().as_secs_f64();
    assert_eq!(
        gtid_seq(&servers.mariadb.gtid_binlog_pos().await),
        base + transactions as u64,
        "another transaction interleaved with the paced writer"
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    while !reader.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    done.store(true, Ordering::Relaxed);
    let resolution_ms = reader.await.unwrap();
    let visible = std::mem::take(&mut *visible.lock().unwrap());
    let mut latencies: Vec<f64> = committed
        .iter()
        .zip(visible.iter())
        .map(|(c, v)| match v {
            Some(v) if v >= c => (*v - *c).as_secs_f64() * 1000.0,
            Some(_) => 0.0,
            None => panic!("a transaction never became visible in MongoDB within 300 s"),
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    conn.disconnect().await.unwrap();
    Latency {
        target: rate,
        achieved,
        transactions,
        rows_per_transaction,
        p50: pick(0.5),
        p99: pick(0.99),
        max: *latencies.last().unwrap(),
        resolution_ms,
    }
}

/// A fresh sdl process while one transaction of `rows` rows goes through: peak RSS.
async fn big_transaction(servers: &mut Servers, rows: u64, report: &mut Report) {
    progress(&format!("memory: one transaction of {rows} rows"));
    servers.sdl.terminate(Duration::from_secs(60));
    servers.sdl.start();
    wait_ready(&servers.sdl, &servers.admin).await;
    let pid = servers.sdl.pid().unwrap();
    let idle = proc_mib(pid, "VmRSS").unwrap_or(0.0);
    let mut conn = servers.mariadb.root_conn().await;
    // The Sequence engine's seq_1_to_N tables exist in every database, once one is selected.
    conn.query_drop("USE app").await.unwrap();
    conn.query_drop(format!("CREATE TABLE app.bench_big {TABLE_DDL}"))
        .await
        .unwrap();
    let started = Instant::now();
    conn.query_drop(format!(
        "INSERT INTO app.bench_big SELECT seq, CONCAT('customer ', seq), \
         CONCAT('user', seq, '@example.com'), 'new', seq % 97, (seq % 1000000) / 100, \
         '2024-01-01 00:00:00' + INTERVAL seq SECOND, NULL FROM seq_1_to_{rows}"
    ))
    .await
    .unwrap();
    let source_seconds = started.elapsed().as_secs_f64();
    conn.disconnect().await.unwrap();
    let timeout = Duration::from_secs(env_u64("BENCH_BIG_TXN_TIMEOUT", 900));
    let mut appended_at = None;
    // Sampled while the process lives: it may exit on its own (then /proc has nothing to say).
    let mut peak: Option<f64> = None;
    let mut peak_at_wal: Option<f64> = None;
    let outcome = loop {
        if let Some(hwm) = proc_mib(pid, "VmHWM") {
            peak = Some(peak.map_or(hwm, |p| p.max(hwm)));
        }
        let metrics = servers.admin.metrics().await;
        // The CREATE TABLE is one record and one document, the big transaction the next.
        if appended_at.is_none() && counter(&metrics, "sdl_wal_appended_records_total") >= 2 {
            appended_at = Some(started.elapsed().as_secs_f64());
            peak_at_wal = peak;
        }
        if counter(&metrics, "sdl_documents_written_total") > rows {
            break format!(
                "in MongoDB {:.1} s after the INSERT began (source {source_seconds:.1} s, in the WAL at {:.1} s)",
                started.elapsed().as_secs_f64(),
                appended_at.unwrap_or(f64::NAN)
            );
        }
        if !servers.sdl.is_running() {
            let logs = servers.sdl.logs();
            let last = logs.lines().last().unwrap_or_default();
            let last = last.split(", labels:").next().unwrap_or_default();
            break format!(
                "sdl exited after {:.1} s (in the WAL at {:.1} s): {}",
                started.elapsed().as_secs_f64(),
                appended_at.unwrap_or(f64::NAN),
                last.chars().take(300).collect::<String>()
            );
        }
        if started.elapsed() > timeout {
            break format!(
                "not in MongoDB after {timeout:?} (BENCH_BIG_TXN_TIMEOUT; in the WAL at {:.1} s)",
                appended_at.unwrap_or(f64::NAN)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    report.memory.push(Memory {
        name: format!("one transaction of {rows} rows (fresh process)"),
        peak_mib: peak,
        note: format!(
            "idle before: {idle:.0} MiB; peak when the record was in the WAL: {}; {outcome}",
            peak_at_wal.map_or("?".into(), |p| format!("{p:.0} MiB"))
        ),
    });
}

async fn recovery(records: u64, report: &mut Report) {
    progress(&format!(
        "recovery: starting servers ({records} single-row transactions)"
    ));
    let (mariadb, mut mongo) = tokio::join!(MariaDb::start_with(MARIADB_ARGS), Mongo::start());
    let mut conn = mariadb.root_conn().await;
    conn.query_drop(format!("CREATE TABLE app.bench_rows {TABLE_DDL}"))
        .await
        .unwrap();
    conn.query_drop(WARM_UP_DDL).await.unwrap();
    let mut sdl = Sdl::new(&mariadb, &mongo, "current");
    let admin = Admin::new(sdl.admin_addr());
    sdl.start();
    wait_ready(&sdl, &admin).await;
    warm_up(&mut conn, &sdl, &admin).await;
    mongo.kill();
    progress("recovery: filling the WAL (MongoDB down)");
    // Autocommit: each INSERT of the loop is a transaction of its own, one WAL record each.
    conn.query_drop(format!(
        "BEGIN NOT ATOMIC DECLARE i INT DEFAULT 1; WHILE i <= {records} DO \
         INSERT INTO app.bench_rows VALUES (i, CONCAT('customer ', i), \
         CONCAT('user', i, '@example.com'), 'new', i % 97, (i % 1000000) / 100, \
         '2024-01-01 00:00:00' + INTERVAL i SECOND, NULL); SET i = i + 1; END WHILE; END"
    ))
    .await
    .unwrap();
    conn.disconnect().await.unwrap();
    let filling = Instant::now();
    loop {
        let unacked = admin
            .status()
            .await
            .and_then(|s| s["wal"]["unacked_records"].as_u64());
        if unacked.is_some_and(|n| n >= records) {
            break;
        }
        assert!(
            sdl.is_running() && filling.elapsed() < LONG,
            "sdl C stopped or took too long filling the WAL:\n{}",
            sdl.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wal = admin.status().await.unwrap()["wal"].clone();
    report.memory.push(Memory {
        name: format!("ingest of {records} single-row transactions (MongoDB down)"),
        peak_mib: proc_mib(sdl.pid().unwrap(), "VmHWM"),
        note: format!(
            "one WAL record each, group commits of a few ms; now {}",
            proc_mib(sdl.pid().unwrap(), "VmRSS").map_or("?".into(), |m| format!("{m:.0} MiB"))
        ),
    });
    sdl.terminate(Duration::from_secs(60));
    mongo.restart().await;

    progress("recovery: restarting sdl with MongoDB back");
    let spawned = Instant::now();
    sdl.start();
    let (mut ready_at, mut first_at) = (None, None);
    let drained_at = loop {
        let now = spawned.elapsed().as_secs_f64();
        if ready_at.is_none() && admin.ready().await {
            ready_at = Some(now);
        }
        let documents = counter(&admin.metrics().await, "sdl_documents_written_total");
        if first_at.is_none() && documents > 0 {
            first_at = Some(now);
        }
        if documents >= records {
            break now;
        }
        assert!(
            sdl.is_running() && spawned.elapsed() < LONG,
            "sdl C stopped or took too long:\n{}",
            sdl.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let peak = proc_mib(sdl.pid().unwrap(), "VmHWM");
    let log = std::fs::read_to_string(sdl.dir().join("sdl-2.log")).unwrap_or_default();
    let steps: Vec<String> = [
        "WAL open",
        "source connected",
        "sink connected",
        "admin endpoint up",
        "following the binlog",
    ]
    .iter()
    .map(|step| match log_offset(&log, step) {
        Some(s) => format!("{step} {s:.2} s"),
        None => format!("{step} ?"),
    })
    .collect();
    report.memory.push(Memory {
        name: format!("recovery with {records} unacknowledged WAL records"),
        peak_mib: peak,
        note: "restart → drained".into(),
    });
    let fmt = |s: Option<f64>| s.map_or("never".to_string(), |s| format!("{s:.2} s"));
    report.recovery = vec![
        (
            "unacknowledged WAL records at restart".into(),
            format!(
                "{} ({:.0} MiB of records, {:.0} MiB on disk)",
                wal["unacked_records"],
                wal["unacked_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
                wal["disk_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
            ),
        ),
        ("`sdl run` → /readyz 200".into(), fmt(ready_at)),
        (
            "start-up steps (sdl's log, from its first line)".into(),
            steps.join("; "),
        ),
        ("`sdl run` → first batch committed".into(), fmt(first_at)),
        (
            "`sdl run` → last record committed".into(),
            format!(
                "{drained_at:.2} s ({:.0} docs/s)",
                records as f64 / drained_at
            ),
        ),
    ];
}

fn print_report(report: &Report, rows: u64, big_rows: u64, records: u64, seconds: f64) {
    println!(
        "sizes: BENCH_ROWS={rows} BENCH_BIG_TXN_ROWS={big_rows} BENCH_RECOVERY_RECORDS={records}; whole run {seconds:.0} s"
    );
    if !report.rates.is_empty() {
        println!();
        println!("| catch-up | rows | seconds | rows/s | vs baseline | goal | CPU s |");
        println!("| --- | ---: | ---: | ---: | ---: | --- | ---: |");
        for r in &report.rates {
            println!(
                "| {} | {} | {:.2} | {:.0} | {} | {} | {} |",
                r.name,
                r.amount,
                r.seconds,
                r.rate(),
                r.baseline
                    .map_or(String::new(), |b| format!("{:.2}", r.rate() / b)),
                r.goal,
                r.cpu.map_or(String::new(), |c| format!("{c:.2}"))
            );
        }
    }
    if !report.latencies.is_empty() {
        println!();
        println!("| steady state: target rows/s | achieved rows/s | transactions × rows | p50 ms | p99 ms | max ms | reader resolution |");
        println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for l in &report.latencies {
            println!(
                "| {} | {:.0} | {} × {} | {:.1} | {:.1} | {:.1} | ~{:.1} ms |",
                l.target,
                l.achieved,
                l.transactions,
                l.rows_per_transaction,
                l.p50,
                l.p99,
                l.max,
                l.resolution_ms
            );
        }
    }
    if !report.memory.is_empty() {
        println!();
        println!("| memory: sdl process | peak RSS (VmHWM) | goal | notes |");
        println!("| --- | ---: | --- | --- |");
        for m in &report.memory {
            println!(
                "| {} | {} | < 200 MiB | {} |",
                m.name,
                m.peak_mib
                    .map_or("?".to_string(), |p| format!("{p:.0} MiB")),
                m.note
            );
        }
    }
    if !report.recovery.is_empty() {
        println!();
        println!("| recovery | value |");
        println!("| --- | --- |");
        for (k, v) in &report.recovery {
            println!("| {k} | {v} |");
        }
    }
}
