//! The running phase: both stages until a stop signal or a stage's failure, then the shutdown.
//!
//! The ingester and the forwarder run as two tasks joined by the WAL and a watch channel carrying
//! the WAL's last sequence; a third task prunes acknowledged WAL records. systemd (Type=notify) is
//! told the service is ready only now, once every start-up check has passed and both stages run.
//!
//! Shutdown (SIGTERM/SIGINT, and SIGHUP: sdl does not reload its configuration): both stages are
//! told to stop; the ingester flushes complete transactions to the WAL, the forwarder finishes or
//! abandons its batch. A second signal, or `shutdown_timeout`, exits at once, which is still safe:
//! the WAL is the truth and both stages resume from it. The exit reports the first stage's
//! failure (the ingester's before the forwarder's).
//!
//! With `[lease]`, losing the lease (found taken over at a renewal: `super::lease`) stops
//! both stages the same way and exits 6, before any other failure; a lease still held at a stop
//! is released so that the standby takes over at once.
//! A stage's failure while the lease is held is checked against the lease first: a lease lost
//! meanwhile is reported instead (exit 6).

use std::time::Duration;

use sdl_wal::Wal;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tracing::{error, info, warn};

use super::connect::Connections;
use super::lease::{lease_lost_error, Held};
use super::signals::{Signals, StartupSignals};
use super::watchers::{Publishers, Watchers};
use super::RunError;
use crate::config::Config;
use crate::event::SourceTransaction;
use crate::forward::{self, ForwardError};
use crate::sink::lease::Fence;
use crate::sink::SinkError;
use crate::source::{self, FragmentLimits, SourceError};

/// The running stages' tasks.
struct Running {
    ingester: JoinHandle<Result<(), SourceError>>,
    forwarder: JoinHandle<Result<(), ForwardError>>,
    retention: JoinHandle<()>,
}

/// How each stage ended, once it has.
#[derive(Default)]
struct Ended {
    ingester: Option<Result<Result<(), SourceError>, JoinError>>,
    forwarder: Option<Result<Result<(), ForwardError>, JoinError>>,
    /// The lease was lost (`[lease]`).
    lease: Option<SinkError>,
}

/// Runs both stages until a stop signal or a stage's failure, then shuts them down.
pub(super) async fn run_stages(
    config: &Config,
    wal: Wal<SourceTransaction>,
    mut connections: Connections,
    publishers: Publishers,
    watchers: &Watchers,
    startup: StartupSignals,
) -> Result<(), RunError> {
    let mut lease = connections.lease.take();
    let mut running = spawn_stages(
        config,
        wal,
        connections,
        publishers,
        lease.as_ref().map(|held| held.fence.clone()),
        watchers.shutdown_rx.clone(),
    )?;
    let watchdog = notify_ready();
    let mut signals = startup.hand_over().await.map_err(RunError::failure)?;

    let mut ended = Ended::default();
    wait_for_stop(&mut signals, &mut running, &mut lease, &mut ended).await;
    watchers.shutdown_tx.send_replace(true);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    drain(
        config.shutdown_timeout,
        &mut signals,
        &mut running,
        &mut ended,
    )
    .await;

    if let (None, Some(held)) = (&ended.lease, lease.as_mut()) {
        if ended.failed() {
            ended.lease = held.lost_meanwhile(config.lease.duration).await;
        }
    }
    let outcome = ended.outcome();
    running.retention.abort();
    if let Some(held) = lease {
        let lost = matches!(&outcome, Err(e) if e.code == crate::ExitCode::LeaseLost);
        held.release(lost).await;
    }
    if outcome.is_ok() {
        info!(target: "sdl::service", "stopped cleanly");
    }
    outcome
}

fn spawn_stages(
    config: &Config,
    wal: Wal<SourceTransaction>,
    connections: Connections,
    publishers: Publishers,
    fence: Option<Fence>,
    shutdown_rx: watch::Receiver<bool>,
) -> Result<Running, RunError> {
    let Connections {
        conn, flavor, sink, ..
    } = connections;
    let (appended_tx, appended_rx) = watch::channel(wal.last_seq()?);
    let ingester = tokio::spawn(source::run(
        source::Ingester {
            source: config.source.clone(),
            wal_config: config.wal.clone(),
            fragments: fragment_limits(&config.sink),
            wal: wal.clone(),
            appended: appended_tx,
            state: publishers.ingest,
        },
        Some((conn, flavor)),
        shutdown_rx.clone(),
    ));
    let forwarder = tokio::spawn(forward::run(forward::Forwarder {
        sink,
        connect: crate::sink::MongoConnect {
            cfg: config.sink.clone(),
            source_name: config.source.name.clone(),
            fence,
        },
        source_name: config.source.name.clone(),
        wal: wal.clone(),
        cfg: config.sink.clone(),
        appended: appended_rx,
        shutdown: shutdown_rx.clone(),
        breaker: publishers.breaker,
        status: publishers.forward,
    }));
    let retention = tokio::spawn(prune_periodically(
        wal,
        config.wal.retention(),
        config.wal.prune_interval,
        shutdown_rx,
    ));
    Ok(Running {
        ingester,
        forwarder,
        retention,
    })
}

/// systemd (Type=notify): ready once every start-up check has passed and both stages run; the
/// watchdog, when enabled, is fed at half its interval.
fn notify_ready() -> Option<JoinHandle<()>> {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    sd_notify::watchdog_enabled().map(|interval| {
        tokio::spawn(async move {
            loop {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                tokio::time::sleep(interval / 2).await;
            }
        })
    })
}

/// Waits for a stop signal, for either stage to end, or for the lease to be lost.
async fn wait_for_stop(
    signals: &mut Signals,
    running: &mut Running,
    lease: &mut Option<Held>,
    ended: &mut Ended,
) {
    tokio::select! {
        e = lease_lost(lease) => ended.lease = Some(e),
        _ = signals.sigterm.recv() => info!(target: "sdl::service", "SIGTERM: shutting down"),
        _ = signals.sigint.recv() => info!(target: "sdl::service", "SIGINT: shutting down"),
        _ = signals.sighup.recv() => info!(target: "sdl::service", "SIGHUP: shutting down (sdl does not reload its configuration: start it again to apply a change)"),
        r = &mut running.ingester => ended.ingester = Some(r),
        r = &mut running.forwarder => ended.forwarder = Some(r),
    }
}

/// Resolves when the lease held is lost; never without one.
async fn lease_lost(lease: &mut Option<Held>) -> SinkError {
    match lease {
        Some(held) => match (&mut held.lost).await {
            Ok(e) => e,
            // The renewal task is gone without a verdict (aborted at a stop): nothing to report.
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Waits for both stages to stop, unless a second signal or `shutdown_timeout` comes first.
async fn drain(
    shutdown_timeout: Duration,
    signals: &mut Signals,
    running: &mut Running,
    ended: &mut Ended,
) {
    let drain = async {
        if ended.ingester.is_none() {
            ended.ingester = Some((&mut running.ingester).await);
        }
        if ended.forwarder.is_none() {
            ended.forwarder = Some((&mut running.forwarder).await);
        }
    };
    tokio::select! {
        _ = drain => {}
        _ = signals.sigterm.recv() => warn!(target: "sdl::service", "second signal: exiting now; the WAL holds everything read so far"),
        _ = signals.sigint.recv() => warn!(target: "sdl::service", "second signal: exiting now; the WAL holds everything read so far"),
        _ = signals.sighup.recv() => warn!(target: "sdl::service", "second signal: exiting now; the WAL holds everything read so far"),
        _ = tokio::time::sleep(shutdown_timeout) => warn!(target: "sdl::service", timeout = ?shutdown_timeout, "shutdown timed out (shutdown_timeout); exiting"),
    }
}

impl Ended {
    /// Whether a stage ended with an error.
    fn failed(&self) -> bool {
        matches!(&self.ingester, Some(Ok(Err(_)) | Err(_)))
            || matches!(&self.forwarder, Some(Ok(Err(_)) | Err(_)))
    }

    /// The run's outcome: a lost lease first, then the ingester's failure, else the forwarder's.
    fn outcome(self) -> Result<(), RunError> {
        let mut outcome = Ok(());
        if let Some(e) = self.lease {
            error!(target: "sdl::service", error = %e, "lost the lease: both stages stopped; exiting with code 6 (started again, this instance waits as a standby)");
            outcome = Err(lease_lost_error(e));
        }
        if let Some(result) = self.ingester {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error!(target: "sdl::service", error = %e, "ingester stopped");
                    if outcome.is_ok() {
                        outcome = Err(RunError::from(e));
                    }
                }
                Err(e) => {
                    if outcome.is_ok() {
                        outcome = Err(RunError::failure(anyhow::anyhow!(
                            "ingester task failed: {e}"
                        )))
                    }
                }
            }
        }
        if let Some(result) = self.forwarder {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error!(target: "sdl::service", error = %e, "forwarder stopped");
                    if outcome.is_ok() {
                        outcome = Err(forwarder_failure(e));
                    }
                }
                Err(e) => {
                    if outcome.is_ok() {
                        outcome = Err(RunError::failure(anyhow::anyhow!(
                            "forwarder task failed: {e}"
                        )));
                    }
                }
            }
        }
        outcome
    }
}

/// A forwarder's definite error; a damaged WAL record says how starting again repairs it.
fn forwarder_failure(e: ForwardError) -> RunError {
    if e.is_lease_lost() {
        return RunError::new(crate::ExitCode::LeaseLost, e);
    }
    let damaged = matches!(e, ForwardError::Wal(sdl_wal::WalError::Corrupt { .. }));
    let mut e = anyhow::Error::from(e);
    if damaged {
        e = e.context(
            "a WAL record the sink has not acknowledged is damaged; start sdl again: at start-up it discards damaged unacknowledged records and reads them again from the source",
        );
    }
    RunError::failure(e)
}

/// Prunes acknowledged WAL records every `interval`, as `wal.retention` allows, until shutdown.
async fn prune_periodically(
    wal: Wal<SourceTransaction>,
    retention: sdl_wal::Retention,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
        let prune_wal = wal.clone();
        match tokio::task::spawn_blocking(move || prune_wal.prune(retention)).await {
            Ok(Ok(pruned)) if pruned.records > 0 => {
                info!(target: "sdl::service",
                    records = pruned.records,
                    bytes = pruned.bytes,
                    "pruned acknowledged WAL records"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                warn!(target: "sdl::service", error = %e, "WAL pruning failed; acknowledged records are kept")
            }
            Err(e) => warn!(target: "sdl::service", error = %e, "WAL pruning task failed"),
        }
    }
}

/// The ingester splits transactions so that one WAL record fits one sink batch: neither stage
/// then holds more than about one batch of a large transaction in memory. The byte bound is half
/// the batch's because the change documents' BSON is larger than the WAL's estimate of a change.
fn fragment_limits(sink: &crate::config::SinkConfig) -> FragmentLimits {
    FragmentLimits {
        max_changes: sink.batch_max_documents,
        max_bytes: sink.batch_max_bytes / 2,
    }
}
