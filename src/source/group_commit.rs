//! Group commit and backpressure between the binlog reader and the WAL.
//!
//! Transactions read are appended to the WAL in groups, when `wal.group_commit_delay` has passed
//! since the group's first one or it reaches `wal.group_commit_bytes`; one append (an fsync) runs
//! while the next group is read. Guarantees: groups land in order (at most one append in flight);
//! the position saved with a group is its last transaction's, in the same atomic, flushed append;
//! every append is awaited before the stream loop returns (a reconnect resumes from the WAL's
//! position, which an unfinished append would still move); after a failed append nothing more is
//! written; a full disk is [`SourceError::DiskFull`]. While the WAL's unacknowledged data is at
//! `wal.max_bytes`, the binlog is not read (the source keeps it).

use std::time::Duration;

use sdl_wal::Wal;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::SourceError;
use crate::config::WalConfig;
use crate::event::SourceTransaction;
use crate::shutdown::stopped;
use crate::telemetry::{IngestState, IngestStatus};

/// Transactions read since the last group commit, and the group commit being written.
#[derive(Default)]
pub(super) struct PendingGroup {
    transactions: Vec<SourceTransaction>,
    bytes: usize,
    deadline: Option<Instant>,
    /// The previous group's append (an fsync), running while the next group is read. At most one
    /// runs, so groups land in order; it is always awaited before `follow` returns, because a
    /// reconnect resumes from the WAL's position, which an unfinished append would still move.
    in_flight: Option<tokio::task::JoinHandle<Result<(), SourceError>>>,
    /// The estimated size of the append in flight.
    in_flight_bytes: usize,
    /// An append failed: nothing more is written (after ENOSPC sled may block forever).
    failed: bool,
    /// A position to save with no record after the last one read (the snapshot plan changed
    /// without a row to write: a table ended on a chunk boundary, a request was taken). A
    /// transaction read afterwards carries a newer position and supersedes it.
    position: Option<String>,
}

impl PendingGroup {
    /// When the transactions read so far must be committed (`wal.group_commit_delay` after the
    /// first of them), if there are any.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Adds a transaction read; true when the group has reached `wal.group_commit_bytes` and must
    /// be committed now.
    pub(super) fn add(&mut self, transaction: SourceTransaction, wal_cfg: &WalConfig) -> bool {
        self.bytes += transaction.approximate_size();
        self.transactions.push(transaction);
        self.position = None;
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + wal_cfg.group_commit_delay);
        }
        self.bytes >= wal_cfg.group_commit_bytes
    }

    /// Saves `position` with the group even when no record follows (see `position`).
    pub(super) fn set_position(&mut self, position: String, wal_cfg: &WalConfig) {
        self.position = Some(position);
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + wal_cfg.group_commit_delay);
        }
    }

    /// An append failed: nothing more may be written.
    pub(super) fn failed(&self) -> bool {
        self.failed
    }
}

pub(super) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Starts the group commit of the transactions read so far, once the previous one has landed.
pub(super) async fn flush(
    wal: &Wal<SourceTransaction>,
    group: &mut PendingGroup,
    appended: &watch::Sender<u64>,
) -> Result<(), SourceError> {
    group.deadline = None;
    finish_append(group).await?;
    if group.transactions.is_empty() && group.position.is_none() {
        return Ok(());
    }
    let transactions = std::mem::take(&mut group.transactions);
    let position_set = group.position.take();
    let count = transactions.len() as u64;
    group.in_flight_bytes = group.bytes;
    group.bytes = 0;
    let wal = wal.clone();
    let dir = wal.dir().display().to_string();
    let appended = appended.clone();
    group.in_flight = Some(tokio::task::spawn_blocking(move || {
        // The group's position is its last transaction's (not copied per transaction: with a
        // large GTID set that text is kilobytes), or one set after it.
        let position = match &position_set {
            Some(position) => position.as_bytes(),
            None => transactions
                .last()
                .expect("a group is flushed only when it holds transactions or a position")
                .position_after
                .as_bytes(),
        };
        wal.append(&transactions, position)
            .map(|last| {
                // Told as soon as it lands, not when the next group starts: the forwarder
                // must not wait for more binlog events to see this one.
                appended.send_replace(last);
                let m = crate::telemetry::metrics();
                m.wal_appends.inc();
                m.wal_appended_records.inc_by(count);
            })
            .map_err(|e| {
                if e.is_disk_full() {
                    SourceError::DiskFull {
                        dir,
                        detail: e.to_string(),
                    }
                } else {
                    SourceError::Wal(e)
                }
            })
    }));
    Ok(())
}

/// Waits for the group commit in flight, if any.
pub(super) async fn finish_append(group: &mut PendingGroup) -> Result<(), SourceError> {
    let Some(append) = group.in_flight.take() else {
        return Ok(());
    };
    let landed = append
        .await
        .map_err(|e| SourceError::Transient(format!("WAL append task failed: {e}")))
        .and_then(|r| r);
    if landed.is_err() {
        group.failed = true;
    }
    landed
}

/// Backpressure (see [`wait_for_wal_space`]), counting the append in flight: once the WAL is half
/// way to the limit, the append is waited for so that the check sees it (its size is only
/// estimated); below that, reading overlaps it. Returns true on shutdown.
pub(super) async fn pause_while_wal_full(
    wal: &Wal<SourceTransaction>,
    group: &mut PendingGroup,
    max_bytes: u64,
    state: &watch::Sender<IngestStatus>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, SourceError> {
    if group.in_flight.is_some()
        && wal.unacked_bytes() + group.in_flight_bytes as u64 >= max_bytes / 2
    {
        finish_append(group).await?;
    }
    Ok(wait_for_wal_space(wal, max_bytes, state, shutdown).await)
}

/// Backpressure: while the WAL's unacknowledged data is at `wal.max_bytes`, the binlog is not
/// read (the source keeps it). Returns true when shutdown was requested while waiting.
async fn wait_for_wal_space(
    wal: &Wal<SourceTransaction>,
    max_bytes: u64,
    state: &watch::Sender<IngestStatus>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let unacked = wal.unacked_bytes();
    if unacked < max_bytes {
        return false;
    }
    warn!(target: "sdl::source",
        unacked_bytes = unacked,
        max_bytes,
        "WAL full (wal.max_bytes): pausing the binlog reader until the forwarder frees space; the source must keep its binlogs meanwhile"
    );
    let previous = set_state(
        state,
        IngestState::PausedWalFull {
            unacked_bytes: unacked,
            max_bytes,
        },
    );
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if wal.unacked_bytes() < max_bytes {
                    info!(target: "sdl::source", paused_for = ?started.elapsed(), "WAL has space again: resuming the binlog reader");
                    set_state(state, previous);
                    return false;
                }
            }
            _ = stopped(shutdown) => return true,
        }
    }
}

/// Publishes the ingester's new state; returns the previous one.
pub(super) fn set_state(state: &watch::Sender<IngestStatus>, new: IngestState) -> IngestState {
    let mut previous = new;
    state.send_modify(|s| std::mem::swap(&mut s.state, &mut previous));
    previous
}
