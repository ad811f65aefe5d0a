//! The TOML configuration: parsing, defaults and validation.
//!
//! Guarantees: an unknown key, a missing required key, a malformed value, an unusable URL or an
//! unusable TLS file (missing, unreadable, not PEM, a key that does not fit its certificate) is
//! rejected before anything connects, with an error that names the file, the key and the fix.
//! Every duration and size has a documented range ([`BOUNDS`]: `deploy/sdl.toml` and
//! docs/operations.md list the same); a value outside it is refused with the key, the value and
//! the range, so no setting can make a stage busy-loop (`wal.prune_interval = "0s"`) or overflow a
//! deadline (`wal.group_commit_delay = "1000000years"`). Byte sizes are a plain integer of bytes or
//! a number with a unit (see [`byte_size`]). Nothing here touches the network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}. Pass an existing file with --config (deploy/sdl.toml is a documented example)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}. Fix that line; deploy/sdl.toml lists every key with its default")]
    Parse { path: PathBuf, message: String },
    #[error("the config file {path} has a bad value for `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub wal: WalConfig,
    pub sink: SinkConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub service: ServiceConfig,
    /// After SIGTERM/SIGINT, how long the stages may take to stop (the ingester flushing, the
    /// forwarder finishing its commit) before the process exits anyway.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Problems worth a warning found while loading (not part of the file).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The local admin endpoint (`host:port`); empty turns it off.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// How long a client may take to send a request's headers (from the moment its connection is
    /// accepted, and between requests on a kept-alive connection) before it is disconnected.
    #[serde(
        default = "default_admin_header_read_timeout",
        with = "humantime_serde"
    )]
    pub header_read_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog until one closes.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            header_read_timeout: default_admin_header_read_timeout(),
            max_connections: default_admin_max_connections(),
        }
    }
}

fn default_admin_header_read_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_admin_max_connections() -> usize {
    16
}

/// `[service]`: how the running service judges its own health.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// How long a stage may retry a transient error without getting past its position before it
    /// counts as stuck (logged at ERROR, `/readyz` 503, `sdl_stage_stuck_seconds`). Retrying goes
    /// on regardless.
    #[serde(default = "default_stuck_after", with = "humantime_serde")]
    pub stuck_after: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            stuck_after: default_stuck_after(),
        }
    }
}

fn default_stuck_after() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_admin_listen() -> String {
    "127.0.0.1:9187".into()
}

impl AdminConfig {
    pub fn listen_addr(&self) -> Option<String> {
        (!self.listen.trim().is_empty()).then(|| self.listen.trim().to_string())
    }
}

/// Where to begin when the WAL is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// The source's executed GTID set at start-up: only changes from now on.
    Current,
    /// The oldest position the source still has binlogs for.
    Earliest,
    /// An explicit GTID position (MariaDB `0-1-42,...` or a MySQL GTID set).
    Gtid(String),
}

impl<'de> Deserialize<'de> for StartFrom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.trim() {
            "current" => StartFrom::Current,
            "earliest" => StartFrom::Earliest,
            other => {
                // A GTID position of either flavor (the source's flavor is learnt at connect),
                // or the partial form MongoDB's offset document holds.
                use crate::source::{gtid, Flavor};
                let valid = gtid::MariadbPosition::parse(other).is_ok()
                    || gtid::MysqlGtidSet::parse(other).is_ok()
                    || [Flavor::Mariadb, Flavor::Mysql]
                        .into_iter()
                        .any(|flavor| gtid::ResumePoint::parse(flavor, other).is_ok());
                if !valid {
                    return Err(serde::de::Error::custom(format!(
                        "source.start = `{other}` is not a valid start: use \"current\" (changes from now on, the default), \"earliest\" (from the oldest binlog the source still has) or a GTID position (MariaDB: one domain-server-sequence per domain, like \"0-1-42\"; MySQL: a GTID set, like \"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-42\")"
                    )));
                }
                StartFrom::Gtid(other.to_string())
            }
        })
    }
}

fn default_start() -> StartFrom {
    StartFrom::Current
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `mysql://user:password@host:port`
    pub url: String,
    /// The replica server id sdl presents to the source; must differ from every other server id.
    pub server_id: u32,
    #[serde(default = "default_start")]
    pub start: StartFrom,
    /// Names this source in the sink's offset collection (`binlog_offsets._id`).
    #[serde(default = "default_source_name")]
    pub name: String,
    /// How long to wait for the source to accept a connection.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The source sends a heartbeat event when it has nothing else to send for this long; a
    /// connection that brings neither events nor heartbeats for 3 intervals is presumed dead and
    /// replaced.
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Where column names come from (see [`ColumnNames`]).
    #[serde(default)]
    pub column_names: ColumnNames,
    /// A file holding the source password (used instead of the one in `url`); the environment
    /// variable `SDL_SOURCE_PASSWORD` overrides both.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `sdl check` (and `sdl run`) warn when the source expires binlogs sooner than this: it bounds
    /// how long sdl may be down, or paused by a full WAL, without losing its place.
    #[serde(default = "default_min_binlog_retention", with = "humantime_serde")]
    pub min_binlog_retention: Duration,
    /// TLS to the source (see [`TlsMode`]).
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM CA certificate(s) the server's certificate must chain to; unset: the built-in Mozilla
    /// roots (a public CA).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) sdl presents, with `tls_key_file`; for users created
    /// `REQUIRE X509` / `REQUIRE SUBJECT ...`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the host in `url` (connecting
    /// by IP address, through a tunnel or a load balancer). The name is always checked.
    #[serde(default)]
    pub tls_server_name: Option<String>,
}

/// `source.tls` / `sink.tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// sdl asks for no TLS (TLS options written in the URL itself still apply).
    #[default]
    Off,
    /// TLS required, the server's certificate verified against `tls_ca_file` (or the built-in
    /// roots) and its host name checked; a client certificate presented when one is configured.
    On,
}

fn default_min_binlog_retention() -> Duration {
    Duration::from_secs(14 * 86_400)
}

impl SourceConfig {
    /// The password to log in with, if it does not come from `url`.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        secret(
            "SDL_SOURCE_PASSWORD",
            self.password_file.as_deref(),
            "source.password_file",
        )
    }
}

impl SinkConfig {
    /// The password to log in with, if it does not come from `url`.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        secret(
            "SDL_SINK_PASSWORD",
            self.password_file.as_deref(),
            "sink.password_file",
        )
    }
}

/// A secret from the environment (first) or a file (trailing newline removed).
fn secret(
    env: &str,
    file: Option<&Path>,
    key: &'static str,
) -> Result<Option<String>, ConfigError> {
    if let Ok(value) = std::env::var(env) {
        return Ok(Some(value));
    }
    let Some(file) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Invalid {
        path: file.to_path_buf(),
        key,
        message: format!("cannot read the password file: {e}"),
    })?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
}

fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(5)
}

/// Where the ingester takes column names, ENUM/SET members and primary keys from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnNames {
    /// From each TABLE_MAP event (`binlog_row_metadata=FULL`, required): always the schema the row
    /// was written with.
    #[default]
    TableMap,
    /// From `information_schema.COLUMNS` when a TABLE_MAP carries no names
    /// (`binlog_row_metadata=MINIMAL`). Racy: the schema may have changed since the row was
    /// written; sdl refuses a table whose column count or ENUM/SET positions no longer match.
    InformationSchema,
}

/// `source.name` when the config does not set one.
pub fn default_source_name() -> String {
    "default".into()
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// Several source transactions share one fsync: a group is flushed once it holds this many
    /// bytes of change data, or when `group_commit_delay` has passed since its first transaction.
    #[serde(
        default = "default_group_bytes",
        deserialize_with = "byte_size::deserialize"
    )]
    pub group_commit_bytes: usize,
    #[serde(default = "default_group_delay", with = "humantime_serde")]
    pub group_commit_delay: Duration,
    /// How often acknowledged records are checked against the retention settings.
    #[serde(default = "default_prune_interval", with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Acknowledged records are kept this long after they were appended (unset: no age limit).
    #[serde(default = "default_retain_acked", with = "humantime_serde")]
    pub retain_acked: Option<Duration>,
    /// ... and at most this many bytes of acknowledged records (unset: no size limit).
    #[serde(default, deserialize_with = "byte_size::deserialize_option")]
    pub retain_acked_bytes: Option<u64>,
    /// When unacknowledged records reach this size, the ingester stops reading the binlog until
    /// the forwarder has freed space (backpressure). Nothing is dropped.
    #[serde(
        default = "default_max_bytes",
        deserialize_with = "byte_size::deserialize"
    )]
    pub max_bytes: u64,
}

fn default_prune_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_retain_acked() -> Option<Duration> {
    Some(Duration::from_secs(24 * 3600))
}

fn default_max_bytes() -> u64 {
    8 << 30
}

impl WalConfig {
    pub fn retention(&self) -> sdl_wal::Retention {
        sdl_wal::Retention {
            max_age: self.retain_acked,
            max_bytes: self.retain_acked_bytes,
        }
    }
}

fn default_group_bytes() -> usize {
    4 << 20
}

fn default_group_delay() -> Duration {
    Duration::from_millis(5)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `mongodb://host:port/?replicaSet=rs0`
    pub url: String,
    /// A file holding the MongoDB password (used instead of the one in `url`); the environment
    /// variable `SDL_SINK_PASSWORD` overrides both.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_database")]
    pub database: String,
    /// Upper bounds for one MongoDB transaction.
    #[serde(default = "default_batch_documents")]
    pub batch_max_documents: usize,
    #[serde(
        default = "default_batch_bytes",
        deserialize_with = "byte_size::deserialize"
    )]
    pub batch_max_bytes: usize,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whether batches are committed in MongoDB transactions (see [`TransactionMode`]).
    #[serde(default)]
    pub transactions: TransactionMode,
    /// How long `row_changes_staging` entries are kept (a TTL index on `createdAt`).
    #[serde(default = "default_staging_ttl", with = "humantime_serde")]
    pub staging_ttl: Duration,
    /// Consecutive failed commits after which the circuit breaker opens.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// The longest pause between two probes while the circuit breaker is open.
    #[serde(default = "default_retry_max_delay", with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// TLS to MongoDB (see [`TlsMode`]). The driver always checks the host name.
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM CA certificate(s) the servers' certificates must chain to; unset: the built-in Mozilla
    /// roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// One PEM file holding the client certificate and its private key (MongoDB's
    /// `tlsCertificateKeyFile`), for X.509 authentication or servers that require client
    /// certificates.
    #[serde(default)]
    pub tls_cert_key_file: Option<PathBuf>,
}

/// `sink.transactions`: how a batch is made atomic in MongoDB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransactionMode {
    /// Transactions when the server supports them (a replica set or a sharded cluster), else off.
    #[default]
    Auto,
    /// Transactions always; a standalone server is refused at start.
    On,
    /// No transactions: idempotent inserts, then the offset (works on a standalone server).
    Off,
}

fn default_staging_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_breaker_failures() -> u32 {
    3
}

fn default_retry_max_delay() -> Duration {
    Duration::from_secs(30)
}

fn default_database() -> String {
    "audit".into()
}

fn default_batch_documents() -> usize {
    1000
}

fn default_batch_bytes() -> usize {
    8 << 20
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

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

/// Byte sizes: a plain integer of bytes, or a number (fractions allowed) with a unit, read by the
/// `bytesize` crate: `B`; `kB` `MB` `GB` `TB` (or `k` `M` `G` `T`: powers of 1000); `KiB` `MiB`
/// `GiB` `TiB` (or `Ki` `Mi` `Gi` `Ti`: powers of 1024); case-insensitive, a space allowed before
/// the unit. `"8GB"` is 8000000000 bytes, `"8GiB"` 8589934592, `"64k"` 64000.
pub mod byte_size {
    use serde::de::{self, Deserializer, Visitor};

    pub const GRAMMAR: &str = "an integer of bytes, or a number with a unit: kB MB GB TB (powers of 1000) or KiB MiB GiB TiB (powers of 1024), e.g. \"8GiB\", \"512 MiB\", \"64kB\"";

    /// Parses a size written with or without a unit.
    pub fn parse(text: &str) -> Result<u64, String> {
        text.trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64())
            .map_err(|_| format!("`{text}` is not a byte size: use {GRAMMAR}"))
    }

    /// `n` bytes, and in binary units when that is shorter to read.
    pub fn describe(n: u64) -> String {
        if n >= 1024 {
            format!("{n} bytes ({})", bytesize::ByteSize(n).display().iec())
        } else {
            format!("{n} bytes")
        }
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(GRAMMAR)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative: use {GRAMMAR}")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse(v).map_err(E::custom)
        }
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let bytes = d.deserialize_any(SizeVisitor)?;
        T::try_from(bytes)
            .map_err(|_| de::Error::custom(format!("{bytes} bytes is too large for this machine")))
    }

    pub fn deserialize_option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        deserialize(d).map(Some)
    }
}

/// The largest `sink.batch_max_bytes` accepted: 64 MiB keeps one transaction's commit far below
/// MongoDB's 60 s `transactionLifetimeLimitSeconds` on any reasonable link.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// A TOML error as one readable line: `line 4, column 9: <what is wrong>`. toml's own text draws
/// the line with a caret under the problem over several lines, which reads as noise once a log
/// puts it on one line; the final error stays one line (the `sdl: error:` line operators grep).
fn toml_error_message(text: &str, e: &toml::de::Error) -> String {
    let what = e
        .message()
        .trim()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            // The line itself names the key, which a value's own error (e.g. a bad byte size)
            // does not.
            let line_text = text[line_start..].lines().next().unwrap_or_default().trim();
            if line_text.is_empty() || line_text.chars().count() > 120 {
                format!("line {line}, column {column}: {what}")
            } else {
                format!("line {line}, column {column}: {what} (the line reads `{line_text}`)")
            }
        }
        None => what,
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(path, &text)?;
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o004 != 0 {
                config.warnings.push(format!(
                    "the config file {} is readable by every user and may hold passwords: chmod 600 it (or 640 with a dedicated group), or move the passwords to source.password_file / sink.password_file or the SDL_SOURCE_PASSWORD / SDL_SINK_PASSWORD environment variables",
                    path.display()
                ));
            }
        }
        for (key, file) in [
            ("source.password_file", &config.source.password_file),
            ("sink.password_file", &config.sink.password_file),
        ] {
            if let Some(file) = file.as_deref().filter(|f| crate::tls::world_readable(f)) {
                config.warnings.push(format!(
                    "{key} = {} holds a password and is readable by every user: chmod 600 it (or 640 with a dedicated group)",
                    file.display()
                ));
            }
        }
        for (key, file) in [
            ("source.tls_key_file", &config.source.tls_key_file),
            ("sink.tls_cert_key_file", &config.sink.tls_cert_key_file),
        ] {
            if let Some(file) = file.as_deref().filter(|f| crate::tls::world_readable(f)) {
                config.warnings.push(format!(
                    "{key} = {} holds a private key and is readable by every user: chmod 600 it (or 640 with a dedicated group)",
                    file.display()
                ));
            }
        }
        Ok(config)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: toml_error_message(text, &e),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        if let Err(e) = mysql_async::Opts::from_url(&self.source.url) {
            return Err(invalid(
                "source.url",
                format!(
                    "{} (expected a mysql:// URL with user, password, host and port)",
                    crate::redact::redact_error(&e.to_string())
                ),
            ));
        }
        self.check_bounds(path)?;
        if self.source.server_id == 0 {
            return Err(invalid(
                "source.server_id",
                "0 is not allowed: a replica needs a non-zero server id that no other server uses"
                    .into(),
            ));
        }
        if !self.sink.url.starts_with("mongodb://") && !self.sink.url.starts_with("mongodb+srv://")
        {
            return Err(invalid(
                "sink.url",
                "expected a MongoDB connection string starting with mongodb:// or mongodb+srv://"
                    .into(),
            ));
        }
        // The syntax only (no DNS lookup: a `mongodb+srv://` name that does not resolve yet is a
        // network problem, retried, not a configuration error).
        if let Err(e) = mongodb::options::ConnectionString::parse(&self.sink.url) {
            return Err(invalid(
                "sink.url",
                format!(
                    "not a valid MongoDB connection string: {}",
                    crate::redact::redact_error(&e.to_string())
                ),
            ));
        }
        if self.sink.database.is_empty() || self.sink.database.contains(['/', '.', ' ', '$']) {
            return Err(invalid(
                "sink.database",
                format!(
                    "`{}` is not a valid MongoDB database name",
                    self.sink.database
                ),
            ));
        }
        if self.wal.dir.as_os_str().is_empty() {
            return Err(invalid("wal.dir", "must not be empty".into()));
        }
        self.validate_tls(path)
    }

    /// Every setting of [`BOUNDS`] within its range.
    fn check_bounds(&self, path: &Path) -> Result<(), ConfigError> {
        use Setting::{Duration as D, Number as N};
        let (source, wal, sink, admin) = (&self.source, &self.wal, &self.sink, &self.admin);
        let settings = [
            ("shutdown_timeout", Some(D(self.shutdown_timeout))),
            ("source.connect_timeout", Some(D(source.connect_timeout))),
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

    /// The TLS keys: files only with `tls = "on"`, a client certificate only with its key, and
    /// every file readable and usable (src/tls.rs).
    fn validate_tls(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let (source, sink) = (&self.source, &self.sink);
        let source_files = [
            ("source.tls_ca_file", &source.tls_ca_file),
            ("source.tls_cert_file", &source.tls_cert_file),
            ("source.tls_key_file", &source.tls_key_file),
        ];
        let sink_files = [
            ("sink.tls_ca_file", &sink.tls_ca_file),
            ("sink.tls_cert_key_file", &sink.tls_cert_key_file),
        ];
        for (mode, section, files) in [
            (source.tls, "source", &source_files[..]),
            (sink.tls, "sink", &sink_files[..]),
        ] {
            if mode == TlsMode::Off {
                if let Some((key, _)) = files.iter().find(|(_, file)| file.is_some()) {
                    return Err(invalid(
                        key,
                        format!("is set but {section}.tls is \"off\": set {section}.tls = \"on\" to use it, or remove it"),
                    ));
                }
            }
        }
        if let Some(name) = &source.tls_server_name {
            if source.tls == TlsMode::Off {
                return Err(invalid(
                    "source.tls_server_name",
                    "is set but source.tls is \"off\": set source.tls = \"on\" to use it, or remove it".into(),
                ));
            }
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(invalid(
                    "source.tls_server_name",
                    format!("`{name}` is neither a DNS name nor an IP address: give the name the server's certificate carries"),
                ));
            }
        }
        for (key, file) in [source_files[0], sink_files[0]] {
            if let Some(file) = file {
                crate::tls::check_ca_file(file).map_err(|e| {
                    invalid(
                        key,
                        format!(
                            "{e}. Give the PEM file of the CA that signed the server's certificate"
                        ),
                    )
                })?;
            }
        }
        match (&source.tls_cert_file, &source.tls_key_file) {
            (Some(cert), Some(key)) => {
                crate::tls::check_client_identity(cert, key).map_err(|(part, e)| match part {
                    crate::tls::IdentityPart::Certificate => invalid(
                        "source.tls_cert_file",
                        format!("{e}. Give the PEM client certificate sdl presents to the source"),
                    ),
                    crate::tls::IdentityPart::Key => invalid(
                        "source.tls_key_file",
                        format!("{e}. Give the PEM private key of source.tls_cert_file"),
                    ),
                })?
            }
            (Some(_), None) => {
                return Err(invalid(
                    "source.tls_key_file",
                    "is missing: source.tls_cert_file needs its private key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "source.tls_cert_file",
                    "is missing: source.tls_key_file is the key of a client certificate, which is not set".into(),
                ))
            }
            (None, None) => {}
        }
        if let Some(file) = &sink.tls_cert_key_file {
            crate::tls::check_client_identity(file, file).map_err(|(_, e)| {
                invalid(
                    "sink.tls_cert_key_file",
                    format!("{e}. Give one PEM file holding the client certificate and its private key (`cat client.crt client.key > client.pem`)"),
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[source]
url = "mysql://repl:pw@127.0.0.1:3306"
server_id = 4242
[wal]
dir = "/tmp/x"
[sink]
url = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!(c.source.start, StartFrom::Current);
        assert_eq!(c.sink.database, "audit");
        assert_eq!(c.source.name, "default");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.sink.transactions, TransactionMode::Auto);
        assert_eq!(c.sink.staging_ttl, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(c.sink.breaker_failures, 3);
        assert_eq!(c.sink.retry_max_delay, Duration::from_secs(30));
    }

    #[test]
    fn the_documented_example_parses_with_the_defaults() {
        let c = Config::parse(
            Path::new("deploy/sdl.toml"),
            include_str!("../deploy/sdl.toml"),
        )
        .unwrap();
        let d = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!(c.sink.staging_ttl, d.sink.staging_ttl);
        assert_eq!(c.sink.transactions, d.sink.transactions);
        assert_eq!(c.sink.breaker_failures, d.sink.breaker_failures);
        assert_eq!(c.sink.retry_max_delay, d.sink.retry_max_delay);
        assert_eq!(c.sink.batch_max_bytes, d.sink.batch_max_bytes);
        assert_eq!(c.service.stuck_after, d.service.stuck_after);
    }

    #[test]
    fn transactions_mode_is_parsed_and_checked() {
        let with = |v: &str| {
            Config::parse(
                Path::new("t.toml"),
                &MINIMAL.replace("[sink]", &format!("[sink]\ntransactions = {v}")),
            )
        };
        assert_eq!(
            with("\"off\"").unwrap().sink.transactions,
            TransactionMode::Off
        );
        assert_eq!(
            with("\"on\"").unwrap().sink.transactions,
            TransactionMode::On
        );
        let err = with("\"maybe\"").unwrap_err().to_string();
        assert!(err.contains("unknown variant `maybe`"), "{err}");
    }

    #[test]
    fn start_accepts_keywords_and_gtid_sets() {
        let c = Config::parse(
            Path::new("t.toml"),
            &MINIMAL.replace("server_id = 4242", "server_id = 4242\nstart = \"0-1-5\""),
        )
        .unwrap();
        assert_eq!(c.source.start, StartFrom::Gtid("0-1-5".into()));
    }

    fn with_line(section: &str, line: &str) -> Result<Config, ConfigError> {
        let text = if section.is_empty() {
            format!("{line}\n{MINIMAL}")
        } else if MINIMAL.contains(&format!("[{section}]")) {
            MINIMAL.replace(&format!("[{section}]"), &format!("[{section}]\n{line}"))
        } else {
            format!("{MINIMAL}\n[{section}]\n{line}\n")
        };
        Config::parse(Path::new("t.toml"), &text)
    }

    #[test]
    fn byte_sizes_take_units_and_plain_integers() {
        for (written, bytes) in [
            ("8589934592", 8u64 << 30),
            ("\"8GiB\"", 8 << 30),
            ("\"8GB\"", 8_000_000_000),
            ("\"8 gb\"", 8_000_000_000),
            ("\"512 MiB\"", 512 << 20),
            ("\"1.5GiB\"", 3 << 29),
        ] {
            let c = with_line("wal", &format!("max_bytes = {written}")).unwrap();
            assert_eq!(c.wal.max_bytes, bytes, "{written}");
        }
        let c = with_line("wal", "group_commit_bytes = \"64k\"").unwrap();
        assert_eq!(c.wal.group_commit_bytes, 64_000);
        let c = with_line("sink", "batch_max_bytes = \"4MiB\"").unwrap();
        assert_eq!(c.sink.batch_max_bytes, 4 << 20);
        let c = with_line("wal", "retain_acked_bytes = \"1GiB\"").unwrap();
        assert_eq!(c.wal.retain_acked_bytes, Some(1 << 30));
        for bad in ["\"8 gigs\"", "\"GB\"", "-5", "\"\"", "1.5"] {
            let err = with_line("wal", &format!("max_bytes = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("max_bytes"), "{bad}: {err}");
        }
    }

    #[test]
    fn every_bounded_setting_refuses_values_outside_its_range() {
        let defaults = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        defaults.check_bounds(Path::new("t.toml")).unwrap();
        for bound in BOUNDS {
            let (section, key) = bound.key.split_once('.').unwrap_or(("", bound.key));
            let (below, above) = match bound.range {
                Range::Duration { min, max } => (
                    min.checked_sub(millis(1))
                        .map(|d| format!("\"{}\"", humantime::format_duration(d))),
                    format!("\"{}\"", humantime::format_duration(max + millis(1))),
                ),
                Range::Bytes { min, max } | Range::Count { min, max } => (
                    min.checked_sub(1).map(|v| v.to_string()),
                    (max + 1).to_string(),
                ),
            };
            for value in below.into_iter().chain([above]) {
                let err = with_line(section, &format!("{key} = {value}"))
                    .err()
                    .unwrap_or_else(|| panic!("{} = {value} accepted", bound.key))
                    .to_string();
                assert!(
                    err.contains(&format!("`{}`", bound.key)) && err.contains("out of range"),
                    "{}: {err}",
                    bound.key
                );
            }
        }
        // The two absurd values the issue names.
        let err = with_line("wal", "prune_interval = \"0s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 100ms and 1h"), "{err}");
        let err = with_line("wal", "group_commit_delay = \"1000000years\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wal.group_commit_delay"), "{err}");
    }

    #[test]
    fn the_documented_example_lists_every_key() {
        let example = include_str!("../deploy/sdl.toml");
        let sections = ["", "source", "wal", "sink", "admin", "log", "service"];
        for section in sections {
            // deny_unknown_fields names every key a section accepts.
            let err = with_line(section, "no_such_key = 1")
                .unwrap_err()
                .to_string();
            let expected = err
                .split("expected one of ")
                .nth(1)
                .or_else(|| err.split("expected ").nth(1))
                .and_then(|list| list.split(" (the line reads").next())
                .and_then(|list| list.split(". ").next())
                .unwrap_or_else(|| panic!("{err}"));
            for key in expected
                .split(", ")
                .map(|k| k.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
            {
                if sections.contains(&key) {
                    continue;
                }
                let listed = example.lines().any(|line| {
                    let line = line.trim_start_matches(['#', ' ']);
                    line.starts_with(&format!("{key} ")) || line.starts_with(&format!("{key}="))
                });
                assert!(listed, "deploy/sdl.toml does not list `{section}.{key}`");
            }
        }
    }

    #[test]
    fn start_refuses_an_unknown_keyword_listing_the_valid_values() {
        let with = |v: &str| {
            Config::parse(
                Path::new("t.toml"),
                &MINIMAL.replace(
                    "server_id = 4242",
                    &format!("server_id = 4242\nstart = \"{v}\""),
                ),
            )
        };
        for bad in ["latest", "0-1", "now", "3e11fa47:1-5"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("source.start = `{bad}` is not a valid start"))
                    && err.contains("\"current\"")
                    && err.contains("\"earliest\"")
                    && err.contains("GTID position"),
                "{err}"
            );
        }
        for good in [
            "0-1-5",
            "0-1-5,1-2-7",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-42",
            "0-1-5; partial 0-1-6:10",
        ] {
            assert!(with(good).is_ok(), "{good}: {:?}", with(good).err());
        }
    }

    #[test]
    fn toml_errors_name_line_and_column_on_one_readable_line() {
        let err = Config::parse(Path::new("t.toml"), "[source\nurl = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "line 1, column 8: invalid table header; expected `.`, `]` (the line reads `[source`). Fix that line"
            ),
            "{err}"
        );
        assert!(!err.contains('\n') && !err.contains(" | "), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse(
            Path::new("t.toml"),
            &MINIMAL.replace("[wal]", "[wal]\nretain = 3"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `retain`"), "{err}");
    }

    #[test]
    fn stuck_after_defaults_to_5m_and_is_bounded() {
        let d = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!(d.service.stuck_after, Duration::from_secs(300));
        let with = |v: &str| {
            Config::parse(
                Path::new("t.toml"),
                &format!("{MINIMAL}\n[service]\nstuck_after = \"{v}\"\n"),
            )
        };
        assert_eq!(
            with("3s").unwrap().service.stuck_after,
            Duration::from_secs(3)
        );
        for bad in ["500ms", "25h"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.contains("service.stuck_after") && err.contains("between 1s and 24h"),
                "{err}"
            );
        }
    }
}
