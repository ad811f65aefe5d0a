//! Retention: acknowledged append groups are pruned by age or size, oldest first and whole; a
//! group holding any record the sink has not acknowledged is never removed.

use std::time::Duration;

use crate::error::Result;
use crate::groups::now_ms;
use crate::handle::Wal;
use crate::layout::{group_key, meta, record_key, KEY_BASE_POSITION};
use crate::record::Record;

/// How long acknowledged records are kept. Unacknowledged records are never pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Prune acknowledged groups appended longer ago than this.
    pub max_age: Option<Duration>,
    /// Prune the oldest acknowledged groups while acknowledged data exceeds this many bytes.
    pub max_bytes: Option<u64>,
}

/// What [`Wal::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub records: u64,
    pub bytes: u64,
}

impl<R: Record> Wal<R> {
    /// Removes acknowledged append groups that `retention` no longer keeps, oldest first. A group
    /// with any unacknowledged record is never removed.
    pub fn prune(&self, retention: Retention) -> Result<Pruned> {
        let now = now_ms();
        let (victims, acked) = {
            let accounting = self.accounting();
            let acked = accounting.acked;
            let mut acked_bytes: u64 = accounting
                .groups
                .range(..=acked)
                .map(|(_, g)| g.bytes)
                .sum();
            let mut victims = Vec::new();
            for (&last, group) in accounting.groups.range(..=acked) {
                let too_old = retention.max_age.is_some_and(|age| {
                    now.saturating_sub(group.appended_ms) > age.as_millis() as u64
                });
                let too_big = retention.max_bytes.is_some_and(|max| acked_bytes > max);
                if !(too_old || too_big) {
                    break;
                }
                acked_bytes -= group.bytes;
                victims.push((last, *group));
            }
            (victims, acked)
        };
        let Some(&(last_pruned, _)) = victims.last() else {
            return Ok(Pruned::default());
        };
        debug_assert!(last_pruned <= acked);
        let base = match self.get(last_pruned) {
            Ok(Some(stored)) => Some(stored.record.position_after().to_vec()),
            // A damaged acknowledged record: its position is not needed unless the next record
            // is damaged too, and then repair will say so.
            _ => None,
        };
        let mut batch = sled::Batch::default();
        let mut pruned = Pruned::default();
        for (last, group) in &victims {
            for seq in group.first_seq..=*last {
                batch.remove(&record_key(seq)[..]);
            }
            batch.remove(&group_key(*last)[..]);
            pruned.records += last - group.first_seq + 1;
            pruned.bytes += group.bytes;
        }
        if let Some(base) = base {
            batch.insert(KEY_BASE_POSITION, meta(&base));
        }
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("prune"))?;
        self.tree.flush().map_err(self.storage("flush"))?;
        let mut accounting = self.accounting();
        for (last, _) in victims {
            accounting.groups.remove(&last);
        }
        Ok(pruned)
    }
}
