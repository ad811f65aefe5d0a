//! Durable appends: a group of records and the ingest position that follows them go into one
//! atomic sled batch, flushed before [`Wal::append`] returns, so the position never runs ahead of
//! the records it covers.

use crate::error::{Result, WalError};
use crate::frame::encode_frame;
use crate::groups::{now_ms, Group};
use crate::handle::Wal;
use crate::layout::{group_key, meta, record_key, KEY_BASE_POSITION, KEY_INGEST_POSITION};
use crate::record::Record;

impl<R: Record> Wal<R> {
    /// Appends `records` with consecutive sequence numbers and saves `ingest_position` with them,
    /// atomically, then flushes to disk. Returns the sequence number of the last record appended.
    ///
    /// When this returns `Ok`, the records and the position survive a crash. An empty `records`
    /// only moves the ingest position (used to save the starting position of a new WAL).
    pub fn append(&self, records: &[R], ingest_position: &[u8]) -> Result<u64> {
        let first_seq = self.accounting().last_seq + 1;
        let mut seq = first_seq - 1;
        let mut batch = sled::Batch::default();
        let mut bytes = 0u64;
        for record in records {
            seq += 1;
            let frame = encode_frame(R::FORMAT_VERSION, record)
                .map_err(|source| WalError::Encode { seq, source })?;
            bytes += frame.len() as u64;
            batch.insert(&record_key(seq)[..], frame);
        }
        let group = (!records.is_empty()).then(|| Group {
            appended_ms: now_ms(),
            first_seq,
            bytes,
        });
        if let Some(group) = group {
            batch.insert(&group_key(seq)[..], meta(&group.encode()));
        }
        if self.first_seq()?.is_none() {
            // Nothing stored: the position before the next record is the current one.
            let base = self
                .ingest_position()?
                .unwrap_or_else(|| ingest_position.to_vec());
            batch.insert(
                KEY_BASE_POSITION,
                meta(if records.is_empty() {
                    ingest_position
                } else {
                    &base
                }),
            );
        }
        batch.insert(KEY_INGEST_POSITION, meta(ingest_position));
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("append"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        let mut accounting = self.accounting();
        accounting.last_seq = seq;
        if let Some(group) = group {
            accounting.add_group(seq, group);
        }
        Ok(seq)
    }
}
