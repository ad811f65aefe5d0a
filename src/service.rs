//! `sdl run`: wires the stages together and owns the process lifecycle.
//!
//! Start-up order is chosen so that a misconfiguration fails before anything is read: config, WAL
//! (and its lock), source (settings checked), sink (transactions checked, indexes ensured), then the
//! starting position. Only then do the ingester and the forwarder start, as two tasks joined by the
//! WAL and a watch channel carrying the WAL's last sequence.
//!
//! Shutdown (SIGTERM/SIGINT): both stages are told to stop; the ingester flushes complete
//! transactions to the WAL, the forwarder finishes or abandons its batch. A second signal exits at
//! once, which is still safe: the WAL is the truth and both stages resume from it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sdl_wal::Wal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::breaker::BreakerStatus;
use crate::config::{Config, LogFormat};
use crate::event::SourceTransaction;
use crate::sink::MongoSink;
use crate::source::{self, gtid::Position, SourceError};
use crate::{forward, ExitCode};

/// How long a graceful shutdown may take before the process exits anyway.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SDL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub async fn run(config_path: &Path) -> Result<(), (ExitCode, anyhow::Error)> {
    let config = Config::load(config_path).map_err(|e| (ExitCode::Config, e.into()))?;
    init_logging(config.log.format);
    let fail = |e: anyhow::Error| (ExitCode::Failure, e);

    let wal_dir = config.wal.dir.clone();
    let wal: Wal<SourceTransaction> = tokio::task::spawn_blocking(move || Wal::open(wal_dir))
        .await
        .map_err(|e| fail(e.into()))?
        .map_err(|e| fail(e.into()))?;
    info!(dir = %wal.dir().display(), id = %wal.id(), "WAL open");

    let (mut conn, flavor) = source::connect(&config.source)
        .await
        .map_err(source_failure)?;
    info!(?flavor, "source connected and configured for row-based CDC");

    let sink = MongoSink::connect(&config.sink, &config.source.name)
        .await
        .map_err(|e| fail(e.into()))?;
    info!(
        url = %sink.url(),
        database = %config.sink.database,
        transactions = sink.uses_transactions(),
        mode = ?config.sink.transactions,
        "sink connected"
    );

    if wal.ingest_position().map_err(|e| fail(e.into()))?.is_none() {
        let position = match sink.offset().await.map_err(|e| fail(e.into()))? {
            Some(offset) if !offset.gtid_position.is_empty() => {
                warn!(
                    position = %offset.gtid_position,
                    "the WAL is new but MongoDB holds an offset for this source; continuing from MongoDB's position"
                );
                Position::parse(flavor, &offset.gtid_position)
                    .map_err(|e| source_failure(e.into()))?
            }
            _ => source::resolve_start(&mut conn, flavor, &config.source.start)
                .await
                .map_err(source_failure)?,
        };
        info!(position = %position, start = ?config.source.start, "new WAL: starting position");
        wal.append(&[], position.to_string().as_bytes())
            .context("saving the starting position in the WAL")
            .map_err(fail)?;
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (appended_tx, appended_rx) = watch::channel(wal.last_seq().map_err(|e| fail(e.into()))?);
    // The circuit breaker's state, readable here (metrics will subscribe to it).
    let (breaker_tx, _breaker_state) = watch::channel(BreakerStatus::default());

    let mut ingester = tokio::spawn(source::run(
        config.source.clone(),
        config.wal.clone(),
        wal.clone(),
        Some((conn, flavor)),
        appended_tx,
        shutdown_rx.clone(),
    ));
    let mut forwarder = tokio::spawn(forward::run(
        sink,
        wal.clone(),
        config.sink.clone(),
        appended_rx,
        shutdown_rx,
        breaker_tx,
    ));

    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| fail(e.into()))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| fail(e.into()))?;

    let mut ingester_result = None;
    let mut forwarder_result = None;
    tokio::select! {
        _ = sigterm.recv() => info!("SIGTERM: shutting down"),
        _ = sigint.recv() => info!("SIGINT: shutting down"),
        r = &mut ingester => ingester_result = Some(r),
        r = &mut forwarder => forwarder_result = Some(r),
    }
    shutdown_tx.send_replace(true);

    let drain = async {
        if ingester_result.is_none() {
            ingester_result = Some((&mut ingester).await);
        }
        if forwarder_result.is_none() {
            forwarder_result = Some((&mut forwarder).await);
        }
    };
    tokio::select! {
        _ = drain => {}
        _ = sigterm.recv() => warn!("second signal: exiting now; the WAL holds everything read so far"),
        _ = sigint.recv() => warn!("second signal: exiting now; the WAL holds everything read so far"),
        _ = tokio::time::sleep(SHUTDOWN_TIMEOUT) => warn!(timeout = ?SHUTDOWN_TIMEOUT, "shutdown timed out; exiting"),
    }

    let mut outcome = Ok(());
    if let Some(result) = ingester_result {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "ingester stopped");
                outcome = Err(source_failure(e));
            }
            Err(e) => outcome = Err(fail(anyhow::anyhow!("ingester task failed: {e}"))),
        }
    }
    if let Some(result) = forwarder_result {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "forwarder stopped");
                if outcome.is_ok() {
                    outcome = Err(fail(e.into()));
                }
            }
            Err(e) => {
                if outcome.is_ok() {
                    outcome = Err(fail(anyhow::anyhow!("forwarder task failed: {e}")));
                }
            }
        }
    }
    let flush_wal = wal.clone();
    let _ = tokio::task::spawn_blocking(move || flush_wal.acked()).await;
    if outcome.is_ok() {
        info!("stopped cleanly");
    }
    outcome
}

fn source_failure(e: SourceError) -> (ExitCode, anyhow::Error) {
    let code = match e {
        SourceError::BinlogUnavailable { .. } => ExitCode::BinlogUnavailable,
        _ => ExitCode::Failure,
    };
    (code, e.into())
}
