//! Append groups: the records one [`crate::Wal::append`] wrote and flushed together. A group is
//! the unit of retention (pruned whole, never while it holds an unacknowledged record) and of the
//! byte accounting behind backpressure. Its on-disk entry (`g/<last_seq>`) carries the append time
//! and size; [`Accounting`] mirrors the entries in memory so size checks on every append cost
//! nothing.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// One append group: the records written (and flushed) together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) appended_ms: u64,
    pub(crate) first_seq: u64,
    pub(crate) bytes: u64,
}

impl Group {
    pub(crate) fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[0..8].copy_from_slice(&self.appended_ms.to_le_bytes());
        out[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.bytes.to_le_bytes());
        out
    }

    pub(crate) fn decode(raw: &[u8]) -> Option<Self> {
        let raw: &[u8; 24] = raw.try_into().ok()?;
        let word = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
        Some(Self {
            appended_ms: word(0),
            first_seq: word(8),
            bytes: word(16),
        })
    }
}

/// In-memory mirror of the group index, so size checks on every append cost nothing.
#[derive(Debug, Default)]
pub(crate) struct Accounting {
    /// key: last sequence of the group.
    pub(crate) groups: BTreeMap<u64, Group>,
    pub(crate) last_seq: u64,
    pub(crate) acked: u64,
    /// Bytes of the groups holding an unacknowledged record, kept current because the ingester
    /// asks for it on every transaction (summing the groups would cost O(WAL depth) each time).
    pub(crate) unacked: u64,
}

impl Accounting {
    pub(crate) fn recount_unacked(&mut self) {
        self.unacked = self
            .groups
            .range(self.acked + 1..)
            .map(|(_, g)| g.bytes)
            .sum();
    }

    pub(crate) fn add_group(&mut self, last_seq: u64, group: Group) {
        self.unacked += group.bytes;
        self.groups.insert(last_seq, group);
    }

    /// Moves the acknowledged cursor forward: the groups it now covers whole stop counting.
    pub(crate) fn advance_acked(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        let covered: u64 = self
            .groups
            .range(self.acked + 1..=seq)
            .map(|(_, g)| g.bytes)
            .sum();
        self.unacked -= covered;
        self.acked = seq;
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.groups.values().map(|g| g.bytes).sum()
    }

    /// Bytes of groups holding at least one unacknowledged record (a partly acknowledged group
    /// counts whole: backpressure errs on the safe side).
    pub(crate) fn unacked_bytes(&self) -> u64 {
        self.unacked
    }

    pub(crate) fn oldest_unacked_ms(&self) -> Option<u64> {
        self.groups
            .range(self.acked + 1..)
            .next()
            .map(|(_, g)| g.appended_ms)
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
