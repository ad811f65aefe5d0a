//! Prometheus metrics (`/metrics` on the admin endpoint), in the text format written by the
//! `prometheus-client` crate.
//!
//! Counters and histograms are updated where things happen (the stages call [`metrics()`]); the
//! gauges that describe state (WAL depth, breaker, ingest pause, source lag, stuck stages) are set
//! from the published states when `/metrics` is scraped, so the stages never do extra work for
//! them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::family::Family;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::{BreakerState, BreakerStatus, IngestState, StuckReport};

pub struct Metrics {
    registry: Registry,
    pub binlog_events: Counter,
    pub binlog_rows: Counter,
    pub binlog_transactions: Counter,
    source_lag_seconds: Gauge<f64, AtomicU64>,
    /// Header time (Unix seconds) of the newest binlog event read; 0 before the first.
    newest_event_unix: AtomicU64,
    /// A heartbeat came after the newest event: the source had nothing more to send.
    caught_up: AtomicBool,
    /// Heartbeats received from the source (proof that the stream works; see `crate::service::health`).
    heartbeats: AtomicU64,
    pub source_reconnects: Counter,
    /// Switches of the ingester from one server of `source.url` to another.
    pub source_failovers: Counter,
    /// Servers of `source.url` refused when the ingester looked for one to follow (unreachable,
    /// behind, diverged, purged, misconfigured), one per server and attempt.
    pub source_server_refusals: Counter,
    /// Snapshot rows appended to the WAL.
    pub snapshot_rows: Counter,
    /// Snapshot chunks appended to the WAL.
    pub snapshot_chunks: Counter,
    /// Snapshot chunks read but discarded (a DDL statement or a lost connection during the
    /// chunk's window): read again.
    pub snapshot_chunks_discarded: Counter,
    /// Tables the snapshot plan still holds.
    pub snapshot_tables_remaining: Gauge,
    stage_restarts: Family<StageLabel, Counter>,
    pub wal_appends: Counter,
    pub wal_appended_records: Counter,
    pub documents_written: Counter,
    pub batches_committed: Counter,
    pub batch_commit_seconds: Histogram,
    pub end_to_end_lag_seconds: Gauge<f64, AtomicU64>,
    wal_records: Gauge,
    wal_bytes: Gauge,
    wal_unacked_records: Gauge,
    wal_unacked_bytes: Gauge,
    wal_oldest_unacked_age_seconds: Gauge<f64, AtomicU64>,
    wal_disk_bytes: Gauge,
    ingest_paused: Gauge,
    breaker_state: Gauge,
    breaker_opened: Gauge,
    stage_stuck_seconds: Family<StageLabel, Gauge<f64, AtomicU64>>,
    /// The lease's epoch as this instance last saw it (`[lease]`; 0 when off or unknown).
    pub lease_epoch: Gauge,
    /// 1 while this instance holds the lease and leads, else 0.
    pub lease_is_leader: Gauge,
    /// Times this instance took the lease (`sdl_lease_takeovers_total`).
    pub lease_takeovers: Counter,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("sdl");
        macro_rules! register {
            ($name:literal, $help:literal, $metric:expr) => {{
                let metric = $metric;
                registry.register($name, $help, metric.clone());
                metric
            }};
        }
        Self {
            binlog_events: register!("binlog_events", "Binlog events read", Counter::default()),
            binlog_rows: register!("binlog_rows", "Row changes decoded from the binlog", Counter::default()),
            binlog_transactions: register!("binlog_transactions", "Whole source transactions assembled", Counter::default()),
            source_lag_seconds: register!(
                "source_lag_seconds",
                "Seconds between the newest binlog event read (its header time) and now; 0 when a heartbeat since said the source has nothing newer",
                Gauge::<f64, AtomicU64>::default()
            ),
            newest_event_unix: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
            heartbeats: AtomicU64::new(0),
            source_reconnects: register!("source_reconnects", "Restarts of the ingester's binlog connection", Counter::default()),
            source_failovers: register!("source_failovers", "Switches of the ingester from one server of source.url to another (source failover)", Counter::default()),
            source_server_refusals: register!("source_server_refusals", "Servers of source.url refused when the ingester looked for one to follow (unreachable, behind, diverged, purged binlogs, settings), one per server and attempt", Counter::default()),
            snapshot_rows: register!("snapshot_rows", "Snapshot rows appended to the WAL (op: snapshot documents to be)", Counter::default()),
            snapshot_chunks: register!("snapshot_chunks", "Snapshot chunks appended to the WAL", Counter::default()),
            snapshot_chunks_discarded: register!("snapshot_chunks_discarded", "Snapshot chunks read and discarded (a DDL statement during the chunk's window): read again", Counter::default()),
            snapshot_tables_remaining: register!("snapshot_tables_remaining", "Tables the snapshot plan still holds, the one being read included", Gauge::default()),
            stage_restarts: register!(
                "stage_restarts",
                "Times a stage resumed after a failure: the ingester reconnecting after losing the binlog stream, the forwarder committing again after its circuit breaker opened",
                Family::<StageLabel, Counter>::default()
            ),
            wal_appends: register!("wal_appends", "Flushed WAL appends (group commits)", Counter::default()),
            wal_appended_records: register!("wal_appended_records", "Records appended to the WAL", Counter::default()),
            documents_written: register!("documents_written", "Change documents committed to MongoDB", Counter::default()),
            batches_committed: register!("batches_committed", "Batches committed to MongoDB", Counter::default()),
            batch_commit_seconds: register!(
                "batch_commit_seconds",
                "Time to commit one batch to MongoDB",
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            ),
            end_to_end_lag_seconds: register!(
                "end_to_end_lag_seconds",
                "Seconds between the source commit of the newest transaction in MongoDB and its commit there",
                Gauge::<f64, AtomicU64>::default()
            ),
            wal_records: register!("wal_records", "Records stored in the WAL", Gauge::default()),
            wal_bytes: register!("wal_bytes", "Bytes of records stored in the WAL", Gauge::default()),
            wal_unacked_records: register!("wal_unacked_records", "WAL records MongoDB has not acknowledged", Gauge::default()),
            wal_unacked_bytes: register!("wal_unacked_bytes", "Bytes of WAL records MongoDB has not acknowledged", Gauge::default()),
            wal_oldest_unacked_age_seconds: register!(
                "wal_oldest_unacked_age_seconds",
                "Age of the oldest unacknowledged WAL record",
                Gauge::<f64, AtomicU64>::default()
            ),
            wal_disk_bytes: register!("wal_disk_bytes", "Bytes the WAL occupies on disk", Gauge::default()),
            ingest_paused: register!("ingest_paused", "1 while the ingester waits for WAL space (wal.max_bytes)", Gauge::default()),
            breaker_state: register!("breaker_state", "The forwarder's circuit breaker: 0 closed, 1 half-open, 2 open", Gauge::default()),
            breaker_opened: register!("breaker_opened", "Times the circuit breaker has opened", Gauge::default()),
            stage_stuck_seconds: register!(
                "stage_stuck_seconds",
                "Seconds a stage has been failing at the same position, once that exceeds service.stuck_after; 0 when not stuck",
                Family::<StageLabel, Gauge<f64, AtomicU64>>::default()
            ),
            lease_epoch: register!("lease_epoch", "The lease's epoch as this instance last saw it ([lease]; 0 when off or not read yet)", Gauge::default()),
            lease_is_leader: register!("lease_is_leader", "1 while this instance holds the lease and relays, 0 while it waits as a standby (or [lease] is off)", Gauge::default()),
            lease_takeovers: register!("lease_takeovers", "Times this instance took the lease and became the leader", Counter::default()),
            registry: {
                let build = crate::build_info::build_info();
                let mut labels = vec![("version".to_string(), build.version.to_string())];
                if let Some(commit) = build.commit {
                    labels.push(("commit".to_string(), commit.to_string()));
                }
                labels.push(("wal_format".to_string(), build.wal_format.to_string()));
                registry.register(
                    "build",
                    "The sdl version, its git commit (when known) and the WAL record format it reads and writes",
                    Info::new(labels),
                );
                registry
            },
        }
    }

    /// Notes a binlog event read from the source (its header time, Unix seconds; 0 for
    /// artificial events) and whether it is a heartbeat, which the source sends only when it has
    /// nothing newer.
    pub fn source_event(&self, unix_seconds: u32, heartbeat: bool) {
        if heartbeat {
            self.caught_up.store(true, Ordering::Relaxed);
            self.heartbeats.fetch_add(1, Ordering::Relaxed);
        } else if unix_seconds != 0 {
            self.newest_event_unix
                .store(u64::from(unix_seconds), Ordering::Relaxed);
            self.caught_up.store(false, Ordering::Relaxed);
        }
    }

    /// Heartbeats received from the source so far.
    pub fn source_heartbeats(&self) -> u64 {
        self.heartbeats.load(Ordering::Relaxed)
    }

    /// The binlog stream was lost: until the source says again that it has nothing newer, the lag
    /// counts from the newest event read.
    pub fn source_lost(&self) {
        self.caught_up.store(false, Ordering::Relaxed);
    }

    /// Seconds the ingester is behind the source: now minus the newest event's header time, 0
    /// when a heartbeat came after it, `None` before the first event.
    pub fn source_lag(&self) -> Option<f64> {
        if self.caught_up.load(Ordering::Relaxed) {
            return Some(0.0);
        }
        match self.newest_event_unix.load(Ordering::Relaxed) {
            0 => None,
            newest => seconds_since(newest as u32),
        }
    }

    /// Counts a stage resuming after a failure.
    pub fn stage_restarted(&self, stage: Stage) {
        self.stage_restarts
            .get_or_create(&StageLabel { stage })
            .inc();
    }

    /// How many times `stage` has resumed after a failure.
    pub fn stage_restarts(&self, stage: Stage) -> u64 {
        self.stage_restarts
            .get_or_create(&StageLabel { stage })
            .get()
    }

    /// Sets the state gauges and renders every metric in the Prometheus text format.
    pub fn render(
        &self,
        wal: Option<&sdl_wal::WalStats>,
        ingest: &IngestState,
        breaker: &BreakerStatus,
        stuck: &StuckReport,
    ) -> String {
        if let Some(w) = wal {
            self.wal_records.set(w.records as i64);
            self.wal_bytes.set(w.bytes as i64);
            self.wal_unacked_records.set(w.unacked_records as i64);
            self.wal_unacked_bytes.set(w.unacked_bytes as i64);
            self.wal_oldest_unacked_age_seconds
                .set(w.oldest_unacked_age_ms.unwrap_or(0) as f64 / 1000.0);
            self.wal_disk_bytes.set(w.disk_bytes as i64);
        }
        self.ingest_paused
            .set(matches!(ingest, IngestState::PausedWalFull { .. }) as i64);
        self.breaker_state.set(match breaker.state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        });
        self.breaker_opened.set(breaker.times_opened as i64);
        self.source_lag_seconds
            .set(self.source_lag().unwrap_or(0.0));
        // Both stages appear from the first scrape on, at 0 until they restart.
        for stage in [Stage::Ingester, Stage::Forwarder] {
            let _ = self.stage_restarts.get_or_create(&StageLabel { stage });
            self.stage_stuck_seconds
                .get_or_create(&StageLabel { stage })
                .set(stuck.get(stage).map_or(0.0, |s| s.seconds()));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The `stage` label of `sdl_stage_restarts_total` and `sdl_stage_stuck_seconds`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Stage {
    Ingester,
    Forwarder,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingester => "ingester",
            Stage::Forwarder => "forwarder",
        }
    }
}

impl EncodeLabelValue for Stage {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.name())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: Stage,
}

/// Seconds from a binlog header timestamp (Unix seconds) to now; 0 for the zero timestamp that
/// heartbeats and artificial events carry.
pub fn seconds_since(unix_seconds: u32) -> Option<f64> {
    if unix_seconds == 0 {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some((now - f64::from(unix_seconds)).max(0.0))
}
