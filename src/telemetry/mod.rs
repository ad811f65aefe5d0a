//! Telemetry: what the running service publishes about itself, for the admin endpoint
//! (`/status`, `/metrics`, `/readyz`) and the health watchers.
//!
//! # Guarantees
//! - Data flows one way: the stages (ingester, forwarder, circuit breaker) and the health watchers
//!   publish their states into this module (watch channels carrying the types below, and the
//!   process-wide [`metrics::metrics`]); nothing here reads a stage back or decides anything for
//!   it. This module imports no stage (`source`, `forward`, `sink`) and no part of `service`.
//! - [`status`]: the `/status` document, built from the published states; error messages are
//!   redacted before they are published.
//! - [`metrics`](mod@metrics): the Prometheus metrics; counters are updated where things happen, state gauges
//!   are set from the published states when `/metrics` is scraped.
//! - [`lease`]: the role of this instance in a hot standby pair and the lease as it last saw it.
//! - [`breaker`] and [`health`]: the value types the circuit breaker and the health watchers
//!   publish ([`BreakerStatus`], [`SinkReach`], [`StuckReport`]).

pub mod breaker;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod status;

pub use breaker::{BreakerState, BreakerStatus};
pub use health::{Health, SinkReach, Stuck, StuckReport};
pub use lease::{LeaseStatus, Role};
pub use metrics::{metrics, Stage};
pub use status::{
    ForwardStatus, IngestState, IngestStatus, LastError, RefusedServer, RefusedSnapshot,
    SnapshotState, SnapshotStatus, SourceServer,
};
