//! The ingester's failures and how each is classified: *transient* (network, server restart,
//! lock waits, statement timeouts: retried with backoff, forever) or *definite* (the source, its
//! settings, its binlog or the WAL do not allow going on: the ingester stops with an error that
//! says what to do). Every variant of [`SourceError`] but `Transient` is definite.

use super::decode::DecodeError;
use crate::gtid;

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
    /// While sdl was connected, the source's own position stopped containing what sdl has read
    /// (RESET MASTER, a re-seeded server): the stream would wait for transactions that will never
    /// come. The same refusal as the start-up check's (exit 4).
    #[error("the source's GTID history no longer contains what sdl has read: sdl is at {position}, but the server's current position (`{variable}`) is now {current} ({detail}). The server's GTIDs went backwards while sdl was connected (RESET MASTER, a re-seeded or replaced server behind the same address); continuing would skip its new changes or mistake them for ones already relayed. Fix: if this is another server or a deliberately reset one, give it a new source.name (its changes then get their own ids and offset) and a new, empty WAL directory; if source.url points at the wrong server, point it back (docs/operations.md, \"Source diverged\")")]
    HistoryWentBack {
        position: String,
        variable: &'static str,
        current: String,
        detail: String,
    },
    /// The source's position is past sdl's, yet the stream sends only heartbeats: the server
    /// believes sdl has everything. A binlog replaced under the connection does that.
    #[error("the source's binlog has moved on to {current} (`{variable}`), but the binlog stream has sent nothing past {position} for {waited:?}, only heartbeats: the stream is following a binlog the server no longer writes (RESET MASTER while sdl was connected, or a binlog replaced under it). sdl stops instead of waiting: start it again (systemd does), and its start-up check of the source's history either resumes exactly where it stopped or refuses with exit 4 if the history is another one")]
    StreamBehindSource {
        position: String,
        variable: &'static str,
        current: String,
        waited: std::time::Duration,
    },
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
    /// A table a snapshot cannot read: it does not exist (or is not a base table), it has
    /// neither a primary key nor a NOT NULL UNIQUE key to chunk by and to tell which rows a
    /// concurrent change touched, or it changed under the read. `reason` says which, and the fix.
    #[error("cannot snapshot {table}: {reason}")]
    SnapshotRefused { table: String, reason: String },
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

/// Server errors that say "not now" rather than "never": lock waits, deadlocks, statement
/// timeouts, interrupted queries, a server shutting down or out of connections. A query that
/// fails with one is retried (with the reconnect backoff), whatever connection it ran on.
pub(super) const TRANSIENT_SERVER_ERRORS: &[u16] = &[
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

pub(super) fn query_error(query: &str, e: mysql_async::Error) -> SourceError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
