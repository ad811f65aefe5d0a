//! The change-event model: what the ingester writes into the WAL and the forwarder reads back.
//!
//! One WAL record is one whole source transaction ([`SourceTransaction`]): its GTID, commit time, the
//! GTID position *after* it, and its row changes in binlog order. A transaction larger than one
//! sink batch is split into several consecutive records (fragments) so that neither stage ever
//! holds a whole large transaction in memory: each fragment carries the ordinal of its first change
//! and whether it ends the transaction, and a fragment that does not end it carries as its position
//! the position *before* the transaction plus how many of its changes are saved (a
//! `source::gtid::ResumePoint`), so that a restart reads the transaction again and drops what the
//! WAL already holds. Values are kept in a lossless,
//! source-shaped form ([`Value`]); turning them into BSON is the sink's job, so a change of the BSON
//! mapping never requires rewriting the WAL.
//!
//! Any change to these types' serialized shape must bump [`SourceTransaction::FORMAT_VERSION`].

use serde::{Deserialize, Serialize};

/// A source transaction, or one fragment of a large one, as appended to the WAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceTransaction {
    /// The transaction's GTID in the server's own notation (`0-1-42` on MariaDB, `uuid:42` on MySQL).
    pub gtid: String,
    /// Commit time from the binlog event header, seconds since the Unix epoch.
    pub timestamp: u32,
    /// Where to resume after this record: the GTID position after the transaction (MariaDB
    /// `gtid_slave_pos` form or a MySQL GTID set) when this record ends it; otherwise the position
    /// before it with the partial transaction (`source::gtid::ResumePoint` text form).
    pub position_after: String,
    /// The ordinal, within the whole transaction, of `changes[0]` (0 unless this is a later
    /// fragment).
    pub first_change: u64,
    /// True when this record holds the transaction's last change (always, for an unsplit one).
    pub ends_transaction: bool,
    pub changes: Vec<Change>,
}

impl SourceTransaction {
    /// A cheap estimate of the record's encoded size, for group commits and fragment sizing.
    pub fn approximate_size(&self) -> usize {
        self.changes
            .iter()
            .map(Change::approximate_size)
            .sum::<usize>()
            + 64
    }
}

impl sdl_wal::Record for SourceTransaction {
    const FORMAT_VERSION: u16 = 3;

    fn position_after(&self) -> &[u8] {
        self.position_after.as_bytes()
    }
}

/// One change inside a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    Row(RowChange),
    /// A statement that is not a row change (DDL), recorded with its text.
    Statement(StatementChange),
}

impl Change {
    /// A cheap estimate of the change's encoded size.
    pub fn approximate_size(&self) -> usize {
        let value_size = |v: &Value| match v {
            Value::Text(s) | Value::Decimal(s) => s.len() + 2,
            Value::Bytes(b) => b.len() + 2,
            Value::Set(members) => members.iter().map(|m| m.len() + 2).sum(),
            Value::Json(json) => json.approximate_size(),
            _ => 9,
        };
        let image = |cols: &Option<Vec<Column>>| {
            cols.as_ref().map_or(0, |cols| {
                cols.iter()
                    .map(|c| c.name.len() + value_size(&c.value))
                    .sum()
            })
        };
        match self {
            Change::Row(row) => 64 + image(&row.before) + image(&row.after),
            Change::Statement(s) => 64 + s.statement.len(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowOp {
    Insert,
    Update,
    Delete,
}

impl RowOp {
    pub fn as_str(self) -> &'static str {
        match self {
            RowOp::Insert => "insert",
            RowOp::Update => "update",
            RowOp::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    pub op: RowOp,
    pub database: String,
    pub table: String,
    /// Binlog file and start position of the rows event this row came from.
    pub file: String,
    pub pos: u64,
    /// Names of the primary-key columns, in key order (empty when the table has none).
    pub primary_key: Vec<String>,
    pub before: Option<Vec<Column>>,
    pub after: Option<Vec<Column>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementChange {
    pub database: String,
    pub statement: String,
    pub file: String,
    pub pos: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub value: Value,
}

/// A column value, exactly as the source holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// DECIMAL as its exact decimal text.
    Decimal(String),
    /// Character data decoded with the column's charset.
    Text(String),
    /// Binary data (binary charset, BLOB, GEOMETRY, or bytes that do not decode in their charset).
    Bytes(Vec<u8>),
    /// DATE; zero parts are kept as zero (MySQL's '0000-00-00').
    Date {
        year: u16,
        month: u8,
        day: u8,
    },
    /// DATETIME; zero parts are kept as zero (MySQL's '0000-00-00 00:00:00').
    DateTime {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        micros: u32,
    },
    /// TIMESTAMP as seconds and microseconds since the Unix epoch (UTC).
    Timestamp {
        seconds: i64,
        micros: u32,
    },
    /// TIME, possibly negative and over 24 hours.
    Time {
        negative: bool,
        hours: u32,
        minute: u8,
        second: u8,
        micros: u32,
    },
    /// SET: the names of its members, in definition order.
    Set(Vec<String>),
    /// JSON, structured, with MySQL's own number kinds kept apart.
    Json(Json),
}

/// A JSON value from MySQL's binary JSON, without loss: integers, doubles and decimals stay distinct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    /// A DECIMAL inside JSON, as its exact text.
    Decimal(String),
    String(String),
    /// A DATE, TIME, DATETIME or TIMESTAMP inside JSON, as MySQL prints it.
    Temporal(String),
    /// Any other MySQL value stored opaquely in JSON: its column type code and raw bytes.
    Opaque {
        type_code: u8,
        bytes: Vec<u8>,
    },
    Array(Vec<Json>),
    /// Members in MySQL's order (sorted by key length, then bytes).
    Object(Vec<(String, Json)>),
}

impl Json {
    fn approximate_size(&self) -> usize {
        match self {
            Json::String(s) | Json::Decimal(s) | Json::Temporal(s) => s.len() + 2,
            Json::Opaque { bytes, .. } => bytes.len() + 3,
            Json::Array(items) => 4 + items.iter().map(Json::approximate_size).sum::<usize>(),
            Json::Object(members) => {
                4 + members
                    .iter()
                    .map(|(k, v)| k.len() + 2 + v.approximate_size())
                    .sum::<usize>()
            }
            _ => 9,
        }
    }
}
