//! The WAL's errors and repair reports. Each error says what happened, where (the WAL directory,
//! the record's sequence number or the metadata key) and what to do; a [`MetaRepair`] says what
//! was found damaged at open and what was done about it.

use std::path::PathBuf;

use crate::frame::FrameError;

/// What to do about metadata that cannot be rebuilt from the WAL itself.
pub(crate) const RECOVER_FIX: &str = "stop sdl and run `sdl wal recover --config FILE`: it moves this WAL directory aside (kept, renamed) and starts a new WAL at MongoDB's offset, which needs the source to still have the binlogs from there (docs/operations.md, \"A WAL that cannot be opened\")";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("cannot open the WAL at {dir}: {source}. If another sdl process uses this directory (sled holds an exclusive lock), stop it or use its admin endpoint; otherwise check that the directory is writable")]
    Open { dir: PathBuf, source: sled::Error },
    #[error("the WAL at {dir} cannot be used: {detail}; its files are damaged, and nothing in them is used: {RECOVER_FIX}")]
    Damaged { dir: PathBuf, detail: String },
    #[error("WAL storage error during {operation} in {dir}: {source}")]
    Storage {
        operation: &'static str,
        dir: PathBuf,
        source: sled::Error,
    },
    #[error("WAL record {seq} is unreadable: {source}. The record is not forwarded; run `sdl wal verify` to list every damaged record")]
    Corrupt { seq: u64, source: FrameError },
    #[error("WAL record {seq} could not be encoded: {source}")]
    Encode {
        seq: u64,
        source: bincode::error::EncodeError,
    },
    #[error("WAL metadata key {key} in {dir} is damaged ({problem}): {fix}")]
    MetaDamaged {
        key: String,
        problem: String,
        dir: PathBuf,
        fix: &'static str,
    },
    #[error("the WAL at {dir} is in WAL format {found}, and this sdl reads format {supported} (and upgrades format 1): run the sdl release that wrote it, or a newer one; or {RECOVER_FIX}")]
    UnknownFormat {
        found: u16,
        supported: u16,
        dir: PathBuf,
    },
    #[error("cannot acknowledge sequence {requested}: the WAL's last sequence is {last}")]
    AckBeyondEnd { requested: u64, last: u64 },
    #[error("cannot discard WAL records from {from}: records up to {acked} are acknowledged by the sink and must not be re-read")]
    TruncateAcknowledged { from: u64, acked: u64 },
    #[error("cannot find the ingest position before WAL record {seq}: {reason}")]
    NoPositionBefore { seq: u64, reason: String },
}

impl WalError {
    /// True when the open failed because another process holds the WAL's lock.
    pub fn is_locked(&self) -> bool {
        matches!(self, WalError::Open { source: sled::Error::Io(io), .. }
            if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock"))
    }

    /// True when the error is the disk being full (ENOSPC): it may clear by itself.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            WalError::Storage {
                source: sled::Error::Io(io),
                ..
            }
            | WalError::Open {
                source: sled::Error::Io(io),
                ..
            } => io,
            _ => return false,
        };
        io.raw_os_error() == Some(28) || io.kind() == std::io::ErrorKind::StorageFull
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// A metadata value found damaged (or a format upgraded) at open, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRepair {
    pub key: String,
    pub problem: String,
    pub action: String,
}

impl std::fmt::Display for MetaRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; {}", self.key, self.problem, self.action)
    }
}
