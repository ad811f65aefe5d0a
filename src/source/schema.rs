//! information_schema lookups and their bounded caches: column names, ENUM/SET members and primary
//! keys for TABLE_MAPs without names (`source.column_names = "information_schema"`), and the JSON
//! columns of MariaDB tables.
//!
//! Guarantees: a lookup that information_schema answers incompletely because of a lock wait (a
//! warning, not an error) is transient and retried, never read as "no such column/table"; the
//! caches are bounded ([`MAX_JSON_TABLES`], and the decoder's `MAX_CACHED_SCHEMAS`), emptied and
//! refilled on demand, so memory does not grow with the number of tables.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mysql_async::binlog::events::Event;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tracing::warn;

use super::connect::connect;
use super::decode::{self, TransactionAssembler};
use super::error::{query_error, TRANSIENT_SERVER_ERRORS};
use super::{json_text, SourceError};
use crate::config::SourceConfig;
use crate::event::{Change, SourceTransaction, Table, Value};

/// Which columns of each MariaDB table are JSON. MariaDB's JSON is LONGTEXT with a
/// `CHECK (json_valid(`col`))` constraint, invisible in the binlog, so it is looked up in
/// information_schema.CHECK_CONSTRAINTS when a table's rows first arrive, and again after any DDL
/// statement in the stream or when the table's column names change (a new TABLE_MAP shape).
/// Values of those columns are parsed exactly into [`crate::event::Json`]; a value that does not
/// parse (the race: the column may have changed since the row was written) stays text and is
/// logged, never dropped or altered.
///
/// At most [`MAX_JSON_TABLES`] tables are kept: when one more would exceed that, the cache is
/// emptied and refilled on demand (a table is looked up again when its rows next arrive), so its
/// memory is bounded whatever the number of tables in the source.
#[derive(Default)]
pub(super) struct JsonColumns {
    /// database → table → (the table's shape when its JSON columns were looked up, their column
    /// indexes). Nested so that the per-row lookup borrows the row's names.
    tables: HashMap<String, HashMap<String, TableJson>>,
    /// How many tables `tables` holds.
    cached: usize,
}

/// The most tables whose JSON columns are kept (see [`JsonColumns`]).
const MAX_JSON_TABLES: usize = 4096;

/// A table's shape when its JSON columns were looked up, and their column indexes.
type TableJson = (Arc<Table>, Vec<usize>);

impl JsonColumns {
    pub(super) fn forget(&mut self) {
        self.tables.clear();
        self.cached = 0;
    }

    /// Records a table's JSON columns, within the bound.
    fn remember(&mut self, table: &Arc<Table>, indexes: Vec<usize>) -> &Vec<usize> {
        let known = self
            .tables
            .get(table.database.as_str())
            .is_some_and(|t| t.contains_key(table.name.as_str()));
        if !known {
            if self.cached >= MAX_JSON_TABLES {
                self.forget();
            }
            self.cached += 1;
        }
        let slot = self
            .tables
            .entry(table.database.clone())
            .or_default()
            .entry(table.name.clone())
            .insert_entry((table.clone(), indexes))
            .into_mut();
        &slot.1
    }

    pub(super) async fn apply(
        &mut self,
        cfg: &SourceConfig,
        schema_conn: &mut Option<Conn>,
        transaction: &mut SourceTransaction,
    ) -> Result<(), SourceError> {
        for change in &mut transaction.changes {
            let Change::Row(row) = change else { continue };
            let table = &row.table;
            let cached = self
                .tables
                .get_mut(table.database.as_str())
                .and_then(|t| t.get_mut(table.name.as_str()));
            let json = match cached {
                // Each TABLE_MAP makes a new `Table`: compare names only when it is not the one
                // seen last.
                Some((seen, json)) if Arc::ptr_eq(seen, table) => json,
                Some((seen, json)) if seen.columns == table.columns => {
                    *seen = table.clone();
                    json
                }
                _ => {
                    if schema_conn.is_none() {
                        match connect(cfg).await {
                            Ok((conn, _)) => *schema_conn = Some(conn),
                            Err(e) => return Err(SourceError::Transient(e.to_string())),
                        }
                    }
                    let conn = schema_conn.as_mut().expect("connected above");
                    let names = match load_json_columns(conn, &table.database, &table.name).await {
                        Ok(names) => names,
                        Err(e) => {
                            *schema_conn = None;
                            return Err(e);
                        }
                    };
                    let indexes = (0..table.columns.len())
                        .filter(|&i| names.contains(&table.columns[i]))
                        .collect();
                    self.remember(table, indexes)
                }
            };
            if json.is_empty() {
                continue;
            }
            for image in [row.before.as_mut(), row.after.as_mut()]
                .into_iter()
                .flatten()
            {
                for &index in json.iter() {
                    let value = &mut image[index];
                    if let Value::Text(text) = value {
                        match json_text::parse(text) {
                            Ok(parsed) => *value = Value::Json(parsed),
                            Err(reason) => warn!(target: "sdl::source",
                                "{}.{} column `{}` is a JSON column but this value is not JSON \
                                 sdl can represent exactly ({reason}); it is kept as its text \
                                 (binlog {}:{}, GTID {})",
                                table.database,
                                table.name,
                                table.columns[index],
                                row.file,
                                row.pos,
                                transaction.gtid
                            ),
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The JSON columns of a MariaDB table: those with a check constraint that is exactly
/// ``json_valid(`col`)`` (what `col JSON` creates). A table information_schema does not show
/// (dropped since, or no privilege) has none, with a warning: its JSON values stay text.
pub(super) async fn load_json_columns(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<HashSet<String>, SourceError> {
    let query = "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?";
    let clauses: Vec<String> = conn
        .exec(query, (database, table))
        .await
        .map_err(|e| query_error(query, e))?;
    check_lookup_warnings(conn, query).await?;
    let json: HashSet<String> = clauses
        .iter()
        .filter_map(|c| json_valid_column(c))
        .collect();
    if json.is_empty() {
        let visible = "SELECT COUNT(*) FROM information_schema.TABLES \
                       WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";
        let count: Option<u64> = conn
            .exec_first(visible, (database, table))
            .await
            .map_err(|e| query_error(visible, e))?;
        check_lookup_warnings(conn, visible).await?;
        if count.unwrap_or(0) == 0 {
            warn!(target: "sdl::source",
                "{database}.{table} is not visible in information_schema (dropped since, or the \
                 sdl user lacks SELECT on it): sdl cannot tell its JSON columns, so their values \
                 are recorded as text. Grant SELECT on the table to make them documents"
            );
        }
    }
    Ok(json)
}

/// MariaDB turns a lock wait inside an information_schema query (a table whose metadata another
/// session holds exclusively, e.g. during `CREATE TABLE ... SELECT` or an ALTER's last phase) into
/// a *warning* and leaves that table out of the result. An empty result would then read as "no
/// JSON columns" (its JSON values silently kept as text) or "table dropped" (a definite error).
/// Such a warning (any of [`TRANSIENT_SERVER_ERRORS`]) makes the lookup a transient error: it is
/// retried, with the reconnect backoff, until the lock is gone.
pub(super) async fn check_lookup_warnings(conn: &mut Conn, query: &str) -> Result<(), SourceError> {
    let warnings: Vec<(String, u32, String)> = conn
        .query("SHOW WARNINGS")
        .await
        .map_err(|e| query_error("SHOW WARNINGS", e))?;
    match warnings.into_iter().find(|(_, code, _)| {
        u16::try_from(*code).is_ok_and(|c| TRANSIENT_SERVER_ERRORS.contains(&c))
    }) {
        Some((_, code, message)) => Err(SourceError::Transient(format!(
            "`{query}`: information_schema left a table out: warning {code}: {message} (retried)"
        ))),
        None => Ok(()),
    }
}

/// `col` when `clause` is exactly ``json_valid(`col`)`` (any case, surrounding spaces).
fn json_valid_column(clause: &str) -> Option<String> {
    let clause = clause.trim();
    let prefix = "json_valid(`";
    if !clause.get(..prefix.len())?.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let quoted = clause[prefix.len()..].strip_suffix("`)")?;
    // Inside backticks a backtick is doubled; a lone one means the clause is something else.
    let name = quoted.replace("``", "`");
    if name.matches('`').count() * 2 != quoted.matches('`').count() {
        return None;
    }
    Some(name)
}

/// For `source.column_names = "information_schema"`: when `event` is a TABLE_MAP without column
/// names for a table the assembler has no schema of, looks the table up (on `schema_conn`, opened
/// on demand) and provides its schema to the assembler.
pub(super) async fn provide_missing_schema(
    cfg: &SourceConfig,
    event: &Event,
    assembler: &mut TransactionAssembler,
    schema_conn: &mut Option<Conn>,
) -> Result<(), SourceError> {
    let Some((database, table)) = decode::table_without_names(event) else {
        return Ok(());
    };
    if assembler.has_schema(&database, &table) {
        return Ok(());
    }
    if schema_conn.is_none() {
        match connect(cfg).await {
            Ok((conn, _)) => *schema_conn = Some(conn),
            Err(e) => return Err(SourceError::Transient(e.to_string())),
        }
    }
    let conn = schema_conn.as_mut().expect("connected above");
    let schema = load_schema(conn, &database, &table).await?;
    assembler.provide_schema(database, table, schema);
    Ok(())
}

/// Column names, ENUM/SET members and primary key of `database.table` from information_schema, for
/// TABLE_MAPs without names. Racy by nature: this is the schema now, not when the row was written;
/// the assembler refuses a table whose column count or ENUM/SET positions no longer match.
async fn load_schema(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<decode::TableSchema, SourceError> {
    let query =
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COLUMN_KEY FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION";
    let rows: Vec<(String, String, String, String)> = conn
        .exec(query, (database, table))
        .await
        .map_err(|e| query_error(query, e))?;
    check_lookup_warnings(conn, query).await?;
    if rows.is_empty() {
        return Err(SourceError::Query {
            query: query.into(),
            detail: format!(
                "information_schema has no columns for {database}.{table} (dropped since?): its \
                 rows cannot be named; set binlog_row_metadata=FULL on the source"
            ),
        });
    }
    let mut schema = decode::TableSchema::default();
    for (i, (name, data_type, column_type, key)) in rows.into_iter().enumerate() {
        match data_type.to_ascii_lowercase().as_str() {
            "enum" => {
                schema.enum_values.insert(i, quoted_members(&column_type));
            }
            "set" => {
                schema.set_values.insert(i, quoted_members(&column_type));
            }
            _ => {}
        }
        if key.eq_ignore_ascii_case("PRI") {
            schema.primary_key.push(name.clone());
        }
        schema.names.push(name);
    }
    Ok(schema)
}

/// The members of `enum('a','b''c')` / `set(...)`: single-quoted, `''` for a quote.
pub(super) fn quoted_members(column_type: &str) -> Vec<String> {
    let mut members = Vec::new();
    let mut chars = column_type.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        loop {
            match chars.next() {
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                Some('\'') | None => break,
                Some(c) => member.push(c),
            }
        }
        members.push(member);
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_column_cache_is_bounded() {
        let mut cache = JsonColumns::default();
        for i in 0..MAX_JSON_TABLES * 2 + 3 {
            let table = Arc::new(Table {
                database: format!("db{}", i % 7),
                name: format!("t{i}"),
                columns: vec!["id".into(), "doc".into()],
                primary_key: vec![0],
            });
            assert_eq!(cache.remember(&table, vec![1]), &vec![1]);
            // A table already cached does not count twice.
            cache.remember(&table, vec![1]);
            let held: usize = cache.tables.values().map(HashMap::len).sum();
            assert_eq!(held, cache.cached);
            assert!(
                cache.cached <= MAX_JSON_TABLES,
                "{} tables cached",
                cache.cached
            );
        }
    }

    #[test]
    fn json_valid_clauses_name_their_column() {
        assert_eq!(json_valid_column("json_valid(`doc`)"), Some("doc".into()));
        assert_eq!(
            json_valid_column(" JSON_VALID(`a``b`) "),
            Some("a`b".into())
        );
        assert_eq!(json_valid_column("json_valid(`a`) and `b` > 1"), None);
        assert_eq!(json_valid_column("`x` > 0"), None);
        assert_eq!(json_valid_column("json_valid(`a`)`)"), None);
    }

    #[test]
    fn enum_and_set_members_are_unquoted() {
        assert_eq!(quoted_members("enum('a','b')"), ["a", "b"]);
        assert_eq!(quoted_members("set('it''s','','ç')"), ["it's", "", "ç"]);
    }
}
