//! sdl: a durable MySQL/MariaDB → MongoDB change relay.
//!
//! `binlog --(source: ingester)--> WAL (sdl-wal) --(forward over a Sink; sink: MongoDB)--> MongoDB`
//!
//! The tree is the design, bottom to top; a module imports only modules below it (checked by
//! `tests/it/structure.rs`), so data moves one way and no stage reaches back:
//! - vocabulary: [`event`] (the source transaction, the WAL record type), [`gtid`] (positions), [`snapshot_plan`] (what a snapshot still has to read, saved in the position),
//!   [`flavor`] (MariaDB or MySQL), [`config`], [`redact`] (secrets out of messages), [`tls`],
//!   [`messages`] (how errors are printed), [`shutdown`] (the stop signal), [`build_info`];
//! - [`telemetry`]: what the stages publish about themselves (status, metrics, breaker and health
//!   states); it reads no stage back;
//! - the stages: [`source`] (the ingester: binlog → whole transactions in the WAL, crate
//!   `sdl-wal`), [`forward`] (the forwarder: WAL → batches → a [`forward::Sink`], acknowledgement
//!   never ahead of the commit, its circuit breaker), [`sink`] (the MongoDB `Sink`: change
//!   documents, staging, transactional and idempotent commits, offsets);
//! - [`wal_view`]: the WAL as `sdl wal` and the admin endpoint show it;
//! - [`service`]: the lifecycle in named phases (open the WAL, preflight, source identity, repair,
//!   start position, run the stages), health and the admin endpoint;
//! - [`cli`]: the command line (its man pages, completions and version line are generated from it).
//!
//! The library exists so that the binlog decoder can be driven from binlog files and fuzzers
//! ([`fuzzing`]) as well as from the `sdl` binary.

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
pub mod snapshot_plan;
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
    /// This instance lost the lease of a hot standby (`[lease]`): another instance took over.
    /// Restarting is right: it then waits as a standby.
    LeaseLost = 6,
}
