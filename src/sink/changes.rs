//! Reads of stored change documents outside commits: where the offset's transactions were read
//! from (the service compares them with the source's binlog), and the removal of copies an sdl with `<gtid>:<ordinal>`
//! ids left half-written.

use bson::{doc, Document, RawDocumentBuf};

use super::error::operation_error;
use super::{document, MongoSink, SinkError};

impl MongoSink {
    /// For each GTID of a MariaDB `position` (the offset's), where the first change of that
    /// transaction was read (`meta.file`, `meta.pos` of its document `<source>/<gtid>:0`), when
    /// MongoDB has that document: the landmarks the service checks against the source's binlog.
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

    /// Removes the `<gtid>:<ordinal>`-id documents an sdl with `<gtid>:<ordinal>` ids inserted for `documents`
    /// (the batch it left half-written) before the batch is written again with the new ids, so
    /// that each change stays in MongoDB once. A legacy document is removed only when it is the
    /// same change: everything but `_id`, `meta.source`, `meta.src` and `hash` equal. Returns how many were
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
                    meta.remove(document::SOURCE_FIELD);
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
}
