//! Which tables a snapshot reads, and the key each one is read by.
//!
//! Guarantees:
//! - [`resolve_tables`] gives the base tables (never views, sequences or system views) that match
//!   any of the patterns (`crate::config::TablePattern`), each once, sorted by (database, table)
//!   in byte order; with no patterns, every base table outside the system schemas. A pattern that
//!   matches no table, or is malformed, is a definite [`SourceError::SnapshotRefused`] naming it:
//!   a snapshot never silently reads less than it was asked to.
//! - [`snapshot_key`] gives the columns a table is chunked by: its primary key in key order, else
//!   the first UNIQUE key (by index name, byte order) whose columns are all NOT NULL. A table
//!   with neither is refused, naming it and the fix: without such a key sdl can neither page
//!   through it nor tell which snapshot rows a concurrent change touched.
//! - information_schema lookups that MariaDB cut short with a lock-wait warning are transient
//!   errors (retried), never read as "no such table" or "no key".
//!
//! [`new_snapshot_id`] names a snapshot by the UTC time it was requested.

use std::collections::BTreeMap;
use std::time::SystemTime;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::config::{TablePattern, SYSTEM_SCHEMAS};
use crate::source::error::query_error;
use crate::source::schema::check_lookup_warnings;
use crate::source::SourceError;

/// What `TABLE_TYPE` says of a table a snapshot can read (MariaDB's system-versioned tables are
/// base tables whose current rows a `SELECT` reads).
const BASE_TABLE_TYPES: &[&str] = &["BASE TABLE", "SYSTEM VERSIONED"];

/// The fix for a table without a usable key.
const NO_KEY_FIX: &str = "add a primary key (or make the columns of a UNIQUE key NOT NULL), or leave the table out of the snapshot (source.snapshot_tables; with `sdl snapshot`, do not name it)";

/// The base tables matching any of `patterns` (every user table when empty), sorted by
/// (database, table).
pub async fn resolve_tables(
    conn: &mut Conn,
    patterns: &[String],
) -> Result<Vec<(String, String)>, SourceError> {
    let patterns = patterns
        .iter()
        .map(|p| TablePattern::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| refused(patterns.join(", "), reason))?;
    let query = "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES";
    let rows: Vec<(String, String, String)> =
        conn.query(query).await.map_err(|e| query_error(query, e))?;
    check_lookup_warnings(conn, query).await?;
    select_tables(&patterns, rows)
}

/// `SourceError::SnapshotRefused`.
fn refused(table: String, reason: String) -> SourceError {
    SourceError::SnapshotRefused { table, reason }
}

/// [`resolve_tables`] on information_schema's `(schema, name, type)` rows.
fn select_tables(
    patterns: &[TablePattern],
    rows: Vec<(String, String, String)>,
) -> Result<Vec<(String, String)>, SourceError> {
    let is_base = |kind: &str| BASE_TABLE_TYPES.contains(&kind);
    let mut selected: Vec<(String, String)> = rows
        .iter()
        .filter(|(_, _, kind)| is_base(kind))
        .filter(|(db, table, _)| {
            if patterns.is_empty() {
                !SYSTEM_SCHEMAS.contains(&db.as_str())
            } else {
                patterns.iter().any(|p| p.matches(db, table))
            }
        })
        .map(|(db, table, _)| (db.clone(), table.clone()))
        .collect();
    selected.sort();
    selected.dedup();
    for pattern in patterns {
        if selected
            .iter()
            .any(|(db, table)| pattern.matches(db, table))
        {
            continue;
        }
        let other_kind = rows
            .iter()
            .find(|(db, table, _)| pattern.matches(db, table))
            .map(|(_, _, kind)| kind.to_lowercase());
        let reason = match (other_kind, pattern.is_wildcard()) {
            (Some(kind), false) => format!(
                "it is a {kind}, not a base table: only tables hold rows to snapshot (snapshot the tables it reads from instead), or leave it out of the snapshot"
            ),
            (Some(_), true) => "the pattern matches only views or other objects that are not base tables: name tables, or leave the pattern out".to_string(),
            (None, false) => "no such table on the source (names are case-sensitive): check the name, or leave it out of the snapshot".to_string(),
            (None, true) => "the pattern matches no table on the source (names are case-sensitive; a * database part leaves out the system schemas): check it, or leave it out".to_string(),
        };
        return Err(refused(pattern.to_string(), reason));
    }
    Ok(selected)
}

/// The columns `database.table` is chunked by, in key order (see the module header).
pub async fn snapshot_key(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<Vec<String>, SourceError> {
    let name = format!("{database}.{table}");
    let kind_query = "SELECT TABLE_TYPE FROM information_schema.TABLES \
                      WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";
    let kind: Option<String> = conn
        .exec_first(kind_query, (database, table))
        .await
        .map_err(|e| query_error(kind_query, e))?;
    check_lookup_warnings(conn, kind_query).await?;
    match kind {
        None => {
            return Err(refused(
                name,
                "no such table on the source (names are case-sensitive): check the name, or leave it out of the snapshot".into(),
            ))
        }
        Some(kind) if !BASE_TABLE_TYPES.contains(&kind.as_str()) => {
            return Err(refused(
                name,
                format!(
                    "it is a {}, not a base table: only tables hold rows to snapshot",
                    kind.to_lowercase()
                ),
            ))
        }
        Some(_) => {}
    }
    let query = "SELECT s.INDEX_NAME, s.SEQ_IN_INDEX, s.COLUMN_NAME, c.IS_NULLABLE \
                 FROM information_schema.STATISTICS s \
                 LEFT JOIN information_schema.COLUMNS c \
                   ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME \
                  AND c.COLUMN_NAME = s.COLUMN_NAME \
                 WHERE s.TABLE_SCHEMA = ? AND s.TABLE_NAME = ? AND s.NON_UNIQUE = 0";
    let rows: Vec<(String, u64, Option<String>, Option<String>)> = conn
        .exec(query, (database, table))
        .await
        .map_err(|e| query_error(query, e))?;
    check_lookup_warnings(conn, query).await?;
    choose_key(&name, rows)
}

/// One column of a unique index: its name (none for an expression) and whether it is NOT NULL.
type IndexColumn = (Option<String>, bool);

/// [`snapshot_key`] on information_schema's `(index, seq, column, IS_NULLABLE)` rows of the
/// table's unique indexes.
fn choose_key(
    name: &str,
    rows: Vec<(String, u64, Option<String>, Option<String>)>,
) -> Result<Vec<String>, SourceError> {
    let mut indexes: BTreeMap<String, BTreeMap<u64, IndexColumn>> = BTreeMap::new();
    for (index, seq, column, nullable) in rows {
        let not_null = nullable.as_deref() == Some("NO");
        indexes
            .entry(index)
            .or_default()
            .insert(seq, (column, not_null));
    }
    let columns_of = |columns: &BTreeMap<u64, IndexColumn>| -> Option<Vec<String>> {
        columns
            .values()
            .map(|(column, not_null)| column.clone().filter(|_| *not_null))
            .collect()
    };
    if let Some(key) = indexes.get("PRIMARY").and_then(columns_of) {
        return Ok(key);
    }
    let mut nullable = Vec::new();
    for (index, columns) in indexes.iter().filter(|(index, _)| *index != "PRIMARY") {
        match columns_of(columns) {
            Some(key) => return Ok(key),
            None => nullable.push(format!("`{index}`")),
        }
    }
    let reason = if nullable.is_empty() {
        format!("it has no primary key and no UNIQUE key: sdl can neither read it in chunks nor tell which of its rows a concurrent change touched. Fix: {NO_KEY_FIX}")
    } else {
        format!(
            "it has no primary key, and its UNIQUE key(s) {} allow NULL in a column (rows with NULLs are not unique, so sdl can neither read it in chunks nor tell which of its rows a concurrent change touched). Fix: {NO_KEY_FIX}",
            nullable.join(", ")
        )
    };
    Err(refused(name.to_string(), reason))
}

/// A snapshot's id: the UTC time it was requested, `YYYYMMDDTHHMMSS.mmmZ`
/// (`20261127T190102.123Z`). Ids sort as the times do.
pub fn new_snapshot_id(now: SystemTime) -> String {
    utc_millis_text(now, "", "")
}

/// `now` in UTC to the millisecond, `YYYY<d>MM<d>DDTHH<t>MM<t>SS.mmmZ` with `d` and `t` between
/// the date's and the time's parts (`-` and `:` for RFC 3339).
pub fn utc_millis_text(now: SystemTime, d: &str, t: &str) -> String {
    let at = time::OffsetDateTime::from(now);
    format!(
        "{:04}{d}{:02}{d}{:02}T{:02}{t}{:02}{t}{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn row(db: &str, table: &str, kind: &str) -> (String, String, String) {
        (db.into(), table.into(), kind.into())
    }

    fn schema() -> Vec<(String, String, String)> {
        vec![
            row("app", "orders", "BASE TABLE"),
            row("app", "customers", "BASE TABLE"),
            row("app", "order_totals", "VIEW"),
            row("app", "seq", "SEQUENCE"),
            row("app", "history", "SYSTEM VERSIONED"),
            row("billing", "invoices", "BASE TABLE"),
            row("mysql", "user", "BASE TABLE"),
            row("sys", "x", "BASE TABLE"),
            row("information_schema", "TABLES", "SYSTEM VIEW"),
        ]
    }

    fn select(patterns: &[&str]) -> Result<Vec<String>, String> {
        let patterns: Vec<TablePattern> = patterns
            .iter()
            .map(|p| TablePattern::parse(p).unwrap())
            .collect();
        select_tables(&patterns, schema())
            .map(|t| t.into_iter().map(|(d, t)| format!("{d}.{t}")).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_default_is_every_base_table_outside_the_system_schemas_sorted() {
        assert_eq!(
            select(&[]).unwrap(),
            [
                "app.customers",
                "app.history",
                "app.orders",
                "billing.invoices"
            ]
        );
    }

    #[test]
    fn patterns_select_base_tables_once_each() {
        assert_eq!(
            select(&["app.*", "app.orders", "*.invoices"]).unwrap(),
            [
                "app.customers",
                "app.history",
                "app.orders",
                "billing.invoices"
            ]
        );
        assert_eq!(select(&["app.ord*"]).unwrap(), ["app.orders"]);
        assert_eq!(select(&["mysql.user"]).unwrap(), ["mysql.user"]);
    }

    #[test]
    fn a_pattern_matching_no_table_is_refused_naming_it() {
        let err = select(&["app.*", "app.nope"]).unwrap_err();
        assert!(
            err.contains("cannot snapshot app.nope: no such table"),
            "{err}"
        );
        let err = select(&["app.order_totals"]).unwrap_err();
        assert!(
            err.contains("cannot snapshot app.order_totals: it is a view"),
            "{err}"
        );
        let err = select(&["nope_*.*"]).unwrap_err();
        assert!(
            err.contains("cannot snapshot nope_*.*: the pattern matches no table"),
            "{err}"
        );
    }

    fn index(
        name: &str,
        seq: u64,
        column: &str,
        nullable: &str,
    ) -> (String, u64, Option<String>, Option<String>) {
        (name.into(), seq, Some(column.into()), Some(nullable.into()))
    }

    #[test]
    fn the_key_is_the_primary_key_in_key_order() {
        let key = choose_key(
            "a.t",
            vec![
                index("PRIMARY", 2, "b", "NO"),
                index("PRIMARY", 1, "a", "NO"),
                index("u", 1, "c", "NO"),
            ],
        )
        .unwrap();
        assert_eq!(key, ["a", "b"]);
    }

    #[test]
    fn without_a_primary_key_the_first_not_null_unique_key_by_name() {
        let key = choose_key(
            "a.t",
            vec![
                index("z_unique", 1, "z", "NO"),
                index("b_nullable", 1, "n", "YES"),
                index("m_unique", 1, "m1", "NO"),
                index("m_unique", 2, "m2", "NO"),
            ],
        )
        .unwrap();
        assert_eq!(key, ["m1", "m2"]);
    }

    #[test]
    fn a_table_without_a_usable_key_is_refused_with_the_fix() {
        let err = choose_key("a.t", vec![]).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot snapshot a.t: it has no primary key and no UNIQUE key"),
            "{err}"
        );
        assert!(
            err.contains("add a primary key") && err.contains("source.snapshot_tables"),
            "{err}"
        );
        let err = choose_key(
            "a.t",
            vec![index("u", 1, "x", "NO"), index("u", 2, "y", "YES")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("UNIQUE key(s) `u` allow NULL"), "{err}");
        // An expression in a unique index (MySQL functional key part) is no column to page by.
        let err = choose_key("a.t", vec![("f".into(), 1, None, None)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot snapshot a.t"), "{err}");
    }

    #[test]
    fn snapshot_ids_are_utc_times_to_the_millisecond() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_806_062_123);
        assert_eq!(new_snapshot_id(at), "20261127T190102.123Z");
        assert_eq!(new_snapshot_id(UNIX_EPOCH), "19700101T000000.000Z");
        assert!(new_snapshot_id(at) < new_snapshot_id(at + Duration::from_millis(1)));
    }
}
