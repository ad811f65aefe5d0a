//! What the running service reports about itself (`/status` on the admin endpoint).
//!
//! Each stage publishes its state on a watch channel; nothing here is read back by the stages.
//! Error messages are redacted (no password from a URL) before they are published. Each stage's
//! report carries `stuck_since`/`stuck_seconds` (see `crate::service::health`): set only while the stage is
//! stuck, `stuck_seconds` 0 otherwise.

use std::fmt::Display;
use std::time::SystemTime;

use serde::Serialize;

use super::{BreakerState, BreakerStatus, Health, SinkReach, Stuck};

/// The ingester's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IngestState {
    Starting,
    /// Reading the binlog from `position`, where this connection started (shown as
    /// `connection_start_position`; the current position is `current_position`).
    Following {
        #[serde(rename = "connection_start_position")]
        position: String,
    },
    /// Backpressure: the WAL holds `wal.max_bytes` of unacknowledged data.
    PausedWalFull {
        unacked_bytes: u64,
        max_bytes: u64,
    },
    /// The source connection was lost or refused; retrying.
    Reconnecting {
        error: String,
        retry_in_ms: u64,
    },
    Stopped,
}

/// The most recent failure a stage reported, kept after it recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// The error, with any password in a URL replaced by `***` and driver dumps shortened
    /// (`messages::tidy`).
    pub message: String,
    /// When it happened (RFC 3339, UTC).
    pub at: String,
}

impl LastError {
    pub fn now(error: &dyn Display) -> Self {
        Self {
            message: crate::messages::tidy(&crate::redact::redact_error(&error.to_string())),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        }
    }
}

/// What the ingester publishes: its state and its last failure; with several servers in
/// `source.url`, which one it follows, its failovers, and why the others were not followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestStatus {
    #[serde(flatten)]
    pub state: IngestState,
    pub last_error: Option<LastError>,
    /// The server of `source.url` followed now (or last), `None` before the first connection.
    pub source_server: Option<SourceServer>,
    /// Switches from one server of `source.url` to another in this run (`sdl_source_failovers_total`).
    pub source_failovers: u64,
    /// At the last attempt that found no server it could follow: each listed server and why it
    /// was refused (empty once a server is followed).
    pub refused_servers: Vec<RefusedServer>,
    /// The snapshot being read (`/status` shows it at the top level, as `snapshot`).
    #[serde(skip)]
    pub snapshot: SnapshotStatus,
}

impl Default for IngestStatus {
    fn default() -> Self {
        Self {
            state: IngestState::Starting,
            last_error: None,
            source_server: None,
            source_failovers: 0,
            refused_servers: Vec::new(),
            snapshot: SnapshotStatus::default(),
        }
    }
}

/// The snapshot as the ingester reads it (docs/operations.md, "Initial snapshot").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotStatus {
    pub state: SnapshotState,
    /// The id of the snapshot being read.
    pub id: Option<String>,
    /// `db.table` being read.
    pub table: Option<String>,
    /// Rows of that table written so far.
    pub rows_done: u64,
    /// information_schema's estimate of that table's rows.
    pub rows_estimate: Option<u64>,
    /// Tables still to read, the current one included.
    pub tables_left: usize,
    /// Rows written by every snapshot since sdl started.
    pub rows_written: u64,
    /// Seconds until this table is read, at the rate of this run.
    pub eta_seconds: Option<u64>,
    /// Tables or requests refused (no usable key, gone, a pattern matching nothing), newest last.
    pub refused: Vec<RefusedSnapshot>,
}

/// `idle` (nothing to read), `reading` (a chunk query runs), `throttled` (waiting out
/// `source.snapshot_rows_per_second` / `snapshot_bytes_per_second`), `waiting_for_stream` (a
/// chunk is read and waits for the binlog stream to reach the position it was read at).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    #[default]
    Idle,
    Reading,
    Throttled,
    WaitingForStream,
}

/// A table (or a whole `sdl snapshot` request) the snapshot refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedSnapshot {
    pub table: String,
    pub reason: String,
}

/// A server of `source.url`: its URL (password redacted) and its place in the list (0 = first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceServer {
    pub url: String,
    pub index: usize,
}

/// A server of `source.url` the ingester did not follow, and why: `reason` is one of
/// `unreachable`, `behind`, `diverged`, `purged`, `no_replica_updates`, `unusable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedServer {
    pub url: String,
    pub index: usize,
    pub reason: &'static str,
    pub detail: String,
}

/// What the forwarder publishes: how far MongoDB has committed, and its last failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ForwardStatus {
    /// The last WAL sequence committed in MongoDB (the WAL's acknowledged cursor follows it).
    pub committed_seq: u64,
    /// The GTID of the last source transaction committed in MongoDB (unknown until the first
    /// commit of this run).
    pub committed_gtid: Option<String>,
    /// The source GTID position after it (what `binlog_offsets.gtid` says).
    pub committed_position: Option<String>,
    /// When that commit happened (RFC 3339, UTC).
    pub committed_at: Option<String>,
    /// At that commit: its time minus the source commit time of its newest transaction.
    pub end_to_end_lag_seconds: Option<f64>,
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakerReport {
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub times_opened: u64,
}

impl From<&BreakerStatus> for BreakerReport {
    fn from(s: &BreakerStatus) -> Self {
        Self {
            state: match s.state {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half_open",
            },
            consecutive_failures: s.consecutive_failures,
            times_opened: s.times_opened,
        }
    }
}

/// The source as the ingester has read it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// The GTID position after the last transaction saved in the WAL.
    pub position: Option<String>,
    /// Now minus the header time of the newest binlog event read; 0 when the source has since
    /// said it has nothing newer (a heartbeat); `None` before the first event.
    pub lag_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    #[serde(flatten)]
    pub status: IngestStatus,
    /// The GTID position after the last transaction saved in the WAL (as `source.position`).
    pub current_position: Option<String>,
    /// Times the ingester reconnected after losing the binlog stream.
    pub restarts: u64,
    #[serde(flatten)]
    pub stuck: StuckFields,
}

/// Whether a stage is stuck (`crate::service::health`): since when it has been failing at `stuck_position`,
/// and for how many seconds (0 when it is not stuck).
#[derive(Debug, Clone, Serialize)]
pub struct StuckFields {
    pub stuck_since: Option<String>,
    pub stuck_seconds: f64,
    pub stuck_position: Option<String>,
}

impl From<Option<&Stuck>> for StuckFields {
    fn from(stuck: Option<&Stuck>) -> Self {
        Self {
            stuck_since: stuck.map(|s| s.since_wall.clone()),
            stuck_seconds: stuck.map_or(0.0, |s| s.seconds()),
            stuck_position: stuck.map(|s| s.position.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ForwardReport {
    #[serde(flatten)]
    pub status: ForwardStatus,
    /// Age of the oldest WAL record MongoDB has not acknowledged; 0 when it has them all.
    pub lag_seconds: f64,
    /// Times the forwarder committed again after its circuit breaker had opened.
    pub restarts: u64,
    #[serde(flatten)]
    pub stuck: StuckFields,
}

/// The `/status` document.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// This instance's part in a hot standby pair: `leader`, `standby` (`[lease]`), or `single`
    /// without a lease (also `starting`, `stepped_down`).
    pub role: super::Role,
    /// The lease as this instance last saw it (`[lease]`; `null` when off).
    pub lease: Option<super::LeaseStatus>,
    pub source: SourceReport,
    pub ingest: IngestReport,
    /// The snapshot being read (`idle` when none is).
    pub snapshot: SnapshotStatus,
    pub forwarder: ForwardReport,
    pub breaker: BreakerReport,
    /// MongoDB as the health probe sees it.
    pub sink: SinkReach,
    pub wal: sdl_wal::WalStats,
    /// The version, commit and WAL record format of this sdl.
    pub build: crate::build_info::BuildInfo,
}

impl StatusReport {
    pub fn new(
        ingest: IngestStatus,
        forward: ForwardStatus,
        breaker: &BreakerStatus,
        health: &Health,
        lease: super::LeaseStatus,
        wal: sdl_wal::WalStats,
    ) -> Self {
        use super::metrics::{metrics, Stage};
        let m = metrics();
        Self {
            role: lease.role,
            lease: (lease.role != super::Role::Single).then_some(lease),
            source: SourceReport {
                position: wal.ingest_position.clone(),
                lag_seconds: m.source_lag(),
            },
            snapshot: ingest.snapshot.clone(),
            ingest: IngestReport {
                status: ingest,
                current_position: wal.ingest_position.clone(),
                restarts: m.stage_restarts(Stage::Ingester),
                stuck: health.stuck.get(Stage::Ingester).into(),
            },
            forwarder: ForwardReport {
                status: forward,
                lag_seconds: wal.oldest_unacked_age_ms.unwrap_or(0) as f64 / 1000.0,
                restarts: m.stage_restarts(Stage::Forwarder),
                stuck: health.stuck.get(Stage::Forwarder).into(),
            },
            breaker: BreakerReport::from(breaker),
            sink: health.sink.clone(),
            wal,
            build: crate::build_info::build_info(),
        }
    }
}
