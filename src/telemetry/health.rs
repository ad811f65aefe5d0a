//! What the health watchers publish (`crate::service::health` watches and decides; these are the
//! values it publishes): MongoDB's reachability as the health probe sees it, and which stages are
//! stuck.

use std::time::Instant;

use serde::Serialize;

use super::metrics::Stage;

/// MongoDB as the health probe sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SinkReach {
    /// No answer yet (start-up).
    Unknown,
    Reachable,
    /// No answer since `since` (RFC 3339, UTC), the start of the first failed ping.
    Unreachable {
        since: String,
        error: String,
    },
}

/// A stage found stuck.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    /// The start of the first failed attempt at this position.
    pub since: Instant,
    /// The same, as RFC 3339 (UTC).
    pub since_wall: String,
    /// Where the stage is stuck.
    pub position: String,
    /// The latest error.
    pub error: String,
}

impl Stuck {
    pub fn seconds(&self) -> f64 {
        self.since.elapsed().as_secs_f64()
    }
}

/// Which stages are stuck (`None`: not stuck).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StuckReport {
    pub ingest: Option<Stuck>,
    pub forwarder: Option<Stuck>,
}

impl StuckReport {
    pub fn get(&self, stage: Stage) -> Option<&Stuck> {
        match stage {
            Stage::Ingester => self.ingest.as_ref(),
            Stage::Forwarder => self.forwarder.as_ref(),
        }
    }
}

/// Both health states at one moment.
#[derive(Debug, Clone)]
pub struct Health {
    pub sink: SinkReach,
    pub stuck: StuckReport,
}
