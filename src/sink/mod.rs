//! The MongoDB sink: commits batches of WAL records as change documents, exactly once.
//!
//! # Guarantees
//! - A batch's change documents and the offset document that names the batch's last WAL sequence
//!   are written in **one** MongoDB transaction: either both are visible or neither is.
//! - The offset document is the sink's memory of what it has applied. Inside the transaction the
//!   previous offset is checked: a batch that the offset already covers is not written again (a
//!   replay after a crash between the MongoDB commit and the WAL acknowledgement), and a batch that
//!   would leave a hole is refused.
//! - Commit errors are retried as the MongoDB driver specification prescribes:
//!   `TransientTransactionError` reruns the whole transaction, `UnknownTransactionCommitResult`
//!   retries the commit. Other errors are returned with their classification (transient or not).
//!
//! # Assumptions
//! The server supports multi-document transactions (a replica set or a sharded cluster); this is
//! checked at connect.

pub mod document;

use std::time::Duration;

use bson::{doc, Document};
use mongodb::error::{
    Error as MongoError, ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use sdl_wal::Stored;

use crate::config::SinkConfig;
use crate::event::SourceTransaction;
use crate::redact::{redact_error, redact_url};

pub const CHANGES_COLLECTION: &str = "row_changes";
pub const OFFSETS_COLLECTION: &str = "binlog_offsets";

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink.url is not a usable MongoDB connection string: {0}")]
    BadUrl(String),
    #[error("cannot reach MongoDB at {url}: {detail}. Check that the server is running and that sink.url has the right hosts (and replicaSet name)")]
    Unreachable { url: String, detail: String },
    #[error("MongoDB at {url} refused the login: {detail}. Check the user, password and authSource in sink.url")]
    AccessDenied { url: String, detail: String },
    #[error("MongoDB at {url} does not support transactions (a standalone server). sdl needs a replica set (a one-node replica set is enough: start mongod with --replSet and run rs.initiate()) or a sharded cluster")]
    NoTransactions { url: String },
    #[error("the offset document for source `{source_name}` says WAL {wal_id} sequence {found} was applied, but the next batch starts at sequence {expected_next}: {detail}")]
    OffsetConflict {
        source_name: String,
        wal_id: String,
        found: u64,
        expected_next: u64,
        detail: &'static str,
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
    SinkError::Operation {
        operation,
        detail: redact_error(&e.to_string()),
        transient: is_transient(e),
    }
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
    matches!(
        error_code(e),
        Some(
            6 | 7
                | 89
                | 91
                | 189
                | 262
                | 9001
                | 10107
                | 11600
                | 11602
                | 13435
                | 13436
                | 112
                | 244
                | 251
                | 50
        )
    ) || matches!(
        *e.kind,
        ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
    )
}

fn error_code(e: &MongoError) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteConcernError(w)) => Some(w.code),
        _ => None,
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
    changes: Collection<Document>,
    offsets: Collection<Document>,
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

impl MongoSink {
    /// Connects, checks that the server supports transactions, and ensures the indexes.
    pub async fn connect(cfg: &SinkConfig, source_name: &str) -> Result<Self, SinkError> {
        let url = redact_url(&cfg.url);
        let mut options = ClientOptions::parse(&cfg.url)
            .await
            .map_err(|e| SinkError::BadUrl(redact_error(&e.to_string())))?;
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
        if !replica_set && !sharded {
            return Err(SinkError::NoTransactions { url });
        }
        let db = client.database(&cfg.database);
        let sink = Self {
            changes: db.collection(CHANGES_COLLECTION),
            offsets: db.collection(OFFSETS_COLLECTION),
            client,
            url,
            source_name: source_name.to_string(),
        };
        sink.ensure_indexes().await?;
        Ok(sink)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn ensure_indexes(&self) -> Result<(), SinkError> {
        let indexes = [
            IndexModel::builder()
                .keys(doc! { "ts": 1 })
                .options(IndexOptions::builder().name("ts".to_string()).build())
                .build(),
            IndexModel::builder()
                .keys(doc! { "meta.db": 1, "meta.tbl": 1, "meta.pk": 1 })
                .options(
                    IndexOptions::builder()
                        .name("db_tbl_pk".to_string())
                        .build(),
                )
                .build(),
        ];
        self.changes
            .create_indexes(indexes)
            .await
            .map_err(|e| operation_error("createIndexes", &e))?;
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

    /// Commits `batch` (consecutive WAL records) in one transaction with the offset update.
    pub async fn commit(
        &self,
        wal_id: &str,
        batch: &[Stored<SourceTransaction>],
        documents: Vec<Document>,
    ) -> Result<Committed, SinkError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(Committed::AlreadyApplied);
        };
        let (first_seq, last_seq) = (first.seq, last.seq);
        let position = last.record.position_after.clone();
        let mut session = self
            .client
            .start_session()
            .await
            .map_err(|e| operation_error("startSession", &e))?;
        let mut attempts = 0u32;
        'transaction: loop {
            attempts += 1;
            session
                .start_transaction()
                .await
                .map_err(|e| operation_error("startTransaction", &e))?;
            let update = doc! {
                "$set": {
                    "wal_id": wal_id,
                    "wal_seq": last_seq as i64,
                    "gtid": &position,
                    "updated_at": bson::DateTime::now(),
                }
            };
            let previous = self
                .offsets
                .find_one_and_update(doc! { "_id": &self.source_name }, update)
                .upsert(true)
                .return_document(ReturnDocument::Before)
                .session(&mut session)
                .await;
            let previous = match previous {
                Ok(p) => p.map(|d| parse_offset(&d)),
                Err(e) if retry_transaction(&e, attempts) => {
                    let _ = session.abort_transaction().await;
                    continue 'transaction;
                }
                Err(e) => {
                    let _ = session.abort_transaction().await;
                    return Err(operation_error("update offset", &e));
                }
            };
            if let Some(previous) = previous.filter(|p| p.wal_id == wal_id) {
                if previous.wal_seq >= last_seq {
                    let _ = session.abort_transaction().await;
                    return Ok(Committed::AlreadyApplied);
                }
                if previous.wal_seq + 1 != first_seq {
                    let _ = session.abort_transaction().await;
                    return Err(SinkError::OffsetConflict {
                        source_name: self.source_name.clone(),
                        wal_id: wal_id.to_string(),
                        found: previous.wal_seq,
                        expected_next: first_seq,
                        detail: if previous.wal_seq >= first_seq {
                            "the batch partly overlaps what was applied; another sdl may be writing with the same source.name"
                        } else {
                            "records between them were never applied; another process changed the offset document"
                        },
                    });
                }
            }
            if !documents.is_empty() {
                if let Err(e) = self
                    .changes
                    .insert_many(documents.iter())
                    .session(&mut session)
                    .await
                {
                    let _ = session.abort_transaction().await;
                    if retry_transaction(&e, attempts) {
                        continue 'transaction;
                    }
                    return Err(operation_error("insert change documents", &e));
                }
            }
            loop {
                match session.commit_transaction().await {
                    Ok(()) => {
                        return Ok(Committed::Written {
                            documents: documents.len(),
                        })
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
}

/// Retries within one commit call; beyond this the error goes to the forwarder, which backs off.
const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

fn retry_transaction(e: &MongoError, attempts: u32) -> bool {
    e.contains_label(TRANSIENT_TRANSACTION_ERROR) && attempts < MAX_TRANSACTION_ATTEMPTS
}

fn classify_connect_error(url: &str, e: &MongoError) -> SinkError {
    let detail = redact_error(&e.to_string());
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

fn parse_offset(d: &Document) -> SinkOffset {
    SinkOffset {
        wal_id: d.get_str("wal_id").unwrap_or_default().to_string(),
        wal_seq: d.get_i64("wal_seq").unwrap_or_default().max(0) as u64,
        gtid_position: d.get_str("gtid").unwrap_or_default().to_string(),
    }
}
