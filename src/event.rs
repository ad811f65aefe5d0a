//! The change-event model: what the ingester writes into the WAL and the forwarder reads back.
//!
//! One WAL record is one whole source transaction ([`SourceTransaction`]): its GTID, commit time, the
//! GTID position *after* it, and its row changes in binlog order. Values are kept in a lossless,
//! source-shaped form ([`Value`]); turning them into BSON is the sink's job, so a change of the BSON
//! mapping never requires rewriting the WAL.
//!
//! Any change to these types' serialized shape must bump [`SourceTransaction::FORMAT_VERSION`].

use serde::{Deserialize, Serialize};

/// A whole source transaction, as appended to the WAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceTransaction {
    /// The transaction's GTID in the server's own notation (`0-1-42` on MariaDB, `uuid:42` on MySQL).
    pub gtid: String,
    /// Commit time from the binlog event header, seconds since the Unix epoch.
    pub timestamp: u32,
    /// The GTID position after this transaction (MariaDB `gtid_slave_pos` form or a MySQL GTID set).
    pub position_after: String,
    pub changes: Vec<Change>,
}

impl sdl_wal::Record for SourceTransaction {
    const FORMAT_VERSION: u16 = 2;

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
