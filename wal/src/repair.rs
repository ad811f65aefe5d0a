//! Repair of damaged unacknowledged records: they are discarded and the ingest position rewound to
//! just before them, so the ingester reads them again from the source. Acknowledged records are
//! never discarded (the sink has them; they must not be read again).

use crate::error::{Result, WalError};
use crate::groups::Group;
use crate::handle::Wal;
use crate::layout::{group_key, meta, record_key, KEY_BASE_POSITION, KEY_INGEST_POSITION};
use crate::record::Record;

impl<R: Record> Wal<R> {
    /// The ingest position just before record `seq`: the position after record `seq - 1`, or the
    /// base position when `seq` is the first record stored.
    pub fn position_before(&self, seq: u64) -> Result<Vec<u8>> {
        let first = self.first_seq()?;
        if first.is_none_or(|first| seq <= first) {
            return self
                .read_meta(KEY_BASE_POSITION)?
                .ok_or_else(|| WalError::NoPositionBefore {
                    seq,
                    reason: "the WAL has no base position".into(),
                });
        }
        match self.get(seq - 1)? {
            Some(stored) => Ok(stored.record.position_after().to_vec()),
            None => Err(WalError::NoPositionBefore {
                seq,
                reason: format!("record {} is missing", seq - 1),
            }),
        }
    }

    /// Repair: discards records from `from` to the end (none of them acknowledged) and rewinds the
    /// ingest position to just before `from`, so the ingester reads them again from the source.
    /// Returns the rewound position.
    pub fn truncate_unacknowledged(&self, from: u64) -> Result<Vec<u8>> {
        let acked = self.acked()?;
        if from <= acked {
            return Err(WalError::TruncateAcknowledged { from, acked });
        }
        let position = self.position_before(from)?;
        let last = self.last_seq()?;
        let mut batch = sled::Batch::default();
        for seq in from..=last {
            batch.remove(&record_key(seq)[..]);
        }
        let groups: Vec<(u64, Group)> = self
            .accounting()
            .groups
            .range(from..)
            .map(|(k, g)| (*k, *g))
            .collect();
        let mut kept_groups = Vec::new();
        for (group_last, group) in &groups {
            batch.remove(&group_key(*group_last)[..]);
            if group.first_seq < from {
                // The group keeps its records before `from`; its size is no longer exact, which
                // only makes backpressure slightly conservative until it is pruned.
                let kept = Group {
                    first_seq: group.first_seq,
                    ..*group
                };
                batch.insert(&group_key(from - 1)[..], meta(&kept.encode()));
                kept_groups.push((from - 1, kept));
            }
        }
        batch.insert(KEY_INGEST_POSITION, meta(&position));
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("truncate"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        let mut accounting = self.accounting();
        for (group_last, _) in groups {
            accounting.groups.remove(&group_last);
        }
        accounting.groups.extend(kept_groups);
        accounting.recount_unacked();
        accounting.last_seq = from - 1;
        Ok(position)
    }
}
