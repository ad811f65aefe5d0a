//! Start-up phase: the admin endpoint and the health watchers, started right after the WAL opens
//! and before the start-up checks and connections, which can take a connect timeout or two when a
//! server is away: `/healthz`, `/readyz` (503, saying what start-up is waiting for) and `/status`
//! answer within moments of start.
//!
//! The stages publish into the channels made here ([`Publishers`]); the endpoint and the watchers
//! only read them. At the end they are stopped without waiting for anything to be saved: they hold
//! nothing (every WAL write is flushed when made).

use std::time::Duration;

use sdl_wal::Wal;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use super::{admin, health, RunError};
use crate::config::Config;
use crate::event::SourceTransaction;
use crate::telemetry::{
    BreakerStatus, ForwardStatus, IngestStatus, LeaseStatus, SinkReach, StuckReport,
};

/// Where the stages publish their states (read by the admin endpoint and the health watchers).
pub(super) struct Publishers {
    pub breaker: watch::Sender<BreakerStatus>,
    pub ingest: watch::Sender<IngestStatus>,
    pub forward: watch::Sender<ForwardStatus>,
    pub lease: watch::Sender<LeaseStatus>,
}

/// The running admin endpoint and health watchers, and the shutdown signal they and the stages
/// listen to.
pub(super) struct Watchers {
    pub shutdown_tx: watch::Sender<bool>,
    pub shutdown_rx: watch::Receiver<bool>,
    admin: Option<JoinHandle<()>>,
    sink_probe: JoinHandle<()>,
    stuck_watch: JoinHandle<()>,
}

/// Starts the admin endpoint (when `admin` is configured) and the health watchers.
pub(super) async fn start(
    config: &Config,
    wal: &Wal<SourceTransaction>,
) -> Result<(Watchers, Publishers), RunError> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (breaker_tx, breaker_rx) = watch::channel(BreakerStatus::default());
    let (ingest_tx, ingest_rx) = watch::channel(IngestStatus::default());
    // A snapshot the WAL holds shows from the first `/status` answer, before the ingester runs.
    if let Ok(Some(saved)) = wal.ingest_position() {
        crate::source::snapshot::publish_saved_plan(&ingest_tx, &String::from_utf8_lossy(&saved));
    }
    let (forward_tx, forward_rx) = watch::channel(ForwardStatus::default());
    let (lease_tx, lease_rx) = watch::channel(LeaseStatus::initial(
        config.lease.enabled,
        &config.lease.instance,
    ));
    let (sink_reach_tx, sink_reach_rx) = watch::channel(SinkReach::Unknown);
    let (stuck_tx, stuck_rx) = watch::channel(StuckReport::default());
    let admin = match config.admin.listen_addr() {
        Some(addr) => {
            let sources = admin::StatusSources {
                ingest: ingest_rx.clone(),
                forward: forward_rx.clone(),
                breaker: breaker_rx.clone(),
                lease: lease_rx,
                health: health::HealthSources {
                    sink: sink_reach_rx,
                    stuck: stuck_rx,
                },
            };
            let (local, task) = admin::start(
                &addr,
                &config.admin,
                &config.source.name,
                wal.clone(),
                sources,
                shutdown_rx.clone(),
            )
            .await
            .map_err(RunError::failure)?;
            info!(target: "sdl::service", listen = %local, "admin endpoint up");
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
    let watchers = Watchers {
        shutdown_tx,
        shutdown_rx,
        admin,
        sink_probe,
        stuck_watch,
    };
    let publishers = Publishers {
        breaker: breaker_tx,
        ingest: ingest_tx,
        forward: forward_tx,
        lease: lease_tx,
    };
    Ok((watchers, publishers))
}

impl Watchers {
    /// Stops the endpoint and the watchers. The probe's MongoDB client is closed while the runtime
    /// still runs (see `sink::shut_down`).
    pub(super) async fn stop(self) {
        self.shutdown_tx.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.sink_probe).await;
        self.stuck_watch.abort();
        if let Some(admin) = self.admin {
            admin.abort();
        }
    }
}
