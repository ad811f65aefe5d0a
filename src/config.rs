//! The TOML configuration: parsing, defaults and validation.
//!
//! Guarantees: an unknown key, a missing required key, a malformed value, an unusable URL or an
//! unusable TLS file (missing, unreadable, not PEM, a key that does not fit its certificate) is
//! rejected before anything connects, with an error that names the file, the key and the fix.
//! Nothing here touches the network.

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
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
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
            other => StartFrom::Gtid(other.to_string()),
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

fn default_source_name() -> String {
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
    #[serde(default = "default_group_bytes")]
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
    #[serde(default)]
    pub retain_acked_bytes: Option<u64>,
    /// When unacknowledged records reach this size, the ingester stops reading the binlog until
    /// the forwarder has freed space (backpressure). Nothing is dropped.
    #[serde(default = "default_max_bytes")]
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
    #[serde(default = "default_batch_bytes")]
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

/// The largest `sink.batch_max_bytes` accepted: 64 MiB keeps one transaction's commit far below
/// MongoDB's 60 s `transactionLifetimeLimitSeconds` on any reasonable link.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

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
            message: e.to_string().trim().replace('\n', " "),
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
        if self.source.heartbeat_interval < Duration::from_millis(100)
            || self.source.heartbeat_interval > Duration::from_secs(3600)
        {
            return Err(invalid(
                "source.heartbeat_interval",
                format!(
                    "{:?} is out of range: use between 100ms and 1h",
                    self.source.heartbeat_interval
                ),
            ));
        }
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
        if self.sink.batch_max_documents == 0 || self.sink.batch_max_bytes == 0 {
            return Err(invalid(
                "sink.batch_max_documents",
                "batch limits must be greater than 0".into(),
            ));
        }
        if self.wal.max_bytes < 1 << 20 {
            return Err(invalid(
                "wal.max_bytes",
                format!(
                    "{} is too small: use at least 1048576 (1 MiB)",
                    self.wal.max_bytes
                ),
            ));
        }
        if self.sink.batch_max_bytes > MAX_BATCH_BYTES {
            return Err(invalid(
                "sink.batch_max_bytes",
                format!(
                    "{} is too large: a batch is one MongoDB transaction, which must finish well within MongoDB's 60 s transaction limit; use at most {MAX_BATCH_BYTES} (the default is 8388608)",
                    self.sink.batch_max_bytes
                ),
            ));
        }
        if self.sink.breaker_failures == 0 {
            return Err(invalid(
                "sink.breaker_failures",
                "must be at least 1".into(),
            ));
        }
        if self.sink.retry_max_delay < Duration::from_millis(100) {
            return Err(invalid(
                "sink.retry_max_delay",
                "must be at least 100ms (the first retry delay)".into(),
            ));
        }
        if self.sink.staging_ttl < Duration::from_secs(1) {
            return Err(invalid("sink.staging_ttl", "must be at least 1s".into()));
        }
        if self.wal.dir.as_os_str().is_empty() {
            return Err(invalid("wal.dir", "must not be empty".into()));
        }
        self.validate_tls(path)
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
}
