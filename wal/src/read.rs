//! Checked reads: records come back in sequence order with no holes, only once their append has
//! returned, and only after their frame (version, length, CRC, payload) is verified; a damaged or
//! missing record is an error naming its sequence number.

use crate::error::{Result, WalError};
use crate::frame::{decode_frame_of, FrameError};
use crate::handle::Wal;
use crate::layout::{record_key, seq_from_key, RECORD_PREFIX};
use crate::record::{Record, Stored};

impl<R: Record> Wal<R> {
    /// Reads records starting at `from` (inclusive) until they hold `max_items` items
    /// ([`Record::items`]) or `max_bytes` of frames would be exceeded (at least one record is
    /// returned when available), so a reader holds about one unit of work in memory.
    /// Only records whose [`Wal::append`] has returned are read: a record being appended is in the
    /// tree before it is flushed, and a reader that forwarded it could neither acknowledge it nor
    /// count on it surviving a crash.
    pub fn read_from(
        &self,
        from: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored<R>>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut items = 0usize;
        let last = self.accounting().last_seq;
        if from > last {
            return Ok(out);
        }
        let records = self.tree.range(record_key(from)..=record_key(last));
        for (expected, item) in (from..).zip(records) {
            let (key, value) = item.map_err(self.storage("read records"))?;
            let seq = seq_from_key(&key);
            if seq != expected {
                // A hole means something deleted records the sink never acknowledged.
                return Err(WalError::Corrupt {
                    seq: expected,
                    source: FrameError::Missing,
                });
            }
            if items >= max_items || (!out.is_empty() && bytes + value.len() > max_bytes) {
                break;
            }
            let record = self.decode(seq, &value)?;
            bytes += value.len();
            items += record.items();
            out.push(Stored {
                seq,
                record,
                frame_len: value.len(),
            });
        }
        Ok(out)
    }

    /// Reads one record.
    pub fn get(&self, seq: u64) -> Result<Option<Stored<R>>> {
        let Some(value) = self
            .tree
            .get(record_key(seq))
            .map_err(self.storage("read record"))?
        else {
            return Ok(None);
        };
        Ok(Some(Stored {
            seq,
            record: self.decode(seq, &value)?,
            frame_len: value.len(),
        }))
    }

    pub(crate) fn decode(&self, seq: u64, frame: &[u8]) -> Result<R> {
        decode_frame_of(R::READABLE_VERSIONS, frame)
            .map_err(|source| WalError::Corrupt { seq, source })
    }

    /// Checks every stored record (version, length, CRC, payload) and every sequence number
    /// between the first and the last. Returns the damaged ones with their errors.
    pub fn verify(&self) -> Result<Vec<(u64, FrameError)>> {
        let mut bad = Vec::new();
        let mut expected = None;
        for item in self.tree.scan_prefix([RECORD_PREFIX]) {
            let (key, value) = item.map_err(self.storage("verify"))?;
            let seq = seq_from_key(&key);
            if let Some(expected) = expected {
                for missing in expected..seq {
                    bad.push((missing, FrameError::Missing));
                }
            }
            if let Err(e) = decode_frame_of::<R>(R::READABLE_VERSIONS, &value) {
                bad.push((seq, e));
            }
            expected = Some(seq + 1);
        }
        let last = self.last_seq()?;
        if let Some(expected) = expected {
            for missing in expected..=last {
                bad.push((missing, FrameError::Missing));
            }
        }
        Ok(bad)
    }

    /// Finds the first damaged record after the acknowledged cursor, if any.
    pub fn first_damaged_unacknowledged(&self) -> Result<Option<(u64, FrameError)>> {
        let acked = self.acked()?;
        let last = self.last_seq()?;
        let mut expected = acked + 1;
        for item in self.tree.range(record_key(acked + 1)..record_key(u64::MAX)) {
            let (key, value) = item.map_err(self.storage("verify"))?;
            let seq = seq_from_key(&key);
            if seq != expected {
                return Ok(Some((expected, FrameError::Missing)));
            }
            if let Err(e) = decode_frame_of::<R>(R::READABLE_VERSIONS, &value) {
                return Ok(Some((seq, e)));
            }
            expected += 1;
        }
        if expected <= last {
            return Ok(Some((expected, FrameError::Missing)));
        }
        Ok(None)
    }
}
