//! A summary of the WAL's state, for `sdl wal stats`, the admin endpoint and metrics.

use serde::Serialize;

use crate::error::Result;
use crate::groups::now_ms;
use crate::handle::Wal;
use crate::record::Record;

/// A summary of the WAL's state (for `sdl wal stats` and metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WalStats {
    pub wal_id: String,
    pub first_seq: Option<u64>,
    pub last_seq: u64,
    pub acked_seq: u64,
    pub records: u64,
    pub unacked_records: u64,
    pub bytes: u64,
    pub unacked_bytes: u64,
    /// Age of the oldest unacknowledged record, in milliseconds.
    pub oldest_unacked_age_ms: Option<u64>,
    pub ingest_position: Option<String>,
    pub disk_bytes: u64,
}

impl<R: Record> Wal<R> {
    /// A summary of the WAL's state.
    pub fn stats(&self) -> Result<WalStats> {
        let first_seq = self.first_seq()?;
        let disk_bytes = self.disk_size()?;
        let ingest_position = self
            .ingest_position()?
            .map(|p| String::from_utf8_lossy(&p).into_owned());
        let accounting = self.accounting();
        let last_seq = accounting.last_seq;
        let acked_seq = accounting.acked;
        Ok(WalStats {
            wal_id: self.id(),
            first_seq,
            last_seq,
            acked_seq,
            records: first_seq.map_or(0, |f| last_seq + 1 - f),
            unacked_records: last_seq - acked_seq,
            bytes: accounting.total_bytes(),
            unacked_bytes: accounting.unacked_bytes(),
            oldest_unacked_age_ms: accounting
                .oldest_unacked_ms()
                .map(|t| now_ms().saturating_sub(t)),
            ingest_position,
            disk_bytes,
        })
    }

    /// Bytes the database occupies on disk.
    pub fn disk_size(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(self.storage("size"))
    }
}
