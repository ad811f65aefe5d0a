//! What the running service reports about itself (`/status` on the admin endpoint).
//!
//! Each stage publishes its state on a watch channel; nothing here is read back by the stages.

use serde::Serialize;

use crate::breaker::{BreakerState, BreakerStatus};

/// The ingester's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IngestState {
    Starting,
    /// Reading the binlog; `position` is where this connection started.
    Following {
        position: String,
    },
    /// Backpressure: the WAL holds `wal.max_bytes` of unacknowledged data.
    PausedWalFull {
        unacked_bytes: u64,
        max_bytes: u64,
    },
    /// The source connection was lost or refused; retrying.
    Reconnecting {
        error: String,
        retry_in_ms: u64,
    },
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakerReport {
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub times_opened: u64,
}

impl From<&BreakerStatus> for BreakerReport {
    fn from(s: &BreakerStatus) -> Self {
        Self {
            state: match s.state {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half_open",
            },
            consecutive_failures: s.consecutive_failures,
            times_opened: s.times_opened,
        }
    }
}

/// The `/status` document.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub ingest: IngestState,
    pub breaker: BreakerReport,
    pub wal: sdl_wal::WalStats,
}
