//! The documented range of every duration, size and count in the config ([`BOUNDS`]), and the
//! check that refuses a value outside it with the key, the value and the range.

use std::path::Path;
use std::time::Duration;

use super::{byte_size, Config, ConfigError};

/// The range a numeric setting must fall in (inclusive).
#[derive(Debug, Clone, Copy)]
pub enum Range {
    Duration { min: Duration, max: Duration },
    Bytes { min: u64, max: u64 },
    Count { min: u64, max: u64 },
}

/// One setting's accepted range and why it ends where it does.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub key: &'static str,
    pub range: Range,
    pub why: &'static str,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const DAY: u64 = 86_400;
const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;
const PIB: u64 = 1 << 50;

/// Every duration, size and count in the config with its range, checked at load (exit 2 outside
/// it). deploy/sdl.toml and docs/operations.md ("Configuration ranges") say the same.
pub const BOUNDS: &[Bound] = &[
    Bound { key: "shutdown_timeout", range: Range::Duration { min: secs(1), max: secs(3600) }, why: "the stages need a moment to flush; keep it below systemd's TimeoutStopSec" },
    Bound { key: "source.connect_timeout", range: Range::Duration { min: millis(100), max: secs(600) }, why: "one connection attempt" },
    Bound { key: "source.heartbeat_interval", range: Range::Duration { min: millis(100), max: secs(3600) }, why: "a silent connection is presumed dead after 3 intervals" },
    Bound { key: "source.min_binlog_retention", range: Range::Duration { min: secs(0), max: secs(3650 * DAY) }, why: "a warning threshold; 0 never warns" },
    Bound { key: "wal.group_commit_bytes", range: Range::Bytes { min: 0, max: 256 * MIB }, why: "a group is held in memory until its fsync; 0 flushes every transaction alone" },
    Bound { key: "wal.group_commit_delay", range: Range::Duration { min: secs(0), max: secs(10) }, why: "every transaction in a group waits this long to be durable; 0 flushes every transaction alone" },
    Bound { key: "wal.prune_interval", range: Range::Duration { min: millis(100), max: secs(3600) }, why: "0 would prune in a busy loop; a long pause lets acknowledged records pile up" },
    Bound { key: "wal.retain_acked", range: Range::Duration { min: secs(0), max: secs(3650 * DAY) }, why: "how long acknowledged records are kept" },
    Bound { key: "wal.retain_acked_bytes", range: Range::Bytes { min: 0, max: PIB }, why: "acknowledged records kept on disk" },
    Bound { key: "wal.max_bytes", range: Range::Bytes { min: MIB, max: PIB }, why: "below 1 MiB a single large transaction could not be written" },
    Bound { key: "sink.batch_max_documents", range: Range::Count { min: 1, max: 100_000 }, why: "one batch is one MongoDB transaction" },
    Bound { key: "sink.batch_max_bytes", range: Range::Bytes { min: 1024, max: MAX_BATCH_BYTES as u64 }, why: "a batch is one MongoDB transaction, which must finish well within MongoDB's 60 s transaction limit" },
    Bound { key: "sink.connect_timeout", range: Range::Duration { min: millis(100), max: secs(600) }, why: "server selection and one connection attempt" },
    Bound { key: "sink.staging_ttl", range: Range::Duration { min: secs(1), max: secs(3650 * DAY) }, why: "a MongoDB TTL index on createdAt" },
    Bound { key: "sink.breaker_failures", range: Range::Count { min: 1, max: 1000 }, why: "consecutive failed commits before the circuit breaker opens" },
    Bound { key: "sink.retry_max_delay", range: Range::Duration { min: millis(100), max: secs(3600) }, why: "the first retry waits 100ms" },
    Bound { key: "admin.header_read_timeout", range: Range::Duration { min: millis(100), max: secs(300) }, why: "a client slower than this holds one of admin.max_connections" },
    Bound { key: "service.stuck_after", range: Range::Duration { min: secs(1), max: secs(DAY) }, why: "how long a stage may retry at one position before it counts as stuck" },
    Bound { key: "lease.duration", range: Range::Duration { min: secs(2), max: secs(600) }, why: "a standby takes over this long after the leader stopped renewing; renewed every third of it" },
    Bound { key: "source.snapshot_chunk_rows", range: Range::Count { min: 1, max: 1_000_000 }, why: "rows read by one chunk query and held in memory until written to the WAL" },
    Bound { key: "source.snapshot_rows_per_second", range: Range::Count { min: 0, max: 1_000_000_000 }, why: "a limit on the snapshot's reads; 0 is no limit" },
    Bound { key: "source.snapshot_bytes_per_second", range: Range::Bytes { min: 0, max: TIB }, why: "a limit on the snapshot's reads; 0 is no limit" },
    Bound { key: "admin.max_connections", range: Range::Count { min: 1, max: 1024 }, why: "connections the admin endpoint serves at once" },
];

/// The bound of `key` (every key checked in [`Config::check_bounds`] has one).
fn bound(key: &str) -> &'static Bound {
    BOUNDS
        .iter()
        .find(|b| b.key == key)
        .unwrap_or_else(|| panic!("no bound for {key}"))
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Range::Duration { min, max } => {
                write!(f, "between {} and {}", whole_units(min), whole_units(max))
            }
            Range::Bytes { min, max } => write!(
                f,
                "between {} and {}",
                byte_size::describe(min),
                byte_size::describe(max)
            ),
            Range::Count { min, max } => write!(f, "between {min} and {max}"),
        }
    }
}

/// A bound as written in deploy/sdl.toml: in its largest whole unit ("3650days", not
/// "9years 11months ...").
fn whole_units(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return humantime::format_duration(d).to_string();
    }
    let (unit, name) = [(DAY, "days"), (3600, "h"), (60, "m"), (1, "s")]
        .into_iter()
        // One day reads better as "24h".
        .find(|&(unit, _)| secs.is_multiple_of(unit) && !(unit == DAY && secs == DAY))
        .expect("1 divides everything");
    format!("{}{name}", secs / unit)
}

/// A value to check against its bound.
enum Setting {
    Duration(Duration),
    Number(u64),
}

/// The largest `sink.batch_max_bytes` accepted: 64 MiB keeps one transaction's commit far below
/// MongoDB's 60 s `transactionLifetimeLimitSeconds` on any reasonable link.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

impl Config {
    /// Every setting of [`BOUNDS`] within its range.
    pub(super) fn check_bounds(&self, path: &Path) -> Result<(), ConfigError> {
        use Setting::{Duration as D, Number as N};
        let (source, wal, sink, admin) = (&self.source, &self.wal, &self.sink, &self.admin);
        let settings = [
            ("shutdown_timeout", Some(D(self.shutdown_timeout))),
            ("source.connect_timeout", Some(D(source.connect_timeout))),
            (
                "source.snapshot_chunk_rows",
                Some(N(source.snapshot_chunk_rows as u64)),
            ),
            (
                "source.snapshot_rows_per_second",
                Some(N(source.snapshot_rows_per_second)),
            ),
            (
                "source.snapshot_bytes_per_second",
                Some(N(source.snapshot_bytes_per_second)),
            ),
            (
                "source.heartbeat_interval",
                Some(D(source.heartbeat_interval)),
            ),
            (
                "source.min_binlog_retention",
                Some(D(source.min_binlog_retention)),
            ),
            (
                "wal.group_commit_bytes",
                Some(N(wal.group_commit_bytes as u64)),
            ),
            ("wal.group_commit_delay", Some(D(wal.group_commit_delay))),
            ("wal.prune_interval", Some(D(wal.prune_interval))),
            ("wal.retain_acked", wal.retain_acked.map(D)),
            ("wal.retain_acked_bytes", wal.retain_acked_bytes.map(N)),
            ("wal.max_bytes", Some(N(wal.max_bytes))),
            (
                "sink.batch_max_documents",
                Some(N(sink.batch_max_documents as u64)),
            ),
            ("sink.batch_max_bytes", Some(N(sink.batch_max_bytes as u64))),
            ("sink.connect_timeout", Some(D(sink.connect_timeout))),
            ("sink.staging_ttl", Some(D(sink.staging_ttl))),
            (
                "sink.breaker_failures",
                Some(N(u64::from(sink.breaker_failures))),
            ),
            ("sink.retry_max_delay", Some(D(sink.retry_max_delay))),
            (
                "admin.header_read_timeout",
                Some(D(admin.header_read_timeout)),
            ),
            (
                "admin.max_connections",
                Some(N(admin.max_connections as u64)),
            ),
            ("service.stuck_after", Some(D(self.service.stuck_after))),
            ("lease.duration", Some(D(self.lease.duration))),
        ];
        for (key, value) in settings {
            let Some(value) = value else { continue };
            let bound = bound(key);
            let (inside, shown) = match (bound.range, value) {
                (Range::Duration { min, max }, D(v)) => (
                    (min..=max).contains(&v),
                    humantime::format_duration(v).to_string(),
                ),
                (Range::Bytes { min, max }, N(v)) => {
                    ((min..=max).contains(&v), byte_size::describe(v))
                }
                (Range::Count { min, max }, N(v)) => ((min..=max).contains(&v), v.to_string()),
                _ => unreachable!("{key}: the bound's kind differs from the setting's"),
            };
            if !inside {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: bound.key,
                    message: format!(
                        "{shown} is out of range: use a value {} ({})",
                        bound.range, bound.why
                    ),
                });
            }
        }
        Ok(())
    }
}
