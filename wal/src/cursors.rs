//! The cursors: the last sequence appended, the acknowledged cursor (the highest sequence the sink
//! has committed: it only moves forward and never past the last record) and the ingest position
//! saved with the last append.

use crate::error::{Result, WalError};
use crate::handle::Wal;
use crate::layout::{meta, seq_from_key, KEY_ACKED, KEY_INGEST_POSITION, RECORD_PREFIX};
use crate::record::Record;

impl<R: Record> Wal<R> {
    /// The ingest position saved with the last appended group, if any group was ever appended.
    pub fn ingest_position(&self) -> Result<Option<Vec<u8>>> {
        self.read_meta(KEY_INGEST_POSITION)
    }

    /// The highest sequence number the sink has acknowledged (0 when none).
    pub fn acked(&self) -> Result<u64> {
        Ok(self.accounting().acked)
    }

    /// The last sequence number in the WAL (0 when no record was ever appended).
    pub fn last_seq(&self) -> Result<u64> {
        Ok(self.accounting().last_seq)
    }

    /// The first sequence number still stored, if any.
    pub fn first_seq(&self) -> Result<Option<u64>> {
        let first = self
            .tree
            .scan_prefix([RECORD_PREFIX])
            .next()
            .transpose()
            .map_err(self.storage("find first record"))?;
        Ok(first.map(|(key, _)| seq_from_key(&key)))
    }

    /// Bytes of frames not yet acknowledged (whole append groups; see [`WalStats`]).
    pub fn unacked_bytes(&self) -> u64 {
        self.accounting().unacked_bytes()
    }

    /// Moves the acknowledged cursor forward to `seq` and flushes. Moving it backwards is a no-op:
    /// the cursor never retreats.
    pub fn acknowledge(&self, seq: u64) -> Result<()> {
        let (last, acked) = {
            let a = self.accounting();
            (a.last_seq, a.acked)
        };
        if seq > last {
            return Err(WalError::AckBeyondEnd {
                requested: seq,
                last,
            });
        }
        if seq <= acked {
            return Ok(());
        }
        self.tree
            .insert(KEY_ACKED, meta(&seq.to_be_bytes()))
            .map_err(self.storage("acknowledge"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        self.accounting().advance_acked(seq);
        Ok(())
    }
}
