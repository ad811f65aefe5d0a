//! The MongoDB sink: commits batches of WAL records as change documents, exactly once.
//!
//! # Guarantees
//! - **Transactions on** (`sink.transactions` "on", or "auto" against a replica set or sharded
//!   cluster): a batch's change documents, the offset document naming the batch's last WAL
//!   sequence, and the batch's staging entry turning "committed" are written in **one** MongoDB
//!   transaction: either all are visible or none is.
//! - **Transactions off** ("off", or "auto" against a standalone server): the change documents are
//!   inserted unordered and idempotently, then the offset moves, then the staging entry turns
//!   "committed". A crash between the steps replays the batch, which inserts nothing twice:
//!   exactly-once in effect.
//! - **Duplicates, both modes:** the `_id` (`<source.name>/<gtid>:<ordinal>`) is derived from the
//!   source's name and the binlog alone, so two sources never share one. A duplicate-key error
//!   counts as "already applied" only when every stored document under the batch's ids has the
//!   batch's content `hash` (the same change); anything else is a definite
//!   [`SinkError::ChangeConflict`] naming both documents, and nothing is overwritten.
//! - **Transaction limits:** a batch MongoDB refuses as too large for one transaction
//!   (TransactionTooLargeForCache, TransactionTooLarge, BSONObjectTooLarge) is never retried
//!   unchanged: it is committed in halves at WAL record boundaries, halved again as needed, and a
//!   single record that still does not fit is written the transactions-off way. A failed
//!   `mongodb+srv://` or host-name lookup is transient (retried), not a bad URL.
//! - The offset document is the sink's memory of what it has applied. Before writing, the previous
//!   offset is checked (inside the transaction when there is one): a batch the offset already
//!   covers is not written again (a replay after a crash between the MongoDB commit and the WAL
//!   acknowledgement), and a batch that would leave a hole is refused.
//! - Staging (`row_changes_staging`): every batch is recorded as "pending" (WAL sequence range,
//!   GTID range, count, bytes, `createdAt`) **before** its commit, durably (majority, journaled),
//!   so a batch in flight when the process died is visible afterwards; the forwarder reconciles
//!   such entries at start. A TTL index on `createdAt` (`sink.staging_ttl`) removes old entries.
//! - Commit errors are retried as the MongoDB driver specification prescribes:
//!   `TransientTransactionError` reruns the whole transaction, `UnknownTransactionCommitResult`
//!   retries the commit. Every other error is returned classified: transient (network, election,
//!   timeout, write conflict, DNS: the forwarder retries through its circuit breaker) or definite
//!   (auth, validation, oversize, a change conflict: the forwarder stops).
//!
//! # Test hook
//! `SDL_TEST_EXIT_AFTER_STAGING=1` in the environment makes the process exit (code 97) right
//! after the first batch's staging entry is written and before its commit, leaving a pending
//! entry behind exactly as a crash at that point would. It exists for the staging reconciliation
//! test; nothing else sets it.

pub mod batch;
pub mod document;

use std::time::Duration;

use bson::{doc, Document, RawDocumentBuf};
use futures_util::TryStreamExt;
use mongodb::error::{
    Error as MongoError, ErrorKind, WriteFailure, TRANSIENT_TRANSACTION_ERROR,
    UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::{
    ClientOptions, IndexOptions, ReturnDocument, Tls, TlsOptions, WriteConcern,
};
use mongodb::{Client, ClientSession, Collection, IndexModel};

pub use batch::Batch;

use crate::config::{SinkConfig, TlsMode, TransactionMode};
use crate::redact::{redact_error, redact_url};

pub const CHANGES_COLLECTION: &str = "row_changes";
pub const OFFSETS_COLLECTION: &str = "binlog_offsets";
pub const STAGING_COLLECTION: &str = "row_changes_staging";

/// The environment variable of the staging test hook (see the module documentation).
pub const EXIT_AFTER_STAGING_ENV: &str = "SDL_TEST_EXIT_AFTER_STAGING";
/// The exit code of the staging test hook.
pub const EXIT_AFTER_STAGING_CODE: i32 = 97;

/// The `id_form` of staging entries: the `_id` shape of the batch's change documents. Entries
/// written by an sdl with `<gtid>:<ordinal>` ids have no `id_form`; their documents have `<gtid>:<ordinal>` ids.
pub const ID_FORM: &str = "source/gtid:ordinal";

/// Staging entry states.
pub const STAGING_PENDING: &str = "pending";
pub const STAGING_COMMITTED: &str = "committed";
/// A pending entry found at start whose batch the offset does not cover: it was never applied
/// (or, without transactions, partly applied) and is forwarded again from the WAL.
pub const STAGING_NOT_APPLIED: &str = "not_applied";

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
    #[error("MongoDB {operation} failed: {detail}")]
    Operation {
        operation: &'static str,
        detail: String,
        transient: bool,
    },
}

impl SinkError {
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

fn operation_error(operation: &'static str, e: &MongoError) -> SinkError {
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
fn is_too_large(e: &MongoError) -> bool {
    if matches!(error_code(e), Some(code) if TOO_LARGE_CODES.contains(&code)) {
        return true;
    }
    matches!(error_code(e), Some(1))
        && e.to_string()
            .contains("Transaction is too large and will not fit in the storage engine cache")
}

/// Network failures, elections, timeouts and write conflicts go away by themselves; everything
/// else (auth, validation, oversize documents, bad commands) will fail again the same way.
fn is_transient(e: &MongoError) -> bool {
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
fn is_dns_failure(e: &MongoError) -> bool {
    matches!(*e.kind, ErrorKind::DnsResolve { .. })
}

fn error_code(e: &MongoError) -> Option<i32> {
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
fn only_duplicates(e: &MongoError) -> bool {
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

/// What the offset document says was last applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOffset {
    pub wal_id: String,
    pub wal_seq: u64,
    pub gtid_position: String,
}

pub struct MongoSink {
    client: Client,
    url: String,
    source_name: String,
    changes: Collection<RawDocumentBuf>,
    offsets: Collection<Document>,
    staging: Collection<Document>,
    transactions: bool,
    staging_ttl: Duration,
    exit_after_staging: bool,
}

/// What happened to a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    Written {
        documents: usize,
    },
    /// The offset already covered this batch; nothing was written.
    AlreadyApplied,
}

/// A batch's staging entry, written, and the session its transaction is to run in (its `lsid` is
/// in the entry).
pub struct Staged {
    id: String,
    session: ClientSession,
}

/// A staging entry left "pending" by an earlier run.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingBatch {
    pub id: String,
    pub wal_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_gtid: String,
    pub last_gtid: String,
    pub count: u64,
    /// The logical session of the transaction that was to commit it (transactions on).
    pub session: Option<Document>,
    /// Staged by an sdl with `<gtid>:<ordinal>` ids, whose change documents had `<gtid>:<ordinal>` ids.
    pub legacy_ids: bool,
}

/// A connected client and what the server can do, before anything is written.
pub struct Probe {
    pub client: Client,
    /// The URL with its password hidden.
    pub url: String,
    /// A replica set or a sharded cluster (multi-document transactions available).
    pub supports_transactions: bool,
    /// How the connection is protected (see [`Encryption`]).
    pub encryption: Encryption,
    /// The host names in sink.url (a `mongodb+srv://` name as given).
    pub hosts: Vec<String>,
}

/// Whether the connection to MongoDB is encrypted, as configured (the driver refuses to talk to a
/// server that does not complete the TLS handshake it asks for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    None,
    /// TLS with the server's certificate verified; `detail` says against what.
    Verified {
        detail: String,
    },
    /// TLS without certificate verification (`tlsInsecure` / `tlsAllowInvalidCertificates` in
    /// sink.url).
    Unverified,
}

fn encryption(tls: Option<&Tls>) -> Encryption {
    match tls {
        Some(Tls::Enabled(o)) if o.allow_invalid_certificates == Some(true) => {
            Encryption::Unverified
        }
        Some(Tls::Enabled(o)) => Encryption::Verified {
            detail: format!(
                "TLS, server certificate verified against {}{}",
                o.ca_file_path
                    .as_ref()
                    .map_or("the built-in roots".to_string(), |p| p
                        .display()
                        .to_string()),
                if o.cert_key_file_path.is_some() {
                    ", client certificate presented"
                } else {
                    ""
                }
            ),
        },
        _ => Encryption::None,
    }
}

/// Connects and asks the server's `hello`; writes nothing (also used by `sdl check`).
pub async fn probe(cfg: &SinkConfig) -> Result<Probe, SinkError> {
    let url = redact_url(&cfg.url);
    let mut options = match ClientOptions::parse(&cfg.url).await {
        Ok(options) => options,
        // A `mongodb+srv://` name is resolved (SRV and TXT records) while the URL is parsed: a
        // DNS failure there is the network's, and passes like any other unreachable server.
        Err(e) if is_dns_failure(&e) => {
            return Err(SinkError::Unreachable {
                url,
                detail: format!(
                    "DNS lookup failed (retried): {}",
                    redact_error(&e.to_string())
                ),
            })
        }
        Err(e) => return Err(SinkError::BadUrl(redact_error(&e.to_string()))),
    };
    if let Some(password) = cfg
        .password()
        .map_err(|e| SinkError::BadUrl(e.to_string()))?
    {
        let credential = options.credential.get_or_insert_with(Default::default);
        credential.password = Some(password);
    }
    if cfg.tls == TlsMode::On {
        options.tls = Some(Tls::Enabled(
            TlsOptions::builder()
                .ca_file_path(cfg.tls_ca_file.clone())
                .cert_key_file_path(cfg.tls_cert_key_file.clone())
                .build(),
        ));
    }
    let encryption = encryption(options.tls.as_ref());
    let hosts = options
        .hosts
        .iter()
        .map(|h| match h {
            mongodb::options::ServerAddress::Tcp { host, .. } => host.clone(),
            other => other.to_string(),
        })
        .collect();
    options.server_selection_timeout = Some(cfg.connect_timeout);
    options.connect_timeout = Some(cfg.connect_timeout);
    options.write_concern = Some(
        WriteConcern::builder()
            .w(mongodb::options::Acknowledgment::Majority)
            .journal(true)
            .build(),
    );
    options.app_name = Some("sdl".into());
    let client = Client::with_options(options)
        .map_err(|e| SinkError::BadUrl(redact_error(&e.to_string())))?;
    let hello = client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(|e| classify_connect_error(&url, &e))?;
    let replica_set = hello.get_str("setName").is_ok();
    let sharded = hello.get_str("msg").ok() == Some("isdbgrid");
    Ok(Probe {
        client,
        url,
        supports_transactions: replica_set || sharded,
        encryption,
        hosts,
    })
}

/// Ends a client's background tasks (monitors, connection pools) while the runtime still runs:
/// left to the runtime's own shutdown, a pool worker dropped before a task that uses it makes
/// that task panic as the process exits.
pub async fn shut_down(client: Client) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), client.shutdown()).await;
}

impl MongoSink {
    /// Closes the connections before exit (see [`shut_down`]).
    pub async fn close(self) {
        let client = self.client.clone();
        drop(self);
        shut_down(client).await;
    }

    /// Connects, decides whether to use transactions, and ensures the indexes.
    pub async fn connect(cfg: &SinkConfig, source_name: &str) -> Result<Self, SinkError> {
        let Probe {
            client,
            url,
            supports_transactions: supported,
            ..
        } = probe(cfg).await?;
        let transactions = match cfg.transactions {
            TransactionMode::On if !supported => return Err(SinkError::NoTransactions { url }),
            TransactionMode::On => true,
            TransactionMode::Auto => supported,
            TransactionMode::Off => false,
        };
        let db = client.database(&cfg.database);
        let sink = Self {
            changes: db.collection(CHANGES_COLLECTION),
            offsets: db.collection(OFFSETS_COLLECTION),
            staging: db.collection(STAGING_COLLECTION),
            client,
            url,
            source_name: source_name.to_string(),
            transactions,
            staging_ttl: cfg.staging_ttl,
            exit_after_staging: std::env::var_os(EXIT_AFTER_STAGING_ENV).is_some_and(|v| v == "1"),
        };
        sink.ensure_indexes().await?;
        Ok(sink)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `source.name`: the offset's `_id` and the first part of every change's `_id`.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Whether batches are committed in MongoDB transactions.
    pub fn uses_transactions(&self) -> bool {
        self.transactions
    }

    async fn ensure_indexes(&self) -> Result<(), SinkError> {
        let named = |name: &str| IndexOptions::builder().name(name.to_string());
        let indexes = [
            IndexModel::builder()
                .keys(doc! { "ts": 1 })
                .options(named("ts").build())
                .build(),
            IndexModel::builder()
                .keys(doc! { "meta.db": 1, "meta.tbl": 1, "meta.pk": 1 })
                .options(named("db_tbl_pk").build())
                .build(),
        ];
        self.changes
            .create_indexes(indexes)
            .await
            .map_err(|e| operation_error("createIndexes row_changes", &e))?;
        let staging_indexes = [
            IndexModel::builder()
                .keys(doc! { "status": 1 })
                .options(named("status").build())
                .build(),
            IndexModel::builder()
                .keys(doc! { "createdAt": 1 })
                .options(
                    named("createdAt_ttl")
                        .expire_after(self.staging_ttl)
                        .build(),
                )
                .build(),
        ];
        self.staging
            .create_indexes(staging_indexes)
            .await
            .map_err(|e| match error_code(&e) {
                // IndexOptionsConflict / IndexKeySpecsConflict: the TTL changed in the config.
                Some(85 | 86) => SinkError::Operation {
                    operation: "createIndexes row_changes_staging",
                    detail: format!(
                        "{}. The TTL index on createdAt exists with another expireAfterSeconds: \
                         change it with collMod (db.runCommand({{collMod: \"{STAGING_COLLECTION}\", \
                         index: {{name: \"createdAt_ttl\", expireAfterSeconds: {}}}}})) or drop \
                         the index, then start sdl again",
                        redact_error(&e.to_string()),
                        self.staging_ttl.as_secs()
                    ),
                    transient: false,
                },
                _ => operation_error("createIndexes row_changes_staging", &e),
            })?;
        Ok(())
    }

    /// Reads the offset document for this source.
    pub async fn offset(&self) -> Result<Option<SinkOffset>, SinkError> {
        let found = self
            .offsets
            .find_one(doc! { "_id": &self.source_name })
            .await
            .map_err(|e| operation_error("read offset", &e))?;
        Ok(found.map(|d| parse_offset(&d)))
    }

    /// For each GTID of a MariaDB `position` (the offset's), where the first change of that
    /// transaction was read (`meta.file`, `meta.pos` of its document `<source>/<gtid>:0`), when
    /// MongoDB has that document: the landmarks of `crate::service::identity`.
    pub async fn last_change_locations(
        &self,
        position: &str,
    ) -> Result<Vec<(String, String, u64)>, SinkError> {
        let before_partial = position.split(';').next().unwrap_or_default();
        let changes = self.changes.clone_with_type::<Document>();
        let mut found = Vec::new();
        for gtid in before_partial
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
        {
            let id = document::change_id(&self.source_name, gtid, 0);
            let stored = changes
                .find_one(doc! { "_id": &id })
                .projection(doc! { "meta.file": 1, "meta.pos": 1 })
                .await
                .map_err(|e| operation_error("read change documents", &e))?;
            let location = stored.as_ref().and_then(|d| {
                let meta = d.get_document("meta").ok()?;
                Some((
                    meta.get_str("file").ok()?.to_string(),
                    meta.get_i64("pos").ok()?.max(0) as u64,
                ))
            });
            if let Some((file, pos)) = location {
                found.push((gtid.to_string(), file, pos));
            }
        }
        Ok(found)
    }

    /// Staging entries of this source still marked "pending", oldest first.
    pub async fn pending_batches(&self) -> Result<Vec<PendingBatch>, SinkError> {
        let found: Vec<Document> = self
            .staging
            .find(doc! { "source": &self.source_name, "status": STAGING_PENDING })
            .sort(doc! { "createdAt": 1 })
            .await
            .map_err(|e| operation_error("read staging", &e))?
            .try_collect()
            .await
            .map_err(|e| operation_error("read staging", &e))?;
        Ok(found
            .iter()
            .map(|d| PendingBatch {
                id: d.get_str("_id").unwrap_or_default().to_string(),
                wal_id: d.get_str("wal_id").unwrap_or_default().to_string(),
                first_seq: d.get_i64("first_seq").unwrap_or_default().max(0) as u64,
                last_seq: d.get_i64("last_seq").unwrap_or_default().max(0) as u64,
                first_gtid: d.get_str("first_gtid").unwrap_or_default().to_string(),
                last_gtid: d.get_str("last_gtid").unwrap_or_default().to_string(),
                count: d.get_i64("count").unwrap_or_default().max(0) as u64,
                session: d.get_document("lsid").ok().cloned(),
                legacy_ids: d.get_str("id_form").is_err(),
            })
            .collect())
    }

    /// Ends the session of a dead run's transaction, so that its locks (on the offset document and
    /// the staging entry) are released now rather than when the server expires the transaction
    /// (`transactionLifetimeLimitSeconds`, 60 s by default). Best effort: if the server refuses,
    /// the transaction still expires by itself and the commits retry until then.
    pub async fn kill_session(&self, lsid: &Document) {
        let result = self
            .client
            .database("admin")
            .run_command(doc! { "killSessions": [lsid.clone()] })
            .await;
        if let Err(e) = result {
            tracing::warn!(
                error = %redact_error(&e.to_string()),
                "could not end the transaction of the earlier run; MongoDB aborts it when its lifetime expires, and commits wait until then"
            );
        }
    }

    /// Records how a pending staging entry was reconciled.
    pub async fn resolve_pending(
        &self,
        id: &str,
        status: &'static str,
        note: &str,
    ) -> Result<(), SinkError> {
        self.staging
            .update_one(
                doc! { "_id": id, "status": STAGING_PENDING },
                doc! { "$set": {
                    "status": status,
                    "reconciledAt": bson::DateTime::now(),
                    "note": note,
                } },
            )
            .await
            .map_err(|e| operation_error("update staging", &e))?;
        Ok(())
    }

    fn staging_id(&self, wal_id: &str, batch: &Batch) -> String {
        format!(
            "{}/{}/{}-{}",
            self.source_name, wal_id, batch.first_seq, batch.last_seq
        )
    }

    /// Records `batch` as pending, durably, before its commit.
    /// The staging entry of `batch`: (`_id`, document with status "pending").
    fn staging_entry(
        &self,
        wal_id: &str,
        batch: &Batch,
        session: Option<&Document>,
    ) -> (String, Document) {
        let id = self.staging_id(wal_id, batch);
        let mut entry = doc! {
            "_id": &id,
            "source": &self.source_name,
            "wal_id": wal_id,
            "first_seq": batch.first_seq as i64,
            "last_seq": batch.last_seq as i64,
            "first_gtid": &batch.first_gtid,
            "last_gtid": &batch.last_gtid,
            "position_after": &batch.position_after,
            "count": batch.documents.len() as i64,
            "bytes": batch.bytes as i64,
            "mode": if self.transactions { "transaction" } else { "idempotent" },
            "id_form": ID_FORM,
            "status": STAGING_PENDING,
            "createdAt": bson::DateTime::now(),
        };
        if let Some(lsid) = session {
            entry.insert("lsid", lsid.clone());
        }
        (id, entry)
    }

    /// Records `batch` as pending, durably, before its commit.
    async fn stage(
        &self,
        wal_id: &str,
        batch: &Batch,
        session: Option<&Document>,
    ) -> Result<String, SinkError> {
        let (id, entry) = self.staging_entry(wal_id, batch, session);
        self.staging
            .update_one(doc! { "_id": &id }, staging_upsert(entry))
            .upsert(true)
            .await
            .map_err(|e| operation_error("write staging", &e))?;
        if self.exit_after_staging {
            tracing::error!(
                staging = %id,
                "test hook {EXIT_AFTER_STAGING_ENV}: exiting between staging and commit"
            );
            std::process::exit(EXIT_AFTER_STAGING_CODE);
        }
        Ok(id)
    }

    fn committed_update() -> Document {
        doc! { "$set": { "status": STAGING_COMMITTED, "committedAt": bson::DateTime::now() } }
    }

    fn offset_update(wal_id: &str, batch: &Batch) -> Document {
        doc! {
            "$set": {
                "wal_id": wal_id,
                "wal_seq": batch.last_seq as i64,
                "gtid": &batch.position_after,
                "updated_at": bson::DateTime::now(),
            }
        }
    }

    /// Checks the previous offset against the batch: `Some(AlreadyApplied)` when covered.
    fn check_previous(
        &self,
        wal_id: &str,
        batch: &Batch,
        previous: Option<SinkOffset>,
    ) -> Result<Option<Committed>, SinkError> {
        let Some(previous) = previous.filter(|p| p.wal_id == wal_id) else {
            return Ok(None);
        };
        if previous.wal_seq >= batch.last_seq {
            return Ok(Some(Committed::AlreadyApplied));
        }
        if previous.wal_seq + 1 != batch.first_seq {
            return Err(SinkError::OffsetConflict {
                source_name: self.source_name.clone(),
                wal_id: wal_id.to_string(),
                found: previous.wal_seq,
                expected_next: batch.first_seq,
                detail: if previous.wal_seq >= batch.first_seq {
                    "the batch partly overlaps what was applied; another sdl may be writing with the same source.name"
                } else {
                    "records between them were never applied; another process changed the offset document"
                },
            });
        }
        Ok(None)
    }

    /// Commits `batch` (consecutive WAL records of WAL `wal_id`) exactly once.
    ///
    /// `staged`: the batch's staging entry when an earlier transaction already wrote it. `next`:
    /// the batch that will follow, if it is ready; with transactions its staging entry is written
    /// inside this batch's transaction (saving a durable write per batch) and returned, to be
    /// passed as `staged` when it is committed.
    pub async fn commit(
        &self,
        wal_id: &str,
        batch: &Batch,
        staged: Option<Staged>,
        next: Option<&Batch>,
    ) -> Result<(Committed, Option<Staged>), SinkError> {
        if !self.transactions {
            let staged = self.stage(wal_id, batch, None).await?;
            let outcome = self.commit_idempotent(wal_id, batch, &staged).await?;
            self.settle_replay(&staged, &outcome).await?;
            return Ok((outcome, None));
        }
        let Staged {
            id: staged,
            mut session,
        } = match staged {
            Some(staged) => staged,
            None => {
                let session = self.start_session().await?;
                let id = self.stage(wal_id, batch, Some(session.id())).await?;
                Staged { id, session }
            }
        };
        let next = match next {
            Some(next) => {
                let session = self.start_session().await?;
                let (id, entry) = self.staging_entry(wal_id, next, Some(session.id()));
                Some((Staged { id, session }, entry))
            }
            None => None,
        };
        let in_transaction = match self
            .commit_in_transaction(
                wal_id,
                batch,
                &staged,
                &mut session,
                next.as_ref().map(|(_, entry)| entry),
            )
            .await
        {
            Err(SinkError::TransactionTooLarge { detail, .. }) => {
                let outcome = Box::pin(self.commit_split(wal_id, batch, &staged, &detail)).await?;
                return Ok((outcome, None));
            }
            other => other?,
        };
        let outcome = match in_transaction {
            Some(Committed::Written { documents }) => {
                return Ok((
                    Committed::Written { documents },
                    next.map(|(staged, _)| staged),
                ))
            }
            Some(outcome) => outcome,
            None => {
                // Some of the batch's changes are there although the offset does not cover
                // them: an interrupted write without transactions (sink.transactions was "off"
                // before). Finish the batch the idempotent way.
                tracing::warn!(
                    first_seq = batch.first_seq,
                    last_seq = batch.last_seq,
                    "part of this batch is already in MongoDB from an earlier write without transactions; completing it with idempotent inserts"
                );
                self.commit_idempotent(wal_id, batch, &staged).await?
            }
        };
        self.settle_replay(&staged, &outcome).await?;
        Ok((outcome, None))
    }

    /// Commits a batch MongoDB refused as too large for one transaction: in halves at WAL record
    /// boundaries, each half in its own transaction (and halved again if need be), so the offset
    /// still moves over whole records only. A single record too large for a transaction is
    /// written the way `sink.transactions = "off"` writes (unordered inserts whose duplicates must
    /// be the same changes, then the offset): exactly once still, visible in parts. The batch's
    /// own staging entry is settled as split; each part has its own.
    async fn commit_split(
        &self,
        wal_id: &str,
        batch: &Batch,
        staged: &str,
        detail: &str,
    ) -> Result<Committed, SinkError> {
        let (first_seq, last_seq) = (batch.first_seq, batch.last_seq);
        match batch.split() {
            Some((first, second)) => {
                tracing::warn!(
                    first_seq,
                    last_seq,
                    documents = batch.documents.len(),
                    bytes = batch.bytes,
                    split_at = second.first_seq,
                    error = %detail,
                    "MongoDB cannot commit this batch in one transaction: committing it in two halves"
                );
                self.resolve_pending(
                    staged,
                    STAGING_NOT_APPLIED,
                    &format!(
                        "too large for one transaction; split at WAL sequence {} ({detail})",
                        second.first_seq
                    ),
                )
                .await?;
                let mut written = 0;
                for part in [&first, &second] {
                    if let (Committed::Written { documents }, _) =
                        Box::pin(self.commit(wal_id, part, None, None)).await?
                    {
                        written += documents;
                    }
                }
                Ok(Committed::Written { documents: written })
            }
            None => {
                tracing::warn!(
                    wal_seq = first_seq,
                    gtid = %batch.first_gtid,
                    documents = batch.documents.len(),
                    bytes = batch.bytes,
                    error = %detail,
                    "MongoDB cannot commit this one WAL record in one transaction: writing it without a transaction (idempotent inserts, then the offset)"
                );
                let outcome = self.commit_idempotent(wal_id, batch, staged).await?;
                self.settle_replay(staged, &outcome).await?;
                Ok(outcome)
            }
        }
    }

    async fn start_session(&self) -> Result<ClientSession, SinkError> {
        self.client
            .start_session()
            .await
            .map_err(|e| operation_error("startSession", &e))
    }

    /// A replayed batch's own staging entry: its records were applied earlier.
    async fn settle_replay(&self, staged: &str, outcome: &Committed) -> Result<(), SinkError> {
        if *outcome == Committed::AlreadyApplied {
            self.resolve_pending(staged, STAGING_COMMITTED, "already applied (replay)")
                .await?;
        }
        Ok(())
    }

    async fn commit_in_transaction(
        &self,
        wal_id: &str,
        batch: &Batch,
        staged: &str,
        session: &mut ClientSession,
        next_entry: Option<&Document>,
    ) -> Result<Option<Committed>, SinkError> {
        let mut attempts = 0u32;
        'transaction: loop {
            attempts += 1;
            session
                .start_transaction()
                .await
                .map_err(|e| operation_error("startTransaction", &e))?;
            let previous = self
                .offsets
                .find_one_and_update(
                    doc! { "_id": &self.source_name },
                    Self::offset_update(wal_id, batch),
                )
                .upsert(true)
                .return_document(ReturnDocument::Before)
                .session(&mut *session)
                .await;
            let previous = match previous {
                Ok(p) => p.map(|d| parse_offset(&d)),
                Err(e) => {
                    abort(session).await;
                    if retry_transaction(&e, attempts) {
                        continue 'transaction;
                    }
                    return Err(operation_error("update offset", &e));
                }
            };
            match self.check_previous(wal_id, batch, previous) {
                Ok(None) => {}
                done => {
                    abort(session).await;
                    return done;
                }
            }
            if let Err(e) = self
                .staging
                .update_one(doc! { "_id": staged }, Self::committed_update())
                .session(&mut *session)
                .await
            {
                abort(session).await;
                if retry_transaction(&e, attempts) {
                    continue 'transaction;
                }
                return Err(operation_error("update staging", &e));
            }
            if let Some(entry) = next_entry {
                let id = entry.get_str("_id").unwrap_or_default();
                if let Err(e) = self
                    .staging
                    .update_one(doc! { "_id": id }, staging_upsert(entry.clone()))
                    .upsert(true)
                    .session(&mut *session)
                    .await
                {
                    abort(session).await;
                    if retry_transaction(&e, attempts) {
                        continue 'transaction;
                    }
                    return Err(operation_error("write staging", &e));
                }
            }
            // The change documents go last: a storage engine near its cache limit (SecantusDB)
            // stalls writes that follow a large insert in the same transaction.
            if !batch.documents.is_empty() {
                if let Err(e) = self
                    .changes
                    .insert_many(&batch.documents)
                    .session(&mut *session)
                    .await
                {
                    abort(session).await;
                    if retry_transaction(&e, attempts) {
                        continue 'transaction;
                    }
                    if only_duplicates(&e) {
                        return Ok(None);
                    }
                    return Err(operation_error("insert change documents", &e));
                }
            }
            loop {
                match session.commit_transaction().await {
                    Ok(()) => {
                        return Ok(Some(Committed::Written {
                            documents: batch.documents.len(),
                        }))
                    }
                    Err(e)
                        if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                            && attempts < MAX_TRANSACTION_ATTEMPTS =>
                    {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) if retry_transaction(&e, attempts) => continue 'transaction,
                    Err(e) => return Err(operation_error("commitTransaction", &e)),
                }
            }
        }
    }

    /// After a duplicate-key error on `batch`'s inserts: every document of the batch must now be
    /// in MongoDB with the same content hash, i.e. the stored document under each id is the very
    /// same change. Anything else is a [`SinkError::ChangeConflict`] naming both.
    async fn check_duplicates(&self, batch: &Batch) -> Result<(), SinkError> {
        const IDS_PER_QUERY: usize = 1000;
        for chunk in batch.documents.chunks(IDS_PER_QUERY) {
            let ids: Vec<&str> = chunk.iter().filter_map(|d| d.get_str("_id").ok()).collect();
            let stored: Vec<Document> = self
                .changes
                .clone_with_type::<Document>()
                .find(doc! { "_id": { "$in": &ids } })
                .projection(doc! { "hash": 1, "op": 1, "meta.source": 1, "meta.db": 1, "meta.tbl": 1, "meta.gtid": 1, "meta.row": 1, "meta.file": 1, "meta.pos": 1 })
                .await
                .map_err(|e| operation_error("read change documents", &e))?
                .try_collect()
                .await
                .map_err(|e| operation_error("read change documents", &e))?;
            let stored: std::collections::HashMap<&str, &Document> = stored
                .iter()
                .filter_map(|d| Some((d.get_str("_id").ok()?, d)))
                .collect();
            for ours in chunk {
                let id = ours.get_str("_id").unwrap_or_default();
                let our_hash = ours.get_str(document::HASH_FIELD).ok();
                let conflict = |stored: String| SinkError::ChangeConflict {
                    id: id.to_string(),
                    stored,
                    ours: describe_raw_change(ours),
                    source_name: self.source_name.clone(),
                    first_seq: batch.first_seq,
                };
                match stored.get(id) {
                    Some(d) if d.get_str(document::HASH_FIELD).ok() == our_hash => {}
                    Some(d) => return Err(conflict(describe_change(d))),
                    // The duplicate was on another unique index, or the document went away.
                    None => return Err(conflict("(not found under this id)".into())),
                }
            }
        }
        Ok(())
    }

    /// Removes the `<gtid>:<ordinal>`-id documents an sdl with `<gtid>:<ordinal>` ids inserted for `documents`
    /// (the batch it left half-written) before the batch is written again with the new ids, so
    /// that each change stays in MongoDB once. A legacy document is removed only when it is the
    /// same change: everything but `_id`, `meta.source` and `hash` equal. Returns how many were
    /// removed and how many differed (kept).
    pub async fn remove_legacy_copies(
        &self,
        documents: &[RawDocumentBuf],
    ) -> Result<(usize, usize), SinkError> {
        let (mut removed, mut kept) = (0, 0);
        let changes = self.changes.clone_with_type::<Document>();
        for ours in documents {
            let Ok(mut ours) = ours.to_document() else {
                continue;
            };
            let (Ok(gtid), Ok(row)) = (
                ours.get_document("meta").and_then(|m| m.get_str("gtid")),
                ours.get_document("meta").and_then(|m| m.get_i64("row")),
            ) else {
                continue;
            };
            let legacy_id = document::legacy_change_id(gtid, row.max(0) as usize);
            let Some(mut stored) = changes
                .find_one(doc! { "_id": &legacy_id })
                .await
                .map_err(|e| operation_error("read change documents", &e))?
            else {
                continue;
            };
            for d in [&mut ours, &mut stored] {
                d.remove("_id");
                d.remove(document::HASH_FIELD);
                if let Ok(meta) = d.get_document_mut("meta") {
                    meta.remove("source");
                }
            }
            if ours == stored {
                changes
                    .delete_one(doc! { "_id": &legacy_id })
                    .await
                    .map_err(|e| operation_error("delete change document", &e))?;
                removed += 1;
            } else {
                kept += 1;
            }
        }
        Ok((removed, kept))
    }

    async fn commit_idempotent(
        &self,
        wal_id: &str,
        batch: &Batch,
        staged: &str,
    ) -> Result<Committed, SinkError> {
        let previous = self.offset().await?;
        if let Some(done) = self.check_previous(wal_id, batch, previous)? {
            return Ok(done);
        }
        if !batch.documents.is_empty() {
            match self
                .changes
                .insert_many(&batch.documents)
                .ordered(false)
                .await
            {
                Ok(_) => {}
                // Inserted by an earlier, interrupted try, if the stored documents are the same
                // changes: checked document by document.
                Err(e) if only_duplicates(&e) => self.check_duplicates(batch).await?,
                Err(e) => return Err(operation_error("insert change documents", &e)),
            }
        }
        self.offsets
            .update_one(
                doc! { "_id": &self.source_name },
                Self::offset_update(wal_id, batch),
            )
            .upsert(true)
            .await
            .map_err(|e| operation_error("update offset", &e))?;
        self.staging
            .update_one(doc! { "_id": staged }, Self::committed_update())
            .await
            .map_err(|e| operation_error("update staging", &e))?;
        Ok(Committed::Written {
            documents: batch.documents.len(),
        })
    }
}

/// The update that records a staging entry as pending. An entry of the same range written by an
/// earlier attempt keeps what reconciliation noted on it (`reconciledAt`, `note`), and `attempts`
/// counts how often the range was staged.
fn staging_upsert(mut entry: Document) -> Document {
    entry.remove("_id");
    doc! { "$set": entry, "$inc": { "attempts": 1 } }
}

async fn abort(session: &mut ClientSession) {
    // The transaction is abandoned either way; the server aborts it by itself if this fails.
    let _ = session.abort_transaction().await;
}

/// Retries within one commit call; beyond this the error goes to the forwarder, which backs off.
const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

fn retry_transaction(e: &MongoError, attempts: u32) -> bool {
    e.contains_label(TRANSIENT_TRANSACTION_ERROR) && attempts < MAX_TRANSACTION_ATTEMPTS
}

fn classify_connect_error(url: &str, e: &MongoError) -> SinkError {
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

/// A change document in a few words, for error messages.
fn describe_change(d: &Document) -> String {
    let meta = d.get_document("meta").ok();
    let text = |k: &str| {
        meta.and_then(|m| m.get_str(k).ok())
            .unwrap_or("?")
            .to_string()
    };
    let number = |k: &str| {
        meta.and_then(|m| m.get_i64(k).ok())
            .map_or("?".to_string(), |n| n.to_string())
    };
    format!(
        "{{source {}, GTID {}, ordinal {}, {} on {}.{} at {}:{}, hash {}}}",
        text("source"),
        text("gtid"),
        number("row"),
        d.get_str("op").unwrap_or("?"),
        text("db"),
        text("tbl"),
        text("file"),
        number("pos"),
        d.get_str(document::HASH_FIELD).unwrap_or("none"),
    )
}

fn describe_raw_change(d: &RawDocumentBuf) -> String {
    d.to_document()
        .map(|d| describe_change(&d))
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
}

fn parse_offset(d: &Document) -> SinkOffset {
    SinkOffset {
        wal_id: d.get_str("wal_id").unwrap_or_default().to_string(),
        wal_seq: d.get_i64("wal_seq").unwrap_or_default().max(0) as u64,
        gtid_position: d.get_str("gtid").unwrap_or_default().to_string(),
    }
}
