//! MongoDB errors classified: what each means for the forwarder (transient: retried through the
//! circuit breaker; definite: forwarding stops) and the message that says what to do.

use mongodb::error::{
    Error as MongoError, ErrorKind, WriteFailure, TRANSIENT_TRANSACTION_ERROR,
    UNKNOWN_TRANSACTION_COMMIT_RESULT,
};

use super::batch;
use crate::redact::redact_error;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink.url is not a usable MongoDB connection string: {0}")]
    BadUrl(String),
    #[error("cannot reach MongoDB at {url}: {detail}. Check that the server is running, that sink.url has the right hosts (and replicaSet name), and whether the server requires TLS (sink.tls)")]
    Unreachable { url: String, detail: String },
    #[error("TLS to MongoDB at {url} failed: {detail}. {fix}")]
    Tls {
        url: String,
        detail: String,
        fix: &'static str,
    },
    #[error("MongoDB at {url} refused the login: {detail}. Check the user, password and authSource in sink.url")]
    AccessDenied { url: String, detail: String },
    #[error("MongoDB at {url} does not support transactions (a standalone server) but sink.transactions is \"on\". Use a replica set (a one-node replica set is enough: start mongod with --replSet and run rs.initiate()) or a sharded cluster, or set sink.transactions = \"auto\" or \"off\" to write without transactions (idempotent inserts; still exactly-once)")]
    NoTransactions { url: String },
    #[error("change of table {table} with primary key {primary_key} in transaction {gtid} (WAL sequence {wal_seq}) is {size} bytes as BSON, over MongoDB's 16 MiB document limit ({limit} bytes). Forwarding stopped; nothing at or after WAL sequence {wal_seq} is acknowledged. The options are in docs/operations.md (\"A change over 16 MB\"); to skip this one transaction deliberately, resume after it at GTID position {position_after}", limit = batch::MAX_DOCUMENT_BYTES)]
    DocumentTooLarge {
        table: String,
        primary_key: String,
        gtid: String,
        wal_seq: u64,
        position_after: String,
        size: usize,
    },
    #[error("cannot encode the change documents of transaction {gtid} (WAL sequence {wal_seq}) as BSON: {detail}. This is a bug in sdl; please report it with this message")]
    Encode {
        gtid: String,
        wal_seq: u64,
        detail: String,
    },
    #[error("the offset document for source `{source_name}` says WAL {wal_id} sequence {found} was applied, but the next batch starts at sequence {expected_next}: {detail}")]
    OffsetConflict {
        source_name: String,
        wal_id: String,
        found: u64,
        expected_next: u64,
        detail: &'static str,
    },
    #[error("change {id} is already in MongoDB as a different change: stored {stored}; this one {ours}. Two changes got the same id, so the source's GTIDs were reused under source.name `{source_name}` (RESET MASTER, a re-seeded or replaced server, a second server relayed under the same source.name). Nothing from WAL sequence {first_seq} on is acknowledged and nothing was overwritten. Fix: relay a different server under its own source.name; if this server's history was reset on purpose, give it a new source.name (and a new WAL directory) so its changes get their own ids")]
    ChangeConflict {
        id: String,
        stored: String,
        ours: String,
        source_name: String,
        first_seq: u64,
    },
    #[error("MongoDB cannot commit this batch in one transaction ({operation}: {detail})")]
    TransactionTooLarge {
        operation: &'static str,
        detail: String,
    },
    #[error("lost the lease of source `{source_name}` (epoch {epoch}, instance `{instance}`): {detail}. Nothing is committed by this instance after the loss (every batch transaction checks the lease); it stops (exit 6) and, started again, waits as the standby")]
    LeaseLost {
        source_name: String,
        epoch: i64,
        instance: String,
        detail: String,
    },
    #[error("[lease] is enabled but MongoDB at {url} does not support transactions (a standalone server): the lease is checked inside every batch's transaction. Use a replica set (a one-node replica set is enough: start mongod with --replSet and run rs.initiate()) or a sharded cluster, or turn [lease] off")]
    LeaseNeedsTransactions { url: String },
    #[error("MongoDB {operation} failed: {detail}")]
    Operation {
        operation: &'static str,
        detail: String,
        transient: bool,
    },
}

impl SinkError {
    /// This instance no longer holds the lease (`[lease]`): it must stop, committing nothing more.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, SinkError::LeaseLost { .. })
    }

    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SinkError::Unreachable { .. }
                | SinkError::Operation {
                    transient: true,
                    ..
                }
        )
    }
}

pub(super) fn operation_error(operation: &'static str, e: &MongoError) -> SinkError {
    if is_too_large(e) {
        return SinkError::TransactionTooLarge {
            operation,
            detail: redact_error(&e.to_string()),
        };
    }
    SinkError::Operation {
        operation,
        detail: redact_error(&e.to_string()),
        transient: is_transient(e),
    }
}

/// Server error codes that go away by themselves: network (HostUnreachable 6, HostNotFound 7,
/// NetworkTimeout 89, SocketException 9001), elections and shutdowns (ShutdownInProgress 91,
/// PrimarySteppedDown 189, NotWritablePrimary 10107, InterruptedAtShutdown 11600,
/// InterruptedDueToReplStateChange 11602, NotPrimaryNoSecondaryOk 13435, NotPrimaryOrSecondary
/// 13436), timeouts (MaxTimeMSExpired 50, ExceededTimeLimit 262, WriteConcernFailed 64,
/// LockTimeout 24), write conflicts and aborted transactions (WriteConflict 112,
/// TransactionExceededLifetimeLimitSeconds 290, NoSuchTransaction 251, TransactionAborted 244).
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 89, 9001, 91, 189, 10107, 11600, 11602, 13435, 13436, 50, 262, 64, 24, 112, 290, 251, 244,
];

/// Server error codes of a transaction over MongoDB's limits: TransactionTooLargeForCache (388,
/// the storage engine's cache cannot hold its writes), TransactionTooLarge (334, the 16 MB total
/// of MongoDB 4.0), BSONObjectTooLarge (10334, an oplog entry or command over 16 MiB). The same
/// transaction fails again the same way; a smaller one fits: the batch is split.
const TOO_LARGE_CODES: &[i32] = &[334, 388, 10334];

/// A transaction over MongoDB's limits ([`TOO_LARGE_CODES`]). SecantusDB reports the storage
/// engine's refusal inside an InternalError (1) whose message names it: recognised by its text.
pub(super) fn is_too_large(e: &MongoError) -> bool {
    if matches!(error_code(e), Some(code) if TOO_LARGE_CODES.contains(&code)) {
        return true;
    }
    matches!(error_code(e), Some(1))
        && e.to_string()
            .contains("Transaction is too large and will not fit in the storage engine cache")
}

/// Network failures, elections, timeouts and write conflicts go away by themselves; everything
/// else (auth, validation, oversize documents, bad commands) will fail again the same way.
pub(super) fn is_transient(e: &MongoError) -> bool {
    if e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
        || e.contains_label("RetryableWriteError")
    {
        return true;
    }
    matches!(error_code(e), Some(code) if TRANSIENT_CODES.contains(&code))
        || matches!(
            *e.kind,
            ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::Io(_)
                | ErrorKind::ServerSelection { .. }
                | ErrorKind::DnsResolve { .. }
        )
}

/// A failed DNS lookup: the SRV/TXT records of a `mongodb+srv://` name or a host name. DNS
/// answers change (a record added, a resolver back), so this is retried like a network error.
pub(super) fn is_dns_failure(e: &MongoError) -> bool {
    matches!(*e.kind, ErrorKind::DnsResolve { .. })
}

pub(super) fn error_code(e: &MongoError) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|w| w.iter().map(|w| w.code).find(|&c| c != DUPLICATE_KEY))
            .or_else(|| m.write_concern_error.as_ref().map(|w| w.code)),
        _ => None,
    }
}

const DUPLICATE_KEY: i32 = 11000;

/// True when an unordered insert failed only because some documents were already there.
pub(super) fn only_duplicates(e: &MongoError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors
                    .as_ref()
                    .is_some_and(|w| w.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        _ => false,
    }
}

pub(super) fn classify_connect_error(url: &str, e: &MongoError) -> SinkError {
    // Without the driver's topology dump: the servers and the error each gave (messages::tidy).
    let detail = crate::messages::tidy(&redact_error(&e.to_string()));
    // The driver reports handshake failures inside its server selection error, as text.
    let tls_fix = if matches!(*e.kind, ErrorKind::InvalidTlsConfig { .. }) {
        Some("Check sink.tls_ca_file and sink.tls_cert_key_file (PEM files; the second holds the certificate and its key)")
    } else if detail.contains("invalid peer certificate") {
        Some("Check that sink.tls_ca_file holds the CA that signed the server's certificate and that the certificate names the host in sink.url (the driver always checks the name)")
    } else if detail.contains("received fatal alert") {
        Some("The server refused the TLS handshake: if it requires client certificates, set sink.tls_cert_key_file to a certificate (with its key) signed by the CA the server trusts")
    } else {
        None
    };
    if let Some(fix) = tls_fix {
        return SinkError::Tls {
            url: url.to_string(),
            detail,
            fix,
        };
    }
    match *e.kind {
        ErrorKind::Authentication { .. } => SinkError::AccessDenied {
            url: url.to_string(),
            detail,
        },
        _ if matches!(error_code(e), Some(18 | 13)) => SinkError::AccessDenied {
            url: url.to_string(),
            detail,
        },
        _ => SinkError::Unreachable {
            url: url.to_string(),
            detail,
        },
    }
}
