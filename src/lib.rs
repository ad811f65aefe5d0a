//! sdl: a durable MySQL/MariaDB → MongoDB change relay.
//!
//! `binlog --(source: ingester)--> WAL (sdl-wal) --(forward + sink)--> MongoDB`
//!
//! Each module owns one stage: [`source`] (binlog → transactions in the WAL), [`forward`] (WAL →
//! batches, acknowledgement), [`sink`] (batches → MongoDB, exactly once), [`service`] (lifecycle:
//! start-up phases, preflight checks, the source identity check, health, the admin endpoint),
//! [`config`]; [`breaker`] is the forwarder's circuit breaker, [`telemetry`] what the stages
//! publish about themselves (status and metrics; it reads no stage back), [`shutdown`] the stop
//! signal every stage listens to, [`build_info`] what the binary is, [`tls`] the checks of the TLS
//! files, [`redact`] how secrets are kept out of messages, [`messages`] how errors are printed,
//! [`wal_view`] the WAL as `sdl wal` and the admin endpoint show it, and [`cli`] the command line itself (its man
//! pages, completions and version line are generated from it). Data moves one way; no stage
//! reaches back. The library exists so that the binlog decoder can be driven from binlog files
//! and fuzzers as well as from the `sdl` binary.

pub mod build_info;
pub mod cli;
pub mod config;
pub mod event;
pub mod flavor;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod gtid;
pub mod messages;
pub mod redact;
pub mod service;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod wal_view;

/// Process exit codes (documented in docs/operations.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// A runtime failure: a server unreachable at start, a decode error, a MongoDB rejection.
    Failure = 1,
    /// The configuration (or the command line) is wrong.
    Config = 2,
    /// The binlog sdl needs is no longer on the source, or the source's history no longer
    /// contains what was relayed (`crate::service::identity`): restarting will not help.
    BinlogUnavailable = 3,
    /// The source's history does not contain sdl's position (sdl is ahead of it: a lossy
    /// failover, a restored server): restarting will not help.
    SourceDiverged = 4,
    /// Another replica uses sdl's `source.server_id`: restarting would push it off the source.
    DuplicateServerId = 5,
}
