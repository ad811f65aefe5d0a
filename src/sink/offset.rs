//! The offset document (`binlog_offsets`, one per source): the sink's memory of what it has
//! applied, read at start and checked before every write so that a replay writes nothing twice and
//! a batch that would leave a hole is refused.

use bson::{doc, Document};

use super::error::operation_error;
use super::{Batch, Committed, MongoSink, SinkError, SinkOffset};

impl MongoSink {
    /// Reads the offset document for this source.
    pub async fn offset(&self) -> Result<Option<SinkOffset>, SinkError> {
        let found = self
            .offsets
            .find_one(doc! { "_id": &self.source_name })
            .await
            .map_err(|e| operation_error("read offset", &e))?;
        Ok(found.map(|d| parse_offset(&d)))
    }

    pub(super) fn offset_update(wal_id: &str, batch: &Batch) -> Document {
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
    pub(super) fn check_previous(
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
}

pub(super) fn parse_offset(d: &Document) -> SinkOffset {
    SinkOffset {
        wal_id: d.get_str("wal_id").unwrap_or_default().to_string(),
        wal_seq: d.get_i64("wal_seq").unwrap_or_default().max(0) as u64,
        gtid_position: d.get_str("gtid").unwrap_or_default().to_string(),
    }
}
