//! The ingester: follows the source's binlog by GTID and appends whole transactions to the WAL.
//!
//! # Guarantees
//! - Every committed source transaction after the starting position is appended to the WAL exactly
//!   once, in binlog order, together with the GTID position after it. A transaction larger than
//!   the fragment limits (one sink batch) is appended in fragments as it is read, so memory stays
//!   bounded whatever the transaction's size; a restart inside such a transaction reads it again
//!   from its start and drops the changes the WAL already holds (see `gtid::ResumePoint`).
//! - The position is saved only in the same atomic, flushed WAL append as the transactions it
//!   covers; on restart or reconnect the stream resumes from the WAL's position, so a transaction
//!   that was half-read when the connection dropped is read again from its start.
//! - Events up to 1 GiB are read, as a replica reads them, whatever the source's
//!   `max_allowed_packet`. The connection is presumed dead after three heartbeat intervals of
//!   silence, measured byte by byte through a loopback relay ([`relay`]), so an event still
//!   arriving over a slow link is never cut.
//! - Transient failures (network, server restart, lock waits and statement timeouts on any query,
//!   information_schema included) are retried with backoff, forever. Definite failures stop the
//!   ingester with an error that says what to do, each error 1236 kind its own: purged binlogs
//!   ([`SourceError::BinlogUnavailable`]), a source whose history lacks sdl's position
//!   ([`SourceError::SourceDiverged`]), another replica with sdl's server id
//!   ([`SourceError::DuplicateServerId`]); also wrong settings, an event that cannot be decoded
//!   (a row change logged as a statement among them), WAL errors.
//! - Memory does not grow with the number of tables: TABLE_MAPs live until their transaction
//!   commits, the per-table caches are bounded, and the GTID position is not copied per
//!   transaction.
//!
//! # Assumptions
//! The source runs with `log_bin`, `binlog_format=ROW`, `binlog_row_image=FULL` and
//! `binlog_row_metadata=FULL` (checked at connect), and with GTIDs (MySQL `gtid_mode=ON`).

pub mod binlog_file;
pub mod charset;
pub mod decode;
mod flavor;
#[doc(hidden)]
pub mod fuzzing;
pub mod gtid;
pub mod json_text;
pub mod relay;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, ClientIdentity, Conn, Opts, OptsBuilder, SslOpts};
use sdl_wal::Wal;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{ColumnNames, SourceConfig, StartFrom, TlsMode, WalConfig};
use crate::event::{Change, SourceTransaction, Table, Value};
use crate::redact::redact_url;
use crate::shutdown::stopped;
use crate::status::{IngestState, IngestStatus, LastError};
pub use decode::FragmentLimits;
use decode::{DecodeError, TransactionAssembler};
pub use flavor::Flavor;
use gtid::{Position, ResumePoint};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach the source database at {url}: {detail}. Check that the server is running and that source.url has the right host and port")]
    Unreachable { url: String, detail: String },
    #[error("the source database at {url} refused the login: {detail}. Check {check}; the user needs REPLICATION SLAVE, REPLICATION CLIENT and SELECT privileges (and, for a user created REQUIRE X509/SSL, source.tls = \"on\" with a client certificate)")]
    AccessDenied {
        url: String,
        detail: String,
        /// What to check, naming where the password came from (`source.url`,
        /// `source.password_file` or `SDL_SOURCE_PASSWORD`).
        check: String,
    },
    #[error("TLS to the source database at {url} failed: {detail}. {fix}")]
    Tls {
        url: String,
        detail: String,
        fix: &'static str,
    },
    #[error("the source database is not configured for sdl: {setting} is {actual}, sdl needs {required}. {fix}")]
    Setting {
        setting: &'static str,
        actual: String,
        required: &'static str,
        fix: &'static str,
    },
    #[error("source.start / WAL position: {0}")]
    Position(#[from] gtid::GtidParseError),
    #[error("the source cannot serve the binlog sdl needs (resuming after {position}): {detail}. If the binlogs were purged, changes are missing: restore the binlog files, or re-seed deliberately by setting source.start to a GTID position and starting with an empty WAL directory")]
    BinlogUnavailable { position: String, detail: String },
    /// The source's history does not contain sdl's position: sdl is ahead of it (a lossy
    /// failover, a restored server). Restarting will not help.
    #[error("the source's binlog does not contain sdl's position (resuming after {position}): {detail}. sdl has already relayed transactions this server does not have: it is probably a primary promoted by a failover that lost the old primary's last transactions, or a server restored from a backup. Those transactions are in MongoDB but not in the source. Decide which history is right before going on; to follow this server from now, re-seed deliberately: start sdl with an empty WAL directory and source.start set to a position of this server (\"current\"), and deal with MongoDB's documents of the lost transactions (docs/operations.md, \"Source diverged\")")]
    SourceDiverged { position: String, detail: String },
    /// Another replica registered with sdl's server id, and the source dropped sdl's stream.
    #[error("the source closed sdl's binlog stream because another replica connected with the same server id ({server_id}): {detail}. Two replicas with one server id push each other off in turn, so sdl stops instead of pushing back. Set source.server_id to a number that no other replica and no server of this replication topology uses (SELECT @@server_id on each; SHOW SLAVE HOSTS on the source lists connected replicas), then start sdl again")]
    DuplicateServerId { server_id: u32, detail: String },
    /// The source sent something it cannot continue from (other error 1236 texts).
    #[error("the source failed to send its binlog (resuming after {position}): {detail}. sdl cannot read past this point; check the source's error log and binlog files (mariadb-binlog/mysqlbinlog) at that position")]
    BinlogReadFailed { position: String, detail: String },
    /// A packet larger than any replica accepts.
    #[error("the source sent a binlog packet larger than 1 GiB, the most a replica accepts (resuming after {position}): {detail}. No replica can read past this event; check the source's binlog at that position (mariadb-binlog/mysqlbinlog)")]
    EventTooLarge { position: String, detail: String },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("WAL append failed: {0}")]
    Wal(#[from] sdl_wal::WalError),
    #[error("the disk holding the WAL ({dir}) is full: ingestion stopped. Everything already in the WAL is kept; free space or grow the volume and start sdl again (under systemd it restarts by itself). Detail: {detail}")]
    DiskFull { dir: String, detail: String },
    #[error("source query `{query}` failed: {detail}")]
    Query { query: String, detail: String },
    /// A failure worth retrying (network, server restart, stream ended).
    #[error("binlog stream interrupted: {0}")]
    Transient(String),
}

impl SourceError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Transient(_))
    }
}

/// MySQL error codes that make a connection attempt definitely fail.
const ER_ACCESS_DENIED: u16 = 1045;
const ER_DBACCESS_DENIED: u16 = 1044;
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;
/// The event a source sends when it has had nothing newer to send for a heartbeat period.
const HEARTBEAT_EVENT: u8 = 0x1b;
/// "Got fatal error from master when reading data from binary log": purged binlogs, a position
/// the source's history lacks, another replica with the same server id, ... told apart by the
/// message ([`classify_binlog_error`]).
const ER_MASTER_FATAL_READING_BINLOG: u16 = 1236;
/// MariaDB: "A slave with the same server_uuid/server_id as this slave has connected to the
/// master", sent to the replica whose dump thread was killed for a newer one with its id.
const ER_SLAVE_SAME_ID: u16 = 4052;
/// Server errors that say "not now" rather than "never": lock waits, deadlocks, statement
/// timeouts, interrupted queries, a server shutting down or out of connections. A query that
/// fails with one is retried (with the reconnect backoff), whatever connection it ran on.
const TRANSIENT_SERVER_ERRORS: &[u16] = &[
    1040, // ER_CON_COUNT_ERROR: too many connections
    1053, // ER_SERVER_SHUTDOWN
    1158, // ER_NET_READ_ERROR
    1159, // ER_NET_READ_INTERRUPTED
    1160, // ER_NET_ERROR_ON_WRITE
    1161, // ER_NET_WRITE_INTERRUPTED
    1203, // ER_TOO_MANY_USER_CONNECTIONS
    1205, // ER_LOCK_WAIT_TIMEOUT (row locks and metadata locks: lock_wait_timeout)
    1213, // ER_LOCK_DEADLOCK
    1317, // ER_QUERY_INTERRUPTED
    1927, // ER_CONNECTION_KILLED (MariaDB)
    1969, // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
    3024, // ER_QUERY_TIMEOUT (MySQL max_execution_time)
    4031, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL)
];

fn classify_connect_error(
    url: &str,
    password_origin: String,
    e: mysql_async::Error,
) -> SourceError {
    let url = redact_url(url);
    if let Some(fix) = tls_failure(&e) {
        return SourceError::Tls {
            url,
            detail: e.to_string(),
            fix,
        };
    }
    match e {
        mysql_async::Error::Server(ref s)
            if s.code == ER_ACCESS_DENIED
                || s.code == ER_DBACCESS_DENIED
                || s.code == ER_SPECIFIC_ACCESS_DENIED =>
        {
            SourceError::AccessDenied {
                url,
                detail: s.message.clone(),
                check: password_origin,
            }
        }
        other => SourceError::Unreachable {
            url,
            detail: other.to_string(),
        },
    }
}

/// What to check when the source refuses the login: the user in `source.url` and the password
/// where it came from (the environment wins over `source.password_file`, which wins over the URL).
fn source_credentials(cfg: &crate::config::SourceConfig) -> String {
    if std::env::var_os("SDL_SOURCE_PASSWORD").is_some() {
        "the user in source.url and the password in the environment variable SDL_SOURCE_PASSWORD (it overrides source.password_file and the URL's password)".into()
    } else if let Some(file) = &cfg.password_file {
        format!(
            "the user in source.url and the password in source.password_file ({}), which is used instead of any password in the URL",
            file.display()
        )
    } else {
        "the user and password in source.url".into()
    }
}

/// The fix for a TLS failure that will not go away by retrying (a certificate the CA does not
/// vouch for, a wrong host name, a server without TLS, a client certificate the server refuses);
/// `None` for anything else, including a connection cut during the handshake.
fn tls_failure(e: &mysql_async::Error) -> Option<&'static str> {
    use mysql_async::{DriverError, IoError};
    const CERTIFICATE: &str = "Check that source.tls_ca_file holds the CA that signed the server's certificate and that the certificate names the host in source.url (or the name in source.tls_server_name); `openssl s_client -starttls mysql -connect HOST:PORT -CAfile CA` shows what the server presents";
    match e {
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => Some(
            "The server does not offer TLS: configure it with ssl_cert, ssl_key (and ssl_ca for client certificates), or set source.tls = \"off\"",
        ),
        mysql_async::Error::Driver(DriverError::NoKeyFound) => {
            Some("source.tls_key_file holds no private key: give the PEM key of source.tls_cert_file")
        }
        mysql_async::Error::Io(IoError::Tls(_)) => Some(CERTIFICATE),
        mysql_async::Error::Io(IoError::Io(io)) => {
            match io.get_ref()?.downcast_ref::<rustls::Error>()? {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    Some(CERTIFICATE)
                }
                rustls::Error::AlertReceived(_) => Some(
                    "The server refused the TLS handshake: if it requires client certificates, set source.tls_cert_file and source.tls_key_file to a certificate signed by the CA in the server's ssl_ca",
                ),
                _ => None,
            }
        }
        _ => None,
    }
}

fn query_error(query: &str, e: mysql_async::Error) -> SourceError {
    match e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => {
            SourceError::Transient(format!("`{query}`: {e}"))
        }
        mysql_async::Error::Server(ref s) if TRANSIENT_SERVER_ERRORS.contains(&s.code) => {
            SourceError::Transient(format!("`{query}`: {e} (retried)"))
        }
        other => SourceError::Query {
            query: query.to_string(),
            detail: other.to_string(),
        },
    }
}

/// Opens a connection to the source and checks that its settings allow row-level CDC.
pub async fn connect(cfg: &SourceConfig) -> Result<(Conn, Flavor), SourceError> {
    // The login and the settings check together must answer within the timeout: a server that
    // accepts TCP but never answers is as unreachable as one that refuses.
    within_connect_timeout(cfg, async {
        let mut conn = login_now(cfg).await?;
        let flavor = check_settings(&mut conn, cfg.column_names).await?;
        Ok((conn, flavor))
    })
    .await
}

/// Opens a connection to the source without checking its settings (for `sdl check`).
pub async fn login(cfg: &SourceConfig) -> Result<Conn, SourceError> {
    within_connect_timeout(cfg, login_now(cfg)).await
}

async fn within_connect_timeout<T>(
    cfg: &SourceConfig,
    work: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(cfg.connect_timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(SourceError::Unreachable {
            url: redact_url(&cfg.url),
            detail: format!(
                "no answer within {:?} (source.connect_timeout)",
                cfg.connect_timeout
            ),
        }),
    }
}

async fn login_now(cfg: &SourceConfig) -> Result<Conn, SourceError> {
    let (opts, builder) = opts_builder(cfg)?;
    let builder = if cfg.tls == TlsMode::On {
        builder.ssl_opts(ssl_opts(cfg, opts.ip_or_hostname()))
    } else {
        builder
    };
    Conn::new(builder)
        .await
        .map_err(|e| classify_connect_error(&cfg.url, source_credentials(cfg), e))
}

fn opts_builder(cfg: &SourceConfig) -> Result<(Opts, OptsBuilder), SourceError> {
    let opts = Opts::from_url(&cfg.url).map_err(|e| SourceError::Unreachable {
        url: redact_url(&cfg.url),
        detail: e.to_string(),
    })?;
    let password = cfg.password().map_err(|e| SourceError::Unreachable {
        url: redact_url(&cfg.url),
        detail: e.to_string(),
    })?;
    // A replica must accept events up to 1 GiB (MySQL's replica_max_allowed_packet), whatever
    // the source's max_allowed_packet, which mysql_async would otherwise adopt as its limit: a
    // larger row change would fail to arrive at every reconnect.
    let mut builder = OptsBuilder::from_opts(opts.clone())
        .prefer_socket(false)
        .max_allowed_packet(Some(decode::MAX_EVENT_SIZE as usize));
    if let Some(password) = password {
        builder = builder.pass(Some(password));
    }
    Ok((opts, builder))
}

/// Opens the binlog connection through a [`relay::Relay`] (so that its silence can be measured
/// byte by byte) and checks the source's settings. A `socket=` URL connects directly (no relay:
/// liveness is then measured per event).
async fn connect_for_stream(
    cfg: &SourceConfig,
) -> Result<(Conn, Flavor, Option<relay::Relay>), SourceError> {
    within_connect_timeout(cfg, async {
        let (opts, builder) = opts_builder(cfg)?;
        if opts.socket().is_some() {
            let mut conn = login_now(cfg).await?;
            let flavor = check_settings(&mut conn, cfg.column_names).await?;
            return Ok((conn, flavor, None));
        }
        let host = opts.ip_or_hostname().to_string();
        let relay = relay::Relay::start(&host, opts.tcp_port(), cfg.connect_timeout)
            .await
            .map_err(|e| SourceError::Unreachable {
                url: redact_url(&cfg.url),
                detail: e.to_string(),
            })?;
        let mut builder = builder
            .ip_or_hostname("127.0.0.1")
            .tcp_port(relay.port)
            .resolved_ips(None::<Vec<std::net::IpAddr>>);
        if cfg.tls == TlsMode::On {
            // TLS runs end to end through the relay: the certificate must still name the
            // source's host, not the loopback address the client connects to.
            builder = builder.ssl_opts(ssl_opts(cfg, &host));
        }
        let mut conn = Conn::new(builder)
            .await
            .map_err(|e| classify_connect_error(&cfg.url, source_credentials(cfg), e))?;
        let flavor = check_settings(&mut conn, cfg.column_names).await?;
        Ok((conn, flavor, Some(relay)))
    })
    .await
}

/// TLS for `source.tls = "on"`: the server's certificate must chain to `tls_ca_file` (only to it
/// when it is set, else to the built-in Mozilla roots) and name the host in `source.url`, or
/// `tls_server_name` when set; the client certificate is presented when configured.
///
/// There is no way to turn the name check off: `mysql_async` 0.37.1 ignores
/// `with_danger_skip_domain_validation` with rustls 0.23 (blackbeam/mysql_async#404), and a
/// certificate for another name is what `tls_server_name` is for.
fn ssl_opts(cfg: &SourceConfig, host: &str) -> SslOpts {
    let name = cfg
        .tls_server_name
        .clone()
        .unwrap_or_else(|| host.to_string());
    let mut ssl = SslOpts::default().with_danger_tls_hostname_override(Some(name));
    if let Some(ca) = &cfg.tls_ca_file {
        ssl = ssl
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    ssl
}

/// The TLS version and cipher of a connection, or `None` when it is not encrypted.
pub async fn encryption(conn: &mut Conn) -> Result<Option<String>, SourceError> {
    let query = "SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')";
    let vars: Vec<(String, String)> = conn.query(query).await.map_err(|e| query_error(query, e))?;
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let cipher = get("Ssl_cipher");
    Ok((!cipher.is_empty()).then(|| format!("{} {cipher}", get("Ssl_version"))))
}

async fn global_variables(conn: &mut Conn) -> Result<Vec<(String, String)>, SourceError> {
    let query =
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('version', 'log_bin', 'binlog_format', \
                 'binlog_row_image', 'binlog_row_metadata', 'gtid_mode', 'binlog_row_value_options')";
    conn.query::<(String, String), _>(query)
        .await
        .map_err(|e| query_error(query, e))
}

/// One server setting sdl depends on, as found.
#[derive(Debug, Clone)]
pub struct SettingFinding {
    pub setting: &'static str,
    pub actual: String,
    pub required: &'static str,
    pub fix: &'static str,
    pub ok: bool,
}

impl SettingFinding {
    fn into_error(self) -> SourceError {
        SourceError::Setting {
            setting: self.setting,
            actual: self.actual,
            required: self.required,
            fix: self.fix,
        }
    }
}

/// Reads the server's flavor and every setting sdl depends on (none is skipped at the first
/// failure: `sdl check` shows them all).
pub async fn settings_findings(
    conn: &mut Conn,
    names: ColumnNames,
) -> Result<(Flavor, Vec<SettingFinding>), SourceError> {
    let vars = global_variables(conn).await?;
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let flavor = if get("version").unwrap_or_default().contains("MariaDB") {
        Flavor::Mariadb
    } else {
        Flavor::Mysql
    };
    let mut findings = Vec::new();
    let mut require = |setting: &'static str, required: &'static str, fix: &'static str| {
        let actual = get(setting).unwrap_or_else(|| "not set (unsupported server version)".into());
        findings.push(SettingFinding {
            ok: actual.eq_ignore_ascii_case(required),
            setting,
            actual,
            required,
            fix,
        });
    };
    require(
        "log_bin",
        "ON",
        "Enable the binary log: start the server with --log-bin (and a --server-id).",
    );
    require(
        "binlog_format",
        "ROW",
        "Set binlog_format=ROW in the server config (SET GLOBAL binlog_format='ROW' applies to new sessions only).",
    );
    require(
        "binlog_row_image",
        "FULL",
        "Set binlog_row_image=FULL so every change carries whole rows.",
    );
    if names == ColumnNames::InformationSchema
        && get("binlog_row_metadata").is_some_and(|v| !v.eq_ignore_ascii_case("FULL"))
    {
        warn!(
            "binlog_row_metadata is not FULL: column names come from information_schema \
             (source.column_names), which is racy if the schema changes while sdl is behind"
        );
    } else {
        require(
            "binlog_row_metadata",
            "FULL",
            "Set binlog_row_metadata=FULL so row events carry column names (MariaDB 10.5+, MySQL 8.0.1+), or accept the racy fallback with source.column_names = \"information_schema\".",
        );
    }
    if flavor == Flavor::Mysql {
        require(
            "gtid_mode",
            "ON",
            "Enable GTIDs: set gtid_mode=ON and enforce_gtid_consistency=ON.",
        );
    }
    // MySQL 8.0.3+: PARTIAL_JSON writes PARTIAL_UPDATE_ROWS events, which carry JSON diffs instead
    // of whole values. The variable does not exist on MariaDB.
    if let Some(options) = get("binlog_row_value_options") {
        findings.push(SettingFinding {
            ok: options.is_empty(),
            setting: "binlog_row_value_options",
            actual: options,
            required: "'' (empty)",
            fix: "Set binlog_row_value_options='' so JSON updates are logged as whole values (PARTIAL_JSON logs diffs sdl cannot turn into whole rows).",
        });
    }
    Ok((flavor, findings))
}

async fn check_settings(conn: &mut Conn, names: ColumnNames) -> Result<Flavor, SourceError> {
    let (flavor, findings) = settings_findings(conn, names).await?;
    match findings.into_iter().find(|f| !f.ok) {
        Some(failed) => Err(failed.into_error()),
        None => Ok(flavor),
    }
}

async fn query_string(conn: &mut Conn, query: &str) -> Result<String, SourceError> {
    conn.query_first::<Option<String>, _>(query)
        .await
        .map_err(|e| query_error(query, e))
        .map(|v| v.flatten().unwrap_or_default())
}

/// Resolves `source.start` into a concrete position on this server.
pub async fn resolve_start(
    conn: &mut Conn,
    flavor: Flavor,
    start: &StartFrom,
) -> Result<Position, SourceError> {
    let text = match (start, flavor) {
        (StartFrom::Gtid(text), _) => text.clone(),
        (StartFrom::Current, Flavor::Mariadb) => {
            query_string(conn, "SELECT @@GLOBAL.gtid_binlog_pos").await?
        }
        (StartFrom::Current, Flavor::Mysql) => {
            query_string(conn, "SELECT @@GLOBAL.gtid_executed").await?
        }
        (StartFrom::Earliest, Flavor::Mysql) => {
            query_string(conn, "SELECT @@GLOBAL.gtid_purged").await?
        }
        (StartFrom::Earliest, Flavor::Mariadb) => mariadb_earliest(conn).await?,
    };
    Ok(Position::parse(flavor, &text.replace('\n', ""))?)
}

/// The GTID state at the start of the oldest binlog file the server still has: its GTID_LIST.
async fn mariadb_earliest(conn: &mut Conn) -> Result<String, SourceError> {
    let logs: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| query_error("SHOW BINARY LOGS", e))?;
    let first: String = logs
        .first()
        .and_then(|row| row.get::<String, _>(0))
        .ok_or_else(|| SourceError::Query {
            query: "SHOW BINARY LOGS".into(),
            detail: "the server lists no binary logs".into(),
        })?;
    let query = format!(
        "SHOW BINLOG EVENTS IN '{}' LIMIT 10",
        first.replace('\'', "''")
    );
    let events: Vec<mysql_async::Row> = conn
        .query(&query)
        .await
        .map_err(|e| query_error(&query, e))?;
    for row in events {
        let kind: Option<String> = row.get("Event_type");
        if kind.as_deref() == Some("Gtid_list") {
            let info: String = row.get("Info").unwrap_or_default();
            return Ok(info.trim_matches(['[', ']', ' ']).to_string());
        }
    }
    Err(SourceError::Query {
        query,
        detail: format!("no Gtid_list event at the start of {first}"),
    })
}

async fn open_stream(
    mut conn: Conn,
    flavor: Flavor,
    cfg: &SourceConfig,
    position: &Position,
) -> Result<mysql_async::BinlogStream, SourceError> {
    // Heartbeats let a silent but healthy stream be told apart from a dead connection.
    let heartbeat = format!(
        "SET @master_heartbeat_period = {}",
        cfg.heartbeat_interval.as_nanos()
    );
    conn.query_drop(&heartbeat)
        .await
        .map_err(|e| query_error(&heartbeat, e))?;
    let request = BinlogStreamRequest::new(cfg.server_id);
    let request = match (flavor, position) {
        (Flavor::Mariadb, Position::Mariadb(pos)) => {
            for statement in [
                "SET @mariadb_slave_capability=4".to_string(),
                format!("SET @slave_connect_state='{pos}'"),
                "SET @slave_gtid_strict_mode=1".to_string(),
                "SET @slave_gtid_ignore_duplicates=0".to_string(),
            ] {
                conn.query_drop(&statement)
                    .await
                    .map_err(|e| query_error(&statement, e))?;
            }
            request
        }
        (Flavor::Mysql, Position::Mysql(set)) => {
            let sids = set
                .per_source()
                .map(|text| {
                    text.parse::<mysql_async::Sid<'static>>()
                        .map_err(|e| SourceError::Query {
                            query: "COM_BINLOG_DUMP_GTID".into(),
                            detail: format!("GTID set `{text}` is not accepted: {e}"),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            request.with_gtid().with_gtid_set(sids)
        }
        (_, position) => {
            return Err(SourceError::Setting {
                setting: "source flavor",
                actual: flavor.name().to_string(),
                required: "the flavor that wrote the WAL position",
                fix: match position {
                    Position::Mariadb(_) => "The WAL holds a MariaDB position but the source is MySQL: point source.url at the original server, or use a new WAL directory.",
                    Position::Mysql(_) => "The WAL holds a MySQL position but the source is MariaDB: point source.url at the original server, or use a new WAL directory.",
                },
            })
        }
    };
    conn.get_binlog_stream(request)
        .await
        .map_err(|e| stream_error(cfg.server_id, position, e))
}

/// What an error 1236 (or MariaDB's 4052) from the binlog stream means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinlogErrorKind {
    /// The binlog files holding the position were purged (exit 3).
    Purged,
    /// The position is not in the source's history: sdl is ahead of it (lossy failover).
    Diverged,
    /// Another replica connected with the same server id.
    DuplicateServerId,
    /// Anything else the source cannot go on from.
    Other,
}

/// Tells the kinds of error 1236 apart by their text, as MariaDB and MySQL (5.7 to 9) word them.
fn classify_binlog_error(code: u16, message: &str) -> BinlogErrorKind {
    let m = message.to_ascii_lowercase();
    if code == ER_SLAVE_SAME_ID
        || m.contains("same server_uuid/server_id")
        || m.contains("same server_id")
    {
        BinlogErrorKind::DuplicateServerId
    } else if m.contains("which is not in the master's binlog")
        || m.contains("slave's gtid position is ahead")
        || m.contains("has more gtids than the")
        || m.contains("is missing the gtid")
        || m.contains("conflicts with the binary log")
    {
        // MariaDB: "connecting slave requested to start from GTID d-s-n, which is not in the
        // master's binlog" (and "... the slave has diverged"), "The binlog on the master is
        // missing the GTID ... requested by the slave"; MySQL: "Slave has more GTIDs than the
        // master has" / "Replica has more GTIDs than the source has".
        BinlogErrorKind::Diverged
    } else if m.contains("purged")
        || m.contains("could not find first log file name")
        || m.contains("could not find gtid state requested")
    {
        // MariaDB: "Could not find GTID state requested by slave in any binlog files. Probably
        // the slave state is too old and required binlog files have been purged."; MySQL: "...
        // the master has purged binary logs containing GTIDs that the slave requires", "Cannot
        // replicate because the source purged required binary logs", "Could not find first log
        // file name in binary log index file".
        BinlogErrorKind::Purged
    } else {
        BinlogErrorKind::Other
    }
}

fn stream_error(server_id: u32, position: &Position, e: mysql_async::Error) -> SourceError {
    if is_packet_too_large(&e) {
        return SourceError::EventTooLarge {
            position: position.to_string(),
            detail: e.to_string(),
        };
    }
    match e {
        mysql_async::Error::Server(s)
            if s.code == ER_MASTER_FATAL_READING_BINLOG || s.code == ER_SLAVE_SAME_ID =>
        {
            let position = position.to_string();
            let detail = s.message;
            match classify_binlog_error(s.code, &detail) {
                BinlogErrorKind::Purged => SourceError::BinlogUnavailable { position, detail },
                BinlogErrorKind::Diverged => SourceError::SourceDiverged { position, detail },
                BinlogErrorKind::DuplicateServerId => {
                    SourceError::DuplicateServerId { server_id, detail }
                }
                BinlogErrorKind::Other => SourceError::BinlogReadFailed { position, detail },
            }
        }
        mysql_async::Error::Server(s)
            if s.code == ER_ACCESS_DENIED || s.code == ER_SPECIFIC_ACCESS_DENIED =>
        {
            SourceError::AccessDenied {
                url: "(binlog stream)".into(),
                detail: s.message,
                check: "the sdl user's privileges".into(),
            }
        }
        other => SourceError::Transient(other.to_string()),
    }
}

/// The client's packet limit was exceeded (only possible beyond 1 GiB, see [`opts_builder`]).
fn is_packet_too_large(e: &mysql_async::Error) -> bool {
    use mysql_async::{DriverError, IoError};
    match e {
        mysql_async::Error::Driver(DriverError::PacketTooLarge) => true,
        mysql_async::Error::Io(IoError::Io(io)) => io
            .get_ref()
            .and_then(|inner| {
                inner.downcast_ref::<mysql_common::proto::codec::error::PacketCodecError>()
            })
            .is_some_and(|inner| {
                matches!(
                    inner,
                    mysql_common::proto::codec::error::PacketCodecError::PacketTooLarge
                )
            }),
        _ => false,
    }
}

/// Asks the source whether it can still stream the binlog from `position` (nothing is read
/// beyond the first event). Used before WAL repair, which rewinds to such a position.
pub async fn binlog_available(
    cfg: &SourceConfig,
    position: &Position,
) -> Result<bool, SourceError> {
    let (conn, flavor) = connect(cfg).await?;
    let mut stream = match open_stream(conn, flavor, cfg, position).await {
        Ok(stream) => stream,
        Err(SourceError::BinlogUnavailable { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    let first = tokio::time::timeout(cfg.connect_timeout, stream.next()).await;
    let _ = stream.close().await;
    match first {
        Ok(Some(Ok(_))) => Ok(true),
        Ok(Some(Err(e))) => match stream_error(cfg.server_id, position, e) {
            SourceError::BinlogUnavailable { .. } => Ok(false),
            other => Err(other),
        },
        Ok(None) => Err(SourceError::Transient(
            "the source closed the binlog stream".into(),
        )),
        Err(_) => Err(SourceError::Transient(format!(
            "no binlog event within {:?}",
            cfg.connect_timeout
        ))),
    }
}

/// Runs the ingester until `shutdown` turns true or a definite error occurs.
///
/// `appended` is told the WAL's last sequence number after every flushed append.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cfg: SourceConfig,
    wal_cfg: WalConfig,
    fragments: FragmentLimits,
    wal: Wal<SourceTransaction>,
    first_conn: Option<(Conn, Flavor)>,
    appended: watch::Sender<u64>,
    state: watch::Sender<IngestStatus>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let result = ingest(
        cfg,
        wal_cfg,
        fragments,
        wal,
        first_conn,
        Arc::new(appended),
        &state,
        &mut shutdown,
    )
    .await;
    state.send_modify(|s| {
        s.state = IngestState::Stopped;
        if let Err(e) = &result {
            s.last_error = Some(LastError::now(e));
        }
    });
    result
}

/// Publishes the ingester's new state; returns the previous one.
fn set_state(state: &watch::Sender<IngestStatus>, new: IngestState) -> IngestState {
    let mut previous = new;
    state.send_modify(|s| std::mem::swap(&mut s.state, &mut previous));
    previous
}

/// Publishes a transient failure: the state turns `reconnecting` and the error is kept as the last
/// one.
fn set_reconnecting(state: &watch::Sender<IngestStatus>, error: &SourceError, retry_in: Duration) {
    let last = LastError::now(error);
    state.send_modify(|s| {
        s.state = IngestState::Reconnecting {
            error: last.message.clone(),
            retry_in_ms: retry_in.as_millis() as u64,
        };
        s.last_error = Some(last);
    });
}

#[allow(clippy::too_many_arguments)]
async fn ingest(
    cfg: SourceConfig,
    wal_cfg: WalConfig,
    fragments: FragmentLimits,
    wal: Wal<SourceTransaction>,
    first_conn: Option<(Conn, Flavor)>,
    appended: Arc<watch::Sender<u64>>,
    state: &watch::Sender<IngestStatus>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let mut backoff = reconnect_backoff();
    if let Some((conn, _)) = first_conn {
        // The connection that checked the source at start-up is not the stream's: the stream
        // runs through a relay that measures its liveness byte by byte (relay.rs).
        let _ = conn.disconnect().await;
    }
    loop {
        let (conn, flavor, relay) = match connect_for_stream(&cfg).await {
            Ok(c) => {
                // The source answers again: the next outage starts its backoff afresh.
                backoff = reconnect_backoff();
                c
            }
            Err(e @ (SourceError::Unreachable { .. } | SourceError::Transient(_))) => {
                let reconnect_delay = next_delay(&mut backoff);
                warn!(error = %e, retry_in = ?reconnect_delay, "source not reachable, retrying");
                set_reconnecting(state, &e, reconnect_delay);
                if wait_or_shutdown(shutdown, reconnect_delay).await {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let saved = wal.ingest_position()?.ok_or_else(|| SourceError::Query {
            query: "WAL ingest position".into(),
            detail: "the WAL has no ingest position; it must be seeded before the ingester runs"
                .into(),
        })?;
        let resume = ResumePoint::parse(flavor, &String::from_utf8_lossy(&saved))?;
        info!(position = %resume, "following the binlog");
        set_state(
            state,
            IngestState::Following {
                position: resume.to_string(),
            },
        );
        match follow(
            &cfg, &wal_cfg, fragments, &wal, conn, relay, flavor, resume, &appended, state,
            shutdown,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                let reconnect_delay = next_delay(&mut backoff);
                warn!(error = %e, retry_in = ?reconnect_delay, "binlog stream lost, reconnecting from the WAL position");
                let m = crate::metrics::metrics();
                m.source_reconnects.inc();
                m.stage_restarted(crate::metrics::Stage::Ingester);
                m.source_lost();
                set_reconnecting(state, &e, reconnect_delay);
                if wait_or_shutdown(shutdown, reconnect_delay).await {
                    return Ok(());
                }
            }
            Err(e) => return Err(explain_unavailable(&cfg, flavor, e).await),
        }
    }
}

/// Adds to a purged-binlog error where the server's binlogs now begin, so the operator sees which
/// transactions are missing. Other errors pass through unchanged.
async fn explain_unavailable(cfg: &SourceConfig, flavor: Flavor, e: SourceError) -> SourceError {
    let SourceError::BinlogUnavailable { position, detail } = e else {
        return e;
    };
    let oldest = async {
        let (mut conn, _) = connect(cfg).await?;
        resolve_start(&mut conn, flavor, &StartFrom::Earliest).await
    };
    let detail = match oldest.await {
        Ok(oldest) => format!(
            "{detail} The oldest binlog the server still has begins after GTID position {oldest}: the transactions after {position} up to {oldest} are missing."
        ),
        Err(_) => detail,
    };
    SourceError::BinlogUnavailable { position, detail }
}

/// Pauses between reconnection attempts: from 100 ms, doubling, with jitter, up to 30 s, for as
/// long as the source stays away (`backon`, as the forwarder's circuit breaker).
fn reconnect_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

fn next_delay(backoff: &mut backon::ExponentialBackoff) -> Duration {
    // Built without a limit on attempts, the iterator never ends.
    backoff.next().unwrap_or(Duration::from_secs(30))
}

/// Returns true when shutdown was requested during the wait.
async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *shutdown.borrow(),
        _ = stopped(shutdown) => true,
    }
}

/// Transactions read since the last group commit, and the group commit being written.
struct PendingGroup {
    transactions: Vec<SourceTransaction>,
    bytes: usize,
    deadline: Option<Instant>,
    /// The previous group's append (an fsync), running while the next group is read. At most one
    /// runs, so groups land in order; it is always awaited before `follow` returns, because a
    /// reconnect resumes from the WAL's position, which an unfinished append would still move.
    in_flight: Option<tokio::task::JoinHandle<Result<(), SourceError>>>,
    /// The estimated size of the append in flight.
    in_flight_bytes: usize,
    /// An append failed: nothing more is written (after ENOSPC sled may block forever).
    failed: bool,
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    cfg: &SourceConfig,
    wal_cfg: &WalConfig,
    fragments: FragmentLimits,
    wal: &Wal<SourceTransaction>,
    conn: Conn,
    relay: Option<relay::Relay>,
    flavor: Flavor,
    resume: ResumePoint,
    appended: &Arc<watch::Sender<u64>>,
    state: &watch::Sender<IngestStatus>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let mut stream = open_stream(conn, flavor, cfg, &resume.position).await?;
    // Liveness: the source sends a heartbeat after each heartbeat interval without events, but
    // none inside an event, which may take long to arrive over a slow link. So the connection is
    // presumed dead after three intervals of *silence*: no byte from the source (as the relay
    // sees them) since sdl started waiting for the next event. Without a relay (a socket URL),
    // whole events are timed.
    let dead_after = cfg.heartbeat_interval * 3;
    let mut waiting_since = Instant::now();
    let mut still_waiting = false;
    let mut assembler =
        TransactionAssembler::new(resume.position.clone()).with_fragments(fragments);
    if let Some(partial) = resume.partial.clone() {
        info!(
            gtid = %partial.gtid,
            saved_changes = partial.saved_changes,
            "resuming inside a large transaction: its changes the WAL already holds are read again and dropped"
        );
        assembler.resume_inside(partial);
    }
    // A second connection for information_schema lookups (source.column_names), opened on demand.
    let mut schema_conn: Option<Conn> = None;
    // MariaDB JSON columns per table (docs/change-document.md, "JSON (MariaDB)").
    let mut json_columns = JsonColumns::default();
    let mut group = PendingGroup {
        transactions: Vec::new(),
        bytes: 0,
        deadline: None,
        in_flight: None,
        in_flight_bytes: 0,
        failed: false,
    };
    let result = loop {
        if !still_waiting {
            waiting_since = Instant::now();
        }
        still_waiting = false;
        let silent_since = relay
            .as_ref()
            .map_or(waiting_since, |r| r.last_byte().max(waiting_since));
        let deadline = group.deadline;
        let next = tokio::select! {
            biased;
            _ = stopped(shutdown) => break Ok(()),
            _ = sleep_until_opt(deadline) => {
                if let Err(e) = flush(wal, &mut group, appended).await {
                    break Err(e);
                }
                match pause_while_wal_full(wal, &mut group, wal_cfg.max_bytes, state, shutdown).await {
                    Ok(false) => {}
                    Ok(true) => break Ok(()),
                    Err(e) => break Err(e),
                }
                continue;
            }
            _ = tokio::time::sleep_until(silent_since + dead_after) => {
                // Bytes may have arrived since: an event still arriving is not silence. The
                // stream's read is cancel-safe (mysql_async keeps a partly read packet in the
                // stream), so waiting again loses nothing.
                let silent_since = relay
                    .as_ref()
                    .map_or(waiting_since, |r| r.last_byte().max(waiting_since));
                if silent_since.elapsed() < dead_after {
                    still_waiting = true;
                    continue;
                }
                break Err(SourceError::Transient(format!(
                    "nothing from the source for {dead_after:?} (3 x source.heartbeat_interval): the connection is presumed dead"
                )));
            }
            next = stream.next() => next,
        };
        let event = match next {
            None => {
                break Err(SourceError::Transient(
                    "the source closed the binlog stream".into(),
                ))
            }
            Some(Err(e)) => break Err(stream_error(cfg.server_id, assembler.position(), e)),
            Some(Ok(event)) => {
                let m = crate::metrics::metrics();
                m.binlog_events.inc();
                let header = event.header();
                m.source_event(
                    header.timestamp(),
                    header.event_type_raw() == HEARTBEAT_EVENT,
                );
                event
            }
        };
        if cfg.column_names == ColumnNames::InformationSchema {
            if let Some((database, table)) = decode::table_without_names(&event) {
                if !assembler.has_schema(&database, &table) {
                    if schema_conn.is_none() {
                        match connect(cfg).await {
                            Ok((conn, _)) => schema_conn = Some(conn),
                            Err(e) => break Err(SourceError::Transient(e.to_string())),
                        }
                    }
                    let conn = schema_conn.as_mut().expect("connected above");
                    match load_schema(conn, &database, &table).await {
                        Ok(schema) => assembler.provide_schema(database, table, schema),
                        Err(e) => break Err(e),
                    }
                }
            }
        }
        match assembler.feed(&event) {
            Ok(Some(mut transaction)) => {
                if flavor == Flavor::Mariadb {
                    if let Err(e) = json_columns
                        .apply(cfg, &mut schema_conn, &mut transaction)
                        .await
                    {
                        break Err(e);
                    }
                }
                let m = crate::metrics::metrics();
                if transaction.ends_transaction {
                    m.binlog_transactions.inc();
                }
                m.binlog_rows.inc_by(
                    transaction
                        .changes
                        .iter()
                        .filter(|c| matches!(c, Change::Row(_)))
                        .count() as u64,
                );
                if transaction
                    .changes
                    .iter()
                    .any(|c| matches!(c, Change::Statement(_)))
                {
                    // Any DDL may have changed any table: look the schemas up again.
                    assembler.forget_schemas();
                    json_columns.forget();
                }
                group.bytes += transaction.approximate_size();
                group.transactions.push(transaction);
                if group.deadline.is_none() {
                    group.deadline = Some(Instant::now() + wal_cfg.group_commit_delay);
                }
                if group.bytes >= wal_cfg.group_commit_bytes {
                    if let Err(e) = flush(wal, &mut group, appended).await {
                        break Err(e);
                    }
                    match pause_while_wal_full(wal, &mut group, wal_cfg.max_bytes, state, shutdown)
                        .await
                    {
                        Ok(false) => {}
                        Ok(true) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => break Err(SourceError::Decode(e)),
        }
    };
    // Whatever happened, complete transactions already read are saved before returning; a
    // half-read transaction is dropped and read again from the saved position.
    let landed = finish_append(&mut group).await;
    let saved = if group.failed {
        Ok(())
    } else {
        flush(wal, &mut group, appended).await
    };
    let last_landed = finish_append(&mut group).await;
    let _ = stream.close().await;
    result.and(landed).and(saved).and(last_landed)
}

/// Which columns of each MariaDB table are JSON. MariaDB's JSON is LONGTEXT with a
/// `CHECK (json_valid(`col`))` constraint, invisible in the binlog, so it is looked up in
/// information_schema.CHECK_CONSTRAINTS when a table's rows first arrive, and again after any DDL
/// statement in the stream or when the table's column names change (a new TABLE_MAP shape).
/// Values of those columns are parsed exactly into [`crate::event::Json`]; a value that does not
/// parse (the race: the column may have changed since the row was written) stays text and is
/// logged, never dropped or altered.
///
/// At most [`MAX_JSON_TABLES`] tables are kept: when one more would exceed that, the cache is
/// emptied and refilled on demand (a table is looked up again when its rows next arrive), so its
/// memory is bounded whatever the number of tables in the source.
#[derive(Default)]
struct JsonColumns {
    /// database → table → (the table's shape when its JSON columns were looked up, their column
    /// indexes). Nested so that the per-row lookup borrows the row's names.
    tables: HashMap<String, HashMap<String, TableJson>>,
    /// How many tables `tables` holds.
    cached: usize,
}

/// The most tables whose JSON columns are kept (see [`JsonColumns`]).
const MAX_JSON_TABLES: usize = 4096;

/// A table's shape when its JSON columns were looked up, and their column indexes.
type TableJson = (Arc<Table>, Vec<usize>);

impl JsonColumns {
    fn forget(&mut self) {
        self.tables.clear();
        self.cached = 0;
    }

    /// Records a table's JSON columns, within the bound.
    fn remember(&mut self, table: &Arc<Table>, indexes: Vec<usize>) -> &Vec<usize> {
        let known = self
            .tables
            .get(table.database.as_str())
            .is_some_and(|t| t.contains_key(table.name.as_str()));
        if !known {
            if self.cached >= MAX_JSON_TABLES {
                self.forget();
            }
            self.cached += 1;
        }
        let slot = self
            .tables
            .entry(table.database.clone())
            .or_default()
            .entry(table.name.clone())
            .insert_entry((table.clone(), indexes))
            .into_mut();
        &slot.1
    }

    async fn apply(
        &mut self,
        cfg: &SourceConfig,
        schema_conn: &mut Option<Conn>,
        transaction: &mut SourceTransaction,
    ) -> Result<(), SourceError> {
        for change in &mut transaction.changes {
            let Change::Row(row) = change else { continue };
            let table = &row.table;
            let cached = self
                .tables
                .get_mut(table.database.as_str())
                .and_then(|t| t.get_mut(table.name.as_str()));
            let json = match cached {
                // Each TABLE_MAP makes a new `Table`: compare names only when it is not the one
                // seen last.
                Some((seen, json)) if Arc::ptr_eq(seen, table) => json,
                Some((seen, json)) if seen.columns == table.columns => {
                    *seen = table.clone();
                    json
                }
                _ => {
                    if schema_conn.is_none() {
                        match connect(cfg).await {
                            Ok((conn, _)) => *schema_conn = Some(conn),
                            Err(e) => return Err(SourceError::Transient(e.to_string())),
                        }
                    }
                    let conn = schema_conn.as_mut().expect("connected above");
                    let names = match load_json_columns(conn, &table.database, &table.name).await {
                        Ok(names) => names,
                        Err(e) => {
                            *schema_conn = None;
                            return Err(e);
                        }
                    };
                    let indexes = (0..table.columns.len())
                        .filter(|&i| names.contains(&table.columns[i]))
                        .collect();
                    self.remember(table, indexes)
                }
            };
            if json.is_empty() {
                continue;
            }
            for image in [row.before.as_mut(), row.after.as_mut()]
                .into_iter()
                .flatten()
            {
                for &index in json.iter() {
                    let value = &mut image[index];
                    if let Value::Text(text) = value {
                        match json_text::parse(text) {
                            Ok(parsed) => *value = Value::Json(parsed),
                            Err(reason) => warn!(
                                "{}.{} column `{}` is a JSON column but this value is not JSON \
                                 sdl can represent exactly ({reason}); it is kept as its text \
                                 (binlog {}:{}, GTID {})",
                                table.database,
                                table.name,
                                table.columns[index],
                                row.file,
                                row.pos,
                                transaction.gtid
                            ),
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The JSON columns of a MariaDB table: those with a check constraint that is exactly
/// ``json_valid(`col`)`` (what `col JSON` creates). A table information_schema does not show
/// (dropped since, or no privilege) has none, with a warning: its JSON values stay text.
async fn load_json_columns(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<HashSet<String>, SourceError> {
    let query = "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?";
    let clauses: Vec<String> = conn
        .exec(query, (database, table))
        .await
        .map_err(|e| query_error(query, e))?;
    check_lookup_warnings(conn, query).await?;
    let json: HashSet<String> = clauses
        .iter()
        .filter_map(|c| json_valid_column(c))
        .collect();
    if json.is_empty() {
        let visible = "SELECT COUNT(*) FROM information_schema.TABLES \
                       WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";
        let count: Option<u64> = conn
            .exec_first(visible, (database, table))
            .await
            .map_err(|e| query_error(visible, e))?;
        check_lookup_warnings(conn, visible).await?;
        if count.unwrap_or(0) == 0 {
            warn!(
                "{database}.{table} is not visible in information_schema (dropped since, or the \
                 sdl user lacks SELECT on it): sdl cannot tell its JSON columns, so their values \
                 are recorded as text. Grant SELECT on the table to make them documents"
            );
        }
    }
    Ok(json)
}

/// MariaDB turns a lock wait inside an information_schema query (a table whose metadata another
/// session holds exclusively, e.g. during `CREATE TABLE ... SELECT` or an ALTER's last phase) into
/// a *warning* and leaves that table out of the result. An empty result would then read as "no
/// JSON columns" (its JSON values silently kept as text) or "table dropped" (a definite error).
/// Such a warning (any of [`TRANSIENT_SERVER_ERRORS`]) makes the lookup a transient error: it is
/// retried, with the reconnect backoff, until the lock is gone.
async fn check_lookup_warnings(conn: &mut Conn, query: &str) -> Result<(), SourceError> {
    let warnings: Vec<(String, u32, String)> = conn
        .query("SHOW WARNINGS")
        .await
        .map_err(|e| query_error("SHOW WARNINGS", e))?;
    match warnings.into_iter().find(|(_, code, _)| {
        u16::try_from(*code).is_ok_and(|c| TRANSIENT_SERVER_ERRORS.contains(&c))
    }) {
        Some((_, code, message)) => Err(SourceError::Transient(format!(
            "`{query}`: information_schema left a table out: warning {code}: {message} (retried)"
        ))),
        None => Ok(()),
    }
}

/// `col` when `clause` is exactly ``json_valid(`col`)`` (any case, surrounding spaces).
fn json_valid_column(clause: &str) -> Option<String> {
    let clause = clause.trim();
    let prefix = "json_valid(`";
    if !clause.get(..prefix.len())?.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let quoted = clause[prefix.len()..].strip_suffix("`)")?;
    // Inside backticks a backtick is doubled; a lone one means the clause is something else.
    let name = quoted.replace("``", "`");
    if name.matches('`').count() * 2 != quoted.matches('`').count() {
        return None;
    }
    Some(name)
}

/// Column names, ENUM/SET members and primary key of `database.table` from information_schema, for
/// TABLE_MAPs without names. Racy by nature: this is the schema now, not when the row was written;
/// the assembler refuses a table whose column count or ENUM/SET positions no longer match.
async fn load_schema(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<decode::TableSchema, SourceError> {
    let query =
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COLUMN_KEY FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION";
    let rows: Vec<(String, String, String, String)> = conn
        .exec(query, (database, table))
        .await
        .map_err(|e| query_error(query, e))?;
    check_lookup_warnings(conn, query).await?;
    if rows.is_empty() {
        return Err(SourceError::Query {
            query: query.into(),
            detail: format!(
                "information_schema has no columns for {database}.{table} (dropped since?): its \
                 rows cannot be named; set binlog_row_metadata=FULL on the source"
            ),
        });
    }
    let mut schema = decode::TableSchema::default();
    for (i, (name, data_type, column_type, key)) in rows.into_iter().enumerate() {
        match data_type.to_ascii_lowercase().as_str() {
            "enum" => {
                schema.enum_values.insert(i, quoted_members(&column_type));
            }
            "set" => {
                schema.set_values.insert(i, quoted_members(&column_type));
            }
            _ => {}
        }
        if key.eq_ignore_ascii_case("PRI") {
            schema.primary_key.push(name.clone());
        }
        schema.names.push(name);
    }
    Ok(schema)
}

/// The members of `enum('a','b''c')` / `set(...)`: single-quoted, `''` for a quote.
fn quoted_members(column_type: &str) -> Vec<String> {
    let mut members = Vec::new();
    let mut chars = column_type.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        loop {
            match chars.next() {
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                Some('\'') | None => break,
                Some(c) => member.push(c),
            }
        }
        members.push(member);
    }
    members
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Starts the group commit of the transactions read so far, once the previous one has landed.
async fn flush(
    wal: &Wal<SourceTransaction>,
    group: &mut PendingGroup,
    appended: &Arc<watch::Sender<u64>>,
) -> Result<(), SourceError> {
    group.deadline = None;
    finish_append(group).await?;
    if group.transactions.is_empty() {
        return Ok(());
    }
    let transactions = std::mem::take(&mut group.transactions);
    let count = transactions.len() as u64;
    group.in_flight_bytes = group.bytes;
    group.bytes = 0;
    let wal = wal.clone();
    let dir = wal.dir().display().to_string();
    let appended = appended.clone();
    group.in_flight = Some(tokio::task::spawn_blocking(move || {
        // The group's position is its last transaction's (not copied per transaction: with a
        // large GTID set that text is kilobytes).
        let position = transactions
            .last()
            .expect("a group is flushed only when it holds transactions")
            .position_after
            .as_bytes();
        wal.append(&transactions, position)
            .map(|last| {
                // Told as soon as it lands, not when the next group starts: the forwarder
                // must not wait for more binlog events to see this one.
                appended.send_replace(last);
                let m = crate::metrics::metrics();
                m.wal_appends.inc();
                m.wal_appended_records.inc_by(count);
            })
            .map_err(|e| {
                if e.is_disk_full() {
                    SourceError::DiskFull {
                        dir,
                        detail: e.to_string(),
                    }
                } else {
                    SourceError::Wal(e)
                }
            })
    }));
    Ok(())
}

/// Waits for the group commit in flight, if any.
async fn finish_append(group: &mut PendingGroup) -> Result<(), SourceError> {
    let Some(append) = group.in_flight.take() else {
        return Ok(());
    };
    let landed = append
        .await
        .map_err(|e| SourceError::Transient(format!("WAL append task failed: {e}")))
        .and_then(|r| r);
    if landed.is_err() {
        group.failed = true;
    }
    landed
}

/// Backpressure (see [`wait_for_wal_space`]), counting the append in flight: once the WAL is half
/// way to the limit, the append is waited for so that the check sees it (its size is only
/// estimated); below that, reading overlaps it. Returns true on shutdown.
async fn pause_while_wal_full(
    wal: &Wal<SourceTransaction>,
    group: &mut PendingGroup,
    max_bytes: u64,
    state: &watch::Sender<IngestStatus>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, SourceError> {
    if group.in_flight.is_some()
        && wal.unacked_bytes() + group.in_flight_bytes as u64 >= max_bytes / 2
    {
        finish_append(group).await?;
    }
    Ok(wait_for_wal_space(wal, max_bytes, state, shutdown).await)
}

/// Backpressure: while the WAL's unacknowledged data is at `wal.max_bytes`, the binlog is not
/// read (the source keeps it). Returns true when shutdown was requested while waiting.
async fn wait_for_wal_space(
    wal: &Wal<SourceTransaction>,
    max_bytes: u64,
    state: &watch::Sender<IngestStatus>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let unacked = wal.unacked_bytes();
    if unacked < max_bytes {
        return false;
    }
    warn!(
        unacked_bytes = unacked,
        max_bytes,
        "WAL full (wal.max_bytes): pausing the binlog reader until the forwarder frees space; the source must keep its binlogs meanwhile"
    );
    let previous = set_state(
        state,
        IngestState::PausedWalFull {
            unacked_bytes: unacked,
            max_bytes,
        },
    );
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if wal.unacked_bytes() < max_bytes {
                    info!(paused_for = ?started.elapsed(), "WAL has space again: resuming the binlog reader");
                    set_state(state, previous);
                    return false;
                }
            }
            _ = stopped(shutdown) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_column_cache_is_bounded() {
        let mut cache = JsonColumns::default();
        for i in 0..MAX_JSON_TABLES * 2 + 3 {
            let table = Arc::new(Table {
                database: format!("db{}", i % 7),
                name: format!("t{i}"),
                columns: vec!["id".into(), "doc".into()],
                primary_key: vec![0],
            });
            assert_eq!(cache.remember(&table, vec![1]), &vec![1]);
            // A table already cached does not count twice.
            cache.remember(&table, vec![1]);
            let held: usize = cache.tables.values().map(HashMap::len).sum();
            assert_eq!(held, cache.cached);
            assert!(
                cache.cached <= MAX_JSON_TABLES,
                "{} tables cached",
                cache.cached
            );
        }
    }

    fn server_error(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: message.into(),
            state: "HY000".into(),
        })
    }

    #[test]
    fn lock_waits_and_timeouts_are_transient_other_server_errors_definite() {
        for code in [1205, 1213, 1317, 1969, 3024, 1053, 1927, 1040] {
            assert!(
                query_error("SELECT 1", server_error(code, "x")).is_transient(),
                "{code}"
            );
        }
        for code in [1044, 1142, 1146, 1064] {
            assert!(
                !query_error("SELECT 1", server_error(code, "x")).is_transient(),
                "{code}"
            );
        }
    }

    #[test]
    fn error_1236_texts_are_told_apart() {
        use BinlogErrorKind::*;
        for (code, text, kind) in [
            (1236, "Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged.", Purged),
            (1236, "Could not find first log file name in binary log index file", Purged),
            (1236, "The slave is connecting using CHANGE MASTER TO MASTER_AUTO_POSITION = 1, but the master has purged binary logs containing GTIDs that the slave requires.", Purged),
            (1236, "Cannot replicate because the source purged required binary logs. Replicate the missing transactions from elsewhere, or provision a new replica from backup.", Purged),
            (1236, "Error: connecting slave requested to start from GTID 0-1-1005, which is not in the master's binlog", Diverged),
            (1236, "Error: connecting slave requested to start from GTID 0-2-980, which is not in the master's binlog. Since the master's binlog contains GTIDs with higher sequence numbers, it probably means that the slave has diverged due to executing extra erroneous transactions", Diverged),
            (1236, "The binlog on the master is missing the GTID 0-1-7 requested by the slave (even though both a prior and a subsequent sequence number does exist), and GTID strict mode is enabled", Diverged),
            (1236, "Slave has more GTIDs than the master has, using the master's SERVER_UUID. This may indicate that the end of the binary log was truncated", Diverged),
            (1236, "Replica has more GTIDs than the source has, using the source's SERVER_UUID.", Diverged),
            (1236, "A slave with the same server_uuid/server_id as this slave has connected to the master; the first event 'mysql-bin.000001' at 4", DuplicateServerId),
            (1236, "A replica with the same server_uuid/server_id as this replica has connected to the source", DuplicateServerId),
            (4052, "A slave with the same server_uuid/server_id is already connected", DuplicateServerId),
            (1236, "binlog truncated in the middle of event; consider out of disk space on master", Other),
        ] {
            assert_eq!(classify_binlog_error(code, text), kind, "{text}");
        }
    }

    #[test]
    fn json_valid_clauses_name_their_column() {
        assert_eq!(json_valid_column("json_valid(`doc`)"), Some("doc".into()));
        assert_eq!(
            json_valid_column(" JSON_VALID(`a``b`) "),
            Some("a`b".into())
        );
        assert_eq!(json_valid_column("json_valid(`a`) and `b` > 1"), None);
        assert_eq!(json_valid_column("`x` > 0"), None);
        assert_eq!(json_valid_column("json_valid(`a`)`)"), None);
    }

    #[test]
    fn enum_and_set_members_are_unquoted() {
        assert_eq!(quoted_members("enum('a','b')"), ["a", "b"]);
        assert_eq!(quoted_members("set('it''s','','ç')"), ["it's", "", "ç"]);
    }
}
