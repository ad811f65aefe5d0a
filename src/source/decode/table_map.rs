//! TABLE_MAP events: validated, then turned into what decoding the table's rows needs (names,
//! primary key, ENUM/SET members, charsets, per-column decoders).
//!
//! Guarantees: TABLE_MAP column metadata is validated before rows are decoded with it (malformed
//! input, from a damaged file or a fuzzer, is an error, never a panic); a live stream refuses a
//! TABLE_MAP without column names or ENUM/SET members (written under
//! `binlog_row_metadata=MINIMAL`) with the way out, unless names are provided from
//! information_schema ([`TableSchema`]), which is refused in turn when it visibly no longer fits.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use mysql_async::binlog::events::{
    Event, OptionalMetaExtractor, OptionalMetadataField, TableMapEvent,
};
use mysql_async::binlog::EventType;
use mysql_async::consts::ColumnType;

use super::AssemblerMode;
use crate::event::Table;

/// A TABLE_MAP event with what sdl needs from its optional metadata.
pub(super) struct TableInfo {
    pub(super) map: TableMapEvent<'static>,
    /// The table's names and primary key, shared by every row change decoded with this map.
    pub(super) table: Arc<Table>,
    /// How to decode each column's values, by table column index.
    pub(super) columns: Vec<ColumnDecoder>,
    /// ENUM/SET members are UTF-8 text from a [`TableSchema`], not in the column's charset.
    pub(super) members_utf8: bool,
}

/// Everything needed to decode one column's values, worked out once per TABLE_MAP (what
/// `mysql_common`'s row decoder works out again for every row).
pub(super) struct ColumnDecoder {
    pub(super) column_type: ColumnType,
    /// The column's TABLE_MAP metadata bytes.
    pub(super) meta: Vec<u8>,
    pub(super) unsigned: bool,
    /// Collation id (character columns, ENUM, SET).
    pub(super) charset: u16,
    /// ENUM/SET member names (raw bytes, in the column's ENUM/SET charset unless
    /// [`TableInfo::members_utf8`]).
    pub(super) enum_members: Option<Vec<Vec<u8>>>,
    pub(super) set_members: Option<Vec<Vec<u8>>>,
    /// Declared byte length of CHAR/BINARY columns (the binlog strips their trailing padding).
    pub(super) fixed_length: Option<usize>,
}

/// Column names, ENUM/SET members and primary key of a table, from outside the binlog
/// (`information_schema`, for sources with `binlog_row_metadata=MINIMAL`).
#[derive(Debug, Clone, Default)]
pub struct TableSchema {
    pub names: Vec<String>,
    /// Members of ENUM and SET columns by column index, as UTF-8 text.
    pub enum_values: HashMap<usize, Vec<String>>,
    pub set_values: HashMap<usize, Vec<String>>,
    pub primary_key: Vec<String>,
}

/// How to get past row events written under `binlog_row_metadata=MINIMAL`: they stay in the
/// binlog as written, so setting FULL and restarting alone fails on the same event again.
const MINIMAL_WAY_OUT: &str = "Setting binlog_row_metadata=FULL on the source helps only for rows written after the change: the events already written this way stay as they are, and restarting alone fails on this one again. To get past them, add source.column_names = \"information_schema\" to the [source] section of the config and start sdl again: names are then read from information_schema (right unless the table has changed since; sdl refuses a table whose columns no longer match). Once sdl is past them (`sdl wal stats` ingest position), you may remove it again. (Skipping their changes instead means re-seeding after them: docs/operations.md, \"Rows written under binlog_row_metadata=MINIMAL\".) Either way, set binlog_row_metadata=FULL on the source (and in its config file) so that it does not happen again";

/// The `(database, table)` of a TABLE_MAP event that carries no column names.
pub fn table_without_names(event: &Event) -> Option<(String, String)> {
    if event.header().event_type_raw() != EventType::TABLE_MAP_EVENT as u8 {
        return None;
    }
    let map = catch_unwind(AssertUnwindSafe(|| event.read_event::<TableMapEvent<'_>>()))
        .ok()?
        .ok()?;
    let named = map
        .iter_optional_meta()
        .any(|f| matches!(f, Ok(OptionalMetadataField::ColumnName(_))));
    (!named).then(|| {
        (
            map.database_name().into_owned(),
            map.table_name().into_owned(),
        )
    })
}

/// How many metadata bytes `mysql_common` reads for a column of this type (it indexes them
/// without checking).
fn metadata_needed(column_type: ColumnType) -> usize {
    use ColumnType::*;
    match column_type {
        MYSQL_TYPE_STRING
        | MYSQL_TYPE_BIT
        | MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET
        | MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING => 2,
        MYSQL_TYPE_TYPED_ARRAY => 3,
        MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_VECTOR
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIME2 => 1,
        _ => 0,
    }
}

/// Validates a TABLE_MAP and extracts names, ENUM and SET members from its optional metadata.
/// The error carries the ` (table db.tbl)` label and the reason.
pub(super) fn table_info(
    map: TableMapEvent<'static>,
    mode: AssemblerMode,
    provided: Option<&TableSchema>,
) -> Result<TableInfo, (String, String)> {
    let label = format!(" (table {}.{})", map.database_name(), map.table_name());
    let fail = |reason: String| (label.clone(), reason);
    let count = usize::try_from(map.columns_count())
        .map_err(|_| fail("column count does not fit in memory".into()))?;
    if count > 4096 {
        return Err(fail(format!(
            "{count} columns: more than MySQL's limit of 4096"
        )));
    }
    let mut enum_columns = Vec::new();
    let mut set_columns = Vec::new();
    let mut fixed_length = HashMap::new();
    for i in 0..count {
        let column_type = match map.get_column_type(i) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(fail(format!("column {i} has no type"))),
            Err(e) => return Err(fail(format!("column {i}: {e}"))),
        };
        let needed = metadata_needed(column_type);
        let have = map.get_column_metadata(i).map(<[u8]>::len);
        if needed > 0 && have.is_none_or(|have| have < needed) {
            return Err(fail(format!(
                "column {i} ({column_type:?}) has {} metadata bytes, needs {needed}",
                have.unwrap_or(0)
            )));
        }
        // Ranges mysql_common computes with unchecked arithmetic.
        let meta = map.get_column_metadata(i).unwrap_or(&[]);
        let bad = match column_type {
            ColumnType::MYSQL_TYPE_NEWDECIMAL => {
                let (precision, scale) = (meta[0], meta[1]);
                !(1..=65).contains(&precision) || scale > 30 || scale > precision
            }
            ColumnType::MYSQL_TYPE_TIMESTAMP2
            | ColumnType::MYSQL_TYPE_DATETIME2
            | ColumnType::MYSQL_TYPE_TIME2 => meta[0] > 6,
            ColumnType::MYSQL_TYPE_BIT => meta[0] > 7 || meta[1] > 8,
            ColumnType::MYSQL_TYPE_SET => meta[1] > 8,
            ColumnType::MYSQL_TYPE_TYPED_ARRAY => true,
            _ => false,
        };
        if bad {
            return Err(fail(format!(
                "column {i} ({column_type:?}) has impossible metadata {meta:?}"
            )));
        }
        match column_type {
            ColumnType::MYSQL_TYPE_ENUM => enum_columns.push(i),
            ColumnType::MYSQL_TYPE_SET => set_columns.push(i),
            ColumnType::MYSQL_TYPE_STRING => {
                if let Some(&[b0, b1, ..]) = map.get_column_metadata(i) {
                    // sql/field.cc Field_string::do_save_field_metadata.
                    let (b0, b1) = (usize::from(b0), usize::from(b1));
                    let length = if b0 & 0x30 != 0x30 {
                        b1 | (((b0 & 0x30) ^ 0x30) << 4)
                    } else {
                        b1
                    };
                    fixed_length.insert(i, length);
                }
            }
            _ => {}
        }
    }
    let mut names: Option<Vec<String>> = None;
    let mut enum_values = HashMap::new();
    let mut set_values = HashMap::new();
    let mut primary_key: Option<Vec<u64>> = None;
    for field in map.iter_optional_meta() {
        let field = field.map_err(|e| fail(format!("optional metadata does not decode: {e}")))?;
        match field {
            OptionalMetadataField::ColumnName(column_names) => {
                let list = column_names
                    .iter_names()
                    .map(|n| n.map(|n| n.name().into_owned()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| fail(format!("column names do not decode: {e}")))?;
                names = Some(list);
            }
            OptionalMetadataField::EnumStrValue(values) => {
                let lists = values.iter_values().map(|members| {
                    members.map(|m| m.values().iter().map(|v| v.value_raw().to_vec()).collect())
                });
                enum_values = members_by_column(lists, &enum_columns, "ENUM").map_err(fail)?;
            }
            OptionalMetadataField::SetStrValue(values) => {
                let lists = values.iter_values().map(|members| {
                    members.map(|m| m.values().iter().map(|v| v.value_raw().to_vec()).collect())
                });
                set_values = members_by_column(lists, &set_columns, "SET").map_err(fail)?;
            }
            OptionalMetadataField::SimplePrimaryKey(key) => {
                let indexes = key
                    .iter_indexes()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| fail(format!("primary key does not decode: {e}")))?;
                primary_key = Some(indexes);
            }
            OptionalMetadataField::PrimaryKeyWithPrefix(key) => {
                let indexes = key
                    .iter_keys()
                    .map(|part| part.map(|part| part.column_index()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| fail(format!("primary key does not decode: {e}")))?;
                primary_key = Some(indexes);
            }
            _ => {}
        }
    }
    let mut provided_names = None;
    if names.is_none() {
        if let Some(schema) = provided {
            // The race of the information_schema fallback: refuse what visibly no longer fits.
            let positions = |values: &HashMap<usize, Vec<String>>| {
                let mut v: Vec<usize> = values.keys().copied().collect();
                v.sort_unstable();
                v
            };
            if schema.names.len() != count
                || positions(&schema.enum_values) != enum_columns
                || positions(&schema.set_values) != set_columns
            {
                return Err(fail(format!(
                    "information_schema describes {} columns ({:?}) but the row event has {count} \
                     of other types: the table changed since this row was written, so its \
                     names cannot be known; set binlog_row_metadata=FULL on the source",
                    schema.names.len(),
                    schema.names
                )));
            }
            let utf8 = |values: &HashMap<usize, Vec<String>>| -> HashMap<usize, Vec<Vec<u8>>> {
                values
                    .iter()
                    .map(|(k, v)| (*k, v.iter().map(|m| m.as_bytes().to_vec()).collect()))
                    .collect()
            };
            enum_values = utf8(&schema.enum_values);
            set_values = utf8(&schema.set_values);
            let key = schema
                .primary_key
                .iter()
                .map(|name| {
                    schema.names.iter().position(|n| n == name).ok_or_else(|| {
                        fail(format!(
                            "information_schema names primary-key column `{name}`, which is not among its columns"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            primary_key = Some(key.into_iter().map(|i| i as u64).collect());
            provided_names = Some(schema.names.clone());
        }
    }
    let map_names = match names {
        Some(names) if names.len() == count => names,
        None if provided_names.is_some() => (0..count).map(|i| format!("@{i}")).collect(),
        Some(names) => {
            return Err(fail(format!(
                "{} column names for {count} columns",
                names.len()
            )))
        }
        None if mode == AssemblerMode::File => (0..count).map(|i| format!("@{i}")).collect(),
        None => {
            return Err(fail(format!(
                "the TABLE_MAP carries no column names: it was written while the source had \
                 binlog_row_metadata=MINIMAL. {MINIMAL_WAY_OUT}"
            )))
        }
    };
    if mode == AssemblerMode::Live
        && (enum_values.len() != enum_columns.len() || set_values.len() != set_columns.len())
    {
        return Err(fail(format!(
            "the TABLE_MAP lacks ENUM or SET member names: it was written while the source had \
             binlog_row_metadata=MINIMAL. {MINIMAL_WAY_OUT}"
        )));
    }
    let primary_key = primary_key
        .unwrap_or_default()
        .into_iter()
        .map(|i| match u32::try_from(i) {
            Ok(i) if (i as usize) < count => Ok(i),
            _ => Err(fail(format!(
                "primary-key column index {i} is past the table's {count} columns"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Signedness and charsets as mysql_common's own row decoder reads them
    // (binlog/row.rs): one entry per numeric, character, and ENUM/SET column, in order.
    let columns = {
        let extractor = OptionalMetaExtractor::new(map.iter_optional_meta())
            .map_err(|e| fail(format!("optional metadata does not decode: {e}")))?;
        let mut signedness = extractor.iter_signedness();
        let mut charsets = extractor.iter_charset();
        let mut enum_and_set_charsets = extractor.iter_enum_and_set_charset();
        let mut columns = Vec::with_capacity(count);
        for i in 0..count {
            let column_type = map
                .get_column_type(i)
                .ok()
                .flatten()
                .ok_or_else(|| fail(format!("column {i} has no type")))?;
            let unsigned = column_type.is_numeric_type() && signedness.next().unwrap_or_default();
            let charset = if column_type.is_character_type() {
                charsets.next().transpose()
            } else if column_type.is_enum_or_set_type() {
                enum_and_set_charsets.next().transpose()
            } else {
                Ok(None)
            }
            .map_err(|e| fail(format!("column {i}: charset does not decode: {e}")))?
            .unwrap_or_default();
            columns.push(ColumnDecoder {
                column_type,
                meta: map.get_column_metadata(i).unwrap_or(&[]).to_vec(),
                unsigned,
                charset,
                enum_members: enum_values.remove(&i),
                set_members: set_values.remove(&i),
                fixed_length: fixed_length.remove(&i),
            });
        }
        columns
    };
    let members_utf8 = provided_names.is_some();
    let table = Arc::new(Table {
        database: map.database_name().into_owned(),
        name: map.table_name().into_owned(),
        columns: provided_names.unwrap_or(map_names),
        primary_key,
    });
    Ok(TableInfo {
        map,
        table,
        columns,
        members_utf8,
    })
}

/// ENUM or SET member lists (one per column of that kind, in column order) by table column index.
fn members_by_column<E: std::fmt::Display>(
    lists: impl Iterator<Item = Result<Vec<Vec<u8>>, E>>,
    columns_of_kind: &[usize],
    kind: &str,
) -> Result<HashMap<usize, Vec<Vec<u8>>>, String> {
    let mut by_column = HashMap::new();
    for (k, members) in lists.enumerate() {
        let members = members.map_err(|e| format!("{kind} members do not decode: {e}"))?;
        let column = *columns_of_kind
            .get(k)
            .ok_or_else(|| format!("more {kind} member lists than {kind} columns"))?;
        by_column.insert(column, members);
    }
    Ok(by_column)
}
