//! Reading a table in key-ordered chunks, every value exactly as the binlog decoder would give it.
//!
//! # Guarantees
//! - **Same values as the stream.** A row read here becomes the same [`Value`]s (variant and
//!   content) as the same stored row decoded from the binlog, so a snapshot document's `after`
//!   equals the `after` of the insert document of that row. Values are read through the binary
//!   protocol (prepared statements), whose integers, floats and temporals `mysql_common` decodes
//!   with the very code the binlog decoder uses, and every value then goes through the decoder's
//!   own [`convert_value`]: strings by the column's collation (the session returns every string's
//!   bytes unconverted, `character_set_results = NULL`, with the column's own collation id in the
//!   result metadata), DECIMAL as its text, BINARY(n) with its padding, BIT and GEOMETRY as bytes,
//!   YEAR as a number (0000 → 0), TIME with days folded into hours. What the binary protocol gives
//!   differently is brought to the binlog's form here, each in one place: MariaDB's INET4, INET6
//!   and UUID are selected as their stored bytes (`CAST(col AS BINARY(n))`); TIMESTAMPs (read in
//!   UTC, `time_zone = '+00:00'`) become seconds since the epoch, the zero TIMESTAMP 0; ENUM and
//!   SET (returned as their member names) go through the decoder's member naming; MariaDB JSON
//!   columns (LONGTEXT with a `json_valid` check, found as the ingester finds them) are parsed by
//!   the same [`json_text`](crate::source::json_text) parser, a value that does not parse staying
//!   text.
//! - **Keyset pagination, every row once.** A chunk is `SELECT <every column> FROM db.t WHERE key >
//!   :after ORDER BY key LIMIT n` (for a composite key `k1 > ? OR (k1 = ? AND k2 > ?) ...`, a form
//!   MariaDB's optimizer reads as a range of the key's index). The `after` key is bound back as
//!   parameters that compare the way the key's index orders (ENUM/SET by their numbers, DECIMAL as
//!   DECIMAL, BIT as a number, TIMESTAMP in UTC, INET4/INET6/UUID as their bytes), so paging visits
//!   every row exactly once, in key order, whatever the key's types; a chunk that would not move
//!   past its `after` key is refused rather than read again and again.
//! - **Errors.** A missing table, a view, a key column that does not exist are definite
//!   ([`SourceError::SnapshotRefused`], naming `db.table` and the fix); so is a table whose columns
//!   changed, that was dropped or that the sdl user may no longer read under the read. Connection
//!   problems, lock waits and timeouts are transient, as everywhere in the source.
//!
//! # Assumptions
//! [`prepare_session`] ran on the connection before [`read_chunk`]; the key columns are NOT NULL
//! (a primary key, or a NOT NULL unique key: `select.rs` chooses). MySQL returns JSON as text:
//! its fractions are read as doubles (what its binary JSON holds unless a DECIMAL was cast in),
//! temporal and opaque scalars inside it as strings.

use std::sync::Arc;

use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn};
use tracing::warn;

use crate::event::{Json, Table, Value};
use crate::flavor::Flavor;
use crate::source::decode::{convert_value, ColumnInfo};
use crate::source::error::query_error;
use crate::source::schema::{check_lookup_warnings, load_json_columns, quoted_members};
use crate::source::{json_text, SourceError};

mod key;
use key::{after_params, chunk_queries, decimal_type};
#[cfg(test)]
use key::{key_param, utc_civil};

/// A table as the snapshot reads it: its shape, its key, and what the value conversion needs per
/// column.
pub struct SnapshotTable {
    /// Database, name, columns in ordinal order, and `primary_key` = the key the snapshot is
    /// ordered by (indexes into `columns`, in key order).
    pub table: Arc<Table>,
    /// information_schema.TABLES.TABLE_ROWS (an estimate; exact for some engines).
    pub rows_estimate: Option<u64>,
    /// Per column, in column order.
    columns: Vec<ColumnKind>,
    /// The first chunk's query (no `after` key).
    first_query: String,
    /// Every later chunk's query (`WHERE` the key is past `after`).
    after_query: String,
}

/// What a column needs beyond the result metadata: how its values are converted, and how a key
/// value of it is bound back as a parameter.
#[derive(Debug, Clone, PartialEq)]
enum ColumnKind {
    Plain,
    /// Character data in a character set (not binary): a key value of it that did not decode
    /// (kept as bytes) cannot be bound back as the text it compares as.
    Text,
    /// MariaDB JSON: LONGTEXT with a `json_valid` check; its text is parsed into [`Json`].
    MariadbJson,
    /// ENUM / SET, with their members (from information_schema, UTF-8) for binding a key.
    Enum(Vec<String>),
    Set(Vec<String>),
    Bit,
    Timestamp,
    /// DECIMAL with its `DECIMAL(p,s)`: a key parameter is cast to it, so it compares as a
    /// DECIMAL whatever the server would make of a string.
    Decimal(String),
    /// MariaDB's INET4, INET6 and UUID: the binlog holds their stored bytes, a `SELECT` their
    /// text, so they are selected as `CAST(col AS BINARY(n))`, the stored bytes.
    StoredBinary(u8),
}

fn refused(database: &str, table: &str, reason: impl Into<String>) -> SourceError {
    SourceError::SnapshotRefused {
        table: format!("{database}.{table}"),
        reason: reason.into(),
    }
}

/// Columns from information_schema in ordinal order (the same names change documents use),
/// `table.primary_key` = the indexes of `key_columns` (chosen by the caller: the primary key or a
/// NOT NULL unique key) in key order. `rows_estimate` from information_schema.TABLES.TABLE_ROWS. A
/// missing table or a key column that does not exist is a definite [`SourceError`] naming
/// db.table and the fix; connection problems are transient as elsewhere.
pub async fn describe(
    conn: &mut Conn,
    flavor: Flavor,
    database: &str,
    table: &str,
    key_columns: &[String],
) -> Result<SnapshotTable, SourceError> {
    let tables_query = "SELECT TABLE_TYPE, TABLE_ROWS FROM information_schema.TABLES \
                        WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";
    let found: Option<(String, Option<u64>)> = conn
        .exec_first(tables_query, (database, table))
        .await
        .map_err(|e| query_error(tables_query, e))?;
    check_lookup_warnings(conn, tables_query).await?;
    let Some((table_type, rows_estimate)) = found else {
        return Err(refused(
            database,
            table,
            "no such table (or the sdl user lacks SELECT on it). Check the name in \
             source.snapshot_tables or the `sdl snapshot` command, and grant SELECT on it",
        ));
    };
    if table_type != "BASE TABLE" && table_type != "SYSTEM VERSIONED" {
        return Err(refused(
            database,
            table,
            format!(
                "it is a {table_type}, not a base table: only tables have rows in the binlog. \
                 Leave it out of source.snapshot_tables (snapshot the tables it reads instead)"
            ),
        ));
    }
    let columns_query = "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME \
                         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                         ORDER BY ORDINAL_POSITION";
    let rows: Vec<(String, String, String, Option<String>)> = conn
        .exec(columns_query, (database, table))
        .await
        .map_err(|e| query_error(columns_query, e))?;
    check_lookup_warnings(conn, columns_query).await?;
    if rows.is_empty() {
        return Err(refused(
            database,
            table,
            "information_schema shows no columns for it (dropped since, or the sdl user lacks \
             SELECT on it). Grant SELECT on it, or leave it out of the snapshot",
        ));
    }
    let json = match flavor {
        Flavor::Mariadb => load_json_columns(conn, database, table).await?,
        Flavor::Mysql => Default::default(),
    };
    let mut names = Vec::with_capacity(rows.len());
    let mut kinds = Vec::with_capacity(rows.len());
    for (name, data_type, column_type, charset) in rows {
        let kind = match data_type.to_ascii_lowercase().as_str() {
            "enum" => ColumnKind::Enum(quoted_members(&column_type)),
            "set" => ColumnKind::Set(quoted_members(&column_type)),
            "bit" => ColumnKind::Bit,
            "timestamp" => ColumnKind::Timestamp,
            "decimal" => ColumnKind::Decimal(decimal_type(&column_type)),
            "inet4" => ColumnKind::StoredBinary(4),
            "inet6" | "uuid" => ColumnKind::StoredBinary(16),
            _ if json.contains(&name) => ColumnKind::MariadbJson,
            _ if charset.is_some_and(|c| c != "binary") => ColumnKind::Text,
            _ => ColumnKind::Plain,
        };
        names.push(name);
        kinds.push(kind);
    }
    let mut primary_key = Vec::with_capacity(key_columns.len());
    for key in key_columns {
        let Some(index) = names.iter().position(|n| n == key) else {
            return Err(refused(
                database,
                table,
                format!(
                    "its key column `{key}` does not exist (columns: {}). The table changed since \
                     its key was chosen; start the snapshot of it again",
                    names.join(", ")
                ),
            ));
        };
        primary_key.push(u32::try_from(index).expect("MySQL tables have at most 4096 columns"));
    }
    if primary_key.is_empty() {
        return Err(refused(
            database,
            table,
            "no key to read it by: add a primary key (or a NOT NULL UNIQUE key), or leave the \
             table out of source.snapshot_tables",
        ));
    }
    let (first_query, after_query) = chunk_queries(database, table, &names, &primary_key, &kinds);
    Ok(SnapshotTable {
        table: Arc::new(Table {
            database: database.to_string(),
            name: table.to_string(),
            columns: names,
            primary_key,
        }),
        rows_estimate,
        columns: kinds,
        first_query,
        after_query,
    })
}

/// Sets what the chunk reads need on this connection: `time_zone '+00:00'` so TIMESTAMPs read as
/// UTC, and `character_set_results = NULL` so every string arrives as its stored bytes with its
/// column's collation id in the result metadata. Called once per snapshot connection.
pub async fn prepare_session(conn: &mut Conn) -> Result<(), SourceError> {
    let query = "SET time_zone = '+00:00', character_set_results = NULL";
    conn.query_drop(query)
        .await
        .map_err(|e| query_error(query, e))
}

/// Up to `limit` rows after key `after` (None: from the first), in key order, every column, as
/// [`Value`]s.
pub async fn read_chunk(
    conn: &mut Conn,
    table: &SnapshotTable,
    after: Option<&[Value]>,
    limit: usize,
) -> Result<Vec<Vec<Value>>, SourceError> {
    let shape = &table.table;
    let refuse = |reason: String| refused(&shape.database, &shape.name, reason);
    let (query, params) = chunk_statement(table, after, limit)?;
    let mut result = match conn.exec_iter(query, params).await {
        Ok(result) => result,
        Err(e) => return Err(read_error(table, query, e)),
    };
    let columns = result.columns().unwrap_or_else(|| Arc::from(Vec::new()));
    if columns.len() != table.columns.len() {
        return Err(refuse(format!(
            "the chunk query returned {} columns, the table has {}",
            columns.len(),
            table.columns.len()
        )));
    }
    let mut rows = Vec::with_capacity(limit.min(65_536));
    loop {
        let row = match result.next().await {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => return Err(read_error(table, query, e)),
        };
        let values = row.unwrap();
        let mut converted = Vec::with_capacity(values.len());
        for (i, value) in values.into_iter().enumerate() {
            let value = convert(&columns[i], &table.columns[i], value).map_err(|reason| {
                refuse(format!(
                    "column `{}` holds a value sdl cannot read exactly: {reason}",
                    shape.columns[i]
                ))
            })?;
            converted.push(json_or_text(shape, i, &table.columns[i], value));
        }
        rows.push(converted);
    }
    // Keyset paging moves past `after` or it would read the same rows for ever.
    if let (Some(after), Some(first)) = (after, rows.first()) {
        if key_of(table, first) == after {
            return Err(refuse(format!(
                "reading past key {after:?} returned that key again: its key values do not \
                 compare as they sort (an sdl bug: report it). Leave the table out of the \
                 snapshot meanwhile"
            )));
        }
    }
    Ok(rows)
}

/// The statement [`read_chunk`] runs and its parameters (for `EXPLAIN`, and tests that the
/// chunk reads a range of the key's index).
pub fn chunk_statement<'t>(
    table: &'t SnapshotTable,
    after: Option<&[Value]>,
    limit: usize,
) -> Result<(&'t str, Vec<mysql_async::Value>), SourceError> {
    let limit_param = mysql_async::Value::UInt(limit as u64);
    let Some(after) = after else {
        return Ok((&table.first_query, vec![limit_param]));
    };
    let mut params = after_params(table, after).map_err(|reason| {
        let shape = &table.table;
        refused(
            &shape.database,
            &shape.name,
            format!("{reason} (an sdl bug)"),
        )
    })?;
    params.push(limit_param);
    Ok((&table.after_query, params))
}

/// A failed chunk query: a table dropped or changed under the read is definite (re-reading the
/// same query cannot help); everything else as [`query_error`] decides.
fn read_error(table: &SnapshotTable, query: &str, e: mysql_async::Error) -> SourceError {
    let (database, name) = (&table.table.database, &table.table.name);
    let mysql_async::Error::Server(server) = &e else {
        return query_error(query, e);
    };
    let reason = match server.code {
        // ER_NO_SUCH_TABLE, ER_BAD_FIELD_ERROR.
        1146 | 1054 => format!(
            "the table was dropped or its columns changed while it was being read ({}). Start \
             its snapshot again (`sdl snapshot {database}.{name}`) if it still exists",
            server.message
        ),
        // ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR.
        1142 | 1143 => format!(
            "the sdl user may not read it ({}). Grant it SELECT on {database}.{name} (sdl \
             needs SELECT on every table it snapshots), or leave the table out of the snapshot",
            server.message
        ),
        _ => return query_error(query, e),
    };
    refused(database, name, reason)
}

/// The key values of a row read by [`read_chunk`], in key order.
pub fn key_of(table: &SnapshotTable, row: &[Value]) -> Vec<Value> {
    table
        .table
        .primary_key
        .iter()
        .map(|&i| row[i as usize].clone())
        .collect()
}

/// One value of a chunk row, in the binlog decoder's form: what the binary protocol gives
/// differently from the binlog (ENUM/SET as names, TIMESTAMP as a local date, MySQL JSON as text)
/// is brought to the binlog's form; everything else goes through [`convert_value`] as it is.
fn convert(column: &Column, kind: &ColumnKind, value: mysql_async::Value) -> Result<Value, String> {
    use mysql_async::Value as My;
    let column_type = column.column_type();
    let flags = column.flags();
    let charset = column.character_set();
    let info = |column_type: ColumnType| ColumnInfo {
        column_type,
        charset,
        enum_members: None,
        set_members: None,
        fixed_length: None,
        unsigned: flags.contains(ColumnFlags::UNSIGNED_FLAG),
        members_utf8: false,
    };
    match value {
        My::NULL => Ok(Value::Null),
        // The member's name in the column's charset: named as the decoder names the member the
        // binlog's index points at.
        My::Bytes(name) if flags.contains(ColumnFlags::ENUM_FLAG) => {
            let members = [name];
            let column = ColumnInfo {
                enum_members: Some(&members),
                ..info(ColumnType::MYSQL_TYPE_ENUM)
            };
            convert_value(&column, BinlogValue::Value(My::Int(1)))
        }
        // `a,c`: the chosen members in definition order (a SET member cannot hold a comma); named
        // as the decoder names the members the binlog's bitmap chooses.
        My::Bytes(names) if flags.contains(ColumnFlags::SET_FLAG) => {
            let members: Vec<Vec<u8>> = if names.is_empty() {
                Vec::new()
            } else {
                names.split(|b| *b == b',').map(<[u8]>::to_vec).collect()
            };
            let mut bitmap = vec![0u8; members.len().div_ceil(8)];
            for k in 0..members.len() {
                bitmap[k / 8] |= 1 << (k % 8);
            }
            let column = ColumnInfo {
                set_members: Some(&members),
                ..info(ColumnType::MYSQL_TYPE_SET)
            };
            convert_value(&column, BinlogValue::Value(My::Bytes(bitmap)))
        }
        My::Date(year, month, day, hour, minute, second, micros)
            if column_type == ColumnType::MYSQL_TYPE_TIMESTAMP
                || *kind == ColumnKind::Timestamp =>
        {
            timestamp_value((year, month, day), (hour, minute, second), micros)
        }
        My::Bytes(text) if column_type == ColumnType::MYSQL_TYPE_JSON => {
            let text = String::from_utf8(text).map_err(|e| format!("JSON text: {e}"))?;
            match json_text::parse(&text) {
                Ok(json) => Ok(Value::Json(mysql_json(json))),
                Err(_) => Ok(Value::Text(text)),
            }
        }
        value => convert_value(&info(column_type), BinlogValue::Value(value)),
    }
}

/// MariaDB JSON columns: text that parses becomes [`Json`], exactly as the ingester's
/// `JsonColumns` does it; text that does not stays text, logged.
fn json_or_text(table: &Table, index: usize, kind: &ColumnKind, value: Value) -> Value {
    let (ColumnKind::MariadbJson, Value::Text(text)) = (kind, &value) else {
        return value;
    };
    match json_text::parse(text) {
        Ok(json) => Value::Json(json),
        Err(reason) => {
            warn!(target: "sdl::snapshot",
                "snapshot of {}.{}: column `{}` is a JSON column but a value is not JSON sdl can \
                 represent exactly ({reason}); it is kept as its text",
                table.database, table.name, table.columns[index]
            );
            value
        }
    }
}

/// MySQL's JSON text: a number with a fraction or exponent is a double in MySQL's binary JSON.
fn mysql_json(json: Json) -> Json {
    match json {
        Json::Decimal(text) => match text.parse::<f64>() {
            Ok(d) => Json::Double(d),
            Err(_) => Json::Decimal(text),
        },
        Json::Array(items) => Json::Array(items.into_iter().map(mysql_json).collect()),
        Json::Object(members) => Json::Object(
            members
                .into_iter()
                .map(|(k, v)| (k, mysql_json(v)))
                .collect(),
        ),
        other => other,
    }
}

/// A TIMESTAMP read in UTC as the binlog holds it: seconds since the epoch; the zero TIMESTAMP
/// (`0000-00-00 00:00:00`, fraction kept) is 0, as the binlog stores it.
fn timestamp_value(date: (u16, u8, u8), time: (u8, u8, u8), micros: u32) -> Result<Value, String> {
    let (year, month, day) = date;
    let (hour, minute, second) = time;
    if (year, month, day) == (0, 0, 0) {
        return Ok(Value::Timestamp { seconds: 0, micros });
    }
    let invalid = |e: &dyn std::fmt::Display| format!("TIMESTAMP {date:?} {time:?}: {e}");
    let month = time::Month::try_from(month).map_err(|e| invalid(&e))?;
    let date =
        time::Date::from_calendar_date(i32::from(year), month, day).map_err(|e| invalid(&e))?;
    let time = time::Time::from_hms(hour, minute, second).map_err(|e| invalid(&e))?;
    let seconds = time::PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp();
    Ok(Value::Timestamp { seconds, micros })
}

#[cfg(test)]
mod tests;
