//! The change-event model: what the ingester writes into the WAL and the forwarder reads back.
//!
//! One WAL record is one whole source transaction ([`SourceTransaction`]): its GTID, commit time, the
//! GTID position *after* it, and its row changes in binlog order. A transaction larger than one
//! sink batch is split into several consecutive records (fragments) so that neither stage ever
//! holds a whole large transaction in memory: each fragment carries the ordinal of its first change
//! and whether it ends the transaction, and a fragment that does not end it carries as its position
//! the position *before* the transaction plus how many of its changes are saved (a
//! `gtid::ResumePoint`), so that a restart reads the transaction again and drops what the
//! WAL already holds. Values are kept in a lossless,
//! source-shaped form ([`Value`]); turning them into BSON is the sink's job, so a change of the BSON
//! mapping never requires rewriting the WAL.
//!
//! A row change refers to its table's shape ([`Table`]: database, name, primary key, column names)
//! instead of carrying names itself: one `Arc<Table>` per TABLE_MAP is shared by every row decoded
//! with it, and a record stores each distinct table and binlog file name once (the wire form in
//! [`wire`]). Row images are values in the table's column order.
//!
//! Any change to the serialized shape (the wire form) must bump `SourceTransaction`'s
//! [`Record::FORMAT_VERSION`](sdl_wal::Record::FORMAT_VERSION).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A source transaction, or one fragment of a large one, as appended to the WAL.
///
/// Serialized through [`wire`] (tables and file names stored once per record).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTransaction {
    /// The transaction's GTID in the server's own notation (`0-1-42` on MariaDB, `uuid:42` on MySQL).
    pub gtid: String,
    /// Commit time from the binlog event header, seconds since the Unix epoch.
    pub timestamp: u32,
    /// Where to resume after this record: the GTID position after the transaction (MariaDB
    /// `gtid_slave_pos` form or a MySQL GTID set) when this record ends it; otherwise the position
    /// before it with the partial transaction (`gtid::ResumePoint` text form).
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
    /// 5: snapshot rows ([`Change::Snapshot`]). A record of format 4 reads the same.
    const FORMAT_VERSION: u16 = 5;
    const READABLE_VERSIONS: &'static [u16] = &[4, 5];

    fn position_after(&self) -> &[u8] {
        self.position_after.as_bytes()
    }

    /// The forwarder reads about one batch of changes at a time.
    fn items(&self) -> usize {
        self.changes.len()
    }
}

/// One change inside a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Row(RowChange),
    /// A statement that is not a row change (DDL), recorded with its text.
    Statement(StatementChange),
    /// A row as a snapshot read it (a snapshot chunk record holds only these).
    Snapshot(SnapshotRow),
}

impl Change {
    /// The binlog file and position of the event this change was read from; `None` for a
    /// snapshot row, which was read with a query.
    pub fn binlog_location(&self) -> Option<(&str, u64)> {
        match self {
            Change::Row(row) => Some((&row.file, row.pos)),
            Change::Statement(statement) => Some((&statement.file, statement.pos)),
            Change::Snapshot(_) => None,
        }
    }

    /// A cheap estimate of the change's size as a change document, for group commits and for
    /// sizing fragments of large transactions against a MongoDB batch. Column names count for
    /// every row, as in the document (the WAL stores them once per record, so it errs high there).
    pub fn approximate_size(&self) -> usize {
        match self {
            Change::Row(row) => {
                let image = |values: &Option<Vec<Value>>| {
                    values.as_ref().map_or(0, |values| {
                        row.table
                            .present(values)
                            .map(|(name, value)| name.len() + 2 + value.approximate_size())
                            .sum()
                    })
                };
                64 + image(&row.before) + image(&row.after)
            }
            Change::Statement(s) => 64 + s.statement.len(),
            Change::Snapshot(row) => {
                64 + row.snapshot.len()
                    + row
                        .table
                        .present(&row.values)
                        .map(|(name, value)| name.len() + 2 + value.approximate_size())
                        .sum::<usize>()
            }
        }
    }
}

/// A row read by a snapshot: its table (whose `primary_key` is the key the snapshot reads it
/// by: the primary key, or a NOT NULL unique key) and its values, one per column.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    /// The snapshot's id (`crate::snapshot_plan::TableTask::snapshot`).
    pub snapshot: Arc<str>,
    pub table: Arc<Table>,
    pub values: Vec<Value>,
}

impl SnapshotRow {
    /// The row's key, in key order.
    pub fn key(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.table.primary_key.iter().map(|&index| {
            let index = index as usize;
            (self.table.columns[index].as_str(), &self.values[index])
        })
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

/// A table's shape as one TABLE_MAP event described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub database: String,
    pub name: String,
    /// Column names in table order: a row image holds one value per column, in this order.
    pub columns: Vec<String>,
    /// The primary key's columns as indexes into `columns`, in key order (empty when the table
    /// has none).
    pub primary_key: Vec<u32>,
}

impl Table {
    /// The primary key's column names, in key order.
    pub fn primary_key_names(&self) -> impl Iterator<Item = &str> {
        self.primary_key
            .iter()
            .map(|&i| self.columns[i as usize].as_str())
    }

    /// The columns an image holds, as (name, value) in column order: those missing from the
    /// binlog's row image ([`Value::Absent`]) left out.
    pub fn present<'a>(&'a self, image: &'a [Value]) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.columns
            .iter()
            .zip(image)
            .filter(|(_, value)| **value != Value::Absent)
            .map(|(name, value)| (name.as_str(), value))
    }

    /// True when every primary-key index names a column (checked when a record is read back).
    fn is_consistent(&self) -> bool {
        self.primary_key
            .iter()
            .all(|&i| (i as usize) < self.columns.len())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub op: RowOp,
    pub table: Arc<Table>,
    /// Binlog file and start position of the rows event this row came from.
    pub file: Arc<str>,
    pub pos: u64,
    /// The row before and after the change, one value per column of `table` (a column missing
    /// from the binlog's row image is [`Value::Absent`]).
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
}

impl RowChange {
    /// The row's primary key, in key order: each key column's value after the change (before it,
    /// for a delete), or from the other image when a partial image lacks it.
    pub fn key(&self) -> impl Iterator<Item = (&str, &Value)> {
        let (identity, fallback) = match self.op {
            RowOp::Delete => (&self.before, &self.after),
            RowOp::Insert | RowOp::Update => (&self.after, &self.before),
        };
        self.table.primary_key.iter().filter_map(move |&index| {
            let index = index as usize;
            let value = [identity, fallback]
                .into_iter()
                .flatten()
                .map(|image| &image[index])
                .find(|value| **value != Value::Absent)?;
            Some((self.table.columns[index].as_str(), value))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementChange {
    pub database: String,
    pub statement: String,
    pub file: String,
    pub pos: u64,
}

/// A column value, exactly as the source holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// The column is not in the binlog's row image (a session with `binlog_row_image` other than
    /// FULL): it is left out of the change document, unlike NULL.
    Absent,
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

impl Value {
    fn approximate_size(&self) -> usize {
        match self {
            Value::Text(s) | Value::Decimal(s) => s.len() + 2,
            Value::Bytes(b) => b.len() + 2,
            Value::Set(members) => members.iter().map(|m| m.len() + 2).sum(),
            Value::Json(json) => json.approximate_size(),
            _ => 9,
        }
    }
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

/// The serialized form of a [`SourceTransaction`] (what bincode writes into the WAL): each
/// distinct table and binlog file name once, row changes referring to them by index. Reading a
/// record back checks every index and image width, so a record that decodes is consistent.
pub mod wire {
    use std::sync::Arc;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{
        Change, RowChange, RowOp, SnapshotRow, SourceTransaction, StatementChange, Table, Value,
    };

    #[derive(Serialize)]
    struct TransactionRef<'a> {
        gtid: &'a str,
        timestamp: u32,
        position_after: &'a str,
        first_change: u64,
        ends_transaction: bool,
        tables: Vec<&'a Table>,
        files: Vec<&'a str>,
        changes: Vec<ChangeRef<'a>>,
    }

    #[derive(Serialize)]
    enum ChangeRef<'a> {
        Row {
            op: RowOp,
            table: u32,
            file: u32,
            pos: u64,
            before: Option<&'a [Value]>,
            after: Option<&'a [Value]>,
        },
        Statement(&'a StatementChange),
        /// Appended after the variants of format 4, so records of format 4 read unchanged.
        Snapshot {
            /// Index into `files`, which holds every distinct string a record refers to.
            snapshot: u32,
            table: u32,
            values: &'a [Value],
        },
    }

    #[derive(Deserialize)]
    struct TransactionOwned {
        gtid: String,
        timestamp: u32,
        position_after: String,
        first_change: u64,
        ends_transaction: bool,
        tables: Vec<Table>,
        files: Vec<String>,
        changes: Vec<ChangeOwned>,
    }

    #[derive(Deserialize)]
    enum ChangeOwned {
        Row {
            op: RowOp,
            table: u32,
            file: u32,
            pos: u64,
            before: Option<Vec<Value>>,
            after: Option<Vec<Value>>,
        },
        Statement(StatementChange),
        Snapshot {
            snapshot: u32,
            table: u32,
            values: Vec<Value>,
        },
    }

    /// The index of `item` in `seen`, adding it if new. Records hold a handful of tables, and
    /// consecutive rows usually share one, so the last entry is tried first.
    fn index_of<'a, T: ?Sized + PartialEq>(seen: &mut Vec<&'a T>, item: &'a T) -> u32 {
        let same = |known: &&T| std::ptr::eq(*known, item) || **known == *item;
        if let Some(last) = seen.last() {
            if std::ptr::eq(*last, item) {
                return (seen.len() - 1) as u32;
            }
        }
        match seen.iter().position(same) {
            Some(i) => i as u32,
            None => {
                seen.push(item);
                (seen.len() - 1) as u32
            }
        }
    }

    impl Serialize for SourceTransaction {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut tables: Vec<&Table> = Vec::new();
            let mut files: Vec<&str> = Vec::new();
            let changes = self
                .changes
                .iter()
                .map(|change| match change {
                    Change::Row(row) => ChangeRef::Row {
                        op: row.op,
                        table: index_of(&mut tables, &*row.table),
                        file: index_of(&mut files, &*row.file),
                        pos: row.pos,
                        before: row.before.as_deref(),
                        after: row.after.as_deref(),
                    },
                    Change::Statement(statement) => ChangeRef::Statement(statement),
                    Change::Snapshot(row) => ChangeRef::Snapshot {
                        snapshot: index_of(&mut files, &*row.snapshot),
                        table: index_of(&mut tables, &*row.table),
                        values: &row.values,
                    },
                })
                .collect();
            TransactionRef {
                gtid: &self.gtid,
                timestamp: self.timestamp,
                position_after: &self.position_after,
                first_change: self.first_change,
                ends_transaction: self.ends_transaction,
                tables,
                files,
                changes,
            }
            .serialize(serializer)
        }
    }

    impl<'de> Deserialize<'de> for SourceTransaction {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let wire = TransactionOwned::deserialize(deserializer)?;
            if let Some(bad) = wire.tables.iter().find(|t| !t.is_consistent()) {
                return Err(D::Error::custom(format!(
                    "table {}.{}: a primary-key index is past its {} columns",
                    bad.database,
                    bad.name,
                    bad.columns.len()
                )));
            }
            let tables: Vec<Arc<Table>> = wire.tables.into_iter().map(Arc::new).collect();
            let files: Vec<Arc<str>> = wire.files.into_iter().map(Arc::from).collect();
            let mut changes = Vec::with_capacity(wire.changes.len());
            for (index, change) in wire.changes.into_iter().enumerate() {
                changes.push(match change {
                    ChangeOwned::Row {
                        op,
                        table,
                        file,
                        pos,
                        before,
                        after,
                    } => {
                        let (Some(table), Some(file)) =
                            (tables.get(table as usize), files.get(file as usize))
                        else {
                            return Err(D::Error::custom(format!(
                                "change {index} refers to table {table} or file {file}, which the record does not hold"
                            )));
                        };
                        let width = table.columns.len();
                        if [&before, &after]
                            .into_iter()
                            .flatten()
                            .any(|image| image.len() != width)
                        {
                            return Err(D::Error::custom(format!(
                                "change {index}: a row image's width differs from the {width} columns of {}.{}",
                                table.database, table.name
                            )));
                        }
                        Change::Row(RowChange {
                            op,
                            table: table.clone(),
                            file: file.clone(),
                            pos,
                            before,
                            after,
                        })
                    }
                    ChangeOwned::Statement(statement) => Change::Statement(statement),
                    ChangeOwned::Snapshot {
                        snapshot,
                        table,
                        values,
                    } => {
                        let (Some(table), Some(snapshot)) =
                            (tables.get(table as usize), files.get(snapshot as usize))
                        else {
                            return Err(D::Error::custom(format!(
                                "snapshot row {index} refers to table {table} or string {snapshot}, which the record does not hold"
                            )));
                        };
                        if values.len() != table.columns.len() {
                            return Err(D::Error::custom(format!(
                                "snapshot row {index}: {} values for the {} columns of {}.{}",
                                values.len(),
                                table.columns.len(),
                                table.database,
                                table.name
                            )));
                        }
                        Change::Snapshot(SnapshotRow {
                            snapshot: snapshot.clone(),
                            table: table.clone(),
                            values,
                        })
                    }
                });
            }
            Ok(SourceTransaction {
                gtid: wire.gtid,
                timestamp: wire.timestamp,
                position_after: wire.position_after,
                first_change: wire.first_change,
                ends_transaction: wire.ends_transaction,
                changes,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Arc<Table> {
        Arc::new(Table {
            database: "app".into(),
            name: name.into(),
            columns: vec!["id".into(), "note".into()],
            primary_key: vec![0],
        })
    }

    fn row(table: &Arc<Table>, file: &Arc<str>, id: i64) -> Change {
        Change::Row(RowChange {
            op: RowOp::Update,
            table: table.clone(),
            file: file.clone(),
            pos: 4 + id as u64,
            before: Some(vec![Value::Int(id), Value::Absent]),
            after: Some(vec![Value::Int(id), Value::Text(format!("n{id}"))]),
        })
    }

    fn transaction(changes: Vec<Change>) -> SourceTransaction {
        SourceTransaction {
            gtid: "0-1-5".into(),
            timestamp: 7,
            position_after: "0-1-5".into(),
            first_change: 0,
            ends_transaction: true,
            changes,
        }
    }

    fn frame(t: &SourceTransaction) -> Vec<u8> {
        sdl_wal::encode_frame(4, t).unwrap()
    }

    #[test]
    fn a_record_stores_each_table_and_file_once_and_reads_back_equal() {
        let (a, b) = (table("a"), table("b"));
        // The same shape from a second TABLE_MAP (another Arc) is stored once too.
        let a_again = Arc::new((*a).clone());
        let (f1, f2): (Arc<str>, Arc<str>) = ("bin.000001".into(), "bin.000002".into());
        let t = transaction(vec![
            row(&a, &f1, 1),
            row(&b, &f1, 2),
            row(&a_again, &f2, 3),
            Change::Statement(StatementChange {
                database: "app".into(),
                statement: "ALTER TABLE a ADD x INT".into(),
                file: "bin.000002".into(),
                pos: 9,
            }),
        ]);
        let bytes = frame(&t);
        let back: SourceTransaction = sdl_wal::decode_frame(4, &bytes).unwrap();
        assert_eq!(back, t);
        let tables = |t: &SourceTransaction| -> Vec<*const Table> {
            t.changes
                .iter()
                .filter_map(|c| match c {
                    Change::Row(r) => Some(Arc::as_ptr(&r.table)),
                    _ => None,
                })
                .collect()
        };
        let read = tables(&back);
        assert_eq!(read[0], read[2], "one shared table after reading");
        assert_ne!(read[0], read[1]);
        // Names are not repeated per row: 100 more rows of one table add no column names.
        let many = transaction((0..100).map(|i| row(&a, &f1, i)).collect());
        let name_bytes = frame(&many).windows(4).filter(|w| *w == b"note").count();
        assert_eq!(name_bytes, 1);
    }

    #[test]
    fn a_record_whose_indexes_do_not_fit_is_refused() {
        let a = table("a");
        let f: Arc<str> = "bin.000001".into();
        let good = transaction(vec![row(&a, &f, 1)]);
        let narrow = Arc::new(Table {
            columns: vec!["id".into()],
            primary_key: vec![0],
            ..(*a).clone()
        });
        let wrong_width = transaction(vec![row(&narrow, &f, 1)]);
        let error = sdl_wal::decode_frame::<SourceTransaction>(4, &frame(&wrong_width))
            .unwrap_err()
            .to_string();
        assert!(error.contains("width"), "{error}");
        let bad_key = Arc::new(Table {
            primary_key: vec![5],
            ..(*a).clone()
        });
        let error = sdl_wal::decode_frame::<SourceTransaction>(
            4,
            &frame(&transaction(vec![row(&bad_key, &f, 1)])),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("primary-key index"), "{error}");
        assert!(sdl_wal::decode_frame::<SourceTransaction>(4, &frame(&good)).is_ok());
    }

    #[test]
    fn snapshot_rows_round_trip_and_format_4_records_still_read() {
        let a = table("a");
        let f: Arc<str> = "bin.000001".into();
        let snapshot_row = |id: i64| {
            Change::Snapshot(SnapshotRow {
                snapshot: "20261127T190102.123Z".into(),
                table: a.clone(),
                values: vec![Value::Int(id), Value::Text(format!("n{id}"))],
            })
        };
        let chunk = transaction(vec![snapshot_row(1), snapshot_row(2)]);
        let bytes = sdl_wal::encode_frame(5, &chunk).unwrap();
        let back: SourceTransaction = sdl_wal::decode_frame_of(
            <SourceTransaction as sdl_wal::Record>::READABLE_VERSIONS,
            &bytes,
        )
        .unwrap();
        assert_eq!(back, chunk);
        // The snapshot id is stored once per record, like file names.
        let ids = bytes
            .windows(20)
            .filter(|w| *w == b"20261127T190102.123Z")
            .count();
        assert_eq!(ids, 1);
        // A record written by the previous format (no snapshot rows) reads unchanged.
        let old = transaction(vec![row(&a, &f, 1)]);
        let old_frame = sdl_wal::encode_frame(4, &old).unwrap();
        let read: SourceTransaction = sdl_wal::decode_frame_of(
            <SourceTransaction as sdl_wal::Record>::READABLE_VERSIONS,
            &old_frame,
        )
        .unwrap();
        assert_eq!(read, old);
        let future = sdl_wal::encode_frame(6, &old).unwrap();
        assert!(sdl_wal::decode_frame_of::<SourceTransaction>(
            <SourceTransaction as sdl_wal::Record>::READABLE_VERSIONS,
            &future
        )
        .is_err());
    }
}
