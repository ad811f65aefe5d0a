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
//!   [`SinkError::ChangeConflict`] naming both documents, and nothing is overwritten. The one
//!   exception: a snapshot row (`op: "snapshot"`) is read again only when MongoDB's offset does not
//!   cover it, so a different stored copy under its id is the leftover of a batch that never
//!   completed, and is replaced by the copy the offset will account for.
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
//! - **Hot standby** (`[lease]`, `lease.rs`): with a fence set, every batch transaction also
//!   updates this instance's lease document as its last write; found taken, the transaction is
//!   aborted and the commit fails with the definite [`SinkError::LeaseLost`]: an instance that
//!   lost the lease never commits.
//! - Commit errors are retried as the MongoDB driver specification prescribes:
//!   `TransientTransactionError` reruns the whole transaction, `UnknownTransactionCommitResult`
//!   retries the commit. Every other error is returned classified: transient (network, election,
//!   timeout, write conflict, DNS: the forwarder retries through its circuit breaker) or definite
//!   (auth, validation, oversize, a change conflict: the forwarder stops).
//!
//! # Layout
//! [`MongoSink`] implements the forwarder's `crate::forward::Sink` (here, at the end). `connect.rs`:
//! the `hello` probe, TLS and the indexes; `commit.rs`: a batch committed exactly once;
//! `offset.rs`: the offset document; `lease.rs`: the lease of a hot standby and its fence;
//! `staging.rs`: staging entries; `sharding.rs`: the shard keys sdl needs on a sharded cluster,
//! checked at start; `changes.rs`: reads of stored
//! change documents; `error.rs`: MongoDB errors classified; `batch.rs`: WAL records → a batch of
//! raw BSON within MongoDB's limits; `document/`: the change-document shape.
//!
//! # Test hook
//! The fail point [`EXIT_AFTER_STAGING_FAILPOINT`] (the `fail` crate), set to `return` (the
//! environment's `FAILPOINTS=sdl-exit-after-staging=return`), makes the process exit (code 97)
//! right after the first batch's staging entry is written and before its commit, leaving a
//! pending entry behind exactly as a crash at that point would. It exists for the staging
//! reconciliation tests. Fail points are compiled in only in test builds (`fail`'s `failpoints`
//! feature, a dev-dependency): a release build has none.

mod changes;
mod commit;
mod connect;
mod error;
pub mod lease;
mod offset;
mod sharding;
mod staging;

pub mod batch;
pub mod document;

use std::time::Duration;

use bson::{Document, RawDocumentBuf};
use mongodb::{Client, Collection};

pub use crate::forward::{
    Committed, PendingBatch, SinkOffset, STAGING_COMMITTED, STAGING_NOT_APPLIED,
};
pub use batch::Batch;
pub use commit::Staged;
pub use connect::{probe, shut_down, Encryption, MongoConnect, Probe};
pub use error::SinkError;
pub use lease::Fence;

pub const CHANGES_COLLECTION: &str = "row_changes";
pub const OFFSETS_COLLECTION: &str = "binlog_offsets";
pub const STAGING_COLLECTION: &str = "row_changes_staging";
/// The lease documents of hot standbys (`[lease]`), one per `source.name` (`lease.rs`).
pub const LEASES_COLLECTION: &str = "relay_leases";

/// The fail point of the staging test hook (see the module documentation).
pub const EXIT_AFTER_STAGING_FAILPOINT: &str = "sdl-exit-after-staging";
/// The exit code of the staging test hook.
pub const EXIT_AFTER_STAGING_CODE: i32 = 97;

/// The `id_form` of staging entries: the `_id` shape of the batch's change documents. Entries
/// written by an sdl with `<gtid>:<ordinal>` ids have no `id_form`; their documents have `<gtid>:<ordinal>` ids.
pub const ID_FORM: &str = "source/gtid:ordinal";

/// Staging entry state of a batch staged and not (yet) committed.
pub const STAGING_PENDING: &str = "pending";

pub struct MongoSink {
    client: Client,
    url: String,
    source_name: String,
    changes: Collection<RawDocumentBuf>,
    offsets: Collection<Document>,
    staging: Collection<Document>,
    transactions: bool,
    staging_ttl: Duration,
    /// `relay_leases` and the lease this process holds (`[lease]`; see `lease.rs`).
    leases: Collection<Document>,
    fence: Option<lease::Fence>,
}

impl MongoSink {
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
}

impl crate::forward::SinkFault for SinkError {
    fn is_transient(&self) -> bool {
        SinkError::is_transient(self)
    }
    fn is_lease_lost(&self) -> bool {
        SinkError::is_lease_lost(self)
    }
}

impl crate::forward::WalBatch for Batch {
    fn first_seq(&self) -> u64 {
        self.first_seq
    }
    fn last_seq(&self) -> u64 {
        self.last_seq
    }
    fn last_gtid(&self) -> &str {
        &self.last_gtid
    }
    fn position_after(&self) -> &str {
        &self.position_after
    }
    fn last_timestamp(&self) -> u32 {
        self.last_timestamp
    }
}

/// MongoDB as the forwarder's sink: each operation is the inherent method of the same name.
impl crate::forward::Sink for MongoSink {
    type Batch = Batch;
    type Staged = Staged;
    type Error = SinkError;

    fn source_name(&self) -> &str {
        &self.source_name
    }

    fn prepare(
        source: &str,
        records: &[sdl_wal::Stored<crate::event::SourceTransaction>],
        max_documents: usize,
        max_bytes: usize,
    ) -> batch::Prepared {
        batch::prepare(source, records, max_documents, max_bytes)
    }

    async fn offset(&self) -> Result<Option<SinkOffset>, SinkError> {
        MongoSink::offset(self).await
    }

    async fn commit(
        &self,
        wal_id: &str,
        batch: &Batch,
        staged: Option<Staged>,
        next: Option<&Batch>,
    ) -> Result<(Committed, Option<Staged>), SinkError> {
        MongoSink::commit(self, wal_id, batch, staged, next).await
    }

    async fn pending_batches(&self) -> Result<Vec<PendingBatch>, SinkError> {
        MongoSink::pending_batches(self).await
    }

    async fn end_pending_transaction(&self, pending: &PendingBatch) {
        if let Some(lsid) = &pending.session {
            self.kill_session(lsid).await;
        }
    }

    async fn resolve_pending(
        &self,
        id: &str,
        status: &'static str,
        note: &str,
    ) -> Result<(), SinkError> {
        MongoSink::resolve_pending(self, id, status, note).await
    }

    async fn remove_legacy_copies(&self, batch: &Batch) -> Result<(usize, usize), SinkError> {
        MongoSink::remove_legacy_copies(self, &batch.documents).await
    }

    async fn close(self) {
        MongoSink::close(self).await
    }
}
