//! `sdl run`: wires the stages together and owns the process lifecycle.
//!
//! Start-up order is chosen so that a misconfiguration fails before anything is read: config, WAL
//! (and its lock), source (settings checked), sink (transactions checked, indexes ensured), then the
//! starting position. Only then do the ingester and the forwarder start, as two tasks joined by the
//! WAL and a watch channel carrying the WAL's last sequence. The admin endpoint and the health
//! watchers (`crate::health`) start right after the WAL opens, before the checks and connections,
//! which can take connect timeouts when a server is away: the endpoint answers within moments of
//! start, `/readyz` 503 saying what start-up is waiting for.
//!
//! Shutdown (SIGTERM/SIGINT, and SIGHUP: sdl does not reload its configuration): both stages are
//! told to stop; the ingester flushes complete transactions to the WAL, the forwarder finishes or
//! abandons its batch. A second signal exits at once, which is still safe: the WAL is the truth
//! and both stages resume from it. A signal during start-up (a connection attempt may hang until
//! its `connect_timeout`) is logged and ends the process at once with exit 0: nothing runs yet
//! that needs stopping, and every WAL write is flushed when made.

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
use crate::source::{self, gtid::ResumePoint, FragmentLimits, SourceError};
use crate::{forward, health, ExitCode};

/// Set once JSON logging is on: the final error then goes out as a JSON line too.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether log lines are JSON (`[log] format = "json"`, once the config is loaded).
pub fn logs_are_json() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The log filter from `SDL_LOG` (default `info`), and a warning when `SDL_LOG` is set to
/// something that is not a filter: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
/// `target=level` directives (`info,sdl=debug`). A bare word such as `verbose` would otherwise
/// be read as a module name and quietly turn the log off.
fn log_filter() -> (tracing_subscriber::EnvFilter, Option<String>) {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let Ok(text) = std::env::var("SDL_LOG") else {
        return (tracing_subscriber::EnvFilter::new("info"), None);
    };
    let level_ok = |level: &str| LEVELS.contains(&level.trim().to_ascii_lowercase().as_str());
    let understood = !text.trim().is_empty()
        && text
            .split(',')
            .all(|directive| match directive.split_once('=') {
                Some((target, level)) => !target.trim().is_empty() && level_ok(level),
                None => level_ok(directive),
            });
    match tracing_subscriber::EnvFilter::try_new(&text) {
        Ok(filter) if understood => (filter, None),
        _ => (
            tracing_subscriber::EnvFilter::new("info"),
            Some(format!(
                "SDL_LOG={text:?} is not a log filter: logging at info. Use a level (error, warn, info, debug, trace, off) or directives like \"info,sdl=debug\""
            )),
        ),
    }
}

pub fn init_logging(format: LogFormat) {
    let (filter, filter_warning) = log_filter();
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            builder.json().try_init()
        }
        LogFormat::Text => builder.try_init(),
    };
    if let Some(warning) = filter_warning {
        warn!("{warning}");
    }
}

pub async fn run(config_path: &Path) -> Result<(), (ExitCode, anyhow::Error)> {
    let config = Config::load(config_path).map_err(|e| (ExitCode::Config, e.into()))?;
    init_logging(config.log.format);
    for warning in &config.warnings {
        warn!("{warning}");
    }
    let fail = |e: anyhow::Error| (ExitCode::Failure, e);
    // Installed before anything can hang, so that a signal during start-up is honoured and logged.
    let (startup_done, startup_signals) = watch_signals_during_startup().map_err(fail)?;

    if let Some(warning) =
        crate::wal_dir::make_private(&config.wal.dir).map_err(|e| (ExitCode::Config, e.into()))?
    {
        warn!("{warning}");
    }
    let wal_dir = config.wal.dir.clone();
    let wal: Wal<SourceTransaction> = tokio::task::spawn_blocking(move || Wal::open(wal_dir))
        .await
        .map_err(|e| fail(e.into()))?
        .map_err(|e| fail(anyhow::anyhow!(crate::messages::wal_open_error(&e))))?;
    info!(
        dir = %wal.dir().display(),
        id = %wal.id(),
        wal_format = <SourceTransaction as sdl_wal::Record>::FORMAT_VERSION,
        wal_metadata_format = sdl_wal::FORMAT_VERSION,
        version = %crate::build_info::build_info().version,
        "WAL open"
    );
    for repair in wal.metadata_repairs() {
        warn!(key = %repair.key, problem = %repair.problem, action = %repair.action, "WAL metadata repaired at open");
    }
    // Every WAL write is flushed when it is made, so nothing depends on sled's flush-on-drop; and
    // after a disk-full error that flush would block forever. Keep one handle alive to the end.
    std::mem::forget(wal.clone());

    // The admin endpoint and the health watchers start before the start-up checks, which can
    // take a connect timeout or two when a server is away: `/healthz`, `/readyz` (503, saying
    // why) and `/status` answer meanwhile.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (breaker_tx, breaker_rx) = watch::channel(BreakerStatus::default());
    let (ingest_tx, ingest_rx) = watch::channel(crate::status::IngestStatus::default());
    let (forward_tx, forward_rx) = watch::channel(crate::status::ForwardStatus::default());
    let (sink_reach_tx, sink_reach_rx) = watch::channel(health::SinkReach::Unknown);
    let (stuck_tx, stuck_rx) = watch::channel(health::StuckReport::default());
    let admin = match config.admin.listen_addr() {
        Some(addr) => {
            let sources = crate::admin::StatusSources {
                ingest: ingest_rx.clone(),
                forward: forward_rx.clone(),
                breaker: breaker_rx.clone(),
                health: health::HealthSources {
                    sink: sink_reach_rx,
                    stuck: stuck_rx,
                },
            };
            let (local, task) = crate::admin::start(
                &addr,
                &config.admin,
                &config.source.name,
                wal.clone(),
                sources,
                shutdown_rx.clone(),
            )
            .await
            .map_err(fail)?;
            info!(listen = %local, "admin endpoint up");
            Some(task)
        }
        None => None,
    };
    let sink_probe = tokio::spawn(health::probe_sink(
        config.sink.clone(),
        sink_reach_tx,
        shutdown_rx.clone(),
    ));
    let stuck_watch = tokio::spawn(health::watch_stages(
        wal.clone(),
        config.service.stuck_after,
        health::Watched {
            ingest: ingest_rx,
            forward: forward_rx,
            breaker: breaker_rx,
        },
        stuck_tx,
        shutdown_rx.clone(),
    ));

    let outcome = run_stages(
        &config,
        wal,
        &shutdown_tx,
        shutdown_rx,
        Publishers {
            breaker: breaker_tx,
            ingest: ingest_tx,
            forward: forward_tx,
        },
        StartupSignals {
            done: startup_done,
            signals: startup_signals,
        },
    )
    .await;

    // Housekeeping tasks hold nothing that needs saving: every WAL write is flushed when made.
    // The probe's MongoDB client is closed while the runtime still runs (see `sink::shut_down`).
    shutdown_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), sink_probe).await;
    stuck_watch.abort();
    if let Some(admin) = admin {
        admin.abort();
    }
    outcome
}

/// Where the stages publish their states (read by the admin endpoint and the health watchers).
struct Publishers {
    breaker: watch::Sender<BreakerStatus>,
    ingest: watch::Sender<crate::status::IngestStatus>,
    forward: watch::Sender<crate::status::ForwardStatus>,
}

/// The start-up signal watcher (see [`watch_signals_during_startup`]): `done` ends start-up,
/// `signals` hands the signal streams back for the running service.
struct StartupSignals {
    done: tokio::sync::oneshot::Sender<()>,
    signals: tokio::task::JoinHandle<Signals>,
}

/// The start-up checks and connections, then both stages until shutdown or a failure.
async fn run_stages(
    config: &Config,
    wal: Wal<SourceTransaction>,
    shutdown_tx: &watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    publishers: Publishers,
    startup: StartupSignals,
) -> Result<(), (ExitCode, anyhow::Error)> {
    let Publishers {
        breaker: breaker_tx,
        ingest: ingest_tx,
        forward: forward_tx,
    } = publishers;
    let StartupSignals {
        done: startup_done,
        signals: startup_signals,
    } = startup;
    let fail = |e: anyhow::Error| (ExitCode::Failure, e);
    // A WAL with a position can be filled from the binlog while MongoDB is away; a new one needs
    // MongoDB's offset to know where to start.
    let wal_has_position = wal.ingest_position().map_err(|e| fail(e.into()))?.is_some();

    // The same checks as `sdl check`: refuse to start on a failure, log the warnings.
    let sink_down = if wal_has_position {
        crate::preflight::SinkDown::Tolerated
    } else {
        crate::preflight::SinkDown::Fails
    };
    let checks = crate::preflight::run_checks_with(config, sink_down).await;
    for check in checks
        .iter()
        .filter(|c| c.verdict == crate::preflight::Verdict::Warn)
    {
        warn!(check = %check.name, fix = %check.fix, "preflight: {}", check.detail);
    }
    if let Some(failed) = checks
        .iter()
        .find(|c| c.verdict == crate::preflight::Verdict::Fail)
    {
        let fix = if failed.fix.is_empty() {
            String::new()
        } else {
            format!(" Fix: {}", failed.fix)
        };
        return Err((
            ExitCode::Failure,
            anyhow::anyhow!("preflight check `{}` failed: {}.{fix} (`sdl check --config ...` lists every check)", failed.name, failed.detail),
        ));
    }

    let (mut conn, flavor) = source::connect(&config.source)
        .await
        .map_err(source_failure)?;
    info!(
        flavor = %crate::messages::flavor_name(flavor),
        "source connected and configured for row-based CDC"
    );

    let sink = match MongoSink::connect(&config.sink, &config.source.name).await {
        Ok(sink) => {
            info!(
                url = %sink.url(),
                database = %config.sink.database,
                transactions = sink.uses_transactions(),
                mode = %crate::messages::transactions_text(config.sink.transactions),
                "sink connected"
            );
            Some(sink)
        }
        Err(e) if e.is_transient() && wal_has_position => {
            warn!(error = %e, "MongoDB is not reachable: following the binlog into the WAL meanwhile; the forwarder keeps trying");
            None
        }
        Err(e) => return Err(fail(e.into())),
    };

    // The acknowledged cursor first: a crash between a MongoDB commit and the WAL's flush leaves
    // it behind MongoDB's offset, and records in that gap are MongoDB's already, damaged or not.
    // Repairing them would rewind the WAL behind the offset for good.
    let reconciled = match &sink {
        Some(sink) => match forward::reconcile_with_sink(sink, &wal).await {
            Ok(_) => true,
            Err(e) if e.is_transient() => {
                warn!(error = %e, "MongoDB's offset could not be read at start-up; the forwarder keeps trying");
                false
            }
            Err(e) => {
                return Err(fail(anyhow::Error::from(e).context(
                    "catching the WAL's acknowledged cursor up to MongoDB's offset at start-up",
                )))
            }
        },
        None => false,
    };
    repair_damaged_records(&wal, &config.source, flavor, reconciled).await?;
    check_source_history(&mut conn, flavor, config, &wal, sink.as_ref()).await?;

    if !wal_has_position {
        let sink = sink
            .as_ref()
            .expect("a new WAL is only started with MongoDB reachable");
        let position = match sink.offset().await.map_err(|e| fail(e.into()))? {
            Some(offset) if !offset.gtid_position.is_empty() => {
                warn!(
                    position = %offset.gtid_position,
                    "the WAL is new but MongoDB holds an offset for this source; continuing from MongoDB's position"
                );
                ResumePoint::parse(flavor, &offset.gtid_position)
                    .map_err(|e| source_failure(e.into()))?
            }
            _ => ResumePoint::at(
                source::resolve_start(&mut conn, flavor, &config.source.start)
                    .await
                    .map_err(source_failure)?,
            ),
        };
        info!(
            position = %position,
            start = %crate::messages::start_text(&config.source.start),
            "new WAL: starting position"
        );
        wal.append(&[], position.to_string().as_bytes())
            .context("saving the starting position in the WAL")
            .map_err(fail)?;
    }

    let shutdown_rx_for_retention = shutdown_rx.clone();
    let (appended_tx, appended_rx) = watch::channel(wal.last_seq().map_err(|e| fail(e.into()))?);

    let mut ingester = tokio::spawn(source::run(
        config.source.clone(),
        config.wal.clone(),
        fragment_limits(&config.sink),
        wal.clone(),
        Some((conn, flavor)),
        appended_tx,
        ingest_tx,
        shutdown_rx.clone(),
    ));
    let mut forwarder = tokio::spawn(forward::run(forward::Forwarder {
        sink,
        connect: crate::sink::MongoConnect {
            cfg: config.sink.clone(),
            source_name: config.source.name.clone(),
        },
        source_name: config.source.name.clone(),
        wal: wal.clone(),
        cfg: config.sink.clone(),
        appended: appended_rx,
        shutdown: shutdown_rx,
        breaker: breaker_tx,
        status: forward_tx,
    }));

    let retention = tokio::spawn(prune_periodically(
        wal.clone(),
        config.wal.retention(),
        config.wal.prune_interval,
        shutdown_rx_for_retention,
    ));

    // systemd (Type=notify): ready once every start-up check has passed and both stages run.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled().map(|interval| {
        tokio::spawn(async move {
            loop {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                tokio::time::sleep(interval / 2).await;
            }
        })
    });

    let _ = startup_done.send(());
    let Signals {
        mut sigterm,
        mut sigint,
        mut sighup,
    } = startup_signals
        .await
        .map_err(|e| fail(anyhow::anyhow!("signal task failed: {e}")))?;

    let mut ingester_result = None;
    let mut forwarder_result = None;
    tokio::select! {
        _ = sigterm.recv() => info!("SIGTERM: shutting down"),
        _ = sigint.recv() => info!("SIGINT: shutting down"),
        _ = sighup.recv() => info!("SIGHUP: shutting down (sdl does not reload its configuration: start it again to apply a change)"),
        r = &mut ingester => ingester_result = Some(r),
        r = &mut forwarder => forwarder_result = Some(r),
    }
    shutdown_tx.send_replace(true);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }

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
        _ = sighup.recv() => warn!("second signal: exiting now; the WAL holds everything read so far"),
        _ = tokio::time::sleep(config.shutdown_timeout) => warn!(timeout = ?config.shutdown_timeout, "shutdown timed out (shutdown_timeout); exiting"),
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
                    let damaged = matches!(
                        e,
                        forward::ForwardError::Wal(sdl_wal::WalError::Corrupt { .. })
                    );
                    let mut e = anyhow::Error::from(e);
                    if damaged {
                        e = e.context(
                            "a WAL record the sink has not acknowledged is damaged; start sdl again: at start-up it discards damaged unacknowledged records and reads them again from the source",
                        );
                    }
                    outcome = Err(fail(e));
                }
            }
            Err(e) => {
                if outcome.is_ok() {
                    outcome = Err(fail(anyhow::anyhow!("forwarder task failed: {e}")));
                }
            }
        }
    }
    retention.abort();
    if outcome.is_ok() {
        info!("stopped cleanly");
    }
    outcome
}

/// The signals that stop sdl.
struct Signals {
    sigterm: tokio::signal::unix::Signal,
    sigint: tokio::signal::unix::Signal,
    sighup: tokio::signal::unix::Signal,
}

/// Until `done` is sent, a stop signal logs why and ends the process (exit 0): start-up holds
/// nothing that needs a clean stop. After it, the task hands the signal streams back (no signal
/// falls in a gap between two handlers).
#[allow(clippy::type_complexity)]
fn watch_signals_during_startup() -> anyhow::Result<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Signals>,
)> {
    let mut signals = Signals {
        sigterm: signal(SignalKind::terminate())?,
        sigint: signal(SignalKind::interrupt())?,
        sighup: signal(SignalKind::hangup())?,
    };
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let name = tokio::select! {
            _ = &mut done_rx => return signals,
            _ = signals.sigterm.recv() => "SIGTERM",
            _ = signals.sigint.recv() => "SIGINT",
            _ = signals.sighup.recv() => "SIGHUP",
        };
        let message = format!(
            "{name} during start-up: stopping before relaying anything (nothing is lost: the WAL holds everything read so far)"
        );
        warn!("{message}");
        std::process::exit(0);
    });
    Ok((done_tx, task))
}

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
                info!(
                    records = pruned.records,
                    bytes = pruned.bytes,
                    "pruned acknowledged WAL records"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "WAL pruning failed; acknowledged records are kept"),
            Err(e) => warn!(error = %e, "WAL pruning task failed"),
        }
    }
}

/// Refuses to start when the source's GTID history no longer contains what was relayed under
/// this source.name (`crate::identity`): the WAL's position, and MongoDB's offset if it answers.
async fn check_source_history(
    conn: &mut mysql_async::Conn,
    flavor: source::Flavor,
    config: &Config,
    wal: &Wal<SourceTransaction>,
    sink: Option<&MongoSink>,
) -> Result<(), (ExitCode, anyhow::Error)> {
    use crate::identity::{CheckError, Landmark};
    let failed = |e: anyhow::Error| (ExitCode::Failure, e);
    let mut relayed = Vec::new();
    let mut landmarks = Vec::new();
    if let Some(position) = wal.ingest_position().map_err(|e| failed(e.into()))? {
        relayed.push(("the WAL", String::from_utf8_lossy(&position).into_owned()));
    }
    // Where the WAL's last record was read (MariaDB: checked against the binlog below).
    let last = wal.last_seq().map_err(|e| failed(e.into()))?;
    if last > 0 {
        // A record that cannot be read (pruned, or damaged and acknowledged) is no landmark; the
        // forwarder reports damage where it matters.
        if let Ok(Some(stored)) = wal.get(last) {
            if let Some((file, pos)) = stored.record.changes.first().map(|c| c.binlog_location()) {
                landmarks.push(Landmark {
                    what: "the WAL",
                    gtid: stored.record.gtid.clone(),
                    file: file.to_string(),
                    pos,
                });
            }
        }
    }
    if let Some(sink) = sink {
        match sink.offset().await {
            Ok(Some(offset)) => {
                if flavor == source::Flavor::Mariadb {
                    let found = sink
                        .last_change_locations(&offset.gtid_position)
                        .await
                        .map_err(|e| failed(e.into()))?;
                    for (gtid, file, pos) in found {
                        if !landmarks
                            .iter()
                            .any(|l| l.gtid == gtid && l.file == file && l.pos == pos)
                        {
                            landmarks.push(Landmark {
                                what: "MongoDB",
                                gtid,
                                file,
                                pos,
                            });
                        }
                    }
                }
                relayed.push(("MongoDB's offset", offset.gtid_position));
            }
            Ok(None) => {}
            // Checked against the WAL alone; MongoDB's offset never leads the WAL's position.
            Err(e) => {
                warn!(error = %e, "could not read MongoDB's offset to check the source's history")
            }
        }
    }
    if relayed.is_empty() {
        return Ok(());
    }
    let current = source::resolve_start(conn, flavor, &crate::config::StartFrom::Current)
        .await
        .map_err(source_failure)?;
    crate::identity::check(flavor, &config.source.name, &current, &relayed)
        .map_err(|e| (ExitCode::SourceDiverged, e.into()))?;
    if flavor == source::Flavor::Mariadb {
        match crate::identity::check_landmarks(conn, &config.source.name, &landmarks).await {
            Ok(()) => {}
            Err(CheckError::History(e)) => return Err((ExitCode::SourceDiverged, e.into())),
            Err(e @ CheckError::Query(_)) => return Err(failed(e.into())),
        }
    }
    Ok(())
}

/// Start-up repair: a damaged record the sink has not acknowledged is discarded, with every record
/// after it, and the ingest position rewound to just before it, so the ingester reads that range
/// again from the source. Done only after the acknowledged cursor was caught up to MongoDB's
/// offset (`sink_reconciled`), and only when the source can still serve that position; otherwise
/// sdl stops and names the damaged range.
async fn repair_damaged_records(
    wal: &Wal<SourceTransaction>,
    source_cfg: &crate::config::SourceConfig,
    flavor: source::Flavor,
    sink_reconciled: bool,
) -> Result<(), (ExitCode, anyhow::Error)> {
    let fail = |e: anyhow::Error| (ExitCode::Failure, e);
    let Some((seq, damage)) = wal
        .first_damaged_unacknowledged()
        .map_err(|e| fail(e.into()))?
    else {
        return Ok(());
    };
    if let sdl_wal::FrameError::UnknownVersion { found, supported } = damage {
        // Not damage: another release's format. Its records are not discarded on a guess.
        return Err(fail(anyhow::anyhow!(
            "WAL record {seq} (not yet in MongoDB) was written in record format version {found}, and this sdl reads version {supported}: an upgrade or downgrade across a WAL format change while records were waiting. Either run the release that wrote it until the WAL is drained (sdl_wal_unacked_records near 0), then stop it and switch; or move the WAL directory aside and start this release: it resumes from MongoDB's offset (the source must still have the binlogs from there). docs/operations.md, \"Upgrade\""
        )));
    }
    if !sink_reconciled {
        return Err(fail(anyhow::anyhow!(
            "WAL record {seq} is damaged ({damage}) and not acknowledged, and MongoDB is not reachable to say whether it already holds it: the repair (reading the record again from the source) waits for MongoDB's offset, so that what MongoDB has is never read twice. Start sdl again once MongoDB is reachable (under systemd it restarts by itself)"
        )));
    }
    let last = wal.last_seq().map_err(|e| fail(e.into()))?;
    let from = String::from_utf8_lossy(&wal.position_before(seq).map_err(|e| fail(e.into()))?)
        .into_owned();
    let to = wal
        .ingest_position()
        .map_err(|e| fail(e.into()))?
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .unwrap_or_default();
    let resume = ResumePoint::parse(flavor, &from).map_err(|e| source_failure(e.into()))?;
    if !source::binlog_available(source_cfg, &resume.position)
        .await
        .map_err(source_failure)?
    {
        return Err((
            ExitCode::BinlogUnavailable,
            anyhow::anyhow!(
                "WAL record {seq} is damaged ({damage}) and not yet in MongoDB, and the source no longer has the binlog from GTID position {from} to repair it (the damaged range ends at {to}; records {seq}..={last}). Choices: restore the source's binlog files covering that range and start sdl again; or accept the loss and re-seed: move the WAL directory away and start with source.start set to a GTID position"
            ),
        ));
    }
    let rewound = wal
        .truncate_unacknowledged(seq)
        .map_err(|e| fail(e.into()))?;
    warn!(
        damaged_seq = seq,
        %damage,
        discarded = format!("{seq}..={last}"),
        rewound_to = %String::from_utf8_lossy(&rewound),
        "repaired the WAL: damaged unacknowledged records discarded; they are read again from the source"
    );
    Ok(())
}

/// `sdl check`: every preflight check as a table on stdout; exit 1 when any failed.
pub async fn check(config_path: &Path) -> Result<(), (ExitCode, anyhow::Error)> {
    let config = Config::load(config_path).map_err(|e| (ExitCode::Config, e.into()))?;
    let checks = crate::preflight::run_checks(&config).await;
    for warning in &config.warnings {
        println!("WARN  config: {warning}");
    }
    print!("{}", crate::preflight::render(&checks));
    let failed = checks
        .iter()
        .filter(|c| c.verdict == crate::preflight::Verdict::Fail)
        .count();
    if failed > 0 {
        return Err((
            ExitCode::Failure,
            anyhow::anyhow!(
                "{failed} preflight check(s) failed; each FAIL line above says how to fix it"
            ),
        ));
    }
    Ok(())
}

fn source_failure(e: SourceError) -> (ExitCode, anyhow::Error) {
    let code = match e {
        SourceError::BinlogUnavailable { .. } => ExitCode::BinlogUnavailable,
        SourceError::SourceDiverged { .. } => ExitCode::SourceDiverged,
        SourceError::DuplicateServerId { .. } => ExitCode::DuplicateServerId,
        _ => ExitCode::Failure,
    };
    (code, e.into())
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
