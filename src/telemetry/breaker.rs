//! What the forwarder's circuit breaker publishes (`crate::forward::breaker` decides; this is only its
//! published state, read by `/status`, `/metrics` and the health watchers).

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// What the breaker publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerStatus {
    pub state: BreakerState,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// How many times the breaker has opened since the process started.
    pub times_opened: u64,
    /// When the first failed attempt since the last success started; `None` while attempts
    /// succeed.
    pub failing_since: Option<Instant>,
}

impl Default for BreakerStatus {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            times_opened: 0,
            failing_since: None,
        }
    }
}
