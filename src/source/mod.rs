//! The ingester: follows the source's binlog by GTID and appends whole transactions to the WAL.
//!
//! # Guarantees
//! - Every committed source transaction after the starting position is appended to the WAL exactly
//!   once, in binlog order, together with the GTID position after it. A transaction larger than
//!   the fragment limits (one sink batch) is appended in fragments as it is read, so memory stays
//!   bounded whatever the transaction's size; a restart inside such a transaction reads it again
//!   from its start and drops the changes the WAL already holds (see `gtid::ResumePoint`).
//! - The position is saved only in the same atomic, flushed WAL append as the transactions it
//!   covers; on restart or reconnect the stream resumes from the WAL's position, so a transaction
//!   that was half-read when the connection dropped is read again from its start.
//! - Events up to 1 GiB are read, as a replica reads them, whatever the source's
//!   `max_allowed_packet`. The connection is presumed dead after three heartbeat intervals of
//!   silence, measured byte by byte through a loopback relay ([`relay`]), so an event still
//!   arriving over a slow link is never cut.
//! - Transient failures (network, server restart, lock waits and statement timeouts on any query,
//!   information_schema included) are retried with backoff, forever. Definite failures stop the
//!   ingester with an error that says what to do, each error 1236 kind its own: purged binlogs
//!   ([`SourceError::BinlogUnavailable`]), a source whose history lacks sdl's position
//!   ([`SourceError::SourceDiverged`]), another replica with sdl's server id
//!   ([`SourceError::DuplicateServerId`]); also wrong settings, an event that cannot be decoded
//!   (a row change logged as a statement among them), WAL errors.
//! - With several servers in `source.url` (the primary first, then replicas), the ingester
//!   streams only from a server that holds every transaction it relayed and still has the binlog
//!   from there: never from one that is behind or diverged ([`failover`]); a switch is logged,
//!   counted and shown in `/status`.
//! - With a snapshot plan (`source.snapshot = "initial"`, `sdl snapshot`), the tables' existing
//!   rows are appended too, as snapshot rows placed where they are exactly the rows' state
//!   ([`snapshot`]), resumed from the last chunk saved after any stop.
//! - Memory does not grow with the number of tables: TABLE_MAPs live until their transaction
//!   commits, the per-table caches are bounded, and the GTID position is not copied per
//!   transaction.
//!
//! # Assumptions
//! The source runs with `log_bin`, `binlog_format=ROW`, `binlog_row_image=FULL` and
//! `binlog_row_metadata=FULL` (checked at connect), and with GTIDs (MySQL `gtid_mode=ON`).
//!
//! # Layout
//! Each part states its own guarantees at its top:
//! - `ingest`: the stream loop ([`run`], [`Ingester`]): connect, resume from the WAL's position,
//!   follow, reconnect; `group_commit`: appends to the WAL in groups, and backpressure;
//! - `connect`: login, TLS and the relay connection; `settings`: the server settings sdl needs;
//!   `start`: `source.start` resolved, binlog availability; `stream`: the binlog stream request
//!   and what its errors mean; `error`: [`SourceError`], transient or definite; `history`: the
//!   source's position watched while connected (a history reset under the connection);
//!   [`failover`]: which server of `source.url` to follow, and the GTID check that it is a safe
//!   continuation of what sdl relayed;
//! - [`snapshot`]: the snapshot stage: tables' existing rows read in chunks by key and placed in
//!   the WAL between stream transactions where each row image is exact (its guarantees at its
//!   top); its progress rides in the position (`crate::snapshot_plan`);
//! - [`decode`]: binlog events into whole transactions (no network); `schema`: the
//!   information_schema lookups and their bounded caches; [`relay`]: byte liveness;
//!   [`binlog_file`]: decoding binlog files without a server; [`charset`] and [`json_text`]: exact
//!   strings and MariaDB JSON text.
//!
//! Positions ([`crate::gtid`]) and the server family ([`crate::flavor`]) are the vocabulary the
//! config, the service and the command line share with the ingester, so they live below it.

pub mod binlog_file;
pub mod charset;
mod connect;
pub mod decode;
mod error;
pub mod failover;

#[doc(hidden)]
pub mod fuzzing;
mod group_commit;
mod history;

mod ingest;
pub mod json_text;
pub mod relay;
mod schema;
mod settings;
pub mod snapshot;
mod start;
mod stream;

pub use connect::{connect, encryption, login};
pub use decode::FragmentLimits;
pub use error::SourceError;

pub use ingest::{run, Ingester};
pub use settings::{settings_findings, SettingFinding};
pub use start::{binlog_available, resolve_start};
