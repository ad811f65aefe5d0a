//! The soak test (issue #7): "no single transaction will be lost", as a proof anyone can run.
//!
//! A writer keeps a mixed stream of transactions going into a MariaDB primary that a replica
//! follows by GTID (seven tables covering every type family, single-row and multi-row
//! transactions, a 200,000-row transaction, primary-key updates, deletes, ALTER TABLE in the
//! middle) while a fault injector, at random moments, kills and terminates sdl, kills MongoDB for
//! a while, restarts the primary, kills the primary and promotes the replica (sdl follows both
//! servers through `source.url`), and cuts the network to either side (refused and blackholed,
//! through TCP proxies). After each fault sdl must catch up by itself. At the end, with the writer
//! stopped and sdl drained, MongoDB is checked against the source: against the binlog as
//! `mariadb-binlog` reads it, transaction by transaction (the current primary's binlog for the
//! history, every server's for the coordinates documents carry), and against the tables, value
//! for value (see `check.rs`).
//!
//! `SDL_SOAK_SECONDS` (default 150) is how long faults are injected; `SDL_SOAK_SEED` replays a
//! run's random choices (the seed is printed); `SDL_SOAK_MONGO_CACHE` sets SecantusDB's cache
//! (default 256M). `scripts/soak --minutes N` runs it longer. docs/reliability.md has the details.
//!
//! **From a snapshot** (`SDL_SOAK_FROM_SNAPSHOT=1`, `scripts/soak --from-snapshot`): before sdl
//! first starts, every table is filled with `SDL_SOAK_SNAPSHOT_ROWS` rows (default 20,000 each);
//! sdl starts at the position after them with `source.snapshot = "initial"` over those tables
//! (chunks of 500 rows, a rows/s limit that spreads the snapshot over about half the fault
//! phase, so that faults and the workload's changes hit it), and the final check rebuilds every
//! table from the snapshot documents and the change documents (see `check.rs`). The history
//! checked against the binlog starts after the rows filled in.

mod check;
mod faults;
mod monitor;
mod schema;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::proxy::Proxy;
use crate::support::replication::Replication;
use crate::support::{all_documents, wait_for_offset, Mongo, Rng, Sdl};
use mysql_async::prelude::Queryable;

use crate::soak::faults::{Rig, Timing};

const DEFAULT_SECONDS: u64 = 150;
/// Rows per table before sdl first starts, in the soak from a snapshot.
const DEFAULT_SNAPSHOT_ROWS: u64 = 20_000;
/// `source.snapshot_chunk_rows` of the soak from a snapshot: many chunks, many windows.
const SNAPSHOT_CHUNK_ROWS: u64 = 500;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

/// `mongodb://[user@]host:port/...` → (host, port) of the first host.
fn first_host(uri: &str) -> Option<(String, u16)> {
    let rest = uri.split_once("://")?.1;
    let hosts = rest.split(['/', '?']).next()?;
    let hosts = hosts.rsplit_once('@').map_or(hosts, |(_, h)| h);
    let (host, port) = hosts.split(',').next()?.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

/// The soak from a snapshot: `first_ids` says which ids each table held when sdl first started.
struct FromSnapshot {
    first_ids: std::collections::BTreeMap<&'static str, i64>,
    rows: u64,
    rows_per_second: u64,
}

/// sdl's `/status`; None while it does not answer (within 2 s).
fn status_of(sdl: &Sdl) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let body = agent
        .get(&format!("http://{}/status", sdl.admin_addr()))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    serde_json::from_str(&body).ok()
}

/// Waits until sdl's snapshot is done (`/status` `snapshot.state` idle, no table left) and every
/// WAL record is acknowledged by MongoDB (the last chunk may follow the last transaction).
async fn wait_snapshot_done(sdl: &Sdl) {
    crate::support::wait_until(
        "sdl's snapshot to finish and its WAL to drain",
        DRAIN_TIMEOUT,
        || async {
            let status = status_of(sdl)?;
            let snapshot = &status["snapshot"];
            (snapshot["state"] == "idle"
                && snapshot["tables_left"].as_u64() == Some(0)
                && status["wal"]["unacked_records"].as_u64() == Some(0))
            .then_some(())
        },
    )
    .await;
}

/// The binlog files `server` has now (`SHOW BINARY LOGS`).
async fn binlog_files(server: &crate::support::MariaDb) -> Vec<String> {
    let mut conn = server.root_conn().await;
    let files = conn
        .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
            row.get::<String, _>(0).unwrap()
        })
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_every_change_arrives_exactly_once_through_faults() {
    let seconds = env_u64("SDL_SOAK_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let seed = env_u64("SDL_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000_007
    });
    eprintln!("soak: seed {seed} (replay with SDL_SOAK_SEED={seed}), {seconds} s of faults");
    let mut rng = Rng::new(seed);
    let run_started = Instant::now();

    // sdl commits a large source transaction in batch-sized MongoDB transactions, so the harness's
    // small cache (256 MiB) is enough; `SDL_SOAK_MONGO_CACHE` sets another.
    let cache_size = std::env::var("SDL_SOAK_MONGO_CACHE").unwrap_or_else(|_| "256M".into());
    let cache: Vec<&str> = if std::env::var_os("SDL_TEST_MONGODB_URI").is_some() {
        Vec::new()
    } else {
        vec!["--cache-size", &cache_size]
    };
    let (source, mongo) = tokio::join!(
        Replication::start_with(&["--max-allowed-packet=64M"]),
        Mongo::start_with(&cache)
    );
    // Where the pair's common history begins: the servers' own bootstrap (users, `app`) is not
    // in the replica's binlog, so sdl starts here and the check compares everything after it.
    let pair_start = source.primary.gtid_binlog_pos().await;
    let mut conn = source.primary.root_conn().await;
    for table in schema::tables() {
        conn.query_drop(table.create).await.unwrap();
    }
    drop(conn);
    let from_snapshot = if std::env::var("SDL_SOAK_FROM_SNAPSHOT").is_ok_and(|v| v == "1") {
        let rows = env_u64("SDL_SOAK_SNAPSHOT_ROWS").unwrap_or(DEFAULT_SNAPSHOT_ROWS);
        let filled = Instant::now();
        let first_ids = writer::prefill(&source.primary.root_url(), rows, rng.next()).await;
        let total = rows * first_ids.len() as u64;
        // About half the fault phase, so that faults hit the snapshot.
        let rows_per_second = (total / (seconds / 2).max(1)).max(100);
        eprintln!(
            "soak: from a snapshot: {rows} rows in each of {} tables written in {:.1} s; snapshot limited to {rows_per_second} rows/s",
            first_ids.len(),
            filled.elapsed().as_secs_f64()
        );
        Some(FromSnapshot {
            first_ids,
            rows,
            rows_per_second,
        })
    } else {
        None
    };
    // Where sdl starts and the history checked begins: the pair's common start, or (from a
    // snapshot) after the rows written before sdl, which reach MongoDB as snapshot documents.
    let start = match &from_snapshot {
        Some(_) => source.primary.gtid_binlog_pos().await,
        None => pair_start,
    };
    // sdl's path to each server, primary first: the network faults cut these, not replication.
    let source_proxies = vec![
        Proxy::start(source.primary.port).await,
        Proxy::start(source.replica.port).await,
    ];
    let sink_proxy = match first_host(mongo.uri()) {
        Some((host, port)) if host == "127.0.0.1" || host == "localhost" => {
            Some(Proxy::start(port).await)
        }
        _ => None,
    };
    let sink_url = sink_proxy
        .as_ref()
        .map_or(mongo.uri().to_string(), |p| mongo.uri_via_proxy(p.port));
    let urls: Vec<String> = source_proxies
        .iter()
        .map(|p| format!("\"{}\"", source.primary.sdl_url_via(p.port)))
        .collect();
    let source_url = format!("url = [{}]", urls.join(", "));
    let sink = format!("url = \"{sink_url}\"");
    let mut settings: Vec<(&str, String)> = vec![
        ("source", source_url),
        ("source", "heartbeat_interval = \"1s\"".into()),
        ("source", "connect_timeout = \"2s\"".into()),
        ("sink", sink),
        ("sink", "transactions = \"on\"".into()),
        ("sink", "connect_timeout = \"2s\"".into()),
        ("sink", "retry_max_delay = \"5s\"".into()),
    ];
    if let Some(snapshot) = &from_snapshot {
        let tables: Vec<String> = snapshot
            .first_ids
            .keys()
            .map(|t| format!("\"app.{t}\""))
            .collect();
        settings.extend([
            ("source", "snapshot = \"initial\"".to_string()),
            (
                "source",
                format!("snapshot_tables = [{}]", tables.join(", ")),
            ),
            (
                "source",
                format!("snapshot_chunk_rows = {SNAPSHOT_CHUNK_ROWS}"),
            ),
            (
                "source",
                format!("snapshot_rows_per_second = {}", snapshot.rows_per_second),
            ),
        ]);
    }
    let settings: Vec<(&str, &str)> = settings.iter().map(|(s, l)| (*s, l.as_str())).collect();
    let mut sdl = Sdl::with_settings(&source.primary, &mongo, &start, &settings);
    sdl.start();
    sdl.wait_following().await;
    let monitor = monitor::Monitor::start(sdl.admin_addr());

    // The writer: the very large transaction early in the CI run, every 4 minutes in a long one.
    let fault_time = Duration::from_secs(seconds);
    let big_at = if seconds < 600 {
        vec![Duration::from_secs(seconds * (15 + rng.below(25)) / 100)]
    } else {
        (0..)
            .map(|i| Duration::from_secs(seconds / 10 + 240 * i))
            .take_while(|at| *at < fault_time)
            .collect()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let control = writer::Control::new(source.primary.root_url());
    let writer = tokio::spawn(writer::run(
        writer::Plan {
            seed: rng.next(),
            first_ids: from_snapshot
                .as_ref()
                .map(|s| s.first_ids.clone())
                .unwrap_or_default(),
            big_at,
            alter_every: Duration::from_secs(if seconds < 600 { 9 } else { 30 }),
            pause_max: Duration::from_millis(50),
        },
        control.clone(),
        stop.clone(),
    ));

    let mut rig = Rig {
        source,
        primary_index: 0,
        mongo,
        sdl,
        source_proxies,
        sink_proxy,
        writer: control,
    };
    let timing = Timing::for_run(seconds);
    let faults_started = Instant::now();
    let log = faults::run(&mut rig, &mut rng, fault_time, &timing, || {
        !writer.is_finished()
    })
    .await;
    let fault_phase = faults_started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let written = writer.await.expect("the writer panicked");

    // Drain: the offset reaches the source's last position, and sdl stops cleanly.
    let drain_started = Instant::now();
    let last = rig.source.primary.gtid_binlog_pos().await;
    if from_snapshot.is_some() {
        wait_snapshot_done(&rig.sdl).await;
    }
    wait_for_offset(&rig.mongo, &last, DRAIN_TIMEOUT, &rig.sdl).await;
    if from_snapshot.is_some() {
        wait_snapshot_done(&rig.sdl).await;
    }
    let drain = drain_started.elapsed();
    let snapshot_metrics = from_snapshot.as_ref().map(|_| {
        let metric = |name: &str| rig.sdl.metric(name);
        (
            metric("sdl_snapshot_chunks_total"),
            metric("sdl_snapshot_chunks_discarded_total"),
        )
    });
    let peaks = monitor.finish();
    let final_run = rig.sdl.status();
    let status = rig.sdl.terminate(Duration::from_secs(60));
    assert!(
        status.success(),
        "final SIGTERM: {status}\n{}",
        rig.sdl.logs()
    );

    // The check.
    let check_started = Instant::now();
    // The history: the current primary's binlog after the pair's common start. Every server's
    // binlog: the coordinates documents carry (those read from the other server name its events).
    let binlog = check::read_binlog(
        &rig.source.primary.datadir(),
        &binlog_files(&rig.source.primary).await,
        check::Read::History,
        &|gtid| faults::covers(&start, gtid),
    );
    let other = check::read_binlog(
        &rig.source.replica.datadir(),
        &binlog_files(&rig.source.replica).await,
        check::Read::Coordinates,
        &|_| true,
    );
    let (snapshot_docs, changes): (Vec<_>, Vec<_>) = all_documents(&rig.mongo)
        .await
        .into_iter()
        .partition(|d| d.get_str("op") == Ok("snapshot"));
    let mut findings = check::Findings::default();
    check::against_binlog(&changes, &binlog, &[&binlog, &other], &mut findings);
    check::snapshot_documents(&snapshot_docs, &binlog, &mut findings);
    let mut docs = changes;
    docs.extend(snapshot_docs);
    check::commit_order(&mut docs, &binlog);
    let first_ids = from_snapshot
        .as_ref()
        .map(|s| s.first_ids.clone())
        .unwrap_or_default();
    let rebuilt = check::rebuild(&docs, &first_ids, &mut findings);
    let mut conn = rig.source.primary.root_conn().await;
    drop(docs);
    check::against_tables(&mut conn, &rebuilt, &mut findings).await;
    let check_time = check_started.elapsed();

    let logs = rig.sdl.logs();
    eprintln!("\n=== soak summary (seed {seed}) ===");
    eprintln!(
        "duration: {:.0} s total, {:.0} s of faults and writes, drain {:.1} s, check {:.1} s",
        run_started.elapsed().as_secs_f64(),
        fault_phase.as_secs_f64(),
        drain.as_secs_f64(),
        check_time.as_secs_f64()
    );
    eprintln!(
        "source: {} transactions in the binlog, {} row events ({} in app tables), {} DDL statements; writer: {} transactions committed ({} rows), {} outcome unknown, {} rolled back, {} reconnects, {} ALTERs",
        binlog.transactions.len(),
        binlog.rows,
        binlog.app_rows,
        binlog.statements,
        written.committed,
        written.committed_rows,
        written.unknown_outcome,
        written.rolled_back,
        written.reconnects,
        written.alters
    );
    eprintln!("very large transactions: {:?}", written.big);
    eprintln!(
        "MongoDB: {} row change documents, {} DDL documents ({} ALTER); {} rows and {} values compared with MariaDB",
        findings.row_documents,
        findings.ddl_documents,
        findings.alter_documents,
        findings.rows_compared,
        findings.values_compared
    );
    if let Some(snapshot) = &from_snapshot {
        let (chunks, discarded) = snapshot_metrics.unwrap_or_default();
        eprintln!(
            "snapshot: {} rows in each of {} tables before sdl started; {} snapshot documents {:?} (snapshot ids {:?}); sdl's last run: {chunks} chunks, {discarded} discarded; {} snapshot log lines",
            snapshot.rows,
            snapshot.first_ids.len(),
            findings.snapshot_documents.values().sum::<u64>(),
            findings.snapshot_documents,
            findings.snapshot_ids,
            logs.lines().filter(|l| l.contains("sdl::snapshot")).count()
        );
    }
    eprintln!("faults (count, total length, slowest recovery):");
    for (fault, (count, lasted, recovery)) in &log.kinds {
        eprintln!(
            "  {fault:<40} {count:>3}  {:>7.1} s  {:>6.1} s",
            lasted.as_secs_f64(),
            recovery.as_secs_f64()
        );
    }
    for skipped in &log.skipped {
        eprintln!("  skipped: {skipped}");
    }
    eprintln!(
        "peaks: WAL {} unacknowledged records / {:.1} MiB; end-to-end lag {:.0} s; source lag {:.0} s ({} samples)",
        peaks.unacked_records,
        peaks.unacked_bytes as f64 / 1048576.0,
        peaks.end_to_end_lag_seconds,
        peaks.source_lag_seconds,
        peaks.samples
    );
    let switches = logs
        .matches("source failover: following another server")
        .count();
    eprintln!(
        "primary failovers: {}; sdl switched servers by itself {switches} times in all (its log), {} in its last run (/status ingest.source_failovers); primary now: source.url #{}",
        log.failovers.len(),
        final_run["ingest"]["source_failovers"],
        rig.primary_index
    );
    for f in &log.failovers {
        eprintln!(
            "  source.url #{} killed, #{} promoted; sdl followed the killed primary{} and followed the promoted server {:.1} s after the kill",
            f.killed,
            f.promoted,
            if f.steered {
                " (steered to it: an earlier fault had left it on the replica)"
            } else {
                ""
            },
            f.sdl_switched_after.as_secs_f64()
        );
    }
    let restarts: u32 = log
        .kinds
        .iter()
        .filter(|(f, _)| matches!(f, faults::Fault::SdlKill | faults::Fault::SdlTerm))
        .map(|(_, (count, ..))| count)
        .sum();
    eprintln!(
        "sdl: {} runs, {} batches left pending by a crash and reconciled, {} ERROR lines in its logs",
        1 + restarts,
        logs.matches("staging: reconciled a batch").count(),
        logs.lines().filter(|l| l.contains(" ERROR ")).count()
    );

    // The binlog count is not vacuous: it holds at least every row the writer saw committed,
    // and exactly those when no commit had an unknown outcome.
    if written.unknown_outcome == 0 {
        assert_eq!(
            binlog.app_rows, written.committed_rows,
            "row events in the binlog vs rows the writer committed"
        );
    } else {
        assert!(
            binlog.app_rows >= written.committed_rows,
            "row events in the binlog ({}) vs rows the writer committed ({})",
            binlog.app_rows,
            written.committed_rows
        );
    }
    assert!(
        findings.problems.is_empty(),
        "MongoDB does not match the source ({} problems):\n{}",
        findings.problems.len(),
        findings.problems.join("\n")
    );
    let largest = binlog.transactions.values().map(|(rows, _)| *rows).max();
    assert!(
        largest >= Some(writer::BIG_ROWS),
        "the binlog holds a transaction of {} rows at least (largest: {largest:?})",
        writer::BIG_ROWS
    );
    assert!(findings.alter_documents > 0, "ALTERs ran during the soak");
    if let Some(snapshot) = &from_snapshot {
        for table in snapshot.first_ids.keys() {
            assert!(
                findings
                    .snapshot_documents
                    .get(*table)
                    .is_some_and(|n| *n > 0),
                "app.{table} held {} rows before sdl started, and has no snapshot document",
                snapshot.rows
            );
        }
    } else {
        assert!(
            findings.snapshot_documents.is_empty(),
            "snapshot documents without a snapshot: {:?}",
            findings.snapshot_documents
        );
    }
    assert_eq!(
        log.kinds.len(),
        log.expected_kinds,
        "every kind of fault was injected: {:?}",
        log.kinds.keys()
    );
}
