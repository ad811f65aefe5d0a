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
use crate::support::{change_documents, wait_for_offset, Mongo, Rng, Sdl};
use mysql_async::prelude::Queryable;

use crate::soak::faults::{Rig, Timing};

const DEFAULT_SECONDS: u64 = 150;
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

/// The sink URL through `proxy`: a direct connection (the driver must not discover the real
/// address from the replica set's `hello` and go around the proxy).
fn via_proxy(uri: &str, proxy: u16) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap();
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let userinfo = authority
        .split('/')
        .next()
        .unwrap()
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| {
            !p.is_empty() && !p.starts_with("replicaSet=") && !p.starts_with("directConnection=")
        })
        .collect();
    params.push("directConnection=true");
    format!(
        "{scheme}://{userinfo}127.0.0.1:{proxy}/?{}",
        params.join("&")
    )
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
    let start = source.primary.gtid_binlog_pos().await;
    let mut conn = source.primary.root_conn().await;
    for table in schema::tables() {
        conn.query_drop(table.create).await.unwrap();
    }
    drop(conn);
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
        .map_or(mongo.uri().to_string(), |p| via_proxy(mongo.uri(), p.port));
    let urls: Vec<String> = source_proxies
        .iter()
        .map(|p| format!("\"{}\"", source.primary.sdl_url_via(p.port)))
        .collect();
    let source_url = format!("url = [{}]", urls.join(", "));
    let sink = format!("url = \"{sink_url}\"");
    let mut sdl = Sdl::with_settings(
        &source.primary,
        &mongo,
        &start,
        &[
            ("source", &source_url),
            ("source", "heartbeat_interval = \"1s\""),
            ("source", "connect_timeout = \"2s\""),
            ("sink", &sink),
            ("sink", "transactions = \"on\""),
            ("sink", "connect_timeout = \"2s\""),
            ("sink", "retry_max_delay = \"5s\""),
        ],
    );
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
    wait_for_offset(&rig.mongo, &last, DRAIN_TIMEOUT, &rig.sdl).await;
    let drain = drain_started.elapsed();
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
    let mut docs = change_documents(&rig.mongo).await;
    check::commit_order(&mut docs, &binlog);
    let mut findings = check::Findings::default();
    check::against_binlog(&docs, &binlog, &[&binlog, &other], &mut findings);
    let rebuilt = check::rebuild(&docs, &mut findings);
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
    assert_eq!(
        log.kinds.len(),
        log.expected_kinds,
        "every kind of fault was injected: {:?}",
        log.kinds.keys()
    );
}
