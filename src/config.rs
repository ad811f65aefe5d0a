//! The TOML configuration: parsing, defaults and validation.
//!
//! Guarantees: an unknown key, a missing required key, a malformed value or an unusable URL is
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
    /// Where column names come from (see [`ColumnNames`]).
    #[serde(default)]
    pub column_names: ColumnNames,
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
    #[serde(default = "default_database")]
    pub database: String,
    /// Upper bounds for one MongoDB transaction.
    #[serde(default = "default_batch_documents")]
    pub batch_max_documents: usize,
    #[serde(default = "default_batch_bytes")]
    pub batch_max_bytes: usize,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
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
        Self::parse(path, &text)
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
        if self.wal.dir.as_os_str().is_empty() {
            return Err(invalid("wal.dir", "must not be empty".into()));
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
