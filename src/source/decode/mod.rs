//! Binlog events → whole source transactions.
//!
//! The [`TransactionAssembler`] is fed binlog events one at a time, from the network stream or from a
//! binlog file alike, and returns a [`SourceTransaction`](crate::event::SourceTransaction) each time one is complete. It guarantees:
//! - a transaction is returned only when its commit (XID, `COMMIT` query, or the end of a standalone
//!   DDL) has been seen, with its row changes in binlog order;
//! - the position carried by a transaction includes that transaction and every earlier one;
//! - with [`FragmentLimits`], a transaction is returned in fragments of bounded size as it is read
//!   (each fragment but the last carries the position before the transaction and the count of its
//!   changes returned so far), so memory does not grow with transaction size; after
//!   [`TransactionAssembler::resume_inside`], the first changes of the named transaction, which the
//!   WAL already holds, are decoded and dropped, so every change is returned exactly once;
//! - an event it cannot turn into change events is an [`DecodeError`] naming the binlog file,
//!   position, event type (and table, for row events). Nothing is skipped silently: the only events
//!   passed over are those that carry no row data (heartbeats, checkpoints, GTID lists, annotations,
//!   and `SAVEPOINT` / `ROLLBACK TO SAVEPOINT` / `RELEASE SAVEPOINT` statements inside a transaction,
//!   whose effect is already in the row events that follow them);
//! - a TRANSACTION_PAYLOAD event (MySQL binlog compression) is decompressed here too, and the events
//!   inside it must follow it one by one: a client that failed to decompress it (mysql_async passes
//!   over such a failure) is caught by the next event not being the expected inner one;
//! - column values are exact ([`convert_value`]): strings in the column's charset from the TABLE_MAP
//!   metadata, ENUM and SET by their names, JSON structured with exact numbers;
//! - malformed input (from a damaged file or a fuzzer) is an error, never a panic: TABLE_MAP column
//!   metadata is validated before rows are decoded with it, and a panic inside `mysql_common`'s row
//!   decoder is caught and reported as a [`DecodeError`].
//!
//! - a row change logged as a statement (INSERT/UPDATE/DELETE/REPLACE/LOAD DATA or CREATE TABLE
//!   ... SELECT in a Query event: the session used binlog_format STATEMENT or MIXED) is an error
//!   naming the transaction's GTID: its rows cannot be reconstructed, so it is never recorded as
//!   a statement (live streams; see [`statement_row_change`]);
//! - TABLE_MAPs are kept only until the transaction that carries them commits (each transaction
//!   maps its own tables again), and provided schemas up to [`MAX_CACHED_SCHEMAS`]: memory does
//!   not grow with the number of tables or table ids in the source.
//!
//! Live streaming uses [`AssemblerMode::Live`]: every transaction must carry a GTID and every
//! TABLE_MAP column names. [`AssemblerMode::File`] decodes historic binlog files, which may have
//! neither: transactions without GTIDs get an `anonymous@<file>:<pos>` id and do not move the
//! position, unnamed columns are named `@<index>`, and row changes logged as statements are
//! recorded as statements.
//!
//! # Layout
//! - `assembler`: the [`TransactionAssembler`] (`feed`, transaction boundaries, fragments,
//!   position);
//! - `table_map`: TABLE_MAP validation and the per-column decoders, names from [`TableSchema`];
//! - `rows`: row events into row changes; `value`: each column value into an exact
//!   [`Value`](crate::event::Value);
//! - `statement`: Query events (BEGIN/COMMIT, savepoints, DDL, row changes logged as statements);
//! - `payload`: TRANSACTION_PAYLOAD (MySQL compression); `mariadb`: MariaDB's own events and GTIDs.

mod assembler;
mod mariadb;
mod payload;
mod rows;
mod statement;
mod table_map;
#[cfg(test)]
mod tests;
mod value;

pub use assembler::{TransactionAssembler, MAX_CACHED_SCHEMAS};
pub use payload::MAX_EVENT_SIZE;
pub use statement::statement_row_change;
pub use table_map::{table_without_names, TableSchema};
pub use value::{convert_value, ColumnInfo};

use mysql_async::binlog::EventType;

use super::charset;

#[derive(Debug, thiserror::Error)]
#[error("cannot decode binlog event {event_type} at {file}:{pos}{table}: {reason}")]
pub struct DecodeError {
    pub file: String,
    pub pos: u64,
    pub event_type: String,
    /// ` (table db.tbl)` when the event concerns one table, empty otherwise.
    pub table: String,
    pub reason: String,
}

/// The most a fragment of a transaction may hold; a transaction within both is returned whole.
/// One rows event may take a fragment past them (its rows are never split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentLimits {
    pub max_changes: usize,
    /// Measured with [`Change::approximate_size`](crate::event::Change::approximate_size).
    pub max_bytes: usize,
}

impl FragmentLimits {
    /// Transactions are always returned whole (binlog file decoding, tests).
    pub const WHOLE: Self = Self {
        max_changes: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// What the assembler demands of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssemblerMode {
    /// A live binlog stream: GTIDs and column names are required.
    Live,
    /// Historic binlog files: transactions without GTIDs and TABLE_MAPs without column names are
    /// accepted (see the module documentation).
    File,
}

fn event_type_name(raw: u8) -> String {
    match EventType::try_from(raw) {
        Ok(t) => format!("{t:?}"),
        Err(_) => format!("UNKNOWN({raw})"),
    }
}

fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(120).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
