//! Committing a batch exactly once: in one MongoDB transaction (change documents, offset, staging
//! entry, and with `[lease]` the fence: the lease still this process's, see `lease.rs`), or
//! without transactions as idempotent inserts then the offset; a batch too large for one
//! transaction is split at WAL record boundaries. The guarantees are in the module
//! documentation of `crate::sink`.

use std::time::Duration;

use bson::{doc, Document, RawDocumentBuf};
use futures_util::TryStreamExt;
use mongodb::error::{
    Error as MongoError, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::ReturnDocument;
use mongodb::ClientSession;

use super::error::{only_duplicates, operation_error};
use super::offset::parse_offset;
use super::staging::staging_upsert;
use super::{
    document, Batch, Committed, MongoSink, SinkError, STAGING_COMMITTED, STAGING_NOT_APPLIED,
};

/// A batch's staging entry, written, and the session its transaction is to run in (its `lsid` is
/// in the entry).
pub struct Staged {
    id: String,
    session: ClientSession,
}

impl MongoSink {
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
                tracing::warn!(target: "sdl::sink",
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
                tracing::warn!(target: "sdl::sink",
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
                tracing::warn!(target: "sdl::sink",
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
            // The fence last (`lease.rs`): a batch of an instance that lost the lease never
            // commits. Last, so that the lease document is locked only for the commit itself
            // (renewals and a takeover wait for no batch's inserts).
            let fenced = self.fence_in(session).await;
            if self
                .still_fenced(session, fenced, attempts, "check lease")
                .await?
                == Fenced::Retry
            {
                continue 'transaction;
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
    /// same change (a document the previous release wrote, without `meta.src`, is compared with
    /// the hash of that form: [`document::is_same_change`]). Anything else is a
    /// [`SinkError::ChangeConflict`] naming both.
    async fn check_duplicates(&self, batch: &Batch) -> Result<(), SinkError> {
        const IDS_PER_QUERY: usize = 1000;
        for chunk in batch.documents.chunks(IDS_PER_QUERY) {
            let ids: Vec<&str> = chunk.iter().filter_map(|d| d.get_str("_id").ok()).collect();
            let stored: Vec<Document> = self
                .changes
                .clone_with_type::<Document>()
                .find(doc! { "_id": { "$in": &ids } })
                .projection(doc! { "hash": 1, "op": 1, "meta.source": 1, document::SOURCE_PATH: 1, "meta.db": 1, "meta.tbl": 1, "meta.gtid": 1, "meta.row": 1, "meta.file": 1, "meta.pos": 1 })
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
                let conflict = |stored: String| SinkError::ChangeConflict {
                    id: id.to_string(),
                    stored,
                    ours: describe_raw_change(ours),
                    source_name: self.source_name.clone(),
                    first_seq: batch.first_seq,
                };
                match stored.get(id) {
                    Some(d) if document::is_same_change(d, ours) => {}
                    Some(d) if is_snapshot(d) && ours.get_str("op").ok() == Some("snapshot") => {
                        // A snapshot row is read again only when MongoDB's offset does not
                        // cover it (the plan in the offset is before its key), so a stored copy
                        // under its id was left by a batch that never completed (transactions
                        // off, then a lost WAL): read at another moment, it may differ, and the
                        // copy the offset will account for replaces it.
                        self.replace_snapshot_row(id, ours).await?;
                    }
                    Some(d) => return Err(conflict(describe_change(d))),
                    // The duplicate was on another unique index, or the document went away.
                    None => return Err(conflict("(not found under this id)".into())),
                }
            }
        }
        Ok(())
    }

    async fn replace_snapshot_row(&self, id: &str, ours: &RawDocumentBuf) -> Result<(), SinkError> {
        self.changes
            .replace_one(doc! { "_id": id }, ours)
            .await
            .map_err(|e| {
                operation_error(
                    "replace a snapshot document left by an incomplete batch",
                    &e,
                )
            })?;
        Ok(())
    }

    async fn commit_idempotent(
        &self,
        wal_id: &str,
        batch: &Batch,
        staged: &str,
    ) -> Result<Committed, SinkError> {
        // An instance that lost the lease writes nothing more; the offset below moves only with
        // the fence (`lease.rs`).
        self.still_holds_lease().await?;
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
        if self.has_fence() {
            self.move_offset_fenced(wal_id, batch, staged).await?;
        } else {
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
        }
        Ok(Committed::Written {
            documents: batch.documents.len(),
        })
    }
}

impl MongoSink {
    /// The offset and staging moves of a batch written without a transaction, in one small
    /// transaction with the lease's fence: an instance that lost the lease cannot move them.
    async fn move_offset_fenced(
        &self,
        wal_id: &str,
        batch: &Batch,
        staged: &str,
    ) -> Result<(), SinkError> {
        let mut session = self.start_session().await?;
        let session = &mut session;
        let mut attempts = 0u32;
        'transaction: loop {
            attempts += 1;
            session
                .start_transaction()
                .await
                .map_err(|e| operation_error("startTransaction", &e))?;
            let written = async {
                if !self.fence_in(session).await? {
                    return Ok(false);
                }
                self.offsets
                    .update_one(
                        doc! { "_id": &self.source_name },
                        Self::offset_update(wal_id, batch),
                    )
                    .upsert(true)
                    .session(&mut *session)
                    .await?;
                self.staging
                    .update_one(doc! { "_id": staged }, Self::committed_update())
                    .session(&mut *session)
                    .await?;
                Ok::<_, MongoError>(true)
            }
            .await;
            if self
                .still_fenced(session, written, attempts, "update offset")
                .await?
                == Fenced::Retry
            {
                continue 'transaction;
            }
            loop {
                match session.commit_transaction().await {
                    Ok(()) => return Ok(()),
                    Err(e)
                        if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                            && attempts < MAX_TRANSACTION_ATTEMPTS =>
                    {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) if retry_transaction(&e, attempts) => continue 'transaction,
                    Err(e) => return Err(operation_error("commitTransaction", &e)),
                }
            }
        }
    }

    /// Settles a write inside a batch transaction that also checks the fence (`lease.rs`):
    /// `Ok(true)` goes on; the fence found taken (`Ok(false)`) aborts and is
    /// [`SinkError::LeaseLost`]; an error aborts, and is retried as a whole transaction when
    /// transient, else returned naming `operation`.
    async fn still_fenced(
        &self,
        session: &mut ClientSession,
        written: Result<bool, MongoError>,
        attempts: u32,
        operation: &'static str,
    ) -> Result<Fenced, SinkError> {
        match written {
            Ok(true) => Ok(Fenced::Go),
            Ok(false) => {
                abort(session).await;
                Err(self.lease_lost().await)
            }
            Err(e) => {
                abort(session).await;
                if retry_transaction(&e, attempts) {
                    return Ok(Fenced::Retry);
                }
                Err(operation_error(operation, &e))
            }
        }
    }
}

/// What a transaction does after a write that also checks the lease's fence.
#[derive(PartialEq, Eq)]
enum Fenced {
    /// The write landed and the lease is still this instance's: go on.
    Go,
    /// A transient transaction error: run the whole transaction again.
    Retry,
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

/// Whether a stored document (read with its `op`) is a snapshot row's.
fn is_snapshot(stored: &Document) -> bool {
    stored.get_str("op").ok() == Some("snapshot")
}
