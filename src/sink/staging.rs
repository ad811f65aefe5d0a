//! Staging (`row_changes_staging`): a batch is recorded "pending" durably before its commit and
//! turns "committed" with it; entries a dead run left pending are listed and settled at start.

use bson::{doc, Document};
use futures_util::TryStreamExt;

use super::error::operation_error;
use super::{
    Batch, MongoSink, PendingBatch, SinkError, ID_FORM, STAGING_COMMITTED, STAGING_PENDING,
};
use crate::redact::redact_error;

impl MongoSink {
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
            tracing::warn!(target: "sdl::sink",
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

    pub(super) fn staging_id(&self, wal_id: &str, batch: &Batch) -> String {
        format!(
            "{}/{}/{}-{}",
            self.source_name, wal_id, batch.first_seq, batch.last_seq
        )
    }

    /// Records `batch` as pending, durably, before its commit.
    /// The staging entry of `batch`: (`_id`, document with status "pending").
    pub(super) fn staging_entry(
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
    pub(super) async fn stage(
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
        // Compiled in only with `fail`'s `failpoints` feature (test builds): hence the paths.
        fail::fail_point!(super::EXIT_AFTER_STAGING_FAILPOINT, |_| {
            tracing::error!(target: "sdl::sink",
                staging = %id,
                "test hook {}: exiting between staging and commit",
                super::EXIT_AFTER_STAGING_FAILPOINT
            );
            std::process::exit(super::EXIT_AFTER_STAGING_CODE)
        });
        Ok(id)
    }

    pub(super) fn committed_update() -> Document {
        doc! { "$set": { "status": STAGING_COMMITTED, "committedAt": bson::DateTime::now() } }
    }
}

/// The update that records a staging entry as pending. An entry of the same range written by an
/// earlier attempt keeps what reconciliation noted on it (`reconciledAt`, `note`), and `attempts`
/// counts how often the range was staged.
pub(super) fn staging_upsert(mut entry: Document) -> Document {
    entry.remove("_id");
    doc! { "$set": entry, "$inc": { "attempts": 1 } }
}
