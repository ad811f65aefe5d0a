//! The many-sources benchmark (issue 15, the capacity model): several sources relayed into ONE
//! store at once, against one source alone in the same run on the same servers. Throwaway
//! servers (`BENCH_SOURCES` MariaDB servers, one SecantusDB as a one-node replica set with
//! `--sync-on-commit`) and the release build of sdl (or `SDL_TEST_BINARY`), one sdl process per
//! source, each under its own `source.name`, all into one database. Run by
//! `scripts/bench sources [--rows N]`, which prints the machine first; prints Markdown tables,
//! progress to stderr (`# sources: ...`).
//!
//! Sizes (environment): `BENCH_ROWS` (default 200000) rows per source for the catch-up;
//! `BENCH_SOURCES` (default 3); `BENCH_STEADY_RATE` (default 1000) row changes/s per source and
//! `BENCH_STEADY_SECONDS` (default 10) for the steady phase; `BENCH_PHASES` (default
//! `catchup,steady`; steady runs on the catch-up's servers and needs it).
//!
//! 1. **Catch-up** (table `app.bench_rows` of `benches/e2e.rs`, `BENCH_ROWS` rows per source
//!    written as transactions of 1000 rows into every source's binlog before any sdl runs):
//!    - One source alone: an sdl (new WAL, `source.start` = the position before the rows) relays
//!      the first source into a database of its own; end to end from the `sdl run` spawn to its
//!      last document committed (`sdl_documents_written_total`, polled every 20 ms). That
//!      database is dropped afterwards.
//!    - All sources at once: one fresh sdl per source (new WALs, the same start positions),
//!      spawned together, into one shared database; each timed from its own spawn to its own
//!      last commit (per-source changes/s), and all of them from the first spawn to the last
//!      commit (aggregate changes/s). The ratio is the aggregate over the one source alone.
//!    - Per sdl: batches committed (`sdl_batches_committed_total`: one MongoDB transaction
//!      each), so transactions/s; its batch commit time (`sdl_batch_commit_seconds`, p50/p99 as
//!      the histogram's bucket bounds, a factor of 2 apart); its CPU seconds.
//! 2. **Steady** (the caught-up sdl processes): every source gets a paced writer committing one
//!    multi-row INSERT every 5 ms at `BENCH_STEADY_RATE` rows/s for `BENCH_STEADY_SECONDS`, all
//!    at once, recording when each commit returned; one reader polls the sources' offset
//!    documents (committed in the same MongoDB transaction as the change documents) every 2 ms
//!    and records when each transaction's GTID became visible. Latency = visible − commit, per
//!    source (e2e's method); with the batches each sdl committed in the window.

// The integration tests' harness: the benchmarks use a few of its helpers.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod common;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{MariaDb, Mongo, Sdl};
use futures_util::future::join_all;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mysql_async::prelude::Queryable;
use support::rows::{insert_statement, write_rows, TABLE_DDL};
use support::{counter, cpu_seconds, env_u64, gtid_seq, Admin, Histogram};

const POLL: Duration = Duration::from_millis(20);
const LONG: Duration = Duration::from_secs(3600);
const MARIADB_ARGS: &[&str] = &["--innodb-buffer-pool-size=256M"];
const COMMIT_HISTOGRAM: &str = "sdl_batch_commit_seconds";

fn progress(text: &str) {
    eprintln!("# sources: {text}");
}

/// One source: its server, the position before its rows, and the sdl relaying it (if any).
struct Source {
    name: String,
    mariadb: MariaDb,
    start: String,
    transactions: u64,
    relay: Option<(Sdl, Admin)>,
}

/// One sdl's catch-up: from its spawn to its last document committed.
struct CatchUp {
    name: String,
    seconds: f64,
    batches: u64,
    commits: Histogram,
    cpu: Option<f64>,
}

struct Steady {
    name: String,
    achieved: f64,
    transactions: usize,
    rows_per_transaction: u64,
    p50: f64,
    p99: f64,
    max: f64,
    batches: u64,
    commits: Histogram,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env_u64("BENCH_ROWS", 200_000);
    let count = env_u64("BENCH_SOURCES", 3).max(1) as usize;
    let rate = env_u64("BENCH_STEADY_RATE", 1000);
    let steady_seconds = env_u64("BENCH_STEADY_SECONDS", 10);
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "catchup,steady".into());
    let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);
    let started = Instant::now();
    if !phase("catchup") {
        println!("nothing to do: BENCH_PHASES has no catchup (steady needs it)");
        return;
    }

    progress(&format!(
        "starting {count} MariaDB servers and SecantusDB ({rows} rows per source)"
    ));
    let (mariadbs, mongo) = tokio::join!(
        join_all((0..count).map(|_| MariaDb::start_with(MARIADB_ARGS))),
        Mongo::start()
    );
    let mut sources: Vec<Source> = join_all(
        mariadbs
            .into_iter()
            .enumerate()
            .map(|(i, mariadb)| write_source(i, mariadb, rows)),
    )
    .await;

    progress("one source alone");
    let single_db = format!("{}_single", mongo.database);
    let single = catch_up(&mut sources[..1], &mongo, &single_db, rows).await;
    for source in &mut sources {
        if let Some((mut sdl, _)) = source.relay.take() {
            sdl.terminate(Duration::from_secs(60));
        }
    }
    mongo
        .client()
        .await
        .database(&single_db)
        .drop()
        .await
        .unwrap();

    progress(&format!("{count} sources at once into one database"));
    let all = catch_up(&mut sources, &mongo, &mongo.database, rows).await;

    let steady = if phase("steady") {
        progress(&format!(
            "steady: {rate} row changes/s per source for {steady_seconds} s, {count} sources"
        ));
        steady_state(&sources, &mongo, rate, steady_seconds).await
    } else {
        Vec::new()
    };

    println!(
        "sizes: BENCH_ROWS={rows} (per source) BENCH_SOURCES={count} BENCH_STEADY_RATE={rate} \
         BENCH_STEADY_SECONDS={steady_seconds}; whole run {:.0} s",
        started.elapsed().as_secs_f64()
    );
    print_catch_up(rows, &single, &all);
    print_steady(rate, &steady);
}

/// Creates the benchmark table on source `index` and writes its rows (no sdl running yet).
async fn write_source(index: usize, mariadb: MariaDb, rows: u64) -> Source {
    let mut conn = mariadb.root_conn().await;
    conn.query_drop(format!("CREATE TABLE app.bench_rows {TABLE_DDL}"))
        .await
        .unwrap();
    let start = mariadb.gtid_binlog_pos().await;
    let written = Instant::now();
    let transactions = write_rows(&mut conn, "app.bench_rows", 1, rows).await;
    let name = format!("s{}", index + 1);
    progress(&format!(
        "{name}: {rows} rows in {transactions} transactions written in {:.1} s",
        written.elapsed().as_secs_f64()
    ));
    assert_eq!(
        gtid_seq(&mariadb.gtid_binlog_pos().await) - gtid_seq(&start),
        transactions
    );
    conn.disconnect().await.unwrap();
    Source {
        name,
        mariadb,
        start,
        transactions,
        relay: None,
    }
}

/// Spawns one fresh sdl per source in `sources` (into `database`) and waits until each has
/// committed `rows` documents; leaves them running in `Source::relay`. The last entry is the
/// whole group (from the first spawn to the last commit) when there are several.
async fn catch_up(
    sources: &mut [Source],
    mongo: &Mongo,
    database: &str,
    rows: u64,
) -> Vec<CatchUp> {
    for (i, source) in sources.iter_mut().enumerate() {
        let lines = [
            format!("name = \"{}\"", source.name),
            format!("server_id = {}", 4300 + i),
        ];
        let database = format!("database = \"{database}\"");
        let settings = [
            ("source", lines[0].as_str()),
            ("source", lines[1].as_str()),
            ("sink", database.as_str()),
        ];
        let sdl = Sdl::with_settings(&source.mariadb, mongo, &source.start, &settings);
        let admin = Admin::new(sdl.admin_addr());
        source.relay = Some((sdl, admin));
    }
    let first_spawn = Instant::now();
    let mut spawned = Vec::new();
    for source in sources.iter_mut() {
        source.relay.as_mut().unwrap().0.start();
        spawned.push(Instant::now());
    }
    let mut done: Vec<Option<CatchUp>> = sources.iter().map(|_| None).collect();
    while done.iter().any(Option::is_none) {
        for (i, source) in sources.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let (sdl, admin) = source.relay.as_mut().unwrap();
            let metrics = admin.metrics().await;
            let now = Instant::now();
            if counter(&metrics, "sdl_documents_written_total") >= rows {
                done[i] = Some(CatchUp {
                    name: source.name.clone(),
                    seconds: (now - spawned[i]).as_secs_f64(),
                    batches: counter(&metrics, "sdl_batches_committed_total"),
                    commits: Histogram::read(&metrics, COMMIT_HISTOGRAM),
                    cpu: sdl.pid().and_then(cpu_seconds),
                });
                progress(&format!(
                    "{} caught up in {:.2} s",
                    source.name,
                    (now - spawned[i]).as_secs_f64()
                ));
                continue;
            }
            assert!(
                sdl.is_running() && first_spawn.elapsed() < LONG,
                "sdl of {} stopped or took too long:\n{}",
                source.name,
                sdl.logs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let last_commit = first_spawn.elapsed().as_secs_f64();
    let db = mongo.client().await.database(database);
    for source in sources.iter() {
        let offset = db
            .collection::<Document>("binlog_offsets")
            .find_one(doc! { "_id": &source.name })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no offset document for {}", source.name));
        assert_eq!(
            gtid_seq(offset.get_str("gtid").unwrap()),
            gtid_seq(&source.start) + source.transactions,
            "{}'s offset is not its last transaction",
            source.name
        );
    }
    let mut results: Vec<CatchUp> = done.into_iter().map(Option::unwrap).collect();
    if results.len() > 1 {
        results.push(CatchUp {
            name: "all".into(),
            seconds: last_commit,
            batches: results.iter().map(|r| r.batches).sum(),
            commits: Histogram::default(),
            cpu: results.iter().map(|r| r.cpu).sum(),
        });
    }
    results
}

/// The caught-up relays under a paced load at `rate` row changes/s per source, all at once.
async fn steady_state(sources: &[Source], mongo: &Mongo, rate: u64, seconds: u64) -> Vec<Steady> {
    const TICK: Duration = Duration::from_millis(5);
    const READ_EVERY: Duration = Duration::from_millis(2);
    let offsets = mongo.db().await.collection::<Document>("binlog_offsets");
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let mut conns = Vec::new();
    let mut bases = Vec::new();
    for source in sources {
        let mut conn = source.mariadb.root_conn().await;
        conn.query_drop(format!("CREATE TABLE app.bench_live {TABLE_DDL}"))
            .await
            .unwrap();
        bases.push(gtid_seq(&source.mariadb.gtid_binlog_pos().await));
        conns.push(conn);
    }
    // The DDL must be in MongoDB everywhere before timing starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_offsets(&offsets, &names).await != bases {
        assert!(
            Instant::now() < deadline,
            "the CREATE TABLEs did not reach MongoDB within 60 s"
        );
        tokio::time::sleep(POLL).await;
    }
    let rows_per_transaction = (rate * TICK.as_millis() as u64 / 1000).max(1);
    let transactions = (seconds * 1000 / TICK.as_millis() as u64) as usize;
    let before = join_all(sources.iter().map(relay_metrics)).await;

    // The reader: when each source's transactions became visible.
    let visible: Arc<Mutex<Vec<Vec<Option<Instant>>>>> =
        Arc::new(Mutex::new(vec![vec![None; transactions]; sources.len()]));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (visible, done, offsets) = (visible.clone(), done.clone(), offsets.clone());
        let (names, bases) = (names.clone(), bases.clone());
        tokio::spawn(async move {
            let mut seen = bases.clone();
            let mut polls = 0u64;
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let found = read_offsets(&offsets, &names).await;
                let now = Instant::now();
                polls += 1;
                {
                    let mut visible = visible.lock().unwrap();
                    for (i, seq) in found.into_iter().enumerate() {
                        for s in seen[i] + 1..=seq {
                            if let Some(slot) = visible[i].get_mut((s - bases[i] - 1) as usize) {
                                *slot = Some(now);
                            }
                        }
                        seen[i] = seen[i].max(seq);
                    }
                }
                if (0..seen.len()).all(|i| seen[i] >= bases[i] + transactions as u64) {
                    break;
                }
                tokio::time::sleep(READ_EVERY).await;
            }
            started.elapsed().as_secs_f64() * 1000.0 / polls.max(1) as f64
        })
    };

    let writers: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let mut committed = Vec::with_capacity(transactions);
                let mut ticks = tokio::time::interval(TICK);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let started = Instant::now();
                for k in 0..transactions as u64 {
                    ticks.tick().await;
                    let first = 1 + k * rows_per_transaction;
                    let sql = insert_statement("app.bench_live", first, rows_per_transaction);
                    conn.query_drop(sql).await.unwrap();
                    committed.push(Instant::now());
                }
                let rows = transactions as u64 * rows_per_transaction;
                let achieved = rows as f64 / started.elapsed().as_secs_f64();
                conn.disconnect().await.unwrap();
                (committed, achieved)
            })
        })
        .collect();
    let written: Vec<(Vec<Instant>, f64)> = join_all(writers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for (source, base) in sources.iter().zip(&bases) {
        assert_eq!(
            gtid_seq(&source.mariadb.gtid_binlog_pos().await),
            base + transactions as u64,
            "another transaction interleaved with {}'s paced writer",
            source.name
        );
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while !reader.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    done.store(true, Ordering::Relaxed);
    let resolution_ms = reader.await.unwrap();
    progress(&format!("steady: reader resolution ~{resolution_ms:.1} ms"));
    let after = join_all(sources.iter().map(relay_metrics)).await;
    let visible = std::mem::take(&mut *visible.lock().unwrap());
    let mut results = Vec::new();
    for (i, (committed, achieved)) in written.into_iter().enumerate() {
        let mut latencies: Vec<f64> = committed
            .iter()
            .zip(visible[i].iter())
            .map(|(c, v)| match v {
                Some(v) if v >= c => (*v - *c).as_secs_f64() * 1000.0,
                Some(_) => 0.0,
                None => panic!(
                    "a transaction of {} never became visible in MongoDB within 300 s",
                    names[i]
                ),
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        let pick =
            |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
        results.push(Steady {
            name: names[i].clone(),
            achieved,
            transactions,
            rows_per_transaction,
            p50: pick(0.5),
            p99: pick(0.99),
            max: *latencies.last().unwrap(),
            batches: counter(&after[i], "sdl_batches_committed_total")
                - counter(&before[i], "sdl_batches_committed_total"),
            commits: Histogram::read(&after[i], COMMIT_HISTOGRAM)
                .since(&Histogram::read(&before[i], COMMIT_HISTOGRAM)),
        });
    }
    results
}

async fn relay_metrics(source: &Source) -> HashMap<String, f64> {
    source.relay.as_ref().unwrap().1.metrics().await
}

/// The GTID sequence number of each named source's offset document (0 when absent), in order.
async fn read_offsets(offsets: &mongodb::Collection<Document>, names: &[String]) -> Vec<u64> {
    let found: Vec<Document> = match offsets.find(doc! { "_id": { "$in": names } }).await {
        Ok(cursor) => cursor.try_collect().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    names
        .iter()
        .map(|name| {
            found
                .iter()
                .find(|d| d.get_str("_id") == Ok(name.as_str()))
                .and_then(|d| d.get_str("gtid").ok().map(gtid_seq))
                .unwrap_or(0)
        })
        .collect()
}

fn ms(seconds: Option<f64>) -> String {
    seconds.map_or(String::new(), |s| format!("{:.0}", s * 1000.0))
}

fn commit_cell(h: &Histogram) -> String {
    if h.count <= 0.0 {
        return String::new();
    }
    format!(
        "{} / ≤{} / ≤{}",
        ms(h.mean()),
        ms(h.quantile_bound(0.5)),
        ms(h.quantile_bound(0.99))
    )
}

fn print_catch_up(rows: u64, single: &[CatchUp], all: &[CatchUp]) {
    let alone = rows as f64 / single[0].seconds;
    println!();
    println!(
        "| catch-up (rows already in each binlog) | rows | seconds | rows/s per source | \
         aggregate rows/s | vs 1 source alone | batches (MongoDB transactions) | transactions/s | \
         batch commit ms: mean / p50 / p99 | sdl CPU s |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |");
    let sources = all.len().saturating_sub(1).max(1);
    let line = |label: String, r: &CatchUp, amount: u64, rate: String, aggregate: Option<f64>| {
        let measured = aggregate.unwrap_or(amount as f64 / r.seconds);
        println!(
            "| {label} | {amount} | {:.2} | {rate} | {} | {:.2} | {} | {:.1} | {} | {} |",
            r.seconds,
            aggregate.map_or(String::new(), |a| format!("{a:.0}")),
            measured / alone,
            r.batches,
            r.batches as f64 / r.seconds,
            commit_cell(&r.commits),
            r.cpu.map_or(String::new(), |c| format!("{c:.2}"))
        );
    };
    let r = &single[0];
    let label = format!("1 source alone ({})", r.name);
    line(label, r, rows, format!("{alone:.0}"), Some(alone));
    for r in all {
        if r.name == "all" {
            let mean = all[..sources]
                .iter()
                .map(|r| rows as f64 / r.seconds)
                .sum::<f64>()
                / sources as f64;
            let label = format!("{sources} sources at once: all (first spawn → last commit)");
            let aggregate = rows as f64 * sources as f64 / r.seconds;
            let amount = rows * sources as u64;
            line(
                label,
                r,
                amount,
                format!("{mean:.0} (mean)"),
                Some(aggregate),
            );
        } else {
            let label = format!("{sources} sources at once: {}", r.name);
            line(
                label,
                r,
                rows,
                format!("{:.0}", rows as f64 / r.seconds),
                None,
            );
        }
    }
}

fn print_steady(rate: u64, steady: &[Steady]) {
    if steady.is_empty() {
        return;
    }
    println!();
    println!(
        "| steady: source ({} at once) | target rows/s | achieved rows/s | transactions × rows | \
         p50 ms | p99 ms | max ms | batches (MongoDB transactions) | transactions/s | \
         batch commit ms: mean / p50 / p99 |",
        steady.len()
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for s in steady {
        let seconds = s.transactions as f64 * s.rows_per_transaction as f64 / s.achieved;
        println!(
            "| {} | {rate} | {:.0} | {} × {} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {} |",
            s.name,
            s.achieved,
            s.transactions,
            s.rows_per_transaction,
            s.p50,
            s.p99,
            s.max,
            s.batches,
            s.batches as f64 / seconds,
            commit_cell(&s.commits)
        );
    }
}
