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
//!
//! Here: the sections' types, their defaults, loading and validation; the ranges and their check
//! in `bounds.rs`, `source.url`'s server list in `servers.rs`, the snapshot keys and their table
//! patterns in `snapshot.rs`, the password sources in `passwords.rs`, the TLS keys' checks in
//! `tls_files.rs`, how a TOML syntax error is printed in
//! `toml_error.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod bounds;
pub mod byte_size;
mod lease;
mod passwords;
mod servers;
mod snapshot;
mod tls_files;
mod toml_error;

pub use bounds::{Bound, Range, BOUNDS, MAX_BATCH_BYTES};
pub use lease::LeaseConfig;
pub use servers::ServerList;
pub use snapshot::{SnapshotMode, TablePattern, SYSTEM_SCHEMAS};
use toml_error::toml_error_message;

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
    /// `[lease]`: a hot standby fenced through MongoDB (off by default).
    #[serde(default)]
    pub lease: LeaseConfig,
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
                use crate::{flavor::Flavor, gtid};
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
    /// `source.url`: one `mysql://user:password@host:port` URL, or a list of them (the primary
    /// first, then replicas to fail over to, see [`SourceConfig::servers`]).
    #[serde(rename = "url")]
    pub servers: ServerList,
    /// The server this config connects to: the first of [`SourceConfig::servers`], or the one
    /// [`SourceConfig::for_server`] picked. Not a key of its own.
    #[serde(skip)]
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
    /// Whether the very first start snapshots the existing rows (see [`SnapshotMode`]).
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Which tables a snapshot reads: `db.table` patterns ([`TablePattern`]); empty: every base
    /// table outside [`SYSTEM_SCHEMAS`].
    #[serde(default)]
    pub snapshot_tables: Vec<String>,
    /// Rows read by one chunk query.
    #[serde(default = "default_snapshot_chunk_rows")]
    pub snapshot_chunk_rows: usize,
    /// The most snapshot rows read per second (0: no limit).
    #[serde(default)]
    pub snapshot_rows_per_second: u64,
    /// The most snapshot bytes read per second (0: no limit).
    #[serde(default, deserialize_with = "byte_size::deserialize")]
    pub snapshot_bytes_per_second: u64,
}

fn default_snapshot_chunk_rows() -> usize {
    10_000
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
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: toml_error_message(text, &e),
        })?;
        config.source.url = config.source.servers.0.first().cloned().unwrap_or_default();
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        self.validate_source_servers(path)?;
        self.check_bounds(path)?;
        self.validate_snapshot(path)?;
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
        self.lease.validate(path, self.sink.transactions)?;
        self.validate_tls(path)
    }
}

#[cfg(test)]
mod tests;
