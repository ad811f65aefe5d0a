//! What the forwarder needs from a sink: the [`Sink`] trait, implemented for MongoDB by
//! `crate::sink::MongoSink` and in the forwarder's own tests by a sink in memory.
//!
//! # The contract
//! - [`Sink::commit`] writes a batch and the offset naming its last WAL sequence atomically, or
//!   recognises from the offset that it already holds the batch ([`Committed::AlreadyApplied`]):
//!   replaying a committed batch writes nothing twice. A batch that does not follow the offset is
//!   refused with a definite error. The forwarder acknowledges a WAL sequence only after `commit`
//!   returned it.
//! - Every error is classified ([`SinkFault::is_transient`]): transient errors (unreachable,
//!   elections, timeouts) are retried by the forwarder with the same batch; definite ones stop it.
//! - A batch too large for one atomic write is the sink's to split; the forwarder never sees it.
//! - [`Sink::prepare`] converts WAL records into the leading batch within the bounds, or names the
//!   record that can never be sent (a definite error; the records before it still form a batch).
//! - Staging: entries the sink left "pending" (a batch in flight when a run died) are listed by
//!   [`Sink::pending_batches`] and settled by the forwarder through [`Sink::resolve_pending`].

use std::future::Future;

use sdl_wal::Stored;

use crate::event::SourceTransaction;

/// A staging entry's verdict: its batch was applied before the restart.
pub const STAGING_COMMITTED: &str = "committed";
/// A pending entry found at start whose batch the offset does not cover: it was never applied
/// (or, without transactions, partly applied) and is forwarded again from the WAL.
pub const STAGING_NOT_APPLIED: &str = "not_applied";

/// An error a sink reports, classified.
pub trait SinkFault: std::error::Error + Send + Sync + 'static {
    /// Whether waiting and trying again can help (the sink unreachable, an election, a timeout).
    fn is_transient(&self) -> bool;

    /// Whether this instance lost the lease of a hot standby (`[lease]`): a definite error after
    /// which nothing may be committed; the service exits with its own code.
    fn is_lease_lost(&self) -> bool {
        false
    }
}

/// Consecutive WAL records converted and ready to commit, as the forwarder sees them.
pub trait WalBatch: Send + Sync + 'static {
    fn first_seq(&self) -> u64;
    fn last_seq(&self) -> u64;
    fn last_gtid(&self) -> &str;
    /// The source GTID position after the batch's last transaction.
    fn position_after(&self) -> &str;
    /// Source commit time of the batch's last transaction (Unix seconds), for the lag metric.
    fn last_timestamp(&self) -> u32;
}

/// What [`Sink::prepare`] made of the records it was given.
#[derive(Debug)]
pub enum Prepared<B, E> {
    /// A batch of the leading records (the rest, if any, belong to later batches).
    Batch(B),
    /// The leading records form a batch, and the record after them cannot be sent at all.
    BatchThenStop(B, E),
    /// The very first record cannot be sent.
    Stop(E),
}

/// What the offset document says was last applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOffset {
    pub wal_id: String,
    pub wal_seq: u64,
    pub gtid_position: String,
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
    /// The logical session of the transaction that was to commit it (MongoDB, transactions on).
    pub session: Option<bson::Document>,
    /// Staged by an sdl with `<gtid>:<ordinal>` ids, whose change documents had `<gtid>:<ordinal>` ids.
    pub legacy_ids: bool,
}

/// The operations the forwarder needs from a sink (see the module documentation for the contract).
pub trait Sink: Send + Sync + Sized + 'static {
    /// WAL records converted to the sink's documents.
    type Batch: WalBatch;
    /// A following batch's staging entry, already written inside the previous commit.
    type Staged: Send + 'static;
    type Error: SinkFault;

    /// `source.name`: what the sink's ids and offset are keyed by.
    fn source_name(&self) -> &str;

    /// Converts the leading records of `records` (consecutive, in sequence order, non-empty) into
    /// one batch of at most `max_documents` documents and `max_bytes` bytes (a single larger
    /// record travels alone). CPU-bound: the forwarder runs it off the async threads.
    fn prepare(
        source: &str,
        records: &[Stored<SourceTransaction>],
        max_documents: usize,
        max_bytes: usize,
    ) -> Prepared<Self::Batch, Self::Error>;

    /// Reads the sink's offset for this source.
    fn offset(&self) -> impl Future<Output = Result<Option<SinkOffset>, Self::Error>> + Send;

    /// Commits `batch` (consecutive WAL records of WAL `wal_id`) exactly once, with the offset.
    /// `staged`: the batch's staging entry when the previous commit already wrote it; `next`: the
    /// batch that will follow, if ready, whose staging entry the sink may write in this commit
    /// and return, to be passed back as `staged`.
    fn commit(
        &self,
        wal_id: &str,
        batch: &Self::Batch,
        staged: Option<Self::Staged>,
        next: Option<&Self::Batch>,
    ) -> impl Future<Output = Result<(Committed, Option<Self::Staged>), Self::Error>> + Send;

    /// Staging entries of this source still marked "pending", oldest first.
    fn pending_batches(
        &self,
    ) -> impl Future<Output = Result<Vec<PendingBatch>, Self::Error>> + Send;

    /// Ends the transaction a dead run left open for `pending` (best effort), so that its locks
    /// go now rather than when the sink expires it.
    fn end_pending_transaction(&self, pending: &PendingBatch) -> impl Future<Output = ()> + Send;

    /// Records how a pending staging entry was reconciled (`status` is [`STAGING_COMMITTED`] or
    /// [`STAGING_NOT_APPLIED`]).
    fn resolve_pending(
        &self,
        id: &str,
        status: &'static str,
        note: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Removes the copies of `batch`'s changes an sdl with `<gtid>:<ordinal>` ids left
    /// half-written; returns how many were removed and how many differed (kept).
    fn remove_legacy_copies(
        &self,
        batch: &Self::Batch,
    ) -> impl Future<Output = Result<(usize, usize), Self::Error>> + Send;

    /// Releases the sink's connections before exit.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// How the forwarder gets a sink when it has none (MongoDB unreachable at start): tried again
/// through the circuit breaker until it succeeds.
pub trait Connect<S: Sink>: Send {
    fn connect(&mut self) -> impl Future<Output = Result<S, S::Error>> + Send;
}
