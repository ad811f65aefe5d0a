//! `sdl run`: wires the stages together and owns the process lifecycle.
//!
//! Start-up order is chosen so that a misconfiguration fails before anything is read: config, WAL
//! (and its lock), source (settings checked), sink (transactions checked, indexes ensured), then the
//! starting position. Only then do the ingester and the forwarder start, as two tasks joined by the
//! WAL and a watch channel carrying the WAL's last sequence. The admin endpoint and the health
//! watchers ([`health`]) start right after the WAL opens, before the checks and connections,
//! which can take connect timeouts when a server is away: the endpoint answers within moments of
//! start, `/readyz` 503 saying what start-up is waiting for.
//!
//! Shutdown (SIGTERM/SIGINT, and SIGHUP: sdl does not reload its configuration): both stages are
//! told to stop; the ingester flushes complete transactions to the WAL, the forwarder finishes or
//! abandons its batch. A second signal exits at once, which is still safe: the WAL is the truth
//! and both stages resume from it. A signal during start-up (a connection attempt may hang until
//! its `connect_timeout`) is logged and ends the process at once with exit 0: nothing runs yet
//! that needs stopping, and every WAL write is flushed when made.
//!
//! # Phases of `sdl run`
//! Each phase is a named function in its own module, in this order ([`run`]):
//! 1. load the configuration and start logging (`logging`);
//! 2. install the signal handlers (`signals`);
//! 3. open the WAL (`open_wal`, with `wal_dir`'s permission check);
//! 4. start the admin endpoint and the health watchers (`watchers`);
//! 5. the preflight checks; with `[lease]`, wait as a standby until this instance holds the lease
//!    (`lease`); then connect to the source and MongoDB, catch the WAL's acknowledged cursor up to
//!    MongoDB's offset (`connect`), and set aside a WAL from an earlier term (`lease`);
//! 6. repair damaged unacknowledged WAL records (`repair`);
//! 7. read what was relayed, check it against the source's history, and seed a new WAL's start
//!    position (`start_position`);
//! 8. run both stages until a stop signal or a failure, then shut down (`stages`).
//!
//! Every phase fails with a [`RunError`], which carries the process exit code.

use std::path::Path;

use sdl_wal::Wal;
use tracing::warn;

pub mod admin;
mod connect;
pub mod health;
pub mod identity;
mod lease;
mod logging;
mod open_wal;
pub mod preflight;
mod preflight_check;
mod preflight_list;
mod preflight_snapshot;
mod repair;
mod run_error;
mod signals;
mod stages;
mod start_position;
pub mod wal_dir;
mod watchers;

pub use logging::{init_logging, logs_are_json};
pub use run_error::RunError;

use watchers::{Publishers, Watchers};

use crate::config::Config;
use crate::event::SourceTransaction;

/// `sdl run`: the phases in order, then the admin endpoint and health watchers stopped.
pub async fn run(config_path: &Path) -> Result<(), RunError> {
    let config = Config::load(config_path)?;
    init_logging(config.log.format);
    for warning in &config.warnings {
        warn!("{warning}");
    }
    // Installed before anything can hang, so that a signal during start-up is honoured and logged.
    let startup = signals::watch_during_startup().map_err(RunError::failure)?;
    let wal = open_wal::open_wal(&config).await?;
    let (watchers, publishers) = watchers::start(&config, &wal).await?;
    let outcome = start_and_run(&config, wal, publishers, &watchers, startup).await;
    // Housekeeping tasks hold nothing that needs saving: every WAL write is flushed when made.
    watchers.stop().await;
    outcome
}

/// The start-up checks and connections, then both stages until shutdown or a failure.
async fn start_and_run(
    config: &Config,
    wal: Wal<SourceTransaction>,
    publishers: Publishers,
    watchers: &Watchers,
    startup: signals::StartupSignals,
) -> Result<(), RunError> {
    // A WAL with a position can be filled from the binlog while MongoDB is away; a new one needs
    // MongoDB's offset to know where to start.
    let wal_position = wal
        .ingest_position()?
        .map(|p| String::from_utf8_lossy(&p).into_owned());
    let wal_has_position = wal_position.is_some();
    connect::run_preflight(config, wal_has_position).await?;
    // A standby waits here, before it connects to the source or writes to MongoDB.
    let held = lease::acquire(config, &publishers.lease).await?;
    // With a lease MongoDB just answered; the stale-WAL check below needs it.
    let mut connections = connect::connect(
        config,
        wal_position.as_deref(),
        wal_has_position && held.is_none(),
    )
    .await?;
    if let (Some(held), Some(sink)) = (&held, connections.sink.as_mut()) {
        sink.set_fence(Some(held.fence.clone()));
    }
    // The acknowledged cursor first: records between it and MongoDB's offset are MongoDB's
    // already, damaged or not; repairing them would rewind the WAL behind the offset for good.
    let reconciled = connect::reconcile_acknowledged(connections.sink.as_ref(), &wal).await?;
    let superseded =
        lease::supersede_stale_wal(held.as_ref(), connections.sink.as_ref(), &wal).await?;
    connections.lease = held;
    repair::repair_damaged_records(&wal, &config.source, connections.flavor, reconciled).await?;
    let relayed =
        start_position::read_relayed(&wal, connections.flavor, connections.sink.as_ref()).await?;
    start_position::check_source_history(&mut connections, config, &relayed).await?;
    if !wal_has_position || superseded {
        start_position::seed_start_position(&mut connections, config, &wal, relayed).await?;
    }
    stages::run_stages(config, wal, connections, publishers, watchers, startup).await
}

/// `sdl check`: every preflight check as a table on stdout; exit 1 when any failed.
pub async fn check(config_path: &Path) -> Result<(), RunError> {
    let config = Config::load(config_path)?;
    let checks = preflight::run_checks(&config).await;
    for warning in &config.warnings {
        println!("WARN  config: {warning}");
    }
    print!("{}", preflight::render(&checks));
    let failed = checks
        .iter()
        .filter(|c| c.verdict == preflight::Verdict::Fail)
        .count();
    if failed > 0 {
        return Err(RunError::failure(anyhow::anyhow!(
            "{failed} preflight check(s) failed; each FAIL line above says how to fix it"
        )));
    }
    Ok(())
}
