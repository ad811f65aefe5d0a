//! The snapshot keys of `[source]` (`snapshot`, `snapshot_tables`, `snapshot_chunk_rows`,
//! `snapshot_rows_per_second`, `snapshot_bytes_per_second`) and the table patterns
//! `source.snapshot_tables` and `sdl snapshot TABLE...` are written in.
//!
//! Guarantees: a pattern is `db.table`, either part a name or a glob where `*` stands for any run
//! of characters (none included); a part may be quoted in backticks (`` `my.db`.`t` ``, a
//! backtick inside doubled) when it holds a dot. Anything else (no dot, an empty part, a second
//! unquoted dot, an unclosed backtick) is refused with the pattern and the accepted forms, at load
//! (exit 2), never silently matched against nothing. Matching is exact and case-sensitive, as
//! table names are on a Linux server (`lower_case_table_names = 0`).

use std::path::Path;

use serde::Deserialize;

use super::{Config, ConfigError};

/// `source.snapshot`: whether a new deployment starts with a snapshot of the existing rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Only changes are relayed (from `source.start` on); `sdl snapshot` still works.
    #[default]
    Never,
    /// At the very first start (a new WAL, no offset in MongoDB for this `source.name`) the
    /// selected tables are snapshotted, then streaming goes on. Not repeated at later starts.
    Initial,
}

/// The schemas a default selection (and a `*` database part) leaves out.
pub const SYSTEM_SCHEMAS: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// One `db.table` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    /// As written (for messages).
    pub text: String,
    pub database: String,
    pub table: String,
}

impl TablePattern {
    /// Parses `db.table` (see the module header); the error says what is wrong and the forms
    /// accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let bad = |why: &str| {
            format!(
                "`{text}` is not a table pattern: {why}. Write db.table, with * for any run of characters in either part (\"app.orders\", \"app.*\", \"shop_*.invoices\"); quote a name holding a dot in backticks (\"`my.db`.orders\")"
            )
        };
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        let (database, rest) = name_part(trimmed).map_err(|why| bad(&why))?;
        let Some(rest) = rest.strip_prefix('.') else {
            return Err(bad("it has no `.` between the database and the table"));
        };
        let (table, rest) = name_part(rest).map_err(|why| bad(&why))?;
        if !rest.is_empty() {
            return Err(bad(
                "it has more than one `.` (a name holding a dot goes in backticks)",
            ));
        }
        if database.is_empty() || table.is_empty() {
            return Err(bad("the database or the table part is empty"));
        }
        Ok(Self {
            text: trimmed.to_string(),
            database,
            table,
        })
    }

    /// Whether either part has a `*`.
    pub fn is_wildcard(&self) -> bool {
        self.database.contains('*') || self.table.contains('*')
    }

    /// Whether `database.table` matches. A system schema matches only when named without a `*`
    /// (so `*.*` means every user table).
    pub fn matches(&self, database: &str, table: &str) -> bool {
        if self.database.contains('*') && SYSTEM_SCHEMAS.contains(&database) {
            return false;
        }
        glob(&self.database, database) && glob(&self.table, table)
    }
}

impl std::fmt::Display for TablePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// One part of a pattern from the start of `text`: a backtick-quoted name, or everything up to
/// the next `.`; returns it and the rest.
fn name_part(text: &str) -> Result<(String, &str), String> {
    let Some(quoted) = text.strip_prefix('`') else {
        let end = text.find('.').unwrap_or(text.len());
        if text[..end].contains('`') {
            return Err("a backtick inside a name (quote the whole name)".into());
        }
        return Ok((text[..end].to_string(), &text[end..]));
    };
    let mut name = String::new();
    let mut chars = quoted.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '`' {
            if chars.peek().is_some_and(|&(_, next)| next == '`') {
                chars.next();
                name.push('`');
                continue;
            }
            return Ok((name, &quoted[i + 1..]));
        }
        name.push(c);
    }
    Err("a backtick is not closed".into())
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut middle = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match middle.find(part) {
            Some(at) => middle = &middle[at + part.len()..],
            None => return false,
        }
    }
    true
}

impl Config {
    /// `source.snapshot_tables`: every entry a valid pattern.
    pub(super) fn validate_snapshot(&self, path: &Path) -> Result<(), ConfigError> {
        for text in &self.source.snapshot_tables {
            TablePattern::parse(text).map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "source.snapshot_tables",
                message,
            })?;
        }
        Ok(())
    }
}

impl super::SourceConfig {
    /// `source.snapshot_tables` parsed (checked at load, so this does not fail on a loaded
    /// config).
    pub fn snapshot_patterns(&self) -> Result<Vec<TablePattern>, String> {
        self.snapshot_tables
            .iter()
            .map(|t| TablePattern::parse(t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> TablePattern {
        TablePattern::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn patterns_match_names_and_globs_exactly() {
        assert!(p("app.orders").matches("app", "orders"));
        assert!(!p("app.orders").matches("app", "orders2"));
        assert!(!p("app.orders").matches("App", "orders"));
        assert!(p("app.*").matches("app", "anything"));
        assert!(!p("app.*").matches("app2", "x"));
        assert!(p("shop_*.inv*").matches("shop_eu", "invoices"));
        assert!(p("shop_*.inv*").matches("shop_", "inv"));
        assert!(!p("shop_*.inv*").matches("shop", "invoices"));
        assert!(p("*.*_log").matches("a", "audit_log"));
        assert!(!p("*.*_log").matches("a", "audit_logs"));
        assert!(p("a.*x*y*").matches("a", "xy"));
        assert!(p("a.*x*y*").matches("a", "1x2y3"));
        assert!(!p("a.*x*y*").matches("a", "yx"));
        assert!(p("a.ab*ab").matches("a", "abab"));
        assert!(!p("a.ab*ab").matches("a", "aba"));
    }

    #[test]
    fn a_wildcard_database_leaves_the_system_schemas_out_unless_named() {
        assert!(!p("*.*").matches("mysql", "user"));
        assert!(!p("*.*").matches("sys", "x"));
        assert!(p("*.*").matches("app", "t"));
        assert!(p("mysql.*").matches("mysql", "user"));
    }

    #[test]
    fn backticks_quote_names_holding_dots() {
        let q = p("`my.db`.`a``b`");
        assert_eq!((q.database.as_str(), q.table.as_str()), ("my.db", "a`b"));
        assert!(q.matches("my.db", "a`b"));
        assert!(!q.is_wildcard());
        assert!(p("app.t*").is_wildcard());
    }

    #[test]
    fn malformed_patterns_are_refused_naming_them() {
        for bad in [
            "",
            " ",
            "orders",
            "app.",
            ".orders",
            "a.b.c",
            "`app.orders",
            "ap`p.t",
            "app..t",
        ] {
            let err = TablePattern::parse(bad).unwrap_err();
            assert!(
                err.contains(&format!("`{bad}` is not a table pattern")),
                "{bad}: {err}"
            );
            assert!(err.contains("db.table"), "{err}");
        }
    }
}
